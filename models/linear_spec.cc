#include "models/linear_spec.h"

#include <fmt/format.h>

#include <optional>

#include "core/error.h"
#include "quant/bnb_format.h"

namespace stowage::models {
namespace {

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

LinearSpec describe_linear(
    const std::map<std::string, const TensorMeta*>& tensors, const std::string& name,
    const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
    const std::string& source, std::set<std::string>* used) {
  LinearSpec spec;
  const TensorMeta* weight = find(tensors, "weight");
  STOWAGE_EXPECTS(weight != nullptr, InvalidInputError, "{}: missing tensor '{}.weight'", source,
                  name);
  used->insert({"weight", "bias"});

  const TensorMeta* state = nullptr;
  for (const quant::WeightFormat format : {quant::WeightFormat::kNf4, quant::WeightFormat::kFp4}) {
    const std::string suffix(quant::WeightLayout{format}.quant_state_suffix());
    if (const TensorMeta* s = find(tensors, suffix)) {
      STOWAGE_EXPECTS(state == nullptr, InvalidInputError,
                      "{}: module '{}' has both an nf4 and an fp4 quant state", source, name);
      state = s;
    }
  }
  if (state != nullptr) {
    const std::vector<uint8_t> bytes = read_bytes(state->name);
    quant::WeightLayout& layout = spec.layout;
    try {
      const quant::ParsedQuantState parsed = quant::parse_quant_state_json(
          std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), state->name);
      layout = parsed.layout;
      spec.nested_offset = parsed.nested_offset;
      layout.storage = weight->dtype;
      STOWAGE_EXPECTS(layout.shape.rank() == 2 && layout.shape[0] > 0 && layout.shape[1] > 0,
                      InvalidInputError, "'{}': expected quant state 'shape' [out, in], found {}",
                      state->name, layout.shape.to_string());
      layout.validate_parts(
          [&](std::string_view suffix) -> std::optional<std::pair<DType, Shape>> {
            const TensorMeta* t = find(tensors, std::string(suffix));
            if (t == nullptr) return std::nullopt;
            return std::make_pair(t->dtype, t->shape);
          },
          name);
    } catch (const InvalidInputError& e) {
      throw InvalidInputError(fmt::format("{}: {}", source, e.what()));
    }
    for (const quant::PartLayout& part : layout.parts()) used->insert(std::string(part.suffix));
  } else {
    STOWAGE_EXPECTS(weight->shape.rank() == 2, InvalidInputError,
                    "{}: tensor '{}': expected shape [out, in], found {}", source, weight->name,
                    weight->shape.to_string());
    if (weight->dtype == DType::kI8) {
      spec.layout = quant::WeightLayout::int8(weight->shape);
      const TensorMeta* scb = find(tensors, "SCB");
      STOWAGE_EXPECTS(scb != nullptr, InvalidInputError,
                      "{}: tensor '{}' is int8 but '{}.SCB' is missing", source, weight->name,
                      name);
      expect_shape(*scb, DType::kF32, Shape{spec.out_features()}, source);
      used->insert({"SCB", "weight_format"});
    } else {
      STOWAGE_EXPECTS(weight->dtype == DType::kF32 || weight->dtype == DType::kF16 ||
                          weight->dtype == DType::kBF16,
                      InvalidInputError,
                      "{}: tensor '{}': expected F32, F16, BF16 or I8 (with SCB), found {}", source,
                      weight->name, safetensors_name(weight->dtype));
      spec.layout = quant::WeightLayout::float_weight(weight->dtype, weight->shape);
    }
  }
  if (const TensorMeta* bias = find(tensors, "bias")) {
    STOWAGE_EXPECTS(is_floating_point(bias->dtype) && bias->shape == Shape{spec.out_features()},
                    InvalidInputError, "{}: tensor '{}': expected a float bias [{}], found {} {}",
                    source, bias->name, spec.out_features(), safetensors_name(bias->dtype),
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
  lw.format = spec.layout.format;
  lw.out_features = spec.out_features();
  lw.in_features = spec.in_features();
  lw.weight = ctx.tensor_at(i.weight);
  if (i.bias >= 0) lw.bias = ctx.tensor_at(i.bias);
  if (i.scb >= 0) lw.scb = ctx.tensor_at(i.scb);
  lw.threshold = spec.threshold;
  if (i.absmax >= 0) lw.absmax = ctx.tensor_at(i.absmax);
  if (i.quant_map >= 0) lw.quant_map = ctx.tensor_at(i.quant_map);
  lw.blocksize = spec.layout.blocksize;
  lw.double_quant = spec.layout.double_quant;
  if (i.nested_absmax >= 0) lw.nested_absmax = ctx.tensor_at(i.nested_absmax);
  if (i.nested_quant_map >= 0) lw.nested_quant_map = ctx.tensor_at(i.nested_quant_map);
  lw.nested_offset = spec.nested_offset;
  return lw;
}

std::optional<LinearWeights> linear_rows(const LinearSpec& spec, const LinearWeights& w,
                                         int64_t first, int64_t count) {
  const std::optional<std::vector<quant::PartRange>> ranges =
      spec.layout.row_ranges(first, count);
  if (!ranges) return std::nullopt;
  const auto narrow = [](const TensorView& v, uint64_t offset, uint64_t bytes) {
    return TensorView(static_cast<char*>(v.data()) + offset, v.dtype(),
                      Shape{static_cast<int64_t>(bytes / dtype_size(v.dtype()))}, v.tier());
  };
  LinearWeights out = w;
  out.out_features = count;
  for (const quant::PartRange& r : *ranges) {
    if (r.suffix == quant::kWeightSuffix) out.weight = narrow(w.weight, r.offset, r.bytes);
    if (r.suffix == quant::kScbSuffix) out.scb = narrow(w.scb, r.offset, r.bytes);
    if (r.suffix == quant::kAbsmaxSuffix) out.absmax = narrow(w.absmax, r.offset, r.bytes);
    if (r.suffix == quant::kNestedAbsmaxSuffix) {
      out.nested_absmax = narrow(w.nested_absmax, r.offset, r.bytes);
    }
  }
  if (w.bias.data() != nullptr) {
    const uint64_t size = dtype_size(w.bias.dtype());
    out.bias = narrow(w.bias, static_cast<uint64_t>(first) * size,
                      static_cast<uint64_t>(count) * size);
  }
  return out;
}

}  // namespace stowage::models
