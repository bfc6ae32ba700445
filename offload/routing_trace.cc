#include "offload/routing_trace.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace stowage {

std::vector<std::vector<std::vector<int32_t>>> make_routing_trace(const RoutingTraceOptions& o) {
  std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ULL + 1);
  const size_t experts = static_cast<size_t>(std::max<int64_t>(o.experts, 1));
  const size_t k = static_cast<size_t>(std::clamp<int64_t>(o.top_k, 1, o.experts));
  std::vector<double> by_rank(experts);
  for (size_t r = 0; r < experts; ++r) {
    by_rank[r] = o.zipf_exponent > 0 ? 1.0 / std::pow(static_cast<double>(r + 1), o.zipf_exponent)
                                     : 1.0;
  }
  // Each layer's popularity order.
  std::vector<std::vector<double>> weights(static_cast<size_t>(o.layers));
  for (auto& w : weights) {
    std::vector<size_t> order(experts);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    w.assign(experts, 0.0);
    for (size_t r = 0; r < experts; ++r) w[order[r]] = by_rank[r];
  }
  std::vector<std::vector<std::vector<int32_t>>> trace(static_cast<size_t>(o.steps));
  for (auto& step : trace) {
    step.resize(static_cast<size_t>(o.layers));
    for (size_t layer = 0; layer < step.size(); ++layer) {
      std::vector<double> w = weights[layer];
      for (size_t j = 0; j < k; ++j) {
        std::discrete_distribution<size_t> pick(w.begin(), w.end());
        const size_t e = pick(rng);
        step[layer].push_back(static_cast<int32_t>(e));
        w[e] = 0.0;  // without replacement
      }
    }
  }
  return trace;
}

}  // namespace stowage
