#include "models/linear_spec.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <optional>

#include "core/error.h"
#include "quant/bnb_format.h"

namespace stowage::models {
namespace {

constexpr const char* kQuantStatePrefix = "weight.quant_state.bitsandbytes__";

const TensorMeta* find(const std::map<std::string, const TensorMeta*>& tensors,
                       const std::string& local) {
  auto it = tensors.find(local);
  return it == tensors.end() ? nullptr : it->second;
}

void expect_shape(const TensorMeta& t, DType dtype, const Shape& shape, const std::string& source) {
  STOWAGE_EXPECTS(t.dtype == dtype && t.shape == shape, InvalidInputError,
                  "{}: tensor '{}': expected {} {}, found {} {}", source, t.name,
                  safetensors_name(dtype), shape.to_string(), safetensors_name(t.dtype),
                  t.shape.to_string());
}

}  // namespace

LinearShape LinearSpec::shape() const {
  return LinearShape{format,   out_features, in_features,  weight_dtype,
                     has_bias, blocksize,    double_quant, threshold};
}

LinearSpec describe_linear(
    const std::map<std::string, const TensorMeta*>& tensors, const std::string& name,
    const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
    const std::string& source, std::set<std::string>* used) {
  LinearSpec spec;
  const TensorMeta* weight = find(tensors, "weight");
  STOWAGE_EXPECTS(weight != nullptr, InvalidInputError, "{}: missing tensor '{}.weight'", source,
                  name);
  spec.weight_dtype = weight->dtype;
  used->insert({"weight", "bias"});

  const TensorMeta* state = nullptr;
  for (const char* kind : {"nf4", "fp4"}) {
    if (const TensorMeta* s = find(tensors, std::string(kQuantStatePrefix) + kind)) {
      STOWAGE_EXPECTS(state == nullptr, InvalidInputError,
                      "{}: module '{}' has both an nf4 and an fp4 quant state", source, name);
      state = s;
      spec.format =
          std::string(kind) == "nf4" ? quant::WeightFormat::kNf4 : quant::WeightFormat::kFp4;
    }
  }
  if (state != nullptr) {
    used->insert(std::string(kQuantStatePrefix) +
                 (spec.format == quant::WeightFormat::kNf4 ? "nf4" : "fp4"));
    std::vector<uint8_t> bytes = read_bytes(state->name);
    boost::json::error_code ec;
    boost::json::value json = boost::json::parse(
        std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), ec);
    STOWAGE_EXPECTS(!ec && json.is_object(), InvalidInputError,
                    "{}: tensor '{}': expected the bitsandbytes quant-state JSON object, found "
                    "{} bytes that do not parse ({})",
                    source, state->name, bytes.size(), ec ? ec.message() : "not an object");
    const auto& obj = json.as_object();
    auto get_int = [&](const char* key, bool required, int64_t fallback) -> int64_t {
      const boost::json::value* v = obj.if_contains(key);
      if (v == nullptr) {
        STOWAGE_EXPECTS(!required, InvalidInputError, "{}: tensor '{}': quant state lacks '{}'",
                        source, state->name, key);
        return fallback;
      }
      STOWAGE_EXPECTS(v->is_int64() || v->is_uint64(), InvalidInputError,
                      "{}: tensor '{}': quant state '{}' should be an integer", source, state->name,
                      key);
      return v->is_int64() ? v->as_int64() : static_cast<int64_t>(v->as_uint64());
    };
    spec.blocksize = get_int("blocksize", true, 64);
    STOWAGE_EXPECTS(spec.blocksize > 0, InvalidInputError,
                    "{}: tensor '{}': blocksize {} is not positive", source, state->name,
                    spec.blocksize);
    const boost::json::value* shape = obj.if_contains("shape");
    STOWAGE_EXPECTS(shape != nullptr && shape->is_array() && shape->as_array().size() == 2 &&
                        shape->as_array()[0].is_number() && shape->as_array()[1].is_number(),
                    InvalidInputError,
                    "{}: tensor '{}': expected quant state 'shape' [out, in], found {}", source,
                    state->name, shape ? boost::json::serialize(*shape) : "nothing");
    spec.out_features = shape->as_array()[0].to_number<int64_t>();
    spec.in_features = shape->as_array()[1].to_number<int64_t>();
    if (const boost::json::value* off = obj.if_contains("nested_offset")) {
      STOWAGE_EXPECTS(off->is_number(), InvalidInputError,
                      "{}: tensor '{}': nested_offset should be a number", source, state->name);
      spec.double_quant = true;
      spec.nested_offset = static_cast<float>(off->to_number<double>());
      spec.nested_blocksize = get_int("nested_blocksize", false, 256);
    }
    STOWAGE_EXPECTS(spec.out_features > 0 && spec.in_features > 0, InvalidInputError,
                    "{}: tensor '{}': quant state shape [{}, {}] is empty", source, state->name,
                    spec.out_features, spec.in_features);
    const uint64_t n = static_cast<uint64_t>(spec.out_features) * spec.in_features;
    STOWAGE_EXPECTS(weight->dtype != DType::kI8 && dtype_size(weight->dtype) > 0, InvalidInputError,
                    "{}: tensor '{}': unexpected 4-bit storage dtype {}", source, weight->name,
                    safetensors_name(weight->dtype));
    const auto weight_bytes = weight->shape.checked_numel();
    STOWAGE_EXPECTS(weight_bytes && *weight_bytes * dtype_size(weight->dtype) >= (n + 1) / 2,
                    InvalidInputError,
                    "{}: tensor '{}': expected packed 4-bit codes for {} elements ({} bytes), "
                    "found {} {}",
                    source, weight->name, n, (n + 1) / 2, safetensors_name(weight->dtype),
                    weight->shape.to_string());
    const uint64_t blocks = (n + spec.blocksize - 1) / spec.blocksize;
    const TensorMeta* absmax = find(tensors, "weight.absmax");
    STOWAGE_EXPECTS(absmax != nullptr, InvalidInputError, "{}: missing tensor '{}.weight.absmax'",
                    source, name);
    expect_shape(*absmax, spec.double_quant ? DType::kU8 : DType::kF32,
                 Shape{static_cast<int64_t>(blocks)}, source);
    const TensorMeta* qmap = find(tensors, "weight.quant_map");
    STOWAGE_EXPECTS(qmap != nullptr, InvalidInputError, "{}: missing tensor '{}.weight.quant_map'",
                    source, name);
    expect_shape(*qmap, DType::kF32, Shape{16}, source);
    used->insert({"weight.absmax", "weight.quant_map"});
    if (spec.double_quant) {
      STOWAGE_EXPECTS(spec.nested_blocksize > 0, InvalidInputError,
                      "{}: tensor '{}': nested_blocksize {} is not positive", source, state->name,
                      spec.nested_blocksize);
      const TensorMeta* na = find(tensors, "weight.nested_absmax");
      const TensorMeta* nm = find(tensors, "weight.nested_quant_map");
      STOWAGE_EXPECTS(na != nullptr && nm != nullptr, InvalidInputError,
                      "{}: module '{}' is double-quantized but lacks "
                      "weight.nested_absmax or weight.nested_quant_map",
                      source, name);
      expect_shape(
          *na, DType::kF32,
          Shape{static_cast<int64_t>((blocks + spec.nested_blocksize - 1) / spec.nested_blocksize)},
          source);
      expect_shape(*nm, DType::kF32, Shape{256}, source);
      used->insert({"weight.nested_absmax", "weight.nested_quant_map"});
    }
  } else {
    STOWAGE_EXPECTS(weight->shape.rank() == 2, InvalidInputError,
                    "{}: tensor '{}': expected shape [out, in], found {}", source, weight->name,
                    weight->shape.to_string());
    spec.out_features = weight->shape[0];
    spec.in_features = weight->shape[1];
    if (weight->dtype == DType::kI8) {
      spec.format = quant::WeightFormat::kInt8;
      const TensorMeta* scb = find(tensors, "SCB");
      STOWAGE_EXPECTS(scb != nullptr, InvalidInputError,
                      "{}: tensor '{}' is int8 but '{}.SCB' is missing", source, weight->name,
                      name);
      expect_shape(*scb, DType::kF32, Shape{spec.out_features}, source);
      used->insert({"SCB", "weight_format"});
    } else {
      STOWAGE_EXPECTS(weight->dtype == DType::kF32 || weight->dtype == DType::kF16 ||
                          weight->dtype == DType::kBF16,
                      InvalidInputError,
                      "{}: tensor '{}': expected F32, F16, BF16 or I8 (with SCB), found {}", source,
                      weight->name, safetensors_name(weight->dtype));
    }
  }
  if (const TensorMeta* bias = find(tensors, "bias")) {
    STOWAGE_EXPECTS(is_floating_point(bias->dtype) && bias->shape == Shape{spec.out_features},
                    InvalidInputError, "{}: tensor '{}': expected a float bias [{}], found {} {}",
                    source, bias->name, spec.out_features, safetensors_name(bias->dtype),
                    bias->shape.to_string());
    spec.has_bias = true;
  }
  return spec;
}

void check_quantized_weights(const mmap_store::Checkpoint& checkpoint) {
  try {
    quant::detect_quantized_weights(
        checkpoint.names(), [&checkpoint](const std::string& name) -> std::optional<Tensor> {
          if (!checkpoint.contains(name)) return std::nullopt;
          return checkpoint.tensor(name);
        });
  } catch (const InvalidInputError& e) {
    throw InvalidInputError(fmt::format("{}: {}", checkpoint.path(), e.what()));
  }
}

LinearTensorIndices linear_tensor_indices(const hooks::Module& module, const std::string& prefix) {
  LinearTensorIndices i;
  i.weight = module.tensor_index(prefix + "weight");
  i.bias = module.tensor_index(prefix + "bias");
  i.scb = module.tensor_index(prefix + "SCB");
  i.absmax = module.tensor_index(prefix + "weight.absmax");
  i.quant_map = module.tensor_index(prefix + "weight.quant_map");
  i.nested_absmax = module.tensor_index(prefix + "weight.nested_absmax");
  i.nested_quant_map = module.tensor_index(prefix + "weight.nested_quant_map");
  return i;
}

LinearWeights linear_weights(const LinearSpec& spec, const LinearTensorIndices& i,
                             const hooks::ForwardContext& ctx) {
  LinearWeights lw;
  lw.format = spec.format;
  lw.out_features = spec.out_features;
  lw.in_features = spec.in_features;
  lw.weight = ctx.tensor_at(i.weight);
  if (i.bias >= 0) lw.bias = ctx.tensor_at(i.bias);
  if (i.scb >= 0) lw.scb = ctx.tensor_at(i.scb);
  lw.threshold = spec.threshold;
  if (i.absmax >= 0) lw.absmax = ctx.tensor_at(i.absmax);
  if (i.quant_map >= 0) lw.quant_map = ctx.tensor_at(i.quant_map);
  lw.blocksize = spec.blocksize;
  lw.double_quant = spec.double_quant;
  if (i.nested_absmax >= 0) lw.nested_absmax = ctx.tensor_at(i.nested_absmax);
  if (i.nested_quant_map >= 0) lw.nested_quant_map = ctx.tensor_at(i.nested_quant_map);
  lw.nested_blocksize = spec.nested_blocksize;
  lw.nested_offset = spec.nested_offset;
  return lw;
}

}  // namespace stowage::models
