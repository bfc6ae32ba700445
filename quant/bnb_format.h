// bitsandbytes' state-dict layout (as transformers saves it to safetensors),
// both ways, in terms of named core Tensors so it works over any reader or
// writer (mmap_store's safetensors files, an offload folder, a test map).
//
// For a layer P (e.g. "model.layers.0.mlp.up_proj"), FORMATS.md:
//   int8:  P.weight (I8 [out, in]), P.SCB (F32 [out]), P.weight_format (U8 [])
//   4-bit: P.weight (packed codes; its dtype is the storage dtype),
//          P.weight.absmax, P.weight.quant_map, [P.weight.nested_absmax,
//          P.weight.nested_quant_map,] P.weight.quant_state.bitsandbytes__nf4
//          (or __fp4: U8 JSON of quant_type, blocksize, dtype, shape[,
//          nested_blocksize, nested_dtype, nested_offset]).
// P may be empty, then the names are the suffixes alone ("weight.absmax").
//
// Loading takes the storage dtype from P.weight's dtype (the seed lesson of
// bitsandbytes losing quant_storage on reload) and never quantizes. A state
// that is half there (absmax without quant_map, a JSON without its tensors,
// malformed JSON, shapes that disagree) is an InvalidInputError naming the
// tensor and what is missing or wrong.
//
// Thread safety: reentrant; the lookup is called from the calling thread only.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "quant/quant_state.h"

namespace stowage::quant {

// prefix + "." + suffix, or suffix alone for an empty prefix.
std::string part_name(std::string_view prefix, std::string_view suffix);

// The (full name, tensor) pairs bitsandbytes saves for this weight, in its
// state-dict order (weight first). A caller writing a layer adds P.bias itself.
std::vector<std::pair<std::string, Tensor>> to_state_dict(std::string_view prefix,
                                                          const QuantizedWeight& weight);

// Returns the tensor of that full name, or nullopt when the file has none.
using TensorLookup = std::function<std::optional<Tensor>(const std::string& name)>;

// Loads layer `prefix`'s quantized weight. Returns nullopt when the layer has
// no quantization state at all (a plain weight, or no weight). The 4-bit JSON
// part must be host-addressable (it is parsed); the other parts are only
// checked by dtype and shape, not read. Throws InvalidInputError as above.
std::optional<QuantizedWeight> load_quantized_weight(std::string_view prefix,
                                                     const TensorLookup& lookup);

// One quantized weight found in a checkpoint, for `stowage inspect`.
struct QuantizedWeightInfo {
  std::string prefix;       // the layer, e.g. "layers.0"
  std::string weight_name;  // its packed/CB tensor, e.g. "layers.0.weight"
  WeightLayout layout;      // storage: P.weight's dtype; dtype: 4-bit from the JSON, int8 F16
  std::vector<std::string> part_names;  // every tensor of its state, P.weight first
};

// Groups a checkpoint's tensors into quantized weights. `names` are all the
// tensor names (file order); `lookup` returns a tensor by name (zero-copy
// mmap tensors are fine: only the small JSON parts are read). Results are in
// the order of their P.weight in `names`. Throws InvalidInputError for a
// half-present or inconsistent state, naming the tensor.
std::vector<QuantizedWeightInfo> detect_quantized_weights(const std::vector<std::string>& names,
                                                          const TensorLookup& lookup);

}  // namespace stowage::quant
