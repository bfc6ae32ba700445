// The CUDA side of transformer_ops.h where no CUDA toolkit was found: every
// call throws DeviceError (a CUDA stream cannot exist in such a build).
#include <fmt/format.h>

#include "core/error.h"
#include "kernels/detail/cuda_transformer_ops.h"

namespace stowage::kernels::detail {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw DeviceError(fmt::format("kernels::{}: this build has no CUDA support", what));
}
}  // namespace

void cuda_rms_norm(const RmsNormArgs&, void*) { no_cuda("rms_norm"); }
void cuda_apply_rope(const RopeArgs&, void*) { no_cuda("apply_rope"); }
void cuda_embedding_lookup(const EmbeddingArgs&, void*) { no_cuda("embedding_lookup"); }
void cuda_swiglu(const SwigluArgs&, void*) { no_cuda("swiglu"); }
void cuda_add_in_place(float*, const float*, int64_t, void*) { no_cuda("add_in_place"); }
void cuda_kv_append(const KvAppendArgs&, void*) { no_cuda("kv_append"); }
void cuda_attention(const AttentionArgs&, void*) { no_cuda("attention"); }
void cuda_rope_append_attention(const RopeAppendAttentionArgs&, void*) {
  no_cuda("rope_append_attention");
}
void cuda_argmax_rows(const float*, int64_t, int64_t, int32_t*, void*) { no_cuda("argmax_rows"); }
void cuda_rms_norm_dense_gemv_group(const DenseGemvArgs*, int, const DenseGemvInputNorm&, float*,
                                    void*) {
  no_cuda("dense_gemv_group with an input norm");
}

}  // namespace stowage::kernels::detail
