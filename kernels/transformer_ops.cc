// The public calls of transformer_ops.h: argument checks on the calling
// thread, then the CPU counterpart (null stream: now; sim stream: enqueued
// with host_task) or the CUDA implementation (on the stream's native handle).
#include "kernels/transformer_ops.h"

#include <limits>

#include "core/error.h"
#include "kernels/cpu_transformer_ops.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_transformer_ops.h"
#include "kernels/detail/dispatch.h"

namespace stowage::kernels {
namespace {

using detail::dispatch;
using detail::expect_float_dtype;
using detail::expect_non_negative;
using detail::expect_pointer;

void expect_stride(const char* call, const char* what, int64_t stride, int64_t row, bool needed) {
  STOWAGE_EXPECTS(!needed || stride >= row, InvalidInputError,
                  "kernels::{}: {} must be at least the row's {} elements, found {}", call, what,
                  row, stride);
}

void expect_fits(const char* call, int64_t past, int64_t tokens, int64_t capacity) {
  STOWAGE_EXPECTS(past + tokens <= capacity, InvalidInputError,
                  "kernels::{}: past + tokens ({} + {}) must be <= the cache capacity {}", call,
                  past, tokens, capacity);
}

// The largest head_dim the CUDA attention kernels hold in shared memory.
constexpr int64_t kCudaMaxHeadDim = 256;

}  // namespace

void rms_norm(const RmsNormArgs& a, StreamRef stream) {
  const char* call = "rms_norm";
  expect_non_negative(call, "rows", a.rows);
  expect_non_negative(call, "cols", a.cols);
  expect_float_dtype(call, "weight_dtype", a.weight_dtype);
  const bool work = a.rows * a.cols > 0;
  expect_pointer(call, "x", a.x, work);
  expect_pointer(call, "weight", a.weight, work);
  expect_pointer(call, "y", a.y, work);
  if (!work) return;
  dispatch(
      stream, [a] { cpu::rms_norm(a); }, [&](void* s) { detail::cuda_rms_norm(a, s); });
}

namespace {

// Each op's argument checks: false when the call has no work.
bool check_rope(const RopeArgs& a) {
  const char* call = "apply_rope";
  expect_non_negative(call, "tokens", a.tokens);
  expect_non_negative(call, "heads", a.heads);
  expect_non_negative(call, "head_dim", a.head_dim);
  STOWAGE_EXPECTS(a.head_dim % 2 == 0, InvalidInputError,
                  "kernels::apply_rope: head_dim must be even, found {}", a.head_dim);
  const bool work = a.tokens * a.heads * a.head_dim > 0;
  expect_pointer(call, "x", a.x, work);
  expect_pointer(call, "positions", a.positions, work);
  expect_pointer(call, "inv_freq", a.inv_freq, work);
  expect_non_negative(call, "heads2", a.heads2);
  expect_pointer(call, "x2", a.x2, a.tokens * a.heads2 * a.head_dim > 0);
  if (!work && a.tokens * a.heads2 * a.head_dim == 0) return false;
  expect_pointer(call, "positions", a.positions, true);
  expect_pointer(call, "inv_freq", a.inv_freq, true);
  return true;
}

}  // namespace

void apply_rope(const RopeArgs& a, StreamRef stream) {
  if (!check_rope(a)) return;
  dispatch(
      stream, [a] { cpu::apply_rope(a); }, [&](void* s) { detail::cuda_apply_rope(a, s); });
}

void embedding_lookup(const EmbeddingArgs& a, StreamRef stream) {
  const char* call = "embedding_lookup";
  expect_non_negative(call, "tokens", a.tokens);
  expect_non_negative(call, "vocab", a.vocab);
  expect_non_negative(call, "hidden", a.hidden);
  expect_float_dtype(call, "table_dtype", a.table_dtype);
  const bool work = a.tokens * a.hidden > 0;
  STOWAGE_EXPECTS(!work || a.vocab > 0, InvalidInputError,
                  "kernels::embedding_lookup: {} tokens need a table of vocab > 0, found 0",
                  a.tokens);
  expect_pointer(call, "ids", a.ids, work);
  expect_pointer(call, "table", a.table, work);
  expect_pointer(call, "out", a.out, work);
  if (!work) return;
  dispatch(
      stream, [a] { cpu::embedding_lookup(a); },
      [&](void* s) { detail::cuda_embedding_lookup(a, s); });
}

void swiglu(const SwigluArgs& a, StreamRef stream) {
  const char* call = "swiglu";
  expect_non_negative(call, "rows", a.rows);
  expect_non_negative(call, "cols", a.cols);
  const bool work = a.rows * a.cols > 0;
  expect_stride(call, "gate_stride", a.gate_stride, a.cols, work);
  expect_stride(call, "up_stride", a.up_stride, a.cols, work);
  expect_pointer(call, "gate", a.gate, work);
  expect_pointer(call, "up", a.up, work);
  expect_pointer(call, "out", a.out, work);
  if (!work) return;
  dispatch(
      stream, [a] { cpu::swiglu(a); }, [&](void* s) { detail::cuda_swiglu(a, s); });
}

void add_in_place(float* y, const float* x, int64_t count, StreamRef stream) {
  const char* call = "add_in_place";
  expect_non_negative(call, "count", count);
  expect_pointer(call, "y", y, count > 0);
  expect_pointer(call, "x", x, count > 0);
  if (count == 0) return;
  dispatch(
      stream, [=] { cpu::add_in_place(y, x, count); },
      [&](void* s) { detail::cuda_add_in_place(y, x, count, s); });
}

namespace {

bool check_kv_append(const KvAppendArgs& a) {
  const char* call = "kv_append";
  expect_non_negative(call, "batch", a.batch);
  expect_non_negative(call, "tokens", a.tokens);
  expect_non_negative(call, "kv_heads", a.kv_heads);
  expect_non_negative(call, "head_dim", a.head_dim);
  expect_non_negative(call, "past", a.past);
  expect_non_negative(call, "capacity", a.capacity);
  expect_fits(call, a.past, a.tokens, a.capacity);
  const bool work = a.batch * a.tokens * a.kv_heads * a.head_dim > 0;
  expect_stride(call, "src_stride", a.src_stride, a.kv_heads * a.head_dim, work);
  expect_pointer(call, "src", a.src, work);
  expect_pointer(call, "cache", a.cache, work);
  STOWAGE_EXPECTS((a.src2 == nullptr) == (a.cache2 == nullptr), InvalidInputError,
                  "kernels::kv_append: src2 and cache2 go together, found src2 {} and cache2 {}",
                  a.src2 != nullptr ? "set" : "null", a.cache2 != nullptr ? "set" : "null");
  return work;
}

}  // namespace

void kv_append(const KvAppendArgs& a, StreamRef stream) {
  if (!check_kv_append(a)) return;
  dispatch(
      stream, [a] { cpu::kv_append(a); }, [&](void* s) { detail::cuda_kv_append(a, s); });
}

namespace {

bool check_attention(const AttentionArgs& a) {
  const char* call = "attention";
  expect_non_negative(call, "batch", a.batch);
  expect_non_negative(call, "tokens", a.tokens);
  expect_non_negative(call, "heads", a.heads);
  expect_non_negative(call, "kv_heads", a.kv_heads);
  expect_non_negative(call, "head_dim", a.head_dim);
  expect_non_negative(call, "past", a.past);
  expect_non_negative(call, "capacity", a.capacity);
  expect_non_negative(call, "window", a.window);
  STOWAGE_EXPECTS(a.heads == 0 || (a.kv_heads > 0 && a.heads % a.kv_heads == 0), InvalidInputError,
                  "kernels::attention: heads must be a multiple of kv_heads, found heads={} "
                  "kv_heads={}",
                  a.heads, a.kv_heads);
  expect_fits(call, a.past, a.tokens, a.capacity);
  const bool work = a.batch * a.tokens * a.heads * a.head_dim > 0;
  expect_stride(call, "q_stride", a.q_stride, a.heads * a.head_dim, work);
  expect_pointer(call, "q", a.q, work);
  expect_pointer(call, "k_cache", a.k_cache, work);
  expect_pointer(call, "v_cache", a.v_cache, work);
  expect_pointer(call, "out", a.out, work);
  return work;
}

void expect_cuda_head_dim(const AttentionArgs& a) {
  STOWAGE_EXPECTS(a.head_dim <= kCudaMaxHeadDim, InvalidInputError,
                  "kernels::attention: on CUDA head_dim must be <= {}, found {}", kCudaMaxHeadDim,
                  a.head_dim);
}

// Whether rope_append_attention's three calls are one decode step of one
// layer: the shapes and pointers the fused CUDA launch assumes.
bool one_decode_step(const RopeAppendAttentionArgs& f) {
  const RopeArgs& r = f.rope;
  const KvAppendArgs& k = f.append;
  const AttentionArgs& a = f.attention;
  const int64_t kv_row = a.kv_heads * a.head_dim;
  return a.tokens == 1 && k.tokens == 1 && r.tokens == a.batch && k.batch == a.batch &&
         r.head_dim == a.head_dim && k.head_dim == a.head_dim && r.heads == a.heads &&
         r.x == a.q && a.q_stride == a.heads * a.head_dim && r.heads2 == a.kv_heads &&
         k.kv_heads == a.kv_heads && r.x2 == k.src && k.src_stride == kv_row &&
         k.src2 != nullptr && k.cache == a.k_cache && k.cache2 == a.v_cache &&
         k.past == a.past && k.past_at == a.past_at && k.capacity == a.capacity;
}

}  // namespace

void attention(const AttentionArgs& a, StreamRef stream) {
  if (!check_attention(a)) return;
  dispatch(
      stream, [a] { cpu::attention(a); },
      [&](void* s) {
        expect_cuda_head_dim(a);
        detail::cuda_attention(a, s);
      });
}

void rope_append_attention(const RopeAppendAttentionArgs& f, StreamRef stream) {
  const bool rope_work = check_rope(f.rope);
  const bool append_work = check_kv_append(f.append);
  const bool attention_work = check_attention(f.attention);
  if (!rope_work || !append_work || !attention_work || !one_decode_step(f)) {
    if (rope_work) apply_rope(f.rope, stream);
    if (append_work) kv_append(f.append, stream);
    if (attention_work) attention(f.attention, stream);
    return;
  }
  dispatch(
      stream,
      [f] {
        cpu::apply_rope(f.rope);
        cpu::kv_append(f.append);
        cpu::attention(f.attention);
      },
      [&](void* s) {
        expect_cuda_head_dim(f.attention);
        detail::cuda_rope_append_attention(f, s);
      });
}

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids, StreamRef stream) {
  const char* call = "argmax_rows";
  expect_non_negative(call, "rows", rows);
  STOWAGE_EXPECTS(rows == 0 || (vocab > 0 && vocab <= std::numeric_limits<int32_t>::max()),
                  InvalidInputError,
                  "kernels::argmax_rows: vocab must be in 1..{} (int32 ids), found {}",
                  std::numeric_limits<int32_t>::max(), vocab);
  expect_pointer(call, "logits", logits, rows > 0);
  expect_pointer(call, "ids", ids, rows > 0);
  if (rows == 0) return;
  dispatch(
      stream, [=] { cpu::argmax_rows(logits, rows, vocab, ids); },
      [&](void* s) { detail::cuda_argmax_rows(logits, rows, vocab, ids, s); });
}

}  // namespace stowage::kernels
