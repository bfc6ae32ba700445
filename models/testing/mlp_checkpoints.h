// Test helpers: small MLP checkpoints in every weight format, written as
// safetensors files. Test-only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"

namespace stowage::models::testing {

struct RawTensor {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  std::vector<uint8_t> bytes;
};

// Writes `tensors` as a safetensors file at `path` (in the order given;
// header padded to 8 bytes). Throws IoError on failure.
void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors);

enum class TestFormat { kF32, kF16, kBF16, kInt8, kNf4, kFp4, kNf4DoubleQuant };
const char* test_format_name(TestFormat format);

// An MLP of `widths.size() - 1` layers (layer i maps widths[i] -> widths[i+1])
// with deterministic pseudo-random weights and biases, quantized in the
// bitsandbytes layout for the quantized formats (`storage` is the 4-bit
// quant_storage dtype: U8, F16, BF16 or F32).
std::vector<RawTensor> make_mlp(const std::vector<int64_t>& widths, TestFormat format,
                                uint32_t seed, DType storage = DType::kU8, bool bias = true);

// A float32 [batch, width] input.
RawTensor make_input(int64_t batch, int64_t width, uint32_t seed);

}  // namespace stowage::models::testing
