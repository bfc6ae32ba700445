// CPU reference quantizers and dequantizers for the bitsandbytes formats.
//
// The arithmetic is quant/quant_rules.h's, shared with the CUDA kernels so
// both produce the same bytes, and matches bitsandbytes (FORMATS.md):
//   * int8 row-wise: the weight is first rounded to float16 (bitsandbytes
//     quantizes Linear8bitLt weights from float16 whatever their dtype),
//     SCB[r] = max |W[r, :]|, CB = rint(W * (127 * (1 / SCB))) in float32,
//     round half to even; a zero row gives SCB 0 and codes 0.
//   * 4-bit: the flattened weight in blocks of `blocksize` (the last block may
//     be shorter); absmax = max |x| of the block, x * (1 / absmax) mapped to
//     an NF4/FP4 code; two codes per byte, the first in the high nibble; an
//     odd count's last low nibble holds the code of 0.
//   * double quantization: offset = mean(absmax); absmax - offset quantized
//     blockwise (256) with the signed dynamic 8-bit map.
//
// Inputs must be host-addressable (host, pinned, disk (mmap'd) or simulated
// accelerator memory); outputs are allocated from `resource`, which must be
// host-addressable too. Non-finite input values are rejected (InvalidInputError
// naming the tensor and the element), since bitsandbytes would silently store
// garbage for them.
//
// Thread safety: the functions are reentrant; they only read their inputs.
// A large tensor (over ~1M elements) is quantized on several threads, split
// by block (int8: by row); the bytes do not depend on the split.
#pragma once

#include <string_view>
#include <vector>

#include "core/memory_resource.h"
#include "core/tensor.h"
#include "quant/quant_state.h"

namespace stowage::quant {

struct FourBitOptions {
  WeightFormat quant_type = WeightFormat::kNf4;  // kNf4 or kFp4
  int64_t blocksize = 64;                        // power of two in [32, 4096]
  bool double_quant = false;
  DType storage = DType::kU8;  // U8, F16, BF16 or F32 (bitsandbytes' quant_storage)
};

// Throws InvalidInputError naming the bad option and the accepted values.
void check_options(const FourBitOptions& options);

// Quantizes a 2-D F16/BF16/F32 weight [out, in] row-wise to int8. `name`
// (the tensor's name) goes into error messages.
Int8Weight quantize_int8_cpu(const Tensor& weight, MemoryResource& resource,
                             std::string_view name = "weight", float threshold = 6.0f);

// Quantizes an F16/BF16/F32 weight of any shape (flattened) to 4-bit.
FourBitWeight quantize_4bit_cpu(const Tensor& weight, const FourBitOptions& options,
                                MemoryResource& resource, std::string_view name = "weight");

// Quantizes `weight` to `target` on the CPU: quantize_int8_cpu for kInt8
// (from float16: the target's dtype must be F16, WeightLayout::int8's default),
// else quantize_4bit_cpu with the target's format, blocksize, double
// quantization and storage (the target's shape and dtype are the weight's).
// The host implementation of the quantizer; kernels::quantize_on_accelerator
// is the accelerator's, with the same bytes.
QuantizedWeight quantize_cpu(const Tensor& weight, const WeightLayout& target,
                             MemoryResource& resource, std::string_view name = "weight");

// Throws InvalidInputError naming the tensor and element unless every value
// of the F16/BF16/F32 tensor is finite (the check the quantizers make; a GPU
// quantizer calls it on the host copy first to behave the same).
void check_finite_cpu(const Tensor& weight, std::string_view name = "weight");

// The nested_offset quantize_4bit_cpu(weight, {blocksize, double_quant})
// records: the mean of the block absmax values (quant/quant_rules.h's
// double_quant_offset), computed without quantizing.
float double_quant_offset_cpu(const Tensor& weight, int64_t blocksize,
                              std::string_view name = "weight");

// Reconstructs the weight in `dtype` (F16, BF16 or F32): int8 as
// CB * (SCB / 127); 4-bit as code[q] * absmax[block] in float32, then rounded
// to `dtype` (round to nearest even). Validates the weight first.
Tensor dequantize_cpu(const Int8Weight& weight, DType dtype, MemoryResource& resource);
Tensor dequantize_cpu(const FourBitWeight& weight, DType dtype, MemoryResource& resource);
Tensor dequantize_cpu(const QuantizedWeight& weight, DType dtype, MemoryResource& resource);

// The float32 absmax of every block, resolving double quantization
// (map[q] * nested_absmax[b / 256] + offset).
std::vector<float> block_absmax_cpu(const FourBitWeight& weight);

// The 4-bit code of element i (flat index) of a packed weight.
int four_bit_code_at(const FourBitWeight& weight, uint64_t i);

}  // namespace stowage::quant
