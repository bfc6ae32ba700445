#include "quant/bnb_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"

namespace stowage::quant {
namespace {

std::string join_quoted(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " and " : ", ";
    out += "'" + names[i] + "'";
  }
  return out;
}

std::string describe(const Tensor& t) {
  return fmt::format("{} {}", safetensors_name(t.dtype()), t.shape().to_string());
}

// A 0-d U8 tensor holding 0, owning its own byte (no resource to outlive).
Tensor row_major_weight_format() {
  auto* byte = new uint8_t[1]{0};
  auto buffer = std::make_shared<Buffer>(
      Buffer::adopt(byte, 1, Tier::pageable_host(), [byte] { delete[] byte; }));
  return Tensor::from_storage(std::move(buffer), 0, DType::kU8, Shape{});
}

Int8Weight load_int8(std::string_view prefix, const std::optional<Tensor>& weight,
                     const std::optional<Tensor>& scb, const std::optional<Tensor>& format) {
  const std::string weight_name = part_name(prefix, kWeightSuffix);
  const std::string scb_name = part_name(prefix, kScbSuffix);
  const std::string format_name = part_name(prefix, kWeightFormatSuffix);
  std::vector<std::string> present;
  std::vector<std::string> missing;
  (weight ? present : missing).push_back(weight_name);
  (scb ? present : missing).push_back(scb_name);
  if (format) present.push_back(format_name);
  STOWAGE_EXPECTS(missing.empty(), InvalidInputError,
                  "int8 weight '{}' is incomplete: found {} but {} {} missing", prefix,
                  join_quoted(present), join_quoted(missing), missing.size() == 1 ? "is" : "are");
  STOWAGE_EXPECTS(weight->dtype() == DType::kI8 && weight->shape().rank() == 2, InvalidInputError,
                  "int8 weight '{}': '{}' should be I8 [out, in] (beside '{}'), found {}", prefix,
                  weight_name, scb_name, describe(*weight));
  Int8Weight out;
  out.cb = *weight;
  out.scb = *scb;
  if (format) {
    STOWAGE_EXPECTS(
        format->dtype() == DType::kU8 && format->numel() == 1 && format->shape().rank() <= 1,
        InvalidInputError, "int8 weight '{}': '{}' should be U8 [], found {}", prefix, format_name,
        describe(*format));
    STOWAGE_EXPECTS(host_addressable(format->tier()), InvalidInputError,
                    "int8 weight '{}': '{}' must be host-readable to be checked, it is on {}",
                    prefix, format_name, format->tier().to_string());
    const int value = *format->data_as<const uint8_t>();
    STOWAGE_EXPECTS(value == 0, InvalidInputError,
                    "int8 weight '{}': '{}' is {}; only 0 (row-major) is supported, as in "
                    "bitsandbytes >= 0.45",
                    prefix, format_name, value);
    out.weight_format = format->shape().rank() == 0 ? *format : row_major_weight_format();
  } else {
    out.weight_format = row_major_weight_format();  // bitsandbytes' default: "row"
  }
  validate(out, prefix);
  return out;
}

struct FourBitParts {
  std::optional<Tensor> weight, absmax, quant_map, nested_absmax, nested_quant_map, state_nf4,
      state_fp4;
};

FourBitWeight load_four_bit(std::string_view prefix, const FourBitParts& p) {
  std::vector<std::string> present;
  std::vector<std::string> missing;
  auto note = [&](const std::optional<Tensor>& t, std::string_view suffix) {
    (t ? present : missing).push_back(part_name(prefix, suffix));
  };
  note(p.weight, kWeightSuffix);
  note(p.absmax, kAbsmaxSuffix);
  note(p.quant_map, kQuantMapSuffix);
  if (p.state_nf4 && p.state_fp4) {
    throw InvalidInputError(fmt::format(
        "4-bit weight '{}' has two quant states, '{}' and '{}'; expected exactly one", prefix,
        part_name(prefix, kQuantStateNf4Suffix), part_name(prefix, kQuantStateFp4Suffix)));
  }
  if (p.state_nf4) {
    present.push_back(part_name(prefix, kQuantStateNf4Suffix));
  } else if (p.state_fp4) {
    present.push_back(part_name(prefix, kQuantStateFp4Suffix));
  } else {
    missing.push_back(part_name(prefix, kQuantStateNf4Suffix) + " (or __fp4)");
  }
  if (p.nested_absmax || p.nested_quant_map) {
    note(p.nested_absmax, kNestedAbsmaxSuffix);
    note(p.nested_quant_map, kNestedQuantMapSuffix);
  }
  STOWAGE_EXPECTS(missing.empty(), InvalidInputError,
                  "4-bit weight '{}' is incomplete: found {} but {} {} missing", prefix,
                  join_quoted(present), join_quoted(missing), missing.size() == 1 ? "is" : "are");

  const Tensor& state = p.state_nf4 ? *p.state_nf4 : *p.state_fp4;
  const std::string state_name =
      part_name(prefix, p.state_nf4 ? kQuantStateNf4Suffix : kQuantStateFp4Suffix);
  STOWAGE_EXPECTS(state.dtype() == DType::kU8 && state.shape().rank() == 1, InvalidInputError,
                  "'{}' should be U8 [len] (UTF-8 JSON), found {}", state_name, describe(state));
  STOWAGE_EXPECTS(host_addressable(state.tier()), InvalidInputError,
                  "'{}' must be host-readable to be parsed, it is on {}", state_name,
                  state.tier().to_string());
  const ParsedQuantState js = parse_quant_state_json(
      std::string_view(state.data_as<const char>(), state.numel()), state_name);
  const WeightFormat suffix_type = p.state_nf4 ? WeightFormat::kNf4 : WeightFormat::kFp4;
  STOWAGE_EXPECTS(js.layout.format == suffix_type, InvalidInputError,
                  "'{}' says quant_type \"{}\" but its name says {}", state_name,
                  weight_format_name(js.layout.format), weight_format_name(suffix_type));
  const bool nested_tensors = p.nested_absmax.has_value();
  STOWAGE_EXPECTS(js.layout.double_quant == nested_tensors, InvalidInputError,
                  "4-bit weight '{}': '{}' {} nested_* keys but '{}' is {}", prefix, state_name,
                  js.layout.double_quant ? "has" : "has no", part_name(prefix, kNestedAbsmaxSuffix),
                  nested_tensors ? "present" : "missing");

  FourBitWeight w;
  w.quant_type = js.layout.format;
  w.blocksize = js.layout.blocksize;
  w.dtype = js.layout.dtype;
  w.shape = js.layout.shape;
  w.packed = *p.weight;  // its dtype is the storage dtype
  w.absmax = *p.absmax;
  w.quant_map = *p.quant_map;
  if (js.layout.double_quant) {
    w.nested_absmax = *p.nested_absmax;
    w.nested_quant_map = *p.nested_quant_map;
    w.nested_offset = js.nested_offset;
  }
  w.quant_state = state;
  validate(w, prefix);
  return w;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The layer prefix of a state-part name ("a.b.weight.absmax" -> "a.b"), or
// nullopt when `name` is no state part.
std::optional<std::string> state_prefix(std::string_view name) {
  static constexpr std::string_view kSuffixes[] = {
      kQuantStateNf4Suffix, kQuantStateFp4Suffix, kNestedQuantMapSuffix,
      kNestedAbsmaxSuffix,  kQuantMapSuffix,      kAbsmaxSuffix,
      kScbSuffix,           kWeightFormatSuffix};
  for (std::string_view suffix : kSuffixes) {
    if (name == suffix) return std::string();
    if (name.size() > suffix.size() && ends_with(name, suffix) &&
        name[name.size() - suffix.size() - 1] == '.') {
      return std::string(name.substr(0, name.size() - suffix.size() - 1));
    }
  }
  return std::nullopt;
}

}  // namespace

std::string part_name(std::string_view prefix, std::string_view suffix) {
  if (prefix.empty()) return std::string(suffix);
  return fmt::format("{}.{}", prefix, suffix);
}

std::vector<std::pair<std::string, Tensor>> to_state_dict(std::string_view prefix,
                                                          const QuantizedWeight& weight) {
  std::visit([&](const auto& w) { validate(w, prefix); }, weight);
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& part : parts(weight)) {
    out.emplace_back(part_name(prefix, part.suffix), std::move(part.tensor));
  }
  return out;
}

std::optional<QuantizedWeight> load_quantized_weight(std::string_view prefix,
                                                     const TensorLookup& lookup) {
  auto get = [&](std::string_view suffix) { return lookup(part_name(prefix, suffix)); };
  FourBitParts four;
  four.weight = get(kWeightSuffix);
  four.absmax = get(kAbsmaxSuffix);
  four.quant_map = get(kQuantMapSuffix);
  four.nested_absmax = get(kNestedAbsmaxSuffix);
  four.nested_quant_map = get(kNestedQuantMapSuffix);
  four.state_nf4 = get(kQuantStateNf4Suffix);
  four.state_fp4 = get(kQuantStateFp4Suffix);
  const std::optional<Tensor> scb = get(kScbSuffix);
  const std::optional<Tensor> format = get(kWeightFormatSuffix);
  const bool any_four = four.absmax || four.quant_map || four.nested_absmax ||
                        four.nested_quant_map || four.state_nf4 || four.state_fp4;
  const bool any_int8 = scb || format;
  if (!any_four && !any_int8) return std::nullopt;
  STOWAGE_EXPECTS(!(any_four && any_int8), InvalidInputError,
                  "layer '{}' holds both int8 state ('{}') and 4-bit state ('{}'); expected one",
                  prefix, part_name(prefix, scb ? kScbSuffix : kWeightFormatSuffix),
                  part_name(prefix, kAbsmaxSuffix));
  if (any_int8) return QuantizedWeight(load_int8(prefix, four.weight, scb, format));
  return QuantizedWeight(load_four_bit(prefix, four));
}

std::vector<QuantizedWeightInfo> detect_quantized_weights(const std::vector<std::string>& names,
                                                          const TensorLookup& lookup) {
  std::vector<std::string> prefixes;
  std::set<std::string> seen;
  for (const std::string& name : names) {
    if (auto prefix = state_prefix(name); prefix && seen.insert(*prefix).second) {
      prefixes.push_back(*prefix);
    }
  }
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < names.size(); ++i) position.emplace(names[i], i);

  std::vector<QuantizedWeightInfo> out;
  for (const std::string& prefix : prefixes) {
    std::optional<QuantizedWeight> weight = load_quantized_weight(prefix, lookup);
    if (!weight) continue;
    QuantizedWeightInfo info;
    info.prefix = prefix;
    info.weight_name = part_name(prefix, kWeightSuffix);
    info.layout = std::visit([](const auto& w) { return w.layout(); }, *weight);
    for (const auto& part : parts(*weight)) {
      const std::string full = part_name(prefix, part.suffix);
      if (position.count(full)) info.part_names.push_back(full);  // not a synthesized default
    }
    out.push_back(std::move(info));
  }
  std::stable_sort(out.begin(), out.end(), [&](const auto& a, const auto& b) {
    auto pa = position.find(a.weight_name);
    auto pb = position.find(b.weight_name);
    return (pa == position.end() ? SIZE_MAX : pa->second) <
           (pb == position.end() ? SIZE_MAX : pb->second);
  });
  return out;
}

}  // namespace stowage::quant
