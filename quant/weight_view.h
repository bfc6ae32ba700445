// A non-owning, read-only view of one linear weight W [out, in] as its format
// stores it (FORMATS.md), in host or device memory: what the host GEMV and
// the accelerator's 4-bit matmul take, and models::LinearWeights::view()
// makes. A trivially copyable value, copied into each call (no Shape, no
// logical dtype: WeightLayout describes a stored weight's parts).
//
// Thread safety: a value; what it points at must stay valid and unchanged
// while a call that took it runs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.h"
#include "quant/quant_rules.h"
#include "quant/weight_format.h"

namespace stowage::quant {

struct WeightView {
  WeightFormat format = WeightFormat::kFloat;
  int64_t out = 0;  // rows of W (output features)
  int64_t in = 0;   // columns of W (input features)
  // The dtype `data` is stored as: kFloat: the values' (F32, F16 or BF16);
  // kInt8: I8; 4-bit: the codes' storage dtype (U8, F16, BF16 or F32; the
  // bytes are the same whatever it is).
  DType dtype = DType::kF32;
  // kFloat: out * in values, row-major. kInt8: the codes CB, out * in int8.
  // 4-bit: packed_code_bytes(out * in) bytes of codes of the flattened
  // row-major weight, two per byte, the first element in the high nibble.
  const void* data = nullptr;
  // kInt8: SCB, `out` float32 row scales (w = CB * SCB / 127).
  const float* scb = nullptr;
  // 4-bit: blocks of `blocksize` consecutive elements of the flattened weight
  // (blocks may cross rows), each with one absmax: either `absmax`
  // (block_count() float32) or, with double quantization, `absmax_codes`
  // (one U8 per block) decoded as
  // nested_quant_map[code] * nested_absmax[block / nested_blocksize] + nested_offset.
  int64_t blocksize = 64;
  const float* absmax = nullptr;
  const uint8_t* absmax_codes = nullptr;
  const float* nested_absmax = nullptr;  // nested_block_count() float32
  int64_t nested_blocksize = quant_rules::kNestedBlocksize;
  float nested_offset = 0.0f;
  // The 16 code values; null: the standard table of `format`
  // (quant_rules::four_bit_code_value).
  const float* quant_map = nullptr;
  // The 256 nested code values; null: the signed dynamic map
  // (quant_rules::dynamic_map_value).
  const float* nested_quant_map = nullptr;

  int64_t numel() const { return out * in; }
  const uint8_t* codes() const { return static_cast<const uint8_t*>(data); }
  // 4-bit with the absmax quantized again (absmax_codes given).
  bool double_quant() const { return absmax_codes != nullptr; }
  // 4-bit: absmax values, block_count(numel(), blocksize); 0 otherwise.
  // REQUIRES: blocksize > 0 for a 4-bit format.
  int64_t block_count() const;
  // With double quantization: nested absmax values,
  // block_count(block_count(), nested_blocksize); 0 otherwise.
  // REQUIRES: nested_blocksize > 0 then.
  int64_t nested_block_count() const;
  // The bytes a compute reads: the values or codes with their scales, absmax
  // and nested absmax (not the code tables). What a cost model divides by a
  // read rate. REQUIRES: as block_count() and nested_block_count().
  uint64_t bytes() const;
  // 4-bit, in host memory: block `block`'s absmax. nested_code: the 256
  // nested code values (nested_quant_map, or the dynamic map where that is
  // null), resolved once by the caller; unread without double quantization.
  float block_absmax(int64_t block, const float* nested_code) const {
    if (absmax != nullptr) return absmax[block];
    return quant_rules::dequantize_nested_absmax(
        nested_code[absmax_codes[block]], nested_absmax[block / nested_blocksize], nested_offset);
  }
  // For reports and errors: the format's name (weight_format_name), for
  // kFloat the values' dtype ("bf16", "f16", "f32").
  std::string name() const;

  // Checks what any compute needs to read the weight; `where` (the call or
  // layer) starts each message. out and in are >= 0; where out * in > 0,
  // `data` is given; kInt8 with out > 0 has SCB; 4-bit has a positive
  // blocksize and, where out * in > 0, exactly one of absmax and
  // absmax_codes, the latter with a positive nested_blocksize and
  // nested_absmax. Throws InvalidInputError naming what was expected and
  // what was found. Not checked: array lengths (they must be as stated
  // above) and the dtype (which ones a kernel reads is its own contract).
  void validate(std::string_view where) const;
};

}  // namespace stowage::quant
