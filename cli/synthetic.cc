#include "cli/synthetic.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "mmap_store/safetensors_writer.h"

namespace stowage::cli {
namespace {

// splitmix64: a counter-based generator, so any element can be computed
// independently (and in parallel) from (seed, index).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1).
float uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(
      static_cast<double>(mix(seed * 0x100000001b3ull + index) >> 11) * 0x1.0p-52 - 1.0);
}

void fill(void* data, DType dtype, uint64_t count, uint64_t seed, float scale) {
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([=] {
      const uint64_t begin = count * t / threads;
      const uint64_t end = count * (t + 1) / threads;
      for (uint64_t i = begin; i < end; ++i)
        store_from_float(data, dtype, i, scale * uniform(seed, i));
    });
  }
  for (auto& w : workers) w.join();
}

}  // namespace

uint64_t synthetic_mlp_bytes(const SyntheticMlp& spec) {
  const uint64_t per_layer =
      static_cast<uint64_t>(spec.hidden) * spec.hidden + (spec.bias ? spec.hidden : 0);
  return per_layer * spec.layers * dtype_size(spec.dtype);
}

void write_synthetic_mlp(const SyntheticMlp& spec, const std::string& path, bool progress) {
  mmap_store::SafetensorsWriter writer(path);
  for (int i = 0; i < spec.layers; ++i) {
    writer.declare(fmt::format("layers.{}.weight", i), spec.dtype, Shape{spec.hidden, spec.hidden});
    if (spec.bias) writer.declare(fmt::format("layers.{}.bias", i), spec.dtype, Shape{spec.hidden});
  }
  ProgressBar bar("writing checkpoint", synthetic_mlp_bytes(spec));
  if (!progress) bar.finish();
  HostMemoryResource host;
  const uint64_t weight_count = static_cast<uint64_t>(spec.hidden) * spec.hidden;
  Tensor weight = Tensor::empty(host, spec.dtype, Shape{spec.hidden, spec.hidden});
  Tensor bias = Tensor::empty(host, spec.dtype, Shape{spec.hidden});
  // Uniform in [-a, a) has variance a^2 / 3: a = sqrt(3 / in) matches N(0, 1/in).
  const float scale = std::sqrt(3.0f / static_cast<float>(spec.hidden));
  uint64_t done = 0;
  for (int i = 0; i < spec.layers; ++i) {
    fill(weight.data(), spec.dtype, weight_count, spec.seed * 1000 + 2 * i, scale);
    writer.write(fmt::format("layers.{}.weight", i), weight.view());
    done += weight.bytes();
    if (spec.bias) {
      fill(bias.data(), spec.dtype, spec.hidden, spec.seed * 1000 + 2 * i + 1, 0.1f);
      writer.write(fmt::format("layers.{}.bias", i), bias.view());
      done += bias.bytes();
    }
    if (progress) bar.update(done);
  }
  writer.commit();
  bar.finish();
}

Tensor synthetic_input(MemoryResource& memory, int64_t batch, int64_t hidden, uint64_t seed) {
  Tensor x = Tensor::empty(memory, DType::kF32, Shape{batch, hidden});
  fill(x.data(), DType::kF32, x.numel(), seed, 1.0f);
  return x;
}

}  // namespace stowage::cli
