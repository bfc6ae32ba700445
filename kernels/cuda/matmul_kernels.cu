// Kernels of the quantized matmuls: the LLM.int8 outlier search, weight
// gather and dequantization epilogue, and the fused 4-bit GEMV.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/arch/sm90.h"
#include "kernels/cuda/device_helpers.h"
#include "kernels/cuda/float_dispatch.h"
#include "kernels/cuda/four_bit_tables.h"
#include "kernels/detail/gemv_layout.h"
#include "kernels/detail/launch.h"
#include "quant/quant_rules.h"

namespace stowage::kernels::detail {
namespace {

namespace qr = ::stowage::quant_rules;

// ---- LLM.int8 ----

template <typename T>
__global__ void flag_outlier_columns_kernel(const T* __restrict__ x, int64_t m, int64_t k,
                                            float threshold, int* __restrict__ col_flags) {
  for (int64_t r = blockIdx.y; r < m; r += gridDim.y) {
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < k;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      if (fabsf(load_float(x, r * k + c)) >= threshold) col_flags[c] = 1;  // benign race
    }
  }
}

// One block of 1024 threads: ordered compaction of the flagged columns.
__global__ void compact_columns_kernel(const int* __restrict__ col_flags, int64_t k,
                                       int* __restrict__ cols, int* __restrict__ count) {
  __shared__ int scan[1024];
  __shared__ int base;
  if (threadIdx.x == 0) base = 0;
  __syncthreads();
  for (int64_t start = 0; start < k; start += 1024) {
    const int64_t c = start + threadIdx.x;
    const int flag = c < k && col_flags[c] != 0 ? 1 : 0;
    scan[threadIdx.x] = flag;
    __syncthreads();
    for (int offset = 1; offset < 1024; offset <<= 1) {  // inclusive Hillis-Steele scan
      const int add = threadIdx.x >= offset ? scan[threadIdx.x - offset] : 0;
      __syncthreads();
      scan[threadIdx.x] += add;
      __syncthreads();
    }
    if (flag) cols[base + scan[threadIdx.x] - 1] = static_cast<int>(c);
    __syncthreads();
    if (threadIdx.x == 1023) base += scan[1023];
    __syncthreads();
  }
  if (threadIdx.x == 0) *count = base;
}

__global__ void gather_outlier_weights_kernel(const int8_t* __restrict__ cb,
                                              const float* __restrict__ scb, int64_t n, int64_t k,
                                              const int* __restrict__ cols,
                                              const int* __restrict__ count, int cap,
                                              float* __restrict__ w_outlier) {
  const int used = min(*count, cap);
  const int64_t total = static_cast<int64_t>(used) * n;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i / n;
    const int64_t r = i % n;
    w_outlier[i] = qr::int8_rowwise_value(cb[r * k + cols[j]], scb[r]);
  }
}

// y[r, c] = acc * sca[r] * scb[c] / 127^2 (+ outlier part) (+ bias[c]),
// float32, rounded once to T. Each thread takes 4 consecutive columns of a
// row (n % 4 == 0): one 16-byte load of the int32 accumulators; x and the
// outlier column list are broadcast reads.
template <typename T>
__global__ void int8_epilogue_kernel(Int8EpilogueArgs a) {
  const T* x = static_cast<const T*>(a.x);
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  const int count = a.outlier_count != nullptr ? *a.outlier_count : 0;
  const float inv = 1.0f / 16129.0f;
  for (int64_t r = blockIdx.y; r < a.m; r += gridDim.y) {
    const float sca = a.sca[r];
    for (int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4; c < a.n;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x * 4) {
      const int4 acc = *reinterpret_cast<const int4*>(a.acc + r * a.n + c);
      const int accs[4] = {acc.x, acc.y, acc.z, acc.w};
      float v[4];
      float outlier[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        v[q] = __fmul_rn(__fmul_rn(__fmul_rn(static_cast<float>(accs[q]), sca), a.scb[c + q]), inv);
        outlier[q] = 0.0f;
      }
      for (int j = 0; j < count; ++j) {
        const int col = a.outlier_cols[j];
        const float xv = load_float(x, r * a.k + col);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float w = j < a.cap
                              ? a.w_outlier[static_cast<int64_t>(j) * a.n + c + q]
                              : qr::int8_rowwise_value(a.cb[(c + q) * a.k + col], a.scb[c + q]);
          outlier[q] = fmaf(xv, w, outlier[q]);
        }
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        float out = __fadd_rn(v[q], outlier[q]);
        if (bias != nullptr) out = __fadd_rn(out, load_float(bias, c + q));
        store_float(y, r * a.n + c + q, out);
      }
    }
  }
}

// ---- fused 4-bit GEMV ----
//
// A persistent grid of 512-thread blocks; each warp takes a contiguous share
// of the rows, kRows rows at a time, and streams them in steps of kUnroll
// 16-byte chunks (32 codes each) per lane and row, with no-L1-allocate
// loads. The loads of the next step are issued before the current step is
// computed, and the first step's loads before the block's set-up (decode
// table, x), so the memory system is busy from the start. 32 consecutive
// codes always lie in one quantization block (blocksize >= 32, k % 32 == 0),
// so the absmax is applied once per chunk. Codes are decoded two at a time
// through a 256-entry table (byte -> pair of code values) replicated once per
// lane in shared memory, so lookups never conflict on a bank; each lookup
// serves every batch row. x sits in shared memory in a lane-interleaved order
// that makes each lane's 16-byte reads conflict-free; its padding is zero.
// f16 multiplies pairs with HFMA2 into a half2 partial over 8 codes, then
// accumulates in float32; bf16 decodes to float32 and uses FFMA.

constexpr int kGemvThreads = 512;

// Rows a warp works on at once, and chunks per lane and row per step (the x
// layout in gemv_layout.h follows the latter).
template <int M>
struct GemvShape {
  static constexpr int kRows = 2;
  static constexpr int kUnroll = static_cast<int>(gemv_unroll(M));
};

template <typename T>
struct GemvTraits;

template <>
struct GemvTraits<__half> {
  using Pair = __half2;
  using Partial = __half2;
  __device__ static Pair make_pair(float first, float second) {
    return __floats2half2_rn(first, second);
  }
  __device__ static Partial zero() {
    const uint32_t bits = 0;  // +0.0, +0.0; a constant, not a conversion
    return *reinterpret_cast<const __half2*>(&bits);
  }
  __device__ static Partial fma(Pair w, uint32_t x_bits, Partial acc) {
    __half2 xv = *reinterpret_cast<__half2*>(&x_bits);
    return __hfma2(w, xv, acc);
  }
  __device__ static float total(Partial p) { return __low2float(p) + __high2float(p); }
};

template <>
struct GemvTraits<__nv_bfloat16> {
  using Pair = float2;
  using Partial = float2;
  __device__ static Pair make_pair(float first, float second) { return make_float2(first, second); }
  __device__ static Partial zero() { return make_float2(0.0f, 0.0f); }
  __device__ static Partial fma(Pair w, uint32_t x_bits, Partial acc) {
    // bf16 -> f32 is a shift: the low element is the low 16 bits.
    const float x0 = __uint_as_float(x_bits << 16);
    const float x1 = __uint_as_float(x_bits & 0xffff0000u);
    acc.x = fmaf(w.x, x0, acc.x);
    acc.y = fmaf(w.y, x1, acc.y);
    return acc;
  }
  __device__ static float total(Partial p) { return p.x + p.y; }
};

// v >> n for n >= 0, v << -n for n < 0 (n a compile-time constant).
__device__ __forceinline__ uint32_t shift_right(uint32_t v, int n) {
  return n >= 0 ? v >> n : v << -n;
}

// The position, in T units, of element e of a row of x in shared memory.
__device__ __forceinline__ int64_t x_slot(int64_t e) {
  const int64_t it = e >> 10;
  const int lane = static_cast<int>((e >> 5) & 31);
  const int step = static_cast<int>((e >> 3) & 3);
  return (((it * 4 + step) * 32 + lane) << 3) + (e & 7);
}

template <typename T, int M, bool kNested>
__global__ void __launch_bounds__(kGemvThreads)
    four_bit_gemv_kernel(FourBitGemvArgs a, const __grid_constant__ GemvTables tables,
                         int64_t x_row_stride) {
  constexpr int R = GemvShape<M>::kRows;
  constexpr int U = GemvShape<M>::kUnroll;
  using Traits = GemvTraits<T>;
  using Pair = typename Traits::Pair;
  using Partial = typename Traits::Partial;
  extern __shared__ uint4 smem[];
  Pair* lut = reinterpret_cast<Pair*>(smem);                     // [256][32]
  T* xs = reinterpret_cast<T*>(lut + 256 * 32);                  // [M][x_row_stride]
  float* map = reinterpret_cast<float*>(xs + M * x_row_stride);  // [256], nested only
  __shared__ float code_values[16];

  const int lane = threadIdx.x & 31;
  const int log2_bs = __ffs(a.blocksize) - 1;
  const int chunks = static_cast<int>(a.k >> 5);  // 16-byte chunks per row
  const int steps_per_row = (chunks + 32 * U - 1) / (32 * U);
  // This warp's contiguous share of the groups of R rows.
  const int64_t row_groups = (a.n + R - 1) / R;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int64_t first_group = row_groups * warp / warps;
  int64_t steps_left = (row_groups * (warp + 1) / warps - first_group) * steps_per_row;

  struct Step {
    uint4 w[R][U];
    float scale[R][U];    // the absmax, or (nested) its nested absmax
    uint32_t code[R][U];  // nested: the absmax's 8-bit code
  };
  // Loads step `s` of row group `group` into `in` (chunks past the row: zeros).
  auto load_step = [&](int64_t group, int s, Step& in) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      int64_t row = group * R + r;
      if (row >= a.n) row = a.n - 1;  // computed, never stored
      const uint8_t* wrow = a.packed + row * (a.k >> 1);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = (s * U + u) * 32 + lane;
        in.w[r][u] = make_uint4(0, 0, 0, 0);
        in.scale[r][u] = 0.0f;
        in.code[r][u] = 0;
        if (c < chunks) {
          in.w[r][u] = load_stream16(wrow + static_cast<int64_t>(c) * 16);
          const int64_t block = (row * a.k + static_cast<int64_t>(c) * 32) >> log2_bs;
          if (kNested) {
            in.code[r][u] = __ldg(a.absmax_codes + block);
            in.scale[r][u] = __ldg(a.nested_absmax + block / qr::kNestedBlocksize);
          } else {
            in.scale[r][u] = __ldg(a.absmax + block);
          }
        }
      }
    }
  };
  auto advance = [&](int64_t& group, int& s) {
    if (++s == steps_per_row) {
      s = 0;
      ++group;
    }
  };

  Step step0, step1;
  int64_t load_group = first_group;
  int load_s = 0;
  if (steps_left > 0) {
    load_step(load_group, load_s, step0);
    advance(load_group, load_s);
  }

  // Set-up, while the first loads are in flight: the code values, x (16-byte
  // loads, all issued before their stores; k % 32 == 0, so 8 consecutive
  // elements map to one 16-byte slot), the padding of x, the nested map, and
  // the decode table.
  if (threadIdx.x < 16) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      if (threadIdx.x == j) code_values[j] = tables.value[j];  // constant indices
    }
  }
  const T* x = static_cast<const T*>(a.x);
  const int64_t vecs = a.k >> 3;
  if ((reinterpret_cast<uintptr_t>(x) & 15) == 0) {
    for (int mm = 0; mm < M; ++mm) {
      const uint4* xv = reinterpret_cast<const uint4*>(x + mm * a.k);
      uint4* dst = reinterpret_cast<uint4*>(xs + mm * x_row_stride);
      for (int64_t v0 = threadIdx.x; v0 < vecs; v0 += 4 * blockDim.x) {
        uint4 val[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int64_t v = v0 + u * blockDim.x;
          if (v < vecs) val[u] = __ldg(xv + v);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int64_t v = v0 + u * blockDim.x;
          if (v < vecs) dst[x_slot(v << 3) >> 3] = val[u];
        }
      }
    }
  } else {
    for (int mm = 0; mm < M; ++mm) {
      for (int64_t e = threadIdx.x; e < a.k; e += blockDim.x) {
        xs[mm * x_row_stride + x_slot(e)] = x[mm * a.k + e];
      }
    }
  }
  for (int mm = 0; mm < M; ++mm) {
    for (int64_t e = a.k + threadIdx.x; e < x_row_stride; e += blockDim.x) {
      xs[mm * x_row_stride + x_slot(e)] = T(0.0f);
    }
  }
  if (kNested) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) map[i] = tables.nested_map[i];
  }
  __syncthreads();
#pragma unroll 4
  for (int i = threadIdx.x; i < 256 * 32; i += kGemvThreads) {
    const int byte = i >> 5;
    lut[i] = Traits::make_pair(code_values[byte >> 4], code_values[byte & 15]);
  }
  __syncthreads();

  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  // Byte offset of lane's copy of the table entry for byte value v:
  // (v << kEntryShift) | lane * sizeof(Pair); one shift and one LOP3 per byte.
  constexpr int kEntryShift = (sizeof(Pair) == 4 ? 2 : 3) + 5;
  constexpr uint32_t kMask = 0xffu << kEntryShift;
  const uint32_t lane_offset = static_cast<uint32_t>(lane) * sizeof(Pair);
  const char* lut_bytes = reinterpret_cast<const char*>(lut);
  const uint4* x_lane = reinterpret_cast<const uint4*>(xs) + lane;
  const int x_stride_vec = static_cast<int>(x_row_stride >> 3);  // per batch row, in uint4
  auto entry = [&](uint32_t offset) { return *reinterpret_cast<const Pair*>(lut_bytes + offset); };

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[r][mm] = 0.0f;
  }
  // acc += scale * dot(codes, x) for each chunk of `in`; at the row group's
  // last step, the sums over lanes are stored.
  auto compute_step = [&](int64_t group, int s, const Step& in) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int x_base = (s * U + u) * 128;  // 4 steps x 32 lanes of uint4 per 32 chunks
      Partial p0[R][M], p1[R][M];
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int mm = 0; mm < M; ++mm) p0[r][mm] = p1[r][mm] = Traits::zero();
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        Pair e[R][4];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t word = (&in.w[r][u].x)[q];
          e[r][0] = entry(((word << kEntryShift) & kMask) | lane_offset);
          e[r][1] = entry((shift_right(word, 8 - kEntryShift) & kMask) | lane_offset);
          e[r][2] = entry(((word >> (16 - kEntryShift)) & kMask) | lane_offset);
          e[r][3] = entry(((word >> (24 - kEntryShift)) & kMask) | lane_offset);
        }
#pragma unroll
        for (int mm = 0; mm < M; ++mm) {
          const uint4 xv = x_lane[mm * x_stride_vec + x_base + q * 32];
#pragma unroll
          for (int r = 0; r < R; ++r) {
            p0[r][mm] = Traits::fma(e[r][0], xv.x, p0[r][mm]);
            p1[r][mm] = Traits::fma(e[r][1], xv.y, p1[r][mm]);
            p0[r][mm] = Traits::fma(e[r][2], xv.z, p0[r][mm]);
            p1[r][mm] = Traits::fma(e[r][3], xv.w, p1[r][mm]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float scale = in.scale[r][u];
        if (kNested) {
          scale = __fadd_rn(__fmul_rn(map[in.code[r][u]], scale), a.nested_offset);
        }
#pragma unroll
        for (int mm = 0; mm < M; ++mm) {
          acc[r][mm] = fmaf(scale, Traits::total(p0[r][mm]) + Traits::total(p1[r][mm]), acc[r][mm]);
        }
      }
    }
    if (s == steps_per_row - 1) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t row = group * R + r;
#pragma unroll
        for (int mm = 0; mm < M; ++mm) {
          float v = acc[r][mm];
#pragma unroll
          for (int offset = 16; offset > 0; offset >>= 1) {
            v += __shfl_xor_sync(0xffffffffu, v, offset);
          }
          if (lane == 0 && row < a.n) {
            if (bias != nullptr) v += load_float(bias, row);
            store_float(y, mm * a.n + row, v);
          }
          acc[r][mm] = 0.0f;
        }
      }
    }
  };

  // Two steps per iteration so the double buffer stays in registers.
  int64_t group = first_group;
  int s = 0;
  while (steps_left > 0) {
    if (steps_left > 1) {
      load_step(load_group, load_s, step1);
      advance(load_group, load_s);
    }
    compute_step(group, s, step0);
    advance(group, s);
    if (--steps_left == 0) break;
    if (steps_left > 1) {
      load_step(load_group, load_s, step0);
      advance(load_group, load_s);
    }
    compute_step(group, s, step1);
    advance(group, s);
    --steps_left;
  }
}

// ---- fused 4-bit GEMV, batch 1, sm_90: a bulk-copy ring ----
//
// One block per SM; the weight goes in tiles of ring_rows rows (their packed
// codes, then their absmax or absmax codes, both contiguous in the weight).
// Each block takes its first `stages` tiles every gridDim-th, then the next
// free tile from a counter in device memory whenever a stage frees, so blocks
// whose reads land sooner take more and all end about together. A producer
// warp streams the tiles into a ring of `stages` tiles of shared memory with
// cp.async.bulk (TMA), completing on an mbarrier per stage; 16 consumer
// warps decode each tile as it lands and hand the stage back through a second
// mbarrier. So the whole block's share streams with several tiles in flight
// at any time, and no register holds loads in flight. The consumers ask for
// x as the producer asks for the first tiles; neither waits for the other.
// Decoding is the classic kernel's (a per-lane byte -> pair table, x in the
// lane-interleaved order) with R = 4 rows per warp sharing each x load (2 in
// 2-row tiles) and the table 256 B per byte value so one PRMT forms each
// lookup's offset; each warp covers every (16 / (rows / R))-th group of 32
// chunks of its rows, and the warps' sums meet in shared memory, summed in a
// fixed order: the output does not depend on timing.
// The kernel is launched as a programmatic dependent (PDL): its blocks may
// start, and build their tables, while the kernel before it in the stream
// ends; they wait for that kernel before reading global memory, and let the
// next kernel launch once every tile has been asked for. Back to back, that
// hides most of the launch gap (8192^2: 19.3 -> 16.3 us a call). Before that
// wait, each block asks the L2 to prefetch its first tile: a prefetch moves
// nothing into the block, and the L2 is coherent for every writer, so what the
// kernel before writes is still what the tile's copy reads after the wait; it
// fills the gap in DRAM traffic between two kernels (8192^2 back to back
// 16.2 -> 15.2 us, with the producer no longer waiting for x and the table
// built 16 entries a thread from constant indices).

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
using sm90::bulk_copy_to_shared;
using sm90::l2_prefetch;
using sm90::mbarrier_arrive;
using sm90::mbarrier_expect_bytes;
using sm90::mbarrier_init;
using sm90::mbarrier_wait;
// Barrier among the consumer warps only (named barrier 1).
__device__ __forceinline__ void consumers_sync() {
  sm90::named_barrier_sync<1, kRingConsumerWarps * 32>();
}
#endif

template <typename T, bool kNested, int kRowsPerWarp>
__global__ void __launch_bounds__(kRingThreads, 1)
    four_bit_gemv_ring_kernel(FourBitGemvArgs a, const __grid_constant__ GemvTables tables,
                              int tile_rows, int stages, unsigned* tile_counters) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Traits = GemvTraits<T>;
  using Pair = typename Traits::Pair;
  using Partial = typename Traits::Partial;
  constexpr int R = kRowsPerWarp;  // rows per warp task: 4, or 2 in 2-row tiles
  constexpr int kConsumerThreads = kRingConsumerWarps * 32;
  extern __shared__ __align__(128) unsigned char ring_smem[];

  const int k = static_cast<int>(a.k);
  const int chunks = k >> 5;
  const int64_t row_bytes = k >> 1;
  const int log2_bs = __ffs(a.blocksize) - 1;
  const int absmax_per_row = k >> log2_bs;
  const int64_t absmax_row_bytes = kNested ? absmax_per_row : absmax_per_row * 4;
  const int64_t tile_bytes = ring_tile_bytes(tile_rows, k, a.blocksize, kNested);
  // Double quantization: nested absmax values in the array, and the first
  // index of the run a tile starting at block `first_block` holds.
  const int64_t nested_count = qr::nested_block_count(a.n * absmax_per_row);
  auto nested_start = [](int64_t first_block) {
    return first_block / qr::kNestedBlocksize & ~int64_t{3};
  };
  const int64_t tiles = (a.n + tile_rows - 1) / tile_rows;
  const int grid = static_cast<int>(gridDim.x);

  uint64_t* full = reinterpret_cast<uint64_t*>(ring_smem);
  uint64_t* empty = full + kRingMaxStages;
  int64_t* stage_tile = reinterpret_cast<int64_t*>(empty + kRingMaxStages);  // -1: no more
  unsigned char* ring = ring_smem + kRingHeaderBytes;
  // The decode table: 256 B per byte value (32 lanes' copies of its pair;
  // f16 pairs fill half), so one PRMT forms a lookup's whole byte offset.
  unsigned char* lut = ring + stages * tile_bytes;  // [256][256 B]
  T* xs = reinterpret_cast<T*>(lut + 256 * 256);
  float* partial = reinterpret_cast<float*>(xs + (k + 1023) / 1024 * 1024);  // [stages][64]
  float* map = partial + stages * kRingPartials;                             // nested only

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const bool consumer = warp < kRingConsumerWarps;

  const unsigned char* absmax_bytes =
      kNested ? a.absmax_codes : reinterpret_cast<const unsigned char*>(a.absmax);
  // Set-up that reads no global memory. The producer asks the L2 for its
  // block's first tile (see above: safe before the wait) and sets up the
  // barriers; the consumers build the decode table and the nested map (both
  // from the kernel's parameters).
  if (!consumer && lane == 0) {
    if (blockIdx.x < tiles) {
      const int64_t row = static_cast<int64_t>(blockIdx.x) * tile_rows;
      const int64_t rows = min(static_cast<int64_t>(tile_rows), a.n - row);
      l2_prefetch(a.packed + row * row_bytes, static_cast<uint32_t>(rows * row_bytes));
      l2_prefetch(absmax_bytes + row * absmax_row_bytes,
                  static_cast<uint32_t>(rows * absmax_row_bytes));
    }
    for (int s = 0; s < stages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], kRingConsumerWarps);
    }
    sm90::fence_mbarrier_init();
  }
  if (consumer) {
    if (kNested) {
      for (int i = threadIdx.x; i < 256; i += kConsumerThreads) map[i] = tables.nested_map[i];
    }
    // Warp w writes the entries of the bytes w + 16 m: the pair
    // (value[m], value[w]), m a constant once unrolled.
    static_assert(kRingConsumerWarps == 16, "one consumer warp per low nibble");
    const float low = tables.value[warp];
#pragma unroll
    for (int m = 0; m < 16; ++m) {
      *reinterpret_cast<Pair*>(lut + (warp + 16 * m) * 256 + lane * sizeof(Pair)) =
          Traits::make_pair(tables.value[m], low);
    }
  }
  // Launched as a programmatic dependent of the kernel before it, this block
  // may start while that kernel ends: wait for it (its writes, the counters'
  // reset) before reading anything in global memory.
  sm90::grid_dependency_wait();

  // x's loads into registers, stored to shared memory while the first tiles
  // stream in.
  const T* x = static_cast<const T*>(a.x);
  const int64_t x_vecs = k >> 3;
  const bool x_aligned = (reinterpret_cast<uintptr_t>(x) & 15) == 0;
  constexpr int kXLoads = 8;
  uint4 x_regs[kXLoads];
  if (consumer && x_aligned) {
#pragma unroll
    for (int u = 0; u < kXLoads; ++u) {
      const int64_t v = threadIdx.x + u * kConsumerThreads;
      if (v < x_vecs) x_regs[u] = __ldg(reinterpret_cast<const uint4*>(x) + v);
    }
  }
  // The barriers are set up: the producer goes on at once, the consumers once
  // it has passed here (named barrier 15).
  if (!consumer) {
    __syncwarp();
    sm90::named_barrier_arrive<15, kRingThreads>();
  } else {
    sm90::named_barrier_sync<15, kRingThreads>();
  }

  if (!consumer) {
    // The producer: the block's t-th tile goes to stage t % stages once the
    // tile before it there has been consumed, its index in stage_tile (-1
    // once there are no more). The first `stages` tiles are every grid-th;
    // the rest come from tile_counters[0] as blocks free a stage, so blocks
    // whose reads land sooner take more tiles and all end together.
    if (lane == 0) {
      for (int t = 0;; ++t) {
        const int s = t % stages;
        const int64_t tile =
            t < stages ? blockIdx.x + static_cast<int64_t>(t) * grid
                       : static_cast<int64_t>(grid) * stages + atomicAdd(&tile_counters[0], 1u);
        if (t >= stages) mbarrier_wait(&empty[s], ((t / stages) - 1) & 1);
        stage_tile[s] = tile < tiles ? tile : -1;
        if (tile >= tiles) {
          mbarrier_arrive(&full[s]);
          break;
        }
        const int64_t row = tile * tile_rows;
        const int64_t rows = min(static_cast<int64_t>(tile_rows), a.n - row);
        unsigned char* dst = ring + s * tile_bytes;
        const uint32_t w_bytes = static_cast<uint32_t>(rows * row_bytes);
        const uint32_t s_bytes = static_cast<uint32_t>(rows * absmax_row_bytes);
        // Double quantization: the tile's nested absmax, from a multiple of
        // 4 up to the last whole 16 bytes of the array by bulk copy; the last
        // few floats past those (the array's last tile only) by plain loads.
        uint32_t n_bytes = 0;
        const int64_t start = kNested ? nested_start(row * absmax_per_row) : 0;
        if (kNested) {
          const int64_t last = ((row + rows) * absmax_per_row - 1) / qr::kNestedBlocksize;
          const int64_t copy_end = min((last + 4) & ~int64_t{3}, nested_count & ~int64_t{3});
          float* slot = reinterpret_cast<float*>(dst + tile_rows * (row_bytes + absmax_row_bytes));
          if (copy_end > start) n_bytes = static_cast<uint32_t>((copy_end - start) * 4);
          for (int64_t i = max(copy_end, start); i <= last; ++i) {
            slot[i - start] = __ldg(a.nested_absmax + i);
          }
        }
        mbarrier_expect_bytes(&full[s], w_bytes + s_bytes + n_bytes);
        bulk_copy_to_shared(dst, a.packed + row * row_bytes, w_bytes, &full[s]);
        bulk_copy_to_shared(dst + tile_rows * row_bytes, absmax_bytes + row * absmax_row_bytes,
                            s_bytes, &full[s]);
        if (n_bytes > 0) {
          bulk_copy_to_shared(dst + tile_rows * (row_bytes + absmax_row_bytes),
                              a.nested_absmax + start, n_bytes, &full[s]);
        }
      }
      // Every read is asked for: a dependent kernel may start launching.
      sm90::launch_dependents();
      // The last block to finish asking resets the counters for the next
      // launch (every block's last atomicAdd has returned by then).
      if (atomicAdd(&tile_counters[1], 1u) == gridDim.x - 1) {
        tile_counters[0] = 0;
        tile_counters[1] = 0;
      }
    }
    return;
  }

  // Consumers' set-up while the first tiles stream in.
  if (x_aligned) {
    uint4* dst = reinterpret_cast<uint4*>(xs);
#pragma unroll
    for (int u = 0; u < kXLoads; ++u) {
      const int64_t v = threadIdx.x + u * kConsumerThreads;
      if (v < x_vecs) dst[x_slot(v << 3) >> 3] = x_regs[u];
    }
    for (int64_t v = threadIdx.x + kXLoads * kConsumerThreads; v < x_vecs; v += kConsumerThreads) {
      dst[x_slot(v << 3) >> 3] = __ldg(reinterpret_cast<const uint4*>(x) + v);
    }
  } else {
    for (int64_t e = threadIdx.x; e < k; e += kConsumerThreads) xs[x_slot(e)] = x[e];
  }
  consumers_sync();

  // Lane's entry for byte j of `word`: offset (byte << 8) | lane * sizeof(Pair),
  // one PRMT taking the byte from `word` and the lane's offset from byte 0 of
  // `lane_bytes` (its byte 1 is the zero for the top half).
  const uint32_t lane_bytes = static_cast<uint32_t>(lane) * sizeof(Pair);
  auto entry = [&](uint32_t word, int j) {
    const uint32_t offset = __byte_perm(word, lane_bytes, 0x5504u | (j << 4));
    return *reinterpret_cast<const Pair*>(lut + offset);
  };
  const uint4* x_lane = reinterpret_cast<const uint4*>(xs) + lane;
  // Warp tasks: row set `row_set` (R rows) of each tile, every
  // `warps_per_set`-th group of 32 chunks from group `group`. The warps of a
  // set meet at named barrier 2 + row_set after each tile; group 0 then sums
  // their partial sums in a fixed order, so the result does not depend on
  // which warp ends first or which block took the tile. Partial sums live
  // with the tile's stage: group 0 frees the stage only after reading them,
  // so a stage's sums are not written again before they are read.
  const int row_sets = tile_rows / R;
  const int row_set = warp % row_sets;
  const int group = warp / row_sets;
  const int warps_per_set = kRingConsumerWarps / row_sets;
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);

  for (int t = 0;; ++t) {
    const int s = t % stages;
    mbarrier_wait(&full[s], (t / stages) & 1);
    const int64_t tile = stage_tile[s];
    if (tile < 0) break;
    const int64_t tile_row0 = tile * tile_rows;
    const unsigned char* tile_data = ring + s * tile_bytes;
    const unsigned char* tile_absmax = tile_data + tile_rows * row_bytes;
    const float* tile_nested =
        reinterpret_cast<const float*>(tile_absmax + tile_rows * absmax_row_bytes);
    const int64_t tile_nested_start = nested_start(tile_row0 * absmax_per_row);
    const int r0 = row_set * R;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
#pragma unroll 2
    for (int c = group * 32 + lane; c < chunks; c += warps_per_set * 32) {
      uint4 w[R];
      float scale[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        w[r] = *reinterpret_cast<const uint4*>(tile_data + (r0 + r) * row_bytes + c * 16);
        const int b = (r0 + r) * absmax_per_row + ((c * 32) >> log2_bs);
        if (kNested) {
          const int64_t block = tile_row0 * absmax_per_row + b;
          scale[r] =
              __fadd_rn(__fmul_rn(map[tile_absmax[b]],
                                  tile_nested[block / qr::kNestedBlocksize - tile_nested_start]),
                        a.nested_offset);
        } else {
          scale[r] = reinterpret_cast<const float*>(tile_absmax)[b];
        }
      }
      Partial p0[R], p1[R];
#pragma unroll
      for (int r = 0; r < R; ++r) p0[r] = p1[r] = Traits::zero();
      const int x_base = (c >> 5) * 128;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint4 xv = x_lane[x_base + q * 32];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t word = (&w[r].x)[q];
          p0[r] = Traits::fma(entry(word, 0), xv.x, p0[r]);
          p1[r] = Traits::fma(entry(word, 1), xv.y, p1[r]);
          p0[r] = Traits::fma(entry(word, 2), xv.z, p0[r]);
          p1[r] = Traits::fma(entry(word, 3), xv.w, p1[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        acc[r] = fmaf(scale[r], Traits::total(p0[r]) + Traits::total(p1[r]), acc[r]);
      }
    }
    float* sums = partial + s * kRingPartials;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[r];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0) sums[(r0 + r) * warps_per_set + group] = v;
    }
    sm90::named_barrier_sync(2 + row_set, warps_per_set * 32);
    if (group == 0 && lane < R) {
      const int64_t row = tile_row0 + r0 + lane;
      if (row < a.n) {
        float v = 0.0f;
        for (int g = 0; g < warps_per_set; ++g) v += sums[(r0 + lane) * warps_per_set + g];
        if (bias != nullptr) v += load_float(bias, row);
        store_float(y, row, v);
      }
    }
    // The stage (tile and sums) is free once every warp is done with it.
    __syncwarp();
    if (lane == 0) mbarrier_arrive(&empty[s]);
  }
#endif
}

using GemvRingKernel = void (*)(FourBitGemvArgs, GemvTables, int, int, unsigned*);

template <typename T, bool kNested>
GemvRingKernel gemv_ring_kernel_for(int rows_per_warp) {
  return rows_per_warp == 4 ? four_bit_gemv_ring_kernel<T, kNested, 4>
                            : four_bit_gemv_ring_kernel<T, kNested, 2>;
}

// variant bits as for the classic kernel: (bf16) * 8 + nested * 4.
GemvRingKernel gemv_ring_kernel(int variant, int rows_per_warp) {
  const bool nested = (variant & 4) != 0;
  if ((variant & 8) != 0) {
    return nested ? gemv_ring_kernel_for<__nv_bfloat16, true>(rows_per_warp)
                  : gemv_ring_kernel_for<__nv_bfloat16, false>(rows_per_warp);
  }
  return nested ? gemv_ring_kernel_for<__half, true>(rows_per_warp)
                : gemv_ring_kernel_for<__half, false>(rows_per_warp);
}

using GemvKernel = void (*)(FourBitGemvArgs, GemvTables, int64_t);

template <typename T, bool kNested>
GemvKernel gemv_kernel_for_m(int64_t m) {
  switch (m) {
    case 1:
      return four_bit_gemv_kernel<T, 1, kNested>;
    case 2:
      return four_bit_gemv_kernel<T, 2, kNested>;
    case 3:
      return four_bit_gemv_kernel<T, 3, kNested>;
    default:
      return four_bit_gemv_kernel<T, 4, kNested>;
  }
}

// variant = (dtype is bf16) * 8 + nested * 4 + (m - 1)
GemvKernel gemv_kernel(int variant) {
  const int m = (variant & 3) + 1;
  const bool nested = (variant & 4) != 0;
  const bool bf16 = (variant & 8) != 0;
  if (bf16)
    return nested ? gemv_kernel_for_m<__nv_bfloat16, true>(m)
                  : gemv_kernel_for_m<__nv_bfloat16, false>(m);
  return nested ? gemv_kernel_for_m<__half, true>(m) : gemv_kernel_for_m<__half, false>(m);
}

template <typename T>
struct EpilogueLaunch {
  static cudaError_t run(const Int8EpilogueArgs& a, cudaStream_t stream) {
    const dim3 grid(grid_for(a.n / 4, 256, 1024), row_blocks(a.m, grid_for(a.n / 4, 256, 1024)));
    int8_epilogue_kernel<T><<<grid, 256, 0, stream>>>(a);
    return cudaGetLastError();
  }
};

template <typename T>
struct FlagLaunch {
  static cudaError_t run(const void* x, int64_t m, int64_t k, float threshold, int* col_flags,
                         cudaStream_t stream) {
    const dim3 grid(grid_for(k, 256, 1024), row_blocks(m, grid_for(k, 256, 1024)));
    flag_outlier_columns_kernel<T>
        <<<grid, 256, 0, stream>>>(static_cast<const T*>(x), m, k, threshold, col_flags);
    return cudaGetLastError();
  }
};

// Lets `kernel` take all the dynamic shared memory a block may have. The
// limit belongs to the kernel, not to a shape: setting each plan's own size
// would let a later plan's smaller size break launches of an earlier one.
cudaError_t allow_all_shared_memory(const void* kernel, int max_optin) {
  cudaFuncAttributes attributes;
  cudaError_t status = cudaFuncGetAttributes(&attributes, kernel);
  if (status != cudaSuccess) return status;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              max_optin - static_cast<int>(attributes.sharedSizeBytes));
}

// The ring kernel's tile shape for batch 1 on sm_90 and later: the first of
// the shapes below that fits in shared memory, else none (ring_rows stays 0).
// Each row must hold whole quantization blocks whose absmax bytes are a
// multiple of 16 (bulk copies move 16-byte units).
cudaError_t plan_ring(const FourBitGemvArgs& args, int device, int variant, int sms, int max_optin,
                      FourBitGemvPlan* plan) {
  if (args.m != 1) return cudaSuccess;
  int major = 0;
  cudaError_t status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (status != cudaSuccess) return status;
  if (major < 9) return cudaSuccess;
  const bool nested = args.absmax == nullptr;
  if (args.blocksize <= 0 || args.k % args.blocksize != 0) return cudaSuccess;
  if (ring_absmax_row_bytes(args.k, args.blocksize, nested) % 16 != 0) return cudaSuccess;
  // Tile shapes in order of preference, as measured on an H100 back to back
  // (bench/results/h100-2026-11-23/session4/b2b_lab*.log): with float32
  // absmax, 8-row tiles, 3 in flight (28672x8192: 45.8 us against 46.5 with
  // 2; even at 8192^2); with double quantization, 16-row tiles, 2 in flight
  // (8192^2: 17.0 us against 17.4 for 8-row tiles, 3 in flight; 28672x8192:
  // 44.7 against 48.2). 4-row tiles lose 15-30%, 2-row tiles more. Smaller
  // tiles only where those do not fit in shared memory. Warps take 4 rows
  // at a time where tiles have 4 or more (each x load serves 4 rows: 16.14
  // against 16.26 us at 8192^2, 7 runs each, the ranges apart; even at the
  // larger shapes), else 2.
  struct Shape {
    int rows, stages;
  };
  const Shape shapes[] = {
      {nested ? 16 : 8, nested ? 2 : 3}, {8, 3}, {8, 2}, {4, 2}, {2, 3}, {2, 2}};
  for (const Shape& shape : shapes) {
    const int64_t tiles = (args.n + shape.rows - 1) / shape.rows;
    const int64_t grid = tiles < sms ? tiles : sms;
    const int64_t smem =
        ring_shared_bytes(shape.rows, shape.stages, args.k, args.blocksize, nested);
    if (smem > max_optin) continue;
    const int rows_per_warp = shape.rows >= 4 ? 4 : 2;
    status = allow_all_shared_memory(
        reinterpret_cast<const void*>(gemv_ring_kernel(variant, rows_per_warp)), max_optin);
    if (status != cudaSuccess) return status;
    plan->ring_rows = shape.rows;
    plan->ring_rows_per_warp = rows_per_warp;
    plan->ring_stages = shape.stages;
    plan->ring_grid = static_cast<int>(grid);
    plan->ring_smem_bytes = static_cast<int>(smem);
    return cudaSuccess;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_find_outlier_columns(const void* x, FloatType dtype, int64_t m, int64_t k,
                                        float threshold, int* col_flags, int* outlier_cols,
                                        int* outlier_count, cudaStream_t stream) {
  cudaError_t status = cudaMemsetAsync(col_flags, 0, sizeof(int) * k, stream);
  if (status != cudaSuccess) return status;
  if (m * k > 0) {
    status = dispatch_float_type<FlagLaunch>(dtype, x, m, k, threshold, col_flags, stream);
    if (status != cudaSuccess) return status;
  }
  compact_columns_kernel<<<1, 1024, 0, stream>>>(col_flags, k, outlier_cols, outlier_count);
  return cudaGetLastError();
}

cudaError_t launch_gather_outlier_weights(const int8_t* cb, const float* scb, int64_t n, int64_t k,
                                          const int* outlier_cols, const int* outlier_count,
                                          int cap, float* w_outlier, cudaStream_t stream) {
  if (n == 0 || cap == 0) return cudaSuccess;
  gather_outlier_weights_kernel<<<grid_for(static_cast<int64_t>(cap) * n, 256), 256, 0, stream>>>(
      cb, scb, n, k, outlier_cols, outlier_count, cap, w_outlier);
  return cudaGetLastError();
}

cudaError_t launch_int8_epilogue(const Int8EpilogueArgs& args, cudaStream_t stream) {
  if (args.m * args.n == 0) return cudaSuccess;
  return dispatch_float_type<EpilogueLaunch>(args.dtype, args, stream);
}

cudaError_t plan_four_bit_gemv(const FourBitGemvArgs& args, int device, FourBitGemvPlan* plan) {
  *plan = FourBitGemvPlan{};
  if (args.m < 1 || args.m > kGemvMaxRows || args.k % 32 != 0 || args.k == 0 || args.n == 0) {
    return cudaSuccess;
  }
  if (args.dtype != FloatType::kF16 && args.dtype != FloatType::kBF16) return cudaSuccess;
  if (reinterpret_cast<uintptr_t>(args.packed) % 16 != 0) return cudaSuccess;
  const bool nested = args.absmax == nullptr;
  const bool bf16 = args.dtype == FloatType::kBF16;
  const int64_t smem = gemv_shared_bytes(args.m, args.k, bf16, nested);
  int max_optin = 0;
  cudaError_t status =
      cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) return status;
  if (smem > max_optin - 256) return cudaSuccess;  // x too long for shared memory: not fused
  const int variant = (bf16 ? 8 : 0) + (nested ? 4 : 0) + static_cast<int>(args.m - 1);
  GemvKernel kernel = gemv_kernel(variant);
  status = allow_all_shared_memory(reinterpret_cast<const void*>(kernel), max_optin);
  if (status != cudaSuccess) return status;
  int per_sm = 0;
  status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads,
                                                         static_cast<size_t>(smem));
  if (status != cudaSuccess) return status;
  int sms = 0;
  status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status != cudaSuccess) return status;
  if (per_sm < 1) return cudaSuccess;
  // One warp per group of rows at least.
  const int64_t warps_needed = (args.n + GemvShape<1>::kRows - 1) / GemvShape<1>::kRows;
  const int64_t blocks_needed = (warps_needed + kGemvThreads / 32 - 1) / (kGemvThreads / 32);
  int64_t grid = static_cast<int64_t>(per_sm) * sms;
  if (grid > blocks_needed) grid = blocks_needed;
  plan->variant = variant;
  plan->grid = static_cast<int>(grid);
  plan->block = kGemvThreads;
  plan->smem_bytes = static_cast<int>(smem);
  return plan_ring(args, device, variant, sms, max_optin, plan);
}

cudaError_t launch_four_bit_gemv(const FourBitGemvPlan& plan, const FourBitGemvArgs& args,
                                 unsigned* tile_counters, cudaStream_t stream) {
  if (plan.variant < 0) return cudaErrorInvalidValue;
  const GemvTables& tables = gemv_tables(args.type);
  const bool nested = args.absmax == nullptr;
  const void* absmax = nested ? static_cast<const void*>(args.absmax_codes) : args.absmax;
  const bool ring_aligned = reinterpret_cast<uintptr_t>(args.packed) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(absmax) % 16 == 0 &&
                            (!nested || reinterpret_cast<uintptr_t>(args.nested_absmax) % 16 == 0);
  if (plan.ring_rows > 0 && ring_aligned) {
    if (tile_counters == nullptr) return cudaErrorInvalidValue;
    // A programmatic dependent launch: blocks may start as the kernel before
    // this one ends (the kernel waits for it before reading memory).
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(plan.ring_grid);
    config.blockDim = dim3(kRingThreads);
    config.dynamicSmemBytes = static_cast<size_t>(plan.ring_smem_bytes);
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, gemv_ring_kernel(plan.variant, plan.ring_rows_per_warp),
                              args, tables, plan.ring_rows, plan.ring_stages, tile_counters);
  }
  gemv_kernel(plan.variant)<<<plan.grid, plan.block, plan.smem_bytes, stream>>>(
      args, tables, gemv_x_row_stride(args.m, args.k));
  return cudaGetLastError();
}

}  // namespace stowage::kernels::detail
