// Test helper: tensors of seeded random weights for the quantizer tests.
#pragma once

#include <cstdint>
#include <random>
#include <utility>

#include "core/dtype.h"
#include "core/memory_resource.h"
#include "core/shape.h"
#include "core/tensor.h"

namespace stowage::quant::testing {

// A tensor of `dtype` in `memory` holding N(0, 1) draws from `seed`, each
// rounded to `dtype` as store_from_float does.
inline Tensor normal_tensor(MemoryResource& memory, Shape shape, DType dtype, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor t = Tensor::empty(memory, dtype, std::move(shape));
  for (uint64_t i = 0; i < t.numel(); ++i) store_from_float(t.data(), dtype, i, dist(gen));
  return t;
}

}  // namespace stowage::quant::testing
