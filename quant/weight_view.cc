#include "quant/weight_view.h"

#include <fmt/format.h>

#include "core/error.h"

namespace stowage::quant {

int64_t WeightView::block_count() const {
  if (!is_four_bit(format)) return 0;
  return quant_rules::block_count(numel(), blocksize);
}

int64_t WeightView::nested_block_count() const {
  if (!is_four_bit(format) || !double_quant()) return 0;
  return quant_rules::block_count(block_count(), nested_blocksize);
}

uint64_t WeightView::bytes() const {
  const uint64_t elements = static_cast<uint64_t>(numel());
  if (format == WeightFormat::kFloat) return elements * dtype_size(dtype);
  if (format == WeightFormat::kInt8) return elements + static_cast<uint64_t>(out) * sizeof(float);
  const uint64_t blocks = static_cast<uint64_t>(block_count());
  const uint64_t nested = static_cast<uint64_t>(nested_block_count());
  const uint64_t absmax = double_quant() ? blocks + nested * sizeof(float) : blocks * sizeof(float);
  return static_cast<uint64_t>(quant_rules::packed_code_bytes(numel())) + absmax;
}

std::string WeightView::name() const {
  if (format == WeightFormat::kFloat) return std::string(short_name(dtype));
  return weight_format_name(format);
}

void WeightView::validate(std::string_view where) const {
  STOWAGE_EXPECTS(out >= 0 && in >= 0, InvalidInputError,
                  "{}: expected a weight shape of non-negative sizes, found [{}, {}]", where, out,
                  in);
  const bool reads = numel() > 0;
  STOWAGE_EXPECTS(!reads || data != nullptr, InvalidInputError,
                  "{}: expected {} weight data for [{}, {}], found a null pointer", where, name(),
                  out, in);
  if (format == WeightFormat::kInt8) {
    STOWAGE_EXPECTS(out == 0 || scb != nullptr, InvalidInputError,
                    "{}: expected int8 row scales SCB of {} floats, found a null pointer", where,
                    out);
  }
  if (!is_four_bit(format)) return;
  STOWAGE_EXPECTS(blocksize > 0, InvalidInputError,
                  "{}: expected a positive {} blocksize, found {}", where, name(), blocksize);
  if (!reads) return;
  STOWAGE_EXPECTS((absmax != nullptr) != double_quant(), InvalidInputError,
                  "{}: expected either float absmax or double-quantized absmax codes ({} blocks), "
                  "found {}",
                  where, block_count(), absmax != nullptr ? "both" : "neither");
  if (!double_quant()) return;
  STOWAGE_EXPECTS(nested_blocksize > 0, InvalidInputError,
                  "{}: expected a positive nested blocksize, found {}", where, nested_blocksize);
  STOWAGE_EXPECTS(nested_absmax != nullptr, InvalidInputError,
                  "{}: expected nested_absmax of {} floats with double quantization, found a "
                  "null pointer",
                  where, nested_block_count());
}

}  // namespace stowage::quant
