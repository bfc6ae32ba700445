// Streaming quantization of a whole checkpoint, independent of the file
// format: the caller supplies the input tensors' names, dtypes and shapes and
// a way to read one, and receives the output tensors one input at a time (the
// `stowage quantize` command glues this to mmap_store's reader and writer).
//
// Which tensors are quantized: every 2-D F16/BF16/F32 tensor whose name is
// "weight" or ends in ".weight", unless it matches the skip regex (RE2 syntax,
// searched anywhere in the name, like Python's re.search; RE2 matches in time
// linear in the name, so no pattern can make quantizing hang or overflow the
// stack). Everything else (biases,
// norms, embeddings skipped by the regex, tensors of other ranks or dtypes) is
// copied through unchanged, in place. A quantized weight P.weight is replaced,
// at its position, by its bitsandbytes state tensors (bnb_format.h).
//
// Memory: run() handles one input tensor at a time; the quantized parts are
// allocated from the given resource and released as soon as they are
// emitted, and inputs are only read (e.g. from an mmap), so the peak is about
// the largest single tensor's quantized form, not the model size.
//
// Thread safety: one object, one thread.
#pragma once

#include <re2/re2.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/memory_resource.h"
#include "core/tensor.h"
#include "quant/bnb_format.h"
#include "quant/cpu_quantizer.h"
#include "quant/quant_state.h"

namespace stowage::quant {

struct CheckpointQuantizeOptions {
  WeightFormat method = WeightFormat::kNf4;
  // 4-bit only: blocksize, double_quant, storage (quant_type follows method).
  FourBitOptions four_bit;
  // int8 only: the outlier threshold (not stored in the file; recorded for inference).
  float threshold = 6.0f;
  // Tensor names matching this RE2 regex are not quantized; "" skips none.
  std::string skip_regex;

  // The layout a selected tensor of `dtype` and `shape` is quantized to.
  WeightLayout layout(DType dtype, const Shape& shape) const;
};

// The default selection of both quantizers (`stowage quantize` and the
// loader's quantize-while-loading): a 2-D F16, BF16 or F32 tensor named
// "weight" or "<module>.weight".
bool selected_by_default(std::string_view name, DType dtype, const Shape& shape);

// The layout both quantizers give a selected weight of `dtype` and `shape`:
// `method`, for 4-bit with `four_bit`'s blocksize, double quantization and
// storage. The one place that says what int8 codes are computed from:
// float16 (bitsandbytes' input, the only one the CPU quantizer takes), or
// with `int8_from_source` the weight's own dtype, which the loader's
// accelerator path has always used (models/testdata/llama_int8_deq's
// reference was made from float32). The quantizers follow the layout.
WeightLayout quantized_layout(WeightFormat method, const FourBitOptions& four_bit, DType dtype,
                              const Shape& shape, bool int8_from_source = false);

struct TensorDecl {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
};

// One tensor of the output: its declaration, and the input it comes from.
struct OutputTensor {
  TensorDecl decl;
  std::string source;      // the input tensor's name
  bool quantized = false;  // a part of a quantized weight (else a copy of the input)
};

// The one quantizer interface `stowage quantize` and the loader call: turns
// `weight` into `target` (a layout of its dtype and shape, e.g.
// quantized_layout's), allocating the parts kept on the host from `host`;
// `name` goes into error messages. cpu_weight_quantizer is the host
// implementation (the CPU reference, every part from `host`);
// kernels::accelerator_weight_quantizer the accelerator's, with the same bytes.
using WeightQuantizer = std::function<QuantizedWeight(
    const Tensor& weight, const WeightLayout& target, MemoryResource& host, std::string_view name)>;
WeightQuantizer cpu_weight_quantizer();

class CheckpointQuantizer {
 public:
  // `read` returns an input tensor by name (host-addressable, e.g. zero-copy
  // mmap). Throws InvalidInputError for bad options (method, blocksize,
  // storage dtype, threshold, regex), and for an input that already holds
  // quantized state or half of one (detect_quantized_weights' errors).
  CheckpointQuantizer(CheckpointQuantizeOptions options, std::vector<TensorDecl> inputs,
                      std::function<Tensor(const std::string&)> read);

  const CheckpointQuantizeOptions& options() const { return options_; }
  bool is_target(const TensorDecl& input) const;

  // The output tensors in order. With double quantization this reads each
  // target weight once (its nested_offset sets the JSON part's length, which
  // the header needs before any data).
  const std::vector<OutputTensor>& plan();

  // Emits every output tensor in plan() order: copied inputs as read, and
  // each quantized weight's parts (made by `quantizer` to options().layout,
  // allocated from `resource`, released after emit returns). `progress` (optional) gets the
  // input bytes done. Throws InternalError if a part differs from the plan.
  void run(MemoryResource& resource, const WeightQuantizer& quantizer,
           const std::function<void(const OutputTensor&, const Tensor&)>& emit,
           const std::function<void(uint64_t)>& progress = {});

  // Called with each input tensor once run() is done with it, e.g. to drop
  // an mmap'd tensor's pages from the process (madvise) so resident memory
  // does not grow with the model.
  void set_release(std::function<void(const Tensor&)> release) { release_ = std::move(release); }

  // Counts after plan(): how many weights are quantized / copied through.
  size_t quantized_count() const { return quantized_count_; }
  size_t copied_count() const { return copied_count_; }
  uint64_t input_bytes() const { return input_bytes_; }

 private:
  CheckpointQuantizeOptions options_;
  std::vector<TensorDecl> inputs_;
  std::function<Tensor(const std::string&)> read_;
  std::function<void(const Tensor&)> release_;
  std::unique_ptr<re2::RE2> skip_;
  std::vector<OutputTensor> plan_;
  bool planned_ = false;
  size_t quantized_count_ = 0;
  size_t copied_count_ = 0;
  uint64_t input_bytes_ = 0;
};

}  // namespace stowage::quant
