#include "quant/bnb_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"

namespace stowage::quant {
namespace {

namespace json = boost::json;

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
  const FourBitStateJson js = parse_four_bit_state_json(
      std::string_view(state.data_as<const char>(), state.numel()), state_name);
  const WeightFormat suffix_type = p.state_nf4 ? WeightFormat::kNf4 : WeightFormat::kFp4;
  STOWAGE_EXPECTS(js.quant_type == suffix_type, InvalidInputError,
                  "'{}' says quant_type \"{}\" but its name says {}", state_name,
                  weight_format_name(js.quant_type), weight_format_name(suffix_type));
  const bool nested_tensors = p.nested_absmax.has_value();
  STOWAGE_EXPECTS(js.nested == nested_tensors, InvalidInputError,
                  "4-bit weight '{}': '{}' {} nested_* keys but '{}' is {}", prefix, state_name,
                  js.nested ? "has" : "has no", part_name(prefix, kNestedAbsmaxSuffix),
                  nested_tensors ? "present" : "missing");

  FourBitWeight w;
  w.quant_type = js.quant_type;
  w.blocksize = js.blocksize;
  w.dtype = js.dtype;
  w.shape = js.shape;
  w.packed = *p.weight;  // its dtype is the storage dtype
  w.absmax = *p.absmax;
  w.quant_map = *p.quant_map;
  if (js.nested) {
    w.nested_absmax = *p.nested_absmax;
    w.nested_quant_map = *p.nested_quant_map;
    w.nested_offset = js.nested_offset;
    w.nested_blocksize = js.nested_blocksize;
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

FourBitStateJson parse_four_bit_state_json(std::string_view text, std::string_view name) {
  boost::system::error_code ec;
  json::value root = json::parse(json::string_view(text.data(), text.size()), ec);
  STOWAGE_EXPECTS(!ec, InvalidInputError, "'{}': quant state is not valid JSON ({}): {:.200}", name,
                  ec.message(), text);
  STOWAGE_EXPECTS(root.is_object(), InvalidInputError,
                  "'{}': quant state JSON should be an object, found {:.200}", name, text);
  const json::object& obj = root.as_object();
  static const std::set<std::string> kKnown = {"quant_type",   "blocksize",        "dtype",
                                               "shape",        "nested_blocksize", "nested_dtype",
                                               "nested_offset"};
  for (const auto& kv : obj) {
    STOWAGE_EXPECTS(kKnown.count(std::string(kv.key())) == 1, InvalidInputError,
                    "'{}': unknown quant state key \"{}\"", name, std::string(kv.key()));
  }
  auto need = [&](const char* key) -> const json::value& {
    const json::value* v = obj.if_contains(key);
    STOWAGE_EXPECTS(v != nullptr, InvalidInputError, "'{}': quant state JSON lacks \"{}\"", name,
                    key);
    return *v;
  };
  auto need_string = [&](const char* key) {
    const json::value& v = need(key);
    STOWAGE_EXPECTS(v.is_string(), InvalidInputError, "'{}': \"{}\" should be a string, found {}",
                    name, key, json::serialize(v));
    return std::string(v.as_string());
  };
  auto need_int = [&](const char* key) {
    const json::value& v = need(key);
    STOWAGE_EXPECTS(v.is_int64() || (v.is_uint64() && v.as_uint64() <= INT64_MAX),
                    InvalidInputError, "'{}': \"{}\" should be an integer, found {}", name, key,
                    json::serialize(v));
    return v.is_int64() ? v.as_int64() : static_cast<int64_t>(v.as_uint64());
  };

  FourBitStateJson out;
  const std::string type = need_string("quant_type");
  const auto method = quantized_format_from_name(type);
  STOWAGE_EXPECTS(method && *method != WeightFormat::kInt8, InvalidInputError,
                  "'{}': quant_type should be \"nf4\" or \"fp4\", found \"{}\"", name, type);
  out.quant_type = *method;
  out.blocksize = need_int("blocksize");
  STOWAGE_EXPECTS(is_valid_blocksize(out.blocksize), InvalidInputError,
                  "'{}': blocksize should be a power of two in [{}, {}], found {}", name,
                  kMinBlocksize, kMaxBlocksize, out.blocksize);
  const std::string dtype = need_string("dtype");
  const auto parsed = dtype_from_torch_name(dtype);
  STOWAGE_EXPECTS(
      parsed && (*parsed == DType::kF16 || *parsed == DType::kBF16 || *parsed == DType::kF32),
      InvalidInputError,
      "'{}': dtype should be \"float16\", \"bfloat16\" or \"float32\", found \"{}\"", name, dtype);
  out.dtype = *parsed;
  const json::value& shape = need("shape");
  STOWAGE_EXPECTS(shape.is_array(), InvalidInputError,
                  "'{}': \"shape\" should be a list of extents, found {}", name,
                  json::serialize(shape));
  std::vector<int64_t> dims;
  for (const json::value& d : shape.as_array()) {
    STOWAGE_EXPECTS(d.is_int64() && d.as_int64() >= 0, InvalidInputError,
                    "'{}': \"shape\" should hold non-negative integers, found {}", name,
                    json::serialize(shape));
    dims.push_back(d.as_int64());
  }
  out.shape = Shape(std::move(dims));
  STOWAGE_EXPECTS(out.shape.checked_numel().has_value(), InvalidInputError,
                  "'{}': shape {} overflows", name, out.shape.to_string());

  const int nested_keys = static_cast<int>(obj.contains("nested_blocksize")) +
                          static_cast<int>(obj.contains("nested_dtype")) +
                          static_cast<int>(obj.contains("nested_offset"));
  STOWAGE_EXPECTS(nested_keys == 0 || nested_keys == 3, InvalidInputError,
                  "'{}': expected all of nested_blocksize, nested_dtype and nested_offset or "
                  "none, found {} of them",
                  name, nested_keys);
  if (nested_keys == 3) {
    out.nested = true;
    out.nested_blocksize = need_int("nested_blocksize");
    STOWAGE_EXPECTS(out.nested_blocksize == kNestedBlocksize, InvalidInputError,
                    "'{}': nested_blocksize should be {}, found {}", name, kNestedBlocksize,
                    out.nested_blocksize);
    const std::string nested_dtype = need_string("nested_dtype");
    STOWAGE_EXPECTS(nested_dtype == "float32", InvalidInputError,
                    "'{}': nested_dtype should be \"float32\", found \"{}\"", name, nested_dtype);
    const json::value& offset = need("nested_offset");
    STOWAGE_EXPECTS(offset.is_number(), InvalidInputError,
                    "'{}': nested_offset should be a number, found {}", name,
                    json::serialize(offset));
    const double value = offset.to_number<double>();
    STOWAGE_EXPECTS(std::isfinite(value), InvalidInputError,
                    "'{}': nested_offset should be finite, found {}", name, value);
    out.nested_offset = static_cast<float>(value);
  }
  return out;
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
    info.method = format_of(*weight);
    info.shape = logical_shape(*weight);
    for (const auto& part : parts(*weight)) {
      const std::string full = part_name(prefix, part.suffix);
      if (position.count(full)) info.part_names.push_back(full);  // not a synthesized default
    }
    if (const auto* w = std::get_if<FourBitWeight>(&*weight)) {
      info.blocksize = w->blocksize;
      info.double_quant = w->double_quant();
      info.storage_dtype = w->storage_dtype();
      info.original_dtype = w->dtype;
    } else {
      info.storage_dtype = DType::kI8;
      info.original_dtype = DType::kF16;
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
