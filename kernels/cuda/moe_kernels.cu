// The MoE kernels of kernels/moe_ops.h. Routing is one thread per row (a
// router has at most 1024 experts and a decode step few rows; the softmax
// and the top-k scans run in the CPU counterpart's order); the weighted sums
// are element-wise.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/device_helpers.h"
#include "kernels/detail/moe_launch.h"

namespace stowage::kernels::detail {
namespace {

__device__ __forceinline__ bool routes_before(float a, int64_t ia, float b, int64_t ib) {
  const bool na = isnan(a), nb = isnan(b);
  if (na != nb) return nb;
  if (!na && a != b) return a > b;
  return ia < ib;
}

// One thread per row; `taken` marks chosen experts in a 1024-bit mask.
__global__ void moe_route_kernel(const float* logits, int64_t rows, int64_t experts,
                                 int64_t top_k, bool renormalize, int32_t* ids, float* weights) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  const float* x = logits + r * experts;
  float top = -INFINITY;
  for (int64_t e = 0; e < experts; ++e) top = fmaxf(top, x[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < experts; ++e) sum += expf(x[e] - top);
  uint32_t taken[32] = {};
  float chosen = 0.0f;
  for (int64_t j = 0; j < top_k; ++j) {
    int64_t best = -1;
    float best_p = 0.0f;
    for (int64_t e = 0; e < experts; ++e) {
      if (taken[e / 32] & (1u << (e % 32))) continue;
      const float p = expf(x[e] - top) / sum;
      if (best < 0 || routes_before(p, e, best_p, best)) {
        best = e;
        best_p = p;
      }
    }
    taken[best / 32] |= 1u << (best % 32);
    ids[r * top_k + j] = static_cast<int32_t>(best);
    weights[r * top_k + j] = best_p;
    chosen += best_p;
  }
  if (renormalize) {
    for (int64_t j = 0; j < top_k; ++j) weights[r * top_k + j] /= chosen;
  }
}

__global__ void moe_accumulate_kernel(const int32_t* ids, const float* weights, const float* y,
                                      int64_t rows, int64_t hidden, int64_t top_k,
                                      int32_t expert, float* out) {
  const int64_t total = rows * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / hidden;
    for (int64_t j = 0; j < top_k; ++j) {
      if (ids[r * top_k + j] == expert) out[i] += weights[r * top_k + j] * y[i];
    }
  }
}

__global__ void sigmoid_gate_add_kernel(const float* gate, const float* y, int64_t rows,
                                        int64_t hidden, float* out) {
  const int64_t total = rows * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = 1.0f / (1.0f + expf(-gate[i / hidden]));
    out[i] += g * y[i];
  }
}

}  // namespace

cudaError_t launch_moe_route(const float* logits, int64_t rows, int64_t experts, int64_t top_k,
                             bool renormalize, int32_t* ids, float* weights, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  moe_route_kernel<<<grid_for(rows, 64), 64, 0, stream>>>(logits, rows, experts, top_k,
                                                           renormalize, ids, weights);
  return cudaGetLastError();
}

cudaError_t launch_moe_accumulate(const int32_t* ids, const float* weights, const float* y,
                                  int64_t rows, int64_t hidden, int64_t top_k, int32_t expert,
                                  float* out, cudaStream_t stream) {
  if (rows * hidden == 0) return cudaSuccess;
  moe_accumulate_kernel<<<grid_for(rows * hidden, 256), 256, 0, stream>>>(
      ids, weights, y, rows, hidden, top_k, expert, out);
  return cudaGetLastError();
}

cudaError_t launch_sigmoid_gate_add(const float* gate, const float* y, int64_t rows,
                                    int64_t hidden, float* out, cudaStream_t stream) {
  if (rows * hidden == 0) return cudaSuccess;
  sigmoid_gate_add_kernel<<<grid_for(rows * hidden, 256), 256, 0, stream>>>(gate, y, rows, hidden,
                                                                          out);
  return cudaGetLastError();
}

}  // namespace stowage::kernels::detail
