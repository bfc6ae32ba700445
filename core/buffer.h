// Buffer: bytes owned from a MemoryResource (or adopted, e.g. an mmap'd
// region), knowing their tier. Move-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/memory_resource.h"

namespace stowage {

// Where an adopted buffer's bytes lie in a file: [offset, offset + size())
// of `path`, a read-only mapping of the file that had (device, inode) when
// it was mapped. Lets a reader pread the bytes instead of faulting the
// mapping in, and tell when the path has come to name another file.
struct FileOrigin {
  std::string path;
  uint64_t offset = 0;
  uint64_t device = 0;
  uint64_t inode = 0;
};

class Buffer {
 public:
  Buffer() = default;
  // Allocates `bytes` from `resource` (stream-ordered on `stream`). The
  // resource must outlive the buffer.
  Buffer(MemoryResource& resource, size_t bytes, StreamRef stream = {});
  // Wraps memory owned elsewhere; `release` (may be empty) runs when the
  // buffer is destroyed. Used for mmap'd file regions (tier disk).
  static Buffer adopt(void* data, size_t bytes, Tier tier, std::function<void()> release);
  // Same, for a mapping of [origin.offset, origin.offset + bytes) of a file.
  static Buffer adopt(void* data, size_t bytes, Tier tier, std::function<void()> release,
                      FileOrigin origin);

  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  // Frees on the stream it was allocated on (stream-ordered).
  ~Buffer();

  // Frees now, ordered after the work already on `stream`.
  void reset(StreamRef stream);
  void reset() { reset(stream_); }

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t size() const { return size_; }
  Tier tier() const { return tier_; }
  bool empty() const { return data_ == nullptr && size_ == 0; }
  MemoryResource* resource() const { return resource_; }
  // The file the bytes map, for buffers adopted with one; nullptr otherwise.
  const FileOrigin* file_origin() const { return origin_.get(); }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  Tier tier_ = Tier::pageable_host();
  MemoryResource* resource_ = nullptr;
  StreamRef stream_;
  std::function<void()> release_;
  std::shared_ptr<const FileOrigin> origin_;
};

}  // namespace stowage
