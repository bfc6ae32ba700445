// Element types, their sizes and safetensors names, and exact host
// conversions between float32 and the 16-bit float formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace stowage {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF64,
  kI8,
  kU8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kBool,
  kF8E4M3,
  kF8E5M2,
  // Two 4-bit codes per byte, the first element in the high nibble (the
  // bitsandbytes NF4/FP4 packing). Its byte size is (numel + 1) / 2.
  kPacked4,
};

// Bytes per element; 0 for kPacked4 (use dtype_bytes_for()).
size_t dtype_size(DType dtype);

// Bytes holding `numel` elements (rounds up for kPacked4).
uint64_t dtype_bytes_for(DType dtype, uint64_t numel);

// The safetensors spelling ("F32", "BF16", ...); kPacked4 is stored as "U8".
std::string_view safetensors_name(DType dtype);

// Parses a safetensors dtype name; nullopt for names this build does not know.
std::optional<DType> dtype_from_safetensors_name(std::string_view name);

// The PyTorch spelling used in bitsandbytes' quant state JSON and in
// accelerate's offload index ("float16", "bfloat16", "int8", ...).
std::string_view torch_name(DType dtype);
std::optional<DType> dtype_from_torch_name(std::string_view name);

// A short readable name ("f16", "bf16", "u4x2", ...).
std::string_view short_name(DType dtype);

bool is_floating_point(DType dtype);

// IEEE binary16 and bfloat16 conversions. To 16 bits: round to nearest, ties
// to even; NaN stays NaN (quiet), infinities and subnormals are exact.
uint16_t float_to_half_bits(float value);
float half_bits_to_float(uint16_t bits);
uint16_t float_to_bfloat16_bits(float value);
float bfloat16_bits_to_float(uint16_t bits);

// Reads element i of a float-typed buffer (F32, F16, BF16, F64) as float.
float load_as_float(const void* data, DType dtype, size_t i);
// Writes value into element i of a float-typed buffer, rounding as above.
void store_from_float(void* data, DType dtype, size_t i, float value);

}  // namespace stowage
