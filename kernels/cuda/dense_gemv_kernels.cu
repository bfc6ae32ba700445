// The small-batch dense GEMV of gemm.h (dense_gemv): float32 activations,
// 16-bit weights, one warp per output row. Each lane keeps kUnroll 16-byte
// weight loads in flight (memory-bound: the weights are read once), the
// activations come through the read-only cache, and the warp's partial sums
// meet in a butterfly whose order depends on nothing but k.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_helpers.h"
#include "kernels/detail/launch.h"
#include "kernels/detail/transformer_launch.h"

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

// The reduced value of one output row: the warp's partial sums meet in a
// butterfly, then the bias and ReLU.
template <typename W, int M>
__device__ __forceinline__ void reduce_row(float (&acc)[M], const void* bias, int bias_kind,
                                           bool relu, int64_t row) {
#pragma unroll
  for (int r = 0; r < M; ++r) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  }
  float b = 0.0f;
  if (bias_kind == 1) b = static_cast<const float*>(bias)[row];
  if (bias_kind == 2) b = load_float(static_cast<const W*>(bias), row);
#pragma unroll
  for (int r = 0; r < M; ++r) {
    float v = acc[r] + b;
    if (relu) v = fmaxf(v, 0.0f);
    acc[r] = v;
  }
}

template <typename W, int M>
__device__ __forceinline__ void finish_row(float (&acc)[M], int lane, const void* bias,
                                           int bias_kind, bool relu, bool accumulate, int64_t row,
                                           int64_t n, float* y) {
  reduce_row<W, M>(acc, bias, bias_kind, relu, row);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    float* out = y + r * n + row;
    *out = accumulate ? *out + acc[r] : acc[r];
  }
}

// acc[r] += this lane's share of x[r, :] . w_row[:] over whole 16-byte chunks
// (k % 8 == 0, 16-byte aligned x and w_row); `Rows` weight rows at once (the
// SwiGLU pair), each summed in the same order as alone.
template <typename W, int M, int Rows>
__device__ __forceinline__ void dot_chunks(const float* __restrict__ x,
                                           const W* const (&w_rows)[Rows], int64_t k, int lane,
                                           float (&acc)[Rows][M]) {
  const int64_t chunks = k / 8;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 v[Rows][kUnroll];
#pragma unroll
    for (int q = 0; q < Rows; ++q) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = c0 + u * 32;
        v[q][u] = c < chunks ? load_stream16(w_rows[q] + c * 8) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * 32;
      if (c >= chunks) break;
#pragma unroll
      for (int q = 0; q < Rows; ++q) {
        float wf[8];
        widen8(v[q][u], static_cast<const W*>(nullptr), wf);
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
          acc[q][r] += s;
        }
      }
    }
  }
}

// One launch's outputs: output o owns blocks [first_block[o], first_block[o + 1]).
struct GemvOutput {
  const void* w;
  const void* bias;
  int bias_kind;
  bool relu;
  bool accumulate;
  int64_t n;
  float* y;
  unsigned first_block;
};
struct GemvGroup {
  GemvOutput out[kDenseGemvLaunchMaxGroup];
  int count;
  const float* x;
  int64_t k;
};

// Every output of the group in one grid, one warp per output row.
template <typename W, int M>
__global__ void __launch_bounds__(kWarps * 32) dense_gemv_group_kernel(const GemvGroup g) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int o = 0;
  while (o + 1 < g.count && blockIdx.x >= g.out[o + 1].first_block) ++o;
  const GemvOutput& out = g.out[o];
  const int64_t row = static_cast<int64_t>(blockIdx.x - out.first_block) * kWarps + warp;
  if (row >= out.n) return;
  const W* const rows[1] = {static_cast<const W*>(out.w) + row * g.k};
  float acc[1][M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[0][r] = 0.0f;
  dot_chunks<W, M, 1>(g.x, rows, g.k, lane, acc);
  finish_row<W, M>(acc[0], lane, out.bias, out.bias_kind, out.relu, out.accumulate, row, out.n,
                   out.y);
}

// SwiGLU's first half: one warp per row of gate (out[0]) and up (out[1]),
// act = silu(g) * u as swiglu_kernel computes it.
template <typename W, int M>
__global__ void __launch_bounds__(kWarps * 32)
    dense_gemv_swiglu_kernel(const GemvGroup g, float* __restrict__ act) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n = g.out[0].n;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= n) return;
  const W* const rows[2] = {static_cast<const W*>(g.out[0].w) + row * g.k,
                            static_cast<const W*>(g.out[1].w) + row * g.k};
  float acc[2][M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[0][r] = acc[1][r] = 0.0f;
  dot_chunks<W, M, 2>(g.x, rows, g.k, lane, acc);
  reduce_row<W, M>(acc[0], g.out[0].bias, g.out[0].bias_kind, false, row);
  reduce_row<W, M>(acc[1], g.out[1].bias, g.out[1].bias_kind, false, row);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float gate = acc[0][r];
    act[r * n + row] = gate / (1.0f + expf(-gate)) * acc[1][r];
  }
}

// Any k and alignment: element-wise loads.
template <typename W, int M>
__global__ void __launch_bounds__(kWarps * 32)
    dense_gemv_elements_kernel(const float* __restrict__ x, const W* __restrict__ w,
                               const void* bias, int bias_kind, bool relu, bool accumulate,
                               int64_t n, int64_t k, float* __restrict__ y) {
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
  finish_row<W, M>(acc, lane, bias, bias_kind, relu, accumulate, row, n, y);
}

bool whole_chunks(const DenseGemvLaunch& a) {
  return a.k % 8 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.w) % 16 == 0;
}

unsigned row_blocks(int64_t n) { return static_cast<unsigned>((n + kWarps - 1) / kWarps); }

GemvGroup make_group(const DenseGemvLaunch* outputs, int count) {
  GemvGroup g{};
  g.count = count;
  g.x = outputs[0].x;
  g.k = outputs[0].k;
  unsigned block = 0;
  for (int i = 0; i < count; ++i) {
    const DenseGemvLaunch& a = outputs[i];
    g.out[i] = {a.w, a.bias, a.bias_kind, a.relu, a.accumulate, a.n, a.y, block};
    block += row_blocks(a.n);
  }
  return g;
}

template <typename W, int M>
cudaError_t launch_rows(const DenseGemvLaunch* outputs, int count, float* act,
                        cudaStream_t stream) {
  bool fused = true;
  for (int i = 0; i < count; ++i) fused = fused && whole_chunks(outputs[i]);
  if (fused) {
    const GemvGroup group = make_group(outputs, count);
    if (act != nullptr) {
      dense_gemv_swiglu_kernel<W, M>
          <<<row_blocks(outputs[0].n), kWarps * 32, 0, stream>>>(group, act);
    } else {
      unsigned blocks = 0;
      for (int i = 0; i < count; ++i) blocks += row_blocks(outputs[i].n);
      dense_gemv_group_kernel<W, M><<<blocks, kWarps * 32, 0, stream>>>(group);
    }
    return cudaGetLastError();
  }
  for (int i = 0; i < count; ++i) {
    const DenseGemvLaunch& a = outputs[i];
    if (a.n == 0) continue;
    if (whole_chunks(a)) {
      const GemvGroup one = make_group(&a, 1);
      dense_gemv_group_kernel<W, M><<<row_blocks(a.n), kWarps * 32, 0, stream>>>(one);
    } else {
      dense_gemv_elements_kernel<W, M><<<row_blocks(a.n), kWarps * 32, 0, stream>>>(
          a.x, static_cast<const W*>(a.w), a.bias, a.bias_kind, a.relu, a.accumulate, a.n, a.k,
          a.y);
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  if (act == nullptr) return cudaSuccess;
  const int64_t n = outputs[0].n;
  return launch_swiglu(outputs[0].y, n, outputs[1].y, n, outputs[0].m, n, act, stream);
}

template <typename W>
cudaError_t launch_typed(const DenseGemvLaunch* outputs, int count, float* act,
                         cudaStream_t stream) {
  switch (outputs[0].m) {
    case 1: return launch_rows<W, 1>(outputs, count, act, stream);
    case 2: return launch_rows<W, 2>(outputs, count, act, stream);
    case 3: return launch_rows<W, 3>(outputs, count, act, stream);
    case 4: return launch_rows<W, 4>(outputs, count, act, stream);
    case 5: return launch_rows<W, 5>(outputs, count, act, stream);
    case 6: return launch_rows<W, 6>(outputs, count, act, stream);
    case 7: return launch_rows<W, 7>(outputs, count, act, stream);
    case 8: return launch_rows<W, 8>(outputs, count, act, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_dense_gemv_group(const DenseGemvLaunch* outputs, int count, float* act,
                                    cudaStream_t stream) {
  if (count < 1 || count > kDenseGemvLaunchMaxGroup || (act != nullptr && count != 2)) {
    return cudaErrorInvalidValue;
  }
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) rows += outputs[i].n;
  if (rows == 0) return cudaSuccess;
  switch (outputs[0].weight_type) {
    case FloatType::kF16:
      return launch_typed<__half>(outputs, count, act, stream);
    case FloatType::kBF16:
      return launch_typed<__nv_bfloat16>(outputs, count, act, stream);
    case FloatType::kF32:
      break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_dense_gemv(const DenseGemvLaunch& a, cudaStream_t stream) {
  return launch_dense_gemv_group(&a, 1, nullptr, stream);
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
