// The CUDA side of moe_ops.h where no CUDA toolkit was found: every call
// throws DeviceError (a CUDA stream cannot exist in such a build).
#include <fmt/format.h>

#include "core/error.h"
#include "kernels/detail/cuda_moe_ops.h"

namespace stowage::kernels::detail {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw DeviceError(fmt::format("kernels::{}: this build has no CUDA support", what));
}
}  // namespace

void cuda_moe_route(const MoeRouteArgs&, void*) { no_cuda("moe_route"); }
void cuda_moe_accumulate(const MoeAccumulateArgs&, void*) { no_cuda("moe_accumulate"); }
void cuda_sigmoid_gate_add(const SigmoidGateAddArgs&, void*) { no_cuda("sigmoid_gate_add"); }

}  // namespace stowage::kernels::detail
