#include "cli/moe_flags.h"

#include <fmt/format.h>

#include <memory>

#include "core/error.h"

namespace stowage::cli {

MoeFlags parse_moe_flags(const ArgParser& p) {
  MoeFlags f;
  f.cpu_moe = p.get_int("cpu-moe", 0, 0, 1 << 20);
  if (auto cache = p.get("expert-cache")) {
    if (*cache == "auto") {
      f.expert_cache_slots = -1;
    } else {
      f.expert_cache_slots = p.get_int("expert-cache", 0, 1, 1 << 20);
    }
  }
  if (auto policy = p.get("expert-cache-policy")) {
    if (*policy != "lfu" && *policy != "lru") {
      throw UsageError(
          fmt::format("--expert-cache-policy: expected lfu or lru, found '{}'", *policy));
    }
    f.policy = parse_replacement_policy(*policy);
  }
  f.predict = !p.has(kNoExpertPredictFlag);
  if (f.expert_cache_slots == 0 &&
      (p.has("expert-cache-policy") || p.has(kNoExpertPredictFlag))) {
    throw UsageError("--expert-cache-policy and --no-expert-predict need --expert-cache");
  }
  f.compute = p.get_or("expert-compute", "accelerator");
  if (f.compute != "accelerator" && f.compute != "host" && f.compute != "split" &&
      f.compute != "auto") {
    throw UsageError(fmt::format(
        "--expert-compute: expected accelerator, host, split or auto, found '{}'", f.compute));
  }
  if (f.compute == "split" && f.expert_cache_slots == 0) {
    throw UsageError("--expert-compute split: needs --expert-cache (the experts it holds stay "
                     "on the accelerator; the split is of the absent ones)");
  }
  if (auto trace = p.get("routing-trace")) {
    f.trace_name = *trace;
    if (*trace == "uniform") {
      f.trace_zipf = 0.0;
    } else if (trace->rfind("zipf:", 0) == 0) {
      try {
        size_t used = 0;
        const double s = std::stod(trace->substr(5), &used);
        if (used == trace->size() - 5 && s > 0 && s <= 10) f.trace_zipf = s;
      } catch (const std::exception&) {
      }
    }
    if (!f.trace_zipf) {
      throw UsageError(fmt::format(
          "--routing-trace: expected uniform or zipf:S with 0 < S <= 10, found '{}'", *trace));
    }
  }
  return f;
}

namespace {

void force_trace(models::TransformerRunner& runner, const MoeFlags& flags, int64_t steps) {
  const models::TransformerConfig& c = runner.spec().config;
  if (!c.moe) throw UsageError("--routing-trace: the model has no mixture-of-experts layers");
  RoutingTraceOptions o;
  o.layers = c.num_layers;
  o.experts = c.moe->num_experts;
  o.top_k = c.moe->experts_per_token;
  o.steps = std::max<int64_t>(steps, 1);
  o.zipf_exponent = *flags.trace_zipf;
  o.seed = 20;
  auto trace = std::make_shared<std::vector<std::vector<std::vector<int32_t>>>>(
      make_routing_trace(o));
  // A step begins at the first sparse layer; the trace repeats past its end.
  auto step = std::make_shared<int64_t>(-1);
  size_t first_sparse = 0;
  while (!models::is_sparse_layer(c, static_cast<int64_t>(first_sparse))) ++first_sparse;
  runner.model().set_forced_routing([trace, step, first_sparse](size_t layer) {
    if (layer == first_sparse) ++*step;
    return (*trace)[static_cast<size_t>(*step) % trace->size()][layer];
  });
}

}  // namespace

void apply_moe_flags(models::TransformerRunner& runner, const MoeFlags& flags, int64_t steps,
                     const std::vector<int32_t>& prompt, double link_bytes_per_s) {
  using Where = models::TransformerRunner::ExpertCompute;
  if (runner.expert_cache() != nullptr) runner.configure_expert_cache(flags.policy, flags.predict);
  if (flags.trace_zipf) force_trace(runner, flags, steps);
  if (!runner.spec().config.moe) return;
  if (flags.compute == "host") runner.set_expert_compute(Where::kHost);
  if (flags.compute == "auto" || flags.compute == "split") {
    const auto choice = runner.choose_expert_compute(prompt, 8, link_bytes_per_s);
    // A run with no decode step to measure (bench's prefill) has nothing to split.
    if (flags.compute == "split" && choice.accelerator_step_s > 0) {
      runner.set_expert_compute(Where::kSplit);
    }
  }
}

bool moe_flags_need_link_rate(const MoeFlags& flags) {
  return flags.compute == "auto" || flags.compute == "split";
}

boost::json::object moe_report(models::TransformerRunner& runner,
                               const models::GenerationResult& r, const MoeFlags& flags) {
  boost::json::object o;
  o["cpu_moe"] = flags.cpu_moe;
  o["expert_compute_flag"] = flags.compute;
  o["expert_compute"] = models::TransformerRunner::expert_compute_name(runner.expert_compute());
  o["routing"] = flags.trace_name.empty() ? std::string("router") : flags.trace_name;
  if (const auto& measured = runner.measured_expert_compute()) {
    o["accelerator_step_seconds"] = measured->accelerator_step_s;
    o["host_step_seconds"] = measured->host_step_s;
    o["split_step_seconds"] = measured->split_step_s;
    if (measured->split_costs) {
      o["split_link_bytes_per_s"] = 1.0 / measured->split_costs->link_seconds_per_byte;
      o["split_host_bytes_per_s"] = 1.0 / measured->split_costs->host_seconds_per_byte;
    }
  }
  const int64_t slots = runner.shape().expert_cache_slots;
  o["expert_cache_slots"] = slots;
  if (slots <= 0) return o;
  o["expert_cache_policy"] = replacement_policy_name(flags.policy);
  o["prediction"] = flags.predict;
  ExpertCacheCounters total;
  boost::json::array layers;
  for (const ExpertCacheCounters& c : r.expert_cache) {
    total += c;
    layers.push_back({{"hits", c.hits}, {"misses", c.misses}, {"uncached", c.uncached},
                      {"host", c.host}, {"split", c.split}, {"hit_rate", c.hit_rate()}});
  }
  models::ExpertPredictionCounters predicted;
  for (const models::ExpertPredictionCounters& p : r.expert_predictions) {
    predicted.routed += p.routed;
    predicted.correct += p.correct;
    predicted.withheld += p.withheld;
  }
  o["hits"] = total.hits;
  o["misses"] = total.misses;
  o["uncached"] = total.uncached;
  o["host_computed"] = total.host;
  o["host_computed_beside"] = r.host_experts_beside;
  o["split_by_rows"] = total.split;
  o["hit_rate"] = total.hit_rate();
  o["prefetched"] = total.predicted;
  o["prefetched_used"] = total.predicted_used;
  // Copies into the cache are not among the run's streamed bytes (the fetch slots').
  o["cache_bytes_copied"] = total.bytes_copied;
  o["cache_bytes_per_step"] =
      r.decode_steps > 0 ? total.bytes_copied / static_cast<uint64_t>(r.decode_steps + 1) : total.bytes_copied;
  o["prediction_accuracy"] = predicted.accuracy();
  o["predicted_routings"] = predicted.routed;
  // Guesses made but not copied: their layer's recent accuracy was under
  // TransformerModel::kPrefetchAccuracyFloor.
  o["prefetch_withheld"] = predicted.withheld;
  o["layers"] = std::move(layers);
  return o;
}

}  // namespace stowage::cli
