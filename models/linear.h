// One linear layer's forward, y = x @ W^T + b (optionally ReLU), for every
// weight format of the MLP family, behind an interface so the host CPU
// reference and the accelerator kernels are interchangeable.
#pragma once

#include <cstdint>
#include <memory>

#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace stowage::models {

enum class WeightFormat { kFloat, kInt8, kNf4, kFp4 };

const char* weight_format_name(WeightFormat format);

// The bytes one linear forward reads, as views valid on the compute stream's
// device (host memory on sim). Views a format does not use are left default.
struct LinearWeights {
  WeightFormat format = WeightFormat::kFloat;
  int64_t out_features = 0;
  int64_t in_features = 0;
  TensorView weight;  // F32/F16/BF16 [out, in]; I8 [out, in]; 4-bit: packed codes (any dtype)
  TensorView bias;    // [out], float; data() == nullptr when absent
  // int8 (LLM.int8): row scales, float32 [out].
  TensorView scb;
  float threshold = 6.0f;
  // 4-bit: per-block absmax (float32, or U8 codes with double quantization),
  // the 16-entry code map (float32), and the nested state.
  TensorView absmax;
  TensorView quant_map;
  int64_t blocksize = 64;
  bool double_quant = false;
  TensorView nested_absmax;
  TensorView nested_quant_map;
  int64_t nested_blocksize = 256;
  float nested_offset = 0.0f;
};

// Computes layers on a stream.
//
// Thread safety: linear() may be called from several threads at once.
class LinearKernels {
 public:
  virtual ~LinearKernels() = default;
  // Enqueues on `stream`: y[b, o] = sum_i x[b, i] * W[o, i] + bias[o] in float32,
  // then max(0, .) when `relu`. x: F32 [batch, in]; y: F32 [batch, out]; all
  // views valid on `stream`'s device. Throws InvalidInputError on shape or
  // dtype mismatches (checked on the calling thread, before enqueuing).
  virtual void linear(StreamRef stream, const LinearWeights& w, const TensorView& x,
                      const TensorView& y, bool relu) = 0;
  virtual const char* name() const = 0;
};

// The host reference: runs on the stream through host_task, so it needs the
// views to be host-addressable (the sim backend, or host tiers). It
// dequantizes each weight row to float32 (int8: CB * SCB / 127; 4-bit:
// code[q] * absmax) and accumulates in float32 in a fixed order, so results
// are deterministic.
std::unique_ptr<LinearKernels> make_host_linear_kernels();

// kernels/: cuBLASLt GEMM with float32 accumulation (for 16-bit weights the
// float32 activations are rounded to the weight's dtype first), LLM.int8 matmul (threshold
// outliers), the 4-bit matmul (fused GEMV for small batches); ReLU as the GEMM epilogue or a
// separate pass. On sim streams kernels/ runs its CPU counterparts. Scratch (converted weights and
// biases) comes from `scratch`, stream-ordered; it must be memory of the streams' device and
// outlive the kernels.
std::unique_ptr<LinearKernels> make_accelerator_linear_kernels(MemoryResource& scratch);

// The kernels for `platform`'s backend: the host reference on sim, kernels/
// on CUDA (scratch as above).
std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform, MemoryResource& scratch);
// Same, with scratch from accelerator 0's own (unbudgeted) memory.
std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform);

// Checks a LinearWeights against x/y; throws InvalidInputError naming `where`.
void check_linear_arguments(const LinearWeights& w, const TensorView& x, const TensorView& y,
                            const std::string& where);

}  // namespace stowage::models
