// Argument checks shared by the public calls of kernels/ (quantize.cc,
// gemm.cc, int8_matmul.cc, nf4_matmul.cc, transformer_ops.cc). Each throws
// InvalidInputError naming the call and the argument, with what was expected
// and what was found. Internal to kernels/.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/quant_rules.h"

namespace stowage::kernels::detail {

// `d` is one of the compute floats: kF16, kBF16 or kF32.
inline void expect_float_dtype(const char* call, const char* what, DType d) {
  STOWAGE_EXPECTS(d == DType::kF16 || d == DType::kBF16 || d == DType::kF32, InvalidInputError,
                  "kernels::{}: {} must be f16, bf16 or f32, found {}", call, what, short_name(d));
}

inline void expect_non_negative(const char* call, const char* what, int64_t v) {
  STOWAGE_EXPECTS(v >= 0, InvalidInputError, "kernels::{}: {} must be >= 0, found {}", call, what,
                  v);
}

// `p` is not null where `needed` (the argument holds data).
inline void expect_pointer(const char* call, const char* what, const void* p, bool needed) {
  STOWAGE_EXPECTS(!needed || p != nullptr, InvalidInputError,
                  "kernels::{}: {} is null but holds data", call, what);
}

// A 4-bit blocksize quant_rules accepts.
inline void expect_blocksize(const char* call, int64_t blocksize) {
  STOWAGE_EXPECTS(quant_rules::is_valid_blocksize(blocksize), InvalidInputError,
                  "kernels::{}: blocksize must be a power of two in {}..{}, found {}", call,
                  quant_rules::kMinBlocksize, quant_rules::kMaxBlocksize, blocksize);
}

}  // namespace stowage::kernels::detail
