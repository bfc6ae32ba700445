#include "quant/weight_layout.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <numeric>
#include <set>
#include <system_error>

#include "core/error.h"

namespace stowage::quant {
namespace {

namespace json = boost::json;

std::string describe(const std::optional<std::pair<DType, Shape>>& found) {
  if (!found) return "nothing";
  return fmt::format("{} {}", safetensors_name(found->first), found->second.to_string());
}

}  // namespace

bool is_valid_storage_dtype(DType dtype) {
  return dtype == DType::kU8 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF32;
}

Shape packed_shape(uint64_t numel, DType storage) {
  STOWAGE_EXPECTS(is_valid_storage_dtype(storage), InvalidInputError,
                  "4-bit storage dtype should be U8, F16, BF16 or F32, found {}",
                  safetensors_name(storage));
  const int64_t bytes = packed_code_bytes(static_cast<int64_t>(numel));
  return Shape{block_count(bytes, static_cast<int64_t>(dtype_size(storage))), 1};
}

uint64_t PartLayout::bytes() const { return dtype_bytes_for(dtype, shape.numel()); }

WeightLayout WeightLayout::float_weight(DType dtype, Shape shape) {
  WeightLayout l;
  l.shape = std::move(shape);
  l.dtype = dtype;
  l.storage = dtype;
  return l;
}

WeightLayout WeightLayout::int8(Shape shape, DType from) {
  WeightLayout l;
  l.format = WeightFormat::kInt8;
  l.shape = std::move(shape);
  l.dtype = from;
  l.storage = DType::kI8;
  return l;
}

WeightLayout WeightLayout::four_bit(WeightFormat format, Shape shape, DType dtype,
                                    int64_t blocksize, bool double_quant, DType storage) {
  WeightLayout l;
  l.format = format;
  l.shape = std::move(shape);
  l.dtype = dtype;
  l.storage = storage;
  l.blocksize = blocksize;
  l.double_quant = double_quant;
  return l;
}

uint64_t WeightLayout::blocks() const {
  if (!is_four_bit(format) || blocksize <= 0) return 0;
  return static_cast<uint64_t>(block_count(static_cast<int64_t>(numel()), blocksize));
}

uint64_t WeightLayout::nested_blocks() const {
  if (!double_quant) return 0;
  return static_cast<uint64_t>(nested_block_count(static_cast<int64_t>(blocks())));
}

std::string_view WeightLayout::quant_state_suffix() const {
  if (format == WeightFormat::kNf4) return kQuantStateNf4Suffix;
  if (format == WeightFormat::kFp4) return kQuantStateFp4Suffix;
  return {};
}

std::vector<PartLayout> WeightLayout::parts(uint64_t state_json_bytes) const {
  switch (format) {
    case WeightFormat::kFloat:
      return {{kWeightSuffix, dtype, shape}};
    case WeightFormat::kInt8:
      return {{kWeightSuffix, DType::kI8, shape},
              {kScbSuffix, DType::kF32, Shape{shape.rank() > 0 ? shape[0] : 0}},
              {kWeightFormatSuffix, DType::kU8, Shape{}}};
    case WeightFormat::kNf4:
    case WeightFormat::kFp4:
      break;
  }
  const int64_t absmax_count = static_cast<int64_t>(blocks());
  std::vector<PartLayout> out = {
      {kWeightSuffix, storage, packed_shape(numel(), storage)},
      {kAbsmaxSuffix, double_quant ? DType::kU8 : DType::kF32, Shape{absmax_count}},
      {kQuantMapSuffix, DType::kF32, Shape{16}}};
  if (double_quant) {
    out.push_back({kNestedAbsmaxSuffix, DType::kF32, Shape{static_cast<int64_t>(nested_blocks())}});
    out.push_back({kNestedQuantMapSuffix, DType::kF32, Shape{256}});
  }
  out.push_back({quant_state_suffix(), DType::kU8, Shape{static_cast<int64_t>(state_json_bytes)}});
  return out;
}

uint64_t WeightLayout::total_bytes(uint64_t state_json_bytes) const {
  uint64_t total = 0;
  for (const PartLayout& part : parts(state_json_bytes)) total += part.bytes();
  return total;
}

int64_t WeightLayout::row_alignment() const {
  if (!is_four_bit(format)) return 1;
  const int64_t in = shape.rank() == 2 ? shape[1] : 0;
  const int64_t unit = blocksize * (double_quant ? static_cast<int64_t>(kNestedBlocksize) : 1);
  if (in <= 0 || unit <= 0) return 1;
  return unit / std::gcd(unit, in);  // the least r with r * in a multiple of unit
}

std::optional<std::vector<PartRange>> WeightLayout::row_ranges(int64_t first,
                                                               int64_t count) const {
  STOWAGE_EXPECTS(shape.rank() == 2, InvalidInputError,
                  "row ranges: expected a weight [out, in], found shape {}", shape.to_string());
  const int64_t out = shape[0], in = shape[1];
  STOWAGE_EXPECTS(first >= 0 && count >= 0 && first + count <= out, InvalidInputError,
                  "row ranges: rows [{}, {}) are not within the weight's {} rows", first,
                  first + count, out);
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  switch (format) {
    case WeightFormat::kFloat: {
      const uint64_t row = u(in) * dtype_size(dtype);
      return std::vector<PartRange>{{kWeightSuffix, u(first) * row, u(count) * row}};
    }
    case WeightFormat::kInt8:
      return std::vector<PartRange>{{kWeightSuffix, u(first * in), u(count * in)},
                                    {kScbSuffix, u(first) * 4, u(count) * 4}};
    case WeightFormat::kNf4:
    case WeightFormat::kFp4:
      break;
  }
  const int64_t align = row_alignment();
  const int64_t end = first + count;
  if (first % align != 0 || (end != out && end % align != 0)) return std::nullopt;
  const int64_t begin_element = first * in, end_element = end * in;
  const int64_t begin_block = begin_element / blocksize;
  const int64_t end_block = block_count(end_element, blocksize);
  const int64_t absmax_size = double_quant ? 1 : 4;
  std::vector<PartRange> ranges = {
      {kWeightSuffix, u(begin_element / 2), u(packed_code_bytes(end_element) - begin_element / 2)},
      {kAbsmaxSuffix, u(begin_block * absmax_size), u((end_block - begin_block) * absmax_size)}};
  if (double_quant) {
    const int64_t begin_nested = begin_block / kNestedBlocksize;
    const int64_t end_nested = nested_block_count(end_block);
    ranges.push_back({kNestedAbsmaxSuffix, u(begin_nested * 4), u((end_nested - begin_nested) * 4)});
  }
  return ranges;
}

std::string WeightLayout::state_json(float nested_offset) const {
  STOWAGE_EXPECTS(is_four_bit(format), InternalError,
                  "a quant-state JSON describes a 4-bit weight, not {}",
                  weight_format_name(format));
  std::string dims = "[";
  for (size_t i = 0; i < shape.rank(); ++i) {
    if (i > 0) dims += ", ";
    dims += std::to_string(shape[i]);
  }
  dims += "]";
  std::string out =
      fmt::format(R"({{"quant_type": "{}", "blocksize": {}, "dtype": "{}", "shape": {})",
                  weight_format_name(format), blocksize, torch_name(dtype), dims);
  if (double_quant) {
    out +=
        fmt::format(R"(, "nested_blocksize": {}, "nested_dtype": "float32", "nested_offset": {})",
                    kNestedBlocksize, python_float_repr(static_cast<double>(nested_offset)));
  }
  out += "}";
  return out;
}

void WeightLayout::validate(std::string_view name) const {
  STOWAGE_EXPECTS(shape.checked_numel().has_value(), InvalidInputError,
                  "weight '{}': invalid shape {}", name, shape.to_string());
  if (!is_four_bit(format)) return;
  STOWAGE_EXPECTS(is_valid_blocksize(blocksize), InvalidInputError,
                  "4-bit weight '{}': blocksize should be a power of two in [{}, {}], found {}",
                  name, kMinBlocksize, kMaxBlocksize, blocksize);
  STOWAGE_EXPECTS(
      dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kF32, InvalidInputError,
      "4-bit weight '{}': original dtype should be float16, bfloat16 or float32, found {}", name,
      torch_name(dtype));
  STOWAGE_EXPECTS(is_valid_storage_dtype(storage), InvalidInputError,
                  "4-bit weight '{}': tensor 'weight' should have storage dtype U8, F16, BF16 or "
                  "F32, found {}",
                  name, safetensors_name(storage));
}

void WeightLayout::validate_parts(const PartLookup& lookup, std::string_view name) const {
  validate(name);
  for (const PartLayout& part : parts()) {
    const auto found = lookup(part.suffix);
    bool ok = found && found->first == part.dtype;
    if (ok && part.suffix == quant_state_suffix()) {
      ok = found->second.rank() == 1;  // any length: the JSON
    } else if (ok) {
      ok = found->second == part.shape || (is_four_bit(format) && part.suffix == kWeightSuffix &&
                                           found->second == Shape{part.shape[0]});
    }
    STOWAGE_EXPECTS(
        ok, InvalidInputError, "quantized weight '{}': tensor '{}' should be {} {}, found {}", name,
        part.suffix, safetensors_name(part.dtype),
        part.suffix == quant_state_suffix() ? "[len]" : part.shape.to_string(), describe(found));
  }
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

ParsedQuantState parse_quant_state_json(std::string_view text, std::string_view name) {
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

  ParsedQuantState out;
  WeightLayout& layout = out.layout;
  layout.storage = DType::kU8;
  const std::string type = need_string("quant_type");
  STOWAGE_EXPECTS(type == "nf4" || type == "fp4", InvalidInputError,
                  "'{}': quant_type should be \"nf4\" or \"fp4\", found \"{}\"", name, type);
  layout.format = type == "nf4" ? WeightFormat::kNf4 : WeightFormat::kFp4;
  layout.blocksize = need_int("blocksize");
  STOWAGE_EXPECTS(is_valid_blocksize(layout.blocksize), InvalidInputError,
                  "'{}': blocksize should be a power of two in [{}, {}], found {}", name,
                  kMinBlocksize, kMaxBlocksize, layout.blocksize);
  const std::string dtype = need_string("dtype");
  const auto parsed = dtype_from_torch_name(dtype);
  STOWAGE_EXPECTS(
      parsed && (*parsed == DType::kF16 || *parsed == DType::kBF16 || *parsed == DType::kF32),
      InvalidInputError,
      "'{}': dtype should be \"float16\", \"bfloat16\" or \"float32\", found \"{}\"", name, dtype);
  layout.dtype = *parsed;
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
  layout.shape = Shape(std::move(dims));
  STOWAGE_EXPECTS(layout.shape.checked_numel().has_value(), InvalidInputError,
                  "'{}': shape {} overflows", name, layout.shape.to_string());

  const int nested_keys = static_cast<int>(obj.contains("nested_blocksize")) +
                          static_cast<int>(obj.contains("nested_dtype")) +
                          static_cast<int>(obj.contains("nested_offset"));
  STOWAGE_EXPECTS(nested_keys == 0 || nested_keys == 3, InvalidInputError,
                  "'{}': expected all of nested_blocksize, nested_dtype and nested_offset or "
                  "none, found {} of them",
                  name, nested_keys);
  if (nested_keys == 3) {
    layout.double_quant = true;
    const int64_t nested_blocksize = need_int("nested_blocksize");
    STOWAGE_EXPECTS(nested_blocksize == kNestedBlocksize, InvalidInputError,
                    "'{}': nested_blocksize should be {}, found {}", name, kNestedBlocksize,
                    nested_blocksize);
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

}  // namespace stowage::quant
