#include "models/transformer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/shape.h"
#include "kernels/memory_read.h"
#include "kernels/transformer_ops.h"

namespace stowage::models {
namespace {

constexpr const char* kLayerPrefix = "model.layers.";

struct Projection {
  const char* prefix;  // inside the decoder layer
  LinearSpec DecoderLayerSpec::*spec;
};
const Projection kProjections[] = {
    {"self_attn.q_proj", &DecoderLayerSpec::q}, {"self_attn.k_proj", &DecoderLayerSpec::k},
    {"self_attn.v_proj", &DecoderLayerSpec::v}, {"self_attn.o_proj", &DecoderLayerSpec::o},
    {"mlp.gate_proj", &DecoderLayerSpec::gate}, {"mlp.up_proj", &DecoderLayerSpec::up},
    {"mlp.down_proj", &DecoderLayerSpec::down},
};

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

using LocalTensors = std::map<std::string, const TensorMeta*>;

// The tensors under "prefix." with the prefix removed.
LocalTensors tensors_under(const LocalTensors& tensors, const std::string& prefix) {
  LocalTensors out;
  const std::string dotted = prefix + ".";
  for (const auto& [local, meta] : tensors) {
    if (starts_with(local, dotted)) out[local.substr(dotted.size())] = meta;
  }
  return out;
}

const TensorMeta& expect_vector(const LocalTensors& tensors, const std::string& local,
                                const std::string& module, int64_t size,
                                const std::string& source) {
  auto it = tensors.find(local);
  STOWAGE_EXPECTS(it != tensors.end(), InvalidInputError, "{}: missing tensor '{}.{}'", source,
                  module, local);
  const TensorMeta& t = *it->second;
  STOWAGE_EXPECTS((t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16) &&
                      t.shape == Shape{size},
                  InvalidInputError, "{}: tensor '{}': expected a float vector [{}], found {} {}",
                  source, t.name, size, safetensors_name(t.dtype), t.shape.to_string());
  return t;
}

void expect_linear(const LinearSpec& spec, const std::string& name, int64_t out, int64_t in,
                   bool bias, const std::string& source) {
  STOWAGE_EXPECTS(spec.out_features() == out && spec.in_features() == in, InvalidInputError,
                  "{}: tensor '{}.weight': expected a [{}, {}] projection, found [{}, {}]", source,
                  name, out, in, spec.out_features(), spec.in_features());
  STOWAGE_EXPECTS(spec.has_bias == bias, InvalidInputError,
                  "{}: tensor '{}.bias': the configuration {} a bias, but the checkpoint {} one",
                  source, name, bias ? "gives" : "gives no", spec.has_bias ? "has" : "lacks");
}

TensorView f32_view(Buffer& buffer, int64_t rows, int64_t cols, Tier tier) {
  return TensorView(buffer.data(), DType::kF32, Shape{rows, cols}, tier);
}

constexpr uint64_t kAllocationSlack = 4096;  // per buffer: allocator rounding

struct ActivationSizes {
  int64_t rows = 0;
  int64_t head_rows = 0;
  int64_t q_cols = 0;
  int64_t kv_cols = 0;
  int64_t mlp_cols = 0;  // the widest MLP: dense, expert or shared expert
  int64_t experts = 0;   // router outputs (0: no sparse layer)
  int64_t top_k = 0;
};

ActivationSizes activation_sizes(const TransformerSpec& spec, const TransformerRunShape& shape) {
  const TransformerConfig& c = spec.config;
  ActivationSizes a;
  a.rows = shape.batch * shape.max_step_tokens;
  a.head_rows = shape.all_logits ? a.rows : shape.batch;
  a.q_cols = c.num_heads * c.head_dim;
  a.kv_cols = c.num_kv_heads * c.head_dim;
  a.mlp_cols = c.intermediate_size;
  if (c.moe) {
    a.mlp_cols = std::max({a.mlp_cols, c.moe->expert_intermediate_size,
                           c.moe->shared_expert_intermediate_size});
    a.experts = c.moe->num_experts;
    a.top_k = c.moe->experts_per_token;
  }
  return a;
}

using ReadBytes = std::function<std::vector<uint8_t>(const std::string&)>;

// The tensors of module `module`, or InvalidInputError naming `missing`.
const LocalTensors& module_tensors(const std::map<std::string, LocalTensors>& modules,
                                   const std::string& module, const std::string& missing,
                                   const std::string& source) {
  auto it = modules.find(module);
  STOWAGE_EXPECTS(it != modules.end(), InvalidInputError, "{}: missing tensor '{}.{}'", source,
                  module, missing);
  return it->second;
}

// One linear layer that is a whole module (the router, the shared expert's
// gate): its spec and tensor names, every tensor of the module accounted for.
LinearSpec describe_linear_module(const std::map<std::string, LocalTensors>& modules,
                                  const std::string& module, int64_t out, int64_t in,
                                  const ReadBytes& read_bytes, const std::string& source,
                                  std::vector<std::string>* names) {
  const LocalTensors& local = module_tensors(modules, module, "weight", source);
  std::set<std::string> used;
  LinearSpec spec = describe_linear(local, module, read_bytes, source, &used);
  expect_linear(spec, module, out, in, false, source);
  for (const auto& [name, meta] : local) {
    STOWAGE_EXPECTS(used.count(name) != 0, InvalidInputError, "{}: tensor '{}' is not part of {}",
                    source, meta->name, module);
    names->push_back(name);
  }
  return spec;
}

// A SwiGLU MLP that is a module of its own (an expert, the shared expert):
// projections `names` (gate, up, down) of [inter, hidden] and [hidden, inter].
ExpertSpec describe_expert(const std::map<std::string, LocalTensors>& modules,
                           const std::string& module, const MoeConfig& moe, int64_t hidden,
                           int64_t inter, const ReadBytes& read_bytes, const std::string& source) {
  ExpertSpec e;
  e.module = module;
  const LocalTensors& local = module_tensors(modules, module, moe.gate_proj + ".weight", source);
  std::set<std::string> used;
  const std::pair<const std::string*, LinearSpec*> parts[] = {
      {&moe.gate_proj, &e.gate}, {&moe.up_proj, &e.up}, {&moe.down_proj, &e.down}};
  for (const auto& [name, spec] : parts) {
    std::set<std::string> here;
    *spec = describe_linear(tensors_under(local, *name), module + "." + *name, read_bytes, source,
                            &here);
    for (const std::string& u : here) used.insert(*name + "." + u);
  }
  expect_linear(e.gate, module + "." + moe.gate_proj, inter, hidden, false, source);
  expect_linear(e.up, module + "." + moe.up_proj, inter, hidden, false, source);
  expect_linear(e.down, module + "." + moe.down_proj, hidden, inter, false, source);
  for (const auto& [name, meta] : local) {
    STOWAGE_EXPECTS(used.count(name) != 0, InvalidInputError,
                    "{}: tensor '{}' is not part of expert {}", source, meta->name, module);
    e.tensors.push_back(name);
  }
  return e;
}

// The sparse MLP of layer `layer` (router, experts, shared expert and its
// gate), each module added to *claimed.
MoeLayerSpec describe_moe_layer(const TransformerConfig& c,
                                const std::map<std::string, LocalTensors>& modules,
                                const std::string& layer, const ReadBytes& read_bytes,
                                const std::string& source, std::set<std::string>* claimed) {
  const MoeConfig& moe = *c.moe;
  const std::string block = layer + "." + moe.block;
  MoeLayerSpec m;
  m.router_module = block + ".gate";
  m.router = describe_linear_module(modules, m.router_module, moe.num_experts, c.hidden_size,
                                    read_bytes, source, &m.router_tensors);
  claimed->insert(m.router_module);
  for (int64_t e = 0; e < moe.num_experts; ++e) {
    m.experts.push_back(describe_expert(modules, fmt::format("{}.experts.{}", block, e), moe,
                                        c.hidden_size, moe.expert_intermediate_size, read_bytes,
                                        source));
    claimed->insert(m.experts.back().module);
  }
  if (moe.shared_expert_intermediate_size > 0) {
    m.has_shared = true;
    m.shared = describe_expert(modules, block + ".shared_expert", moe, c.hidden_size,
                               moe.shared_expert_intermediate_size, read_bytes, source);
    claimed->insert(m.shared.module);
    m.shared_gate_module = block + ".shared_expert_gate";
    m.shared_gate = describe_linear_module(modules, m.shared_gate_module, 1, c.hidden_size,
                                           read_bytes, source, &m.shared_gate_tensors);
    claimed->insert(m.shared_gate_module);
  }
  return m;
}

}  // namespace

std::pair<std::string, std::string> transformer_module_of(const std::string& name) {
  if (starts_with(name, kLayerPrefix)) {
    size_t pos = std::string(kLayerPrefix).size();
    size_t end = pos;
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
    if (end > pos && end < name.size() && name[end] == '.') {
      const std::string layer = name.substr(0, end), rest = name.substr(end + 1);
      // A sparse layer's router, experts and shared expert are modules of their own.
      for (const char* block : {"mlp.", "block_sparse_moe."}) {
        if (!starts_with(rest, block)) continue;
        const size_t part = std::string(block).size();
        const size_t dot = rest.find('.', part);
        if (dot == std::string::npos) break;
        const std::string sub = rest.substr(part, dot - part);
        size_t split = dot;
        if (sub == "experts") {
          size_t digits = dot + 1;
          while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) {
            ++digits;
          }
          if (digits == dot + 1 || digits >= rest.size() || rest[digits] != '.') break;
          split = digits;
        } else if (sub != "gate" && sub != "shared_expert" && sub != "shared_expert_gate") {
          break;
        }
        return {layer + "." + rest.substr(0, split), rest.substr(split + 1)};
      }
      return {layer, rest};
    }
  }
  for (const char* module : {kEmbeddingModule, kFinalNormModule, kHeadModule}) {
    const std::string prefix = std::string(module) + ".";
    if (starts_with(name, prefix)) return {module, name.substr(prefix.size())};
  }
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

TransformerSpec describe_transformer(
    const TransformerConfig& config, const std::vector<TensorMeta>& tensors,
    const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
    const std::string& source) {
  std::map<std::string, LocalTensors> modules;
  for (const TensorMeta& t : tensors) {
    auto [module, local] = transformer_module_of(t.name);
    modules[module][local] = &t;
  }
  const TransformerConfig& c = config;
  TransformerSpec spec;
  spec.config = config;
  std::set<std::string> claimed;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    DecoderLayerSpec layer;
    layer.module = fmt::format("{}{}", kLayerPrefix, i);
    auto it = modules.find(layer.module);
    STOWAGE_EXPECTS(it != modules.end(), InvalidInputError,
                    "{}: missing tensor '{}.self_attn.q_proj.weight' (config.json says "
                    "num_hidden_layers = {})",
                    source, layer.module, c.num_layers);
    const LocalTensors& local = it->second;
    claimed.insert(layer.module);
    std::set<std::string> used;
    layer.sparse = is_sparse_layer(c, i);
    for (const Projection& p : kProjections) {
      if (layer.sparse && p.spec == &DecoderLayerSpec::gate) break;  // gate, up, down: dense only
      std::set<std::string> used_here;
      const std::string name = layer.module + "." + p.prefix;
      layer.*p.spec =
          describe_linear(tensors_under(local, p.prefix), name, read_bytes, source, &used_here);
      for (const std::string& u : used_here) used.insert(std::string(p.prefix) + "." + u);
    }
    const int64_t q_out = c.num_heads * c.head_dim;
    const int64_t kv_out = c.num_kv_heads * c.head_dim;
    expect_linear(layer.q, layer.module + ".self_attn.q_proj", q_out, c.hidden_size, c.qkv_bias,
                  source);
    expect_linear(layer.k, layer.module + ".self_attn.k_proj", kv_out, c.hidden_size, c.qkv_bias,
                  source);
    expect_linear(layer.v, layer.module + ".self_attn.v_proj", kv_out, c.hidden_size, c.qkv_bias,
                  source);
    expect_linear(layer.o, layer.module + ".self_attn.o_proj", c.hidden_size, q_out, c.o_bias,
                  source);
    if (layer.sparse) {
      layer.moe = describe_moe_layer(c, modules, layer.module, read_bytes, source, &claimed);
    } else {
      expect_linear(layer.gate, layer.module + ".mlp.gate_proj", c.intermediate_size,
                    c.hidden_size, c.mlp_bias, source);
      expect_linear(layer.up, layer.module + ".mlp.up_proj", c.intermediate_size, c.hidden_size,
                    c.mlp_bias, source);
      expect_linear(layer.down, layer.module + ".mlp.down_proj", c.hidden_size,
                    c.intermediate_size, c.mlp_bias, source);
    }
    if (c.qk_norm) {
      layer.q_norm_dtype =
          expect_vector(local, "self_attn.q_norm.weight", layer.module, c.head_dim, source).dtype;
      layer.k_norm_dtype =
          expect_vector(local, "self_attn.k_norm.weight", layer.module, c.head_dim, source).dtype;
      used.insert({"self_attn.q_norm.weight", "self_attn.k_norm.weight"});
    }
    layer.input_norm_dtype =
        expect_vector(local, "input_layernorm.weight", layer.module, c.hidden_size, source).dtype;
    layer.post_norm_dtype =
        expect_vector(local, "post_attention_layernorm.weight", layer.module, c.hidden_size, source)
            .dtype;
    used.insert({"input_layernorm.weight", "post_attention_layernorm.weight"});
    for (const auto& [name, meta] : local) {
      // Older checkpoints carry the rotary table as a buffer; it is recomputed.
      if (used.count(name) != 0 || name == "self_attn.rotary_emb.inv_freq") {
        layer.tensors.push_back(name);
        continue;
      }
      throw InvalidInputError(fmt::format("{}: tensor '{}' is not part of a {} decoder layer",
                                          source, meta->name, architecture_name(c.architecture)));
    }
    spec.layers.push_back(std::move(layer));
  }

  auto embed = modules.find(kEmbeddingModule);
  STOWAGE_EXPECTS(embed != modules.end() && embed->second.count("weight") != 0, InvalidInputError,
                  "{}: missing tensor '{}.weight'", source, kEmbeddingModule);
  {
    const TensorMeta& t = *embed->second.at("weight");
    STOWAGE_EXPECTS((t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16) &&
                        t.shape == (Shape{c.vocab_size, c.hidden_size}),
                    InvalidInputError,
                    "{}: tensor '{}': expected a float table [{}, {}], found {} {}", source, t.name,
                    c.vocab_size, c.hidden_size, safetensors_name(t.dtype), t.shape.to_string());
    STOWAGE_EXPECTS(
        embed->second.size() == 1, InvalidInputError,
        "{}: module '{}' holds tensors besides 'weight' (e.g. '{}')", source, kEmbeddingModule,
        std::next(embed->second.begin(), embed->second.begin()->first == "weight")->second->name);
    spec.embedding_dtype = t.dtype;
    claimed.insert(kEmbeddingModule);
  }
  auto norm = modules.find(kFinalNormModule);
  STOWAGE_EXPECTS(norm != modules.end(), InvalidInputError, "{}: missing tensor '{}.weight'",
                  source, kFinalNormModule);
  spec.final_norm_dtype =
      expect_vector(norm->second, "weight", kFinalNormModule, c.hidden_size, source).dtype;
  STOWAGE_EXPECTS(norm->second.size() == 1, InvalidInputError,
                  "{}: module '{}' holds tensors besides 'weight'", source, kFinalNormModule);
  claimed.insert(kFinalNormModule);

  auto head = modules.find(kHeadModule);
  if (c.tie_word_embeddings) {
    spec.head_module = kEmbeddingModule;
    spec.head.layout =
        quant::WeightLayout::float_weight(spec.embedding_dtype, Shape{c.vocab_size, c.hidden_size});
    spec.head_tensors = {"weight"};
    if (head != modules.end()) claimed.insert(kHeadModule);  // loaded, unused (tied)
  } else {
    STOWAGE_EXPECTS(head != modules.end(), InvalidInputError,
                    "{}: missing tensor '{}.weight' (config.json says tie_word_embeddings = "
                    "false)",
                    source, kHeadModule);
    std::set<std::string> used;
    spec.head = describe_linear(head->second, kHeadModule, read_bytes, source, &used);
    expect_linear(spec.head, kHeadModule, c.vocab_size, c.hidden_size, false, source);
    for (const auto& [name, meta] : head->second) {
      STOWAGE_EXPECTS(used.count(name) != 0, InvalidInputError,
                      "{}: tensor '{}' is not part of the output head", source, meta->name);
      spec.head_tensors.push_back(name);
    }
    spec.head_module = kHeadModule;
    claimed.insert(kHeadModule);
  }
  for (const auto& [module, local] : modules) {
    STOWAGE_EXPECTS(claimed.count(module) != 0, InvalidInputError,
                    "{}: tensor '{}' is not part of a {} model with {} layers", source,
                    local.begin()->second->name, architecture_name(c.architecture), c.num_layers);
  }
  return spec;
}

std::vector<std::string> transformer_plan_order(const TransformerSpec& spec) {
  std::vector<std::string> order;
  for (const DecoderLayerSpec& layer : spec.layers) {
    order.push_back(layer.module);
    if (!layer.sparse) continue;
    order.push_back(layer.moe.router_module);
    if (layer.moe.has_shared) {
      order.push_back(layer.moe.shared_gate_module);
      order.push_back(layer.moe.shared.module);
    }
  }
  order.push_back(kFinalNormModule);
  order.push_back(spec.head_module);
  // The routed experts after everything that runs at every step: the
  // accelerator keeps what every token needs first, then the experts of the
  // first layers; the embedding table last (a step reads only its rows).
  for (const DecoderLayerSpec& layer : spec.layers) {
    for (const ExpertSpec& e : layer.moe.experts) order.push_back(e.module);
  }
  if (spec.head_module != kEmbeddingModule) order.push_back(kEmbeddingModule);
  return order;
}

TransformerLoadLayout transformer_load_layout(const TransformerSpec& spec,
                                              const mmap_store::Checkpoint& checkpoint) {
  TransformerLoadLayout layout;
  layout.order = transformer_plan_order(spec);
  if (spec.head_module != kHeadModule &&
      checkpoint.contains(std::string(kHeadModule) + ".weight")) {
    layout.order.push_back(kHeadModule);  // tied: loaded, never run
  }
  if (spec.head_module != kEmbeddingModule) layout.read_in_place.push_back(kEmbeddingModule);
  layout.spread_resident = std::none_of(spec.layers.begin(), spec.layers.end(),
                                        [](const DecoderLayerSpec& l) { return l.sparse; });
  return layout;
}

namespace {

// The checked size, or InvalidInputError naming the model and the run's
// shape when it passed kMaxCheckedSize (core/shape.h): sizes that cannot be
// allocated are refused, never wrapped.
uint64_t or_refuse(std::optional<uint64_t> size, const TransformerSpec& spec,
                   const TransformerRunShape& shape, const char* what) {
  STOWAGE_EXPECTS(size.has_value(), InvalidInputError,
                  "{}: the {} of a run of batch {}, context {} and {} tokens a step exceed 2^62 "
                  "bytes",
                  spec.config.source, what, shape.batch, shape.max_context, shape.max_step_tokens);
  return *size;
}

uint64_t run_size(std::initializer_list<uint64_t> factors, const TransformerSpec& spec,
                  const TransformerRunShape& shape, const char* what) {
  return or_refuse(checked_product(factors), spec, shape, what);
}

uint64_t run_sum(std::initializer_list<uint64_t> terms, const TransformerSpec& spec,
                 const TransformerRunShape& shape, const char* what) {
  return or_refuse(checked_sum(terms), spec, shape, what);
}

}  // namespace

uint64_t kv_cache_bytes(const TransformerSpec& spec, const TransformerRunShape& shape) {
  const TransformerConfig& c = spec.config;
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v < 0 ? 0 : v); };
  return run_size({2, u(shape.batch), u(shape.max_context), u(c.num_kv_heads), u(c.head_dim),
                   sizeof(float), u(c.num_layers)},
                  spec, shape, "KV cache");
}

double measure_host_attention_seconds(const TransformerConfig& c, int64_t batch,
                                      int64_t context, int repeats) {
  STOWAGE_EXPECTS(batch >= 1 && context >= 1 && repeats >= 1 && c.num_kv_heads >= 1 &&
                      c.head_dim >= 1,
                  InvalidInputError,
                  "measure_host_attention_seconds: expected batch, context and repeats >= 1, "
                  "found batch {}, context {}, repeats {}",
                  batch, context, repeats);
  const std::optional<uint64_t> floats =
      checked_product({static_cast<uint64_t>(batch), static_cast<uint64_t>(context),
                       static_cast<uint64_t>(c.num_kv_heads), static_cast<uint64_t>(c.head_dim)});
  STOWAGE_EXPECTS(floats && *floats <= (uint64_t{1} << 40), InvalidInputError,
                  "measure_host_attention_seconds: a KV cache of batch {} x context {} x {} kv "
                  "heads x {} is too large to measure",
                  batch, context, c.num_kv_heads, c.head_dim);
  const size_t kv = static_cast<size_t>(*floats);
  std::vector<float> k_cache(kv), v_cache(kv);
  for (size_t i = 0; i < kv; ++i) {
    k_cache[i] = static_cast<float>(static_cast<int>(i % 97) - 48) / 97.0f;
    v_cache[i] = static_cast<float>(static_cast<int>(i % 89) - 44) / 89.0f;
  }
  const int64_t q_cols = c.num_heads * c.head_dim;
  std::vector<float> q(static_cast<size_t>(batch * q_cols), 0.25f);
  std::vector<float> out(q.size());
  kernels::AttentionArgs a;
  a.batch = batch;
  a.tokens = 1;
  a.heads = c.num_heads;
  a.kv_heads = c.num_kv_heads;
  a.head_dim = c.head_dim;
  a.past = context - 1;
  a.capacity = context;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  a.q = q.data();
  a.q_stride = q_cols;
  a.k_cache = k_cache.data();
  a.v_cache = v_cache.data();
  a.out = out.data();
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    kernels::attention(a, StreamRef());
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

uint64_t transformer_working_bytes(const TransformerSpec& spec, const TransformerRunShape& shape,
                                   const LinearKernels& kernels) {
  const TransformerConfig& c = spec.config;
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v < 0 ? 0 : v); };
  const char* what = "activations";
  run_size({u(shape.batch), u(shape.max_step_tokens)}, spec, shape, what);
  const ActivationSizes a = activation_sizes(spec, shape);
  const uint64_t rows = u(a.rows);
  const uint64_t floats =
      run_sum({run_size({rows, u(c.hidden_size), 3}, spec, shape, what),        // h, x, tmp
               run_size({rows, u(a.q_cols), 2}, spec, shape, what),             // q, attn
               run_size({rows, u(a.kv_cols), 2}, spec, shape, what),            // k, v
               run_size({rows, u(a.mlp_cols), 3}, spec, shape, what),           // gate, up, act
               run_size({u(a.head_rows), u(c.vocab_size)}, spec, shape, what),  // logits
               u(c.head_dim / 2),                                               // inv_freq
               run_size({rows, u(a.experts)}, spec, shape, what),  // router logits
               run_size({rows, u(a.top_k), 2}, spec, shape, what),  // routing, predicted weights
               a.experts > 0 ? rows : 0,                             // shared expert's gate
               a.experts > 0 ? run_size({u(shape.batch), u(c.hidden_size)}, spec, shape, what)
                             : 0,  // the host-computed experts' sum
               run_size({u(a.top_k), u(a.mlp_cols)}, spec, shape, what)},  // split activations
              spec, shape, what);
  const uint64_t ints =
      run_sum({run_size({rows, 2}, spec, shape, what), 1,
               run_size({rows, u(a.top_k), 2}, spec, shape, what)},  // expert ids, predicted
              spec, shape, what);
  std::vector<LinearSpec> linears;
  for (const DecoderLayerSpec& l : spec.layers) {
    for (const Projection& p : kProjections) {
      if ((l.*p.spec).out_features() > 0) linears.push_back(l.*p.spec);
    }
    if (!l.sparse) continue;
    linears.push_back(l.moe.router);
    for (const ExpertSpec* e : {&l.moe.experts.front(), &l.moe.shared}) {
      if (e->gate.out_features() == 0) continue;
      linears.insert(linears.end(), {e->gate, e->up, e->down});
    }
    if (l.moe.has_shared) linears.push_back(l.moe.shared_gate);
  }
  linears.push_back(spec.head);
  // 15, the KV cache's 2 per layer, and a sparse model's 6 (router logits,
  // expert ids and weights, the shared gate, the predicted ids and weights).
  const uint64_t buffers = 15 + 2 * u(c.num_layers) + (a.experts > 0 ? 6 : 0);
  const uint64_t expert_cache =
      run_size({u(shape.expert_cache_slots), expert_slot_bytes(spec)}, spec, shape, "expert cache");
  return run_sum({expert_cache, run_size({floats, sizeof(float)}, spec, shape, what),
                  run_size({ints, sizeof(int32_t)}, spec, shape, what),
                  kv_cache_bytes(spec, shape), run_size({buffers, kAllocationSlack}, spec, shape, what),
                  kernels.working_bytes(linears, a.rows)},
                 spec, shape, what);
}

TransformerState::TransformerState(const TransformerSpec& spec, const TransformerRunShape& shape,
                                   MemoryResource& device, MemoryResource& pinned, StreamRef stream,
                                   bool device_kv_cache)
    : shape_(shape),
      tier(stream.is_null() ? Tier::pinned_host() : stream.tier()),
      spec_(&spec),
      device_(&device),
      pinned_(&pinned),
      stream_(stream) {
  const TransformerConfig& c = spec.config;
  STOWAGE_EXPECTS(
      shape.batch > 0 && shape.max_step_tokens > 0 && shape.max_context >= shape.max_step_tokens,
      InvalidInputError,
      "transformer run: expected batch > 0 and 0 < step tokens <= context, found "
      "batch {}, step tokens {}, context {}",
      shape.batch, shape.max_step_tokens, shape.max_context);
  const ActivationSizes a = activation_sizes(spec, shape);
  const size_t rows = static_cast<size_t>(a.rows);
  const size_t f = sizeof(float);
  const size_t cache = static_cast<size_t>(shape.batch * shape.max_context * a.kv_cols) * f;
  k_cache.resize(static_cast<size_t>(c.num_layers));
  v_cache.resize(static_cast<size_t>(c.num_layers));
  if (device_kv_cache) {
    for (int64_t i = 0; i < c.num_layers; ++i) {
      k_cache[i] = Buffer(device, cache, stream);
      v_cache[i] = Buffer(device, cache, stream);
    }
  }
  h = Buffer(device, rows * c.hidden_size * f, stream);
  x = Buffer(device, rows * c.hidden_size * f, stream);
  tmp = Buffer(device, rows * c.hidden_size * f, stream);
  q = Buffer(device, rows * a.q_cols * f, stream);
  attn = Buffer(device, rows * a.q_cols * f, stream);
  k = Buffer(device, rows * a.kv_cols * f, stream);
  v = Buffer(device, rows * a.kv_cols * f, stream);
  gate = Buffer(device, rows * a.mlp_cols * f, stream);
  up = Buffer(device, rows * a.mlp_cols * f, stream);
  act = Buffer(device, rows * a.mlp_cols * f, stream);
  if (a.experts > 0) {
    router_logits = Buffer(device, rows * a.experts * f, stream);
    moe_ids = Buffer(device, rows * a.top_k * sizeof(int32_t), stream);
    moe_weights = Buffer(device, rows * a.top_k * f, stream);
    shared_gate = Buffer(device, rows * f, stream);
    host_moe_ids = Buffer(pinned, rows * a.top_k * sizeof(int32_t));
    predicted_ids = Buffer(device, rows * a.top_k * sizeof(int32_t), stream);
    predicted_weights = Buffer(device, rows * a.top_k * f, stream);
    host_predicted_ids = Buffer(pinned, rows * a.top_k * sizeof(int32_t));
    host_moe_weights = Buffer(pinned, rows * a.top_k * f);
    host_expert_sum =
        Buffer(device, static_cast<size_t>(shape.batch * c.hidden_size) * f, stream);
    split_act = Buffer(device, static_cast<size_t>(a.top_k * a.mlp_cols) * f, stream);
  }
  logits = Buffer(device, static_cast<size_t>(a.head_rows * c.vocab_size) * f, stream);
  positions = Buffer(device, rows * sizeof(int32_t), stream);
  ids = Buffer(device, rows * sizeof(int32_t), stream);
  inv_freq = Buffer(device, static_cast<size_t>(c.head_dim / 2) * f, stream);
  host_ids = Buffer(pinned, rows * sizeof(int32_t));
  host_positions = Buffer(pinned, rows * sizeof(int32_t));
  host_rows = Buffer(pinned, rows * c.hidden_size * f);
  past_device = Buffer(device, sizeof(int32_t), stream);
  host_past = Buffer(pinned, sizeof(int32_t));
}

void TransformerState::place_kv_cache(const std::vector<bool>& on_host, bool scratch) {
  STOWAGE_EXPECTS(on_host.size() == k_cache.size(), InvalidInputError,
                  "place_kv_cache: expected one entry per decoder layer ({}), found {}",
                  k_cache.size(), on_host.size());
  const size_t cache = static_cast<size_t>(shape_.batch * shape_.max_context *
                                           spec_->config.num_kv_heads * spec_->config.head_dim) *
                       sizeof(float);
  // Free first, so the peak never holds both placements.
  for (size_t i = 0; i < on_host.size(); ++i) {
    if (on_host[i]) {
      k_cache[i] = Buffer();
      v_cache[i] = Buffer();
    }
  }
  if (!scratch) {
    k_scratch = Buffer();
    v_scratch = Buffer();
  }
  for (size_t i = 0; i < on_host.size(); ++i) {
    if (!on_host[i] && k_cache[i].empty()) {
      k_cache[i] = Buffer(*device_, cache, stream_);
      v_cache[i] = Buffer(*device_, cache, stream_);
    }
  }
  if (scratch && k_scratch.empty()) {
    k_scratch = Buffer(*device_, cache, stream_);
    v_scratch = Buffer(*device_, cache, stream_);
  }
}

bool TransformerState::device_kv_cache(size_t layer) const {
  return layer < k_cache.size() && !k_cache[layer].empty();
}

uint64_t TransformerState::device_kv_cache_bytes() const {
  uint64_t total = k_scratch.size() + v_scratch.size();
  for (size_t i = 0; i < k_cache.size(); ++i) total += k_cache[i].size() + v_cache[i].size();
  return total;
}

TransformerState::HostCompute& TransformerState::host_compute() {
  if (host_.h.empty()) {
    const TransformerConfig& c = spec_->config;
    const ActivationSizes a = activation_sizes(*spec_, shape_);
    const size_t rows = static_cast<size_t>(a.rows);
    host_.tmp.assign(rows * c.hidden_size, 0.0f);
    host_.q.assign(rows * a.q_cols, 0.0f);
    host_.attn.assign(rows * a.q_cols, 0.0f);
    host_.k.assign(rows * a.kv_cols, 0.0f);
    host_.v.assign(rows * a.kv_cols, 0.0f);
    host_.gate.assign(rows * a.mlp_cols, 0.0f);
    host_.up.assign(rows * a.mlp_cols, 0.0f);
    host_.act.assign(rows * a.mlp_cols, 0.0f);
    host_.x = Buffer(*pinned_, rows * c.hidden_size * sizeof(float));
    host_.h = Buffer(*pinned_, rows * c.hidden_size * sizeof(float));
    host_.y = Buffer(*pinned_, rows * c.hidden_size * sizeof(float));
  }
  return host_;
}

TransformerState::HostExpertScratch& TransformerState::host_expert_scratch() {
  if (host_experts_.y.empty()) {
    const TransformerConfig& c = spec_->config;
    const size_t rows = static_cast<size_t>(shape_.batch);
    const size_t mlp = static_cast<size_t>(activation_sizes(*spec_, shape_).mlp_cols);
    host_experts_.y.assign(rows * c.hidden_size, 0.0f);
    host_experts_.gate.assign(rows * mlp, 0.0f);
    host_experts_.up.assign(rows * mlp, 0.0f);
    host_experts_.act.assign(rows * mlp, 0.0f);
    host_experts_.x = Buffer(*pinned_, rows * c.hidden_size * sizeof(float));
    host_experts_.sum = Buffer(*pinned_, rows * c.hidden_size * sizeof(float));
    host_experts_.partial_act = Buffer(
        *pinned_, static_cast<size_t>(activation_sizes(*spec_, shape_).top_k) * mlp * sizeof(float));
  }
  return host_experts_;
}

LinearKernels& TransformerModel::host_kernels() {
  if (host_kernels_ == nullptr) host_kernels_ = make_host_compute_linear_kernels(host_threads_);
  return *host_kernels_;
}

void TransformerModel::set_host_threads(int threads) {
  STOWAGE_EXPECTS(threads >= 0, InvalidInputError,
                  "host compute threads: expected 0 (the default) or more, found {}", threads);
  if (threads != host_threads_) host_kernels_.reset();
  host_threads_ = threads;
}

int TransformerModel::host_threads() const {
  return host_threads_ > 0 ? host_threads_ : default_host_compute_threads();
}

TransformerModel::TransformerModel(TransformerSpec spec, LinearKernels& kernels)
    : spec_(std::move(spec)), kernels_(kernels) {
  STOWAGE_EXPECTS(!spec_.layers.empty(), InvalidInputError,
                  "{}: a transformer needs at least one layer", spec_.config.source);
  inv_freq_ = rope_inverse_frequencies(spec_.config);
  for (size_t i = 0; i < spec_.layers.size(); ++i) build_layer(i);
  build_norm_and_head();
}

std::vector<hooks::Module*> TransformerModel::execution_order() const {
  std::vector<hooks::Module*> order;
  for (size_t i = 0; i < layers_.size(); ++i) {
    order.push_back(layers_[i]);
    for (hooks::Module* m : {moe_[i].router, moe_[i].shared_gate, moe_[i].shared}) {
      if (m != nullptr) order.push_back(m);
    }
  }
  order.push_back(norm_);
  order.push_back(head_);
  return order;
}

void TransformerModel::set_embedding_source(TensorView device_table, TensorView host_table) {
  device_table_ = device_table;
  host_table_ = host_table;
}

TransformerModel::LayerBuffers TransformerModel::device_buffers(TransformerState& st, size_t i) {
  auto f = [](Buffer& b) { return static_cast<float*>(b.data()); };
  LayerBuffers b;
  b.x = f(st.x);
  b.tmp = f(st.tmp);
  b.q = f(st.q);
  b.k = f(st.k);
  b.v = f(st.v);
  b.attn = f(st.attn);
  b.gate = f(st.gate);
  b.up = f(st.up);
  b.act = f(st.act);
  b.positions = static_cast<const int32_t*>(st.positions.data());
  b.past = static_cast<const int32_t*>(st.past_device.data());
  b.inv_freq = f(st.inv_freq);
  // A layer whose cache is on the host (TransformerState::place_kv_cache)
  // computes here through the shared scratch.
  const bool own = !st.k_cache[i].empty();
  STOWAGE_EXPECTS(own || !st.k_scratch.empty(), InternalError,
                  "decoder layer {} computes on {} but its KV cache was placed on the host "
                  "with no device scratch",
                  i, st.tier.to_string());
  b.k_cache = f(own ? st.k_cache[i] : st.k_scratch);
  b.v_cache = f(own ? st.v_cache[i] : st.v_scratch);
  b.tier = st.tier;
  return b;
}

TransformerModel::LayerBuffers TransformerModel::host_buffers(TransformerState& st, size_t i) {
  const TransformerConfig& c = spec_.config;
  TransformerState::HostCompute& hc = st.host_compute();
  if (hc.k_cache.size() <= i) {
    hc.k_cache.resize(spec_.layers.size());
    hc.v_cache.resize(spec_.layers.size());
  }
  if (hc.k_cache[i].empty()) {
    const size_t cache = static_cast<size_t>(st.shape_.batch * st.shape_.max_context *
                                             c.num_kv_heads * c.head_dim) *
                         sizeof(float);
    hc.k_cache[i].assign(cache / sizeof(float), 0.0f);
    hc.v_cache[i].assign(cache / sizeof(float), 0.0f);
  }
  LayerBuffers b;
  b.x = static_cast<float*>(hc.x.data());
  b.tmp = hc.tmp.data();
  b.q = hc.q.data();
  b.k = hc.k.data();
  b.v = hc.v.data();
  b.attn = hc.attn.data();
  b.gate = hc.gate.data();
  b.up = hc.up.data();
  b.act = hc.act.data();
  b.positions = static_cast<const int32_t*>(st.host_positions.data());
  b.past = static_cast<const int32_t*>(st.host_past.data());
  b.inv_freq = inv_freq_.data();
  b.k_cache = hc.k_cache[i].data();
  b.v_cache = hc.v_cache[i].data();
  b.tier = Tier::pageable_host();
  return b;
}

void TransformerModel::copy_kv_cache_to_host(TransformerState& state, size_t layer,
                                             StreamRef stream) {
  STOWAGE_EXPECTS(layer < spec_.layers.size(), InvalidInputError,
                  "copy_kv_cache_to_host: layer {} of {}", layer, spec_.layers.size());
  const LayerBuffers host = host_buffers(state, layer);
  const LayerBuffers device = device_buffers(state, layer);
  const TransformerConfig& c = spec_.config;
  const size_t bytes = static_cast<size_t>(state.shape_.batch * state.shape_.max_context *
                                           c.num_kv_heads * c.head_dim) *
                       sizeof(float);
  stream.copy(host.k_cache, device.k_cache, bytes);
  stream.copy(host.v_cache, device.v_cache, bytes);
}

void TransformerModel::run_layer(size_t i, const LayerWeights& w, const LayerBuffers& b,
                                 const LayerStep& step, float* h, LinearKernels& kernels,
                                 StreamRef s) {
  const DecoderLayerSpec& l = spec_.layers[i];
  const TransformerConfig& c = spec_.config;
  const int64_t rows = step.rows;
  const int64_t q_cols = c.num_heads * c.head_dim;
  const int64_t kv_cols = c.num_kv_heads * c.head_dim;
  auto view = [&](float* p, int64_t cols) { return TensorView(p, DType::kF32, Shape{rows, cols}, b.tier); };
  const float eps = static_cast<float>(c.rms_norm_eps);
  {
    // The input norm goes with the q/k/v projections (one pass where the
    // kernels can); its output stays in b.x.
    const LinearKernels::InputNorm input_norm{w.input_norm, l.input_norm_dtype, eps};
    const LinearWeights* qkv[3] = {&w.projections[0], &w.projections[1], &w.projections[2]};
    const TensorView outputs[3] = {view(b.q, q_cols), view(b.k, kv_cols), view(b.v, kv_cols)};
    kernels.norm_linear_group(s, input_norm, view(h, c.hidden_size), view(b.x, c.hidden_size), qkv,
                              outputs, 3);
  }
  if (c.qk_norm) {
    // Qwen3: each head's query and key normalized over head_dim before RoPE.
    kernels::rms_norm({rows * c.num_heads, c.head_dim, b.q, w.q_norm, l.q_norm_dtype, eps, b.q}, s);
    kernels::rms_norm(
        {rows * c.num_kv_heads, c.head_dim, b.k, w.k_norm, l.k_norm_dtype, eps, b.k}, s);
  }
  // Queries and keys rotated, keys and values appended, then attention: one
  // launch at a decode step on CUDA.
  kernels::RopeAppendAttentionArgs rope_attention;
  rope_attention.rope = {rows, c.num_heads, c.head_dim, b.q, b.positions, b.inv_freq, b.k,
                         c.num_kv_heads};
  rope_attention.append = {step.batch, step.tokens, c.num_kv_heads, c.head_dim, step.past, b.past,
                           step.capacity, b.k, kv_cols, b.k_cache, b.v, b.v_cache};
  kernels::AttentionArgs& attention = rope_attention.attention;
  attention.batch = step.batch;
  attention.tokens = step.tokens;
  attention.heads = c.num_heads;
  attention.kv_heads = c.num_kv_heads;
  attention.head_dim = c.head_dim;
  attention.past = step.past;
  attention.past_at = b.past;
  attention.capacity = step.capacity;
  attention.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  attention.q = b.q;
  attention.q_stride = q_cols;
  attention.k_cache = b.k_cache;
  attention.v_cache = b.v_cache;
  attention.out = b.attn;
  kernels::rope_append_attention(rope_attention, s);
  // A tensor-parallel rank other than 0 writes its partial sum alone; the
  // all-reduce adds rank 0's residual once (set_tensor_parallel).
  const bool partial = tensor_parallel_.rank != 0;
  const size_t hidden_floats = static_cast<size_t>(rows * c.hidden_size);
  if (partial) {
    kernels.linear(s, w.projections[3], view(b.attn, q_cols), view(h, c.hidden_size), false);
  } else {
    kernels.linear_add(s, w.projections[3], view(b.attn, q_cols), view(b.tmp, c.hidden_size),
                       view(h, c.hidden_size));
  }
  if (tensor_parallel()) tensor_parallel_.all_reduce_sum(s, h, hidden_floats);
  if (l.sparse) {
    // The experts read the normalized hidden state in b.x (run_moe_block).
    kernels::rms_norm({rows, c.hidden_size, h, w.post_norm, l.post_norm_dtype, eps, b.x}, s);
    return;
  }
  // The post-attention norm goes with the gate and up projections, into b.x.
  const LinearKernels::InputNorm post_norm{w.post_norm, l.post_norm_dtype, eps};
  run_swiglu(&w.projections[4], c.intermediate_size, h, h, b, rows, kernels, s,
             /*accumulate=*/!partial, &post_norm);
  if (tensor_parallel()) tensor_parallel_.all_reduce_sum(s, h, hidden_floats);
}

void TransformerModel::set_tensor_parallel(TensorParallelRole role) {
  STOWAGE_EXPECTS(!role.all_reduce_sum || !has_sparse_layers(), InvalidInputError,
                  "{}: tensor parallelism splits dense layers only, and this model has "
                  "mixture-of-experts layers",
                  spec_.config.source);
  STOWAGE_EXPECTS(role.rank >= 0 && (role.rank == 0 || role.all_reduce_sum), InvalidInputError,
                  "tensor parallelism: rank {} needs an all-reduce", role.rank);
  tensor_parallel_ = std::move(role);
}

TransformerModel::LayerBuffers TransformerModel::mlp_buffers(TransformerState& st, bool host) {
  LayerBuffers b;
  if (host) {
    TransformerState::HostCompute& hc = st.host_compute();
    b.gate = hc.gate.data();
    b.up = hc.up.data();
    b.act = hc.act.data();
    b.tier = Tier::pageable_host();
  } else {
    b.gate = static_cast<float*>(st.gate.data());
    b.up = static_cast<float*>(st.up.data());
    b.act = static_cast<float*>(st.act.data());
    b.tier = st.tier;
  }
  return b;
}

void TransformerModel::run_swiglu(const LinearWeights* w, int64_t inter, const float* x, float* y,
                                  const LayerBuffers& b, int64_t rows, LinearKernels& kernels,
                                  StreamRef s, bool accumulate,
                                  const LinearKernels::InputNorm* norm) {
  const int64_t hidden = spec_.config.hidden_size;
  auto view = [&](const float* p, int64_t cols) {
    return TensorView(const_cast<float*>(p), DType::kF32, Shape{rows, cols}, b.tier);
  };
  if (norm != nullptr) {
    kernels.norm_swiglu_linear(s, *norm, view(x, hidden), view(b.x, hidden), w[0], w[1],
                               view(b.gate, inter), view(b.up, inter), view(b.act, inter));
  } else {
    kernels.swiglu_linear(s, w[0], w[1], view(x, hidden), view(b.gate, inter), view(b.up, inter),
                          view(b.act, inter));
  }
  if (accumulate) {
    kernels.linear_add(s, w[2], view(b.act, inter), view(b.tmp, hidden), view(y, hidden));
  } else {
    kernels.linear(s, w[2], view(b.act, inter), view(y, hidden), false);
  }
}

void TransformerModel::compute_on_host(StreamRef s, TransformerState& st, const float* in,
                                       int64_t in_floats, float* out, int64_t out_floats,
                                       std::function<void(const float*, float*)> fn) {
  TransformerState::HostCompute& hc = st.host_compute();
  float* host_in = static_cast<float*>(hc.h.data());
  float* host_out = static_cast<float*>(hc.y.data());
  s.copy(host_in, in, static_cast<size_t>(in_floats) * sizeof(float));
  s.host_task([fn = std::move(fn), host_in, host_out] { fn(host_in, host_out); });
  // Not through the copy engine: it may be busy with a weight fetch.
  kernels::upload_from_pinned(out, host_out, static_cast<size_t>(out_floats) * sizeof(float), s);
}

void TransformerModel::HostWorkMeter::enqueue(const hooks::ForwardContext& ctx) {
  for (size_t t = 0; t < ctx.tensor_count(); ++t) {
    if (ctx.has_tensor_at(t)) bytes += ctx.tensor_at(t).bytes();
  }
  ++forwards;
}

void TransformerModel::HostWorkMeter::add_since(std::chrono::steady_clock::time_point start) {
  ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
}

void TransformerModel::build_layer(size_t i) {
  const DecoderLayerSpec& layer = spec_.layers[i];
  hooks::Module& m = root_.add_descendant(layer.module);
  for (const std::string& name : layer.tensors) m.add_tensor(name);
  std::vector<LinearTensorIndices> proj;
  for (const Projection& p : kProjections) {
    if (layer.sparse && p.spec == &DecoderLayerSpec::gate) break;
    proj.push_back(linear_tensor_indices(m, std::string(p.prefix) + "."));
  }
  const int in_norm = m.tensor_index("input_layernorm.weight");
  const int post_norm = m.tensor_index("post_attention_layernorm.weight");
  const int q_norm = m.tensor_index("self_attn.q_norm.weight");
  const int k_norm = m.tensor_index("self_attn.k_norm.weight");
  m.set_forward([this, i, proj, in_norm, post_norm, q_norm, k_norm](hooks::ForwardContext& ctx) {
    const DecoderLayerSpec& l = spec_.layers[i];
    TransformerState& st = *current_.state;
    const StreamRef s = ctx.stream();
    LayerWeights w;
    for (size_t p = 0; p < proj.size(); ++p) {
      w.projections.push_back(linear_weights(l.*kProjections[p].spec, proj[p], ctx));
    }
    w.input_norm = ctx.tensor_at(in_norm).data();
    w.post_norm = ctx.tensor_at(post_norm).data();
    if (q_norm >= 0) w.q_norm = ctx.tensor_at(q_norm).data();
    if (k_norm >= 0) w.k_norm = ctx.tensor_at(k_norm).data();
    float* h = ctx.inputs()[0].data_as<float>();
    // The step's sizes as of now: the host task below may run after the
    // state has moved on to the next step.
    const LayerStep step{current_.rows, current_.tokens, st.shape_.batch, st.past_,
                         st.shape_.max_context};
    if (ctx.tensor_at(in_norm).tier().is_accelerator() || s.is_null()) {
      run_layer(i, w, device_buffers(st, i), step, h, kernels_, s);
      // Through the scratch: the keys and values go to the layer's host cache now.
      if (!st.device_kv_cache(i)) copy_kv_cache_to_host(st, i, s);
      return;
    }
    STOWAGE_EXPECTS(!tensor_parallel(), InvalidInputError,
                    "{}: a tensor-parallel rank computes its layers on its accelerator; this "
                    "one is set to compute on the host",
                    l.module);
    // The weights stay where they are (host RAM or the disk mapping): the
    // layer runs on the host, between a copy of the hidden state down and
    // one back up, in the compute stream's order.
    const LayerBuffers b = host_buffers(st, i);
    float* host_h = static_cast<float*>(st.host_compute().h.data());
    const size_t bytes = static_cast<size_t>(step.rows * spec_.config.hidden_size) * 4;
    LinearKernels& host_kernels = this->host_kernels();
    const bool decode = step.tokens == 1;
    if (decode) host_layer_meter_.enqueue(ctx);
    s.copy(host_h, h, bytes);
    s.host_task([this, i, w, b, step, host_h, &host_kernels, decode] {
      const auto start = std::chrono::steady_clock::now();
      run_layer(i, w, b, step, host_h, host_kernels, StreamRef());
      if (decode) host_layer_meter_.add_since(start);
    });
    // Up by the accelerator's loads: the copy engine may be busy with the
    // fetch of a streamed layer (kernels::upload_from_pinned).
    kernels::upload_from_pinned(h, host_h, bytes, s);
    // A sparse layer's experts read the normalized hidden state on the accelerator.
    if (l.sparse) kernels::upload_from_pinned(st.x.data(), b.x, bytes, s);
  });
  layers_.push_back(&m);
  moe_.emplace_back();
  if (layer.sparse) build_moe(i);
}

void TransformerModel::build_norm_and_head() {
  hooks::Module& norm = root_.add_descendant(kFinalNormModule);
  norm.add_tensor("weight");
  norm_ = &norm;
  norm.set_forward([this](hooks::ForwardContext& ctx) {
    const TransformerConfig& c = spec_.config;
    kernels::rms_norm({current_.head_rows, c.hidden_size, ctx.inputs()[0].data_as<float>(),
                       ctx.tensor(std::string("weight")).data(), spec_.final_norm_dtype,
                       static_cast<float>(c.rms_norm_eps), ctx.outputs()[0].data_as<float>()},
                      ctx.stream());
  });
  hooks::Module& head = root_.add_descendant(spec_.head_module);
  for (const std::string& name : spec_.head_tensors) head.add_tensor(name);
  if (spec_.head_module != kEmbeddingModule)
    root_.add_descendant(kEmbeddingModule).add_tensor("weight");
  head_ = &head;
  const LinearTensorIndices indices = linear_tensor_indices(head, "");
  head.set_forward([this, indices](hooks::ForwardContext& ctx) {
    kernels_.linear(ctx.stream(), linear_weights(spec_.head, indices, ctx), ctx.inputs()[0],
                    ctx.outputs()[0], false);
  });
}

TensorView TransformerModel::step(hooks::HookRegistry& registry, StreamRef stream,
                                  TransformerState& state, const std::vector<int32_t>& ids,
                                  int64_t tokens) {
  prepare_step(stream, state, ids, tokens);
  const TensorView logits = enqueue_step(registry, stream, state, tokens);
  advance_step(state, tokens);
  return logits;
}

void TransformerModel::prepare_step(StreamRef stream, TransformerState& state,
                                    const std::vector<int32_t>& ids, int64_t tokens) {
  const TransformerConfig& c = spec_.config;
  const TransformerRunShape& shape = state.shape_;
  STOWAGE_EXPECTS(tokens > 0 && tokens <= shape.max_step_tokens, InvalidInputError,
                  "transformer step: expected 1 to {} tokens per sequence, found {}",
                  shape.max_step_tokens, tokens);
  STOWAGE_EXPECTS(state.past_ + tokens <= shape.max_context, InvalidInputError,
                  "transformer step: {} cached + {} new positions exceed the KV cache's {}",
                  state.past_, tokens, shape.max_context);
  const int64_t rows = shape.batch * tokens;
  STOWAGE_EXPECTS(static_cast<int64_t>(ids.size()) == rows, InvalidInputError,
                  "transformer step: expected {} token ids ({} sequences x {}), found {}", rows,
                  shape.batch, tokens, ids.size());
  for (int32_t id : ids) {
    STOWAGE_EXPECTS(id >= 0 && id < c.vocab_size, InvalidInputError,
                    "token id {} is outside the vocabulary of {} tokens", id, c.vocab_size);
  }
  STOWAGE_EXPECTS(device_table_.data() != nullptr || host_table_.data() != nullptr,
                  InvalidInputError, "transformer step: no embedding table was given");
  // The pinned staging buffers below were read by the previous step's copies.
  stream.synchronize();
  auto* host_ids = static_cast<int32_t*>(state.host_ids.data());
  auto* host_positions = static_cast<int32_t*>(state.host_positions.data());
  for (int64_t r = 0; r < rows; ++r) {
    host_ids[r] = ids[r];
    host_positions[r] = static_cast<int32_t>(state.past_ + r % tokens);
  }
  *static_cast<int32_t*>(state.host_past.data()) = static_cast<int32_t>(state.past_);
  if (state.past_ == 0) {
    stream.copy(state.inv_freq.data(), inv_freq_.data(), inv_freq_.size() * sizeof(float));
  }
  if (device_table_.data() == nullptr) {
    // The table's host copy: gather the rows there; enqueue_step copies only them.
    kernels::embedding_lookup({rows, c.vocab_size, c.hidden_size, host_ids, host_table_.data(),
                               spec_.embedding_dtype,
                               static_cast<float*>(state.host_rows.data())},
                              StreamRef());
  }
}

TensorView TransformerModel::enqueue_step(hooks::HookRegistry& registry, StreamRef stream,
                                          TransformerState& state, int64_t tokens) {
  const TransformerConfig& c = spec_.config;
  const TransformerRunShape& shape = state.shape_;
  const int64_t rows = shape.batch * tokens;
  // The step's inputs go up by the accelerator's loads, not behind the copy
  // engine's prefetch of this step's first streamed layers.
  kernels::upload_from_pinned(state.positions.data(), state.host_positions.data(),
                              rows * sizeof(int32_t), stream);
  kernels::upload_from_pinned(state.past_device.data(), state.host_past.data(), sizeof(int32_t),
                              stream);
  float* h = static_cast<float*>(state.h.data());
  if (device_table_.data() != nullptr) {
    kernels::upload_from_pinned(state.ids.data(), state.host_ids.data(), rows * sizeof(int32_t),
                                stream);
    kernels::embedding_lookup(
        {rows, c.vocab_size, c.hidden_size, static_cast<const int32_t*>(state.ids.data()),
         device_table_.data(), spec_.embedding_dtype, h},
        stream);
  } else {
    const size_t row_bytes = static_cast<size_t>(c.hidden_size) * sizeof(float);
    kernels::upload_from_pinned(h, state.host_rows.data(), rows * row_bytes, stream);
  }
  current_.state = &state;
  current_.tokens = tokens;
  current_.rows = rows;
  current_.head_rows = shape.all_logits ? rows : shape.batch;
  const Tier tier = state.tier;
  const TensorView h_view = f32_view(state.h, rows, c.hidden_size, tier);
  for (size_t i = 0; i < layers_.size(); ++i) {
    registry.run_forward(*layers_[i], stream, {h_view}, {h_view});
    if (spec_.layers[i].sparse) run_moe_block(i, registry, stream, state);
  }
  const TensorView x_view = f32_view(state.x, current_.head_rows, c.hidden_size, tier);
  if (shape.all_logits) {
    registry.run_forward(*norm_, stream, {h_view}, {x_view});
  } else {
    const size_t row_bytes = static_cast<size_t>(c.hidden_size) * sizeof(float);
    for (int64_t b = 0; b < shape.batch; ++b) {
      stream.copy(static_cast<char*>(state.x.data()) + b * row_bytes,
                  reinterpret_cast<const char*>(h) + ((b + 1) * tokens - 1) * row_bytes, row_bytes);
    }
    registry.run_forward(*norm_, stream, {x_view}, {x_view});
  }
  const TensorView logits = f32_view(state.logits, current_.head_rows, c.vocab_size, tier);
  registry.run_forward(*head_, stream, {x_view}, {logits});
  return logits;
}

}  // namespace stowage::models
