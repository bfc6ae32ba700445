// The decoder-only transformer family (Llama, Qwen2, Mistral, and the
// mixture-of-experts Mixtral, Qwen2-MoE, Qwen3-MoE) as modules of the hooks/
// API, so an offload hook streams each of them around its forward:
//
//   "model.layers.{i}"    one decoder layer: input_layernorm, self_attn.{q,k,v,o}_proj
//                         (q/k/v biases for Qwen2), post_attention_layernorm,
//                         mlp.{gate,up,down}_proj; its tensors named as in the
//                         checkpoint minus "model.layers.{i}."
//   "model.norm"          the final RMSNorm
//   "lm_head"             the output projection; with tied embeddings the head
//                         is "model.embed_tokens" itself
//   "model.embed_tokens"  the embedding table
//
// A sparse (MoE) layer keeps attention and the norms in "model.layers.{i}";
// its router, each expert, the shared expert and the shared expert's gate
// are modules of their own, named as the checkpoint names them:
//   "model.layers.{i}.{block}.gate"                 the router [experts, hidden]
//   "model.layers.{i}.{block}.experts.{e}"          expert e: {gate,up,down} projections
//   "model.layers.{i}.mlp.shared_expert", "model.layers.{i}.mlp.shared_expert_gate"
// ({block}: "block_sparse_moe" for Mixtral, "mlp" for Qwen). The router runs
// on the accelerator (softmax, top-k: kernels/moe_ops.h); the step then
// reads the routed expert ids back (one stream synchronization per sparse
// layer: which experts run is data) and runs each routed expert once over
// the step's rows, adding its output, weighted, to the rows routed to it.
// An expert runs where an ExpertProvider (models/expert_provider.h) puts it:
// through the hooks like any module (resident, fetched on demand, or
// computed on the host), or from an accelerator expert cache.
//
// Forward of one step (a prompt, or one new token per sequence) for `batch`
// sequences of equal length: the embedding rows are gathered where the table
// lives (on the accelerator when it is resident there, else from its host
// copy, which stays readable: no whole-table fetch per token), then each
// decoder layer, the final norm and the head run through the hook registry.
// Activations are float32; projections go through LinearKernels (every
// weight format), the rest through kernels/transformer_ops.h.
//
// Thread safety: a model is used by one thread at a time.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/memory_resource.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "hooks/hook_registry.h"
#include "hooks/module.h"
#include "models/linear.h"
#include "models/linear_spec.h"
#include "models/transformer_config.h"
#include "offload/expert_cache.h"
#include "offload/loader.h"

namespace stowage::models {

// A SwiGLU MLP that is a module of its own: an expert or the shared expert.
struct ExpertSpec {
  std::string module;  // "model.layers.3.block_sparse_moe.experts.5"
  LinearSpec gate, up, down;
  std::vector<std::string> tensors;  // names inside the module ("w1.weight", ...)
};

// The sparse MLP of one decoder layer.
struct MoeLayerSpec {
  std::string router_module;  // "model.layers.3.mlp.gate"
  LinearSpec router;          // [experts, hidden]
  std::vector<std::string> router_tensors;
  std::vector<ExpertSpec> experts;
  bool has_shared = false;
  ExpertSpec shared;  // "model.layers.3.mlp.shared_expert"
  std::string shared_gate_module;
  LinearSpec shared_gate;  // [1, hidden]
  std::vector<std::string> shared_gate_tensors;
};

struct DecoderLayerSpec {
  std::string module;  // "model.layers.3"
  // gate, up, down: the dense MLP (absent, out_features 0, in a sparse layer).
  LinearSpec q, k, v, o, gate, up, down;
  DType input_norm_dtype = DType::kF32;
  DType post_norm_dtype = DType::kF32;
  DType q_norm_dtype = DType::kF32;  // Qwen3: q_norm / k_norm weights
  DType k_norm_dtype = DType::kF32;
  std::vector<std::string> tensors;  // names inside the module, checkpoint order
  bool sparse = false;
  MoeLayerSpec moe;  // when sparse
};

struct TransformerSpec {
  TransformerConfig config;
  std::vector<DecoderLayerSpec> layers;
  DType embedding_dtype = DType::kF32;
  DType final_norm_dtype = DType::kF32;
  LinearSpec head;          // [vocab, hidden]
  std::string head_module;  // "lm_head", or "model.embed_tokens" when tied
  // The head's tensor names inside head_module ("weight", ...).
  std::vector<std::string> head_tensors;
};

inline constexpr const char* kEmbeddingModule = "model.embed_tokens";
inline constexpr const char* kFinalNormModule = "model.norm";
inline constexpr const char* kHeadModule = "lm_head";

// The family's modules: "model.layers.{i}.rest" -> ("model.layers.{i}", "rest"),
// "model.embed_tokens.weight" -> ("model.embed_tokens", "weight"), "model.norm.weight",
// "lm_head.*" likewise; other names -> split at the last dot (they are then
// rejected by describe_transformer).
std::pair<std::string, std::string> transformer_module_of(const std::string& tensor_name);

// Checks the tensor list against the config and describes every linear layer
// (float, int8 or 4-bit in bitsandbytes' layout). Throws InvalidInputError
// naming `source` and the tensor: one missing, of the wrong shape or dtype, or
// not part of the family.
TransformerSpec describe_transformer(
    const TransformerConfig& config, const std::vector<TensorMeta>& tensors,
    const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
    const std::string& source);

// The planner's module order: the layers (a sparse layer's attention,
// router and shared expert), the final norm, the head, then the routed
// experts layer by layer, then (untied) the embedding table, which the
// accelerator needs least: a step reads only its rows.
std::vector<std::string> transformer_plan_order(const TransformerSpec& spec);

// How a transformer checkpoint loads: its modules in the order the planner
// places them (transformer_plan_order, then a tied checkpoint's own
// "lm_head" tensors, loaded and never run), and the modules read in place
// (PlanModule::read_in_place): the embedding table, whose rows a step reads
// from whichever tier holds it, unless it is also the head. A dense model's
// resident decoder layers are spread among the streamed ones (planner.h
// step 8: the copies then never wait for a run of resident layers); a sparse
// model's are left in order (its experts are placed by the expert cache).
struct TransformerLoadLayout {
  std::vector<std::string> order;
  std::vector<std::string> read_in_place;
  bool spread_resident = false;
};
TransformerLoadLayout transformer_load_layout(const TransformerSpec& spec,
                                              const mmap_store::Checkpoint& checkpoint);

// What one run asks of the accelerator besides the weights.
struct TransformerRunShape {
  int64_t batch = 1;
  int64_t max_context = 0;      // KV-cache positions per sequence (prompt + new tokens)
  int64_t max_step_tokens = 0;  // tokens per sequence in one step (the prompt)
  bool all_logits = false;      // logits of every position, not only the last
  // Slots of the accelerator expert cache (offload/expert_cache.h), each
  // expert_slot_bytes(spec) bytes; 0: no cache (MoE models only); < 0: as
  // many as the budget leaves free after loading (TransformerRunner; not
  // reserved in the plan).
  int64_t expert_cache_slots = 0;
};

// An upper bound of the bytes one routed expert of `spec` takes in an
// expert cache slot (its records at 256-byte alignment, quant state
// included); 0 for a dense model.
uint64_t expert_slot_bytes(const TransformerSpec& spec);

// --cpu-moe N: tensor overrides (offload/loader.h) that keep every routed
// expert of decoder layers 0 .. first_layers - 1 in pinned host RAM, off the
// accelerator (llama.cpp's --n-cpu-moe); the router, attention and shared
// expert stay where the plan puts them. Empty for first_layers <= 0.
std::vector<TensorOverride> experts_off_accelerator(int64_t first_layers);

// How often the experts predicted for a sparse layer (its router applied to
// the previous sparse layer's input) were the ones it routed to.
struct ExpertPredictionCounters {
  uint64_t routed = 0;    // routed (token, expert) pairs of predicted steps
  uint64_t correct = 0;   // of those, predicted
  uint64_t withheld = 0;  // predictions whose copies were not started (recent accuracy too low)
  double accuracy() const { return routed == 0 ? 0.0 : double(correct) / double(routed); }
};

// Bytes of the KV cache of `shape` (float32 keys and values, every layer).
uint64_t kv_cache_bytes(const TransformerSpec& spec, const TransformerRunShape& shape);
// Bytes of activations, the KV cache and the kernels' scratch a run of
// `shape` allocates from the accelerator's budget: what the plan must keep
// free (LoadOptions::working_reserve).
uint64_t transformer_working_bytes(const TransformerSpec& spec, const TransformerRunShape& shape,
                                   const LinearKernels& kernels);

// Seconds one decoder layer computed on the host spends per decode step in
// its attention over the host KV cache (one new token per sequence, `batch`
// sequences of `context` cached positions), as the host path runs it: the
// median of `repeats` timed calls on this thread. The part of a host layer's
// cost that its weight bytes do not show; it grows with batch and context.
double measure_host_attention_seconds(const TransformerConfig& config, int64_t batch,
                                      int64_t context, int repeats = 3);

// The KV cache and activation buffers of one run, allocated once from the
// accelerator's (budgeted) memory.
class TransformerState {
 public:
  // What decoder layers computed on the host use (allocated at the first
  // such layer): activations, a pinned copy of the hidden state, and the
  // KV cache of each host-computed layer, in host memory.
  struct HostCompute {
    std::vector<float> tmp, q, k, v, attn, gate, up, act;
    Buffer x;  // pinned: a sparse layer's experts on the accelerator read it
    Buffer h;  // pinned
    Buffer y;  // pinned: a module computed on the host (an expert) writes its output here
    std::vector<std::vector<float>> k_cache, v_cache;  // per layer; empty when unused
  };
  // What a decode step's experts computed on the host beside the
  // accelerator's use (TransformerModel::set_host_expert_lane), for `batch`
  // rows, allocated at the first such step: the layer's input and the
  // weighted sum (pinned), one expert's output and its MLP scratch, and the
  // activations of the experts computed partly on the host (pinned, top_k
  // of the widest MLP, batch 1).
  struct HostExpertScratch {
    Buffer x, sum, partial_act;
    std::vector<float> y, gate, up, act;
  };

  // Allocates the activations on `device`, and each decoder layer's KV
  // cache there too unless `device_kv_cache` is false (place_kv_cache then
  // says where each goes, before the first step).
  TransformerState(const TransformerSpec& spec, const TransformerRunShape& shape,
                   MemoryResource& device, MemoryResource& pinned, StreamRef stream,
                   bool device_kv_cache = true);
  const TransformerRunShape& shape() const { return shape_; }
  // Where each decoder layer's KV cache lives: on the host for a layer that
  // computes on the host (`on_host[i]`; its host copy is allocated at its
  // first use), on the accelerator for the others, so the accelerator's
  // budget is not spent on caches it never reads. A layer with its cache on
  // the host that still computes on the accelerator in some step (the
  // prefill of a layer computed on the host for the decode steps only)
  // writes one device scratch cache of one layer's size, shared by all such
  // layers and copied to the layer's host cache right after its forward:
  // `scratch` allocates it. Frees the device caches no longer wanted before
  // allocating the new ones. REQUIRES: no step in flight; the next step
  // starts a new prompt (the caches' contents are not kept).
  void place_kv_cache(const std::vector<bool>& on_host, bool scratch);
  // Whether decoder layer `layer` has a device KV cache of its own.
  bool device_kv_cache(size_t layer) const;
  // Bytes of device KV caches allocated now (the scratch included).
  uint64_t device_kv_cache_bytes() const;
  int64_t past() const { return past_; }
  HostCompute& host_compute();
  HostExpertScratch& host_expert_scratch();
  // Forgets the cached positions (a new prompt).
  void reset() { past_ = 0; }

 private:
  friend class TransformerModel;
  TransformerRunShape shape_;
  int64_t past_ = 0;
  std::vector<Buffer> k_cache, v_cache;  // per layer [batch, capacity, kv_heads, head_dim]
  Buffer k_scratch, v_scratch;           // one layer's (place_kv_cache)
  Buffer h, x, tmp, q, k, v, attn, gate, up, act, logits, positions, ids, inv_freq;
  Buffer host_ids;        // pinned int32 [batch * max_step_tokens]
  Buffer host_positions;  // pinned int32 [batch * max_step_tokens]
  Buffer host_rows;       // pinned embedding rows gathered on the host
  Buffer past_device;     // int32: past_ as the step's kernels read it (kernels' past_at)
  // Sparse layers: the router's logits [rows, experts], the routed experts
  // (int32 [rows, top_k]) and their weights, the shared expert's gate [rows],
  // and a pinned copy of the expert ids (the step reads them on the host).
  Buffer router_logits, moe_ids, moe_weights, shared_gate, host_moe_ids;
  // The next sparse layer's predicted experts (device, scratch weights, pinned).
  Buffer predicted_ids, predicted_weights, host_predicted_ids;
  Buffer host_moe_weights;  // pinned: the routing weights (a forced routing's on their way up)
  Buffer host_expert_sum;   // [batch, hidden]: the host-computed experts' sum (decode)
  Buffer split_act;         // [top_k, mlp]: activations of experts computed partly on the host
  Buffer host_past;       // pinned int32
  Tier tier;
  const TransformerSpec* spec_ = nullptr;
  MemoryResource* device_ = nullptr;
  MemoryResource* pinned_ = nullptr;
  StreamRef stream_;
  HostCompute host_;
  HostExpertScratch host_experts_;
};

class TransformerModel {
 public:
  // `kernels` must outlive the model.
  TransformerModel(TransformerSpec spec, LinearKernels& kernels);
  TransformerModel(const TransformerModel&) = delete;
  TransformerModel& operator=(const TransformerModel&) = delete;

  const TransformerSpec& spec() const { return spec_; }
  hooks::Module& root() { return root_; }
  // Layers, final norm, head: the order the hooks run them in each step.
  std::vector<hooks::Module*> execution_order() const;

  // Where the embedding rows are read from: `device_table` (a view on the
  // compute accelerator) when the table is resident there, else `host_table`
  // (host-addressable memory). Set before the first step.
  void set_embedding_source(TensorView device_table, TensorView host_table);

  // Enqueues one step on `stream` for `tokens` new tokens of each of the
  // state's sequences (`ids`: batch * tokens ids, sequence-major, each in the
  // vocabulary) at positions past .. past + tokens - 1, and advances the
  // state. Returns the logits (float32 on the accelerator, valid until the
  // next step): [batch * tokens, vocab] when the state keeps all logits, else
  // [batch, vocab] for the last position of each sequence.
  TensorView step(hooks::HookRegistry& registry, StreamRef stream, TransformerState& state,
                  const std::vector<int32_t>& ids, int64_t tokens);

  // step() in its three parts, for a step captured into a graph
  // (models/decode_graph.h): prepare_step checks the arguments, waits for
  // `stream` (the previous step's copies read the pinned staging) and writes
  // the step's ids, positions and (with the table on the host) embedding
  // rows into the state's pinned staging; enqueue_step enqueues everything
  // else, every value that changes from step to step read from that staging
  // or from device memory, so a capture of it replays any step of the same
  // shape; advance_step moves the state past the step.
  void prepare_step(StreamRef stream, TransformerState& state, const std::vector<int32_t>& ids,
                    int64_t tokens);
  TensorView enqueue_step(hooks::HookRegistry& registry, StreamRef stream, TransformerState& state,
                          int64_t tokens);
  static void advance_step(TransformerState& state, int64_t tokens) { state.past_ += tokens; }

  // Whether any decoder layer is sparse (MoE). Such a step reads the routed
  // expert ids back on the host at each sparse layer (a stream
  // synchronization), so it cannot be captured into a graph.
  bool has_sparse_layers() const;
  // When set, each step appends, per decoder layer, the routed expert ids of
  // sequence 0 (top_k per position, largest weight first) to (*log)[layer]
  // (resized to the layer count; dense layers stay empty). nullptr: off.
  void set_routing_log(std::vector<std::vector<int32_t>>* log) { routing_log_ = log; }
  // Runs the routed experts that `cache` can hold from it (the others through
  // the hooks as before); `prefix` is the manager's module prefix. With
  // `predict`, each sparse layer also applies the next sparse layer's router
  // (when resident on the accelerator) to its own input and starts copying
  // the experts it picks (ExpertCache::prefetch). nullptr: no cache. The cache
  // must outlive its use.
  void set_expert_cache(ExpertCache* cache, std::string prefix, bool predict);
  // Per decoder layer (empty for layers never predicted).
  std::vector<ExpertPredictionCounters> prediction_counters() const { return predictions_; }
  // A wrong guess costs a whole expert's copy and a right one saves only the
  // wait for it, so the copies of a layer's guesses start only while its
  // recent accuracy (a running average over its steps, from 1) is at least
  // this; the guesses are still made and counted, so a layer whose guesses
  // become right again resumes.
  static constexpr double kPrefetchAccuracyFloor = 0.75;

  // Splitting each sparse layer's absent experts between the link and the
  // host: per step, every routed expert that the cache does not hold goes,
  // in ascending order, to the path that finishes it first by these
  // measured costs (the link's copies and the host's computes of one layer
  // overlap), or in batch-1 decode steps with a lane is split by rows so
  // both end together (split_absent). In decode steps with a lane
  // (set_host_expert_lane) the host's experts run on it, beside the
  // accelerator's experts of the same layer, and their weighted sum is added
  // to the hidden state after those; else they run first on the compute
  // stream, so their work starts while the link's copies are in flight.
  // Needs an expert cache. Both costs > 0 to enable; nullopt: off (every
  // absent expert is copied, as without a split).
  struct ExpertSplitCosts {
    double link_seconds_per_byte = 0;
    double host_seconds_per_byte = 0;
  };
  void set_expert_split(std::optional<ExpertSplitCosts> costs);
  const std::optional<ExpertSplitCosts>& expert_split() const { return expert_split_; }
  // Where a decode step's experts computed on the host by the split run: a
  // second stream of the compute accelerator and two of its events (the
  // layer's input ready, the host's sum uploaded), which must outlive their
  // use. The step's stream waits for the lane only where it adds the host's
  // sum, so the accelerator computes the cached and fetched experts while
  // the host computes its own. A null stream: no lane.
  struct HostExpertLane {
    StreamRef stream;
    Event* input_ready = nullptr;
    Event* done = nullptr;
  };
  void set_host_expert_lane(HostExpertLane lane);
  // Work the host did so far in decode steps (one token per sequence): the
  // weight bytes of the modules it computed, how many forwards, and the
  // seconds it spent on them (the host tasks' own time, not the step's).
  // Read after the stream is synchronized.
  struct HostDecodeWork {
    uint64_t bytes = 0;
    uint64_t forwards = 0;
    double seconds = 0;
  };
  // Experts computed on the host (set to compute there, or by the split).
  HostDecodeWork host_expert_decode_work() const { return host_expert_meter_.read(); }
  // Of those, the experts a split computed on the lane beside the
  // accelerator's (set_host_expert_lane).
  uint64_t host_experts_beside() const { return host_experts_beside_; }
  // Decoder layers computed on the host (--run-on-host, or a decode split):
  // their time includes their attention over the host KV cache.
  HostDecodeWork host_layer_decode_work() const { return host_layer_meter_.read(); }
  // The order a routing trace forces: when set, each sparse layer runs
  // (*trace)(step, layer) instead of its router's choice (with weight 1 / k
  // each), for benchmarks on random weights (offload/routing_trace.h).
  void set_forced_routing(std::function<std::vector<int32_t>(size_t layer)> route) {
    forced_routing_ = std::move(route);
  }

  // Copies decoder layer `layer`'s KV cache from the accelerator (its own
  // cache, or the scratch of TransformerState::place_kv_cache) to the
  // state's host copy, stream-ordered: a layer that computed on the
  // accelerator (the prefill) and computes on the host from now on (the
  // decode steps) then attends over every cached position.
  void copy_kv_cache_to_host(TransformerState& state, size_t layer, StreamRef stream);

  // Tensor parallelism (parallel/tensor_parallel_runner.h): this model is
  // rank `rank` of a group, its spec holding the rank's share of the heads
  // and MLP columns, so o_proj and down_proj give partial sums.
  // `all_reduce_sum(stream, h, floats)` enqueues on `stream` an in-place sum
  // over the ranks of the [rows, hidden] hidden state; each layer calls it
  // after o_proj and after down_proj. Rank 0 adds its partial sums to the
  // residual; the others write theirs alone (and hold zero biases), so the
  // sum adds the residual and the biases once. Throws InvalidInputError for a
  // model with sparse layers. A layer set to compute on the host fails its
  // forward (it has no stream to reduce on). REQUIRES: no step in flight;
  // every rank runs the same steps.
  struct TensorParallelRole {
    int rank = 0;
    std::function<void(StreamRef, float*, size_t)> all_reduce_sum;
  };
  void set_tensor_parallel(TensorParallelRole role);
  bool tensor_parallel() const { return static_cast<bool>(tensor_parallel_.all_reduce_sum); }

  // Threads of the host-compute kernels that layers computed on the host run
  // on (0: models::default_host_compute_threads()). REQUIRES: no step in
  // flight.
  void set_host_threads(int threads);
  int host_threads() const;

 private:
  struct LayerWeights {
    std::vector<LinearWeights> projections;  // q, k, v, o, gate, up, down (sparse: q, k, v, o)
    const void* input_norm = nullptr;
    const void* post_norm = nullptr;
    const void* q_norm = nullptr;  // Qwen3
    const void* k_norm = nullptr;
  };
  // A sparse layer's modules beside the layer (attention) itself.
  struct MoeModules {
    hooks::Module* router = nullptr;
    hooks::Module* shared_gate = nullptr;
    hooks::Module* shared = nullptr;
    std::vector<hooks::Module*> experts;
    // Per expert: where its gate, up and down projections' tensors sit.
    std::vector<std::array<LinearTensorIndices, 3>> expert_linears;
  };
  // Where a layer's activations, positions and KV cache live.
  struct LayerBuffers {
    float *x = nullptr, *tmp = nullptr, *q = nullptr, *k = nullptr, *v = nullptr,
          *attn = nullptr, *gate = nullptr, *up = nullptr, *act = nullptr;
    const int32_t* positions = nullptr;
    const int32_t* past = nullptr;
    const float* inv_freq = nullptr;
    float *k_cache = nullptr, *v_cache = nullptr;
    Tier tier = Tier::pinned_host();
  };
  struct LayerStep {
    int64_t rows = 0, tokens = 0, batch = 0, past = 0, capacity = 0;
  };
  void build_layer(size_t i);
  void build_norm_and_head();
  LayerBuffers device_buffers(TransformerState& state, size_t layer);
  LayerBuffers host_buffers(TransformerState& state, size_t layer);
  // Decoder layer `i` on `stream` (null: on the calling thread) over `h`.
  void run_layer(size_t i, const LayerWeights& weights, const LayerBuffers& buffers,
                 const LayerStep& step, float* h, LinearKernels& kernels, StreamRef stream);
  LinearKernels& host_kernels();
  // The MLP scratch (gate, up, act) on the accelerator or, `host`, in the
  // state's host activations.
  LayerBuffers mlp_buffers(TransformerState& state, bool host);
  // y = down(silu(gate(x)) * up(x)) over `rows` rows (y += that with
  // `accumulate`, b.tmp as scratch); w: gate, up, down. With `norm`, x is
  // RMS-normalized first, into b.x (LinearKernels::norm_swiglu_linear).
  void run_swiglu(const LinearWeights* w, int64_t inter, const float* x, float* y,
                  const LayerBuffers& b, int64_t rows, LinearKernels& kernels, StreamRef stream,
                  bool accumulate = false, const LinearKernels::InputNorm* norm = nullptr);
  // Runs `fn` on the host in `stream`'s order between a copy of `in_floats`
  // floats of `in` into pinned memory and a copy of `out_floats` of its
  // output back to `out` (a module whose weights stay on the host).
  void compute_on_host(StreamRef stream, TransformerState& state, const float* in,
                       int64_t in_floats, float* out, int64_t out_floats,
                       std::function<void(const float* in, float* out)> fn);
  // The router, shared expert and experts of sparse layer `i` (models/transformer_moe.cc).
  void build_moe(size_t i);
  // Returns where the expert's gate, up and down tensors sit in `m`.
  std::array<LinearTensorIndices, 3> build_expert(size_t i, int expert, hooks::Module& m);
  // The sparse MLP of layer `i` after its attention: router, shared expert,
  // then each routed expert once (see the file comment).
  void run_moe_block(size_t i, hooks::HookRegistry& registry, StreamRef stream,
                     TransformerState& state);
  // Routed expert `e` of layer `i` from the expert cache's slot.
  void run_cached_expert(size_t i, int32_t e, StreamRef stream, const TensorView& x,
                         const TensorView& h);
  // Routed expert `e` of layer `i` computed on the host from its host copies.
  void run_host_expert(size_t i, int32_t e, StreamRef stream, const TensorView& x,
                       const TensorView& h);
  // An expert of a batch-1 decode step computed partly on the host: the
  // rows [0, host_rows) of its gate and up projections there, the other
  // rows and its down projection on the accelerator from a part copy
  // (ExpertCache::fetch_part, handle `part`).
  struct PartialExpert {
    int32_t expert = 0;
    int64_t host_rows = 0;
    int part = -1;
  };
  // Where the split sends layer `i`'s absent experts (cacheable, not in the
  // cache; ExpertSplitCosts), in ascending order, each to what finishes it
  // first given what the layer's earlier ones took of each path: copied
  // whole (the link on a tie), computed on the host whole (into `on_host`)
  // or, `by_rows` (a batch-1 decode step with a lane), split so both paths
  // end together: its first gate and up rows on the host, at the layout's
  // row alignment and at most all of them (its down projection is always
  // copied), the rest copied (into `partial`, parts unset).
  void split_absent(size_t i, const std::vector<int32_t>& absent, bool by_rows,
                    std::set<int32_t>* on_host,
                    std::vector<PartialExpert>* partial) const;
  // The part copy of `p` (its gate and up rows from host_rows on, its down
  // whole); sets p.part, false where no slot could be freed.
  bool fetch_partial(size_t i, PartialExpert& p, const std::vector<std::string>& keep);
  // Layer `i`'s experts `on_host` and the host rows of `partial` (decode
  // step, split) enqueued on the lane: x copied down; the whole ones
  // computed on the host and weighted by their routing weights
  // (`host_weights`, [rows, top_k]) into one sum, which goes up into the
  // state's host_expert_sum; each partial one's gate and up rows into its
  // activations, which go up into the state's split_act; the lane's `done`
  // recorded after.
  void enqueue_host_experts(size_t i, const std::set<int32_t>& on_host,
                            const std::vector<PartialExpert>& partial, StreamRef stream,
                            TransformerState& state, const float* host_weights);
  // The accelerator's share of `partial` (each one's gate and up rows from
  // host_rows on, from its part copy), the wait for the lane, then each one's
  // down projection over its whole activations, weighted into h in order.
  void join_host_experts(size_t i, const std::vector<PartialExpert>& partial, StreamRef stream,
                         TransformerState& state);
  // Enqueues the next sparse layer's router on layer `i`'s input into the
  // state's predicted ids; the layer it predicts, or -1 (none, or its router
  // is not on the accelerator).
  int64_t enqueue_prediction(size_t i, StreamRef stream, TransformerState& state);

  TransformerSpec spec_;
  LinearKernels& kernels_;
  std::unique_ptr<LinearKernels> host_kernels_;  // made at the first host-computed layer
  int host_threads_ = 0;                         // set_host_threads
  hooks::Module root_;
  std::vector<hooks::Module*> layers_;
  std::vector<MoeModules> moe_;  // per layer; empty for dense layers
  std::vector<std::vector<int32_t>>* routing_log_ = nullptr;
  ExpertCache* expert_cache_ = nullptr;
  std::string module_prefix_;
  bool predict_ = false;
  std::vector<std::vector<int32_t>> predicted_;  // per layer: experts predicted for its next step
  std::vector<ExpertPredictionCounters> predictions_;
  std::vector<double> prediction_trust_;  // per layer: recent accuracy of its guesses
  std::optional<ExpertSplitCosts> expert_split_;
  HostExpertLane host_expert_lane_;
  uint64_t host_experts_beside_ = 0;
  // Bytes and forwards added when a host forward is enqueued, nanoseconds by
  // the host task when it ends.
  struct HostWorkMeter {
    uint64_t bytes = 0;
    uint64_t forwards = 0;
    std::atomic<uint64_t> ns{0};
    HostDecodeWork read() const {
      return {bytes, forwards, static_cast<double>(ns.load()) * 1e-9};
    }
    void enqueue(const hooks::ForwardContext& ctx);
    void add_since(std::chrono::steady_clock::time_point start);
  };
  HostWorkMeter host_expert_meter_;
  HostWorkMeter host_layer_meter_;
  std::function<std::vector<int32_t>(size_t layer)> forced_routing_;
  TensorParallelRole tensor_parallel_;  // all_reduce_sum empty: a whole model
  hooks::Module* norm_ = nullptr;
  hooks::Module* head_ = nullptr;
  TensorView device_table_;
  TensorView host_table_;
  std::vector<float> inv_freq_;
  // The step the forwards read (set by step(), read by the modules' forwards).
  struct StepContext {
    TransformerState* state = nullptr;
    int64_t tokens = 0;
    int64_t rows = 0;       // batch * tokens
    int64_t head_rows = 0;  // rows the head computes
  } current_;
};

}  // namespace stowage::models
