// The small-batch dense GEMV of gemm.h (dense_gemv): float32 activations,
// 16-bit weights, one warp per output row. Each lane keeps kUnroll 16-byte
// weight loads in flight (memory-bound: the weights are read once), the
// activations come through the read-only cache, and the warp's partial sums
// meet in a butterfly whose order depends on nothing but k.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_helpers.h"
#include "kernels/detail/launch.h"

namespace stowage::kernels::detail {
namespace {

constexpr int kWarps = 8;   // output rows per block
constexpr int kUnroll = 4;  // 16-byte weight loads in flight per lane

__device__ __forceinline__ void widen8(const uint4& v, const __half*, float* out) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void widen8(const uint4& v, const __nv_bfloat16*, float* out) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <typename W, int M>
__device__ __forceinline__ void finish_row(float (&acc)[M], int lane, const void* bias,
                                           int bias_kind, bool relu, int64_t row, int64_t n,
                                           float* y) {
#pragma unroll
  for (int r = 0; r < M; ++r) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  }
  if (lane != 0) return;
  float b = 0.0f;
  if (bias_kind == 1) b = static_cast<const float*>(bias)[row];
  if (bias_kind == 2) b = load_float(static_cast<const W*>(bias), row);
#pragma unroll
  for (int r = 0; r < M; ++r) {
    float v = acc[r] + b;
    if (relu) v = fmaxf(v, 0.0f);
    y[r * n + row] = v;
  }
}

// k % 8 == 0 and 16-byte aligned x and w: whole 16-byte chunks.
template <typename W, int M>
__global__ void __launch_bounds__(kWarps * 32)
    dense_gemv_chunks_kernel(const float* __restrict__ x, const W* __restrict__ w,
                             const void* bias, int bias_kind, bool relu, int64_t n, int64_t k,
                             float* __restrict__ y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= n) return;
  const W* wr = w + row * k;
  const int64_t chunks = k / 8;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * 32;
      v[u] = c < chunks ? load_stream16(wr + c * 8) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * 32;
      if (c >= chunks) break;
      float wf[8];
      widen8(v[u], static_cast<const W*>(nullptr), wf);
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const float4* xp = reinterpret_cast<const float4*>(x + r * k + c * 8);
        const float4 a = __ldg(xp), b = __ldg(xp + 1);
        float s = a.x * wf[0];
        s = fmaf(a.y, wf[1], s);
        s = fmaf(a.z, wf[2], s);
        s = fmaf(a.w, wf[3], s);
        s = fmaf(b.x, wf[4], s);
        s = fmaf(b.y, wf[5], s);
        s = fmaf(b.z, wf[6], s);
        s = fmaf(b.w, wf[7], s);
        acc[r] += s;
      }
    }
  }
  finish_row<W, M>(acc, lane, bias, bias_kind, relu, row, n, y);
}

// Any k and alignment: element-wise loads.
template <typename W, int M>
__global__ void __launch_bounds__(kWarps * 32)
    dense_gemv_elements_kernel(const float* __restrict__ x, const W* __restrict__ w,
                               const void* bias, int bias_kind, bool relu, int64_t n, int64_t k,
                               float* __restrict__ y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= n) return;
  const W* wr = w + row * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  for (int64_t i = lane; i < k; i += 32) {
    const float wi = load_float(wr, i);
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] = fmaf(x[r * k + i], wi, acc[r]);
  }
  finish_row<W, M>(acc, lane, bias, bias_kind, relu, row, n, y);
}

template <typename W, int M>
cudaError_t launch_rows(const DenseGemvLaunch& a, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((a.n + kWarps - 1) / kWarps);
  const W* w = static_cast<const W*>(a.w);
  const bool chunks = a.k % 8 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(a.w) % 16 == 0;
  if (chunks) {
    dense_gemv_chunks_kernel<W, M><<<blocks, kWarps * 32, 0, stream>>>(
        a.x, w, a.bias, a.bias_kind, a.relu, a.n, a.k, a.y);
  } else {
    dense_gemv_elements_kernel<W, M><<<blocks, kWarps * 32, 0, stream>>>(
        a.x, w, a.bias, a.bias_kind, a.relu, a.n, a.k, a.y);
  }
  return cudaGetLastError();
}

template <typename W>
cudaError_t launch_typed(const DenseGemvLaunch& a, cudaStream_t stream) {
  switch (a.m) {
    case 1: return launch_rows<W, 1>(a, stream);
    case 2: return launch_rows<W, 2>(a, stream);
    case 3: return launch_rows<W, 3>(a, stream);
    case 4: return launch_rows<W, 4>(a, stream);
    case 5: return launch_rows<W, 5>(a, stream);
    case 6: return launch_rows<W, 6>(a, stream);
    case 7: return launch_rows<W, 7>(a, stream);
    case 8: return launch_rows<W, 8>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_dense_gemv(const DenseGemvLaunch& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  switch (a.weight_type) {
    case FloatType::kF16:
      return launch_typed<__half>(a, stream);
    case FloatType::kBF16:
      return launch_typed<__nv_bfloat16>(a, stream);
    case FloatType::kF32:
      break;
  }
  return cudaErrorInvalidValue;
}

namespace {

constexpr int kReadThreads = 512;
constexpr int kReadUnroll = 4;

__global__ void __launch_bounds__(kReadThreads)
    read_checksum_kernel(const uint4* data, uint64_t words, unsigned long long* checksum) {
  uint4 x = make_uint4(0, 0, 0, 0);
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * kReadThreads;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(kReadThreads) + threadIdx.x; i < words;
       i += stride * kReadUnroll) {
    uint4 v[kReadUnroll];
#pragma unroll
    for (int u = 0; u < kReadUnroll; ++u) {
      const uint64_t j = i + u * stride;
      v[u] = j < words ? load_stream16(data + j) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kReadUnroll; ++u) {
      x.x ^= v[u].x;
      x.y ^= v[u].y;
      x.z ^= v[u].z;
      x.w ^= v[u].w;
    }
  }
  const unsigned long long folded =
      (static_cast<unsigned long long>(x.y ^ x.w) << 32) | (x.x ^ x.z);
  if (folded != 0) atomicXor(checksum, folded);
}

}  // namespace

cudaError_t launch_read_checksum(const void* data, uint64_t bytes, uint64_t* checksum,
                                 cudaStream_t stream) {
  cudaError_t status = cudaMemsetAsync(checksum, 0, sizeof(uint64_t), stream);
  if (status != cudaSuccess || bytes == 0) return status;
  int device = 0, sms = 0;
  status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status != cudaSuccess) return status;
  read_checksum_kernel<<<static_cast<unsigned>(sms * 4), kReadThreads, 0, stream>>>(
      static_cast<const uint4*>(data), bytes / 16,
      reinterpret_cast<unsigned long long*>(checksum));
  return cudaGetLastError();
}

}  // namespace stowage::kernels::detail
