// Launchers of the transformer kernels in kernels/cuda/transformer_kernels.cu.
// Internal: only kernels/detail/cuda_transformer_ops.cc calls them (checking
// each returned status). Included by nvcc: CUDA, std and fmt-free project
// headers only. Every pointer is device memory; every launch is asynchronous
// on `stream`. Arguments are validated by the public calls.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/detail/launch.h"

namespace stowage::kernels::detail {

cudaError_t launch_rms_norm(const float* x, const void* weight, FloatType weight_type, int64_t rows,
                            int64_t cols, float eps, float* y, cudaStream_t stream);

// The RMSNorm in front of a dense GEMV group (gemm.h's DenseGemvInputNorm):
// out [m, k] = launch_rms_norm of the group's x with this weight and eps.
struct RmsNormInputLaunch {
  const void* weight;
  FloatType weight_type;
  float eps;
  float* out;
};
// launch_dense_gemv_group (launch.h) over the normalized x: the GEMVs read
// the bits launch_rms_norm writes to norm.out, and norm.out is written. One
// launch (dense_gemv_kernels.cu) where every weight is whole 16-byte chunks,
// m * k floats fit the block's shared memory and norm.out does not overlap
// x; otherwise launch_rms_norm, then the group over norm.out.
cudaError_t launch_rms_norm_dense_gemv_group(const DenseGemvLaunch* outputs, int count,
                                             const RmsNormInputLaunch& norm, float* act,
                                             cudaStream_t stream);

// x2 (heads2 heads) is rotated in the same launch when heads2 > 0.
cudaError_t launch_rope(float* x, int64_t heads, float* x2, int64_t heads2,
                        const int32_t* positions, const float* inv_freq, int64_t tokens,
                        int64_t head_dim, cudaStream_t stream);

cudaError_t launch_embedding(const int32_t* ids, const void* table, FloatType table_type,
                             int64_t tokens, int64_t hidden, float* out, cudaStream_t stream);

cudaError_t launch_swiglu(const float* gate, int64_t gate_stride, const float* up,
                          int64_t up_stride, int64_t rows, int64_t cols, float* out,
                          cudaStream_t stream);

cudaError_t launch_add_in_place(float* y, const float* x, int64_t count, cudaStream_t stream);

// src2 -> cache2 in the same launch when src2 is set.
cudaError_t launch_kv_append(const float* src, const float* src2, int64_t src_stride,
                             int64_t batch, int64_t tokens, int64_t row, int64_t past,
                             const int32_t* past_at, int64_t capacity, float* cache,
                             float* cache2, cudaStream_t stream);

// The attention of transformer_ops.h, its fields as there.
struct AttentionLaunch {
  int64_t batch, tokens, heads, kv_heads, head_dim, past, capacity, window;
  const int32_t* past_at;
  float scale;
  const float* q;
  int64_t q_stride;
  const float* k_cache;
  const float* v_cache;
  float* out;
};
cudaError_t launch_attention(const AttentionLaunch& args, cudaStream_t stream);

// A decode step's RoPE and KV append done by its attention launch
// (transformer_ops.h's rope_append_attention): the queries are rotated at
// positions[bt] as they are loaded, and the block that reads position past of
// a sequence first rotates that sequence's new key row (k, row stride
// `stride`) and writes it and the value row (v) into k_cache and v_cache
// there. The same bits as launch_rope, launch_kv_append and launch_attention
// in turn, except that q, k and v are left unrotated.
struct RopeAppendLaunch {
  const int32_t* positions;  // [batch]
  const float* inv_freq;     // [head_dim / 2]
  const float* k;            // [batch, kv_heads * head_dim], row stride `stride`
  const float* v;
  int64_t stride;
  float* k_cache;  // args.k_cache and args.v_cache, writable
  float* v_cache;
};
// args.tokens must be 1 (one launch of the split kernel); cudaErrorInvalidValue
// otherwise.
cudaError_t launch_rope_append_attention(const AttentionLaunch& args,
                                         const RopeAppendLaunch& rope_append,
                                         cudaStream_t stream);

cudaError_t launch_argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids,
                               cudaStream_t stream);

}  // namespace stowage::kernels::detail
