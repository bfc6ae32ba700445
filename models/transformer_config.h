// The configuration of a decoder-only transformer as a Hugging Face model
// folder describes it (config.json, generation_config.json): the Llama
// family (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM) and its
// mixture-of-experts relatives (MixtralForCausalLM, Qwen2MoeForCausalLM,
// Qwen3MoeForCausalLM).
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace stowage::models {

enum class TransformerArchitecture { kLlama, kQwen2, kMistral, kMixtral, kQwen2Moe, kQwen3Moe };

// "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", ...
const char* architecture_name(TransformerArchitecture architecture);

// rope_scaling of type "llama3" (transformers' _compute_llama3_parameters).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// The sparse MLP of a mixture-of-experts layer: a router (`gate`, [experts,
// hidden]) sends each token to its `experts_per_token` most probable experts
// (softmax, top-k, renormalized when `renormalize`), each a SwiGLU MLP of
// `expert_intermediate_size`; Qwen2-MoE adds a shared expert (every token)
// scaled by sigmoid(shared_expert_gate(x)).
struct MoeConfig {
  int64_t num_experts = 0;
  int64_t experts_per_token = 0;
  int64_t expert_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool renormalize = true;                      // Mixtral; Qwen: norm_topk_prob
  // Checkpoint names inside a decoder layer: "block_sparse_moe" with experts'
  // w1 (gate), w3 (up), w2 (down) for Mixtral; "mlp" with gate_proj, up_proj,
  // down_proj for Qwen.
  std::string block = "mlp";
  std::string gate_proj = "gate_proj", up_proj = "up_proj", down_proj = "down_proj";
  // Layers whose MLP is dense (Qwen's mlp_only_layers and decoder_sparse_step).
  std::vector<bool> sparse_layers;
};

struct TransformerConfig {
  TransformerArchitecture architecture = TransformerArchitecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> llama3_scaling;
  bool tie_word_embeddings = false;
  // Biases on the q, k and v projections (Qwen2 always; Llama's
  // attention_bias); on o_proj too when attention_bias is set (Llama).
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  // Qwen3's RMSNorm of each query and key head (q_norm, k_norm) before RoPE.
  bool qk_norm = false;
  // Set for the mixture-of-experts architectures.
  std::optional<MoeConfig> moe;
  // Mistral's sliding window in positions; nullopt: none.
  std::optional<int64_t> sliding_window;
  // Token ids from config.json, overridden by generation_config.json.
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  std::string source;  // the folder, for messages
};

// Whether decoder layer `layer` has a sparse (mixture-of-experts) MLP.
bool is_sparse_layer(const TransformerConfig& config, int64_t layer);

// Parses `folder`/config.json and, where present, generation_config.json.
// Throws InvalidInputError naming the file and key for a missing or
// malformed key, an unsupported architecture, model_type, hidden_act or
// rope_scaling type, and inconsistent sizes (heads not dividing, ...);
// IoError when config.json cannot be read.
TransformerConfig read_transformer_config(const std::string& folder);

// Parses config.json's text (and generation_config.json's, empty when
// absent); `source` names them in messages.
TransformerConfig parse_transformer_config(const std::string& config_json,
                                           const std::string& generation_config_json,
                                           const std::string& source);

// The rotary inverse frequencies, head_dim / 2 values: 1 / theta^(2i / d),
// then the llama3 scaling where configured, computed as transformers does
// (in double, rounded to float32 once).
std::vector<float> rope_inverse_frequencies(const TransformerConfig& config);

// Checks that attention over `context` positions is supported: a sliding
// window smaller than the context is not (InvalidInputError naming it).
void check_context_supported(const TransformerConfig& config, int64_t context);

}  // namespace stowage::models
