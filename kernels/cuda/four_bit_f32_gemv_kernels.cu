// The 4-bit matmul of nf4_matmul.h at small batch with float32 activations:
// one warp per output row, as dense_gemv (dense_gemv_kernels.cu). Each lane
// reads 16-byte chunks of the row's packed codes (32 weights of one
// quantization block: k % 32 == 0 and blocksize % 32 == 0), scales each code
// by its block's absmax (decoded from the double-quantized state where there
// is one, as dequantize_absmax does), and multiplies with float32 x read
// through the read-only cache. No scratch memory, so it runs inside a
// captured graph. The code tables come in as a parameter (four_bit_tables.h)
// and are copied to shared memory: built per block from quant_rules'
// constants they were a per-thread local-memory array, which made the
// double-quantized GEMV about ten times slower than the weight bytes allow
// (0.37 ms for a Mixtral expert's 90 MB on the H100, session 13).
#include <cuda_runtime_api.h>

#include "kernels/cuda/device_helpers.h"
#include "kernels/cuda/four_bit_tables.h"
#include "kernels/detail/launch.h"

namespace stowage::kernels::detail {
namespace {

namespace qr = quant_rules;

constexpr int kWarps = 8;   // output rows per block
constexpr int kUnroll = 2;  // 16-byte chunks in flight per lane

template <int M>
__global__ void __launch_bounds__(kWarps * 32)
    four_bit_f32_gemv_kernel(FourBitGemvArgs a, const __grid_constant__ GemvTables tables) {
  __shared__ float code[16];
  __shared__ float dynamic_map[256];
  const int tid = threadIdx.x;
  if (tid < 16) code[tid] = tables.value[tid];
  if (a.absmax == nullptr) {
    for (int i = tid; i < 256; i += kWarps * 32) dynamic_map[i] = tables.nested_map[i];
  }
  __syncthreads();
  // blocksize is a power of two (quant_rules): the block of an element by a shift.
  const int block_shift = __ffs(a.blocksize) - 1;
  const int warp = tid / 32, lane = tid % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= a.n) return;
  const int64_t k = a.k;
  const uint8_t* packed_row = a.packed + row * (k / 2);
  const int64_t chunks = k / 32;
  const float* x = static_cast<const float*>(a.x);
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 v[kUnroll];
    float scale[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * 32;
      v[u] = make_uint4(0, 0, 0, 0);
      scale[u] = 0.0f;
      if (c < chunks) {
        v[u] = load_stream16(packed_row + c * 16);
        const int64_t block = (row * k + c * 32) >> block_shift;
        scale[u] = a.absmax != nullptr
                       ? a.absmax[block]
                       : __fadd_rn(__fmul_rn(dynamic_map[a.absmax_codes[block]],
                                             a.nested_absmax[block / qr::kNestedBlocksize]),
                                   a.nested_offset);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * 32;
      if (c >= chunks) break;
      // Byte b of the chunk is byte b % 4 of word b / 4 (little-endian),
      // taken by shifts so the chunk stays in registers.
      const uint32_t words[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
      float w[32];
#pragma unroll
      for (int b = 0; b < 16; ++b) {
        const uint32_t byte = (words[b / 4] >> (8 * (b % 4))) & 0xFFu;
        w[2 * b] = __fmul_rn(code[byte >> 4], scale[u]);
        w[2 * b + 1] = __fmul_rn(code[byte & 15], scale[u]);
      }
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const float4* xp = reinterpret_cast<const float4*>(x + r * k + c * 32);
        float s = 0.0f;
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const float4 xv = __ldg(xp + q);
          s = fmaf(xv.x, w[4 * q], s);
          s = fmaf(xv.y, w[4 * q + 1], s);
          s = fmaf(xv.z, w[4 * q + 2], s);
          s = fmaf(xv.w, w[4 * q + 3], s);
        }
        acc[r] += s;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  }
  if (lane != 0) return;
  const float b = a.bias != nullptr ? static_cast<const float*>(a.bias)[row] : 0.0f;
  float* y = static_cast<float*>(a.y);
#pragma unroll
  for (int r = 0; r < M; ++r) y[r * a.n + row] = acc[r] + b;
}

template <int M>
cudaError_t launch_rows(const FourBitGemvArgs& a, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((a.n + kWarps - 1) / kWarps);
  four_bit_f32_gemv_kernel<M><<<blocks, kWarps * 32, 0, stream>>>(a, gemv_tables(a.type));
  return cudaGetLastError();
}

}  // namespace

bool four_bit_f32_gemv_applies(const FourBitGemvArgs& a) {
  return a.dtype == FloatType::kF32 && a.m >= 1 && a.m <= kFourBitF32GemvMaxRows &&
         a.k % 32 == 0 && a.blocksize % 32 == 0 && reinterpret_cast<uintptr_t>(a.packed) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
}

cudaError_t launch_four_bit_f32_gemv(const FourBitGemvArgs& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  switch (a.m) {
    case 1: return launch_rows<1>(a, stream);
    case 2: return launch_rows<2>(a, stream);
    case 3: return launch_rows<3>(a, stream);
    case 4: return launch_rows<4>(a, stream);
    case 5: return launch_rows<5>(a, stream);
    case 6: return launch_rows<6>(a, stream);
    case 7: return launch_rows<7>(a, stream);
    case 8: return launch_rows<8>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace stowage::kernels::detail
