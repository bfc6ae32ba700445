// Quantized weights and their state, as ordinary named tensors.
//
// A quantized weight is a small set of core Tensors (its "parts"), each with
// the name suffix bitsandbytes gives it in a state dict (FORMATS.md): for a
// linear layer P, the part "weight.absmax" is the tensor "P.weight.absmax".
// Nothing a quantized layer needs lives outside its parts: the residency
// table tracks and moves every part like any other tensor (the seed lesson of
// bitsandbytes' CxB, which stayed in VRAM because it was hidden in a state
// object), and the non-tensor 4-bit state is itself a U8 part holding the
// JSON bitsandbytes writes. The plain fields beside the parts (blocksize,
// shape, ...) repeat what that JSON says so host code can read them without
// touching a part's bytes; replace_part() keeps them and swaps bytes only, so
// a move never quantizes again.
//
// Thread safety: these are values; distinct objects may be used from
// distinct threads, one object needs external synchronization to be modified.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/memory_resource.h"
#include "core/shape.h"
#include "core/tensor.h"
#include "quant/weight_format.h"
#include "quant/weight_layout.h"

namespace stowage::quant {

// Parses the quantized formats' names ("int8", "nf4", "fp4";
// weight_format_name()); nullopt otherwise, "float" included.
std::optional<WeightFormat> quantized_format_from_name(std::string_view name);

// One tensor of a quantized weight and its name suffix.
struct QuantPart {
  std::string suffix;
  Tensor tensor;
};

// LLM.int8 weight, row-wise (bitsandbytes Linear8bitLt).
struct Int8Weight {
  Tensor cb;             // "weight": I8 [out, in]
  Tensor scb;            // "SCB": F32 [out], each row's absmax
  Tensor weight_format;  // "weight_format": U8 [] (0-d), 0 = row-major
  // Outlier threshold used at inference. bitsandbytes does not store it in the
  // checkpoint (it is module configuration), so a loaded weight gets 6.0.
  float threshold = 6.0f;

  const Shape& shape() const { return cb.shape(); }
  WeightLayout layout() const { return WeightLayout::int8(cb.shape()); }
  // cb, scb, weight_format in that order.
  std::vector<QuantPart> parts() const;
};

// 4-bit blockwise weight (NF4 or FP4), optionally double quantized
// (bitsandbytes Linear4bit / Params4bit).
struct FourBitWeight {
  WeightFormat quant_type = WeightFormat::kNf4;  // kNf4 or kFp4
  int64_t blocksize = 64;
  DType dtype = DType::kF16;  // the original (unquantized) dtype
  Shape shape;                // the original shape, e.g. [out, in]

  // "weight": the packed codes, two per byte, first element in the high
  // nibble, viewed as the storage dtype (U8, F16, BF16 or F32) with shape
  // [ceil(ceil(n / 2) / itemsize), 1].
  Tensor packed;
  // "weight.absmax": F32 [blocks]; with double quantization U8 [blocks].
  Tensor absmax;
  // "weight.quant_map": F32 [16], the code values (bitsandbytes' get_4bit_type).
  Tensor quant_map;
  // Double quantization, present iff nested_absmax.defined():
  Tensor nested_absmax;     // "weight.nested_absmax": F32 [nested blocks]
  Tensor nested_quant_map;  // "weight.nested_quant_map": F32 [256]
  float nested_offset = 0.0f;
  int64_t nested_blocksize = kNestedBlocksize;
  // "weight.quant_state.bitsandbytes__nf4" (or __fp4): U8 [len], the UTF-8
  // JSON of the non-tensor state exactly as bitsandbytes writes it.
  Tensor quant_state;

  bool double_quant() const { return nested_absmax.defined(); }
  DType storage_dtype() const { return packed.dtype(); }
  uint64_t numel() const { return shape.numel(); }
  // The fields and the packed part's dtype as a layout.
  WeightLayout layout() const;
  // packed, absmax, quant_map, [nested_absmax, nested_quant_map,] quant_state.
  std::vector<QuantPart> parts() const;
};

using QuantizedWeight = std::variant<Int8Weight, FourBitWeight>;

WeightFormat format_of(const QuantizedWeight& weight);
const Shape& logical_shape(const QuantizedWeight& weight);
std::vector<QuantPart> parts(const QuantizedWeight& weight);
// Sum of the parts' bytes.
uint64_t total_bytes(const QuantizedWeight& weight);

// Replaces the part named `suffix` by `tensor` (e.g. the copy the residency
// table moved to another tier). The bytes are taken as they are: nothing is
// quantized again. Throws InvalidInputError when no part has that suffix or
// when `tensor`'s dtype or shape differs from the part it replaces.
void replace_part(QuantizedWeight& weight, std::string_view suffix, Tensor tensor);

// Checks that the parts agree with each other and with the fields (dtypes,
// shapes, counts; FORMATS.md). `name` (e.g. the layer prefix) goes into the
// InvalidInputError message, which says what was expected and what was found.
void validate(const Int8Weight& weight, std::string_view name);
void validate(const FourBitWeight& weight, std::string_view name);

// A U8 [len] tensor holding `json`.
Tensor make_state_tensor(const std::string& json, MemoryResource& resource);

// The quant_map values bitsandbytes stores for NF4/FP4 (16 float32; note the
// FP4 map holds +0.0 at index 8, bitsandbytes' get_4bit_type).
float stored_quant_map_value(WeightFormat quant_type, int index);

// Whether tensors of this tier can be read and written by host code (host,
// pinned, disk (mmap) and the simulated accelerator's host memory).
bool host_addressable(Tier tier);

}  // namespace stowage::quant
