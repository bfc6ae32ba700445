// The CUDA side of kernels/moe_ops.h, free of CUDA headers: defined in
// cuda_moe_ops.cc where CUDA is found, else in cuda_moe_ops_stub.cc (each
// throws DeviceError). Arguments are already validated; `stream` is a
// cudaStream_t. Internal to kernels/.
#pragma once

#include "kernels/moe_ops.h"

namespace stowage::kernels::detail {

void cuda_moe_route(const MoeRouteArgs& args, void* stream);
void cuda_moe_accumulate(const MoeAccumulateArgs& args, void* stream);
void cuda_sigmoid_gate_add(const SigmoidGateAddArgs& args, void* stream);

}  // namespace stowage::kernels::detail
