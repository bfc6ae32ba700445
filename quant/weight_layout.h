// What a stored weight is, apart from its bytes: its format, its logical
// shape and dtype, how its codes are stored and blocked, and from those the
// tensors ("parts") bitsandbytes saves for it (FORMATS.md), their dtypes,
// shapes and bytes. Every reader, writer, quantizer, planner and kernel asks
// a WeightLayout instead of recomputing block counts or part shapes, as
// ggml's type traits serve its quantized types.
//
// For a linear layer P, the parts are named P + "." + suffix:
//   kFloat: weight (the values, `dtype` [out, in])
//   kInt8:  weight (I8 [out, in]), SCB (F32 [out]), weight_format (U8 [])
//   kNf4 / kFp4: weight (the packed codes viewed as `storage`), weight.absmax
//          (F32 [blocks], or U8 [blocks] with double quantization),
//          weight.quant_map (F32 [16]), [weight.nested_absmax (F32
//          [nested blocks]), weight.nested_quant_map (F32 [256]),]
//          weight.quant_state.bitsandbytes__nf4 (or __fp4: U8 JSON)
//
// Thread safety: a value; const calls may run from several threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "quant/quant_rules.h"
#include "quant/weight_format.h"

namespace stowage::quant {

// Part name suffixes (bitsandbytes' state-dict keys after "P.").
inline constexpr std::string_view kWeightSuffix = "weight";
inline constexpr std::string_view kScbSuffix = "SCB";
inline constexpr std::string_view kWeightFormatSuffix = "weight_format";
inline constexpr std::string_view kAbsmaxSuffix = "weight.absmax";
inline constexpr std::string_view kQuantMapSuffix = "weight.quant_map";
inline constexpr std::string_view kNestedAbsmaxSuffix = "weight.nested_absmax";
inline constexpr std::string_view kNestedQuantMapSuffix = "weight.nested_quant_map";
inline constexpr std::string_view kQuantStateNf4Suffix = "weight.quant_state.bitsandbytes__nf4";
inline constexpr std::string_view kQuantStateFp4Suffix = "weight.quant_state.bitsandbytes__fp4";

// The blocksize rules and block formulas (quant_rules.h, shared with the
// CUDA kernels).
using quant_rules::block_count;
using quant_rules::is_valid_blocksize;
using quant_rules::kMaxBlocksize;
using quant_rules::kMinBlocksize;
using quant_rules::kNestedBlocksize;
using quant_rules::nested_block_count;
using quant_rules::packed_code_bytes;

// Bytes loaders reserve for a 4-bit quant-state JSON part before its
// nested_offset (and so its length) is known; bitsandbytes' JSON for any
// valid state is shorter.
inline constexpr uint64_t kStateJsonReserveBytes = 256;

// Shape of the packed tensor for `numel` codes viewed as `storage`:
// [ceil(ceil(numel / 2) / itemsize), 1]. bitsandbytes computes
// (numel + 1) // (2 * itemsize), which drops the last bytes when they do not
// fill a whole storage element; we round up (zero padding) so no code is ever
// lost. The two agree whenever ceil(numel / 2) is a multiple of the itemsize.
// Throws InvalidInputError for a storage dtype other than U8, F16, BF16, F32.
Shape packed_shape(uint64_t numel, DType storage);
// Whether `dtype` is a valid 4-bit storage dtype (U8, F16, BF16, F32).
bool is_valid_storage_dtype(DType dtype);

// One part of a weight: its name suffix, dtype and shape.
struct PartLayout {
  std::string_view suffix;
  DType dtype = DType::kU8;
  Shape shape;
  uint64_t bytes() const;
};

// A byte range of one part (WeightLayout::row_ranges).
struct PartRange {
  std::string_view suffix;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

struct WeightLayout {
  WeightFormat format = WeightFormat::kFloat;
  Shape shape;  // the logical (unquantized) shape, [out, in] for a linear layer
  // The logical dtype: kFloat: the values'; 4-bit: what the weight was
  // quantized from (the JSON's "dtype"); int8: the dtype the codes are
  // computed from (F16, bitsandbytes' input, unless a caller asks otherwise).
  DType dtype = DType::kF32;
  // The dtype of the "weight" part: kFloat: `dtype`; kInt8: I8; 4-bit: U8,
  // F16, BF16 or F32 (bitsandbytes' quant_storage; the codes' bytes viewed
  // as that dtype).
  DType storage = DType::kF32;
  int64_t blocksize = 0;      // 4-bit: values per absmax; 0 otherwise
  bool double_quant = false;  // 4-bit: absmax quantized again (nested state)

  static WeightLayout float_weight(DType dtype, Shape shape);
  static WeightLayout int8(Shape shape, DType from = DType::kF16);
  static WeightLayout four_bit(WeightFormat format, Shape shape, DType dtype, int64_t blocksize,
                               bool double_quant, DType storage);

  uint64_t numel() const { return shape.numel(); }
  // 4-bit: absmax values (block_count(numel, blocksize)); 0 otherwise.
  uint64_t blocks() const;
  // 4-bit with double quantization: nested absmax values; 0 otherwise.
  uint64_t nested_blocks() const;
  // The 4-bit quant-state part's suffix (__nf4 or __fp4); empty otherwise.
  std::string_view quant_state_suffix() const;

  // The parts in bitsandbytes' state-dict order (weight first), the 4-bit
  // state part as U8 [state_json_bytes].
  std::vector<PartLayout> parts(uint64_t state_json_bytes = kStateJsonReserveBytes) const;
  // Sum of parts(state_json_bytes)' bytes.
  uint64_t total_bytes(uint64_t state_json_bytes = kStateJsonReserveBytes) const;

  // Rows [first, first + count) of a linear weight [out, in] on their own:
  // the byte range of each part laid out by rows (the values or packed
  // codes, SCB, the absmax or its codes, the nested absmax), holding what
  // those rows read and starting at row `first`'s first entry, so a kernel
  // given [count, in] views at those bytes computes those rows. The other
  // parts (weight_format, the code maps, the state) are not listed: they are
  // read whole. nullopt where the rows do not own their blocks: 4-bit needs
  // first * in, and (first + count) * in unless first + count == out, to be
  // multiples of blocksize, or of blocksize * nested_blocksize with double
  // quantization. Throws InvalidInputError for a shape not [out, in] or rows
  // outside it.
  std::optional<std::vector<PartRange>> row_ranges(int64_t first, int64_t count) const;
  // The smallest r > 0 whose multiples row_ranges accepts as row bounds.
  int64_t row_alignment() const;

  // The 4-bit state JSON as bitsandbytes' json.dumps writes it, e.g.
  // {"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 50],
  //  "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 5.669297218322754}
  // (the offset printed as Python's repr of the float32 value widened to
  // double; present iff double quantized). REQUIRES: a 4-bit format.
  std::string state_json(float nested_offset = 0.0f) const;

  // Checks the fields: a 4-bit format's blocksize is a power of two in
  // [32, 4096], its dtype F16, BF16 or F32, its storage U8, F16, BF16 or
  // F32; the shape's element count does not overflow. Throws
  // InvalidInputError naming `name` (the layer), what was expected and found.
  void validate(std::string_view name) const;

  // The dtype and shape of the part of that suffix as a reader found it;
  // nullopt when it is missing.
  using PartLookup = std::function<std::optional<std::pair<DType, Shape>>(std::string_view suffix)>;
  // Checks that every part is present with its layout's dtype and shape (the
  // packed 4-bit weight may also be 1-D [rows]; the state part is any U8
  // [len]). Throws InvalidInputError naming `name` and the part, with what
  // was expected and what was found.
  void validate_parts(const PartLookup& lookup, std::string_view name) const;
};

// A 4-bit state JSON parsed: the layout it describes (its `storage` is not
// in the JSON: U8 here, the reader sets it from the weight part's dtype) and
// the nested offset (0 without double quantization).
struct ParsedQuantState {
  WeightLayout layout;
  float nested_offset = 0.0f;
};
// Parses bitsandbytes' JSON; `name` (the tensor's name) goes into errors.
// Throws InvalidInputError for invalid JSON, missing or unknown keys, wrong
// value types, unknown dtypes, an invalid blocksize, or only some of the
// nested_* keys.
ParsedQuantState parse_quant_state_json(std::string_view json, std::string_view name);

// Python's repr() of a double (shortest round-trip digits; exponent form
// when the decimal exponent is < -4 or >= 16, e.g. "1e-05", "5.0").
std::string python_float_repr(double value);

}  // namespace stowage::quant
