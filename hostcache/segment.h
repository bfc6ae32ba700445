// One named shared-memory segment of the host cache (POSIX shared memory
// through Boost.Interprocess, /dev/shm/NAME), mapped into this process: the
// header read-write (its attachment slots and keep flag change), the
// directory and data read-write while building, read-only once ready.
//
// Segment names are PREFIX-ID, ID being CacheKey::id; each has a lock file
// /dev/shm/PREFIX-ID.lock (lock_file.h) that builders hold for the whole
// build and every process holds while it claims or frees a slot.
//
// Thread safety: one object REQUIRES external synchronization.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hostcache/detail/segment_layout.h"
#include "hostcache/process_liveness.h"

namespace stowage::hostcache {

// What an existing segment's header says, before anything of it is trusted.
enum class SegmentCondition {
  kReady,        // complete, checksums right
  kBuilding,     // its builder has not finished (or died before finishing)
  kCorrupt,      // ours and of this version, but its header or directory checksum is wrong
  kOtherVersion, // ours, another layout version
  kForeign,      // not a Stowage weight segment at all
};
const char* condition_name(SegmentCondition condition);

class Segment {
 public:
  // "/dev/shm/" + name: where POSIX shared memory lives on Linux.
  static std::string path_of(const std::string& name);
  static std::string lock_path_of(const std::string& name);

  // Creates segment `name` (removing nothing: it must not exist) of
  // kHeaderBytes + directory and data capacities, all mapped read-write.
  // Throws IoError naming it.
  static std::unique_ptr<Segment> create(const std::string& name, uint64_t directory_capacity,
                                         uint64_t data_capacity);
  // Maps an existing segment (header read-write unless `read_only_header`,
  // the rest read-only); nullptr when there is none. Throws IoError.
  static std::unique_ptr<Segment> open(const std::string& name, bool read_only_header = false);
  // Removes the name (processes that mapped it keep their mapping).
  static void remove(const std::string& name);

  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  detail::SegmentHeader& header() { return *header_; }
  const detail::SegmentHeader& header() const { return *header_; }
  char* body() { return body_; }  // from kHeaderBytes
  const char* directory() const { return body_ + (header_->directory_offset - detail::kHeaderBytes); }
  char* data() { return body_ + (header_->data_offset - detail::kHeaderBytes); }

  // Classifies the header (never trusts a field before the magic, version
  // and checksums say it may).
  SegmentCondition condition() const;
  // The key text, model path and state of a header that is at least ours.
  std::string key_text() const;
  std::string model() const;
  // Live attached processes (dead slots are not listed).
  std::vector<ProcessId> attached() const;

  // Slot bookkeeping. REQUIRES: the segment's lock file held.
  // Claims a slot for `self` (freeing slots of dead processes first).
  // Throws OutOfBudgetError when every slot belongs to a live process.
  void attach(const ProcessId& self);
  // Frees `self`'s slot; returns the number of live processes still attached.
  size_t detach(const ProcessId& self);

  // Makes the directory and data read-only (after building).
  void seal();

 private:
  Segment(std::string name, uint64_t size, void* header_map, void* body_map, uint64_t body_size);
  std::string name_;
  uint64_t size_ = 0;
  detail::SegmentHeader* header_ = nullptr;
  char* body_ = nullptr;
  uint64_t body_size_ = 0;
};

}  // namespace stowage::hostcache
