// The small-batch dense GEMV of gemm.h (dense_gemv): float32 activations,
// 16-bit weights, one warp per output row. Each lane keeps kUnroll 16-byte
// weight loads in flight (memory-bound: the weights are read once), the
// activations come through the read-only cache, and the warp's partial sums
// meet in a butterfly whose order depends on nothing but k.
//
// With an input RMSNorm (gemm.h's DenseGemvInputNorm: a decoder layer's
// norm in front of q/k/v or gate/up), each block normalizes x into shared
// memory as it starts (16 KiB at a hidden size of 4096, from the L2) and the
// dot products read it there: the norm's own launch, and its round trip
// through memory before the GEMV can start, are gone. Block 0 writes the
// normalized x out for later readers.
//
// Every kernel here is launched as a programmatic dependent of the kernel
// before it (dependent_launch.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/dependent_launch.h"
#include "kernels/cuda/device_helpers.h"
#include "kernels/cuda/rms_norm_device.h"
#include "kernels/detail/launch.h"
#include "kernels/detail/transformer_launch.h"

namespace stowage::kernels::detail {
namespace {

constexpr int kWarps = 8;   // output rows per block
constexpr int kUnroll = 4;  // 16-byte weight loads in flight per lane
// Shared memory of the normalized x (m * k floats) the fused input norm takes
// at most: 32 KiB (a row of 8192, or 2 of 4096) keeps 7 blocks of 256
// threads an SM; beyond, the norm runs as its own kernel first.
constexpr int64_t kFusedNormSharedBytes = 32 * 1024;

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
// SwiGLU pair), each summed in the same order as alone. kSharedX: x is in
// shared memory (the fused norm's), else global memory read through the
// read-only cache; the same sums either way.
template <typename W, int M, int Rows, bool kSharedX>
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
          float4 a, b;
          if constexpr (kSharedX) {
            a = xp[0];
            b = xp[1];
          } else {
            a = __ldg(xp);
            b = __ldg(xp + 1);
          }
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

// The RMSNorm the group's x goes through first (the fused kernels only).
struct GemvNorm {
  const void* weight;  // [k]
  int weight_kind;     // 0: float32, 1: f16, 2: bf16
  float eps;
  float* out;  // [m, k]: block 0 writes the normalized x here
};

__device__ __forceinline__ float norm_weight(const GemvNorm& nm, int64_t c) {
  if (nm.weight_kind == 1) return load_float(static_cast<const __half*>(nm.weight), c);
  if (nm.weight_kind == 2) return load_float(static_cast<const __nv_bfloat16*>(nm.weight), c);
  return load_float(static_cast<const float*>(nm.weight), c);
}

// x's M rows normalized into xs [M][k] with the bits rms_norm_kernel writes:
// the sum of squares of a block of rms_norm_threads(k) threads, its warps
// replayed by this block's (virtual warp v by warp v % kWarps, each lane as
// that warp's lane), then the same second level and scaling
// (rms_norm_device.h). Block 0 also writes the rows to nm.out, for the
// readers after the launch. Every thread of the block calls this.
template <int M>
__device__ __forceinline__ void normalize_rows(const float* __restrict__ x, int64_t k,
                                               const GemvNorm& nm, float* xs) {
  static_assert(M <= kWarps, "one warp per row finishes the sums");
  __shared__ float warp_sums[M][32];
  __shared__ float inverse[M];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int threads = rms_norm_threads(k), warps = threads / 32;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    for (int v = warp; v < warps; v += kWarps) {
      const float ss = rms_warp_sum(rms_partial_sum(x + r * k, k, v * 32 + lane, threads));
      if (lane == 0) warp_sums[r][v] = ss;
    }
  }
  __syncthreads();
  if (warp < M) {
    const float total = rms_block_total(warp_sums[warp], warps, lane);
    if (lane == 0) inverse[warp] = rms_inverse(total, k, nm.eps);
  }
  __syncthreads();
  const bool first = blockIdx.x == 0;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float inv = inverse[r];
    for (int64_t c = threadIdx.x; c < k; c += kWarps * 32) {
      const float v = rms_scale(x[r * k + c], inv, norm_weight(nm, c));
      xs[r * k + c] = v;
      if (first) nm.out[r * k + c] = v;
    }
  }
  __syncthreads();
}

// Bytes of a row's weights the L2 is asked for before the kernel waits for
// the one before it: the first step of dot_chunks.
__device__ __forceinline__ void prefetch_row_start(const void* w_row, int64_t row_bytes) {
  constexpr int64_t kStepBytes = 32 * kUnroll * 16;
  if (row_bytes <= 0) return;
  prefetch_to_l2(w_row, static_cast<uint32_t>(row_bytes < kStepBytes ? row_bytes : kStepBytes));
}

// A GEMV kernel's x, once the kernel before it (which writes x) has ended:
// g.x itself, or with kNorm g.x through nm's RMSNorm into `normalized_x`
// (shared memory).
template <int M, bool kNorm>
__device__ __forceinline__ const float* gemv_input(const GemvGroup& g, const GemvNorm& nm,
                                                   float* normalized_x) {
  wait_for_prior_kernels();
  if constexpr (kNorm) {
    normalize_rows<M>(g.x, g.k, nm, normalized_x);
    return normalized_x;
  }
  return g.x;
}

// Every output of the group in one grid, one warp per output row. kNorm: x
// goes through nm's RMSNorm into shared memory first.
//
// A programmatic dependent launch (dependent_launch.h): the weights' first
// bytes are asked of the L2, then the kernel waits for the one before it
// (which writes x); the next kernel may launch once every warp has read its
// weights.
template <typename W, int M, bool kNorm>
__global__ void __launch_bounds__(kWarps * 32)
    dense_gemv_group_kernel(const GemvGroup g, const GemvNorm nm) {
  extern __shared__ __align__(16) float normalized_x[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int o = 0;
  while (o + 1 < g.count && blockIdx.x >= g.out[o + 1].first_block) ++o;
  const GemvOutput& out = g.out[o];
  const int64_t row = static_cast<int64_t>(blockIdx.x - out.first_block) * kWarps + warp;
  const bool active = row < out.n;
  const W* const rows[1] = {static_cast<const W*>(out.w) + (active ? row : 0) * g.k};
  if (active && lane == 0) prefetch_row_start(rows[0], g.k * static_cast<int64_t>(sizeof(W)));
  const float* x = gemv_input<M, kNorm>(g, nm, normalized_x);
  if (!active) return;
  float acc[1][M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[0][r] = 0.0f;
  dot_chunks<W, M, 1, kNorm>(x, rows, g.k, lane, acc);
  allow_dependent_launch();
  finish_row<W, M>(acc[0], lane, out.bias, out.bias_kind, out.relu, out.accumulate, row, out.n,
                   out.y);
}

// SwiGLU's first half: one warp per row of gate (out[0]) and up (out[1]),
// act = silu(g) * u as swiglu_kernel computes it. kNorm and the launch as
// dense_gemv_group_kernel.
//
// At batch 1 and 2 the registers are held to 64 a thread, so 4 blocks fit
// an SM (32 warps, each with 4 KiB of weight loads in flight), as before
// the prefetch and the norm were added.
template <typename W, int M, bool kNorm>
__global__ void __launch_bounds__(kWarps * 32, M <= 2 ? 4 : 1)
    dense_gemv_swiglu_kernel(const GemvGroup g, const GemvNorm nm, float* __restrict__ act) {
  extern __shared__ __align__(16) float normalized_x[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n = g.out[0].n;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool active = row < n;
  const int64_t at = (active ? row : 0) * g.k;
  const W* const rows[2] = {static_cast<const W*>(g.out[0].w) + at,
                            static_cast<const W*>(g.out[1].w) + at};
  if (active && lane < 2) {
    prefetch_row_start(lane == 0 ? rows[0] : rows[1], g.k * static_cast<int64_t>(sizeof(W)));
  }
  const float* x = gemv_input<M, kNorm>(g, nm, normalized_x);
  if (!active) return;
  float acc[2][M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[0][r] = acc[1][r] = 0.0f;
  dot_chunks<W, M, 2, kNorm>(x, rows, g.k, lane, acc);
  allow_dependent_launch();
  reduce_row<W, M>(acc[0], g.out[0].bias, g.out[0].bias_kind, false, row);
  reduce_row<W, M>(acc[1], g.out[1].bias, g.out[1].bias_kind, false, row);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float gate = acc[0][r];
    act[r * n + row] = gate / (1.0f + expf(-gate)) * acc[1][r];
  }
}

// Any k and alignment: element-wise loads. Launched as the kernels above.
template <typename W, int M>
__global__ void __launch_bounds__(kWarps * 32)
    dense_gemv_elements_kernel(const float* __restrict__ x, const W* __restrict__ w,
                               const void* bias, int bias_kind, bool relu, bool accumulate,
                               int64_t n, int64_t k, float* __restrict__ y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  wait_for_prior_kernels();
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
  allow_dependent_launch();
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

int norm_weight_kind(FloatType t) {
  return t == FloatType::kF16 ? 1 : t == FloatType::kBF16 ? 2 : 0;
}

// The fused kernels over `group` (every weight whole 16-byte chunks), with
// nm's norm when kNorm.
template <typename W, int M, bool kNorm>
cudaError_t launch_fused(const DenseGemvLaunch* outputs, int count, const GemvNorm& nm, float* act,
                         cudaStream_t stream) {
  const GemvGroup group = make_group(outputs, count);
  const size_t smem = kNorm ? static_cast<size_t>(M * group.k) * sizeof(float) : 0;
  if (act != nullptr) {
    return launch_dependent(dense_gemv_swiglu_kernel<W, M, kNorm>, dim3(row_blocks(outputs[0].n)),
                            dim3(kWarps * 32), smem, stream, group, nm, act);
  }
  unsigned blocks = 0;
  for (int i = 0; i < count; ++i) blocks += row_blocks(outputs[i].n);
  return launch_dependent(dense_gemv_group_kernel<W, M, kNorm>, dim3(blocks), dim3(kWarps * 32),
                          smem, stream, group, nm);
}

// Whether m rows of x [m, k] and out overlap.
bool overlaps(const float* x, const float* out, int64_t floats) {
  return x < out + floats && out < x + floats;
}

template <typename W, int M>
cudaError_t launch_rows(const DenseGemvLaunch* given, int count, const RmsNormInputLaunch* norm,
                        float* act, cudaStream_t stream) {
  DenseGemvLaunch outputs[kDenseGemvLaunchMaxGroup];
  for (int i = 0; i < count; ++i) outputs[i] = given[i];
  bool fused = true;
  for (int i = 0; i < count; ++i) fused = fused && whole_chunks(outputs[i]);
  const int64_t k = outputs[0].k;
  GemvNorm nm{};
  if (norm != nullptr) {
    nm = {norm->weight, norm_weight_kind(norm->weight_type), norm->eps, norm->out};
    if (fused && M * k * static_cast<int64_t>(sizeof(float)) <= kFusedNormSharedBytes &&
        !overlaps(outputs[0].x, norm->out, M * k)) {
      return launch_fused<W, M, true>(outputs, count, nm, act, stream);
    }
    // Not fused: the norm's own kernel, then the GEMVs over its output.
    const cudaError_t status = launch_rms_norm(outputs[0].x, norm->weight, norm->weight_type, M, k,
                                               norm->eps, norm->out, stream);
    if (status != cudaSuccess) return status;
    fused = true;
    for (int i = 0; i < count; ++i) {
      outputs[i].x = norm->out;
      fused = fused && whole_chunks(outputs[i]);
    }
  }
  if (fused) return launch_fused<W, M, false>(outputs, count, nm, act, stream);
  for (int i = 0; i < count; ++i) {
    const DenseGemvLaunch& a = outputs[i];
    if (a.n == 0) continue;
    cudaError_t status;
    if (whole_chunks(a)) {
      status = launch_fused<W, M, false>(&a, 1, nm, nullptr, stream);
    } else {
      status = launch_dependent(dense_gemv_elements_kernel<W, M>, dim3(row_blocks(a.n)),
                                dim3(kWarps * 32), 0, stream, a.x, static_cast<const W*>(a.w),
                                a.bias, a.bias_kind, a.relu, a.accumulate, a.n, a.k, a.y);
    }
    if (status != cudaSuccess) return status;
  }
  if (act == nullptr) return cudaSuccess;
  const int64_t n = outputs[0].n;
  return launch_swiglu(outputs[0].y, n, outputs[1].y, n, outputs[0].m, n, act, stream);
}

template <typename W>
cudaError_t launch_typed(const DenseGemvLaunch* outputs, int count, const RmsNormInputLaunch* norm,
                         float* act, cudaStream_t stream) {
  switch (outputs[0].m) {
    case 1: return launch_rows<W, 1>(outputs, count, norm, act, stream);
    case 2: return launch_rows<W, 2>(outputs, count, norm, act, stream);
    case 3: return launch_rows<W, 3>(outputs, count, norm, act, stream);
    case 4: return launch_rows<W, 4>(outputs, count, norm, act, stream);
    case 5: return launch_rows<W, 5>(outputs, count, norm, act, stream);
    case 6: return launch_rows<W, 6>(outputs, count, norm, act, stream);
    case 7: return launch_rows<W, 7>(outputs, count, norm, act, stream);
    case 8: return launch_rows<W, 8>(outputs, count, norm, act, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_group(const DenseGemvLaunch* outputs, int count, const RmsNormInputLaunch* norm,
                         float* act, cudaStream_t stream) {
  if (count < 1 || count > kDenseGemvLaunchMaxGroup || (act != nullptr && count != 2)) {
    return cudaErrorInvalidValue;
  }
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) rows += outputs[i].n;
  if (rows == 0) {
    // No GEMV to read it, but the normalized x is still an output.
    if (norm == nullptr) return cudaSuccess;
    return launch_rms_norm(outputs[0].x, norm->weight, norm->weight_type, outputs[0].m,
                           outputs[0].k, norm->eps, norm->out, stream);
  }
  switch (outputs[0].weight_type) {
    case FloatType::kF16:
      return launch_typed<__half>(outputs, count, norm, act, stream);
    case FloatType::kBF16:
      return launch_typed<__nv_bfloat16>(outputs, count, norm, act, stream);
    case FloatType::kF32:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_dense_gemv_group(const DenseGemvLaunch* outputs, int count, float* act,
                                    cudaStream_t stream) {
  return launch_group(outputs, count, nullptr, act, stream);
}

cudaError_t launch_rms_norm_dense_gemv_group(const DenseGemvLaunch* outputs, int count,
                                             const RmsNormInputLaunch& norm, float* act,
                                             cudaStream_t stream) {
  return launch_group(outputs, count, &norm, act, stream);
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
