#include "core/buffer.h"

#include <utility>

namespace stowage {

Buffer::Buffer(MemoryResource& resource, size_t bytes, StreamRef stream)
    : data_(resource.allocate(bytes, stream)),
      size_(bytes),
      tier_(resource.tier()),
      resource_(&resource),
      stream_(stream) {}

Buffer Buffer::adopt(void* data, size_t bytes, Tier tier, std::function<void()> release) {
  Buffer buffer;
  buffer.data_ = data;
  buffer.size_ = bytes;
  buffer.tier_ = tier;
  buffer.release_ = std::move(release);
  return buffer;
}

Buffer Buffer::adopt(void* data, size_t bytes, Tier tier, std::function<void()> release,
                     FileOrigin origin) {
  Buffer buffer = adopt(data, bytes, tier, std::move(release));
  buffer.origin_ = std::make_shared<const FileOrigin>(std::move(origin));
  return buffer;
}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      tier_(other.tier_),
      resource_(std::exchange(other.resource_, nullptr)),
      stream_(other.stream_),
      release_(std::exchange(other.release_, nullptr)),
      origin_(std::move(other.origin_)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    tier_ = other.tier_;
    resource_ = std::exchange(other.resource_, nullptr);
    stream_ = other.stream_;
    release_ = std::exchange(other.release_, nullptr);
    origin_ = std::move(other.origin_);
  }
  return *this;
}

Buffer::~Buffer() { reset(); }

void Buffer::reset(StreamRef stream) {
  if (resource_ != nullptr) resource_->deallocate(data_, size_, stream);
  if (release_) release_();
  data_ = nullptr;
  size_ = 0;
  resource_ = nullptr;
  release_ = nullptr;
  origin_.reset();
}

}  // namespace stowage
