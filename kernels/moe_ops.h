// The mixture-of-experts operations of a sparse decoder layer (Mixtral,
// Qwen2-MoE, Qwen3-MoE), beside the projections (models/linear.h): top-k
// routing of each token to its experts, and the weighted sums of the
// experts' outputs. Conventions as kernels/transformer_ops.h: float32
// activations, pointers the stream's device can address, work enqueued on
// `stream` (a null StreamRef runs the CPU counterpart on the calling
// thread), arguments checked on the calling thread (InvalidInputError).
//
// Determinism: each op sums in an order fixed by its sizes; CUDA and the CPU
// counterparts agree within float32 rounding.
//
// Thread safety: every call is reentrant.
#pragma once

#include <cstdint>

#include "core/stream.h"

namespace stowage::kernels {

// For each row r of the router's logits [rows, experts]:
//   p = softmax(logits[r, :]) in float32 (max subtracted);
//   ids[r, 0..top_k) = the top_k experts by p, largest first (ties: the lower
//   expert first; NaN never chosen over a number), weights[r, j] = p[ids[r, j]];
//   when `renormalize`, weights[r, :] /= sum_j weights[r, j] (Mixtral always;
//   Qwen MoE when norm_topk_prob).
// ids: int32 [rows, top_k]; weights: F32 [rows, top_k]. 0 < top_k <= experts
// <= 1024.
struct MoeRouteArgs {
  int64_t rows = 0;
  int64_t experts = 0;
  int64_t top_k = 0;
  bool renormalize = true;
  const float* logits = nullptr;
  int32_t* ids = nullptr;
  float* weights = nullptr;
};
void moe_route(const MoeRouteArgs& args, StreamRef stream);

// out[r, :] += weights[r, j] * y[r, :] for every row r and slot j with
// ids[r, j] == expert (rows not routed to `expert` are left as they are).
// y, out: F32 [rows, hidden]; ids, weights: as moe_route wrote them.
struct MoeAccumulateArgs {
  int64_t rows = 0;
  int64_t hidden = 0;
  int64_t top_k = 0;
  int32_t expert = 0;
  const int32_t* ids = nullptr;
  const float* weights = nullptr;
  const float* y = nullptr;
  float* out = nullptr;
};
void moe_accumulate(const MoeAccumulateArgs& args, StreamRef stream);

// out[r, :] += sigmoid(gate[r]) * y[r, :] (Qwen2-MoE's shared expert and its
// one-output gate). gate: F32 [rows]; y, out: F32 [rows, hidden].
struct SigmoidGateAddArgs {
  int64_t rows = 0;
  int64_t hidden = 0;
  const float* gate = nullptr;
  const float* y = nullptr;
  float* out = nullptr;
};
void sigmoid_gate_add(const SigmoidGateAddArgs& args, StreamRef stream);

}  // namespace stowage::kernels
