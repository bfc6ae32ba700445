// The CUDA side of transformer_ops.h: maps the argument structs onto the
// launchers of kernels/cuda/transformer_kernels.cu and checks each status.
#include "kernels/detail/cuda_transformer_ops.h"

#include <cuda_runtime_api.h>

#include <string>

#include "core/cuda_check.h"
#include "core/error.h"
#include "kernels/detail/float_type.h"
#include "kernels/detail/transformer_launch.h"

namespace stowage::kernels::detail {
namespace {
// The device a failed launch was on (asked only on failure).
std::string device() { return ::stowage::detail::current_cuda_device(); }
}  // namespace

void cuda_rms_norm(const RmsNormArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_rms_norm(a.x, a.weight, float_type(a.weight_dtype), a.rows, a.cols,
                                       a.eps, a.y, as_stream(stream)),
                       "{}: kernels::rms_norm of {} x {}", device(), a.rows, a.cols);
}

void cuda_apply_rope(const RopeArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(
      launch_rope(a.x, a.heads, a.x2, a.x2 != nullptr ? a.heads2 : 0, a.positions, a.inv_freq,
                  a.tokens, a.head_dim, as_stream(stream)),
      "{}: kernels::apply_rope of {} tokens x {}+{} heads x {}", device(), a.tokens, a.heads,
      a.heads2, a.head_dim);
}

void cuda_embedding_lookup(const EmbeddingArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_embedding(a.ids, a.table, float_type(a.table_dtype), a.tokens,
                                        a.hidden, a.out, as_stream(stream)),
                       "{}: kernels::embedding_lookup of {} tokens x {}", device(), a.tokens,
                       a.hidden);
}

void cuda_swiglu(const SwigluArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_swiglu(a.gate, a.gate_stride, a.up, a.up_stride, a.rows, a.cols,
                                     a.out, as_stream(stream)),
                       "{}: kernels::swiglu of {} x {}", device(), a.rows, a.cols);
}

void cuda_add_in_place(float* y, const float* x, int64_t count, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_add_in_place(y, x, count, as_stream(stream)),
                       "{}: kernels::add_in_place of {} floats", device(), count);
}

void cuda_kv_append(const KvAppendArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(
      launch_kv_append(a.src, a.src2, a.src_stride, a.batch, a.tokens, a.kv_heads * a.head_dim,
                       a.past, a.past_at, a.capacity, a.cache, a.cache2, as_stream(stream)),
      "{}: kernels::kv_append of {} x {} tokens after {} (capacity {})", device(), a.batch,
      a.tokens, a.past, a.capacity);
}

namespace {

AttentionLaunch attention_launch(const AttentionArgs& a) {
  AttentionLaunch l;
  l.batch = a.batch;
  l.tokens = a.tokens;
  l.heads = a.heads;
  l.kv_heads = a.kv_heads;
  l.head_dim = a.head_dim;
  l.past = a.past;
  l.past_at = a.past_at;
  l.capacity = a.capacity;
  l.window = a.window;
  l.scale = a.scale;
  l.q = a.q;
  l.q_stride = a.q_stride;
  l.k_cache = a.k_cache;
  l.v_cache = a.v_cache;
  l.out = a.out;
  return l;
}

}  // namespace

void cuda_attention(const AttentionArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_attention(attention_launch(a), as_stream(stream)),
                       "{}: kernels::attention of {} x {} tokens, {} heads ({} kv) x {}, past {}",
                       device(), a.batch, a.tokens, a.heads, a.kv_heads, a.head_dim, a.past);
}

void cuda_rope_append_attention(const RopeAppendAttentionArgs& f, void* stream) {
  const AttentionArgs& a = f.attention;
  RopeAppendLaunch r;
  r.positions = f.rope.positions;
  r.inv_freq = f.rope.inv_freq;
  r.k = f.append.src;
  r.v = f.append.src2;
  r.stride = f.append.src_stride;
  r.k_cache = f.append.cache;
  r.v_cache = f.append.cache2;
  STOWAGE_CUDA_TRY_FOR(
      launch_rope_append_attention(attention_launch(a), r, as_stream(stream)),
      "{}: kernels::rope_append_attention of {} sequences, {} heads ({} kv) x {}, past {}",
      device(), a.batch, a.heads, a.kv_heads, a.head_dim, a.past);
}

void cuda_argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids,
                      void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_argmax_rows(logits, rows, vocab, ids, as_stream(stream)),
                       "{}: kernels::argmax_rows of {} x {}", device(), rows, vocab);
}

void cuda_rms_norm_dense_gemv_group(const DenseGemvArgs* outputs, int count,
                                    const DenseGemvInputNorm& norm, float* act, void* stream) {
  DenseGemvLaunch launches[kDenseGemvMaxGroup];
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) {
    launches[i] = dense_gemv_launch(outputs[i]);
    rows += outputs[i].n;
  }
  const RmsNormInputLaunch n{norm.weight, float_type(norm.dtype), norm.eps, norm.out};
  STOWAGE_CUDA_TRY_FOR(
      launch_rms_norm_dense_gemv_group(launches, count, n, act, as_stream(stream)),
      "{}: kernels: RMSNorm of m={} x k={} into {} dense GEMV{} ({} output rows, {} weights)",
      device(), outputs[0].m, outputs[0].k, act != nullptr ? "SwiGLU" : std::to_string(count),
      count == 1 ? "" : "s", rows, short_name(outputs[0].weight_dtype));
}

}  // namespace stowage::kernels::detail
