// The upload of a small host buffer through the accelerator's own loads
// (kernels/memory_read.h: upload_from_pinned).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/detail/launch.h"

namespace stowage::kernels::detail {
namespace {

constexpr int kUploadThreads = 256;
constexpr unsigned kUploadMaxBlocks = 1024;

// Each thread moves words of type Word from the mapped host pages to device
// memory; the first thread also moves the tail shorter than a word.
template <typename Word>
__global__ void __launch_bounds__(kUploadThreads)
    upload_kernel(unsigned char* dst, const unsigned char* src, uint64_t bytes) {
  const uint64_t words = bytes / sizeof(Word);
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  auto* d = reinterpret_cast<Word*>(dst);
  const auto* s = reinterpret_cast<const Word*>(src);
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words;
       i += stride) {
    d[i] = s[i];
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    for (uint64_t i = words * sizeof(Word); i < bytes; ++i) dst[i] = src[i];
  }
}

template <typename Word>
cudaError_t launch_words(void* dst, const void* src, uint64_t bytes, cudaStream_t stream) {
  const uint64_t words = bytes / sizeof(Word) + 1;
  uint64_t blocks = (words + kUploadThreads - 1) / kUploadThreads;
  if (blocks > kUploadMaxBlocks) blocks = kUploadMaxBlocks;
  upload_kernel<Word><<<static_cast<unsigned>(blocks), kUploadThreads, 0, stream>>>(
      static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), bytes);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_upload_from_pinned(void* dst, const void* src, uint64_t bytes,
                                      cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const auto alignment = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src);
  if (alignment % 16 == 0) return launch_words<uint4>(dst, src, bytes, stream);
  if (alignment % 4 == 0) return launch_words<uint32_t>(dst, src, bytes, stream);
  return launch_words<unsigned char>(dst, src, bytes, stream);
}

}  // namespace stowage::kernels::detail
