// One linear layer's forward, y = x @ W^T + b (optionally ReLU), for every
// weight format of the MLP family, behind an interface so the host CPU
// reference and the accelerator kernels are interchangeable.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "kernels/cublaslt_context.h"
#include "quant/weight_format.h"
#include "quant/weight_view.h"

namespace stowage::models {

// The bytes one linear forward reads, as views valid on the compute stream's
// device (host memory on sim). Views a format does not use are left default.
struct LinearWeights {
  quant::WeightFormat format = quant::WeightFormat::kFloat;
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
  int64_t nested_blocksize = quant_rules::kNestedBlocksize;
  float nested_offset = 0.0f;

  // The weight's parts as the kernels take them: the one place a
  // LinearWeights becomes a quant::WeightView (valid while these views are).
  quant::WeightView view() const;
};

struct LinearSpec;  // models/linear_spec.h: a layer's format and sizes

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
  // The same results as linear(stream, *w[i], x, y[i], false) for each i <
  // count (a decode step's q, k and v projections); kernels that can launch
  // them at once do. count >= 1.
  virtual void linear_group(StreamRef stream, const LinearWeights* const* w, const TensorView* y,
                            int count, const TensorView& x);
  // act = swiglu(x @ gate^T, x @ up^T): the same results as linear() into
  // gate_out and up_out and kernels::swiglu into act; kernels that can compute
  // it in one pass need not write gate_out and up_out.
  virtual void swiglu_linear(StreamRef stream, const LinearWeights& gate, const LinearWeights& up,
                             const TensorView& x, const TensorView& gate_out,
                             const TensorView& up_out, const TensorView& act);
  // The RMSNorm a decoder layer puts in front of projections
  // (kernels::rms_norm with this weight and eps): see norm_linear_group.
  struct InputNorm {
    const void* weight = nullptr;  // [in] of dtype, valid on the stream's device
    DType dtype = DType::kF32;
    float eps = 1e-6f;
  };
  // kernels::rms_norm of x into `normed` (F32 [batch, in]; not x), then
  // linear_group over `normed`: the same results. Kernels that can normalize
  // x as the projections load it do (the accelerator's 16-bit GEMVs at small
  // batch), in one pass; `normed` is written either way.
  virtual void norm_linear_group(StreamRef stream, const InputNorm& norm, const TensorView& x,
                                 const TensorView& normed, const LinearWeights* const* w,
                                 const TensorView* y, int count);
  // The same for swiglu_linear: rms_norm of x into `normed`, then
  // swiglu_linear over `normed`.
  virtual void norm_swiglu_linear(StreamRef stream, const InputNorm& norm, const TensorView& x,
                                  const TensorView& normed, const LinearWeights& gate,
                                  const LinearWeights& up, const TensorView& gate_out,
                                  const TensorView& up_out, const TensorView& act);
  // h += x @ W^T + bias (a residual connection): the same results as linear()
  // into tmp and kernels::add_in_place into h; kernels that can add in the
  // same pass need not write tmp.
  virtual void linear_add(StreamRef stream, const LinearWeights& w, const TensorView& x,
                          const TensorView& tmp, const TensorView& h);
  virtual const char* name() const = 0;
  // Bytes of their scratch memory the kernels hold at most while running
  // these layers one after another at `batch` rows: what they keep
  // between calls (a cuBLASLt workspace, the largest scratch block) plus the
  // largest a single call allocates and frees. A caller reserves it in the
  // plan (LoadOptions::working_reserve). 0 for the host reference.
  virtual uint64_t working_bytes(const std::vector<LinearSpec>& layers, int64_t batch) const = 0;
};

// The host reference: runs on the stream through host_task, so it needs the
// views to be host-addressable (the sim backend, or host tiers). It
// dequantizes each weight row to float32 (int8: CB * SCB / 127; 4-bit:
// code[q] * absmax) and accumulates in float32 in a fixed order, so results
// are deterministic. Calls from several threads at once take turns inside
// OpenBLAS, which is not safe to call so (models/linear_host.cc).
std::unique_ptr<LinearKernels> make_host_linear_kernels();

// Threads the host-compute kernels use by default: one per hardware thread
// but one (at least 1), so the thread that submits the copies of the
// streamed layers (the driver's, or the simulated copy stream's) keeps a
// core and the copy engine stays fed while the host computes.
int default_host_compute_threads();

// Host kernels for layers computed where their weights are (host RAM or the
// disk mapping): hostcompute::HostGemv's multithreaded SIMD GEMV on
// `threads` threads (0: default_host_compute_threads()) for bf16, f16, int8 and
// 4-bit weights, the host reference for float32 weights. Like the host
// reference, they run on the stream through host_task (a null stream: on
// the calling thread) and need host-addressable views. Results agree with
// the host reference to float32 rounding of each dot product, not bit for
// bit; each call gives the same bits every time.
std::unique_ptr<LinearKernels> make_host_compute_linear_kernels(int threads = 0);

// kernels/: cuBLASLt GEMM with float32 accumulation (for 16-bit weights the
// float32 activations are rounded to the weight's dtype first), LLM.int8 matmul (threshold
// outliers), the 4-bit matmul (fused GEMV for small batches); ReLU as the GEMM epilogue or a
// separate pass. On sim streams kernels/ runs its CPU counterparts. All their accelerator memory
// (converted activations and biases; on CUDA also the cuBLASLt workspace of `workspace_bytes` and
// the matmuls' scratch, e.g. a 4-bit weight dequantized for a GEMM) comes from `scratch`,
// stream-ordered, so a budgeted resource counts it; it must be memory of the streams' device and
// outlive the kernels.
std::unique_ptr<LinearKernels> make_accelerator_linear_kernels(
    MemoryResource& scratch,
    size_t workspace_bytes = kernels::CublasLtContext::kDefaultWorkspaceBytes);

// The kernels for `platform`'s backend: the host reference on sim, kernels/
// on CUDA (scratch as above).
std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform, MemoryResource& scratch);
// Same, with scratch from accelerator 0's own (unbudgeted) memory.
std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform);

// Weight bytes per second the host-compute kernels (make_host_compute_linear_kernels) compute a float layer of
// `weight_dtype` (F32, F16 or BF16) and [out, in] at `rows` rows on
// `threads` threads (0: default_host_compute_threads()), from the calling
// thread: the median of `repeats` timed calls after a warm-up, over
// weights filled with a fixed pattern. Each call reads another copy of the
// weight (up to 32 copies, about 2 GiB together, read in the order written),
// so a large layer's rate is that of host memory, as a model's layers are
// read, not of a last-level cache of a few hundred MB.
// Throws InvalidInputError for another dtype or a size < 1.
double measure_host_linear_rate(DType weight_dtype, int64_t out, int64_t in, int64_t rows,
                                int repeats = 3, int threads = 0);

// Checks a LinearWeights against x/y; throws InvalidInputError naming `where`.
void check_linear_arguments(const LinearWeights& w, const TensorView& x, const TensorView& y,
                            const std::string& where);

}  // namespace stowage::models
