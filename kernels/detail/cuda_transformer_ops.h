// The CUDA side of kernels/transformer_ops.h, behind an interface free of
// CUDA headers. Defined in cuda_transformer_ops.cc where CUDA is found, else
// in cuda_transformer_ops_stub.cc (each throws DeviceError). Arguments are
// already validated; `stream` is a cudaStream_t. Internal to kernels/.
#pragma once

#include <cstdint>

#include "kernels/gemm.h"
#include "kernels/transformer_ops.h"

namespace stowage::kernels::detail {

void cuda_rms_norm(const RmsNormArgs& args, void* stream);
void cuda_apply_rope(const RopeArgs& args, void* stream);
void cuda_embedding_lookup(const EmbeddingArgs& args, void* stream);
void cuda_swiglu(const SwigluArgs& args, void* stream);
void cuda_add_in_place(float* y, const float* x, int64_t count, void* stream);
void cuda_kv_append(const KvAppendArgs& args, void* stream);
void cuda_attention(const AttentionArgs& args, void* stream);
// One launch: the arguments are one decode step (transformer_ops.cc's
// one_decode_step).
void cuda_rope_append_attention(const RopeAppendAttentionArgs& args, void* stream);
void cuda_argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids, void* stream);
// gemm.h's dense_gemv_group (act null) or dense_gemv_swiglu (count 2, act
// set) behind an input RMSNorm.
void cuda_rms_norm_dense_gemv_group(const DenseGemvArgs* outputs, int count,
                                    const DenseGemvInputNorm& norm, float* act, void* stream);

}  // namespace stowage::kernels::detail
