#include "core/dtype.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace stowage {
namespace {

struct DTypeInfo {
  DType dtype;
  size_t size;
  std::string_view safetensors;
  std::string_view torch;
  std::string_view short_name;
  bool floating;
};

// One table for every per-dtype fact, so a new dtype is one line.
constexpr DTypeInfo kTable[] = {
    {DType::kF32, 4, "F32", "float32", "f32", true},
    {DType::kF16, 2, "F16", "float16", "f16", true},
    {DType::kBF16, 2, "BF16", "bfloat16", "bf16", true},
    {DType::kF64, 8, "F64", "float64", "f64", true},
    {DType::kI8, 1, "I8", "int8", "i8", false},
    {DType::kU8, 1, "U8", "uint8", "u8", false},
    {DType::kI16, 2, "I16", "int16", "i16", false},
    {DType::kU16, 2, "U16", "uint16", "u16", false},
    {DType::kI32, 4, "I32", "int32", "i32", false},
    {DType::kU32, 4, "U32", "uint32", "u32", false},
    {DType::kI64, 8, "I64", "int64", "i64", false},
    {DType::kU64, 8, "U64", "uint64", "u64", false},
    {DType::kBool, 1, "BOOL", "bool", "bool", false},
    {DType::kF8E4M3, 1, "F8_E4M3", "float8_e4m3fn", "f8e4m3", true},
    {DType::kF8E5M2, 1, "F8_E5M2", "float8_e5m2", "f8e5m2", true},
    {DType::kPacked4, 0, "U8", "uint8", "u4x2", false},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kTable) {
    if (entry.dtype == dtype) return entry;
  }
  throw InternalError(fmt::format("unknown DType value {}", static_cast<int>(dtype)));
}

uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}
float bits_float(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }

uint64_t dtype_bytes_for(DType dtype, uint64_t numel) {
  if (dtype == DType::kPacked4) return numel / 2 + numel % 2;
  return numel * info(dtype).size;
}

std::string_view safetensors_name(DType dtype) { return info(dtype).safetensors; }
std::string_view torch_name(DType dtype) { return info(dtype).torch; }
std::string_view short_name(DType dtype) { return info(dtype).short_name; }
bool is_floating_point(DType dtype) { return info(dtype).floating; }

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (const auto& entry : kTable) {
    if (entry.dtype != DType::kPacked4 && entry.safetensors == name) return entry.dtype;
  }
  return std::nullopt;
}

std::optional<DType> dtype_from_torch_name(std::string_view name) {
  if (name.substr(0, 6) == "torch.") name.remove_prefix(6);
  for (const auto& entry : kTable) {
    if (entry.dtype != DType::kPacked4 && entry.torch == name) return entry.dtype;
  }
  if (name == "half") return DType::kF16;
  if (name == "float") return DType::kF32;
  return std::nullopt;
}

uint16_t float_to_half_bits(float value) {
  const uint32_t x = float_bits(value);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    if (abs == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero) in half: value = m * 2^-24, m < 1024.
    // Scale into an integer with the float unit and round to nearest even.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
    const uint32_t exponent = abs >> 23;                        // biased, 102..112
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // bits to drop so that LSB = 2^-24
    const uint32_t kept = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    uint32_t rounded = kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | rounded);
  }
  // Normal: rebias exponent 127 -> 15, round the 13 dropped bits to nearest even.
  uint32_t rebased = abs - 0x38000000u;
  const uint32_t rest = rebased & 0x1fffu;
  uint32_t result = rebased >> 13;
  if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;  // may carry into inf
  return static_cast<uint16_t>(sign | result);
}

float half_bits_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t float_to_bfloat16_bits(float value) {
  uint32_t x = float_bits(value);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return static_cast<uint16_t>(x >> 16);
}

float bfloat16_bits_to_float(uint16_t bits) {
  return bits_float(static_cast<uint32_t>(bits) << 16);
}

float load_as_float(const void* data, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kF16:
      return half_bits_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kBF16:
      return bfloat16_bits_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kF64:
      return static_cast<float>(static_cast<const double*>(data)[i]);
    default:
      break;
  }
  throw InvalidInputError(fmt::format("expected a float dtype (F32, F16, BF16, F64), found {}",
                                      safetensors_name(dtype)));
}

void store_from_float(void* data, DType dtype, size_t i, float value) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(data)[i] = value;
      return;
    case DType::kF16:
      static_cast<uint16_t*>(data)[i] = float_to_half_bits(value);
      return;
    case DType::kBF16:
      static_cast<uint16_t*>(data)[i] = float_to_bfloat16_bits(value);
      return;
    case DType::kF64:
      static_cast<double*>(data)[i] = value;
      return;
    default:
      break;
  }
  throw InvalidInputError(fmt::format("expected a float dtype (F32, F16, BF16, F64), found {}",
                                      safetensors_name(dtype)));
}

}  // namespace stowage
