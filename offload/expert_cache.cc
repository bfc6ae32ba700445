#include "offload/expert_cache.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "offload/slot_pool.h"

namespace stowage {
namespace {

// The copy a slot is filled from: pinned RAM first, then pageable RAM, then
// the disk tier's mapping.
const Tensor* host_copy(const TensorRecord& r) {
  for (const Tier t : {Tier::pinned_host(), Tier::pageable_host(), Tier::disk()}) {
    auto it = r.copies.find(t);
    if (it != r.copies.end() && it->second.data() != nullptr) return &it->second;
  }
  return nullptr;
}

}  // namespace

ExpertCacheCounters& ExpertCacheCounters::operator+=(const ExpertCacheCounters& o) {
  hits += o.hits;
  misses += o.misses;
  uncached += o.uncached;
  host += o.host;
  split += o.split;
  predicted += o.predicted;
  predicted_used += o.predicted_used;
  bytes_copied += o.bytes_copied;
  return *this;
}

ExpertCacheCounters& ExpertCacheCounters::operator-=(const ExpertCacheCounters& o) {
  hits -= o.hits;
  misses -= o.misses;
  uncached -= o.uncached;
  host -= o.host;
  split -= o.split;
  predicted -= o.predicted;
  predicted_used -= o.predicted_used;
  bytes_copied -= o.bytes_copied;
  return *this;
}

uint64_t ExpertCache::slot_bytes_for(const ResidencyTable& table,
                                     const std::vector<std::string>& modules) {
  uint64_t largest = 0;
  for (const std::string& m : modules) {
    uint64_t bytes = 0;
    for (RecordId id : table.records_of(m)) {
      bytes = slot_append(bytes, table.get(id).bytes);
    }
    largest = std::max(largest, bytes);
  }
  return slot_offset_align(largest);
}

ExpertCache::ExpertCache(OffloadManager& manager, Tier accelerator, ExpertCacheOptions options)
    : manager_(manager),
      accelerator_(accelerator),
      options_(options),
      policy_(make_replacement_policy(options.policy, options.aging_period)) {
  STOWAGE_EXPECTS(accelerator.is_accelerator() && options.slots >= 0, InvalidInputError,
                  "expert cache: expected an accelerator and >= 0 slots, found {} and {}",
                  accelerator.to_string(), options.slots);
  Accelerator& device = manager.platform().accelerator(accelerator.index());
  MemoryResource& memory = manager.memory(accelerator);
  slots_.resize(static_cast<size_t>(options.slots));
  for (Slot& s : slots_) {
    s.buffer = Buffer(memory, std::max<uint64_t>(options.slot_bytes, 1));
    s.copied = device.create_event();
    s.released = device.create_event();
  }
}

ExpertCache::~ExpertCache() {
  for (Slot& s : slots_) {
    try {
      s.copied.synchronize();
      s.released.synchronize();
    } catch (...) {
    }
  }
}

bool ExpertCache::cacheable(const std::string& module) const {
  if (slots_.empty() || manager_.host_compute(module)) return false;
  const std::vector<RecordId> ids = manager_.table().records_of(module);
  if (ids.empty()) return false;
  uint64_t bytes = 0;
  for (RecordId id : ids) {
    const TensorRecord r = manager_.table().get(id);
    if (r.on(accelerator_) || host_copy(r) == nullptr) return false;
    bytes = slot_append(bytes, r.bytes);
  }
  return bytes <= options_.slot_bytes;
}

uint64_t ExpertCache::key_of(const std::string& module) {
  auto [it, inserted] = keys_.emplace(module, keys_.size());
  return it->second;
}

ExpertCacheCounters& ExpertCache::counters_of(int layer) {
  const size_t i = static_cast<size_t>(std::max(layer, 0));
  if (counters_.size() <= i) counters_.resize(i + 1);
  return counters_[i];
}

int ExpertCache::choose_slot(const std::vector<std::string>& keep) {
  std::vector<uint64_t> evictable;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.part) continue;
    if (s.module.empty()) return static_cast<int>(i);
    if (s.in_use || std::find(keep.begin(), keep.end(), s.module) != keep.end()) continue;
    evictable.push_back(keys_.at(s.module));
  }
  if (evictable.empty()) return -1;
  const int slot = slot_of_key_.at(policy_->victim(evictable));
  Slot& s = slots_[slot];
  slot_of_.erase(s.module);
  slot_of_key_.erase(keys_.at(s.module));
  s.module.clear();
  return slot;
}

uint64_t ExpertCache::copy_into(int slot, const std::string& module) {
  Slot& s = slots_[slot];
  const StreamRef copy = manager_.copy_stream(accelerator_);
  // The slot's previous expert may still be read by a forward.
  if (s.released_recorded) copy.wait(s.released);
  uint64_t offset = 0, bytes = 0;
  char* base = static_cast<char*>(s.buffer.data());
  for (RecordId id : manager_.table().records_of(module)) {
    const TensorRecord r = manager_.table().get(id);
    offset = slot_offset_align(offset);
    copy.copy(base + offset, host_copy(r)->data(), r.bytes);
    offset += r.bytes;
    bytes += r.bytes;
  }
  copy.record(s.copied);
  s.module = module;
  s.predicted = false;
  slot_of_[module] = slot;
  slot_of_key_[key_of(module)] = slot;
  return bytes;
}

std::vector<ExpertCache::Fetch> ExpertCache::fetch(const std::vector<std::string>& modules,
                                                  int layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Fetch> out(modules.size(), Fetch::kUncached);
  ExpertCacheCounters& c = counters_of(layer);
  for (size_t i = 0; i < modules.size(); ++i) {
    auto it = slot_of_.find(modules[i]);
    if (it == slot_of_.end()) continue;
    Slot& s = slots_[it->second];
    if (s.predicted) {
      ++c.predicted_used;
      s.predicted = false;
    }
    ++c.hits;
    policy_->touch(key_of(modules[i]));
    out[i] = Fetch::kHit;
  }
  for (size_t i = 0; i < modules.size(); ++i) {
    if (out[i] == Fetch::kHit) continue;
    const int slot = choose_slot(modules);
    if (slot < 0) {
      ++c.uncached;
      continue;
    }
    c.bytes_copied += copy_into(slot, modules[i]);
    ++c.misses;
    policy_->touch(key_of(modules[i]));
    out[i] = Fetch::kMiss;
  }
  return out;
}

bool ExpertCache::holds(const std::string& module) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slot_of_.count(module) != 0;
}

void ExpertCache::note_host_computed(const std::vector<std::string>& modules, int layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  ExpertCacheCounters& c = counters_of(layer);
  for (const std::string& m : modules) {
    ++c.host;
    policy_->touch(key_of(m));
  }
}

ModuleForward ExpertCache::host_forward(const std::string& module, uint64_t* bytes) const {
  ModuleForward f;
  f.module = module;
  uint64_t total = 0;
  for (RecordId id : manager_.table().records_of(module)) {
    const TensorRecord r = manager_.table().get(id);
    const Tensor* copy = host_copy(r);
    STOWAGE_EXPECTS(copy != nullptr, InvalidInputError,
                    "expert cache: '{}' of '{}' has no host copy to compute from", r.name, module);
    f.tensors.emplace_back(r.name, copy->view());
    total += r.bytes;
  }
  if (bytes != nullptr) *bytes = total;
  return f;
}

int ExpertCache::fetch_part(const std::string& module, const std::vector<RecordPart>& parts,
                            const std::vector<std::string>& keep, int layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  STOWAGE_EXPECTS(slot_of_.count(module) == 0, InvalidInputError,
                  "expert cache: a part of '{}' asked for, but the whole expert is cached", module);
  const int slot = choose_slot(keep);
  if (slot < 0) return -1;
  Slot& s = slots_[slot];
  const StreamRef copy = manager_.copy_stream(accelerator_);
  if (s.released_recorded) copy.wait(s.released);
  uint64_t offset = 0, bytes = 0;
  char* base = static_cast<char*>(s.buffer.data());
  s.part_views.clear();
  for (RecordId id : manager_.table().records_of(module)) {
    const TensorRecord r = manager_.table().get(id);
    const Tensor* from = host_copy(r);
    STOWAGE_EXPECTS(from != nullptr, InvalidInputError,
                    "expert cache: '{}' of '{}' has no host copy to copy from", r.name, module);
    auto part = std::find_if(parts.begin(), parts.end(),
                             [&](const RecordPart& p) { return p.tensor == r.name; });
    const uint64_t first = part != parts.end() ? part->offset : 0;
    const uint64_t n = part != parts.end() ? part->bytes : r.bytes;
    STOWAGE_EXPECTS(first + n <= r.bytes && n % dtype_size(r.dtype) == 0, InvalidInputError,
                    "expert cache: part [{}, {}) of '{}' of '{}' ({} bytes of {}): expected whole "
                    "elements within it",
                    first, first + n, r.name, module, r.bytes, short_name(r.dtype));
    offset = slot_offset_align(offset);
    STOWAGE_EXPECTS(offset + n <= options_.slot_bytes, InternalError,
                    "expert cache: a part of '{}' does not fit a slot of {} bytes", module,
                    options_.slot_bytes);
    if (n > 0) copy.copy(base + offset, static_cast<const char*>(from->data()) + first, n);
    const Shape shape = part != parts.end()
                            ? Shape{static_cast<int64_t>(n / dtype_size(r.dtype))}
                            : r.shape;
    s.part_views.emplace_back(r.name, TensorView(base + offset, r.dtype, shape, accelerator_));
    offset += n;
    bytes += n;
  }
  copy.record(s.copied);
  s.part = true;
  ExpertCacheCounters& c = counters_of(layer);
  ++c.split;
  c.bytes_copied += bytes;
  policy_->touch(key_of(module));
  return slot;
}

ExpertCache::Slot& ExpertCache::part_slot(int part, const char* what) {
  STOWAGE_EXPECTS(part >= 0 && part < static_cast<int>(slots_.size()) && slots_[part].part,
                  InvalidInputError, "expert cache: part {} {} but it holds no part", part, what);
  return slots_[part];
}

ModuleForward ExpertCache::start_forward(Slot& s, StreamRef compute) {
  compute.wait(s.copied);
  s.in_use = true;
  ModuleForward f;
  f.module = s.module;
  f.accelerator = accelerator_;
  f.compute_stream = compute;
  f.streamed = true;
  return f;
}

void ExpertCache::end_forward(Slot& s, StreamRef compute) {
  compute.record(s.released);
  s.released_recorded = true;
  s.in_use = false;
}

ModuleForward ExpertCache::acquire_part(int part, StreamRef compute) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = part_slot(part, "acquired");
  ModuleForward f = start_forward(s, compute);
  f.tensors = s.part_views;
  return f;
}

void ExpertCache::release_part(int part, StreamRef compute) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = part_slot(part, "released");
  end_forward(s, compute);
  s.part = false;
  s.part_views.clear();
}

void ExpertCache::prefetch(const std::vector<std::string>& modules, int layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  ExpertCacheCounters& c = counters_of(layer);
  for (const std::string& m : modules) {
    if (slot_of_.count(m) != 0) continue;
    const int slot = choose_slot(modules);
    if (slot < 0) return;
    c.bytes_copied += copy_into(slot, m);
    slots_[slot].predicted = true;
    ++c.predicted;
  }
}

ExpertCache::Slot& ExpertCache::slot_holding(const std::string& module, const char* what) {
  auto it = slot_of_.find(module);
  STOWAGE_EXPECTS(it != slot_of_.end(), InvalidInputError,
                  "expert cache: '{}' {} but not in the cache (fetch() it first)", module, what);
  return slots_[it->second];
}

ModuleForward ExpertCache::acquire(const std::string& module, StreamRef compute) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = slot_holding(module, "acquired");
  ModuleForward f = start_forward(s, compute);
  uint64_t offset = 0;
  char* base = static_cast<char*>(s.buffer.data());
  for (RecordId id : manager_.table().records_of(module)) {
    const TensorRecord r = manager_.table().get(id);
    offset = slot_offset_align(offset);
    f.tensors.emplace_back(r.name, TensorView(base + offset, r.dtype, r.shape, accelerator_));
    offset += r.bytes;
  }
  return f;
}

void ExpertCache::release(const std::string& module, StreamRef compute) {
  std::lock_guard<std::mutex> lock(mutex_);
  end_forward(slot_holding(module, "released"), compute);
}

std::vector<ExpertCacheCounters> ExpertCache::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

}  // namespace stowage
