// The public calls of moe_ops.h: argument checks, then the CPU counterpart
// (null stream: now; sim stream: in stream order) or the CUDA kernels.
#include "kernels/moe_ops.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_moe_ops.h"
#include "kernels/detail/dispatch.h"

namespace stowage::kernels {
namespace {

using detail::dispatch;
using detail::expect_non_negative;
using detail::expect_pointer;

constexpr int64_t kMaxExperts = 1024;

// The routing order: a larger probability first, NaN last, then the lower
// expert (a total order, so the choice is unique). The CUDA kernel uses the
// same rule.
bool routes_before(float a, int64_t ia, float b, int64_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na != nb) return nb;
  if (!na && a != b) return a > b;
  return ia < ib;
}

void cpu_moe_route(const MoeRouteArgs& a) {
  std::vector<float> p(static_cast<size_t>(a.experts));
  std::vector<char> taken(static_cast<size_t>(a.experts));
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.logits + r * a.experts;
    float top = -INFINITY;
    for (int64_t e = 0; e < a.experts; ++e) top = std::fmax(top, x[e]);
    float sum = 0.0f;
    for (int64_t e = 0; e < a.experts; ++e) sum += p[e] = std::exp(x[e] - top);
    for (int64_t e = 0; e < a.experts; ++e) p[e] /= sum;
    std::fill(taken.begin(), taken.end(), 0);
    float chosen = 0.0f;
    for (int64_t j = 0; j < a.top_k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < a.experts; ++e) {
        if (!taken[e] && (best < 0 || routes_before(p[e], e, p[best], best))) best = e;
      }
      taken[best] = 1;
      a.ids[r * a.top_k + j] = static_cast<int32_t>(best);
      a.weights[r * a.top_k + j] = p[best];
      chosen += p[best];
    }
    if (a.renormalize) {
      for (int64_t j = 0; j < a.top_k; ++j) a.weights[r * a.top_k + j] /= chosen;
    }
  }
}

void cpu_moe_accumulate(const MoeAccumulateArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    for (int64_t j = 0; j < a.top_k; ++j) {
      if (a.ids[r * a.top_k + j] != a.expert) continue;
      const float w = a.weights[r * a.top_k + j];
      for (int64_t c = 0; c < a.hidden; ++c) a.out[r * a.hidden + c] += w * a.y[r * a.hidden + c];
    }
  }
}

void cpu_sigmoid_gate_add(const SigmoidGateAddArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const float g = 1.0f / (1.0f + std::exp(-a.gate[r]));
    for (int64_t c = 0; c < a.hidden; ++c) a.out[r * a.hidden + c] += g * a.y[r * a.hidden + c];
  }
}

}  // namespace

void moe_route(const MoeRouteArgs& a, StreamRef stream) {
  const char* call = "moe_route";
  expect_non_negative(call, "rows", a.rows);
  STOWAGE_EXPECTS(a.experts > 0 && a.experts <= kMaxExperts && a.top_k > 0 && a.top_k <= a.experts,
                  InvalidInputError,
                  "kernels::moe_route: expected 0 < top_k <= experts <= {}, found top_k {} of {} "
                  "experts",
                  kMaxExperts, a.top_k, a.experts);
  const bool work = a.rows > 0;
  expect_pointer(call, "logits", a.logits, work);
  expect_pointer(call, "ids", a.ids, work);
  expect_pointer(call, "weights", a.weights, work);
  if (!work) return;
  dispatch(
      stream, [a] { cpu_moe_route(a); }, [&](void* s) { detail::cuda_moe_route(a, s); });
}

void moe_accumulate(const MoeAccumulateArgs& a, StreamRef stream) {
  const char* call = "moe_accumulate";
  expect_non_negative(call, "rows", a.rows);
  expect_non_negative(call, "hidden", a.hidden);
  STOWAGE_EXPECTS(a.top_k > 0 && a.expert >= 0, InvalidInputError,
                  "kernels::moe_accumulate: expected top_k > 0 and expert >= 0, found {} and {}",
                  a.top_k, a.expert);
  const bool work = a.rows * a.hidden > 0;
  expect_pointer(call, "ids", a.ids, work);
  expect_pointer(call, "weights", a.weights, work);
  expect_pointer(call, "y", a.y, work);
  expect_pointer(call, "out", a.out, work);
  if (!work) return;
  dispatch(
      stream, [a] { cpu_moe_accumulate(a); }, [&](void* s) { detail::cuda_moe_accumulate(a, s); });
}

void sigmoid_gate_add(const SigmoidGateAddArgs& a, StreamRef stream) {
  const char* call = "sigmoid_gate_add";
  expect_non_negative(call, "rows", a.rows);
  expect_non_negative(call, "hidden", a.hidden);
  const bool work = a.rows * a.hidden > 0;
  expect_pointer(call, "gate", a.gate, work);
  expect_pointer(call, "y", a.y, work);
  expect_pointer(call, "out", a.out, work);
  if (!work) return;
  dispatch(
      stream, [a] { cpu_sigmoid_gate_add(a); },
      [&](void* s) { detail::cuda_sigmoid_gate_add(a, s); });
}

}  // namespace stowage::kernels
