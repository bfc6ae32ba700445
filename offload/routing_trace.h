// Synthetic expert routing for benchmarks and tests: random weights route
// tokens almost uniformly, while trained mixture-of-experts models favour
// some experts (a skew a Zipf law describes), which is what an expert cache
// exploits. A trace replays one such routing through a model run.
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace stowage {

struct RoutingTraceOptions {
  int64_t layers = 1;
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t steps = 1;
  // 0: uniform; s > 0: expert of popularity rank r (1-based) drawn with
  // probability proportional to 1 / r^s, each layer with its own random
  // order of ranks.
  double zipf_exponent = 0.0;
  uint64_t seed = 0;
};

// trace[step][layer]: top_k distinct experts (a draw without replacement),
// the same for the same options.
std::vector<std::vector<std::vector<int32_t>>> make_routing_trace(const RoutingTraceOptions& o);

}  // namespace stowage
