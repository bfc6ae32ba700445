// float16 / bfloat16 -> float32 conversion on a CUDA stream (the MLP's
// accelerator kernels use it for 16-bit weights and biases, since its
// activations are float32).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_helpers.h"

namespace stowage::models::cuda {

namespace {

using kernels::detail::grid_for;
using kernels::detail::load_float;
using kernels::detail::store_float;

// dst[i] = src[i] converted (through float32, rounding to nearest even).
template <typename Src, typename Dst>
__global__ void convert_kernel(const Src* src, Dst* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_float(dst, i, load_float(src, i));
  }
}

__global__ void relu_kernel(float* data, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    data[i] = data[i] < 0.0f ? 0.0f : data[i];
  }
}

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename Src, typename Dst>
int convert(const Src* src, Dst* dst, int64_t n, void* stream) {
  convert_kernel<<<grid_for(n, kThreads, kMaxBlocks), kThreads, 0,
                   static_cast<cudaStream_t>(stream)>>>(src, dst, n);
  return static_cast<int>(cudaGetLastError());
}
}  // namespace

// kind: 0 = float16, 1 = bfloat16 (round to nearest even).
int convert_f32_to_16bit(const float* src, int kind, int64_t n, void* dst, void* stream) {
  if (n <= 0) return 0;
  return kind == 0 ? convert(src, static_cast<__half*>(dst), n, stream)
                   : convert(src, static_cast<__nv_bfloat16*>(dst), n, stream);
}

int relu_f32(float* data, int64_t n, void* stream) {
  if (n <= 0) return 0;
  relu_kernel<<<grid_for(n, kThreads, kMaxBlocks), kThreads, 0,
                static_cast<cudaStream_t>(stream)>>>(data, n);
  return static_cast<int>(cudaGetLastError());
}

// kind: 0 = float16, 1 = bfloat16. Returns the launch's cudaError_t as int.
int convert_16bit_to_f32(const void* src, int kind, int64_t n, float* dst, void* stream) {
  if (n <= 0) return 0;
  return kind == 0 ? convert(static_cast<const __half*>(src), dst, n, stream)
                   : convert(static_cast<const __nv_bfloat16*>(src), dst, n, stream);
}

}  // namespace stowage::models::cuda
