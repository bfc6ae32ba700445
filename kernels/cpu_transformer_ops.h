// The CPU counterparts of kernels/transformer_ops.h: what the public calls run
// on a null or sim stream. Same arguments and contracts, already checked by
// the public calls; every pointer is host memory. Deterministic: each sum
// runs in an order fixed by the sizes alone.
//
// Thread safety: every call is reentrant.
#pragma once

#include <cstdint>

#include "kernels/transformer_ops.h"

namespace stowage::kernels::cpu {

void rms_norm(const RmsNormArgs& args);
void apply_rope(const RopeArgs& args);
void embedding_lookup(const EmbeddingArgs& args);
void swiglu(const SwigluArgs& args);
void add_in_place(float* y, const float* x, int64_t count);
void kv_append(const KvAppendArgs& args);
void attention(const AttentionArgs& args);
void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids);

}  // namespace stowage::kernels::cpu
