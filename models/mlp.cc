#include "models/mlp.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>

#include "core/buffer.h"
#include "core/error.h"

namespace stowage::models {

namespace {

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
  spec.source = source;
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
    std::set<std::string> known;
    static_cast<LinearSpec&>(layer) =
        describe_linear(lt.by_name, layer.module, read_bytes, source, &known);
    for (const std::string& local : lt.order) {
      STOWAGE_EXPECTS(known.count(local) != 0, InvalidInputError,
                      "{}: tensor '{}.{}' is not part of the MLP family's {} layer", source,
                      layer.module, local, quant::weight_format_name(layer.layout.format));
    }
    if (!spec.layers.empty()) {
      STOWAGE_EXPECTS(spec.layers.back().out_features() == layer.in_features(), InvalidInputError,
                      "{}: layer '{}' takes {} inputs but the previous layer gives {}", source,
                      layer.module, layer.in_features(), spec.layers.back().out_features());
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
  const LinearTensorIndices indices = linear_tensor_indices(m, "");
  const bool relu = i + 1 < spec_.layers.size();
  LinearKernels* kernels = &kernels_;
  m.set_forward([layer, indices, relu, kernels](hooks::ForwardContext& ctx) {
    const LinearWeights lw = linear_weights(layer, indices, ctx);
    STOWAGE_EXPECTS(ctx.inputs().size() == 1 && ctx.outputs().size() == 1, InvalidInputError,
                    "module '{}': expected one input and one output, found {} and {}", ctx.path(),
                    ctx.inputs().size(), ctx.outputs().size());
    kernels->linear(ctx.stream(), lw, ctx.inputs()[0], ctx.outputs()[0], relu);
  });
  layers_.push_back(&m);
}

namespace {

// Float32 activation buffers of a forward at `batch` rows: x and y
// (MlpRunner::forward) and one hidden buffer of the widest inner layer
// (MlpModel::forward allocates two). Every product is checked: a file whose
// zero-byte layers declare a width of 2^62 made `batch x width x 4` wrap to
// 0 (issue #15). Bounded by 2^58 bytes each, so the kernels' scratch terms
// (a few products of the batch and one extent) add up without wrapping.
struct ActivationBytes {
  uint64_t input_output = 0;
  uint64_t hidden = 0;  // one buffer; 0 for a single layer
};

ActivationBytes activation_bytes(const MlpSpec& spec, int64_t batch) {
  constexpr uint64_t kLimit = uint64_t{1} << 58;
  const uint64_t rows = static_cast<uint64_t>(std::max<int64_t>(batch, 0));
  auto bytes_of = [&](int64_t width, const std::string& what) {
    const std::optional<uint64_t> n =
        checked_product({rows, static_cast<uint64_t>(std::max<int64_t>(width, 0)), 4});
    STOWAGE_EXPECTS(n && *n <= kLimit, InvalidInputError,
                    "{}: {} ({} values per row) at batch {} needs more than 2^58 bytes",
                    spec.source, what, width, batch);
    return *n;
  };
  ActivationBytes a;
  a.input_output =
      bytes_of(spec.in_features(), "the input") +
      bytes_of(spec.out_features(), "the output of '" + spec.layers.back().module + "'");
  for (size_t i = 0; i + 1 < spec.layers.size(); ++i) {
    const MlpLayer& l = spec.layers[i];
    a.hidden = std::max(a.hidden, bytes_of(l.out_features(), "the output of '" + l.module + "'"));
  }
  return a;
}

}  // namespace

uint64_t working_memory_bytes(const MlpSpec& spec, int64_t batch, const LinearKernels& kernels) {
  const ActivationBytes a = activation_bytes(spec, batch);
  const std::vector<LinearSpec> linears(spec.layers.begin(), spec.layers.end());
  // x and y, and ping/pong as MlpModel::forward allocates them.
  const uint64_t hidden_buffers = spec.layers.size() > 2 ? 2 : spec.layers.size() - 1;
  const std::optional<uint64_t> total = checked_sum(
      {a.input_output, hidden_buffers * a.hidden, kernels.working_bytes(linears, batch)});
  STOWAGE_EXPECTS(total.has_value(), InvalidInputError,
                  "{}: the working memory of a forward at batch {} overflows", spec.source, batch);
  return *total;
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
  const Tier tier = stream.is_null() ? x.tier() : stream.tier();
  Buffer ping, pong;
  if (spec_.layers.size() > 1) {
    const size_t bytes = static_cast<size_t>(activation_bytes(spec_, batch).hidden);
    ping = Buffer(activation_memory, bytes, stream);
    if (spec_.layers.size() > 2) pong = Buffer(activation_memory, bytes, stream);
  }
  TensorView h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int64_t out = spec_.layers[i].out_features();
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
