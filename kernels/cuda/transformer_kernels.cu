// The transformer kernels of kernels/transformer_ops.h. All math in float32;
// every reduction runs in an order fixed by the sizes and the launch shape
// (which the sizes alone choose), so a call gives the same bits every time.
//
// Attention has two kernels:
// - attention_split_kernel (decode, short prompts, head_dim > 128): one
//   block per (sequence, token, KV head, chunk of its query heads), so K and V
//   are read once for every query head of the group. A long context is cut
//   into up to 16 contiguous parts (8 where the device allows no larger
//   cluster) handled by the blocks of one thread-block cluster (sm_90), which
//   then merge their softmax states through distributed shared memory in rank
//   order: flash-decoding without scratch memory. Each block holds the next
//   K/V tile's loads in registers while it computes the current one. At a
//   decode step it also does the step's RoPE and KV append
//   (launch_rope_append_attention): it rotates the queries as it loads them,
//   and the block that reads the new position rotates the new key, appends it
//   and the value to the caches, and takes that row into its tile from
//   registers.
// - attention_tile_kernel (prefill, tokens >= 16, head_dim <= 128): flash
//   attention in float32, a 64-query x 64-key tile per step with an online
//   softmax; each thread holds a 4 x 4 score tile and 4 rows of the output.
//
// The kernels a decode step runs (all but the prefill attention) are
// launched as programmatic dependents of the kernel before them
// (dependent_launch.h): each waits for it first, then lets the next launch.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/dependent_launch.h"
#include "kernels/cuda/device_helpers.h"
#include "kernels/cuda/float_dispatch.h"
#include "kernels/cuda/rms_norm_device.h"
#include "kernels/detail/transformer_launch.h"

namespace stowage::kernels::detail {
namespace {

constexpr float kNegInf = -INFINITY;

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- RMSNorm: one block of rms_norm_threads(cols) per row. ----

// Each step from rms_norm_device.h, which the dense GEMV's fused input norm
// replays for the same bits.
template <typename W>
__global__ void rms_norm_kernel(const float* x, const W* weight, int64_t rows, int64_t cols,
                                float eps, float* y) {
  __shared__ float partial[32];
  wait_for_prior_kernels();
  allow_dependent_launch();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int threads = static_cast<int>(blockDim.x);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    const float ss = rms_warp_sum(rms_partial_sum(xr, cols, threadIdx.x, threads));
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    const float inv = rms_inverse(rms_block_total(partial, threads / 32, lane), cols, eps);
    __syncthreads();  // partial is reused by the next row
    float* yr = y + r * cols;
    for (int64_t c = threadIdx.x; c < cols; c += threads) {
      yr[c] = rms_scale(xr[c], inv, load_float(weight, c));
    }
  }
}

template <typename W>
struct RmsNormLaunch {
  static cudaError_t run(const float* x, const void* weight, int64_t rows, int64_t cols, float eps,
                         float* y, cudaStream_t stream) {
    const unsigned blocks = static_cast<unsigned>(rows < 65535 ? rows : 65535);
    return launch_dependent(rms_norm_kernel<W>, dim3(blocks), dim3(rms_norm_threads(cols)), 0,
                            stream, x, static_cast<const W*>(weight), rows, cols, eps, y);
  }
};

// ---- RoPE: one thread per (token, head, pair). ----

// One rotated pair (x0, x1) = (x[i], x[i + head_dim / 2]) at `position`, each
// product rounded on its own (no contraction), so rope_kernel and the
// attention that rotates as it loads give the same bits.
__device__ __forceinline__ void rotate_pair(float x0, float x1, int32_t position, float inv_freq,
                                            float* y0, float* y1) {
  const float angle = __fmul_rn(static_cast<float>(position), inv_freq);
  float s, c;
  sincosf(angle, &s, &c);
  *y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  *y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
}

// x (heads) and x2 (heads2) in one grid: elements past x's go to x2.
__global__ void rope_kernel(float* x, int64_t heads, float* x2, int64_t heads2,
                            const int32_t* positions, const float* inv_freq, int64_t tokens,
                            int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const int64_t first = tokens * heads * half;
  const int64_t total = first + tokens * heads2 * half;
  wait_for_prior_kernels();
  allow_dependent_launch();
  for (int64_t e_all = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       e_all < total; e_all += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool second = e_all >= first;
    const int64_t e = second ? e_all - first : e_all;
    const int64_t h_count = second ? heads2 : heads;
    const int64_t i = e % half;
    const int64_t th = e / half;  // token * heads + head
    const int64_t t = th / h_count;
    float* xh = (second ? x2 : x) + th * head_dim;
    rotate_pair(xh[i], xh[i + half], positions[t], inv_freq[i], xh + i, xh + i + half);
  }
}

// ---- Embedding: one thread per output element. ----

template <typename T>
__global__ void embedding_kernel(const int32_t* ids, const T* table, int64_t tokens, int64_t hidden,
                                 float* out) {
  const int64_t total = tokens * hidden;
  wait_for_prior_kernels();
  allow_dependent_launch();
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = e / hidden, c = e % hidden;
    out[e] = load_float(table, static_cast<int64_t>(ids[t]) * hidden + c);
  }
}

template <typename T>
struct EmbeddingLaunch {
  static cudaError_t run(const int32_t* ids, const void* table, int64_t tokens, int64_t hidden,
                         float* out, cudaStream_t stream) {
    return launch_dependent(embedding_kernel<T>, dim3(grid_for(tokens * hidden, 256)), dim3(256), 0,
                            stream, ids, static_cast<const T*>(table), tokens, hidden, out);
  }
};

// ---- SwiGLU, add, KV append: element-wise. ----

__global__ void swiglu_kernel(const float* gate, int64_t gate_stride, const float* up,
                              int64_t up_stride, int64_t rows, int64_t cols, float* out) {
  const int64_t total = rows * cols;
  wait_for_prior_kernels();
  allow_dependent_launch();
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / cols, c = e % cols;
    const float g = gate[r * gate_stride + c];
    out[e] = g / (1.0f + expf(-g)) * up[r * up_stride + c];
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t count) {
  wait_for_prior_kernels();
  allow_dependent_launch();
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[e] += x[e];
  }
}

// src -> cache and, when src2 is set, src2 -> cache2 in the same grid.
__global__ void kv_append_kernel(const float* src, const float* src2, int64_t src_stride,
                                 int64_t tokens, int64_t row, int64_t past_given,
                                 const int32_t* past_at, int64_t capacity, int64_t total,
                                 float* cache, float* cache2) {
  wait_for_prior_kernels();
  allow_dependent_launch();
  const int64_t past = past_at != nullptr ? *past_at : past_given;
  const int64_t all = src2 != nullptr ? 2 * total : total;
  for (int64_t e_all = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e_all < all;
       e_all += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool second = e_all >= total;
    const int64_t e = second ? e_all - total : e_all;
    const int64_t bt = e / row, c = e % row;
    const int64_t b = bt / tokens, t = bt % tokens;
    if (past + t >= capacity) continue;
    (second ? cache2 : cache)[(b * capacity + past + t) * row + c] =
        (second ? src2 : src)[bt * src_stride + c];
  }
}

// ---- Argmax: one block per row. ----

// Whether (a, ia) comes before (b, ib): larger first, NaN last, then the
// lower index. A total order, so the reduction's result is unique.
__device__ __forceinline__ bool argmax_before(float a, int64_t ia, float b, int64_t ib) {
  const bool na = isnan(a), nb = isnan(b);
  if (na != nb) return nb;
  if (!na && a != b) return a > b;
  return ia < ib;
}

constexpr int kArgmaxLoads = 16;

__global__ void argmax_kernel(const float* logits, int64_t rows, int64_t vocab, int32_t* ids) {
  __shared__ float best_v[32];
  __shared__ int64_t best_i[32];
  wait_for_prior_kernels();
  allow_dependent_launch();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* x = logits + r * vocab;
    float v = NAN;
    int64_t i = vocab;  // past every index: loses to any element
    // kArgmaxLoads reads in flight per thread, then compared: the order of the
    // comparisons does not matter (argmax_before is a total order).
    const int64_t step = blockDim.x;
    for (int64_t c0 = threadIdx.x; c0 < vocab; c0 += step * kArgmaxLoads) {
      float xv[kArgmaxLoads];
#pragma unroll
      for (int u = 0; u < kArgmaxLoads; ++u) {
        const int64_t c = c0 + u * step;
        xv[u] = c < vocab ? x[c] : NAN;
      }
#pragma unroll
      for (int u = 0; u < kArgmaxLoads; ++u) {
        const int64_t c = c0 + u * step;
        if (c < vocab && argmax_before(xv[u], c, v, i)) {
          v = xv[u];
          i = c;
        }
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, i, o);
      if (argmax_before(ov, oi, v, i)) {
        v = ov;
        i = oi;
      }
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
      best_v[warp] = v;
      best_i[warp] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
        if (argmax_before(best_v[w], best_i[w], v, i)) {
          v = best_v[w];
          i = best_i[w];
        }
      }
      ids[r] = static_cast<int32_t>(i < vocab ? i : 0);
    }
    __syncthreads();
  }
}

// ---- Attention ----

struct AttentionShape {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t q_stride;
  int64_t tokens, heads, head_dim, past, capacity, window;
  const int32_t* past_at;  // when set, past is read here as the kernel starts
  int64_t kv_row;          // kv_heads * head_dim
  int group;       // heads / kv_heads
  float scale;
  // Set when the kernel also rotates and appends (launch_rope_append_attention;
  // the split kernel with one token a row only).
  RopeAppendLaunch rope_append;
};

// The first position token t may attend to.
__device__ __forceinline__ int64_t first_position(const AttentionShape& s, int64_t p) {
  return s.window > 0 && p - s.window + 1 > 0 ? p - s.window + 1 : 0;
}

// -- The split kernel. --

constexpr int kSplitThreads = 128;
constexpr int kSplitAccPerThread = 16;  // outputs (head, dim) per thread
constexpr int kSplitMaxOutputs = kSplitThreads * kSplitAccPerThread;
constexpr int kSplitTileFloats = 4096;  // positions per tile * head_dim
constexpr int kPortableClusterSplits = 8;
constexpr int kMaxClusterSplits = 16;                              // non-portable: sm_90 allows 16
constexpr int kSplitTileElems = kSplitTileFloats / kSplitThreads;  // K (and V) floats per thread

// One K/V tile in flight in registers: the loads for tile i + 1 are issued
// before tile i is computed, so a block keeps many loads outstanding.
// kVec: 16-byte loads (head_dim % 4 == 0 and 16-byte aligned caches).
template <bool kVec>
struct TileRegs {
  float k[kSplitTileElems];
  float v[kSplitTileElems];

  __device__ __forceinline__ void load(const float* kbase, const float* vbase, int64_t kv_row,
                                       int64_t j0, int valid, int tile, int d, int tid) {
    constexpr int kStep = kVec ? 4 : 1;
#pragma unroll
    for (int i = 0; i < kSplitTileElems / kStep; ++i) {
      const int e = (tid + i * kSplitThreads) * kStep;
      const int jj = e / d, c = e % d;
      const bool ok = e < tile * d && jj < valid;
      const int64_t off = (j0 + jj) * kv_row + c;
      if constexpr (kVec) {
        const float4 kk = ok ? *reinterpret_cast<const float4*>(kbase + off) : float4{};
        const float4 vv = ok ? *reinterpret_cast<const float4*>(vbase + off) : float4{};
        k[4 * i] = kk.x, k[4 * i + 1] = kk.y, k[4 * i + 2] = kk.z, k[4 * i + 3] = kk.w;
        v[4 * i] = vv.x, v[4 * i + 1] = vv.y, v[4 * i + 2] = vv.z, v[4 * i + 3] = vv.w;
      } else {
        k[i] = ok ? kbase[off] : 0.0f;
        v[i] = ok ? vbase[off] : 0.0f;
      }
    }
  }

  // K into ks [tile][d + 1], V into vs [tile][d], except row skip_row (-1:
  // none), which the caller writes.
  __device__ __forceinline__ void store(float* ks, float* vs, int tile, int d, int tid,
                                        int skip_row) const {
    constexpr int kStep = kVec ? 4 : 1;
#pragma unroll
    for (int i = 0; i < kSplitTileElems / kStep; ++i) {
      const int e = (tid + i * kSplitThreads) * kStep;
      if (e >= tile * d) continue;
      const int jj = e / d, c = e % d;
      if (jj == skip_row) continue;
#pragma unroll
      for (int u = 0; u < kStep; ++u) {
        ks[jj * (d + 1) + c + u] = k[kStep * i + u];
        vs[jj * d + c + u] = v[kStep * i + u];
      }
    }
  }
};

struct SplitPlan {
  int tile;             // positions per tile
  int heads_per_block;  // query heads of one KV head a block takes
  int head_chunks;      // blocks per KV head
  int splits;           // blocks (one cluster) per context
  size_t shared_bytes;
};

__host__ __device__ inline int split_shared_floats(int tile, int heads_per_block, int d) {
  const int q = heads_per_block * d;
  const int kv = tile * (2 * d + 1);
  const int scores = heads_per_block * tile;
  return q + kv + scores + 3 * heads_per_block;
}

// Shared memory of the split kernel: q [hb][d], K tile [tile][d + 1], V tile
// [tile][d], scores [hb][tile], m, l, alpha [hb]. After the last tile the K/V
// area holds this block's unnormalized output [hb][d] for the merge.
template <bool kCluster, bool kVec>
__global__ void __launch_bounds__(kSplitThreads)
    attention_split_kernel(AttentionShape s, int tile, int heads_per_block, int head_chunks,
                           int splits, int64_t rows_bt) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(s.head_dim);
  float* qs = smem;
  float* ks = qs + heads_per_block * d;
  float* vs = ks + tile * (d + 1);
  float* ps = vs + tile * d;
  float* m_s = ps + heads_per_block * tile;
  float* l_s = m_s + heads_per_block;
  float* alpha_s = l_s + heads_per_block;
  float* acc_s = ks;  // after the last tile

  const int tid = threadIdx.x;
  const int rank = kCluster ? static_cast<int>(blockIdx.x % splits) : 0;
  const int kvh = blockIdx.y / head_chunks;
  const int h0 = kvh * s.group + (blockIdx.y % head_chunks) * heads_per_block;
  const int hb = min(heads_per_block, kvh * s.group + s.group - h0);
  const int outputs = hb * d;
  wait_for_prior_kernels();
  allow_dependent_launch();
  const int64_t past = s.past_at != nullptr ? *s.past_at : s.past;

  for (int64_t bt = blockIdx.z; bt < rows_bt; bt += gridDim.z) {
    const int64_t b = bt / s.tokens, t = bt % s.tokens;
    const int64_t p = past + t;
    const float* q_row = s.q + bt * s.q_stride + h0 * static_cast<int64_t>(d);
    const RopeAppendLaunch& ra = s.rope_append;
    const bool rope = ra.positions != nullptr;
    const int half = d / 2;
    // Every global read of the row's inputs is issued before any is used: one
    // memory latency, not one per loop trip. With rope, q_in holds pairs
    // (x[i], x[i + half]) and the thread's share of the new key (a pair) and
    // value (up to two elements) is read too.
    float q_in[kSplitAccPerThread];
    float freq[kSplitAccPerThread / 2];
    float k_in[2] = {0.0f, 0.0f}, v_in[2] = {0.0f, 0.0f}, k_freq = 0.0f;
    int32_t position = 0;
    if (rope) {
      position = ra.positions[bt];
#pragma unroll
      for (int u = 0; u < kSplitAccPerThread / 2; ++u) {
        const int e = tid + u * kSplitThreads;
        if (e < hb * half) {
          const int g = e / half, i = e % half;
          q_in[2 * u] = q_row[g * d + i];
          q_in[2 * u + 1] = q_row[g * d + i + half];
          freq[u] = ra.inv_freq[i];
        }
      }
      const float* k_new = ra.k + bt * ra.stride + kvh * static_cast<int64_t>(d);
      const float* v_new = ra.v + bt * ra.stride + kvh * static_cast<int64_t>(d);
      if (tid < half) {
        k_in[0] = k_new[tid];
        k_in[1] = k_new[tid + half];
        k_freq = ra.inv_freq[tid];
      }
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        if (tid + u * kSplitThreads < d) v_in[u] = v_new[tid + u * kSplitThreads];
      }
    } else {
#pragma unroll
      for (int u = 0; u < kSplitAccPerThread; ++u) {
        const int e = tid + u * kSplitThreads;
        if (e < hb * d) q_in[u] = q_row[e];
      }
    }
    // Uniform across the cluster (same bt for every rank): no rank skips a
    // cluster.sync() the others reach.
    if (p >= s.capacity) continue;
    const int64_t lo = first_position(s, p);
    const int64_t n = p - lo + 1;
    int64_t chunk = (n + splits - 1) / splits;
    chunk = (chunk + tile - 1) / tile * tile;
    const int64_t begin = lo + rank * chunk;
    const int64_t end = min64(begin + chunk, p + 1);
    const float* kbase = s.k + b * s.capacity * s.kv_row + kvh * static_cast<int64_t>(d);
    const float* vbase = s.v + b * s.capacity * s.kv_row + kvh * static_cast<int64_t>(d);
    // With rope this block's own new row (position p, when it reads it) goes
    // into the K/V tile from registers, not through the cache: the first
    // tile's loads need not wait for the block's write.
    const bool owns_new_row = rope && begin <= p && p < end;

    TileRegs<kVec> regs;
    if (begin < end) {
      regs.load(kbase, vbase, s.kv_row, begin, static_cast<int>(min64(tile, end - begin)), tile, d,
                tid);
    }
    float k_rot[2] = {0.0f, 0.0f};
    if (rope) {
      // The queries rotated as they are loaded into shared memory.
#pragma unroll
      for (int u = 0; u < kSplitAccPerThread / 2; ++u) {
        const int e = tid + u * kSplitThreads;
        if (e < hb * half) {
          const int g = e / half, i = e % half;
          rotate_pair(q_in[2 * u], q_in[2 * u + 1], position, freq[u], qs + g * d + i,
                      qs + g * d + i + half);
        }
      }
      if (owns_new_row) {
        // The new key rotated and, with the value, appended to the caches.
        const int64_t at = (b * s.capacity + p) * s.kv_row + kvh * static_cast<int64_t>(d);
        if (tid < half) {
          rotate_pair(k_in[0], k_in[1], position, k_freq, &k_rot[0], &k_rot[1]);
          ra.k_cache[at + tid] = k_rot[0];
          ra.k_cache[at + tid + half] = k_rot[1];
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          if (tid + u * kSplitThreads < d) ra.v_cache[at + tid + u * kSplitThreads] = v_in[u];
        }
      }
    } else {
#pragma unroll
      for (int u = 0; u < kSplitAccPerThread; ++u) {
        const int e = tid + u * kSplitThreads;
        if (e < hb * d) qs[e] = q_in[u];
      }
    }
    for (int g = tid; g < hb; g += kSplitThreads) {
      m_s[g] = kNegInf;
      l_s[g] = 0.0f;
    }
    float acc[kSplitAccPerThread];
#pragma unroll
    for (int i = 0; i < kSplitAccPerThread; ++i) acc[i] = 0.0f;

    for (int64_t j0 = begin; j0 < end; j0 += tile) {
      const int valid = static_cast<int>(min64(tile, end - j0));
      // The tile's row of the new position, when it holds it and this block
      // appended it: written from registers instead of the loaded bytes.
      const int new_row = owns_new_row && p < j0 + tile ? static_cast<int>(p - j0) : -1;
      __syncthreads();  // the previous tile's readers are done (and qs, m_s are set)
      regs.store(ks, vs, tile, d, tid, new_row);
      if (new_row >= 0) {
        if (tid < half) {
          ks[new_row * (d + 1) + tid] = k_rot[0];
          ks[new_row * (d + 1) + tid + half] = k_rot[1];
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          if (tid + u * kSplitThreads < d) vs[new_row * d + tid + u * kSplitThreads] = v_in[u];
        }
      }
      __syncthreads();
      if (j0 + tile < end) {
        regs.load(kbase, vbase, s.kv_row, j0 + tile, static_cast<int>(min64(tile, end - j0 - tile)),
                  tile, d, tid);
      }
      for (int e = tid; e < hb * tile; e += kSplitThreads) {
        const int g = e / tile, jj = e % tile;
        float dot = 0.0f;
        const float* qg = qs + g * d;
        const float* kj = ks + jj * (d + 1);
#pragma unroll 8
        for (int c = 0; c < d; ++c) dot += qg[c] * kj[c];
        ps[g * tile + jj] = jj < valid ? s.scale * dot : kNegInf;
      }
      __syncthreads();
      // Online softmax: one warp per head.
      const int warp = tid / 32, lane = tid % 32;
      for (int g = warp; g < hb; g += kSplitThreads / 32) {
        float mx = kNegInf;
        for (int jj = lane; jj < tile; jj += 32) mx = fmaxf(mx, ps[g * tile + jj]);
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float m_old = m_s[g];
        const float m_new = fmaxf(m_old, mx);  // finite: the tile has a valid position
        float sum = 0.0f;
        for (int jj = lane; jj < tile; jj += 32) {
          const float e = expf(ps[g * tile + jj] - m_new);
          ps[g * tile + jj] = e;
          sum += e;
        }
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        __syncwarp();
        if (lane == 0) {
          const float alpha = expf(m_old - m_new);  // 0 on the first tile
          alpha_s[g] = alpha;
          m_s[g] = m_new;
          l_s[g] = l_s[g] * alpha + sum;
        }
      }
      __syncthreads();
      // Each output sums the tile's positions in order; the thread's outputs
      // advance together (independent chains), not one after another.
#pragma unroll
      for (int i = 0; i < kSplitAccPerThread; ++i) {
        const int o = tid + i * kSplitThreads;
        if (o < outputs) acc[i] *= alpha_s[o / d];
      }
      for (int jj = 0; jj < valid; ++jj) {
#pragma unroll
        for (int i = 0; i < kSplitAccPerThread; ++i) {
          const int o = tid + i * kSplitThreads;
          if (o < outputs) acc[i] += ps[(o / d) * tile + jj] * vs[jj * d + o % d];
        }
      }
    }
    __syncthreads();  // the K/V area is free
#pragma unroll
    for (int i = 0; i < kSplitAccPerThread; ++i) {
      const int o = tid + i * kSplitThreads;
      if (o < outputs) acc_s[o] = acc[i];
    }
    float* out = s.out + (bt * s.heads + h0) * static_cast<int64_t>(d);
    if constexpr (kCluster) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      namespace cg = cooperative_groups;
      cg::cluster_group cluster = cg::this_cluster();
      cluster.sync();
      // Merge the parts' softmax states in rank order; each rank writes its
      // share of the outputs.
      for (int o = rank * kSplitThreads + tid; o < outputs; o += splits * kSplitThreads) {
        const int g = o / d;
        float m = kNegInf;
        for (int r = 0; r < splits; ++r) m = fmaxf(m, *cluster.map_shared_rank(m_s + g, r));
        float l = 0.0f, a = 0.0f;
        for (int r = 0; r < splits; ++r) {
          const float mr = *cluster.map_shared_rank(m_s + g, r);
          const float w = mr == kNegInf ? 0.0f : expf(mr - m);
          l += *cluster.map_shared_rank(l_s + g, r) * w;
          a += *cluster.map_shared_rank(acc_s + o, r) * w;
        }
        out[o] = a / l;
      }
      cluster.sync();  // the others are done reading this block's state
#else
      __trap();
#endif
    } else {
      __syncthreads();
      for (int o = tid; o < outputs; o += kSplitThreads) out[o] = acc_s[o] / l_s[o / d];
    }
    __syncthreads();  // the next row's setup overwrites qs, m_s and l_s
  }
}

SplitPlan plan_split(const AttentionLaunch& a, int max_splits) {
  SplitPlan plan{};
  const int d = static_cast<int>(a.head_dim);
  const int group = static_cast<int>(a.heads / a.kv_heads);
  plan.tile = kSplitTileFloats / d < 1 ? 1 : kSplitTileFloats / d;
  if (plan.tile > 128) plan.tile = 128;
  int hb = kSplitMaxOutputs / d;
  if (hb > 2048 / plan.tile) hb = 2048 / plan.tile;
  if (hb > group) hb = group;
  if (hb < 1) hb = 1;
  plan.heads_per_block = hb;
  plan.head_chunks = (group + hb - 1) / hb;
  // Parts of the context: enough blocks to fill the GPU, each part at least
  // 4 tiles long. A function of the sizes alone.
  int64_t context = a.past_at != nullptr ? a.capacity : a.past + a.tokens;
  if (a.window > 0 && a.window < context) context = a.window;
  const int64_t base = a.batch * a.tokens * a.kv_heads * plan.head_chunks;
  plan.splits = 1;
  while (plan.splits < max_splits && base * plan.splits < 264 &&
         context >= 4LL * plan.tile * plan.splits * 2) {
    plan.splits *= 2;
  }
  plan.shared_bytes = sizeof(float) * static_cast<size_t>(split_shared_floats(plan.tile, hb, d));
  return plan;
}

template <bool kVec>
cudaError_t launch_split(const AttentionLaunch& a, const AttentionShape& s, bool clusters,
                         cudaStream_t stream) {
  int max_splits = 1;
  auto cluster_kernel = attention_split_kernel<true, kVec>;
  if (clusters) {
    // 16 blocks a cluster where the device allows it, else the portable 8.
    max_splits =
        cudaFuncSetAttribute(cluster_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
                cudaSuccess
            ? kMaxClusterSplits
            : kPortableClusterSplits;
    cudaGetLastError();  // a refusal above is not this launch's error
  }
  const SplitPlan plan = plan_split(a, max_splits);
  const int64_t rows_bt = a.batch * a.tokens;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(plan.splits, static_cast<unsigned>(a.kv_heads * plan.head_chunks),
                        static_cast<unsigned>(rows_bt < 65535 ? rows_bt : 65535));
  config.blockDim = dim3(kSplitThreads);
  config.dynamicSmemBytes = plan.shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[2];
  auto kernel = attention_split_kernel<false, kVec>;
  if (plan.splits > 1) {
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = plan.splits;
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    kernel = cluster_kernel;
  }
  allow_programmatic_start(config, attribute);
  const cudaError_t status = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(plan.shared_bytes));
  if (status != cudaSuccess) return status;
  return cudaLaunchKernelEx(&config, kernel, s, plan.tile, plan.heads_per_block, plan.head_chunks,
                            plan.splits, rows_bt);
}

// -- The tile (flash) kernel. --

constexpr int kTileQ = 64;
constexpr int kTileK = 64;
constexpr int kTileThreads = 256;

template <int kMaxD>
constexpr int tile_shared_floats() {
  // Q [64][kMaxD + 1], K then V [64][kMaxD + 1], P [64][65].
  return 2 * kTileQ * (kMaxD + 1) + kTileQ * (kTileK + 1);
}

// Block (query tile, head, sequence). Thread (rg, kg) = (tid / 16, tid % 16)
// holds the scores of rows 4 rg .. 4 rg + 3 against keys kg + 16 i, and the
// outputs of those rows at dims kg + 16 i.
template <int kMaxD>
__global__ void __launch_bounds__(kTileThreads) attention_tile_kernel(AttentionShape s) {
  extern __shared__ float smem[];
  constexpr int kLd = kMaxD + 1;
  constexpr int kDims = kMaxD / 16;
  float* qs = smem;
  float* kv = qs + kTileQ * kLd;
  float* ps = kv + kTileK * kLd;
  const int d = static_cast<int>(s.head_dim);
  const int tid = threadIdx.x, rg = tid / 16, kg = tid % 16;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTileQ;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int kvh = h / s.group;
  const int q_rows = static_cast<int>(min64(kTileQ, s.tokens - t0));
  const int64_t past = s.past_at != nullptr ? *s.past_at : s.past;
  if (past + s.tokens > s.capacity) return;  // uniform per block: before any barrier
  const float* kbase = s.k + b * s.capacity * s.kv_row + kvh * static_cast<int64_t>(d);
  const float* vbase = s.v + b * s.capacity * s.kv_row + kvh * static_cast<int64_t>(d);

  for (int e = tid; e < kTileQ * d; e += kTileThreads) {
    const int r = e / d, c = e % d;
    qs[r * kLd + c] =
        r < q_rows ? s.q[(b * s.tokens + t0 + r) * s.q_stride + h * static_cast<int64_t>(d) + c]
                   : 0.0f;
  }
  float m[4], l[4], acc[4][kDims];
  int64_t row_p[4], row_lo[4];
#pragma unroll
  for (int ri = 0; ri < 4; ++ri) {
    m[ri] = kNegInf;
    l[ri] = 0.0f;
    row_p[ri] = past + t0 + rg * 4 + ri;  // past the last token for padding rows
    row_lo[ri] = first_position(s, row_p[ri]);
#pragma unroll
    for (int di = 0; di < kDims; ++di) acc[ri][di] = 0.0f;
  }
  const int64_t p_first = past + t0;
  const int64_t p_last = past + t0 + q_rows - 1;
  const int64_t key_begin = first_position(s, p_first);

  for (int64_t j0 = key_begin; j0 <= p_last; j0 += kTileK) {
    const int valid = static_cast<int>(min64(kTileK, p_last + 1 - j0));
    __syncthreads();  // the previous tile's V and P readers are done
    for (int e = tid; e < kTileK * d; e += kTileThreads) {
      const int jj = e / d, c = e % d;
      kv[jj * kLd + c] = jj < valid ? kbase[(j0 + jj) * s.kv_row + c] : 0.0f;
    }
    __syncthreads();
    float sc[4][4];
#pragma unroll
    for (int ri = 0; ri < 4; ++ri) {
#pragma unroll
      for (int ki = 0; ki < 4; ++ki) sc[ri][ki] = 0.0f;
    }
    for (int c = 0; c < d; ++c) {
      float qv[4], kv4[4];
#pragma unroll
      for (int ri = 0; ri < 4; ++ri) qv[ri] = qs[(rg * 4 + ri) * kLd + c];
#pragma unroll
      for (int ki = 0; ki < 4; ++ki) kv4[ki] = kv[(kg + 16 * ki) * kLd + c];
#pragma unroll
      for (int ri = 0; ri < 4; ++ri) {
#pragma unroll
        for (int ki = 0; ki < 4; ++ki) sc[ri][ki] += qv[ri] * kv4[ki];
      }
    }
#pragma unroll
    for (int ri = 0; ri < 4; ++ri) {
      float mx = kNegInf;
#pragma unroll
      for (int ki = 0; ki < 4; ++ki) {
        const int64_t j = j0 + kg + 16 * ki;
        const bool ok = kg + 16 * ki < valid && j >= row_lo[ri] && j <= row_p[ri];
        sc[ri][ki] = ok ? s.scale * sc[ri][ki] : kNegInf;
        mx = fmaxf(mx, sc[ri][ki]);
      }
      for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m[ri], mx);
      // A row with no key in this tile yet (window) keeps its state.
      const float alpha = m_new == kNegInf ? 1.0f : expf(m[ri] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int ki = 0; ki < 4; ++ki) {
        const float e = m_new == kNegInf ? 0.0f : expf(sc[ri][ki] - m_new);
        ps[(rg * 4 + ri) * (kTileK + 1) + kg + 16 * ki] = e;
        sum += e;
      }
      for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      m[ri] = m_new;
      l[ri] = l[ri] * alpha + sum;
#pragma unroll
      for (int di = 0; di < kDims; ++di) acc[ri][di] *= alpha;
    }
    __syncthreads();  // K readers are done; P is written
    for (int e = tid; e < kTileK * d; e += kTileThreads) {
      const int jj = e / d, c = e % d;
      kv[jj * kLd + c] = jj < valid ? vbase[(j0 + jj) * s.kv_row + c] : 0.0f;
    }
    __syncthreads();
    for (int jj = 0; jj < valid; ++jj) {
      float pv[4];
#pragma unroll
      for (int ri = 0; ri < 4; ++ri) pv[ri] = ps[(rg * 4 + ri) * (kTileK + 1) + jj];
#pragma unroll
      for (int di = 0; di < kDims; ++di) {
        const float vv = kv[jj * kLd + kg + 16 * di];
#pragma unroll
        for (int ri = 0; ri < 4; ++ri) acc[ri][di] += pv[ri] * vv;
      }
    }
  }
#pragma unroll
  for (int ri = 0; ri < 4; ++ri) {
    const int r = rg * 4 + ri;
    if (r >= q_rows) continue;
    float* out = s.out + ((b * s.tokens + t0 + r) * s.heads + h) * static_cast<int64_t>(d);
#pragma unroll
    for (int di = 0; di < kDims; ++di) {
      const int c = kg + 16 * di;
      if (c < d) out[c] = acc[ri][di] / l[ri];
    }
  }
}

template <int kMaxD>
cudaError_t launch_tile(const AttentionLaunch& a, const AttentionShape& s, cudaStream_t stream) {
  const size_t bytes = sizeof(float) * tile_shared_floats<kMaxD>();
  auto kernel = attention_tile_kernel<kMaxD>;
  cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes));
  if (status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>((a.tokens + kTileQ - 1) / kTileQ),
                  static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
  kernel<<<grid, kTileThreads, bytes, stream>>>(s);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_rms_norm(const float* x, const void* weight, FloatType weight_type, int64_t rows,
                            int64_t cols, float eps, float* y, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  return dispatch_float_type<RmsNormLaunch>(weight_type, x, weight, rows, cols, eps, y, stream);
}

cudaError_t launch_rope(float* x, int64_t heads, float* x2, int64_t heads2,
                        const int32_t* positions, const float* inv_freq, int64_t tokens,
                        int64_t head_dim, cudaStream_t stream) {
  const int64_t total = tokens * (heads + heads2) * (head_dim / 2);
  if (total == 0) return cudaSuccess;
  return launch_dependent(rope_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream, x, heads,
                          x2, heads2, positions, inv_freq, tokens, head_dim);
}

cudaError_t launch_embedding(const int32_t* ids, const void* table, FloatType table_type,
                             int64_t tokens, int64_t hidden, float* out, cudaStream_t stream) {
  if (tokens * hidden == 0) return cudaSuccess;
  return dispatch_float_type<EmbeddingLaunch>(table_type, ids, table, tokens, hidden, out, stream);
}

cudaError_t launch_swiglu(const float* gate, int64_t gate_stride, const float* up,
                          int64_t up_stride, int64_t rows, int64_t cols, float* out,
                          cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  return launch_dependent(swiglu_kernel, dim3(grid_for(rows * cols, 256)), dim3(256), 0, stream,
                          gate, gate_stride, up, up_stride, rows, cols, out);
}

cudaError_t launch_add_in_place(float* y, const float* x, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return launch_dependent(add_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, y, x,
                          count);
}

cudaError_t launch_kv_append(const float* src, const float* src2, int64_t src_stride,
                             int64_t batch, int64_t tokens, int64_t row, int64_t past,
                             const int32_t* past_at, int64_t capacity, float* cache,
                             float* cache2, cudaStream_t stream) {
  const int64_t total = batch * tokens * row;
  if (total == 0) return cudaSuccess;
  return launch_dependent(
      kv_append_kernel, dim3(grid_for(src2 != nullptr ? 2 * total : total, 256)), dim3(256), 0,
      stream, src, src2, src_stride, tokens, row, past, past_at, capacity, total, cache, cache2);
}

namespace {

AttentionShape attention_shape(const AttentionLaunch& a) {
  AttentionShape s{};
  s.q = a.q;
  s.k = a.k_cache;
  s.v = a.v_cache;
  s.out = a.out;
  s.q_stride = a.q_stride;
  s.tokens = a.tokens;
  s.heads = a.heads;
  s.head_dim = a.head_dim;
  s.past = a.past;
  s.past_at = a.past_at;
  s.capacity = a.capacity;
  s.window = a.window;
  s.kv_row = a.kv_heads * a.head_dim;
  s.group = static_cast<int>(a.heads / a.kv_heads);
  s.scale = a.scale;
  return s;
}

// The split kernel, 16-byte loads where head_dim and the caches allow.
cudaError_t launch_split_kernel(const AttentionLaunch& a, const AttentionShape& s,
                                cudaStream_t stream) {
  int device = 0, major = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (status != cudaSuccess) return status;
  const bool vec = a.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(a.k_cache) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.v_cache) % 16 == 0;
  return vec ? launch_split<true>(a, s, /*clusters=*/major >= 9, stream)
             : launch_split<false>(a, s, /*clusters=*/major >= 9, stream);
}

}  // namespace

cudaError_t launch_attention(const AttentionLaunch& a, cudaStream_t stream) {
  if (a.batch * a.tokens * a.heads * a.head_dim == 0) return cudaSuccess;
  const AttentionShape s = attention_shape(a);
  if (a.tokens >= 16 && a.head_dim <= 128 && a.batch <= 65535 && a.heads <= 65535) {
    return a.head_dim <= 64 ? launch_tile<64>(a, s, stream) : launch_tile<128>(a, s, stream);
  }
  return launch_split_kernel(a, s, stream);
}

cudaError_t launch_rope_append_attention(const AttentionLaunch& a,
                                         const RopeAppendLaunch& rope_append,
                                         cudaStream_t stream) {
  if (a.tokens != 1 || a.head_dim % 2 != 0 || rope_append.positions == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (a.batch * a.heads * a.head_dim == 0) return cudaSuccess;
  AttentionShape s = attention_shape(a);
  s.rope_append = rope_append;
  return launch_split_kernel(a, s, stream);
}

cudaError_t launch_argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids,
                               cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  return launch_dependent(argmax_kernel, dim3(blocks), dim3(1024), 0, stream, logits, rows, vocab,
                          ids);
}

}  // namespace stowage::kernels::detail
