// The formats a linear weight is stored in: the one enumeration the
// quantizers, the state-dict reader and writer, the model families, the
// accelerator kernels and the host kernels share. Usable from host C++ and
// from nvcc device code (no CUDA header, no library beyond <cstdint>).
#pragma once

#include <cstdint>

namespace stowage::quant {

// kFloat: F32, F16 or BF16 values as they are (the storage dtype says which).
// kInt8: LLM.int8 row-wise codes with a float32 scale per row (bitsandbytes
// Linear8bitLt). kNf4, kFp4: bitsandbytes' blockwise 4-bit codes, two per
// byte, a float32 absmax per block or, with double quantization, 8-bit
// absmax codes with a nested state (FORMATS.md).
enum class WeightFormat : uint8_t { kFloat, kInt8, kNf4, kFp4 };

// "float", "int8", "nf4", "fp4" (the spelling of the CLI's --method, of the
// 4-bit JSON's quant_type and of the quant-state part's name).
constexpr const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kFloat:
      return "float";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kNf4:
      return "nf4";
    case WeightFormat::kFp4:
      return "fp4";
  }
  return "?";
}

constexpr bool is_four_bit(WeightFormat format) {
  return format == WeightFormat::kNf4 || format == WeightFormat::kFp4;
}

}  // namespace stowage::quant
