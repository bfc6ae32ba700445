#include "hostcache/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "hostcache/cache_key.h"

namespace stowage::hostcache {
namespace bip = boost::interprocess;
using detail::kHeaderBytes;
using detail::SegmentHeader;

namespace {

// Maps [offset, offset + bytes) of `shm` with mmap directly: Boost's
// mapped_region would unmap when it goes out of scope, and a Segment's
// lifetime is its own.
void* map(const bip::shared_memory_object& shm, bool writable, uint64_t offset, uint64_t bytes,
          const std::string& name) {
  void* p = ::mmap(nullptr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                   shm.get_mapping_handle().handle, static_cast<off_t>(offset));
  STOWAGE_EXPECTS(p != MAP_FAILED, IoError, "host cache: cannot map {} bytes of segment {}: {}",
                  bytes, name, std::strerror(errno));
  return p;
}

}  // namespace

const char* condition_name(SegmentCondition c) {
  switch (c) {
    case SegmentCondition::kReady:
      return "ready";
    case SegmentCondition::kBuilding:
      return "building";
    case SegmentCondition::kCorrupt:
      return "corrupt";
    case SegmentCondition::kOtherVersion:
      return "other-version";
    case SegmentCondition::kForeign:
      return "foreign";
  }
  return "?";
}

std::string Segment::path_of(const std::string& name) { return "/dev/shm/" + name; }
std::string Segment::lock_path_of(const std::string& name) { return path_of(name) + ".lock"; }

Segment::Segment(std::string name, uint64_t size, void* header_map, void* body_map,
                 uint64_t body_size)
    : name_(std::move(name)),
      size_(size),
      header_(static_cast<SegmentHeader*>(header_map)),
      body_(static_cast<char*>(body_map)),
      body_size_(body_size) {}

Segment::~Segment() {
  if (body_ != nullptr) ::munmap(body_, body_size_);
  ::munmap(header_, kHeaderBytes);
}

std::unique_ptr<Segment> Segment::create(const std::string& name, uint64_t directory_capacity,
                                         uint64_t data_capacity) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  directory_capacity = (directory_capacity + page - 1) / page * page;
  data_capacity = (data_capacity + page - 1) / page * page;
  const uint64_t size = kHeaderBytes + directory_capacity + data_capacity;
  try {
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write,
                                  bip::permissions(0644));
    shm.truncate(static_cast<bip::offset_t>(size));
    // Take the room now: a full /dev/shm is then this error, not a SIGBUS
    // when a page is first written.
    const int err = ::posix_fallocate(shm.get_mapping_handle().handle, 0, static_cast<off_t>(size));
    if (err != 0) {
      bip::shared_memory_object::remove(name.c_str());
      throw IoError(fmt::format("host cache: no room for the shared segment {} ({} bytes) in "
                                "/dev/shm: {}",
                                path_of(name), size, std::strerror(err)));
    }
    void* header = map(shm, true, 0, kHeaderBytes, name);
    void* body = map(shm, true, kHeaderBytes, size - kHeaderBytes, name);
    auto segment = std::unique_ptr<Segment>(new Segment(name, size, header, body, size - kHeaderBytes));
    SegmentHeader& h = segment->header();
    std::memcpy(h.magic, detail::kMagic, sizeof(h.magic));
    h.version = detail::kLayoutVersion;
    h.segment_bytes = size;
    h.directory_offset = kHeaderBytes;
    h.directory_capacity = directory_capacity;
    h.data_offset = kHeaderBytes + directory_capacity;
    h.data_capacity = data_capacity;
    return segment;
  } catch (const bip::interprocess_exception& e) {
    throw IoError(fmt::format("host cache: cannot create the shared segment {} ({} bytes): {}",
                              path_of(name), size, e.what()));
  }
}

std::unique_ptr<Segment> Segment::open(const std::string& name, bool read_only_header) {
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(),
                                  read_only_header ? bip::read_only : bip::read_write);
    bip::offset_t size = 0;
    shm.get_size(size);
    void* header = nullptr;
    if (static_cast<uint64_t>(size) < kHeaderBytes) {
      // Too short to be ours: map what there is into a zeroed header copy.
      header = ::mmap(nullptr, kHeaderBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
      STOWAGE_EXPECTS(header != MAP_FAILED, IoError, "host cache: cannot map a header copy");
      if (size > 0) {
        std::string bytes(static_cast<size_t>(size), '\0');
        (void)::pread(shm.get_mapping_handle().handle, bytes.data(), bytes.size(), 0);
        std::memcpy(header, bytes.data(), bytes.size());
      }
      return std::unique_ptr<Segment>(
          new Segment(name, static_cast<uint64_t>(size), header, nullptr, 0));
    }
    header = map(shm, !read_only_header, 0, kHeaderBytes, name);
    const uint64_t body_size = static_cast<uint64_t>(size) - kHeaderBytes;
    void* body = body_size ? map(shm, false, kHeaderBytes, body_size, name) : nullptr;
    return std::unique_ptr<Segment>(
        new Segment(name, static_cast<uint64_t>(size), header, body, body_size));
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error) return nullptr;
    throw IoError(
        fmt::format("host cache: cannot open the shared segment {}: {}", path_of(name), e.what()));
  }
}

void Segment::remove(const std::string& name) { bip::shared_memory_object::remove(name.c_str()); }

SegmentCondition Segment::condition() const {
  const SegmentHeader& h = *header_;
  if (std::memcmp(h.magic, detail::kMagic, sizeof(h.magic)) != 0) return SegmentCondition::kForeign;
  if (h.version != detail::kLayoutVersion) return SegmentCondition::kOtherVersion;
  const uint32_t state = __atomic_load_n(&h.state, __ATOMIC_ACQUIRE);
  if (state != detail::kReady) return SegmentCondition::kBuilding;
  if (h.segment_bytes != size_ || h.key_length > detail::kMaxKeyBytes ||
      h.model_length > detail::kMaxModelBytes || detail::header_checksum(h) != h.header_checksum ||
      h.directory_offset != kHeaderBytes ||
      h.data_offset != kHeaderBytes + h.directory_capacity ||
      h.directory_capacity > size_ - kHeaderBytes ||
      h.data_capacity > size_ - h.data_offset || h.directory_bytes > h.directory_capacity ||
      h.data_bytes > h.data_capacity) {
    return SegmentCondition::kCorrupt;
  }
  if (fnv1a(directory(), h.directory_bytes) != h.directory_checksum) {
    return SegmentCondition::kCorrupt;
  }
  return SegmentCondition::kReady;
}

std::string Segment::key_text() const {
  return std::string(header_->key, std::min<size_t>(header_->key_length, detail::kMaxKeyBytes));
}

std::string Segment::model() const {
  return std::string(header_->model,
                     std::min<size_t>(header_->model_length, detail::kMaxModelBytes));
}

std::vector<ProcessId> Segment::attached() const {
  std::vector<ProcessId> live;
  for (const ProcessId& slot : header_->attached) {
    if (!slot.empty() && process_alive(slot)) live.push_back(slot);
  }
  return live;
}

void Segment::attach(const ProcessId& self) {
  ProcessId* free_slot = nullptr;
  for (ProcessId& slot : header_->attached) {
    if (!slot.empty() && !process_alive(slot)) slot = ProcessId{};  // its process is gone
    if (slot.empty() && free_slot == nullptr) free_slot = &slot;
  }
  STOWAGE_EXPECTS(free_slot != nullptr, OutOfBudgetError,
                  "host cache segment {}: all {} attachment slots belong to running processes",
                  path_of(name_), detail::kAttachSlots);
  *free_slot = self;
}

size_t Segment::detach(const ProcessId& self) {
  size_t live = 0;
  bool freed = false;
  for (ProcessId& slot : header_->attached) {
    if (!freed && slot.pid == self.pid && slot.start_time == self.start_time) {
      slot = ProcessId{};
      freed = true;
    } else if (!slot.empty()) {
      if (process_alive(slot)) {
        ++live;
      } else {
        slot = ProcessId{};
      }
    }
  }
  return live;
}

void Segment::seal() {
  if (body_ != nullptr) ::mprotect(body_, body_size_, PROT_READ);
}

}  // namespace stowage::hostcache
