// The disk tier as the offload manager sees it, behind two small interfaces
// so mmap_store's implementations (offload folder, StagingRing of pinned
// buffers read by an I/O thread pool) can replace the simple ones here.
//
// A disk-resident tensor is a core Tensor on Tier::disk() whose bytes are a
// read-only mapping of a file: readable from the host at any time (seed
// lesson 3: no placeholders).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/stream.h"
#include "core/tensor.h"
#include "mmap_store/file_handle.h"

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

// A memcpy from the mapping in a host task on the stream (after asking the
// kernel to read the range ahead when the read is queued).
std::unique_ptr<DiskStager> make_memcpy_disk_stager();

// Options of make_file_read_disk_stager.
struct FileReadStagerOptions {
  // Threads of the stager's own I/O pool and the task size reads are split
  // into (mmap_store's defaults and environment variables).
  mmap_store::IoOptions io = mmap_store::IoOptions::from_environment();
  // Opens a disk tensor's file; null: mmap_store::open_random_access_file.
  // A test seam (e.g. a FaultInjectingFile around the real file).
  std::function<std::unique_ptr<mmap_store::RandomAccessFile>(const std::string& path)> open_file;
};

// Reads a disk tensor's bytes from its file (core FileOrigin: folder
// DiskStore tensors, checkpoint tensors used in place) with mmap_store's
// FileHandle: positional reads split into tasks over the stager's I/O pool
// (a read of one task size or less runs on the stream's own thread), straight
// into `dst`, started when the stream reaches the read; later work on the
// stream waits for all of them. A failed or short read is the
// stream's error (an IoError naming the file, offset and bytes, rethrown by
// its synchronize), never bytes taken as read. A tensor with no file origin,
// or whose file cannot be opened or is no longer the one mapped, is read as
// make_memcpy_disk_stager reads it.
std::unique_ptr<DiskStager> make_file_read_disk_stager(FileReadStagerOptions options = {});

// The stagers OffloadOptions can name.
enum class DiskStagerKind {
  kMemcpy,    // make_memcpy_disk_stager
  kFileRead,  // make_file_read_disk_stager with default options
};
std::unique_ptr<DiskStager> make_disk_stager(DiskStagerKind kind);

}  // namespace stowage
