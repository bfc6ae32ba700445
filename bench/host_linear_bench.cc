// The host linear kernels (models/linear_host.cc, OpenBLAS sgemm) on one
// decode step of a SmolLM2-135M-shaped model: every layer's q, k, v, o, gate,
// up and down projections plus the tied lm_head, at batch 1 (or --batch),
// for float32, bfloat16 and float16 weights. Prints the median ms per token and the
// GiB/s of weights read. Each layer has its own weights, as in a real model,
// so nothing stays in cache from one token to the next.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/platform.h"
#include "core/tensor.h"
#include "models/linear.h"

namespace stowage {
namespace {

using Clock = std::chrono::steady_clock;

struct Projection {
  const char* name;
  int64_t out, in;
};

constexpr int kLayers = 30;
constexpr int64_t kHidden = 576, kIntermediate = 1536, kHeadDim = 64, kHeads = 9, kKvHeads = 3;
constexpr int64_t kVocab = 49152;
constexpr int kSamples = 7;

std::vector<Projection> one_token() {
  std::vector<Projection> p;
  for (int l = 0; l < kLayers; ++l) {
    p.push_back({"q", kHeads * kHeadDim, kHidden});
    p.push_back({"k", kKvHeads * kHeadDim, kHidden});
    p.push_back({"v", kKvHeads * kHeadDim, kHidden});
    p.push_back({"o", kHidden, kHeads * kHeadDim});
    p.push_back({"gate", kIntermediate, kHidden});
    p.push_back({"up", kIntermediate, kHidden});
    p.push_back({"down", kHidden, kIntermediate});
  }
  p.push_back({"lm_head", kVocab, kHidden});
  return p;
}

struct Result {
  double ms_per_token;
  double gib_per_s;
  uint64_t weight_bytes;
};

Result run(DType dtype, int64_t batch) {
  auto platform = Platform::create(DeviceChoice::kSim);
  Stream stream = platform->accelerator(0).create_stream();
  auto kernels = models::make_host_linear_kernels();
  const std::vector<Projection> projections = one_token();
  const size_t elem = dtype_size(dtype);
  uint64_t total = 0;
  for (const Projection& p : projections) total += static_cast<uint64_t>(p.out * p.in) * elem;
  // One allocation for every weight, filled with small values.
  std::vector<uint8_t> weights(total);
  for (size_t i = 0; i < total / elem; ++i) {
    store_from_float(weights.data(), dtype, i,
                     static_cast<float>(static_cast<int>(i % 17) - 8) / 64);
  }
  std::vector<float> x(static_cast<size_t>(batch * kIntermediate), 0.01f);
  std::vector<float> y(static_cast<size_t>(batch * kVocab));
  const Tier host = Tier::pageable_host();
  std::vector<models::LinearWeights> layers;
  uint64_t offset = 0;
  for (const Projection& p : projections) {
    models::LinearWeights w;
    w.format = quant::WeightFormat::kFloat;
    w.out_features = p.out;
    w.in_features = p.in;
    w.weight = TensorView(weights.data() + offset, dtype, Shape{p.out, p.in}, host);
    offset += static_cast<uint64_t>(p.out * p.in) * elem;
    layers.push_back(w);
  }
  auto token = [&] {
    for (const models::LinearWeights& w : layers) {
      const TensorView xv(x.data(), DType::kF32, Shape{batch, w.in_features}, host);
      const TensorView yv(y.data(), DType::kF32, Shape{batch, w.out_features}, host);
      kernels->linear(stream.ref(), w, xv, yv, /*relu=*/false);
    }
    stream.synchronize();
  };
  token();  // warm-up: page in the weights
  std::vector<double> ms;
  for (int s = 0; s < kSamples; ++s) {
    const auto t0 = Clock::now();
    token();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  return {median, static_cast<double>(total) / (1 << 30) / (median / 1e3), total};
}

}  // namespace
}  // namespace stowage

int main(int argc, char** argv) {
  int64_t batch = 1;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--batch") batch = std::stoll(argv[i + 1]);
  }
  using stowage::DType;
  fmt::print(
      "host linear kernels, one SmolLM2-135M decode step: 30 layers x (q k v o gate up down) + "
      "lm_head {}x{}, batch {}, median of {}\n",
      stowage::kVocab, stowage::kHidden, batch, stowage::kSamples);
  double f32_ms = 0.0;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const stowage::Result r = stowage::run(dtype, batch);
    if (dtype == DType::kF32) f32_ms = r.ms_per_token;
    fmt::print(
        "  {:>4} weights: {:7.1f} ms/token  {:5.2f} tokens/s  {:6.2f} GiB/s of weights "
        "({:.0f} MiB)  {:.2f}x the f32 time\n",
        stowage::short_name(dtype), r.ms_per_token, 1e3 / r.ms_per_token, r.gib_per_s,
        r.weight_bytes / 1048576.0, r.ms_per_token / f32_ms);
  }
  fmt::print("reproduce: bazel run //bench:host_linear_bench -- --batch {}\n", batch);
  return 0;
}
