// The disk tier as the offload manager sees it, behind two small interfaces
// so mmap_store's implementations (offload folder, StagingRing of pinned
// buffers read by an I/O thread pool) can replace the simple ones here.
//
// A disk-resident tensor is a core Tensor on Tier::disk() whose bytes are a
// read-only mapping of a file: readable from the host at any time (seed
// lesson 3: no placeholders).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/stream.h"
#include "core/tensor.h"

namespace stowage {

// Writes tensors to the disk tier.
//
// Thread safety: implementations must allow concurrent calls.
class DiskStore {
 public:
  virtual ~DiskStore() = default;
  // Writes the bytes of `host_tensor` (host-readable: pinned, pageable or
  // disk) under `key` and returns a Tensor on Tier::disk() mapping them.
  // Throws IoError naming the file on failure.
  virtual Tensor write(const std::string& key, const Tensor& host_tensor) = 0;
  // Where the tensors live (for messages).
  virtual std::string location() const = 0;
};

// A folder with one raw file per tensor (key with '/' replaced), written to a
// temporary name, renamed into place, then mmap'd read-only. The file is
// removed when its last Tensor goes away. Creates the folder if missing.
std::unique_ptr<DiskStore> make_folder_disk_store(const std::string& folder);

// Stages disk-tier bytes into pinned host memory, ordered on a stream (the
// copy stream of the accelerator they go to next).
//
// Thread safety: implementations must allow concurrent calls.
class DiskStager {
 public:
  virtual ~DiskStager() = default;
  // Enqueues on `stream` a read of bytes [offset, offset + bytes) of
  // `disk_tensor` into `dst` (pinned host, at least `bytes` bytes). Work
  // enqueued on `stream` later sees the bytes. `disk_tensor` is kept alive
  // until read. REQUIRES: offset + bytes <= disk_tensor.bytes().
  virtual void enqueue_read(StreamRef stream, const Tensor& disk_tensor, uint64_t offset,
                            uint64_t bytes, void* dst) = 0;
  // All bytes of `disk_tensor`.
  void enqueue_read(StreamRef stream, const Tensor& disk_tensor, void* dst) {
    enqueue_read(stream, disk_tensor, 0, disk_tensor.bytes(), dst);
  }
};

// The stand-in until mmap_store's ring lands: a memcpy from the mapping in a
// host task on the stream.
std::unique_ptr<DiskStager> make_memcpy_disk_stager();

}  // namespace stowage
