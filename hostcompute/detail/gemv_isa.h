// The row kernels behind HostGemv, one per instruction set (gemv_isa.cc):
// each computes outputs [row_begin, row_end) of every batch row of one layer.
// A GemvJob is the call's arguments, validated, with the code tables resolved.
#pragma once

#include <cstdint>

#include "hostcompute/host_gemv.h"

namespace stowage::hostcompute::detail {

struct GemvJob {
  HostLinearArgs args;
  float code[16] = {};                 // 4-bit code values
  const float* nested_code = nullptr;  // double quantization's 256 code values
};

// Each row's weight is decoded a segment at a time into a buffer that stays
// in the L1 cache: 1 KiB of weight bytes (512 bf16/f16, 1024 int8 or 2048
// 4-bit elements), each a multiple of every instruction set's accumulation
// group, so the segments do not change the order of the sums. Why 1 KiB:
// bench/results/header-figures.md.
inline constexpr int64_t kSegmentBytes = 1024;
inline constexpr int64_t kMaxSegment = 2048;  // floats: the 4-bit segment
inline int64_t segment_length(const quant::WeightView& w) {
  if (quant::is_four_bit(w.format)) return kSegmentBytes * 2;
  return kSegmentBytes / static_cast<int64_t>(dtype_size(w.dtype));  // bf16, f16 or int8
}

void gemv_rows_scalar(const GemvJob& job, int64_t row_begin, int64_t row_end);
void gemv_rows_avx2(const GemvJob& job, int64_t row_begin, int64_t row_end);
void gemv_rows_avx512(const GemvJob& job, int64_t row_begin, int64_t row_end);

}  // namespace stowage::hostcompute::detail
