// Dense GEMM: y[m, n] = act(x[m, k] @ w[n, k]^T + bias[n]), float32
// accumulation. On CUDA through cuBLASLt (fp32 compute, bias and ReLU as the
// cuBLASLt epilogue); on a sim or null stream the CPU counterpart
// (kernels/cpu_reference.h) runs instead. All matrices are row-major and
// dense. Pointers and stream semantics as in kernels/quantize.h.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/stream.h"
#include "kernels/cublaslt_context.h"

namespace stowage::kernels {

struct GemmArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  DType dtype = DType::kF16;      // x and w: kF16, kBF16 or kF32
  DType out_dtype = DType::kF16;  // y and bias: kF32 or dtype
  const void* x = nullptr;        // [m, k]
  const void* w = nullptr;        // [n, k]
  const void* bias = nullptr;     // [n] of out_dtype, or null
  bool relu = false;              // max(0, .) after the bias
  void* y = nullptr;              // [m, n] of out_dtype
};

// Throws InvalidInputError for unsupported dtypes, negative sizes or null
// pointers where data is needed.
void gemm(CublasLtContext& context, const GemmArgs& args, StreamRef stream);

// A dense layer at small batch with float32 activations and 16-bit weights:
// y[m, n] = act(x[m, k] @ w[n, k]^T + bias[n]), x and y float32, w F16 or
// BF16, bias float32 or w's dtype (or null), 1 <= m <= kDenseGemvMaxRows.
// Reads each weight byte once (memory-bound: the decode step's projections)
// and takes no scratch memory, so it runs under any budget and inside a
// captured graph. Sums in float32 in an order fixed by k alone: the same
// bits on every call. On a sim or null stream the CPU counterpart runs.
inline constexpr int64_t kDenseGemvMaxRows = 8;
struct DenseGemvArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  DType weight_dtype = DType::kBF16;  // kF16 or kBF16
  DType bias_dtype = DType::kF32;     // kF32 or weight_dtype
  const float* x = nullptr;           // [m, k]
  const void* w = nullptr;            // [n, k]
  const void* bias = nullptr;         // [n], or null
  bool relu = false;
  // y += the result instead of y = the result: a residual added in the same
  // pass, with the same bits as storing the result and then add_in_place.
  bool accumulate = false;
  float* y = nullptr;  // [m, n]
};
// Throws InvalidInputError for other dtypes, m outside 1..kDenseGemvMaxRows,
// negative sizes or null pointers where data is needed.
void dense_gemv(const DenseGemvArgs& args, StreamRef stream);

// Up to kDenseGemvMaxGroup dense GEMVs that read the same x (the same x
// pointer, m, k and weight dtype; each with its own w, bias, relu, accumulate
// and y) in one launch, so a small projection (a decode step's k and v) does
// not run alone on a mostly idle device. The same bits as dense_gemv on each.
inline constexpr int kDenseGemvMaxGroup = 4;
void dense_gemv_group(const DenseGemvArgs* outputs, int count, StreamRef stream);

// The first half of a SwiGLU MLP in one pass: act[m, n] = silu(g) * u with
// g = gate's result, u = up's result, silu(g) = g / (1 + exp(-g)); the same
// bits as dense_gemv on each and then swiglu(). gate and up read the same x
// with equal m, n, k and weight dtype, relu and accumulate off. Their y
// buffers ([m, n] each) may be written (where the kernels fall back to two
// GEMVs and a separate swiglu) or not.
void dense_gemv_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up, float* act,
                       StreamRef stream);

// An RMSNorm in front of dense GEMVs (a decoder layer's input_layernorm in
// front of q/k/v, post_attention_layernorm in front of gate/up): the GEMVs
// read rms_norm(x) of transformer_ops.h, x being their x.
struct DenseGemvInputNorm {
  const void* weight = nullptr;  // [k] of dtype
  DType dtype = DType::kF32;     // kF32, kF16 or kBF16
  float eps = 1e-6f;
  // [m, k] float32: the normalized x, always written (later readers, e.g. a
  // mixture-of-experts layer's experts, read it here).
  float* out = nullptr;
};
// The same bits as rms_norm({m, k, x, norm.weight, norm.dtype, norm.eps,
// norm.out}) and then dense_gemv_group / dense_gemv_swiglu with x = norm.out.
// On CUDA the GEMVs normalize x as they start, in the same launch (no launch
// of the norm, no wait for it), where every weight is whole 16-byte chunks
// and the m rows of x are small enough (m * k floats in 32 KiB; a decode
// step's row of 4096 or 8192); otherwise the two run one after the other.
// norm.out may be x (then always the two); it must not overlap the GEMVs'
// outputs, nor may they overlap x.
void dense_gemv_group(const DenseGemvArgs* outputs, int count, const DenseGemvInputNorm& norm,
                      StreamRef stream);
void dense_gemv_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up,
                       const DenseGemvInputNorm& norm, float* act, StreamRef stream);

}  // namespace stowage::kernels
