#include "models/mlp.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <map>
#include <set>

#include "core/buffer.h"
#include "core/error.h"

namespace stowage::models {

namespace {

constexpr const char* kQuantStatePrefix = "weight.quant_state.bitsandbytes__";

// Parses "layers.{i}.{rest}"; false when the name has another form.
bool parse_layer_name(const std::string& name, int64_t* index, std::string* rest) {
  const std::string prefix = "layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  size_t pos = prefix.size();
  size_t digits = 0;
  while (pos + digits < name.size() && std::isdigit(static_cast<unsigned char>(name[pos + digits])))
    ++digits;
  if (digits == 0 || digits > 9 || pos + digits >= name.size() || name[pos + digits] != '.')
    return false;
  if (digits > 1 && name[pos] == '0') return false;
  *index = std::stoll(name.substr(pos, digits));
  *rest = name.substr(pos + digits + 1);
  return !rest->empty();
}

struct LayerTensors {
  std::map<std::string, const TensorMeta*> by_name;  // local name -> meta
  std::vector<std::string> order;
};

const TensorMeta* find(const LayerTensors& lt, const std::string& local) {
  auto it = lt.by_name.find(local);
  return it == lt.by_name.end() ? nullptr : it->second;
}

void expect_shape(const TensorMeta& t, DType dtype, const Shape& shape, const std::string& source) {
  STOWAGE_EXPECTS(t.dtype == dtype && t.shape == shape, InvalidInputError,
                  "{}: tensor '{}': expected {} {}, found {} {}", source, t.name,
                  safetensors_name(dtype), shape.to_string(), safetensors_name(t.dtype),
                  t.shape.to_string());
}

}  // namespace

MlpSpec describe_mlp(const std::vector<TensorMeta>& tensors,
                     const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
                     const std::string& source) {
  std::map<int64_t, LayerTensors> layers;
  for (const TensorMeta& t : tensors) {
    int64_t index = 0;
    std::string rest;
    STOWAGE_EXPECTS(parse_layer_name(t.name, &index, &rest), InvalidInputError,
                    "{}: tensor '{}' is not part of the MLP family (expected names "
                    "'layers.{{i}}.weight', 'layers.{{i}}.bias' and their quant-state keys)",
                    source, t.name);
    LayerTensors& lt = layers[index];
    lt.by_name[rest] = &t;
    lt.order.push_back(rest);
  }
  STOWAGE_EXPECTS(!layers.empty(), InvalidInputError,
                  "{}: expected an MLP with tensor 'layers.0.weight', found no layers.* tensors",
                  source);
  MlpSpec spec;
  int64_t expected_index = 0;
  for (auto& [index, lt] : layers) {
    STOWAGE_EXPECTS(index == expected_index, InvalidInputError,
                    "{}: expected tensor 'layers.{}.weight' (layers are numbered without gaps), "
                    "found the next layer at index {}",
                    source, expected_index, index);
    ++expected_index;
    MlpLayer layer;
    layer.module = fmt::format("layers.{}", index);
    layer.tensors = lt.order;
    const TensorMeta* weight = find(lt, "weight");
    STOWAGE_EXPECTS(weight != nullptr, InvalidInputError, "{}: missing tensor '{}.weight'", source,
                    layer.module);
    layer.weight_dtype = weight->dtype;
    std::set<std::string> known = {"weight", "bias"};

    const TensorMeta* state = nullptr;
    for (const char* kind : {"nf4", "fp4"}) {
      if (const TensorMeta* s = find(lt, std::string(kQuantStatePrefix) + kind)) {
        STOWAGE_EXPECTS(state == nullptr, InvalidInputError,
                        "{}: module '{}' has both an nf4 and an fp4 quant state", source,
                        layer.module);
        state = s;
        layer.format = std::string(kind) == "nf4" ? WeightFormat::kNf4 : WeightFormat::kFp4;
      }
    }
    if (state != nullptr) {
      known.insert(state->name.substr(layer.module.size() + 1));
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
                        "{}: tensor '{}': quant state '{}' should be an integer", source,
                        state->name, key);
        return v->is_int64() ? v->as_int64() : static_cast<int64_t>(v->as_uint64());
      };
      layer.blocksize = get_int("blocksize", true, 64);
      STOWAGE_EXPECTS(layer.blocksize > 0, InvalidInputError,
                      "{}: tensor '{}': blocksize {} is not positive", source, state->name,
                      layer.blocksize);
      const boost::json::value* shape = obj.if_contains("shape");
      STOWAGE_EXPECTS(shape != nullptr && shape->is_array() && shape->as_array().size() == 2 &&
                          shape->as_array()[0].is_number() && shape->as_array()[1].is_number(),
                      InvalidInputError,
                      "{}: tensor '{}': expected quant state 'shape' [out, in], found {}", source,
                      state->name, shape ? boost::json::serialize(*shape) : "nothing");
      layer.out_features = shape->as_array()[0].to_number<int64_t>();
      layer.in_features = shape->as_array()[1].to_number<int64_t>();
      if (const boost::json::value* off = obj.if_contains("nested_offset")) {
        STOWAGE_EXPECTS(off->is_number(), InvalidInputError,
                        "{}: tensor '{}': nested_offset should be a number", source, state->name);
        layer.double_quant = true;
        layer.nested_offset = static_cast<float>(off->to_number<double>());
        layer.nested_blocksize = get_int("nested_blocksize", false, 256);
      }
      STOWAGE_EXPECTS(layer.out_features > 0 && layer.in_features > 0, InvalidInputError,
                      "{}: tensor '{}': quant state shape [{}, {}] is empty", source, state->name,
                      layer.out_features, layer.in_features);
      const uint64_t n = static_cast<uint64_t>(layer.out_features) * layer.in_features;
      STOWAGE_EXPECTS(weight->dtype != DType::kI8 && dtype_size(weight->dtype) > 0,
                      InvalidInputError, "{}: tensor '{}': unexpected 4-bit storage dtype {}",
                      source, weight->name, safetensors_name(weight->dtype));
      const auto weight_bytes = weight->shape.checked_numel();
      STOWAGE_EXPECTS(weight_bytes && *weight_bytes * dtype_size(weight->dtype) >= (n + 1) / 2,
                      InvalidInputError,
                      "{}: tensor '{}': expected packed 4-bit codes for {} elements ({} bytes), "
                      "found {} {}",
                      source, weight->name, n, (n + 1) / 2, safetensors_name(weight->dtype),
                      weight->shape.to_string());
      const uint64_t blocks = (n + layer.blocksize - 1) / layer.blocksize;
      const TensorMeta* absmax = find(lt, "weight.absmax");
      STOWAGE_EXPECTS(absmax != nullptr, InvalidInputError, "{}: missing tensor '{}.weight.absmax'",
                      source, layer.module);
      expect_shape(*absmax, layer.double_quant ? DType::kU8 : DType::kF32,
                   Shape{static_cast<int64_t>(blocks)}, source);
      const TensorMeta* qmap = find(lt, "weight.quant_map");
      STOWAGE_EXPECTS(qmap != nullptr, InvalidInputError,
                      "{}: missing tensor '{}.weight.quant_map'", source, layer.module);
      expect_shape(*qmap, DType::kF32, Shape{16}, source);
      known.insert({"weight.absmax", "weight.quant_map"});
      if (layer.double_quant) {
        STOWAGE_EXPECTS(layer.nested_blocksize > 0, InvalidInputError,
                        "{}: tensor '{}': nested_blocksize {} is not positive", source, state->name,
                        layer.nested_blocksize);
        const TensorMeta* na = find(lt, "weight.nested_absmax");
        const TensorMeta* nm = find(lt, "weight.nested_quant_map");
        STOWAGE_EXPECTS(na != nullptr && nm != nullptr, InvalidInputError,
                        "{}: module '{}' is double-quantized but lacks "
                        "weight.nested_absmax or weight.nested_quant_map",
                        source, layer.module);
        expect_shape(*na, DType::kF32,
                     Shape{static_cast<int64_t>((blocks + layer.nested_blocksize - 1) /
                                                layer.nested_blocksize)},
                     source);
        expect_shape(*nm, DType::kF32, Shape{256}, source);
        known.insert({"weight.nested_absmax", "weight.nested_quant_map"});
      }
    } else {
      STOWAGE_EXPECTS(weight->shape.rank() == 2, InvalidInputError,
                      "{}: tensor '{}': expected shape [out, in], found {}", source, weight->name,
                      weight->shape.to_string());
      layer.out_features = weight->shape[0];
      layer.in_features = weight->shape[1];
      if (weight->dtype == DType::kI8) {
        layer.format = WeightFormat::kInt8;
        const TensorMeta* scb = find(lt, "SCB");
        STOWAGE_EXPECTS(scb != nullptr, InvalidInputError,
                        "{}: tensor '{}' is int8 but '{}.SCB' is missing", source, weight->name,
                        layer.module);
        expect_shape(*scb, DType::kF32, Shape{layer.out_features}, source);
        known.insert({"SCB", "weight_format"});
      } else {
        STOWAGE_EXPECTS(weight->dtype == DType::kF32 || weight->dtype == DType::kF16 ||
                            weight->dtype == DType::kBF16,
                        InvalidInputError,
                        "{}: tensor '{}': expected F32, F16, BF16 or I8 (with SCB), found {}",
                        source, weight->name, safetensors_name(weight->dtype));
      }
    }
    if (const TensorMeta* bias = find(lt, "bias")) {
      STOWAGE_EXPECTS(is_floating_point(bias->dtype) && bias->shape == Shape{layer.out_features},
                      InvalidInputError, "{}: tensor '{}': expected a float bias [{}], found {} {}",
                      source, bias->name, layer.out_features, safetensors_name(bias->dtype),
                      bias->shape.to_string());
      layer.has_bias = true;
    }
    for (const std::string& local : lt.order) {
      STOWAGE_EXPECTS(known.count(local) != 0, InvalidInputError,
                      "{}: tensor '{}.{}' is not part of the MLP family's {} layer", source,
                      layer.module, local, weight_format_name(layer.format));
    }
    if (!spec.layers.empty()) {
      STOWAGE_EXPECTS(spec.layers.back().out_features == layer.in_features, InvalidInputError,
                      "{}: layer '{}' takes {} inputs but the previous layer gives {}", source,
                      layer.module, layer.in_features, spec.layers.back().out_features);
    }
    spec.layers.push_back(std::move(layer));
  }
  return spec;
}

MlpModel::MlpModel(MlpSpec spec, LinearKernels& kernels)
    : spec_(std::move(spec)), kernels_(kernels) {
  STOWAGE_EXPECTS(!spec_.layers.empty(), InvalidInputError, "an MLP needs at least one layer");
  for (size_t i = 0; i < spec_.layers.size(); ++i) build_layer(i);
}

void MlpModel::build_layer(size_t i) {
  const MlpLayer& layer = spec_.layers[i];
  hooks::Module& m = root_.add_descendant(layer.module);
  for (const std::string& name : layer.tensors) m.add_tensor(name);
  auto index_of = [&m](const char* name) { return m.tensor_index(name); };
  const int w = index_of("weight"), b = index_of("bias"), scb = index_of("SCB"),
            absmax = index_of("weight.absmax"), qmap = index_of("weight.quant_map"),
            nabsmax = index_of("weight.nested_absmax"), nqmap = index_of("weight.nested_quant_map");
  const bool relu = i + 1 < spec_.layers.size();
  LinearKernels* kernels = &kernels_;
  m.set_forward(
      [layer, w, b, scb, absmax, qmap, nabsmax, nqmap, relu, kernels](hooks::ForwardContext& ctx) {
        LinearWeights lw;
        lw.format = layer.format;
        lw.out_features = layer.out_features;
        lw.in_features = layer.in_features;
        lw.weight = ctx.tensor_at(w);
        if (b >= 0) lw.bias = ctx.tensor_at(b);
        if (scb >= 0) lw.scb = ctx.tensor_at(scb);
        lw.threshold = layer.threshold;
        if (absmax >= 0) lw.absmax = ctx.tensor_at(absmax);
        if (qmap >= 0) lw.quant_map = ctx.tensor_at(qmap);
        lw.blocksize = layer.blocksize;
        lw.double_quant = layer.double_quant;
        if (nabsmax >= 0) lw.nested_absmax = ctx.tensor_at(nabsmax);
        if (nqmap >= 0) lw.nested_quant_map = ctx.tensor_at(nqmap);
        lw.nested_blocksize = layer.nested_blocksize;
        lw.nested_offset = layer.nested_offset;
        STOWAGE_EXPECTS(ctx.inputs().size() == 1 && ctx.outputs().size() == 1, InvalidInputError,
                        "module '{}': expected one input and one output, found {} and {}",
                        ctx.path(), ctx.inputs().size(), ctx.outputs().size());
        kernels->linear(ctx.stream(), lw, ctx.inputs()[0], ctx.outputs()[0], relu);
      });
  layers_.push_back(&m);
}

uint64_t working_memory_bytes(const MlpSpec& spec, int64_t batch, const LinearKernels& kernels) {
  const uint64_t rows = static_cast<uint64_t>(batch);
  std::vector<LinearShape> shapes;
  int64_t widest = 0;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const MlpLayer& l = spec.layers[i];
    shapes.push_back(LinearShape{l.format, l.out_features, l.in_features, l.weight_dtype,
                                 l.has_bias, l.blocksize, l.double_quant, l.threshold});
    if (i + 1 < spec.layers.size()) widest = std::max(widest, l.out_features);
  }
  // x and y in float32, and ping/pong as MlpModel::forward allocates them.
  uint64_t bytes = rows * static_cast<uint64_t>(spec.in_features() + spec.out_features()) * 4;
  const uint64_t activation = rows * static_cast<uint64_t>(widest) * 4;
  if (spec.layers.size() > 1) bytes += activation;
  if (spec.layers.size() > 2) bytes += activation;
  return bytes + kernels.working_bytes(shapes, batch);
}

void MlpModel::forward(hooks::HookRegistry& registry, StreamRef stream, const TensorView& x,
                       const TensorView& y, MemoryResource& activation_memory) {
  STOWAGE_EXPECTS(
      x.dtype() == DType::kF32 && x.shape().rank() == 2 && x.shape()[1] == spec_.in_features(),
      InvalidInputError, "MLP input: expected float32 [batch, {}], found {} {}",
      spec_.in_features(), short_name(x.dtype()), x.shape().to_string());
  const int64_t batch = x.shape()[0];
  STOWAGE_EXPECTS(y.dtype() == DType::kF32 && y.shape() == (Shape{batch, spec_.out_features()}),
                  InvalidInputError, "MLP output: expected float32 [{}, {}], found {} {}", batch,
                  spec_.out_features(), short_name(y.dtype()), y.shape().to_string());
  int64_t widest = 0;
  for (size_t i = 0; i + 1 < spec_.layers.size(); ++i)
    widest = std::max(widest, spec_.layers[i].out_features);
  const Tier tier = stream.is_null() ? x.tier() : stream.tier();
  Buffer ping, pong;
  if (spec_.layers.size() > 1) {
    const size_t bytes = static_cast<size_t>(batch * widest) * sizeof(float);
    ping = Buffer(activation_memory, bytes, stream);
    if (spec_.layers.size() > 2) pong = Buffer(activation_memory, bytes, stream);
  }
  TensorView h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int64_t out = spec_.layers[i].out_features;
    TensorView next;
    if (i + 1 == layers_.size()) {
      next = y;
    } else {
      Buffer& target = (i % 2 == 0) ? ping : pong;
      next = TensorView(target.data(), DType::kF32, Shape{batch, out}, tier);
    }
    registry.run_forward(*layers_[i], stream, {h}, {next});
    h = next;
  }
  // ping/pong are freed stream-ordered on `stream` when they go out of scope.
}

}  // namespace stowage::models
