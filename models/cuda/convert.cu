// float16 / bfloat16 -> float32 conversion on a CUDA stream (the MLP's
// accelerator kernels use it for 16-bit weights and biases, since its
// activations are float32).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace stowage::models::cuda {

namespace {
__global__ void half_to_float(const __half* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __half2float(src[i]);
  }
}
__global__ void bf16_to_float(const __nv_bfloat16* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __bfloat162float(src[i]);
  }
}
__global__ void relu_kernel(float* data, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    data[i] = data[i] < 0.0f ? 0.0f : data[i];
  }
}
__global__ void float_to_half(const float* src, __half* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __float2half_rn(src[i]);
  }
}
__global__ void float_to_bf16(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}
}  // namespace

// kind: 0 = float16, 1 = bfloat16 (round to nearest even).
int convert_f32_to_16bit(const float* src, int kind, int64_t n, void* dst, void* stream) {
  if (n <= 0) return 0;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 65535) blocks = 65535;
  auto s = static_cast<cudaStream_t>(stream);
  if (kind == 0) {
    float_to_half<<<static_cast<unsigned>(blocks), 256, 0, s>>>(src, static_cast<__half*>(dst), n);
  } else {
    float_to_bf16<<<static_cast<unsigned>(blocks), 256, 0, s>>>(
        src, static_cast<__nv_bfloat16*>(dst), n);
  }
  return static_cast<int>(cudaGetLastError());
}

int relu_f32(float* data, int64_t n, void* stream) {
  if (n <= 0) return 0;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 65535) blocks = 65535;
  relu_kernel<<<static_cast<unsigned>(blocks), 256, 0, static_cast<cudaStream_t>(stream)>>>(data,
                                                                                             n);
  return static_cast<int>(cudaGetLastError());
}

// kind: 0 = float16, 1 = bfloat16. Returns the launch's cudaError_t as int.
int convert_16bit_to_f32(const void* src, int kind, int64_t n, float* dst, void* stream) {
  if (n <= 0) return 0;
  const int threads = 256;
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;
  auto s = static_cast<cudaStream_t>(stream);
  if (kind == 0) {
    half_to_float<<<static_cast<unsigned>(blocks), threads, 0, s>>>(
        static_cast<const __half*>(src), dst, n);
  } else {
    bf16_to_float<<<static_cast<unsigned>(blocks), threads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(src), dst, n);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace stowage::models::cuda
