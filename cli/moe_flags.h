// The mixture-of-experts flags of `stowage generate` and `stowage bench`
// (issue #20), beside the placement flags (--max-memory, --override-tensor):
//
//   --cpu-moe N                  every routed expert of decoder layers 0..N-1
//                                stays in host RAM (llama.cpp's --n-cpu-moe);
//                                a tensor override, so --max-memory is needed
//   --expert-cache N|auto        accelerator expert cache of N slots (auto: what
//                                the budget leaves after loading)
//   --expert-cache-policy lfu|lru  its replacement (default lfu, with aging)
//   --no-expert-predict          no prediction of the next layer's experts
//   --expert-compute accelerator|host|split|auto  where experts off the
//                                accelerator compute: fetched (into the cache)
//                                to the accelerator, on the host where their
//                                weights are, split each step (the absent
//                                ones copied or computed on the host,
//                                whichever finishes first by measured costs;
//                                needs --expert-cache), or the fastest as
//                                measured over a few decode steps (default
//                                accelerator)
//   --routing-trace uniform|zipf:S  (bench) replay a synthetic routing instead
//                                of the router's, since random weights route
//                                uniformly (offload/routing_trace.h)
//
// Thread safety: plain functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "cli/args.h"
#include "models/transformer_runner.h"
#include "offload/replacement_policy.h"
#include "offload/routing_trace.h"

namespace stowage::cli {

inline const std::vector<std::string> kMoeValueFlags = {
    "cpu-moe", "expert-cache", "expert-cache-policy", "routing-trace", "expert-compute"};
inline const char* kNoExpertPredictFlag = "no-expert-predict";

struct MoeFlags {
  int64_t cpu_moe = 0;
  int64_t expert_cache_slots = 0;  // -1: auto
  ReplacementPolicyKind policy = ReplacementPolicyKind::kLfuAging;
  bool predict = true;
  std::optional<double> trace_zipf;  // --routing-trace: 0 uniform, else the exponent
  std::string trace_name;            // as given
  std::string compute = "accelerator";  // --expert-compute
};

// Throws UsageError naming the flag for a malformed value, and for
// --expert-cache-policy or --no-expert-predict without --expert-cache.
MoeFlags parse_moe_flags(const ArgParser& parser);

// Applies the flags to a loaded runner: the cache's policy and prediction,
// and (with a trace) the forced routing of `steps` steps of the trace
// (the generation's steps, repeated when it runs longer).
// --expert-compute auto measures over a few steps after `prompt` (the
// measured seconds per step then appear in moe_report).
// split and auto take `link_bytes_per_s`, the pinned link rate measured by
// the caller (moe_flags_need_link_rate says when; 0 leaves the split out).
void apply_moe_flags(models::TransformerRunner& runner, const MoeFlags& flags, int64_t steps,
                     const std::vector<int32_t>& prompt, double link_bytes_per_s);
bool moe_flags_need_link_rate(const MoeFlags& flags);

// The MoE part of a run's report: expert cache slots, hits, misses and hit
// rate (total and per layer), prediction accuracy, the policy and the trace.
boost::json::object moe_report(models::TransformerRunner& runner,
                               const models::GenerationResult& result, const MoeFlags& flags);

}  // namespace stowage::cli
