// Quantize / dequantize kernels. Each applies the rules of
// quant/quant_rules.h element by element, in the same float32 operations as
// the host loops, so the bytes are identical to the CPU reference. Explicit
// __fmul_rn / __fadd_rn keep nvcc from fusing a multiply and an add into an
// FMA where the host computes two roundings.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_helpers.h"
#include "kernels/cuda/float_dispatch.h"
#include "kernels/detail/launch.h"
#include "quant/quant_rules.h"

namespace stowage::kernels::detail {
namespace {

namespace qr = ::stowage::quant_rules;

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Max over a block of blockDim.x threads (a multiple of 32, <= 1024).
__device__ float block_max(float v, float* scratch /* 32 floats */) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_max(v);
}

// ---- 4-bit ----

// One warp per quantization block. absmax = max |x| (NaN ignored, from 0);
// codes of x * (1 / absmax); elements past numel count as 0.0 (as
// bitsandbytes pads its loads), which matters only for an odd numel's last
// low nibble.
template <typename T>
__global__ void quantize_4bit_kernel(const T* __restrict__ input, int64_t numel, int blocksize,
                                     quant::WeightFormat type, uint8_t* __restrict__ packed,
                                     float* __restrict__ absmax) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const int64_t blocks = qr::block_count(numel, blocksize);
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
       b < blocks; b += warps_total) {
    const int64_t start = b * blocksize;
    const int64_t end = start + blocksize < numel ? start + blocksize : numel;
    float m = 0.0f;
    for (int64_t i = start + lane; i < end; i += 32) m = fmaxf(m, fabsf(load_float(input, i)));
    m = warp_max(m);
    if (lane == 0) absmax[b] = m;
    const float scale = qr::block_scale(m);
    const int64_t bytes_end = (end + 1) / 2;
    for (int64_t byte = start / 2 + lane; byte < bytes_end; byte += 32) {
      const int64_t e0 = byte * 2;
      const float v0 = load_float(input, e0);
      const float v1 = e0 + 1 < numel ? load_float(input, e0 + 1) : 0.0f;
      packed[byte] = qr::pack_codes(qr::quantize_four_bit_value(type, v0 * scale),
                                    qr::quantize_four_bit_value(type, v1 * scale));
    }
  }
}

// The common case, blocksize 32..256 with numel % 8 == 0 and aligned
// arrays: each thread takes 8 consecutive elements (16-byte loads), the
// blocksize / 8 adjacent lanes of a quantization block meet in xor-shuffles
// for its absmax, and each thread stores its 4 packed bytes at once. The
// same float32 operations as quantize_4bit_kernel, so the same bytes; lanes
// past numel hold zeros, as that kernel's padding.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float* v) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = load_float(e, i);
}
template <>
__device__ __forceinline__ void load8(const float* p, float* v) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

template <typename T>
__global__ void quantize_4bit_vec8_kernel(const T* __restrict__ input, int64_t numel, int blocksize,
                                          quant::WeightFormat type, uint8_t* __restrict__ packed,
                                          float* __restrict__ absmax) {
  const int64_t groups = numel >> 3;
  const int lanes_per_block = blocksize >> 3;  // 4..32, a power of two
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < groups;
       base += stride) {  // uniform per thread block: every lane reaches the shuffles
    const int64_t g = base + threadIdx.x;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (g < groups) load8(input + g * 8, v);
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) m = fmaxf(m, fabsf(v[i]));
    for (int offset = lanes_per_block >> 1; offset > 0; offset >>= 1) {
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    }
    if (g >= groups) continue;
    if ((threadIdx.x & (lanes_per_block - 1)) == 0) absmax[g * 8 / blocksize] = m;
    const float scale = qr::block_scale(m);
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint8_t byte = qr::pack_codes(qr::quantize_four_bit_value(type, v[2 * i] * scale),
                                          qr::quantize_four_bit_value(type, v[2 * i + 1] * scale));
      word |= static_cast<uint32_t>(byte) << (8 * i);
    }
    *reinterpret_cast<uint32_t*>(packed + g * 4) = word;
  }
}

// One thread per packed byte; codes from shared memory.
template <typename T>
__global__ void dequantize_4bit_kernel(const uint8_t* __restrict__ packed,
                                       const float* __restrict__ absmax, int64_t numel,
                                       int log2_blocksize, quant::WeightFormat type,
                                       T* __restrict__ output) {
  __shared__ float codes[16];
  if (threadIdx.x < 16) codes[threadIdx.x] = qr::four_bit_code_value(type, threadIdx.x);
  __syncthreads();
  const int64_t bytes = (numel + 1) / 2;
  for (int64_t byte = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; byte < bytes;
       byte += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint8_t q = packed[byte];
    const int64_t e0 = byte * 2;
    const float a = absmax[e0 >> log2_blocksize];  // e0 and e0 + 1 share a block
    store_float(output, e0, codes[q >> 4] * a);
    if (e0 + 1 < numel) store_float(output, e0 + 1, codes[q & 15] * a);
  }
}

// ---- double quantization ----

// partials[r] = sum in double, in index order, of absmax[256 r .. 256 r + 255].
__global__ void absmax_partial_sums_kernel(const float* __restrict__ absmax, int64_t count,
                                           double* __restrict__ partials) {
  const int64_t runs = qr::nested_block_count(count);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < runs;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t start = r * qr::kNestedBlocksize;
    const int64_t end = start + qr::kNestedBlocksize < count ? start + qr::kNestedBlocksize : count;
    double sum = 0.0;
    for (int64_t i = start; i < end; ++i) sum = __dadd_rn(sum, static_cast<double>(absmax[i]));
    partials[r] = sum;
  }
}

// One thread: the partial sums in order, the mean as float32.
__global__ void absmax_mean_kernel(const double* __restrict__ partials, int64_t count,
                                   float* __restrict__ offset) {
  const int64_t runs = qr::nested_block_count(count);
  double total = 0.0;
  for (int64_t r = 0; r < runs; ++r) total = __dadd_rn(total, partials[r]);
  *offset = count > 0 ? static_cast<float>(__ddiv_rn(total, static_cast<double>(count))) : 0.0f;
}

// One block of 256 threads per nested block: v = absmax - offset, nested
// absmax = max |v|, code = quantize_dynamic_value(map, v * (1 / nested)).
__global__ void nested_quantize_kernel(const float* __restrict__ absmax, int64_t count,
                                       const float* __restrict__ offset_ptr,
                                       uint8_t* __restrict__ codes,
                                       float* __restrict__ nested_absmax) {
  __shared__ float map[256];
  __shared__ float scratch[32];
  map[threadIdx.x] = qr::dynamic_map_value(threadIdx.x);
  const float offset = *offset_ptr;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * qr::kNestedBlocksize + threadIdx.x;
  const float v = i < count ? __fsub_rn(absmax[i], offset) : 0.0f;
  const float m = block_max(fabsf(v), scratch);  // also orders the map writes
  if (threadIdx.x == 0) nested_absmax[blockIdx.x] = m;
  if (i < count) codes[i] = qr::quantize_dynamic_value(map, v * qr::block_scale(m));
}

__global__ void dequantize_absmax_kernel(const uint8_t* __restrict__ codes,
                                         const float* __restrict__ nested_absmax, float offset,
                                         int64_t count, float* __restrict__ absmax) {
  __shared__ float map[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) map[i] = qr::dynamic_map_value(i);
  __syncthreads();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float nested = nested_absmax[i / qr::kNestedBlocksize];
    absmax[i] = __fadd_rn(__fmul_rn(map[codes[i]], nested), offset);
  }
}

// ---- int8 row-wise ----

// One block per row (grid-stride over rows).
template <typename T>
__global__ void quantize_int8_rowwise_kernel(const T* __restrict__ input, int64_t rows,
                                             int64_t cols, const int* __restrict__ col_flags,
                                             int8_t* __restrict__ cb, float* __restrict__ scb) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = input + r * cols;
    float m = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      if (col_flags == nullptr || col_flags[c] == 0) m = fmaxf(m, fabsf(load_float(row, c)));
    }
    m = block_max(m, scratch);
    if (threadIdx.x == 0) scb[r] = m;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const bool outlier = col_flags != nullptr && col_flags[c] != 0;
      cb[r * cols + c] = outlier ? int8_t{0} : qr::int8_rowwise_code(load_float(row, c), m);
    }
  }
}

// The same with 16-byte loads (cols a multiple of the vector width, input
// 16-byte aligned): identical results, fewer and wider memory operations.
template <typename T>
__global__ void quantize_int8_rowwise_vec_kernel(const T* __restrict__ input, int64_t rows,
                                                 int64_t cols, const int* __restrict__ col_flags,
                                                 int8_t* __restrict__ cb, float* __restrict__ scb) {
  constexpr int V = 16 / sizeof(T);
  __shared__ float scratch[32];
  const int64_t vecs = cols / V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const uint4* row = reinterpret_cast<const uint4*>(input + r * cols);
    float m = 0.0f;
    for (int64_t v = threadIdx.x; v < vecs; v += blockDim.x) {
      const uint4 raw = row[v];
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        if (col_flags == nullptr || col_flags[v * V + q] == 0)
          m = fmaxf(m, fabsf(load_float(e, q)));
      }
    }
    m = block_max(m, scratch);
    if (threadIdx.x == 0) scb[r] = m;
    for (int64_t v = threadIdx.x; v < vecs; v += blockDim.x) {
      const uint4 raw = row[v];
      const T* e = reinterpret_cast<const T*>(&raw);
      int8_t out[V];
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const bool outlier = col_flags != nullptr && col_flags[v * V + q] != 0;
        out[q] = outlier ? int8_t{0} : qr::int8_rowwise_code(load_float(e, q), m);
      }
      int8_t* dst = cb + r * cols + v * V;
      if (V == 8) {
        *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(out);
      } else {
        *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(out);
      }
    }
  }
}

template <typename T>
__global__ void dequantize_int8_rowwise_kernel(const int8_t* __restrict__ cb,
                                               const float* __restrict__ scb, int64_t rows,
                                               int64_t cols, T* __restrict__ output) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float s = scb[r];
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      store_float(output, r * cols + c, qr::int8_rowwise_value(cb[r * cols + c], s));
    }
  }
}

template <typename T>
struct Quantize4bitLaunch {
  static cudaError_t run(const void* input, int64_t numel, int blocksize, quant::WeightFormat type,
                         uint8_t* packed, float* absmax, cudaStream_t stream) {
    const bool vec8 = blocksize >= 32 && blocksize <= 256 && numel % 8 == 0 &&
                      reinterpret_cast<uintptr_t>(input) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(packed) % 4 == 0;
    if (vec8) {
      quantize_4bit_vec8_kernel<T><<<grid_for(numel / 8, 256, 65536), 256, 0, stream>>>(
          static_cast<const T*>(input), numel, blocksize, type, packed, absmax);
      return cudaGetLastError();
    }
    const int64_t blocks = qr::block_count(numel, blocksize);
    quantize_4bit_kernel<T><<<grid_for(blocks, 8), 256, 0, stream>>>(
        static_cast<const T*>(input), numel, blocksize, type, packed, absmax);
    return cudaGetLastError();
  }
};

template <typename T>
struct Dequantize4bitLaunch {
  static cudaError_t run(const uint8_t* packed, const float* absmax, int64_t numel,
                         int log2_blocksize, quant::WeightFormat type, void* output,
                         cudaStream_t stream) {
    dequantize_4bit_kernel<T><<<grid_for((numel + 1) / 2, 256), 256, 0, stream>>>(
        packed, absmax, numel, log2_blocksize, type, static_cast<T*>(output));
    return cudaGetLastError();
  }
};

template <typename T>
struct QuantizeInt8Launch {
  static cudaError_t run(const void* input, int64_t rows, int64_t cols, const int* col_flags,
                         int8_t* cb, float* scb, cudaStream_t stream) {
    constexpr int V = 16 / sizeof(T);
    const bool vec = cols % V == 0 && (reinterpret_cast<uintptr_t>(input) & 15) == 0 &&
                     (reinterpret_cast<uintptr_t>(cb) & 7) == 0;
    if (vec) {
      quantize_int8_rowwise_vec_kernel<T><<<grid_for(rows, 1), 256, 0, stream>>>(
          static_cast<const T*>(input), rows, cols, col_flags, cb, scb);
    } else {
      quantize_int8_rowwise_kernel<T><<<grid_for(rows, 1), 256, 0, stream>>>(
          static_cast<const T*>(input), rows, cols, col_flags, cb, scb);
    }
    return cudaGetLastError();
  }
};

template <typename T>
struct DequantizeInt8Launch {
  static cudaError_t run(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                         void* output, cudaStream_t stream) {
    const dim3 grid(grid_for(cols, 256, 1024), row_blocks(rows, grid_for(cols, 256, 1024)));
    dequantize_int8_rowwise_kernel<T>
        <<<grid, 256, 0, stream>>>(cb, scb, rows, cols, static_cast<T*>(output));
    return cudaGetLastError();
  }
};

int log2_of(int power_of_two) {
  int l = 0;
  while ((1 << l) < power_of_two) ++l;
  return l;
}

}  // namespace

cudaError_t launch_quantize_4bit(const void* input, FloatType dtype, int64_t numel, int blocksize,
                                 quant::WeightFormat type, uint8_t* packed, float* absmax,
                                 cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  return dispatch_float_type<Quantize4bitLaunch>(dtype, input, numel, blocksize, type, packed,
                                                 absmax, stream);
}

cudaError_t launch_dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel,
                                   int blocksize, quant::WeightFormat type, void* output,
                                   FloatType out_dtype, cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  return dispatch_float_type<Dequantize4bitLaunch>(out_dtype, packed, absmax, numel,
                                                   log2_of(blocksize), type, output, stream);
}

cudaError_t launch_double_quantize(const float* absmax, int64_t count, double* partials,
                                   float* offset, uint8_t* codes, float* nested_absmax,
                                   cudaStream_t stream) {
  if (count == 0) return cudaMemsetAsync(offset, 0, sizeof(float), stream);
  const int64_t runs = qr::nested_block_count(count);
  absmax_partial_sums_kernel<<<grid_for(runs, 128), 128, 0, stream>>>(absmax, count, partials);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  absmax_mean_kernel<<<1, 1, 0, stream>>>(partials, count, offset);
  status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  nested_quantize_kernel<<<static_cast<unsigned>(runs), qr::kNestedBlocksize, 0, stream>>>(
      absmax, count, offset, codes, nested_absmax);
  return cudaGetLastError();
}

cudaError_t launch_dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                                     int64_t count, float* absmax, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  dequantize_absmax_kernel<<<grid_for(count, 256), 256, 0, stream>>>(codes, nested_absmax, offset,
                                                                     count, absmax);
  return cudaGetLastError();
}

cudaError_t launch_quantize_int8_rowwise(const void* input, FloatType dtype, int64_t rows,
                                         int64_t cols, int8_t* cb, float* scb,
                                         cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return dispatch_float_type<QuantizeInt8Launch>(dtype, input, rows, cols,
                                                 static_cast<const int*>(nullptr), cb, scb, stream);
}

cudaError_t launch_quantize_activations(const void* x, FloatType dtype, int64_t m, int64_t k,
                                        const int* col_flags, int8_t* xq, float* sca,
                                        cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  return dispatch_float_type<QuantizeInt8Launch>(dtype, x, m, k, col_flags, xq, sca, stream);
}

cudaError_t launch_dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows,
                                           int64_t cols, void* output, FloatType out_dtype,
                                           cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  return dispatch_float_type<DequantizeInt8Launch>(out_dtype, cb, scb, rows, cols, output, stream);
}

}  // namespace stowage::kernels::detail
