// The element-wise, normalization, attention and sampling operations of a
// decoder-only transformer (Llama, Qwen2, Mistral), beside the projections,
// which go through gemm.h / int8_matmul.h / nf4_matmul.h.
//
// Activations are float32, row-major and dense. Weights of the norms and the
// embedding table may be F32, F16 or BF16 and are widened to float32 on load.
// Every pointer is memory the stream's device can address: device memory on
// a CUDA stream, host memory on a sim stream or a null StreamRef (which runs
// the CPU counterpart synchronously on the calling thread). Work is enqueued
// on `stream`; outputs are valid once the stream reaches it. Arguments are
// checked on the calling thread: a bad dtype, size or null pointer throws
// InvalidInputError saying what was expected and what was found.
//
// Determinism: each op sums in an order fixed by its sizes alone, so the same
// inputs give the same bits on every call (the offload runtime's resident,
// streamed and disk-homed runs must agree bit for bit). CUDA and the CPU
// counterparts agree within float32 rounding, not bit for bit.
//
// Thread safety: every call is reentrant.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"

namespace stowage::kernels {

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight[:] (Llama's
// RMSNorm: the normalization in float32, then the product with the weight).
// x, y: F32 [rows, cols] (y may equal x); weight: [cols] of weight_dtype.
struct RmsNormArgs {
  int64_t rows = 0;
  int64_t cols = 0;
  const float* x = nullptr;
  const void* weight = nullptr;
  DType weight_dtype = DType::kF32;
  float eps = 1e-6f;
  float* y = nullptr;
};
void rms_norm(const RmsNormArgs& args, StreamRef stream);

// Rotary position embedding, in place, in the "rotate half" convention of
// Hugging Face Llama: for each head and i < head_dim / 2, with
// angle = positions[t] * inv_freq[i] (computed in float32),
//   x[i]            = x[i] * cos(angle) - x[i + head_dim/2] * sin(angle)
//   x[i + head_dim/2] = x[i + head_dim/2] * cos(angle) + x[i] * sin(angle).
// x: F32 [tokens, heads, head_dim] (row stride heads * head_dim);
// positions: int32 [tokens]; inv_freq: F32 [head_dim / 2] (the caller applies
// rope_theta and any rope scaling). head_dim must be even.
struct RopeArgs {
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  float* x = nullptr;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
  // Optional: a second tensor of the same tokens, F32 [tokens, heads2,
  // head_dim], rotated in the same launch (a layer's keys beside its
  // queries); the same bits as a separate call.
  float* x2 = nullptr;
  int64_t heads2 = 0;
};
void apply_rope(const RopeArgs& args, StreamRef stream);

// out[t, :] = table[ids[t], :] widened to float32. ids: int32 [tokens], each in
// [0, vocab) (checked by the caller: the ids live in device memory);
// table: [vocab, hidden] of table_dtype; out: F32 [tokens, hidden].
struct EmbeddingArgs {
  int64_t tokens = 0;
  int64_t vocab = 0;
  int64_t hidden = 0;
  const int32_t* ids = nullptr;
  const void* table = nullptr;
  DType table_dtype = DType::kF32;
  float* out = nullptr;
};
void embedding_lookup(const EmbeddingArgs& args, StreamRef stream);

// out[r, c] = silu(gate[r, c]) * up[r, c], silu(g) = g / (1 + exp(-g)).
// gate, up, out: F32 with row strides (elements) gate_stride, up_stride and
// cols (so gate and up may be the two halves of one fused projection).
struct SwigluArgs {
  int64_t rows = 0;
  int64_t cols = 0;
  const float* gate = nullptr;
  int64_t gate_stride = 0;
  const float* up = nullptr;
  int64_t up_stride = 0;
  float* out = nullptr;
};
void swiglu(const SwigluArgs& args, StreamRef stream);

// y[i] += x[i] for i < count (the residual connection).
void add_in_place(float* y, const float* x, int64_t count, StreamRef stream);

// Writes the keys and values of `tokens` new positions into a sequence-major
// KV cache at positions [past, past + tokens) of each sequence:
// cache[b, past + t, h, :] = src[b, t, h, :].
// src: F32 [batch, tokens, kv_heads, head_dim] with row stride src_stride
// elements between consecutive (b, t) rows (so k and v can be read out of one
// fused qkv projection); cache: F32 [batch, capacity, kv_heads, head_dim].
// Requires past + tokens <= capacity.
//
// past_at (kv_append and attention): when set, the op reads the number of
// cached positions from this int32 in the stream's device memory when it
// runs, instead of taking `past` at enqueue time, so a captured step
// (core/stream_graph.h) replays at the position of each launch; `past` is
// then what the caller expects it to hold (argument checks only). Positions
// at or past the capacity are skipped, never written or read.
struct KvAppendArgs {
  int64_t batch = 0;
  int64_t tokens = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t past = 0;
  const int32_t* past_at = nullptr;
  int64_t capacity = 0;
  const float* src = nullptr;
  int64_t src_stride = 0;
  float* cache = nullptr;
  // Optional: a second source of the same shape and stride appended to a
  // second cache at the same positions in the same launch (the values beside
  // the keys).
  const float* src2 = nullptr;
  float* cache2 = nullptr;
};
void kv_append(const KvAppendArgs& args, StreamRef stream);

// Causal grouped-query attention over a KV cache that already holds the new
// positions (kv_append first). For sequence b, new token t (absolute position
// p = past + t) and query head h (KV head h / (heads / kv_heads)):
//   s[j] = scale * dot(q[b, t, h, :], k[b, j, kvh, :]) for j in [lo, p],
//   lo = max(0, p - window + 1) when window > 0, else 0;
//   out[b, t, h, :] = sum_j softmax(s)[j] * v[b, j, kvh, :]
// with the softmax in float32 (max subtracted). heads % kv_heads == 0.
// q: F32 [batch, tokens, heads, head_dim] with row stride q_stride elements
// between consecutive (b, t) rows; out: F32 [batch, tokens, heads, head_dim]
// (dense); k_cache, v_cache: F32 [batch, capacity, kv_heads, head_dim].
// Requires past + tokens <= capacity; on CUDA head_dim <= 256. Positions
// outside [lo, p] are never read (they may hold anything, NaN included). The
// CUDA implementation needs no scratch memory: it splits long contexts
// across a thread-block cluster and combines the parts in shared memory; the
// number of parts is a function of the sizes (with past_at, of the capacity
// instead of the context), so results are the same bits at every call.
// past_at: as for kv_append.
struct AttentionArgs {
  int64_t batch = 0;
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t past = 0;
  const int32_t* past_at = nullptr;
  int64_t capacity = 0;
  int64_t window = 0;  // sliding window in positions; 0: none
  float scale = 1.0f;
  const float* q = nullptr;
  int64_t q_stride = 0;
  const float* k_cache = nullptr;
  const float* v_cache = nullptr;
  float* out = nullptr;
};
void attention(const AttentionArgs& args, StreamRef stream);

// A decoder layer's apply_rope(rope), kv_append(append) and
// attention(attention), in that order: rope rotates the queries
// (rope.x == attention.q) and the new keys (rope.x2 == append.src), append
// writes them and the values into attention's caches. The outputs
// (attention.out and the caches) are the bits of the three calls; rope.x and
// rope.x2 are left rotated or not. On CUDA a decode step (one token a
// sequence, the tensors laid out as in one layer: dense q, k and v rows, the
// same positions, caches and sizes) is one launch: each attention block
// rotates the queries it reads as it loads them, and the block that reads a
// sequence's new position rotates and writes its key and value there first.
// Any other case runs the three calls. Each of the three is checked as alone.
struct RopeAppendAttentionArgs {
  RopeArgs rope;
  KvAppendArgs append;
  AttentionArgs attention;
};
void rope_append_attention(const RopeAppendAttentionArgs& args, StreamRef stream);

// ids[r] = the index of the largest logits[r, :] (the first one on ties; NaN
// is never chosen over a number; a row of NaN alone gives 0). logits: F32 [rows, vocab]; ids: int32 [rows].
void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids,
                 StreamRef stream);

}  // namespace stowage::kernels
