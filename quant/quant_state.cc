#include "quant/quant_state.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

#include "core/error.h"

namespace stowage::quant {

std::optional<WeightFormat> quantized_format_from_name(std::string_view name) {
  if (name == "int8") return WeightFormat::kInt8;
  if (name == "nf4") return WeightFormat::kNf4;
  if (name == "fp4") return WeightFormat::kFp4;
  return std::nullopt;
}

bool is_valid_blocksize(int64_t blocksize) {
  return blocksize >= kMinBlocksize && blocksize <= kMaxBlocksize &&
         (blocksize & (blocksize - 1)) == 0;
}

std::vector<QuantPart> Int8Weight::parts() const {
  return {{std::string(kWeightSuffix), cb},
          {std::string(kScbSuffix), scb},
          {std::string(kWeightFormatSuffix), weight_format}};
}

uint64_t FourBitWeight::blocks() const {
  const uint64_t n = numel();
  return blocksize > 0 ? (n + static_cast<uint64_t>(blocksize) - 1) / blocksize : 0;
}

std::string_view FourBitWeight::quant_state_suffix() const {
  return quant_type == WeightFormat::kFp4 ? kQuantStateFp4Suffix : kQuantStateNf4Suffix;
}

std::vector<QuantPart> FourBitWeight::parts() const {
  std::vector<QuantPart> out;
  out.push_back({std::string(kWeightSuffix), packed});
  out.push_back({std::string(kAbsmaxSuffix), absmax});
  out.push_back({std::string(kQuantMapSuffix), quant_map});
  if (double_quant()) {
    out.push_back({std::string(kNestedAbsmaxSuffix), nested_absmax});
    out.push_back({std::string(kNestedQuantMapSuffix), nested_quant_map});
  }
  out.push_back({std::string(quant_state_suffix()), quant_state});
  return out;
}

WeightFormat format_of(const QuantizedWeight& weight) {
  if (const auto* w = std::get_if<FourBitWeight>(&weight)) return w->quant_type;
  return WeightFormat::kInt8;
}

const Shape& logical_shape(const QuantizedWeight& weight) {
  if (const auto* w = std::get_if<FourBitWeight>(&weight)) return w->shape;
  return std::get<Int8Weight>(weight).shape();
}

std::vector<QuantPart> parts(const QuantizedWeight& weight) {
  return std::visit([](const auto& w) { return w.parts(); }, weight);
}

uint64_t total_bytes(const QuantizedWeight& weight) {
  uint64_t total = 0;
  for (const auto& part : parts(weight)) {
    if (part.tensor.defined()) total += part.tensor.bytes();
  }
  return total;
}

namespace {

Tensor* find_part(Int8Weight& w, std::string_view suffix) {
  if (suffix == kWeightSuffix) return &w.cb;
  if (suffix == kScbSuffix) return &w.scb;
  if (suffix == kWeightFormatSuffix) return &w.weight_format;
  return nullptr;
}

Tensor* find_part(FourBitWeight& w, std::string_view suffix) {
  if (suffix == kWeightSuffix) return &w.packed;
  if (suffix == kAbsmaxSuffix) return &w.absmax;
  if (suffix == kQuantMapSuffix) return &w.quant_map;
  if (suffix == w.quant_state_suffix()) return &w.quant_state;
  if (w.double_quant()) {
    if (suffix == kNestedAbsmaxSuffix) return &w.nested_absmax;
    if (suffix == kNestedQuantMapSuffix) return &w.nested_quant_map;
  }
  return nullptr;
}

std::string describe(const Tensor& t) {
  if (!t.defined()) return "nothing";
  return fmt::format("{} {}", safetensors_name(t.dtype()), t.shape().to_string());
}

// Throws unless `t` is defined with exactly `dtype` and `shape`.
void expect_tensor(const Tensor& t, std::string_view name, std::string_view suffix, DType dtype,
                   const Shape& shape) {
  STOWAGE_EXPECTS(t.defined() && t.dtype() == dtype && t.shape() == shape, InvalidInputError,
                  "quantized weight '{}': tensor '{}' should be {} {}, found {}", name, suffix,
                  safetensors_name(dtype), shape.to_string(), describe(t));
}

}  // namespace

void replace_part(QuantizedWeight& weight, std::string_view suffix, Tensor tensor) {
  Tensor* slot = std::visit([&](auto& w) { return find_part(w, suffix); }, weight);
  STOWAGE_EXPECTS(slot != nullptr, InvalidInputError, "a {} weight has no part named '{}'",
                  weight_format_name(format_of(weight)), suffix);
  STOWAGE_EXPECTS(
      tensor.defined() && tensor.dtype() == slot->dtype() && tensor.shape() == slot->shape(),
      InvalidInputError,
      "replacing part '{}' of a {} weight: expected {}, found {} (a move copies "
      "bytes unchanged)",
      suffix, weight_format_name(format_of(weight)), describe(*slot), describe(tensor));
  *slot = std::move(tensor);
}

void validate(const Int8Weight& w, std::string_view name) {
  STOWAGE_EXPECTS(
      w.cb.defined() && w.cb.dtype() == DType::kI8 && w.cb.shape().rank() == 2, InvalidInputError,
      "int8 weight '{}': tensor 'weight' should be I8 [out, in], found {}", name, describe(w.cb));
  expect_tensor(w.scb, name, kScbSuffix, DType::kF32, Shape{w.cb.shape()[0]});
  expect_tensor(w.weight_format, name, kWeightFormatSuffix, DType::kU8, Shape{});
}

void validate(const FourBitWeight& w, std::string_view name) {
  STOWAGE_EXPECTS(w.quant_type == WeightFormat::kNf4 || w.quant_type == WeightFormat::kFp4,
                  InvalidInputError, "4-bit weight '{}': quant_type should be nf4 or fp4, found {}",
                  name, weight_format_name(w.quant_type));
  STOWAGE_EXPECTS(is_valid_blocksize(w.blocksize), InvalidInputError,
                  "4-bit weight '{}': blocksize should be a power of two in [{}, {}], found {}",
                  name, kMinBlocksize, kMaxBlocksize, w.blocksize);
  STOWAGE_EXPECTS(
      w.dtype == DType::kF16 || w.dtype == DType::kBF16 || w.dtype == DType::kF32,
      InvalidInputError,
      "4-bit weight '{}': original dtype should be float16, bfloat16 or float32, found {}", name,
      torch_name(w.dtype));
  STOWAGE_EXPECTS(w.shape.checked_numel().has_value(), InvalidInputError,
                  "4-bit weight '{}': invalid shape {}", name, w.shape.to_string());
  STOWAGE_EXPECTS(w.packed.defined() && is_valid_storage_dtype(w.packed.dtype()), InvalidInputError,
                  "4-bit weight '{}': tensor 'weight' should have storage dtype U8, F16, BF16 or "
                  "F32, found {}",
                  name, describe(w.packed));
  const Shape expected_packed = packed_shape(w.numel(), w.packed.dtype());
  STOWAGE_EXPECTS(
      w.packed.shape() == expected_packed || w.packed.shape() == Shape{expected_packed[0]},
      InvalidInputError,
      "4-bit weight '{}': tensor 'weight' should be {} {} for {} elements of shape {}, "
      "found {}",
      name, safetensors_name(w.packed.dtype()), expected_packed.to_string(), w.numel(),
      w.shape.to_string(), describe(w.packed));
  const int64_t blocks = static_cast<int64_t>(w.blocks());
  expect_tensor(w.absmax, name, kAbsmaxSuffix, w.double_quant() ? DType::kU8 : DType::kF32,
                Shape{blocks});
  expect_tensor(w.quant_map, name, kQuantMapSuffix, DType::kF32, Shape{16});
  if (w.double_quant()) {
    STOWAGE_EXPECTS(w.nested_blocksize == kNestedBlocksize, InvalidInputError,
                    "4-bit weight '{}': nested_blocksize should be {}, found {}", name,
                    kNestedBlocksize, w.nested_blocksize);
    expect_tensor(w.nested_absmax, name, kNestedAbsmaxSuffix, DType::kF32,
                  Shape{(blocks + kNestedBlocksize - 1) / kNestedBlocksize});
    expect_tensor(w.nested_quant_map, name, kNestedQuantMapSuffix, DType::kF32, Shape{256});
    STOWAGE_EXPECTS(std::isfinite(w.nested_offset), InvalidInputError,
                    "4-bit weight '{}': nested_offset should be finite, found {}", name,
                    w.nested_offset);
  }
  STOWAGE_EXPECTS(w.quant_state.defined() && w.quant_state.dtype() == DType::kU8 &&
                      w.quant_state.shape().rank() == 1,
                  InvalidInputError, "4-bit weight '{}': tensor '{}' should be U8 [len], found {}",
                  name, w.quant_state_suffix(), describe(w.quant_state));
}

bool is_valid_storage_dtype(DType dtype) {
  return dtype == DType::kU8 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF32;
}

Shape packed_shape(uint64_t numel, DType storage) {
  STOWAGE_EXPECTS(is_valid_storage_dtype(storage), InvalidInputError,
                  "4-bit storage dtype should be U8, F16, BF16 or F32, found {}",
                  safetensors_name(storage));
  const uint64_t packed_bytes = (numel + 1) / 2;
  const uint64_t item = dtype_size(storage);
  return Shape{static_cast<int64_t>((packed_bytes + item - 1) / item), 1};
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "NaN";  // json.dumps spelling
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";
  // Shortest round-trip digits in scientific form: "d.ddde[+-]X".
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  if (res.ec != std::errc()) throw InternalError("to_chars failed for a double");
  std::string sci(buf, res.ptr);
  const bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const size_t epos = sci.find('e');
  const int exponent = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (size_t i = 0; i < epos; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
  } else if (exponent < 0) {
    out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else {
    const size_t int_digits = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= int_digits) {
      out = digits + std::string(int_digits - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, int_digits) + "." + digits.substr(int_digits);
    }
  }
  return negative ? "-" + out : out;
}

std::string four_bit_state_json(WeightFormat quant_type, int64_t blocksize, DType dtype,
                                const Shape& shape, std::optional<float> nested_offset) {
  std::string dims = "[";
  for (size_t i = 0; i < shape.rank(); ++i) {
    if (i > 0) dims += ", ";
    dims += std::to_string(shape[i]);
  }
  dims += "]";
  std::string json =
      fmt::format(R"({{"quant_type": "{}", "blocksize": {}, "dtype": "{}", "shape": {})",
                  weight_format_name(quant_type), blocksize, torch_name(dtype), dims);
  if (nested_offset) {
    json +=
        fmt::format(R"(, "nested_blocksize": {}, "nested_dtype": "float32", "nested_offset": {})",
                    kNestedBlocksize, python_float_repr(static_cast<double>(*nested_offset)));
  }
  json += "}";
  return json;
}

std::string four_bit_state_json(const FourBitWeight& w) {
  return four_bit_state_json(
      w.quant_type, w.blocksize, w.dtype, w.shape,
      w.double_quant() ? std::optional<float>(w.nested_offset) : std::nullopt);
}

Tensor make_state_tensor(const std::string& json, MemoryResource& resource) {
  Tensor t = Tensor::empty(resource, DType::kU8, Shape{static_cast<int64_t>(json.size())});
  if (!json.empty()) std::memcpy(t.data(), json.data(), json.size());
  return t;
}

float stored_quant_map_value(WeightFormat quant_type, int index) {
  // float32 values of bitsandbytes' get_4bit_type (checked against
  // bitsandbytes 0.50.2: nf4 is its table, fp4 is [0, 0.0625, 8, 12, 4, 6, 2,
  // 3, -0 (an integer zero in Python, hence +0.0), ...] / 12 in float32).
  static constexpr float kNf4[16] = {
      -1.0f,           -0x1.647362p-1f, -0x1.0cd66p-1f,  -0x1.94654p-2f,
      -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0.0f,
      0x1.45f5fep-4f,  0x1.4995c6p-3f,  0x1.f809bap-3f,  0x1.5a0674p-2f,
      0x1.c3497p-2f,   0x1.200f56p-1f,  0x1.722766p-1f,  1.0f};
  static constexpr float kFp4[16] = {0.0f,
                                     0x1.555556p-8f,
                                     0x1.555556p-1f,
                                     1.0f,
                                     0x1.555556p-2f,
                                     0.5f,
                                     0x1.555556p-3f,
                                     0.25f,
                                     0.0f,
                                     -0x1.555556p-8f,
                                     -0x1.555556p-1f,
                                     -1.0f,
                                     -0x1.555556p-2f,
                                     -0.5f,
                                     -0x1.555556p-3f,
                                     -0.25f};
  STOWAGE_EXPECTS(index >= 0 && index < 16, InternalError, "quant_map index {} out of [0, 16)",
                  index);
  return quant_type == WeightFormat::kFp4 ? kFp4[index] : kNf4[index];
}

bool host_addressable(Tier tier) {
  if (tier.is_host() || tier.kind() == TierKind::kDisk) return true;
  return tier.is_accelerator() && tier.backend() == Backend::kSim;
}

}  // namespace stowage::quant
