// Launchers of the MoE kernels in kernels/cuda/moe_kernels.cu. Internal:
// only kernels/detail/cuda_moe_ops.cc calls them. Included by nvcc: CUDA and
// std headers only. Every pointer is device memory; launches are
// asynchronous on `stream`; arguments are validated by kernels/moe_ops.cc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace stowage::kernels::detail {

cudaError_t launch_moe_route(const float* logits, int64_t rows, int64_t experts, int64_t top_k,
                             bool renormalize, int32_t* ids, float* weights, cudaStream_t stream);

cudaError_t launch_moe_accumulate(const int32_t* ids, const float* weights, const float* y,
                                  int64_t rows, int64_t hidden, int64_t top_k, int32_t expert,
                                  float* out, cudaStream_t stream);

cudaError_t launch_sigmoid_gate_add(const float* gate, const float* y, int64_t rows,
                                    int64_t hidden, float* out, cudaStream_t stream);

}  // namespace stowage::kernels::detail
