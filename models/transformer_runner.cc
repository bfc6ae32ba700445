#include "models/transformer_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "core/error.h"
#include "kernels/transformer_ops.h"

namespace stowage::models {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<TensorMeta> metas_of(const mmap_store::Checkpoint& checkpoint) {
  std::vector<TensorMeta> metas;
  for (const std::string& name : checkpoint.names()) {
    const auto& info = checkpoint.info(name);
    metas.push_back(TensorMeta{name, info.dtype, info.shape});
  }
  return metas;
}

TransformerSpec as_quantized(TransformerSpec spec, const LoadQuantization& q) {
  for (DecoderLayerSpec& layer : spec.layers) {
    std::vector<LinearSpec*> selected = {&layer.q,    &layer.k,  &layer.v,   &layer.o,
                                         &layer.gate, &layer.up, &layer.down};
    // A sparse layer's experts and shared expert too (never the router or the
    // shared expert's gate): what transformer_quantizes selects.
    std::vector<ExpertSpec*> experts;
    for (ExpertSpec& e : layer.moe.experts) experts.push_back(&e);
    if (layer.moe.has_shared) experts.push_back(&layer.moe.shared);
    for (ExpertSpec* e : experts) selected.insert(selected.end(), {&e->gate, &e->up, &e->down});
    for (LinearSpec* l : selected) {
      if (l->layout.format != quant::WeightFormat::kFloat || l->out_features() == 0) continue;
      l->layout = q.layout(l->layout.dtype, l->layout.shape);
    }
  }
  return spec;
}

// Samples one id from `row` (vocab logits) as transformers' sampling does:
// temperature, then top-k, then top-p, then a draw.
int32_t sample_row(const float* row, int64_t vocab, const GenerationOptions& o,
                   std::mt19937_64& rng) {
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> scaled(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) scaled[i] = static_cast<double>(row[i]) / o.temperature;
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return scaled[a] > scaled[b]; });
  size_t keep = order.size();
  if (o.top_k > 0) keep = std::min<size_t>(keep, static_cast<size_t>(o.top_k));
  const double top = scaled[order[0]];
  std::vector<double> p(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp(scaled[order[i]] - top);
  if (o.top_p < 1.0f) {
    double cumulative = 0;
    size_t n = 0;
    while (n < keep) {
      cumulative += p[n] / sum;
      ++n;
      if (cumulative >= o.top_p) break;
    }
    keep = std::max<size_t>(n, 1);
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += p[i];
  }
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double u = uniform(rng);
  for (size_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u <= 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace

TransformerSpec planned_spec(TransformerSpec spec, const std::optional<LoadQuantization>& quantize) {
  return quantize ? as_quantized(std::move(spec), *quantize) : spec;
}

std::string model_checkpoint_path(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  STOWAGE_EXPECTS(fs::is_directory(dir), InvalidInputError,
                  "{}: expected a model folder (config.json and model.safetensors), found {}",
                  folder, fs::exists(dir) ? "a file" : "nothing");
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::is_regular_file(index)) return index.string();
  const fs::path single = dir / "model.safetensors";
  STOWAGE_EXPECTS(fs::is_regular_file(single), InvalidInputError,
                  "{}: expected model.safetensors or model.safetensors.index.json, found neither",
                  folder);
  return single.string();
}

TransformerSpec describe_model_folder(const std::string& folder,
                                      const mmap_store::Checkpoint& checkpoint) {
  return describe_model_checkpoint(read_transformer_config(folder), checkpoint);
}

TransformerSpec describe_model_checkpoint(const TransformerConfig& config,
                                          const mmap_store::Checkpoint& checkpoint) {
  check_quantized_weights(checkpoint);
  auto read_bytes = [&checkpoint](const std::string& name) {
    Tensor t = checkpoint.tensor(name);
    const auto* p = static_cast<const uint8_t*>(t.data());
    return std::vector<uint8_t>(p, p + t.bytes());
  };
  return describe_transformer(config, metas_of(checkpoint), read_bytes, checkpoint.path());
}

bool transformer_quantizes(const mmap_store::TensorInfo& info) {
  auto [module, local] = transformer_module_of(info.name);
  if (module.rfind("model.layers.", 0) != 0 || info.shape.rank() != 2) return false;
  if (!(info.dtype == DType::kF32 || info.dtype == DType::kF16 || info.dtype == DType::kBF16)) {
    return false;
  }
  const std::string tail = "_proj.weight";
  if (local.size() > tail.size() &&
      local.compare(local.size() - tail.size(), tail.size(), tail) == 0) {
    return true;
  }
  // Mixtral's experts: w1, w2, w3.
  return module.find(".experts.") != std::string::npos &&
         (local == "w1.weight" || local == "w2.weight" || local == "w3.weight");
}

TransformerRunner::TransformerRunner(OffloadManager& manager, const std::string& folder,
                                     LinearKernels& kernels, LoadOptions load,
                                     const TransformerRunShape& shape)
    : TransformerRunner(manager, mmap_store::open_checkpoint(model_checkpoint_path(folder)),
                        [&] {
                          TransformerConfig config = read_transformer_config(folder);
                          config.source = folder;
                          return config;
                        }(),
                        kernels, std::move(load), shape) {}

TransformerRunner::TransformerRunner(OffloadManager& manager,
                                     std::unique_ptr<mmap_store::Checkpoint> checkpoint,
                                     const TransformerConfig& config, LinearKernels& kernels,
                                     LoadOptions load, const TransformerRunShape& shape)
    : manager_(manager),
      accelerator_([&]() -> Tier {
        const int acc = manager.options().compute_accelerator;
        STOWAGE_EXPECTS(acc >= 0 && acc < manager.platform().accelerator_count(), InvalidInputError,
                        "compute accelerator {} does not exist", acc);
        return manager.platform().accelerator(acc).tier();
      }()),
      stream_(
          manager.platform().accelerator(manager.options().compute_accelerator).create_stream()),
      shape_(shape),
      module_prefix_(load.module_prefix) {
  checkpoint_ = std::move(checkpoint);
  TransformerSpec spec = describe_model_checkpoint(config, *checkpoint_);
  const std::string& folder = config.source;
  check_context_supported(spec.config, shape.max_context);

  // Only the compute accelerator holds layers (they run there, in order).
  load.accelerators.erase(
      std::remove_if(load.accelerators.begin(), load.accelerators.end(),
                     [&](const TierCapacity& c) { return c.tier != accelerator_; }),
      load.accelerators.end());
  if (load.quantize) load.quantize->select = transformer_quantizes;
  const TransformerSpec planned = planned_spec(spec, load.quantize);
  // An automatic expert cache (slots < 0) takes what the plan leaves free,
  // after loading: nothing of it is reserved.
  TransformerRunShape reserved = shape;
  reserved.expert_cache_slots = std::max<int64_t>(shape.expert_cache_slots, 0);
  working_bytes_ = transformer_working_bytes(planned, reserved, kernels);
  load.working_reserve[accelerator_] = working_bytes_;
  TransformerLoadLayout layout = transformer_load_layout(spec, *checkpoint_);
  load.module_order = std::move(layout.order);
  load.read_in_place = std::move(layout.read_in_place);
  load.module_of = transformer_module_of;
  load.spread_resident = layout.spread_resident;
  for (const TierCapacity& c : load.accelerators) {
    STOWAGE_EXPECTS(c.limit() >= working_bytes_, OutOfBudgetError,
                    "{}: {} needs {} bytes of working memory for this run (KV cache {} bytes for "
                    "{} sequence(s) x {} positions, activations for {} tokens per step and kernel "
                    "scratch), but its budget is {} bytes",
                    folder, c.tier.to_string(), working_bytes_, kv_cache_bytes(spec, shape),
                    shape.batch, shape.max_context, shape.max_step_tokens, c.limit());
  }
  loaded_ = load_checkpoint(*checkpoint_, manager, load);
  if (load.quantize) {
    // Quantized while loading: describe what the table now holds.
    std::vector<TensorMeta> metas;
    for (const std::string& module : load.module_order) {
      for (RecordId id : manager.table().records_of(load.module_prefix + module)) {
        TensorRecord rec = manager.table().get(id);
        metas.push_back(TensorMeta{module + "." + rec.name, rec.dtype, rec.shape});
      }
    }
    auto read_bytes = [&](const std::string& name) {
      auto [module, local] = transformer_module_of(name);
      Tensor t = manager.read_to_host(load.module_prefix + module, local);
      const auto* p = static_cast<const uint8_t*>(t.data());
      return std::vector<uint8_t>(p, p + t.bytes());
    };
    TransformerConfig config = spec.config;
    spec = describe_transformer(config, metas, read_bytes, "the loaded model");
  }
  model_ = std::make_unique<TransformerModel>(std::move(spec), kernels);
  hook_ =
      hooks::OffloadHook::attach_to_tree(manager, registry_, model_->root(), load.module_prefix);
  hook_->declare_execution_order(model_->execution_order());

  // The embedding rows come from the table's copy on the accelerator when it
  // is resident there, else from its host copy (pinned RAM or the disk map).
  const std::optional<RecordId> table_id =
      manager.table().find(load.module_prefix + kEmbeddingModule, "weight");
  STOWAGE_EXPECTS(table_id.has_value(), InternalError, "the embedding table was not loaded");
  const TensorRecord table = manager.table().get(*table_id);
  TensorView device_table, host_table;
  for (const auto& [tier, tensor] : table.copies) {
    if (tier == accelerator_) device_table = tensor.view();
  }
  if (device_table.data() == nullptr) {
    for (const auto& [tier, tensor] : table.copies) {
      if (!tier.is_accelerator()) host_table = tensor.view();
    }
  }
  STOWAGE_EXPECTS(device_table.data() != nullptr || host_table.data() != nullptr, InternalError,
                  "the embedding table has no copy on {} or on the host", accelerator_.to_string());
  model_->set_embedding_source(device_table, host_table);

  MemoryResource& device = manager.memory(accelerator_);
  // The weights alone: the working memory below is counted in working_bytes_.
  const uint64_t weights_in_use = manager.usage(accelerator_).bytes_in_use;
  // The KV caches are placed by generate(), where each layer computes.
  state_ = std::make_unique<TransformerState>(model_->spec(), shape_, device,
                                              manager.memory(Tier::pinned_host()), stream_.ref(),
                                              false);
  if (shape_.expert_cache_slots < 0) {
    shape_.expert_cache_slots = automatic_expert_cache_slots(weights_in_use);
  }
  if (shape_.expert_cache_slots > 0 && model_->has_sparse_layers()) {
    configure_expert_cache(ReplacementPolicyKind::kLfuAging, true);
  }
  chosen_device_ =
      Buffer(device, static_cast<size_t>(shape_.batch) * sizeof(int32_t), stream_.ref());
  chosen_host_ = Buffer(manager.memory(Tier::pinned_host()),
                        static_cast<size_t>(shape_.batch) * sizeof(int32_t));
}

int64_t TransformerRunner::automatic_expert_cache_slots(uint64_t weights_in_use) const {
  const TierUsage usage = manager_.usage(accelerator_);
  const uint64_t slot = expert_slot_bytes(model_->spec());
  if (!model_->has_sparse_layers() || !usage.budget || slot == 0) return 0;
  // What the budget has left once the resident weights (`weights_in_use`:
  // bytes in use before the working memory was allocated), the working
  // memory (KV cache, activations, scratch) and the fetch slots are counted, less
  // a margin of 1% + 16 MiB for allocator rounding.
  auto reserve = loaded_.plan.reserve_per_accelerator.find(accelerator_);
  const uint64_t taken = weights_in_use + working_bytes_ +
                         (reserve != loaded_.plan.reserve_per_accelerator.end() ? reserve->second
                                                                                : 0) +
                         *usage.budget / 100 + (uint64_t{16} << 20);
  if (taken >= *usage.budget) return 0;
  int64_t experts = 0;  // no more slots than experts off the accelerator
  for (const DecoderLayerSpec& l : model_->spec().layers) {
    for (const ExpertSpec& e : l.moe.experts) {
      experts += loaded_.plan.tier_of(e.module) != accelerator_ ? 1 : 0;
    }
  }
  return std::min<int64_t>(experts, static_cast<int64_t>((*usage.budget - taken) / slot));
}

void TransformerRunner::configure_expert_cache(ReplacementPolicyKind policy, bool predict) {
  STOWAGE_EXPECTS(shape_.expert_cache_slots > 0, InvalidInputError,
                  "{}: the run was planned without an expert cache (0 slots)",
                  model_->spec().config.source);
  model_->set_expert_cache(nullptr, module_prefix_, false);
  if (stream_.valid()) stream_.synchronize();
  expert_cache_.reset();  // its slots go back before the new ones are taken
  ExpertCacheOptions options;
  options.slots = shape_.expert_cache_slots;
  options.slot_bytes = expert_slot_bytes(model_->spec());
  options.policy = policy;
  expert_cache_ = std::make_unique<ExpertCache>(manager_, accelerator_, options);
  model_->set_expert_cache(expert_cache_.get(), module_prefix_, predict);
  if (!host_lane_.valid()) {
    Accelerator& device = manager_.platform().accelerator(manager_.options().compute_accelerator);
    host_lane_input_ready_ = device.create_event();
    host_lane_done_ = device.create_event();
    host_lane_ = device.create_stream();
    model_->set_host_expert_lane({host_lane_.ref(), &host_lane_input_ready_, &host_lane_done_});
  }
}

const char* TransformerRunner::expert_compute_name(ExpertCompute where) {
  switch (where) {
    case ExpertCompute::kAccelerator:
      return "accelerator";
    case ExpertCompute::kHost:
      return "host";
    case ExpertCompute::kSplit:
      return "split";
  }
  return "?";
}

void TransformerRunner::set_expert_compute(ExpertCompute where) {
  std::optional<TransformerModel::ExpertSplitCosts> costs;
  if (where == ExpertCompute::kSplit) {
    STOWAGE_EXPECTS(expert_cache_ != nullptr, InvalidInputError,
                    "{}: splitting experts between the link and the host needs an expert cache",
                    model_->spec().config.source);
    STOWAGE_EXPECTS(measured_expert_compute_ && measured_expert_compute_->split_costs,
                    InvalidInputError,
                    "{}: splitting experts needs the link's and the host's measured costs "
                    "(choose_expert_compute with the link rate)",
                    model_->spec().config.source);
    costs = measured_expert_compute_->split_costs;
  }
  model_->set_expert_split(costs);
  for (const std::string& m : host_experts_) manager_.set_host_compute(m, false);
  host_experts_.clear();
  expert_compute_ = where;
  if (where != ExpertCompute::kHost) return;
  for (const DecoderLayerSpec& l : model_->spec().layers) {
    for (const ExpertSpec& e : l.moe.experts) {
      const std::string m = module_prefix_ + e.module;
      if (loaded_.plan.tier_of(e.module) == accelerator_ || manager_.host_compute(m)) continue;
      manager_.set_host_compute(m, true);
      host_experts_.push_back(m);
    }
  }
}

TransformerRunner::ExpertComputeChoice TransformerRunner::choose_expert_compute(
    const std::vector<int32_t>& prompt, int64_t steps, double link_bytes_per_s) {
  ExpertComputeChoice choice;
  // Within the run's context: the timed generation is steps + 1 tokens.
  steps = std::min<int64_t>(steps, shape_.max_context - static_cast<int64_t>(prompt.size()) - 1);
  if (steps < 1) {
    choice.chosen = expert_compute_;  // no room to measure: left as it is
    return choice;
  }
  GenerationOptions o;
  o.ignore_eos = true;
  // Seconds per decode step of one way, after a warm-up (first-touch costs).
  auto measure = [&](ExpertCompute where) {
    set_expert_compute(where);
    o.max_new_tokens = std::min<int64_t>(steps + 1, 2);
    generate(prompt, o);
    o.max_new_tokens = std::max<int64_t>(steps, 1) + 1;
    const TransformerModel::HostDecodeWork before = model_->host_expert_decode_work();
    const GenerationResult r = generate(prompt, o);
    const TransformerModel::HostDecodeWork after = model_->host_expert_decode_work();
    if (where == ExpertCompute::kHost && link_bytes_per_s > 0 && after.bytes > before.bytes &&
        after.seconds > before.seconds) {
      // The host's seconds per expert byte in the decode steps, from its own
      // compute time: what a split weighs against the link's copy of the same
      // bytes. (The whole generation's time over those bytes, as before,
      // counted the prefill's 16-row experts and the accelerator's attention
      // against the host: 16 GB/s on an H200 host whose experts ran at ~40.)
      choice.split_costs = TransformerModel::ExpertSplitCosts{
          1.0 / link_bytes_per_s,
          (after.seconds - before.seconds) / static_cast<double>(after.bytes - before.bytes)};
    }
    return r.decode_steps > 0 ? r.decode_seconds / static_cast<double>(r.decode_steps) : 0.0;
  };
  choice.accelerator_step_s = measure(ExpertCompute::kAccelerator);
  choice.host_step_s = measure(ExpertCompute::kHost);
  choice.chosen = choice.host_step_s < choice.accelerator_step_s ? ExpertCompute::kHost
                                                                 : ExpertCompute::kAccelerator;
  measured_expert_compute_ = choice;
  if (expert_cache_ != nullptr && choice.split_costs) {
    choice.split_step_s = measure(ExpertCompute::kSplit);
    const double best = std::min(choice.host_step_s, choice.accelerator_step_s);
    if (choice.split_step_s < best) choice.chosen = ExpertCompute::kSplit;
    measured_expert_compute_ = choice;
  }
  set_expert_compute(choice.chosen);
  return choice;
}

TransformerRunner::~TransformerRunner() {
  if (stream_.valid()) {
    try {
      stream_.synchronize();
    } catch (...) {
    }
  }
}

std::vector<int32_t> TransformerRunner::choose(const TensorView& logits, int64_t rows_per_sequence,
                                               const GenerationOptions& options, uint64_t step,
                                               std::vector<float>* keep) {
  const int64_t vocab = model_->spec().config.vocab_size;
  const int64_t batch = shape_.batch;
  const StreamRef s = stream_.ref();
  std::vector<int32_t> ids(static_cast<size_t>(batch));
  const bool need_host = keep != nullptr || options.temperature > 0;
  if (!need_host) {
    // Greedy: the argmax on the accelerator, only the ids come back.
    kernels::argmax_rows(logits.data_as<float>(), batch, vocab,
                         static_cast<int32_t*>(chosen_device_.data()), s);
    s.copy(chosen_host_.data(), chosen_device_.data(), ids.size() * sizeof(int32_t));
    s.synchronize();
    const auto* host = static_cast<const int32_t*>(chosen_host_.data());
    std::copy(host, host + batch, ids.begin());
    return ids;
  }
  std::vector<float> host(static_cast<size_t>(batch * rows_per_sequence * vocab));
  s.copy(host.data(), logits.data(), host.size() * sizeof(float));
  s.synchronize();
  if (keep != nullptr) {
    keep->insert(keep->end(), host.begin(), host.begin() + rows_per_sequence * vocab);
  }
  std::mt19937_64 rng(options.seed * 0x9E3779B97F4A7C15ULL + step);
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = host.data() + ((b + 1) * rows_per_sequence - 1) * vocab;
    if (options.temperature > 0) {
      ids[b] = sample_row(row, vocab, options, rng);
    } else {
      int32_t best = 0;
      for (int64_t i = 1; i < vocab; ++i) {
        if (row[i] > row[best] || (std::isnan(row[best]) && !std::isnan(row[i]))) {
          best = static_cast<int32_t>(i);
        }
      }
      ids[b] = best;
    }
  }
  return ids;
}

GenerationResult TransformerRunner::generate(const std::vector<int32_t>& prompt,
                                             const GenerationOptions& options) {
  const TransformerConfig& c = model_->spec().config;
  STOWAGE_EXPECTS(!prompt.empty(), InvalidInputError, "the prompt has no tokens");
  STOWAGE_EXPECTS(static_cast<int64_t>(prompt.size()) <= shape_.max_step_tokens, InvalidInputError,
                  "the prompt has {} tokens, more than the {} this run was planned for",
                  prompt.size(), shape_.max_step_tokens);
  STOWAGE_EXPECTS(
      options.max_new_tokens >= 0 &&
          static_cast<int64_t>(prompt.size()) + options.max_new_tokens <= shape_.max_context,
      InvalidInputError,
      "{} prompt tokens + {} new tokens exceed the {} positions this run was planned "
      "for",
      prompt.size(), options.max_new_tokens, shape_.max_context);
  for (size_t i = 0; i < prompt.size(); ++i) {
    STOWAGE_EXPECTS(prompt[i] >= 0 && prompt[i] < c.vocab_size, InvalidInputError,
                    "prompt token {} (position {}) is outside the vocabulary of {} tokens",
                    prompt[i], i, c.vocab_size);
  }
  STOWAGE_EXPECTS(options.temperature >= 0 && std::isfinite(options.temperature), InvalidInputError,
                  "temperature must be >= 0, found {}", options.temperature);
  STOWAGE_EXPECTS(options.top_p > 0 && options.top_p <= 1, InvalidInputError,
                  "top-p must be in (0, 1], found {}", options.top_p);
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<float>* keep = shape_.all_logits ? &result.logits : nullptr;
  state_->reset();
  const int64_t tokens = static_cast<int64_t>(prompt.size());
  std::vector<int32_t> ids;
  for (int64_t b = 0; b < shape_.batch; ++b) ids.insert(ids.end(), prompt.begin(), prompt.end());
  if (options.max_new_tokens == 0 && keep == nullptr) return result;

  struct RoutingLogScope {
    TransformerModel& model;
    ~RoutingLogScope() { model.set_routing_log(nullptr); }
  } routing_scope{*model_};
  model_->set_routing_log(options.record_routing ? &result.routed_experts : nullptr);
  const std::vector<ExpertCacheCounters> cache_before =
      expert_cache_ != nullptr ? expert_cache_->counters() : std::vector<ExpertCacheCounters>{};
  const std::vector<ExpertPredictionCounters> predictions_before = model_->prediction_counters();
  const uint64_t beside_before = model_->host_experts_beside();
  bool host_work = false;
  // Each layer's KV cache where the layer computes: on the host for those
  // computed there (--run-on-host: every step; decode_host_modules: the
  // decode steps, their prefill through one shared device scratch), so the
  // accelerator holds no cache it never reads.
  {
    const std::vector<DecoderLayerSpec>& layers = model_->spec().layers;
    const std::vector<std::string>& decode = options.decode_host_modules;
    std::vector<bool> on_host(layers.size(), false);
    bool scratch = false;
    for (size_t i = 0; i < layers.size(); ++i) {
      const std::string m = module_prefix_ + layers[i].module;
      const bool always = manager_.host_compute(m);
      const bool decode_only =
          !always && std::find(decode.begin(), decode.end(), m) != decode.end();
      on_host[i] = always || decode_only;
      scratch = scratch || decode_only;
    }
    state_->place_kv_cache(on_host, scratch);
    host_work = std::find(on_host.begin(), on_host.end(), true) != on_host.end();
  }
  // With host compute in the run, this thread's waits sleep instead of
  // taking a core from the host team (Accelerator::set_host_wait).
  host_work = host_work || expert_compute_ != ExpertCompute::kAccelerator ||
              model_->expert_split().has_value();
  struct HostWaitScope {
    Accelerator* accelerator = nullptr;
    ~HostWaitScope() {
      if (accelerator != nullptr) accelerator->set_host_wait(Accelerator::HostWait::kSpin);
    }
  } wait_scope;
  if (host_work) {
    wait_scope.accelerator =
        &manager_.platform().accelerator(manager_.options().compute_accelerator);
    wait_scope.accelerator->set_host_wait(Accelerator::HostWait::kSleep);
  }
  manager_.synchronize();
  const OffloadCounters start_counters = manager_.counters();
  auto start = std::chrono::steady_clock::now();
  TensorView logits = model_->step(registry_, stream_.ref(), *state_, ids, tokens);
  std::vector<int32_t> next = choose(logits, shape_.all_logits ? tokens : 1, options, 0, keep);
  result.prefill_seconds = seconds_since(start);
  manager_.synchronize();
  const OffloadCounters prefill_counters = manager_.counters();
  result.prefill_counters = counters_since(prefill_counters, start_counters);

  // Undoes the decode-only host compute however generate() ends.
  struct HostComputeScope {
    OffloadManager& manager;
    std::vector<std::string> modules;
    ~HostComputeScope() {
      for (const std::string& m : modules) {
        try {
          manager.set_host_compute(m, false);
        } catch (const std::exception&) {
        }
      }
    }
  } host_scope{manager_, {}};
  // The prefill wrote these layers' keys and values to their host caches
  // (through the device scratch, place_kv_cache above).
  for (const std::string& m : options.decode_host_modules) {
    if (manager_.host_compute(m)) continue;  // already (--run-on-host): left as it is
    manager_.set_host_compute(m, true);
    host_scope.modules.push_back(m);
  }
  if (options.graphs && graph_ == nullptr) {
    graph_ = std::make_unique<DecodeGraph>(*model_, registry_, &manager_, stream_.ref(), *state_);
  }
  const int64_t launches_before = graph_ != nullptr ? graph_->launches() : 0;
  start = std::chrono::steady_clock::now();
  for (int64_t n = 1; n <= options.max_new_tokens; ++n) {
    result.output_ids.push_back(next[0]);
    if (options.on_token) options.on_token(next[0]);
    const bool eos =
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), next[0]) != c.eos_token_ids.end();
    if ((eos && !options.ignore_eos) || n == options.max_new_tokens) break;
    logits = options.graphs ? graph_->step(next)
                            : model_->step(registry_, stream_.ref(), *state_, next, 1);
    next = choose(logits, 1, options, static_cast<uint64_t>(n), keep);
    result.decode_steps++;
  }
  result.decode_seconds = seconds_since(start);
  if (options.graphs) {
    result.graph_launches = graph_->launches() - launches_before;
    result.graph_fallback = graph_->fallback_reason();
  }
  manager_.synchronize();
  result.decode_counters = counters_since(manager_.counters(), prefill_counters);
  result.host_experts_beside = model_->host_experts_beside() - beside_before;
  if (expert_cache_ != nullptr) {
    result.expert_cache = expert_cache_->counters();
    result.expert_predictions = model_->prediction_counters();
    for (size_t i = 0; i < result.expert_cache.size() && i < cache_before.size(); ++i) {
      result.expert_cache[i] -= cache_before[i];
    }
    for (size_t i = 0; i < result.expert_predictions.size() && i < predictions_before.size();
         ++i) {
      result.expert_predictions[i].routed -= predictions_before[i].routed;
      result.expert_predictions[i].correct -= predictions_before[i].correct;
      result.expert_predictions[i].withheld -= predictions_before[i].withheld;
    }
  }
  return result;
}

}  // namespace stowage::models
