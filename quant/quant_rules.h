// The exact quantization rules shared by the CPU reference quantizers
// (quant/), the CPU counterparts in kernels/ and the CUDA kernels, so that all
// of them produce the same bytes. Usable from host C++ and from nvcc device
// code; it includes no CUDA header and no fmt.
//
// Every rule reproduces bitsandbytes (csrc/kernels.cu, functional.py; checked
// against the bitsandbytes-foundation/bitsandbytes sources): where FORMATS.md's
// prose ("nearest code") and the upstream kernels differ in a corner (the
// exact decision thresholds, zero blocks, FP4 ties), upstream wins:
//   * NF4: a decision tree on x = value * (1 / absmax) with the thresholds of
//     bitsandbytes' dQuantizeNF4 (the float32 midpoints of adjacent codes);
//     x exactly on a threshold goes to the lower code.
//   * FP4: bitsandbytes' dQuantizeFP4: the sign bit is set for x < 0 (so -0.0
//     maps to code 0), the magnitude goes through a tree whose thresholds are
//     bitsandbytes' literals; a magnitude exactly on a threshold goes to the
//     code of smaller magnitude (for x < 0 that is the higher table index).
//   * A block whose absmax is 0: 1/absmax = inf and x = 0 * inf = NaN, which
//     every comparison rejects, so NF4 stores code 0 (-1.0) and FP4 code 0
//     (0.0), exactly as bitsandbytes does; both dequantize to (-)0.
//   * int8 row-wise (LLM.int8 weights and activations): FORMATS.md's
//     rint(w * (127 * (1 / scb))) in float32, round half to even; scb == 0
//     gives code 0.
//   * Double quantization: see double_quant_offset() and
//     quantize_dynamic_value().
#pragma once

#include <cmath>
#include <cstdint>

#include "quant/weight_format.h"

#if defined(__CUDACC__)
#define STOWAGE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define STOWAGE_HOST_DEVICE inline
#endif

namespace stowage::quant_rules {

// Valid 4-bit blocksizes are the powers of two in [kMinBlocksize, kMaxBlocksize].
constexpr int kMinBlocksize = 32;
constexpr int kMaxBlocksize = 4096;
// Double quantization quantizes the absmax values in blocks of this many.
constexpr int kNestedBlocksize = 256;

constexpr bool is_valid_blocksize(int64_t blocksize) {
  return blocksize >= kMinBlocksize && blocksize <= kMaxBlocksize &&
         (blocksize & (blocksize - 1)) == 0;
}

// The one formula for how many blocks of `blocksize` cover `count` values
// (the last block may be partial): absmax values of a 4-bit weight
// (block_count(numel, blocksize)), nested absmax values of double
// quantization (nested_block_count(blocks)). blocksize > 0.
STOWAGE_HOST_DEVICE constexpr int64_t block_count(int64_t count, int64_t blocksize) {
  return (count + blocksize - 1) / blocksize;
}
STOWAGE_HOST_DEVICE constexpr int64_t nested_block_count(int64_t blocks) {
  return block_count(blocks, kNestedBlocksize);
}
// Bytes of `count` packed 4-bit codes, two per byte (pack_codes).
STOWAGE_HOST_DEVICE constexpr int64_t packed_code_bytes(int64_t count) { return (count + 1) / 2; }

// NF4 code values, index 0..15 (FORMATS.md; bitsandbytes nf4 quant_map).
STOWAGE_HOST_DEVICE float nf4_code_value(int index) {
  switch (index & 15) {
    case 0:
      return -1.0f;
    case 1:
      return -0.6961928009986877f;
    case 2:
      return -0.5250730514526367f;
    case 3:
      return -0.39491748809814453f;
    case 4:
      return -0.28444138169288635f;
    case 5:
      return -0.18477343022823334f;
    case 6:
      return -0.09105003625154495f;
    case 7:
      return 0.0f;
    case 8:
      return 0.07958029955625534f;
    case 9:
      return 0.16093020141124725f;
    case 10:
      return 0.24611230194568634f;
    case 11:
      return 0.33791524171829224f;
    case 12:
      return 0.44070982933044434f;
    case 13:
      return 0.5626170039176941f;
    case 14:
      return 0.7229568362236023f;
    default:
      return 1.0f;
  }
}

// FP4 (e2m1, bias 3, divided by 12) code values, index 0..15, sign in bit 3.
// The magnitudes are bitsandbytes' dequantization literals; code 8 is -0.0.
STOWAGE_HOST_DEVICE float fp4_code_value(int index) {
  float magnitude;
  switch (index & 7) {
    case 0:
      magnitude = 0.0f;
      break;
    case 1:
      magnitude = 0.005208333333f;
      break;
    case 2:
      magnitude = 0.66666667f;
      break;
    case 3:
      magnitude = 1.0f;
      break;
    case 4:
      magnitude = 0.33333333f;
      break;
    case 5:
      magnitude = 0.5f;
      break;
    case 6:
      magnitude = 0.16666667f;
      break;
    default:
      magnitude = 0.25f;
      break;
  }
  return (index & 8) ? -magnitude : magnitude;
}

// `format` is kNf4 or kFp4.
STOWAGE_HOST_DEVICE float four_bit_code_value(quant::WeightFormat format, int index) {
  return format == quant::WeightFormat::kNf4 ? nf4_code_value(index) : fp4_code_value(index);
}

// The NF4 code of x = value * (1 / absmax); bitsandbytes' dQuantizeNF4 tree.
STOWAGE_HOST_DEVICE uint8_t quantize_nf4_value(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
      return x > 0.5016634166240692f ? 13 : 12;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
    return x > 0.1202552504837513f ? 9 : 8;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
    return x > -0.23460740596055984f ? 5 : 4;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
  return x > -0.8480964004993439f ? 1 : 0;
}

// The FP4 code of x = value * (1 / absmax); bitsandbytes' dQuantizeFP4 tree.
STOWAGE_HOST_DEVICE uint8_t quantize_fp4_value(float x) {
  const uint8_t sign = x < 0 ? 8 : 0;
  x = fabsf(x);
  uint8_t code;
  if (x > 0.29166667f) {
    if (x > 0.583333f) {
      code = x > 0.8333333f ? 3 : 2;
    } else {
      code = x > 0.4166667f ? 5 : 4;
    }
  } else if (x > 0.0859375f) {
    code = x > 0.20833333f ? 7 : 6;
  } else {
    code = x > 0.00260417f ? 1 : 0;
  }
  return static_cast<uint8_t>(code + sign);
}

// `format` is kNf4 or kFp4.
STOWAGE_HOST_DEVICE uint8_t quantize_four_bit_value(quant::WeightFormat format, float x) {
  return format == quant::WeightFormat::kNf4 ? quantize_nf4_value(x) : quantize_fp4_value(x);
}

// The float32 scale a block's values are multiplied by: 1 / absmax, taken
// first (inf for absmax 0, see the file comment).
STOWAGE_HOST_DEVICE float block_scale(float absmax) { return 1.0f / absmax; }

// Packs two codes: the first element in the high nibble.
STOWAGE_HOST_DEVICE uint8_t pack_codes(uint8_t first, uint8_t second) {
  return static_cast<uint8_t>((first << 4) | (second & 15));
}

// The code of element i (flat index) in a packed 4-bit buffer.
STOWAGE_HOST_DEVICE int unpack_code(const uint8_t* packed, int64_t i) {
  const uint8_t byte = packed[i >> 1];
  return (i & 1) ? (byte & 15) : (byte >> 4);
}

// LLM.int8 row-wise code: rint(w * (127 * (1 / scb))), all float32, round half
// to even (the default rounding mode); 0 when scb == 0. |w| <= scb is assumed
// (scb is the row's absmax), so the result is in [-127, 127].
STOWAGE_HOST_DEVICE int8_t int8_rowwise_code(float w, float scb) {
  if (scb == 0.0f) return 0;
  const float scale = 127.0f * (1.0f / scb);
  return static_cast<int8_t>(rintf(w * scale));
}

// Dequantized int8 weight: cb * (scb / 127), float32.
STOWAGE_HOST_DEVICE float int8_rowwise_value(int8_t cb, float scb) {
  return static_cast<float>(cb) * (scb * (1.0f / 127.0f));
}

// The signed dynamic 8-bit map of bitsandbytes' create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8): 256 float32 values, ascending, map[127]
// = 0 and map[255] = 1. Written out as exact float32 values because the Python
// generator's results depend on torch.linspace's float32 arithmetic (its
// vectorized CPU path rounds differently from a plain loop); these were
// produced by that generator under torch 2.11 on CPU and checked value for
// value. Every nested_quant_map bitsandbytes writes holds these values.
STOWAGE_HOST_DEVICE float dynamic_map_value(int index) {
  // Stored as the 128 non-negative values; the negative half is their exact
  // negation (the generator multiplies by -(10**e)), without -1.0.
  constexpr float kPositive[128] = {
      0x0.0p+0f,       0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
      0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f, 0x1.19ce0ap-12f,
      0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f, 0x1.78d5p-11f,   0x1.b3d07cp-11f,
      0x1.eecbfep-11f, 0x1.4fdf3ap-10f, 0x1.e353f8p-10f, 0x1.3b645ap-9f,  0x1.851eb8p-9f,
      0x1.ced914p-9f,  0x1.0c49bap-8f,  0x1.3126e8p-8f,  0x1.56041ap-8f,  0x1.7ae148p-8f,
      0x1.9fbe76p-8f,  0x1.c49ba6p-8f,  0x1.e978d4p-8f,  0x1.072b02p-7f,  0x1.19999ap-7f,
      0x1.2c083p-7f,   0x1.3e76c8p-7f,  0x1.75c29p-7f,   0x1.d1eb86p-7f,  0x1.170a3ep-6f,
      0x1.451ebap-6f,  0x1.733334p-6f,  0x1.a147aep-6f,  0x1.cf5c2ap-6f,  0x1.fd70a4p-6f,
      0x1.15c29p-5f,   0x1.2ccccep-5f,  0x1.43d70ap-5f,  0x1.5ae146p-5f,  0x1.71eb86p-5f,
      0x1.88f5c2p-5f,  0x1.ap-5f,       0x1.b70a3ep-5f,  0x1.ce147ap-5f,  0x1.e51ebap-5f,
      0x1.fc28f6p-5f,  0x1.09999ap-4f,  0x1.151ebap-4f,  0x1.20a3d6p-4f,  0x1.2c28f6p-4f,
      0x1.37ae14p-4f,  0x1.433334p-4f,  0x1.4eb854p-4f,  0x1.5a3d7p-4f,   0x1.65c29p-4f,
      0x1.7147aep-4f,  0x1.7ccccep-4f,  0x1.8851eep-4f,  0x1.93d70ap-4f,  0x1.b66668p-4f,
      0x1.fp-4f,       0x1.14ccccp-3f,  0x1.31999ap-3f,  0x1.4e6666p-3f,  0x1.6b3334p-3f,
      0x1.88p-3f,      0x1.a4ccccp-3f,  0x1.c1999ap-3f,  0x1.de6666p-3f,  0x1.fb3332p-3f,
      0x1.0cp-2f,      0x1.1a6668p-2f,  0x1.28ccccp-2f,  0x1.373334p-2f,  0x1.459998p-2f,
      0x1.54p-2f,      0x1.626666p-2f,  0x1.70ccccp-2f,  0x1.7f3334p-2f,  0x1.8d9998p-2f,
      0x1.9cp-2f,      0x1.aa6666p-2f,  0x1.b8ccccp-2f,  0x1.c73334p-2f,  0x1.d59998p-2f,
      0x1.e4p-2f,      0x1.f26664p-2f,  0x1.006666p-1f,  0x1.079998p-1f,  0x1.0eccccp-1f,
      0x1.16p-1f,      0x1.1d3334p-1f,  0x1.246668p-1f,  0x1.2b999ap-1f,  0x1.32ccccp-1f,
      0x1.3ap-1f,      0x1.413334p-1f,  0x1.486668p-1f,  0x1.4f999ap-1f,  0x1.56ccccp-1f,
      0x1.5ep-1f,      0x1.653334p-1f,  0x1.6c6668p-1f,  0x1.73999ap-1f,  0x1.7accccp-1f,
      0x1.82p-1f,      0x1.893334p-1f,  0x1.906666p-1f,  0x1.97999ap-1f,  0x1.9eccccp-1f,
      0x1.a6p-1f,      0x1.ad3334p-1f,  0x1.b46666p-1f,  0x1.bb999ap-1f,  0x1.c2ccccp-1f,
      0x1.cap-1f,      0x1.d13334p-1f,  0x1.d86666p-1f,  0x1.df999ap-1f,  0x1.e6ccccp-1f,
      0x1.eep-1f,      0x1.f53334p-1f,  0x1.fc6666p-1f,
  };
  index &= 255;
  if (index >= 127) return index == 255 ? 1.0f : kPositive[index - 127];
  return -kPositive[127 - index];
}

// bitsandbytes' dQuantize<0> (non-stochastic): a binary search over the
// sorted 256-entry `code` followed by a nearest-neighbour pick whose
// midpoints are computed in float32 ((a + b) * 0.5f); x on a midpoint goes to
// the code nearer zero index-wise exactly as upstream decides. NaN (an all-zero
// nested block) gives 0.
STOWAGE_HOST_DEVICE uint8_t quantize_dynamic_value(const float* code, float x) {
  int pivot = 127;
  int upper_pivot = 255;
  int lower_pivot = 0;
  float lower = -1.0f;
  float upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return static_cast<uint8_t>(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return static_cast<uint8_t>(x < midpoint ? lower_pivot : pivot);
}

// Double quantization's nested_offset: the mean of the absmax values. To be
// identical on every implementation it is defined with a fixed order:
// double-precision sums of each run of kNestedBlocksize consecutive values (in
// index order, starting from 0.0), those partial sums added in order (from
// 0.0), divided by the count in double, then rounded to float32. (bitsandbytes
// takes a float32 torch mean whose reduction order is unspecified; the values
// agree to within float32 rounding.) The CUDA kernel computes the same partial
// sums, one thread per run.
inline float double_quant_offset(const float* absmax, int64_t count) {
  if (count <= 0) return 0.0f;
  double total = 0.0;
  for (int64_t start = 0; start < count; start += kNestedBlocksize) {
    const int64_t end = start + kNestedBlocksize < count ? start + kNestedBlocksize : count;
    double partial = 0.0;
    for (int64_t i = start; i < end; ++i) partial += static_cast<double>(absmax[i]);
    total += partial;
  }
  return static_cast<float>(total / static_cast<double>(count));
}

// Dequantized absmax of block b under double quantization:
// map[q[b]] * nested_absmax[b / 256] + offset, float32, in that order (as
// bitsandbytes: dequantize_blockwise, then += offset).
STOWAGE_HOST_DEVICE float dequantize_nested_absmax(float map_value, float nested_absmax,
                                                   float offset) {
  return map_value * nested_absmax + offset;
}

}  // namespace stowage::quant_rules
