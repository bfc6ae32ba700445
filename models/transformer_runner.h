// A Hugging Face model folder of the transformer family loaded into an
// OffloadManager and generating tokens through the offload hook: the glue
// `stowage generate` and the tests use.
//
//   OffloadManager manager(platform, options);
//   TransformerRunner runner(manager, "path/to/model", kernels, load, shape);
//   GenerationResult r = runner.generate(prompt_ids, generation);
//
// Loading streams (offload/loader.h): each decoder layer, the final norm,
// the head and the embedding table is one module of the residency table,
// planned under the manager's budgets with the KV cache and activations kept
// free on the compute accelerator (a budget that cannot hold them fails
// before anything is loaded, naming the bytes). With LoadOptions::quantize
// the decoder layers' projections are quantized while loading (never the
// embeddings, norms or head); a folder already in bitsandbytes' layout is
// read as it is.
//
// Thread safety: one runner per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/stream.h"
#include "hooks/hook_registry.h"
#include "hooks/offload_hook.h"
#include "mmap_store/checkpoint.h"
#include "models/decode_graph.h"
#include "models/linear.h"
#include "models/transformer.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"

namespace stowage::models {

// The checkpoint of a model folder: model.safetensors.index.json (sharded)
// or model.safetensors. Throws InvalidInputError naming the folder when it
// has neither.
std::string model_checkpoint_path(const std::string& folder);

// Reads the folder's config and checkpoint header and describes the model
// (no tensor bytes are read but small quant-state parts).
TransformerSpec describe_model_folder(const std::string& folder,
                                      const mmap_store::Checkpoint& checkpoint);

// Describes `checkpoint` as a model of `config` (describe_model_folder
// without reading a folder: e.g. one tensor-parallel rank's part).
TransformerSpec describe_model_checkpoint(const TransformerConfig& config,
                                          const mmap_store::Checkpoint& checkpoint);

// Which checkpoint tensors quantize-on-load selects: the 2-D weights of the
// decoder layers' projections.
bool transformer_quantizes(const mmap_store::TensorInfo& info);

// The spec as it will be once loading has quantized the selected weights with
// `quantize` (unchanged without): what the kernels' scratch is sized for.
TransformerSpec planned_spec(TransformerSpec spec, const std::optional<LoadQuantization>& quantize);

struct GenerationOptions {
  int64_t max_new_tokens = 128;
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // nucleus sampling mass (1: off)
  int64_t top_k = 0;         // 0: off
  uint64_t seed = 0;
  bool ignore_eos = false;
  // Decode steps replayed from a captured graph (models/decode_graph.h);
  // the outputs are the same bits either way.
  bool graphs = false;
  // Modules computed on the host during the decode steps only (the prefill
  // streams them): OffloadManager::set_host_compute after the prefill, undone
  // when generate returns (offload/compute_split.h chooses them).
  std::vector<std::string> decode_host_modules;
  // Fill GenerationResult::routed_experts (MoE models).
  bool record_routing = false;
  // Called with each new token of sequence 0 as soon as it is known.
  std::function<void(int32_t)> on_token;
};

struct GenerationResult {
  std::vector<int32_t> output_ids;  // new tokens of sequence 0 (EOS included when hit)
  // Float32 logits, [positions, vocab] row-major, when the run keeps all
  // logits: every prompt position, then each decode step (sequence 0).
  std::vector<float> logits;
  int64_t prompt_tokens = 0;
  int64_t decode_steps = 0;          // steps after the prefill
  double prefill_seconds = 0;        // prompt in, first token out
  double decode_seconds = 0;         // the decode steps
  OffloadCounters prefill_counters;  // during the prefill
  OffloadCounters decode_counters;   // during the decode steps
  // With GenerationOptions::graphs: decode steps launched from the graph,
  // and why none were when the capture failed.
  int64_t graph_launches = 0;
  std::string graph_fallback;
  // With GenerationOptions::record_routing: per decoder layer, the experts
  // each position of sequence 0 was routed to (top_k per position, largest
  // weight first; prompt positions, then each decode step's); empty for dense
  // layers.
  std::vector<std::vector<int32_t>> routed_experts;
  // MoE models with an expert cache: its counters per decoder layer and how
  // often the predicted experts were routed, accumulated over this call.
  std::vector<ExpertCacheCounters> expert_cache;
  std::vector<ExpertPredictionCounters> expert_predictions;
  // Of the experts the split computed on the host, those that ran on the
  // lane beside the accelerator's (TransformerModel::set_host_expert_lane).
  uint64_t host_experts_beside = 0;
};

class TransformerRunner {
 public:
  // Loads `folder` into `manager` (see the file comment); `load`'s
  // module_order, module_of and working reserve are set here. The manager and
  // `kernels` must outlive the runner. Computes on the manager's compute
  // accelerator.
  TransformerRunner(OffloadManager& manager, const std::string& folder, LinearKernels& kernels,
                    LoadOptions load, const TransformerRunShape& shape);
  // The same for `checkpoint`, a model of `config` (config.source names it
  // in messages): e.g. one tensor-parallel rank's part of a folder
  // (parallel/tensor_shard.h).
  TransformerRunner(OffloadManager& manager, std::unique_ptr<mmap_store::Checkpoint> checkpoint,
                    const TransformerConfig& config, LinearKernels& kernels, LoadOptions load,
                    const TransformerRunShape& shape);
  ~TransformerRunner();

  const TransformerSpec& spec() const { return model_->spec(); }
  const LoadedCheckpoint& loaded() const { return loaded_; }
  hooks::HookRegistry& registry() { return registry_; }
  uint64_t working_bytes() const { return working_bytes_; }
  TransformerModel& model() { return *model_; }
  // The accelerator expert cache of shape.expert_cache_slots slots (kept in
  // the plan's working reserve, allocated after loading); nullptr without.
  ExpertCache* expert_cache() { return expert_cache_.get(); }
  // Makes the expert cache again with `policy`, predicting the next sparse
  // layer's experts when `predict` (the default: LFU with aging, predicting).
  // REQUIRES: a cache (shape.expert_cache_slots > 0), no generate() running.
  void configure_expert_cache(ReplacementPolicyKind policy, bool predict);
  // Where routed experts off the accelerator compute: from the expert cache
  // (or fetched on demand without one), on the host where their weights are
  // (OffloadManager::set_host_compute of each), or split each step between
  // the two by measured costs (TransformerModel::set_expert_split: those the
  // cache holds on the accelerator, the absent ones copied or computed on
  // the host, whichever finishes first). kSplit needs an expert cache and
  // the costs choose_expert_compute measured (InvalidInputError otherwise).
  // REQUIRES: no generate() running.
  enum class ExpertCompute { kAccelerator, kHost, kSplit };
  static const char* expert_compute_name(ExpertCompute where);
  void set_expert_compute(ExpertCompute where);
  ExpertCompute expert_compute() const { return expert_compute_; }
  // The automatic choice, by measurement: `steps` decode steps after
  // `prompt` each way (after one warm-up generation each), the fastest kept.
  // The host run's seconds per weight byte computed and the link's
  // `link_bytes_per_s` (measured by the caller; 0: unknown) make the split's
  // costs; the split is measured too where there is an expert cache and both
  // costs. Returns the seconds per step of each.
  struct ExpertComputeChoice {
    ExpertCompute chosen = ExpertCompute::kAccelerator;
    double accelerator_step_s = 0;
    double host_step_s = 0;
    double split_step_s = 0;  // 0: not measured
    std::optional<TransformerModel::ExpertSplitCosts> split_costs;
  };
  ExpertComputeChoice choose_expert_compute(const std::vector<int32_t>& prompt, int64_t steps,
                                            double link_bytes_per_s);
  // The last choose_expert_compute's measurement; nullopt before one.
  const std::optional<ExpertComputeChoice>& measured_expert_compute() const {
    return measured_expert_compute_;
  }
  // The run's shape; expert_cache_slots as allocated (an automatic cache's
  // count once chosen).
  const TransformerRunShape& shape() const { return shape_; }
  // The run's activations and KV caches (placed by generate(): each layer's
  // cache where the layer computes, TransformerState::place_kv_cache).
  const TransformerState& state() const { return *state_; }
  // Threads the layers computed on the host run on (TransformerModel::
  // set_host_threads; 0: models::default_host_compute_threads()).
  void set_host_threads(int threads) { model_->set_host_threads(threads); }
  int host_threads() const { return model_->host_threads(); }

  // Generates up to options.max_new_tokens after `prompt` for each of the
  // run's sequences (every sequence gets the same prompt). Stops early at an
  // end-of-sequence token of the config (sequence 0) unless ignore_eos.
  // Throws InvalidInputError for an empty prompt, ids outside the vocabulary
  // or a prompt + new tokens longer than the run's context.
  GenerationResult generate(const std::vector<int32_t>& prompt, const GenerationOptions& options);

 private:
  // TransformerRunShape::expert_cache_slots < 0: as many slots as the
  // accelerator's budget has room for after loading (0 without a budget).
  int64_t automatic_expert_cache_slots(uint64_t weights_in_use) const;
  std::vector<int32_t> choose(const TensorView& logits, int64_t rows_per_sequence,
                              const GenerationOptions& options, uint64_t step,
                              std::vector<float>* keep);

  OffloadManager& manager_;
  Tier accelerator_;
  Stream stream_;
  TransformerRunShape shape_;
  std::string module_prefix_;  // LoadOptions::module_prefix: the manager's module names
  std::unique_ptr<mmap_store::Checkpoint> checkpoint_;
  std::unique_ptr<TransformerModel> model_;
  hooks::HookRegistry registry_;
  std::unique_ptr<hooks::OffloadHook> hook_;
  LoadedCheckpoint loaded_;
  uint64_t working_bytes_ = 0;
  std::unique_ptr<TransformerState> state_;
  std::unique_ptr<DecodeGraph> graph_;  // made at the first decode step that asks for it
  std::unique_ptr<ExpertCache> expert_cache_;
  // The lane a split's host experts run on (TransformerModel::HostExpertLane);
  // the stream after its events, so that it drains before they go.
  Event host_lane_input_ready_, host_lane_done_;
  Stream host_lane_;
  ExpertCompute expert_compute_ = ExpertCompute::kAccelerator;
  std::vector<std::string> host_experts_;  // set to compute on the host by set_expert_compute
  std::optional<ExpertComputeChoice> measured_expert_compute_;
  Buffer chosen_device_;  // int32 [batch]
  Buffer chosen_host_;    // pinned int32 [batch]
};

}  // namespace stowage::models
