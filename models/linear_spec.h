// One linear layer's tensors as a checkpoint holds them (a float weight, an
// LLM.int8 weight with its SCB, or a bitsandbytes 4-bit weight with its state
// parts), described once for every model family that has linear layers, and
// the views a forward hands to LinearKernels.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "hooks/module.h"
#include "mmap_store/checkpoint.h"
#include "models/linear.h"
#include "quant/weight_layout.h"

namespace stowage::models {

// One tensor of a checkpoint as a model family sees it (name, dtype, shape).
struct TensorMeta {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
};

// One linear layer: its weight's format, [out, in] shape, dtypes and blocking
// as quant/ describes them (layout.storage is the weight tensor's dtype; the
// 4-bit quant state read from the bitsandbytes JSON), and what a layer adds.
// A default LinearSpec (an empty layout, 0 features) is an absent layer.
struct LinearSpec {
  quant::WeightLayout layout;
  bool has_bias = false;
  float nested_offset = 0.0f;  // 4-bit with double quantization
  float threshold = 6.0f;      // int8

  int64_t out_features() const { return layout.shape.rank() == 2 ? layout.shape[0] : 0; }
  int64_t in_features() const { return layout.shape.rank() == 2 ? layout.shape[1] : 0; }
};

// Reads a linear layer from `tensors`: the layer's tensors keyed by their
// names relative to the layer ("weight", "bias", "SCB", "weight.absmax",
// ...), each meta carrying its full name for messages. `name` is the layer's
// full name ("layers.3", "model.layers.0.self_attn.q_proj"); `read_bytes`
// returns a (small) tensor's bytes by full name (the 4-bit quant-state JSON).
// Adds the relative names it accounts for to *used, so the caller can reject
// tensors no layer claims. Throws InvalidInputError naming `source` and the
// tensor for a missing weight, a malformed or contradicting quant state, or
// a part of the wrong dtype or shape.
LinearSpec describe_linear(
    const std::map<std::string, const TensorMeta*>& tensors, const std::string& name,
    const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
    const std::string& source, std::set<std::string>* used);

// Checks every quantized weight of `checkpoint` by quant/'s rules
// (quant::detect_quantized_weights, what `stowage inspect` and `plan` call:
// an int8 weight_format other than row-major, a 4-bit blocksize that is not
// a power of two, a quant_type that contradicts its key, a state half
// there), so no command runs a checkpoint that inspect rejects. The model
// families' describe functions call it before reading a layer. Only the
// small state parts (the 4-bit JSON, weight_format) are read. Throws
// InvalidInputError naming the file and the tensor.
void check_quantized_weights(const mmap_store::Checkpoint& checkpoint);

// Where a linear layer's tensors sit in a hooks::Module (-1: absent), for
// tensor names `prefix` + "weight", "bias", "SCB", "weight.absmax", ...
struct LinearTensorIndices {
  int weight = -1;
  int bias = -1;
  int scb = -1;
  int absmax = -1;
  int quant_map = -1;
  int nested_absmax = -1;
  int nested_quant_map = -1;
};
LinearTensorIndices linear_tensor_indices(const hooks::Module& module, const std::string& prefix);

// The views one forward of the layer reads, from the forward's context.
LinearWeights linear_weights(const LinearSpec& spec, const LinearTensorIndices& indices,
                             const hooks::ForwardContext& ctx);

// `w` (a whole weight of `spec`) narrowed to rows [first, first + count):
// each part laid out by rows viewed at those rows' bytes
// (quant::WeightLayout::row_ranges), the bias at those rows; nullopt where
// the layout's rows do not align there.
std::optional<LinearWeights> linear_rows(const LinearSpec& spec, const LinearWeights& w,
                                         int64_t first, int64_t count);

}  // namespace stowage::models
