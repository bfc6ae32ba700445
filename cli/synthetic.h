// Synthetic MLP-family checkpoints for `stowage demo` and tests: random
// weights (uniform with the variance of N(0, 1/in), from a seeded counter-based
// generator, so a file is the same on every machine), written by streaming
// through the safetensors writer with a progress bar.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/memory_resource.h"
#include "core/tensor.h"

namespace stowage::cli {

struct SyntheticMlp {
  int layers = 8;
  int64_t hidden = 4096;
  DType dtype = DType::kF16;
  bool bias = true;
  uint64_t seed = 1;
};

// Bytes of the checkpoint's tensors (weights and biases).
uint64_t synthetic_mlp_bytes(const SyntheticMlp& spec);

// Writes the checkpoint to `path` (temporary name, renamed when complete).
void write_synthetic_mlp(const SyntheticMlp& spec, const std::string& path, bool progress);

// A float32 [batch, hidden] input with values uniform in [-1, 1).
Tensor synthetic_input(MemoryResource& memory, int64_t batch, int64_t hidden, uint64_t seed);

}  // namespace stowage::cli
