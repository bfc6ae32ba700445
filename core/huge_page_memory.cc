#include "core/huge_page_memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace stowage {

HugePageMapping::HugePageMapping(size_t bytes) {
  STOWAGE_EXPECTS(bytes > 0 && bytes <= SIZE_MAX - 2 * kHugePageBytes, InvalidInputError,
                  "huge-page mapping: expected 1 to {} bytes, found {}",
                  SIZE_MAX - 2 * kHugePageBytes, bytes);
  const size_t length = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  // Over-map by one huge page, then trim to an aligned window.
  const size_t over = length + kHugePageBytes;
  void* raw = mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    const int error = errno;
    throw OutOfMemoryError(fmt::format("huge-page mapping: could not map {} bytes of host memory: {}",
                                       over, std::strerror(error)));
  }
  const auto start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  const size_t head = aligned - start, tail = over - head - length;
  if (head > 0) munmap(raw, head);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + length), tail);
  data_ = reinterpret_cast<void*>(aligned);
  bytes_ = length;
  advised_ = madvise(data_, bytes_, MADV_HUGEPAGE) == 0;
}

HugePageMapping::HugePageMapping(HugePageMapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      advised_(std::exchange(other.advised_, false)) {}

HugePageMapping& HugePageMapping::operator=(HugePageMapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, bytes_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    advised_ = std::exchange(other.advised_, false);
  }
  return *this;
}

HugePageMapping::~HugePageMapping() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

void* HugePageMappings::keep(HugePageMapping mapping) {
  void* ptr = mapping.data();
  std::lock_guard<std::mutex> lock(mutex_);
  by_address_.emplace(ptr, std::move(mapping));
  return ptr;
}

HugePageMapping HugePageMappings::take(void* ptr) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = by_address_.find(ptr);
  if (it == by_address_.end()) return HugePageMapping();
  HugePageMapping mapping = std::move(it->second);
  by_address_.erase(it);
  return mapping;
}

}  // namespace stowage
