// A small offloaded forward through the installed package: a stack of
// blocks y = relu(x @ W^T) whose weights live in pinned host RAM under an
// accelerator budget that holds only the fetch slots, streamed by the offload
// hook around each block's forward (the program's own code), and checked
// against a float64 host reference. Runs on the simulated accelerator unless
// given --device cuda|auto. Prints "cmake_consumer: OK" and exits 0 only when
// the result matches, something was streamed and the budget held.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/platform.h"
#include "hooks/hook_registry.h"
#include "hooks/module.h"
#include "hooks/offload_hook.h"
#include "kernels/gemm.h"
#include "offload/offload_manager.h"

namespace {

constexpr int kBlocks = 4;
constexpr int64_t kHidden = 128;
constexpr int64_t kBatch = 2;

int run(stowage::DeviceChoice choice) {
  using stowage::DType;
  using stowage::Shape;
  using stowage::Tensor;
  using stowage::TensorView;

  auto platform = stowage::Platform::create(choice);
  const stowage::Tier accelerator = platform->accelerator(0).tier();
  const uint64_t block_bytes = kHidden * kHidden * sizeof(float);

  // Room for the two slots of prefetch depth 1 and the activations, not for
  // the model: every block streams.
  stowage::OffloadOptions options;
  options.prefetch_depth = 1;
  options.set_budget(accelerator, 2 * block_bytes + (256 << 10));
  stowage::OffloadManager manager(*platform, options);

  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(kHidden)));
  stowage::hooks::Module root;
  std::vector<stowage::hooks::Module*> blocks;
  std::vector<std::vector<float>> weights;
  stowage::kernels::CublasLtContext cublas;
  for (int i = 0; i < kBlocks; ++i) {
    stowage::hooks::Module& block = root.add_descendant("blocks." + std::to_string(i));
    blocks.push_back(&block);
    weights.emplace_back(kHidden * kHidden);
    for (float& v : weights.back()) v = normal(rng);
    block.add_tensor("w");
    Tensor host =
        Tensor::empty(platform->pageable_host_memory(), DType::kF32, Shape{kHidden, kHidden});
    std::copy(weights.back().begin(), weights.back().end(), host.data_as<float>());
    manager.place(block.path(), "w", stowage::TensorRole::kWeight, host,
                  stowage::Tier::pinned_host());
    block.set_forward([&cublas](stowage::hooks::ForwardContext& ctx) {
      stowage::kernels::GemmArgs g;
      g.m = kBatch, g.n = kHidden, g.k = kHidden;
      g.dtype = g.out_dtype = DType::kF32;
      g.x = ctx.inputs()[0].data();
      g.w = ctx.tensor("w").data();
      g.relu = true;
      g.y = ctx.outputs()[0].data();
      stowage::kernels::gemm(cublas, g, ctx.stream());
    });
  }
  stowage::hooks::HookRegistry registry;
  auto hook = stowage::hooks::OffloadHook::attach_to_tree(manager, registry, root);
  hook->declare_execution_order(blocks);

  stowage::StreamRef stream = manager.compute_stream(accelerator);
  std::vector<float> x(kBatch * kHidden);
  for (float& v : x) v = normal(rng);
  const size_t bytes = x.size() * sizeof(float);
  stowage::Buffer pinned(platform->pinned_host_memory(), bytes);
  std::copy(x.begin(), x.end(), static_cast<float*>(pinned.data()));
  std::vector<stowage::Buffer> act;
  for (int i = 0; i <= kBlocks; ++i) act.emplace_back(manager.memory(accelerator), bytes, stream);
  stream.copy(act[0].data(), pinned.data(), bytes);
  for (int i = 0; i < kBlocks; ++i) {
    TensorView in(act[i].data(), DType::kF32, Shape{kBatch, kHidden}, accelerator);
    TensorView out(act[i + 1].data(), DType::kF32, Shape{kBatch, kHidden}, accelerator);
    registry.run_forward(*blocks[i], stream, {in}, {out});
  }
  stream.copy(pinned.data(), act[kBlocks].data(), bytes);
  stream.synchronize();
  manager.synchronize();
  const float* y = static_cast<const float*>(pinned.data());

  std::vector<double> h(x.begin(), x.end());
  for (int i = 0; i < kBlocks; ++i) {
    std::vector<double> next(h.size(), 0.0);
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t n = 0; n < kHidden; ++n) {
        double sum = 0;
        for (int64_t k = 0; k < kHidden; ++k)
          sum += h[b * kHidden + k] * weights[i][n * kHidden + k];
        next[b * kHidden + n] = std::max(sum, 0.0);
      }
    h = next;
  }
  double worst = 0;
  for (size_t i = 0; i < h.size(); ++i) worst = std::max(worst, std::fabs(y[i] - h[i]));

  const stowage::OffloadCounters counters = manager.counters();
  const stowage::TierUsage usage = manager.usage(accelerator);
  std::printf("device %s\n", platform->accelerator(0).description().c_str());
  std::printf("fetches %llu, bytes to device %llu, peak %llu of %llu bytes\n",
              static_cast<unsigned long long>(counters.fetches),
              static_cast<unsigned long long>(counters.bytes_h2d),
              static_cast<unsigned long long>(usage.peak_bytes),
              static_cast<unsigned long long>(*usage.budget));
  std::printf("max |y - reference| %.3g\n", worst);
  if (!(worst < 1e-4) || counters.fetches < static_cast<uint64_t>(kBlocks) ||
      usage.peak_bytes > *usage.budget) {
    std::fprintf(stderr, "cmake_consumer: FAILED\n");
    return 1;
  }
  std::printf("cmake_consumer: OK\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "sim";
  if (argc == 3 && std::string(argv[1]) == "--device") {
    device = argv[2];
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: cmake_consumer [--device sim|cuda|auto]\n");
    return 2;
  }
  try {
    return run(stowage::parse_device_choice(device));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cmake_consumer: %s\n", e.what());
    return 1;
  }
}
