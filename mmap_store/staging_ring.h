// A ring of pinned staging buffers for the disk -> pinned -> device path.
// ring.read(file, offset, bytes, consumer) takes the next free slot (queueing
// the request while every slot is busy), reads the bytes into it on the
// file's I/O pool, and hands the slot to the consumer; the consumer starts its
// device copy from the slot and gives the slot back with release() or
// release_after(stream) once the copy no longer needs it.
//
// While its file is being read from the device (FileHandle::
// reading_from_device: a recent read missed the page cache), the ring asks
// the OS to read ahead the queued requests (FileHandle::advise_willneed), up
// to the file's IoOptions::readahead_bytes beyond the reads in flight, in
// queue order: the disk queue stays deep and sequential without more slots or
// threads, and the reads in the slots then mostly copy from the page cache.
// On a warm file there are no hints (they would only cost a page walk).
//
// Thread safety: every member may be called from several threads at once,
// including from inside a consumer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>

#include "core/memory_resource.h"
#include "core/stream.h"
#include "mmap_store/file_handle.h"

namespace stowage::mmap_store {

struct StagedRead {
  const void* data = nullptr;  // the slot's memory holding the bytes (null on error)
  size_t bytes = 0;
  uint64_t offset = 0;       // where in the file they came from
  int slot = -1;             // give it back with release(slot); -1 on error
  std::exception_ptr error;  // IoError of a failed read; the slot is then already free
};

// The shape of a ring feeding one reader that uses `io`: slots of
// kDefaultStagingSlotBytes or 4 tasks, whichever is larger (16 MiB with the
// 4 MiB tasks of 8 threads or more: 8 x 16 MiB on a 16-core host), enough of them that the slots hold two tasks per
// I/O thread (threads stay busy while consumers hold slots), at least 2 (one
// being read while the other is consumed). A small footprint matters on a
// warm read, a memory copy: slots that stay in the last-level cache are
// written without first being read from memory, as the one buffer of a
// plain read() loop is (2 threads: 2 x 4 MiB).
constexpr size_t kDefaultStagingSlotBytes = size_t{4} << 20;
struct StagingRingShape {
  size_t slot_bytes = kDefaultStagingSlotBytes;
  size_t slot_count = 2;
};
StagingRingShape default_staging_ring_shape(const IoOptions& io = IoOptions::from_environment());

class StagingRing {
 public:
  // Allocates `slot_count` buffers of `slot_bytes` from `pinned` (pass
  // Platform::pinned_host_memory(): cudaHostAlloc on CUDA, aligned host memory
  // on sim, so O_DIRECT reads work). The resource must outlive the ring.
  StagingRing(MemoryResource& pinned, size_t slot_bytes, size_t slot_count);
  // Requests not started yet complete with an error; waits for reads in
  // flight and their consumers. REQUIRES: every slot released and no stream
  // still holding a release_after().
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  using Consumer = std::function<void(const StagedRead&)>;
  // Returns at once. Throws InvalidInputError when bytes > slot_bytes().
  // REQUIRES: `file` outlives the request.
  void read(FileHandle& file, uint64_t offset, size_t bytes, Consumer consumer);
  // Frees a slot; a queued request may start in it at once.
  void release(int slot);
  // Frees the slot once the work already enqueued on `stream` has run (e.g.
  // the device copy out of it), without blocking the caller.
  void release_after(StreamRef stream, int slot);

  size_t slot_bytes() const;
  size_t slot_count() const;
  size_t free_slots() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace stowage::mmap_store
