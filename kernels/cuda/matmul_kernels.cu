// Kernels of the quantized matmuls: the LLM.int8 outlier search, weight
// gather and dequantization epilogue, and the fused 4-bit GEMV.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_helpers.h"
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
// One warp per output row (grid-stride over rows, a persistent grid). Each
// lane streams 16 bytes (32 codes) of the row per step with a
// no-L1-allocate load, four steps in flight. 32 consecutive codes always lie
// in one quantization block (blocksize >= 32, k % 32 == 0), so the absmax is
// applied once per 16 bytes. Codes are decoded two at a time through a
// 256-entry table (byte -> pair of code values) replicated once per lane in
// shared memory, so lookups never conflict on a bank. x sits in shared memory
// in a lane-interleaved order that makes each lane's 16-byte reads
// conflict-free. f16 multiplies pairs with HFMA2 into a half2 partial over 8
// codes, then accumulates in float32; bf16 decodes to float32 and uses FFMA.

constexpr int kGemvThreads = 256;
constexpr int kGemvUnroll = 4;

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

__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// v >> n for n >= 0, v << -n for n < 0 (n a compile-time constant).
__device__ __forceinline__ uint32_t shift_right(uint32_t v, int n) {
  return n >= 0 ? v >> n : v << -n;
}

struct GemvCodes {
  float value[16];
};

// The position, in T units, of element e of a row of x in shared memory.
__device__ __forceinline__ int64_t x_slot(int64_t e) {
  const int64_t it = e >> 10;
  const int lane = static_cast<int>((e >> 5) & 31);
  const int step = static_cast<int>((e >> 3) & 3);
  return (((it * 4 + step) * 32 + lane) << 3) + (e & 7);
}

template <typename T, int M, bool kNested>
__global__ void __launch_bounds__(kGemvThreads)
    four_bit_gemv_kernel(FourBitGemvArgs a, GemvCodes codes, int64_t x_row_stride) {
  using Traits = GemvTraits<T>;
  using Pair = typename Traits::Pair;
  extern __shared__ uint4 smem[];
  Pair* lut = reinterpret_cast<Pair*>(smem);                     // [256][32]
  T* xs = reinterpret_cast<T*>(lut + 256 * 32);                  // [M][x_row_stride]
  float* map = reinterpret_cast<float*>(xs + M * x_row_stride);  // [256], nested only

  const int lane = threadIdx.x & 31;
  for (int i = threadIdx.x; i < 256 * 32; i += blockDim.x) {
    const int byte = i >> 5;
    lut[i] = Traits::make_pair(codes.value[byte >> 4], codes.value[byte & 15]);
  }
  // Stage x: 16-byte loads, all issued before their stores (k % 32 == 0, so
  // 8 consecutive elements map to one 16-byte slot).
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
  if (kNested) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) map[i] = qr::dynamic_map_value(i);
  }
  __syncthreads();

  const int log2_bs = __ffs(a.blocksize) - 1;
  const int chunks = static_cast<int>(a.k >> 5);  // 16-byte chunks per row
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  // Byte offset of lane's copy of the table entry for byte value v:
  // (v << kEntryShift) | lane * sizeof(Pair); one shift and one LOP3 per byte.
  constexpr int kEntryShift = (sizeof(Pair) == 4 ? 2 : 3) + 5;
  const uint32_t lane_offset = static_cast<uint32_t>(lane) * sizeof(Pair);
  const char* lut_bytes = reinterpret_cast<const char*>(lut);
  const uint4* x_lane = reinterpret_cast<const uint4*>(xs) + lane;
  const int x_stride_vec = static_cast<int>(x_row_stride >> 3);  // per batch row, in uint4

  // Absmax of the quantization block holding element `e` of the flat weight.
  auto block_scale_at = [&](int64_t e) -> float {
    const int64_t block = e >> log2_bs;
    if (kNested) {
      return __fadd_rn(__fmul_rn(map[__ldg(a.absmax_codes + block)],
                                 __ldg(a.nested_absmax + block / qr::kNestedBlocksize)),
                       a.nested_offset);
    }
    return __ldg(a.absmax + block);
  };

  // acc[mm] += scale * dot(codes of chunk c, x[mm] elements 32c .. 32c + 31).
  auto accumulate = [&](const uint4& w, float scale, int c, float* acc) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    const int x_base = (c >> 5) * 128;  // iteration it = c / 32 holds 4 * 32 uint4 slots
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      typename Traits::Partial p0 = Traits::zero();
      typename Traits::Partial p1 = Traits::zero();
#pragma unroll
      for (int step = 0; step < 4; ++step) {
        const uint4 xv = x_lane[mm * x_stride_vec + x_base + step * 32];
        const uint32_t word = words[step];
        constexpr uint32_t kMask = 0xffu << kEntryShift;
        const Pair e0 = *reinterpret_cast<const Pair*>(
            lut_bytes + (((word << kEntryShift) & kMask) | lane_offset));
        const Pair e1 = *reinterpret_cast<const Pair*>(
            lut_bytes + ((shift_right(word, 8 - kEntryShift) & kMask) | lane_offset));
        const Pair e2 = *reinterpret_cast<const Pair*>(
            lut_bytes + (((word >> (16 - kEntryShift)) & kMask) | lane_offset));
        const Pair e3 = *reinterpret_cast<const Pair*>(
            lut_bytes + (((word >> (24 - kEntryShift)) & kMask) | lane_offset));
        p0 = Traits::fma(e0, xv.x, p0);
        p1 = Traits::fma(e1, xv.y, p1);
        p0 = Traits::fma(e2, xv.z, p0);
        p1 = Traits::fma(e3, xv.w, p1);
      }
      acc[mm] = fmaf(scale, Traits::total(p0) + Traits::total(p1), acc[mm]);
    }
  };

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
       row < a.n; row += warps_total) {
    const uint8_t* wrow = a.packed + row * (a.k >> 1);
    const int64_t row_base = row * a.k;
    float acc[M];
#pragma unroll
    for (int mm = 0; mm < M; ++mm) acc[mm] = 0.0f;

    int c0 = lane;
    // Full groups: kGemvUnroll loads in flight per lane, no bounds checks.
    for (; c0 + 32 * (kGemvUnroll - 1) < chunks; c0 += 32 * kGemvUnroll) {
      uint4 w[kGemvUnroll];
      float scale[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int c = c0 + u * 32;
        w[u] = load_stream16(wrow + static_cast<int64_t>(c) * 16);
        scale[u] = block_scale_at(row_base + static_cast<int64_t>(c) * 32);
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) accumulate(w[u], scale[u], c0 + u * 32, acc);
    }
    // The rest of the row, one chunk at a time.
    for (int c = c0; c < chunks; c += 32) {
      const uint4 w = load_stream16(wrow + static_cast<int64_t>(c) * 16);
      accumulate(w, block_scale_at(row_base + static_cast<int64_t>(c) * 32), c, acc);
    }
#pragma unroll
    for (int mm = 0; mm < M; ++mm) {
      float v = acc[mm];
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0) {
        if (bias != nullptr) v += load_float(bias, row);
        store_float(y, mm * a.n + row, v);
      }
    }
  }
}

using GemvKernel = void (*)(FourBitGemvArgs, GemvCodes, int64_t);

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

int64_t gemv_x_row_stride(int64_t k) { return (k + 1023) / 1024 * 1024; }

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

template <template <typename> class Launch, typename... Args>
cudaError_t dispatch_float_type(FloatType dtype, Args&&... args) {
  switch (dtype) {
    case FloatType::kF16:
      return Launch<__half>::run(args...);
    case FloatType::kBF16:
      return Launch<__nv_bfloat16>::run(args...);
    case FloatType::kF32:
      return Launch<float>::run(args...);
    default:
      return cudaErrorInvalidValue;
  }
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
  if (args.m < 1 || args.m > 4 || args.k % 32 != 0 || args.k == 0 || args.n == 0) {
    return cudaSuccess;
  }
  if (args.dtype != FloatType::kF16 && args.dtype != FloatType::kBF16) return cudaSuccess;
  if (reinterpret_cast<uintptr_t>(args.packed) % 16 != 0) return cudaSuccess;
  const bool nested = args.absmax == nullptr;
  const bool bf16 = args.dtype == FloatType::kBF16;
  const int pair_bytes = bf16 ? 8 : 4;
  const int64_t smem = int64_t{256} * 32 * pair_bytes + args.m * gemv_x_row_stride(args.k) * 2 +
                       (nested ? 256 * 4 : 0);
  int max_optin = 0;
  cudaError_t status =
      cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) return status;
  if (smem > max_optin) return cudaSuccess;  // x too long for shared memory: not fused
  const int variant = (bf16 ? 8 : 0) + (nested ? 4 : 0) + static_cast<int>(args.m - 1);
  GemvKernel kernel = gemv_kernel(variant);
  status =
      cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (status != cudaSuccess) return status;
  int per_sm = 0;
  status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads,
                                                         static_cast<size_t>(smem));
  if (status != cudaSuccess) return status;
  int sms = 0;
  status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status != cudaSuccess) return status;
  if (per_sm < 1) return cudaSuccess;
  const int64_t warps_needed = args.n;
  const int64_t blocks_needed = (warps_needed + kGemvThreads / 32 - 1) / (kGemvThreads / 32);
  int64_t grid = static_cast<int64_t>(per_sm) * sms;
  if (grid > blocks_needed) grid = blocks_needed;
  plan->variant = variant;
  plan->grid = static_cast<int>(grid);
  plan->block = kGemvThreads;
  plan->smem_bytes = static_cast<int>(smem);
  return cudaSuccess;
}

cudaError_t launch_four_bit_gemv(const FourBitGemvPlan& plan, const FourBitGemvArgs& args,
                                 cudaStream_t stream) {
  if (plan.variant < 0) return cudaErrorInvalidValue;
  GemvCodes codes;
  for (int i = 0; i < 16; ++i) codes.value[i] = qr::four_bit_code_value(args.type, i);
  gemv_kernel(plan.variant)<<<plan.grid, plan.block, plan.smem_bytes, stream>>>(
      args, codes, gemv_x_row_stride(args.k));
  return cudaGetLastError();
}

}  // namespace stowage::kernels::detail
