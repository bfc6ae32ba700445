#include "kernels/memory_read.h"

#include <cstring>

#include "core/error.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/dispatch.h"

namespace stowage::kernels {

void read_checksum(const void* data, uint64_t bytes, uint64_t* checksum, StreamRef stream) {
  STOWAGE_EXPECTS(bytes % 16 == 0 && reinterpret_cast<uintptr_t>(data) % 16 == 0 &&
                      checksum != nullptr && (data != nullptr || bytes == 0),
                  InvalidInputError,
                  "kernels::read_checksum: expected 16-byte aligned data of a multiple of 16 "
                  "bytes and a checksum pointer, found {} bytes at {}",
                  bytes, data);
  detail::dispatch(
      stream,
      [=] {
        uint64_t x = 0;
        const auto* p = static_cast<const unsigned char*>(data);
        for (uint64_t i = 0; i < bytes; i += 8) {
          uint64_t w;
          std::memcpy(&w, p + i, 8);
          x ^= w;
        }
        *checksum = x;
      },
      [&](void* s) { detail::cuda_read_checksum(data, bytes, checksum, s); });
}

void upload_from_pinned(void* dst, const void* src, uint64_t bytes, StreamRef stream) {
  STOWAGE_EXPECTS((dst != nullptr && src != nullptr) || bytes == 0, InvalidInputError,
                  "kernels::upload_from_pinned: expected two buffers, found {} -> {} for {} bytes",
                  src, dst, bytes);
  if (bytes == 0) return;
  if (stream.is_null() || stream.backend() != Backend::kCuda) {
    stream.copy(dst, src, bytes);
    return;
  }
  detail::cuda_upload_from_pinned(dst, src, bytes, stream.native_handle());
}

}  // namespace stowage::kernels
