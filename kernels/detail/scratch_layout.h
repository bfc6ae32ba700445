// Where the CUDA matmuls of kernels/ put their intermediate buffers inside
// one block of the context's scratch memory: 256-byte aligned pieces. The
// CUDA side (cuda_ops.cc) carves the block with these layouts and the public
// *_scratch_bytes calls report their sizes, so the two cannot disagree.
// Internal to kernels/; needs no CUDA headers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/quant_rules.h"

namespace stowage::kernels::detail {

// Offsets of 256-byte aligned pieces of one scratch block.
class ScratchLayout {
 public:
  template <typename T>
  size_t add(size_t count) {
    offset_ = (offset_ + 255) / 256 * 256;
    const size_t at = offset_;
    offset_ += count * sizeof(T);
    return at;
  }
  size_t bytes() const { return offset_ == 0 ? 1 : offset_; }

 private:
  size_t offset_ = 0;
};

// Outlier columns of x whose weights int8_matmul gathers, at most.
constexpr int64_t kInt8OutlierColumnCap = 128;

// LLM.int8 for `rows` rows of x per product (outlier bookkeeping only with a
// threshold): flags and column list over k, the gathered outlier weights
// (at most `cap` columns), int8 activations, row scales, int32 accumulators.
struct Int8Scratch {
  size_t flags = 0, cols = 0, count = 0, w_outlier = 0, xq = 0, sca = 0, acc = 0;
  size_t bytes = 0;
};
inline Int8Scratch int8_scratch(int64_t rows, int64_t n, int64_t k, bool outliers, int64_t cap) {
  ScratchLayout layout;
  Int8Scratch s;
  s.flags = layout.add<int>(outliers ? k : 0);
  s.cols = layout.add<int>(outliers ? k : 0);
  s.count = layout.add<int>(1);
  s.w_outlier = layout.add<float>(static_cast<size_t>(cap) * n);
  s.xq = layout.add<int8_t>(rows * k);
  s.sca = layout.add<float>(rows);
  s.acc = layout.add<int32_t>(rows * n);
  s.bytes = layout.bytes();
  return s;
}

// 4-bit through dequantize + GEMM: the dequantized absmax (double
// quantization only) and the dequantized weight [n, k] in the activations'
// dtype (`element_bytes` each).
struct FourBitScratch {
  size_t absmax = 0, weight = 0;
  size_t bytes = 0;
};
inline FourBitScratch four_bit_scratch(int64_t n, int64_t k, int64_t blocksize, bool nested,
                                       size_t element_bytes) {
  const int64_t numel = n * k;
  const int64_t blocks = quant_rules::block_count(numel, blocksize);
  ScratchLayout layout;
  FourBitScratch s;
  s.absmax = layout.add<float>(nested ? blocks : 0);
  s.weight = layout.add<char>(static_cast<size_t>(numel) * element_bytes);
  s.bytes = layout.bytes();
  return s;
}

}  // namespace stowage::kernels::detail
