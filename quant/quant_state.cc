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

std::vector<QuantPart> Int8Weight::parts() const {
  return {{std::string(kWeightSuffix), cb},
          {std::string(kScbSuffix), scb},
          {std::string(kWeightFormatSuffix), weight_format}};
}

WeightLayout FourBitWeight::layout() const {
  return WeightLayout::four_bit(quant_type, shape, dtype, blocksize, double_quant(),
                                packed.defined() ? packed.dtype() : DType::kU8);
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
  out.push_back({std::string(layout().quant_state_suffix()), quant_state});
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
  if (suffix == w.layout().quant_state_suffix()) return &w.quant_state;
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

namespace {

// The parts of `parts` as WeightLayout::validate_parts looks them up.
WeightLayout::PartLookup lookup_in(const std::vector<QuantPart>& parts) {
  return [&parts](std::string_view suffix) -> std::optional<std::pair<DType, Shape>> {
    for (const QuantPart& part : parts) {
      if (part.suffix == suffix && part.tensor.defined()) {
        return std::make_pair(part.tensor.dtype(), part.tensor.shape());
      }
    }
    return std::nullopt;
  };
}

}  // namespace

void validate(const Int8Weight& w, std::string_view name) {
  STOWAGE_EXPECTS(
      w.cb.defined() && w.cb.dtype() == DType::kI8 && w.cb.shape().rank() == 2, InvalidInputError,
      "int8 weight '{}': tensor 'weight' should be I8 [out, in], found {}", name, describe(w.cb));
  w.layout().validate_parts(lookup_in(w.parts()), name);
}

void validate(const FourBitWeight& w, std::string_view name) {
  STOWAGE_EXPECTS(is_four_bit(w.quant_type), InvalidInputError,
                  "4-bit weight '{}': quant_type should be nf4 or fp4, found {}", name,
                  weight_format_name(w.quant_type));
  STOWAGE_EXPECTS(w.packed.defined(), InvalidInputError,
                  "4-bit weight '{}': tensor 'weight' is missing", name);
  if (w.double_quant()) {
    STOWAGE_EXPECTS(w.nested_blocksize == kNestedBlocksize, InvalidInputError,
                    "4-bit weight '{}': nested_blocksize should be {}, found {}", name,
                    kNestedBlocksize, w.nested_blocksize);
    STOWAGE_EXPECTS(std::isfinite(w.nested_offset), InvalidInputError,
                    "4-bit weight '{}': nested_offset should be finite, found {}", name,
                    w.nested_offset);
  }
  w.layout().validate_parts(lookup_in(w.parts()), name);
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
