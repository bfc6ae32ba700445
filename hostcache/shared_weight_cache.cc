#include "hostcache/shared_weight_cache.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "core/buffer.h"
#include "core/error.h"
#include "hostcache/cache_key.h"
#include "hostcache/catalog.h"
#include "hostcache/lock_file.h"
#include "hostcache/segment.h"
#include "offload/memory_budget.h"

namespace stowage::hostcache {
using detail::DirectoryEntry;
using detail::kRecordAlignment;

// This process's hold on one build of a segment: its mapping, its slot, the
// registration of its bytes with the platform, its directory by module.
class Attachment {
 public:
  Attachment(std::unique_ptr<Segment> segment, ProcessId self)
      : segment_(std::move(segment)),
        self_(self),
        generation_(segment_->header().generation),
        key_(segment_->key_text()) {}
  ~Attachment() {
    registration.reset();
    try {
      LockFile lock(Segment::lock_path_of(segment_->name()));
      std::unique_ptr<Segment> now = Segment::open(segment_->name());
      // Only the build this process attached to: a later one of the same
      // name is another's.
      if (now && now->condition() != SegmentCondition::kForeign &&
          now->condition() != SegmentCondition::kOtherVersion &&
          now->header().generation == generation_) {
        if (now->detach(self_) == 0 && now->header().keep == 0) {
          Segment::remove(segment_->name());
          lock.remove();
        }
      }
    } catch (const std::exception&) {
      // Leaving must not throw; `stowage cache drop --stale` clears what is left.
    }
  }
  Attachment(const Attachment&) = delete;
  Attachment& operator=(const Attachment&) = delete;

  Segment& segment() { return *segment_; }
  const std::string& key() const { return key_; }

  void index(std::vector<DirectoryEntry> entries) {
    entries_ = std::move(entries);
    for (size_t i = 0; i < entries_.size(); ++i) by_module_[entries_[i].info.module].push_back(i);
  }
  bool holds(const std::string& module) const { return by_module_.count(module) != 0; }
  const std::vector<size_t>& entries_of(const std::string& module) const {
    return by_module_.at(module);
  }
  const DirectoryEntry& entry(size_t i) const { return entries_[i]; }
  uint64_t host_bytes() const {
    uint64_t n = 0;
    for (const DirectoryEntry& e : entries_) n += e.bytes;
    return n;
  }

  HostRegistration registration;

 private:
  std::unique_ptr<Segment> segment_;
  ProcessId self_;
  uint64_t generation_;
  std::string key_;
  std::vector<DirectoryEntry> entries_;
  std::map<std::string, std::vector<size_t>> by_module_;
};

namespace {

// A read-only tensor over a record of the segment; it keeps the attachment
// (mapping, slot, registration) alive.
Tensor tensor_at(const std::shared_ptr<Attachment>& a, const DirectoryEntry& e) {
  char* p = a->segment().data() + e.offset;
  auto buffer =
      std::make_shared<Buffer>(Buffer::adopt(p, e.bytes, Tier::pinned_host(), [a] {}));
  return Tensor::from_storage(buffer, 0, e.dtype, e.shape);
}

// The pages of a disk mapping, once copied, need not stay in this process
// (they stay in the page cache): the builder's memory stays near the segment.
void release_mapping_pages(const Tensor& t) {
  if (t.tier() != Tier::disk() || t.bytes() == 0) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<uintptr_t>(t.data()) / page * page;
  const auto last = reinterpret_cast<uintptr_t>(t.data()) + t.bytes();
  ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);  // advisory
}

// Registers the records' bytes with the platform. A driver that refuses
// (e.g. no read-only registration) leaves them pageable: copies stay correct,
// at the pageable rate; `error` says why.
HostRegistration register_data(Platform& platform, Attachment& a, std::string* error) {
  const uint64_t bytes = a.segment().header().data_bytes;
  if (bytes == 0) return {};
  try {
    return platform.register_host_memory(a.segment().data(), bytes, true);
  } catch (const DeviceError& e) {
    *error = e.what();
    return {};
  }
}

uint64_t new_generation() {
  std::random_device random;
  const uint64_t t = static_cast<uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count());
  return (static_cast<uint64_t>(random()) << 32) ^ random() ^ t ^
         (static_cast<uint64_t>(::getpid()) << 16);
}

class AttachLoad final : public HostTierLoad {
 public:
  explicit AttachLoad(std::shared_ptr<Attachment> a) : a_(std::move(a)) {}
  bool holds(const std::string& module) const override { return a_ && a_->holds(module); }
  std::vector<StoredRecord> records(const std::string& module) const override {
    std::vector<StoredRecord> out;
    for (size_t i : a_->entries_of(module)) {
      const DirectoryEntry& e = a_->entry(i);
      out.push_back(StoredRecord{e.info, tensor_at(a_, e)});
    }
    return out;
  }
  // Built under another plan: what it lacks goes to this process's own memory.
  Tensor keep(const StoredRecordInfo&, const Tensor& source) override { return source; }
  void commit() override {}

 private:
  std::shared_ptr<Attachment> a_;  // null: no segment
};

class BuildLoad final : public HostTierLoad {
 public:
  BuildLoad(LockFile lock, std::shared_ptr<Attachment> a, Platform& platform,
            std::string* registration_error)
      : lock_(std::move(lock)),
        a_(std::move(a)),
        platform_(platform),
        registration_error_(registration_error) {}
  ~BuildLoad() override {
    // A load that failed: nobody may attach to what it left (its state is
    // still kBuilding, but removing the name spares the next process).
    if (!committed_) Segment::remove(a_->segment().name());
  }
  bool holds(const std::string&) const override { return false; }
  std::vector<StoredRecord> records(const std::string&) const override { return {}; }

  Tensor keep(const StoredRecordInfo& info, const Tensor& source) override {
    auto& h = a_->segment().header();
    const uint64_t offset = (next_ + kRecordAlignment - 1) / kRecordAlignment * kRecordAlignment;
    const uint64_t bytes = source.bytes();
    STOWAGE_EXPECTS(offset <= h.data_capacity && bytes <= h.data_capacity - offset,
                    InternalError,
                    "host cache segment {}: record {}.{} ({} bytes at {}) overruns the {} bytes "
                    "the plan sized it for",
                    a_->segment().name(), info.module, info.name, bytes, offset, h.data_capacity);
    if (bytes) std::memcpy(a_->segment().data() + offset, source.data(), bytes);
    release_mapping_pages(source);
    DirectoryEntry e{info, source.dtype(), source.shape(), offset, bytes};
    entries_.push_back(e);
    next_ = offset + bytes;
    return tensor_at(a_, e);
  }

  void commit() override {
    Segment& s = a_->segment();
    auto& h = s.header();
    const std::string dir = detail::encode_directory(entries_);
    STOWAGE_EXPECTS(dir.size() <= h.directory_capacity, InternalError,
                    "host cache segment {}: a directory of {} bytes overruns its {} bytes",
                    s.name(), dir.size(), h.directory_capacity);
    std::memcpy(s.body(), dir.data(), dir.size());
    h.directory_bytes = dir.size();
    h.directory_checksum = fnv1a(dir.data(), dir.size());
    h.data_bytes = next_;
    h.record_count = entries_.size();
    h.header_checksum = detail::header_checksum(h);
    __atomic_store_n(&h.state, static_cast<uint32_t>(detail::kReady), __ATOMIC_RELEASE);
    committed_ = true;
    s.seal();
    a_->index(std::move(entries_));
    a_->registration = register_data(platform_, *a_, registration_error_);
  }

 private:
  LockFile lock_;  // held for the whole build: concurrent builders wait
  std::shared_ptr<Attachment> a_;
  Platform& platform_;
  std::string* registration_error_;
  std::vector<DirectoryEntry> entries_;
  uint64_t next_ = 0;
  bool committed_ = false;
};

}  // namespace

void check_prefix(const std::string& prefix) {
  const bool ok = !prefix.empty() && prefix.size() <= 64 &&
                  std::all_of(prefix.begin(), prefix.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                           c == '-';
                  });
  STOWAGE_EXPECTS(ok, InvalidInputError,
                  "host cache: the segment prefix must be 1 to 64 of [A-Za-z0-9_.-], found '{}'",
                  prefix);
}

SharedWeightCache::SharedWeightCache(Platform& platform, SharedWeightCacheOptions options)
    : platform_(platform), options_(std::move(options)) {
  check_prefix(options_.prefix);
}

SharedWeightCache::~SharedWeightCache() = default;

SharedWeightCache::LastLoad SharedWeightCache::last_load() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_;
}

std::unique_ptr<HostTierLoad> SharedWeightCache::begin_load(
    const mmap_store::Checkpoint& checkpoint, const LoadOptions& options,
    const std::vector<PlanModule>& host_modules) {
  const CacheKey key = make_cache_key(checkpoint, recipe_of(options_.family, options.quantize));
  STOWAGE_EXPECTS(key.text.size() <= detail::kMaxKeyBytes, InvalidInputError,
                  "host cache: the identity of {} takes {} bytes, more than a segment holds ({})",
                  checkpoint.path(), key.text.size(), detail::kMaxKeyBytes);
  const std::string name = options_.prefix + "-" + key.id;
  std::lock_guard<std::mutex> guard(mutex_);
  if (auto held = attachments_[name]; held && held->key() == key.text) {
    last_ = {"attached", name, held->host_bytes()};
    return std::make_unique<AttachLoad>(held);
  }
  const ProcessId self = current_process();
  LockFile lock(Segment::lock_path_of(name));
  if (std::unique_ptr<Segment> existing = Segment::open(name)) {
    const std::string where = Segment::path_of(name);
    switch (existing->condition()) {
      case SegmentCondition::kForeign:
        throw InvalidInputError(fmt::format(
            "host cache: {} exists but is not a Stowage weight segment (its first bytes are not "
            "the segment magic); it was left alone: remove it, or use another segment prefix",
            where));
      case SegmentCondition::kOtherVersion:
        throw InvalidInputError(fmt::format(
            "host cache: {} has segment layout version {}, this Stowage reads version {}; drop "
            "it (stowage cache drop {}) once the processes using it have exited",
            where, existing->header().version, detail::kLayoutVersion, key.id));
      case SegmentCondition::kReady: {
        STOWAGE_EXPECTS(existing->key_text() == key.text, InvalidInputError,
                        "host cache: {} holds another checkpoint or recipe (model {}) under the "
                        "name of {} ({}); drop it (stowage cache drop {}) to build this one",
                        where, existing->model(), checkpoint.path(),
                        recipe_of(options_.family, options.quantize), key.id);
        const auto& h = existing->header();
        std::vector<DirectoryEntry> entries = detail::decode_directory(
            existing->directory(), h.directory_bytes, h.data_capacity, where);
        existing->attach(self);
        if (options_.keep) existing->header().keep = 1;
        auto a = std::make_shared<Attachment>(std::move(existing), self);
        a->index(std::move(entries));
        std::string error;
        a->registration = register_data(platform_, *a, &error);
        attachments_[name] = a;
        last_ = {"attached", name, a->host_bytes(), error};
        return std::make_unique<AttachLoad>(a);
      }
      case SegmentCondition::kBuilding:  // its builder died: it held this lock otherwise
      case SegmentCondition::kCorrupt:
        existing.reset();
        Segment::remove(name);
        break;
    }
  }
  if (host_modules.empty()) {
    lock.remove();  // no segment: nothing left behind
    last_ = {"none", "", 0};
    return std::make_unique<AttachLoad>(nullptr);
  }

  // Build: sized by the plan (an upper bound: untouched pages cost nothing).
  uint64_t data_capacity = kRecordAlignment;
  uint64_t directory_capacity = 4096;
  for (const PlanModule& m : host_modules) {
    data_capacity += m.bytes();
    for (const PlanTensor& t : m.tensors) {
      // A quantized weight becomes up to 7 records.
      data_capacity += 7 * kRecordAlignment;
      directory_capacity += 7 * (2 * m.path.size() + 3 * t.name.size() + 256);
    }
  }
  std::unique_ptr<Segment> segment;
  try {
    // The host-wide budget of shared pinned bytes, checked and taken under
    // one lock so two builders cannot both fit in the same room.
    LockFile budget_lock(Segment::path_of(options_.prefix + ".budget.lock"));
    const uint64_t budget = options_.pinned_budget_bytes.value_or(host_physical_bytes() / 2);
    uint64_t in_use = 0;
    size_t segments = 0;
    for (const std::string& other : segment_names(options_.prefix)) {
      struct stat st {};
      if (::stat(Segment::path_of(other).c_str(), &st) == 0) {
        in_use += static_cast<uint64_t>(st.st_blocks) * 512;
        ++segments;
      }
    }
    const bool fits = data_capacity <= budget && in_use <= budget - data_capacity;
    if (!fits) budget_lock.remove();
    STOWAGE_EXPECTS(fits, OutOfBudgetError,
                    "host cache: {} needs up to {} bytes of shared pinned memory for its host-tier "
                    "records, but the host-wide budget is {} bytes with {} in use by {} "
                    "segment(s) (stowage cache list; stowage cache drop --stale)",
                    checkpoint.path(), data_capacity, budget, in_use, segments);
    segment = Segment::create(name, directory_capacity, data_capacity);
    budget_lock.remove();  // nothing left behind; a waiter locks anew (lock_file.h)
  } catch (...) {
    lock.remove();  // no segment was made: its lock file goes too
    throw;
  }
  auto& h = segment->header();
  h.generation = new_generation();
  h.key_length = static_cast<uint32_t>(key.text.size());
  std::memcpy(h.key, key.text.data(), key.text.size());
  const std::string model = key.model.substr(0, detail::kMaxModelBytes);
  h.model_length = static_cast<uint32_t>(model.size());
  std::memcpy(h.model, model.data(), model.size());
  h.builder = self;
  h.keep = options_.keep ? 1 : 0;
  __atomic_store_n(&h.state, static_cast<uint32_t>(detail::kBuilding), __ATOMIC_RELEASE);
  segment->attach(self);
  auto a = std::make_shared<Attachment>(std::move(segment), self);
  attachments_[name] = a;
  last_ = {"built", name, 0};
  for (const PlanModule& m : host_modules) last_.host_bytes += m.bytes();
  return std::make_unique<BuildLoad>(std::move(lock), a, platform_, &last_.registration_error);
}

}  // namespace stowage::hostcache
