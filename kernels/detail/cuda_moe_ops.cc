// The CUDA side of moe_ops.h: the launchers of kernels/cuda/moe_kernels.cu,
// each status checked.
#include "kernels/detail/cuda_moe_ops.h"

#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "kernels/detail/moe_launch.h"

namespace stowage::kernels::detail {
namespace {
cudaStream_t native(void* stream) { return static_cast<cudaStream_t>(stream); }
}  // namespace

void cuda_moe_route(const MoeRouteArgs& a, void* stream) {
  STOWAGE_CUDA_TRY(launch_moe_route(a.logits, a.rows, a.experts, a.top_k, a.renormalize, a.ids,
                                    a.weights, native(stream)));
}

void cuda_moe_accumulate(const MoeAccumulateArgs& a, void* stream) {
  STOWAGE_CUDA_TRY(launch_moe_accumulate(a.ids, a.weights, a.y, a.rows, a.hidden, a.top_k,
                                         a.expert, a.out, native(stream)));
}

void cuda_sigmoid_gate_add(const SigmoidGateAddArgs& a, void* stream) {
  STOWAGE_CUDA_TRY(launch_sigmoid_gate_add(a.gate, a.y, a.rows, a.hidden, a.out, native(stream)));
}

}  // namespace stowage::kernels::detail
