// The row kernels behind HostGemv, one per instruction set (gemv_isa.cc):
// each computes outputs [row_begin, row_end) of every batch row of one layer.
// A GemvJob is the call's arguments, validated, with the code tables resolved.
#pragma once

#include <cstdint>

#include "hostcompute/host_gemv.h"

namespace stowage::hostcompute::detail {

struct GemvJob {
  HostLinearArgs args;
  float code[16];          // 4-bit code values
  float nested_code[256];  // double quantization's code values
};

// Floats of each row's weight decoded at a time into a buffer that stays in
// the L1 cache; a multiple of every instruction set's accumulation group, so
// the segments do not change the order of the sums. 2048 (8 KiB, plus 4
// batch rows' 8 KiB slices of x: 40 KiB of a 48 KiB L1) measured 10-15%
// faster than 512 on every format at m = 1 (less work per segment); 4096
// was slower at m = 4, whose x slices then spill to L2.
inline constexpr int64_t kSegment = 2048;

void gemv_rows_scalar(const GemvJob& job, int64_t row_begin, int64_t row_end);
void gemv_rows_avx2(const GemvJob& job, int64_t row_begin, int64_t row_end);
void gemv_rows_avx512(const GemvJob& job, int64_t row_begin, int64_t row_end);

}  // namespace stowage::hostcompute::detail
