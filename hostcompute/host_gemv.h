// Linear layers computed on the host where their weights live (issue #19):
// y[m, n] = x[m, k] @ W^T + bias (then ReLU if asked) for float32 activations and a weight in host
// memory stored as bfloat16, float16, LLM.int8 row-wise, or bitsandbytes
// NF4/FP4 (FORMATS.md). Built for small batches (m = 1..8, the decode step),
// where the layer is bound by reading W: each weight byte is read from memory
// once, in order, by a persistent team of threads that split the output rows
// in contiguous shares, and decoded once for up to 4 batch rows (AVX-512; 2 on
// AVX2); any m is correct (more rows re-decode each weight segment from the
// core's cache, not from memory).
//
// Numerics: each weight element is dequantized as models/linear_host.cc does
// (16-bit: exact widening; int8: cb * (scb / 127); 4-bit: code[q] * absmax,
// absmax of double quantization as nested_code[c] * nested_absmax + offset)
// and multiplied into float32 accumulators; y = sum + bias. Where k is a
// whole number of 4-vector groups (64 on AVX-512, 32 on AVX2) int8 codes are
// summed unscaled and each sum multiplied by scb / 127 once, a rounding
// apart from scaling each element. Each output is summed by one thread in an
// order fixed by k and the instruction set alone, so a call gives the same
// bits every time, for any thread count and any m (row i of a batch equals
// the same row computed alone). Different instruction sets (AVX-512, AVX2,
// scalar) sum in different orders: their results agree to float32 rounding
// of a k-term dot product, not bit for bit.
//
// Figures: bench/results/host-*/host_gemv.txt.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>

#include "core/dtype.h"
#include "quant/weight_view.h"

namespace stowage::hostcompute {

// y[m, n] = x[m, k] @ W^T + bias for W = weight [n, k] = [out, in] in host
// memory: kFloat (bf16 or f16 values), kInt8, kNf4 or kFp4.
struct HostLinearArgs {
  int64_t m = 0;             // batch rows
  const float* x = nullptr;  // [m, k], row-major
  quant::WeightView weight;
  const void* bias = nullptr;      // [n] of bias_dtype, or null
  DType bias_dtype = DType::kF32;  // kF32, kF16 or kBF16
  bool relu = false;               // y = max(0, sum + bias)
  float* y = nullptr;              // [m, n], row-major; must not overlap x or the weight
};

// The instruction sets the kernels are written for, slowest first.
enum class HostIsa : uint8_t { kScalar, kAvx2, kAvx512 };
const char* host_isa_name(HostIsa isa);
// The best this CPU runs (AVX-512 needs AVX512F+BW+VL; AVX2 needs AVX2, FMA
// and F16C); kScalar off x86-64 or on older CPUs.
HostIsa best_host_isa();

class WorkerTeam;

// A team of threads that computes host linear layers.
//
// Thread safety: linear() may be called from several threads at once; calls
// on one object run one after another (each uses the whole team).
class HostGemv {
 public:
  // `threads` >= 1: the calling thread plus threads - 1 workers, started here
  // and joined by the destructor. `isa` defaults to best_host_isa(). Throws
  // InvalidInputError for threads < 1 or an instruction set this CPU lacks.
  explicit HostGemv(int threads, std::optional<HostIsa> isa = std::nullopt);
  ~HostGemv();
  HostGemv(const HostGemv&) = delete;
  HostGemv& operator=(const HostGemv&) = delete;

  // Computes args.y on the calling thread and the workers; returns when y is
  // written. Throws InvalidInputError (naming what was expected and what was
  // found) for a negative m, a weight that fails WeightView::validate, a
  // float weight other than bf16 or f16, null x or y where data is needed,
  // or another bias dtype; nothing is written then. Array lengths cannot be
  // checked: they must be as WeightView states.
  void linear(const HostLinearArgs& args);
  // linear(args[i]) for i in [0, count), in one pass of the team: the output
  // rows of all of them are split in contiguous shares, so a layer's small
  // projections (q, k, v; gate and up) cost one start and one wait of the
  // team, not one each. Each y gets the bits linear() would give it. Checks
  // every args[i] first (as linear() does); nothing is written on a throw.
  void linear_batch(const HostLinearArgs* args, int count);

  int threads() const;
  HostIsa isa() const { return isa_; }

 private:
  HostIsa isa_;
  // The signed dynamic map, the default nested code table, built once here:
  // building it per call cost microseconds, as much as a small layer.
  std::array<float, 256> dynamic_map_;
  std::unique_ptr<WorkerTeam> team_;
};

}  // namespace stowage::hostcompute
