#include "models/transformer_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace stowage::models {
namespace {

namespace json = boost::json;

std::string kind_of(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "an integer";
    case json::kind::double_:
      return "a number";
    case json::kind::string:
      return "a string";
    case json::kind::array:
      return "an array";
    case json::kind::object:
      return "an object";
  }
  return "a value";
}

// Typed reads of one JSON object with messages naming the file and key.
class ConfigReader {
 public:
  ConfigReader(const json::object& object, std::string file)
      : object_(object), file_(std::move(file)) {}

  const json::value* find(const char* key) const {
    const json::value* v = object_.if_contains(key);
    return (v == nullptr || v->is_null()) ? nullptr : v;
  }

  int64_t integer(const char* key) const {
    const json::value* v = find(key);
    STOWAGE_EXPECTS(v != nullptr, InvalidInputError, "{}: missing key '{}' (an integer)", file_,
                    key);
    return as_integer(*v, key);
  }
  std::optional<int64_t> optional_integer(const char* key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    return as_integer(*v, key);
  }
  int64_t positive(const char* key) const {
    const int64_t value = integer(key);
    STOWAGE_EXPECTS(value > 0, InvalidInputError,
                    "{}: key '{}': expected a positive integer, "
                    "found {}",
                    file_, key, value);
    return value;
  }
  double number(const char* key, double fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    return as_number(*v, key);
  }
  bool boolean(const char* key, bool fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    STOWAGE_EXPECTS(v->is_bool(), InvalidInputError,
                    "{}: key '{}': expected true or false, "
                    "found {}",
                    file_, key, kind_of(*v));
    return v->as_bool();
  }
  std::optional<std::string> string(const char* key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    STOWAGE_EXPECTS(v->is_string(), InvalidInputError, "{}: key '{}': expected a string, found {}",
                    file_, key, kind_of(*v));
    return std::string(v->as_string());
  }
  // An integer or an array of integers (eos_token_id).
  std::optional<std::vector<int32_t>> token_ids(const char* key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    std::vector<int32_t> ids;
    if (v->is_array()) {
      for (const json::value& e : v->as_array()) ids.push_back(token_id(e, key));
    } else {
      ids.push_back(token_id(*v, key));
    }
    return ids;
  }
  const std::string& file() const { return file_; }

  int64_t as_integer(const json::value& v, const char* key) const {
    if (v.is_int64()) return v.as_int64();
    if (v.is_uint64() && v.as_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
      return static_cast<int64_t>(v.as_uint64());
    }
    if (v.is_double()) {
      const double d = v.as_double();
      if (std::floor(d) == d && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
    }
    throw InvalidInputError(
        fmt::format("{}: key '{}': expected an integer, found {}", file_, key, json::serialize(v)));
  }
  double as_number(const json::value& v, const char* key) const {
    STOWAGE_EXPECTS(v.is_number(), InvalidInputError, "{}: key '{}': expected a number, found {}",
                    file_, key, kind_of(v));
    const double d = v.to_number<double>();
    STOWAGE_EXPECTS(std::isfinite(d), InvalidInputError,
                    "{}: key '{}': expected a finite number, found {}", file_, key, d);
    return d;
  }

 private:
  int32_t token_id(const json::value& v, const char* key) const {
    const int64_t id = as_integer(v, key);
    STOWAGE_EXPECTS(id >= 0 && id <= INT32_MAX, InvalidInputError,
                    "{}: key '{}': expected a token id >= 0, found {}", file_, key, id);
    return static_cast<int32_t>(id);
  }

  const json::object& object_;
  std::string file_;
};

json::object parse_object(const std::string& text, const std::string& file) {
  json::error_code ec;
  json::value value = json::parse(text, ec);
  STOWAGE_EXPECTS(!ec, InvalidInputError, "{}: not valid JSON ({})", file, ec.message());
  STOWAGE_EXPECTS(value.is_object(), InvalidInputError, "{}: expected a JSON object, found {}",
                  file, kind_of(value));
  return std::move(value.as_object());
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  STOWAGE_EXPECTS(in.good(), IoError, "{}: cannot be read", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  STOWAGE_EXPECTS(!in.bad(), IoError, "{}: read failed", path.string());
  return text.str();
}

TransformerArchitecture parse_architecture(const ConfigReader& config) {
  const json::value* archs = config.find("architectures");
  std::string name;
  if (archs != nullptr) {
    STOWAGE_EXPECTS(
        archs->is_array() && archs->as_array().size() == 1 && archs->as_array()[0].is_string(),
        InvalidInputError, "{}: key 'architectures': expected one architecture name, found {}",
        config.file(), json::serialize(*archs));
    name = std::string(archs->as_array()[0].as_string());
  } else {
    const auto model_type = config.string("model_type");
    STOWAGE_EXPECTS(model_type.has_value(), InvalidInputError,
                    "{}: missing key 'architectures' (e.g. [\"LlamaForCausalLM\"])", config.file());
    if (*model_type == "llama") name = "LlamaForCausalLM";
    if (*model_type == "qwen2") name = "Qwen2ForCausalLM";
    if (*model_type == "mistral") name = "MistralForCausalLM";
    if (*model_type == "mixtral") name = "MixtralForCausalLM";
    if (*model_type == "qwen2_moe") name = "Qwen2MoeForCausalLM";
    if (*model_type == "qwen3_moe") name = "Qwen3MoeForCausalLM";
    STOWAGE_EXPECTS(!name.empty(), InvalidInputError,
                    "{}: key 'model_type': expected llama, qwen2, mistral, mixtral, qwen2_moe or "
                    "qwen3_moe, found '{}'",
                    config.file(), *model_type);
  }
  if (name == "LlamaForCausalLM") return TransformerArchitecture::kLlama;
  if (name == "Qwen2ForCausalLM") return TransformerArchitecture::kQwen2;
  if (name == "MistralForCausalLM") return TransformerArchitecture::kMistral;
  if (name == "MixtralForCausalLM") return TransformerArchitecture::kMixtral;
  if (name == "Qwen2MoeForCausalLM") return TransformerArchitecture::kQwen2Moe;
  if (name == "Qwen3MoeForCausalLM") return TransformerArchitecture::kQwen3Moe;
  throw InvalidInputError(
      fmt::format("{}: key 'architectures': '{}' is not supported (expected LlamaForCausalLM, "
                  "Qwen2ForCausalLM, MistralForCausalLM, MixtralForCausalLM, "
                  "Qwen2MoeForCausalLM or Qwen3MoeForCausalLM)",
                  config.file(), name));
}

// transformers 5 writes "rope_parameters" ({"rope_theta", "rope_type", and the
// scaling's keys}); earlier versions "rope_theta" beside "rope_scaling".
void parse_rope(const ConfigReader& config, TransformerConfig& out) {
  const char* key = "rope_parameters";
  const json::value* scaling = config.find(key);
  if (scaling == nullptr) {
    key = "rope_scaling";
    scaling = config.find(key);
    out.rope_theta = config.number("rope_theta", 10000.0);
  }
  if (scaling == nullptr) return;
  STOWAGE_EXPECTS(scaling->is_object(), InvalidInputError,
                  "{}: key '{}': expected an object or null, found {}", config.file(), key,
                  kind_of(*scaling));
  const std::string file = config.file() + " " + key;
  ConfigReader rope(scaling->as_object(), file);
  if (std::string(key) == "rope_parameters") {
    out.rope_theta = rope.number("rope_theta", config.number("rope_theta", 10000.0));
  }
  std::optional<std::string> type = rope.string("rope_type");
  if (!type) type = rope.string("type");
  STOWAGE_EXPECTS(type.has_value(), InvalidInputError,
                  "{}: key 'rope_type': missing (expected \"llama3\" or \"default\")", file);
  if (*type == "default") return;
  STOWAGE_EXPECTS(*type == "llama3", InvalidInputError,
                  "{}: key 'rope_type': '{}' is not supported (expected \"llama3\" or "
                  "\"default\")",
                  file, *type);
  Llama3RopeScaling s;
  s.factor = rope.number("factor", s.factor);
  s.low_freq_factor = rope.number("low_freq_factor", s.low_freq_factor);
  s.high_freq_factor = rope.number("high_freq_factor", s.high_freq_factor);
  s.original_max_position_embeddings = rope.positive("original_max_position_embeddings");
  STOWAGE_EXPECTS(s.factor > 0 && s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor,
                  InvalidInputError,
                  "{}: expected factor > 0 and high_freq_factor > low_freq_factor > 0, found "
                  "factor {}, low_freq_factor {}, high_freq_factor {}",
                  file, s.factor, s.low_freq_factor, s.high_freq_factor);
  out.llama3_scaling = s;
}

// The sparse MLP's keys of the MoE architectures.
MoeConfig parse_moe(const ConfigReader& config, const TransformerConfig& out) {
  MoeConfig moe;
  const bool mixtral = out.architecture == TransformerArchitecture::kMixtral;
  const char* experts_key = mixtral || config.find("num_experts") == nullptr
                                ? "num_local_experts"
                                : "num_experts";
  moe.num_experts = config.positive(experts_key);
  moe.experts_per_token = config.positive("num_experts_per_tok");
  STOWAGE_EXPECTS(moe.experts_per_token <= moe.num_experts && moe.num_experts <= 1024,
                  InvalidInputError,
                  "{}: key 'num_experts_per_tok': expected at most {} ({}, itself at most 1024), "
                  "found {}",
                  config.file(), moe.num_experts, experts_key, moe.experts_per_token);
  moe.sparse_layers.assign(static_cast<size_t>(out.num_layers), true);
  if (mixtral) {
    moe.expert_intermediate_size = out.intermediate_size;
    moe.block = "block_sparse_moe";
    moe.gate_proj = "w1";
    moe.up_proj = "w3";
    moe.down_proj = "w2";
    return moe;
  }
  moe.expert_intermediate_size = config.positive("moe_intermediate_size");
  moe.renormalize = config.boolean("norm_topk_prob", false);
  if (out.architecture == TransformerArchitecture::kQwen2Moe) {
    moe.shared_expert_intermediate_size =
        config.optional_integer("shared_expert_intermediate_size").value_or(0);
    STOWAGE_EXPECTS(moe.shared_expert_intermediate_size >= 0, InvalidInputError,
                    "{}: key 'shared_expert_intermediate_size': expected >= 0, found {}",
                    config.file(), moe.shared_expert_intermediate_size);
  }
  const int64_t step = config.optional_integer("decoder_sparse_step").value_or(1);
  STOWAGE_EXPECTS(step > 0, InvalidInputError,
                  "{}: key 'decoder_sparse_step': expected a positive integer, found {}",
                  config.file(), step);
  std::vector<int64_t> dense;
  if (const json::value* only = config.find("mlp_only_layers")) {
    STOWAGE_EXPECTS(only->is_array(), InvalidInputError,
                    "{}: key 'mlp_only_layers': expected an array of layer indices, found {}",
                    config.file(), kind_of(*only));
    for (const json::value& v : only->as_array()) {
      dense.push_back(config.as_integer(v, "mlp_only_layers"));
    }
  }
  for (int64_t i = 0; i < out.num_layers; ++i) {
    const bool listed = std::find(dense.begin(), dense.end(), i) != dense.end();
    moe.sparse_layers[i] = !listed && (i + 1) % step == 0;
  }
  return moe;
}

}  // namespace

bool is_sparse_layer(const TransformerConfig& config, int64_t layer) {
  return config.moe.has_value() && layer >= 0 &&
         layer < static_cast<int64_t>(config.moe->sparse_layers.size()) &&
         config.moe->sparse_layers[layer];
}

const char* architecture_name(TransformerArchitecture architecture) {
  switch (architecture) {
    case TransformerArchitecture::kLlama:
      return "LlamaForCausalLM";
    case TransformerArchitecture::kQwen2:
      return "Qwen2ForCausalLM";
    case TransformerArchitecture::kMistral:
      return "MistralForCausalLM";
    case TransformerArchitecture::kMixtral:
      return "MixtralForCausalLM";
    case TransformerArchitecture::kQwen2Moe:
      return "Qwen2MoeForCausalLM";
    case TransformerArchitecture::kQwen3Moe:
      return "Qwen3MoeForCausalLM";
  }
  return "?";
}

TransformerConfig parse_transformer_config(const std::string& config_json,
                                           const std::string& generation_config_json,
                                           const std::string& source) {
  const std::string file = source + "/config.json";
  const json::object object = parse_object(config_json, file);
  ConfigReader config(object, file);
  TransformerConfig out;
  out.source = source;
  out.architecture = parse_architecture(config);
  out.vocab_size = config.positive("vocab_size");
  out.hidden_size = config.positive("hidden_size");
  out.intermediate_size = config.positive("intermediate_size");
  out.num_layers = config.positive("num_hidden_layers");
  out.num_heads = config.positive("num_attention_heads");
  out.num_kv_heads = config.optional_integer("num_key_value_heads").value_or(out.num_heads);
  STOWAGE_EXPECTS(out.num_kv_heads > 0 && out.num_heads % out.num_kv_heads == 0, InvalidInputError,
                  "{}: key 'num_key_value_heads': expected a divisor of num_attention_heads ({}), "
                  "found {}",
                  file, out.num_heads, out.num_kv_heads);
  const std::optional<int64_t> head_dim = config.optional_integer("head_dim");
  if (head_dim) {
    out.head_dim = *head_dim;
  } else {
    STOWAGE_EXPECTS(out.hidden_size % out.num_heads == 0, InvalidInputError,
                    "{}: hidden_size {} is not a multiple of num_attention_heads {} (and no "
                    "'head_dim' is given)",
                    file, out.hidden_size, out.num_heads);
    out.head_dim = out.hidden_size / out.num_heads;
  }
  STOWAGE_EXPECTS(out.head_dim > 0 && out.head_dim % 2 == 0, InvalidInputError,
                  "{}: key 'head_dim': expected a positive even number, found {}", file,
                  out.head_dim);
  out.max_position_embeddings = config.optional_integer("max_position_embeddings").value_or(0);
  out.rms_norm_eps = config.number("rms_norm_eps", 1e-6);
  STOWAGE_EXPECTS(out.rms_norm_eps >= 0, InvalidInputError,
                  "{}: key 'rms_norm_eps': expected >= 0, found {}", file, out.rms_norm_eps);
  parse_rope(config, out);
  STOWAGE_EXPECTS(out.rope_theta > 0, InvalidInputError,
                  "{}: key 'rope_theta': expected > 0, found {}", file, out.rope_theta);
  out.tie_word_embeddings = config.boolean("tie_word_embeddings", false);
  const std::optional<std::string> act = config.string("hidden_act");
  STOWAGE_EXPECTS(!act || *act == "silu" || *act == "swish", InvalidInputError,
                  "{}: key 'hidden_act': '{}' is not supported (expected \"silu\")", file,
                  act.value_or(""));
  const TransformerArchitecture arch = out.architecture;
  if (arch == TransformerArchitecture::kQwen2) {
    out.qkv_bias = true;
  } else if (arch == TransformerArchitecture::kQwen2Moe) {
    out.qkv_bias = config.boolean("qkv_bias", true);
  } else {
    out.qkv_bias = config.boolean("attention_bias", false);
    out.o_bias = out.qkv_bias;
  }
  out.mlp_bias = config.boolean("mlp_bias", false);
  out.qk_norm = arch == TransformerArchitecture::kQwen3Moe;
  if (arch == TransformerArchitecture::kMixtral || arch == TransformerArchitecture::kQwen2Moe ||
      arch == TransformerArchitecture::kQwen3Moe) {
    out.moe = parse_moe(config, out);
  }
  if (arch == TransformerArchitecture::kMistral || arch == TransformerArchitecture::kMixtral) {
    out.sliding_window = config.optional_integer("sliding_window");
  } else if ((arch == TransformerArchitecture::kQwen2 ||
              arch == TransformerArchitecture::kQwen2Moe ||
              arch == TransformerArchitecture::kQwen3Moe) &&
             config.boolean("use_sliding_window", false)) {
    out.sliding_window = config.optional_integer("sliding_window");
  }
  STOWAGE_EXPECTS(!out.sliding_window || *out.sliding_window > 0, InvalidInputError,
                  "{}: key 'sliding_window': expected a positive integer, found {}", file,
                  out.sliding_window.value_or(0));
  if (auto bos = config.token_ids("bos_token_id")) {
    if (!bos->empty()) out.bos_token_id = bos->front();
  }
  if (auto eos = config.token_ids("eos_token_id")) out.eos_token_ids = *eos;

  if (!generation_config_json.empty()) {
    const std::string gen_file = source + "/generation_config.json";
    const json::object gen_object = parse_object(generation_config_json, gen_file);
    ConfigReader gen(gen_object, gen_file);
    if (auto bos = gen.token_ids("bos_token_id")) {
      if (!bos->empty()) out.bos_token_id = bos->front();
    }
    if (auto eos = gen.token_ids("eos_token_id")) out.eos_token_ids = *eos;
  }
  for (int32_t id : out.eos_token_ids) {
    STOWAGE_EXPECTS(id < out.vocab_size, InvalidInputError,
                    "{}: eos_token_id {} is outside the vocabulary ({} tokens)", source, id,
                    out.vocab_size);
  }
  return out;
}

TransformerConfig read_transformer_config(const std::string& folder) {
  const std::filesystem::path dir(folder);
  const std::filesystem::path config = dir / "config.json";
  STOWAGE_EXPECTS(std::filesystem::is_regular_file(config), InvalidInputError,
                  "{}: expected a Hugging Face model folder with config.json, found none", folder);
  const std::filesystem::path generation = dir / "generation_config.json";
  std::string generation_text;
  if (std::filesystem::is_regular_file(generation)) generation_text = read_text(generation);
  return parse_transformer_config(read_text(config), generation_text, folder);
}

std::vector<float> rope_inverse_frequencies(const TransformerConfig& config) {
  // transformers computes these in float32 tensors: base ** (arange(0, d, 2) / d), then the
  // llama3 adjustments element-wise; the same operations in float here.
  const int64_t half = config.head_dim / 2;
  const float base = static_cast<float>(config.rope_theta);
  const float dim = static_cast<float>(config.head_dim);
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim;
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  if (config.llama3_scaling) {
    const Llama3RopeScaling& s = *config.llama3_scaling;
    const float factor = static_cast<float>(s.factor);
    const float low = static_cast<float>(s.low_freq_factor);
    const float high = static_cast<float>(s.high_freq_factor);
    const float old_len = static_cast<float>(s.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / low;
    const float high_freq_wavelen = old_len / high;
    const float two_pi = static_cast<float>(2.0 * M_PI);
    for (float& f : inv) {
      const float wavelen = two_pi / f;
      float scaled = wavelen > low_freq_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) {
        const float smooth = (old_len / wavelen - low) / (high - low);
        scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv;
}

void check_context_supported(const TransformerConfig& config, int64_t context) {
  STOWAGE_EXPECTS(!config.sliding_window || *config.sliding_window >= context, InvalidInputError,
                  "{}: sliding_window {} is smaller than the context of {} positions this run "
                  "needs (prompt + new tokens); attention with a sliding window shorter than the "
                  "context is not supported: use fewer tokens",
                  config.source, config.sliding_window.value_or(0), context);
  STOWAGE_EXPECTS(config.max_position_embeddings <= 0 || context <= config.max_position_embeddings,
                  InvalidInputError,
                  "{}: the run needs {} positions (prompt + new tokens), more than "
                  "max_position_embeddings {}",
                  config.source, context, config.max_position_embeddings);
}

}  // namespace stowage::models
