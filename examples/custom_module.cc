// A host program that brings its own module and lets Stowage stream it.
//
// It builds a stack of "blocks", each a two-matrix feed-forward unit
// (y = relu(x @ up^T) @ down^T) whose forward is this program's own code,
// keeps every weight in pinned host RAM under an accelerator budget far
// smaller than the model, and attaches the offload hook: each block's weights
// are fetched into a slot on a copy stream while the previous block computes.
// It then checks the result against a float64 host reference and prints the
// counters. Runs on a GPU when one is visible, else on the simulated
// accelerator:
//
//   bazel run //examples:custom_module -- [--device sim|cuda|auto]
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "hooks/hook_registry.h"
#include "hooks/module.h"
#include "hooks/offload_hook.h"
#include "kernels/gemm.h"
#include "offload/offload_manager.h"

namespace {

constexpr int kBlocks = 6;
constexpr int64_t kHidden = 256;
constexpr int64_t kInner = 512;
constexpr int64_t kBatch = 4;

using stowage::DType;
using stowage::Shape;
using stowage::Tensor;
using stowage::TensorView;

std::vector<float> random_matrix(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(cols)));
  std::vector<float> m(static_cast<size_t>(rows * cols));
  for (float& v : m) v = normal(rng);
  return m;
}

// y[b, n] = sum_k x[b, k] * w[n, k], in float64.
std::vector<double> reference_matmul(const std::vector<double>& x, const std::vector<float>& w,
                                     int64_t n, int64_t k) {
  std::vector<double> y(static_cast<size_t>(kBatch * n), 0.0);
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += x[b * k + i] * w[j * k + i];
      y[b * n + j] = sum;
    }
  return y;
}

int run(stowage::DeviceChoice choice) {
  auto platform = stowage::Platform::create(choice);
  const stowage::Tier accelerator = platform->accelerator(0).tier();
  const uint64_t block_bytes = 2 * kHidden * kInner * sizeof(float);

  // The accelerator may hold 3 blocks' worth: the slots for prefetch depth 2.
  stowage::OffloadOptions options;
  options.prefetch_depth = 2;
  options.set_budget(accelerator, 3 * block_bytes + (1 << 20));
  stowage::OffloadManager manager(*platform, options);

  // The module tree and the weights, placed in pinned host memory.
  std::mt19937 rng(2024);
  stowage::hooks::Module root;
  std::vector<stowage::hooks::Module*> blocks;
  std::vector<std::vector<float>> up_weights, down_weights;
  stowage::kernels::CublasLtContext cublas;
  for (int i = 0; i < kBlocks; ++i) {
    stowage::hooks::Module& block = root.add_descendant("blocks." + std::to_string(i));
    blocks.push_back(&block);
    up_weights.push_back(random_matrix(rng, kInner, kHidden));
    down_weights.push_back(random_matrix(rng, kHidden, kInner));
    for (auto [name, values, rows, cols] :
         {std::make_tuple("up", &up_weights.back(), kInner, kHidden),
          std::make_tuple("down", &down_weights.back(), kHidden, kInner)}) {
      block.add_tensor(name);
      Tensor host = Tensor::empty(platform->pageable_host_memory(), DType::kF32, Shape{rows, cols});
      std::copy(values->begin(), values->end(), host.data_as<float>());
      manager.place(block.path(), name, stowage::TensorRole::kWeight, host,
                    stowage::Tier::pinned_host());
    }
    // The block's own forward: inputs[0] = x, outputs[0] = y, both [batch, hidden].
    block.set_forward([&cublas, &manager, accelerator](stowage::hooks::ForwardContext& ctx) {
      stowage::StreamRef stream = ctx.stream();
      stowage::Buffer hidden(manager.memory(accelerator), kBatch * kInner * sizeof(float), stream);
      stowage::kernels::GemmArgs up;
      up.m = kBatch, up.n = kInner, up.k = kHidden;
      up.dtype = up.out_dtype = DType::kF32;
      up.x = ctx.inputs()[0].data();
      up.w = ctx.tensor("up").data();
      up.relu = true;
      up.y = hidden.data();
      stowage::kernels::gemm(cublas, up, stream);
      stowage::kernels::GemmArgs down;
      down.m = kBatch, down.n = kHidden, down.k = kInner;
      down.dtype = down.out_dtype = DType::kF32;
      down.x = hidden.data();
      down.w = ctx.tensor("down").data();
      down.y = ctx.outputs()[0].data();
      stowage::kernels::gemm(cublas, down, stream);
    });
  }

  stowage::hooks::HookRegistry registry;
  auto hook = stowage::hooks::OffloadHook::attach_to_tree(manager, registry, root);
  hook->declare_execution_order(blocks);

  // Activations live on the accelerator; x is copied in once, y out once.
  stowage::StreamRef stream = manager.compute_stream(accelerator);
  std::vector<float> x_host = random_matrix(rng, kBatch, kHidden);
  stowage::Buffer pinned_x(platform->pinned_host_memory(), x_host.size() * sizeof(float));
  std::copy(x_host.begin(), x_host.end(), static_cast<float*>(pinned_x.data()));
  std::vector<stowage::Buffer> activations;
  for (int i = 0; i <= kBlocks; ++i)
    activations.emplace_back(manager.memory(accelerator), x_host.size() * sizeof(float), stream);
  stream.copy(activations[0].data(), pinned_x.data(), pinned_x.size());
  for (int pass = 0; pass < 3; ++pass) {  // several passes: prefetch wraps around
    for (int i = 0; i < kBlocks; ++i) {
      TensorView in(activations[i].data(), DType::kF32, Shape{kBatch, kHidden}, accelerator);
      TensorView out(activations[i + 1].data(), DType::kF32, Shape{kBatch, kHidden}, accelerator);
      registry.run_forward(*blocks[i], stream, {in}, {out});
    }
  }
  std::vector<float> y(x_host.size());
  stowage::Buffer pinned_y(platform->pinned_host_memory(), y.size() * sizeof(float));
  stream.copy(pinned_y.data(), activations[kBlocks].data(), pinned_y.size());
  stream.synchronize();
  manager.synchronize();
  std::copy_n(static_cast<const float*>(pinned_y.data()), y.size(), y.begin());

  // Float64 reference of the same blocks.
  std::vector<double> h(x_host.begin(), x_host.end());
  for (int i = 0; i < kBlocks; ++i) {
    std::vector<double> inner = reference_matmul(h, up_weights[i], kInner, kHidden);
    for (double& v : inner) v = std::max(v, 0.0);
    h = reference_matmul(inner, down_weights[i], kHidden, kInner);
  }
  double err = 0, norm = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    err += (y[i] - h[i]) * (y[i] - h[i]);
    norm += h[i] * h[i];
  }
  const double relative_error = std::sqrt(err / std::max(norm, 1e-30));

  const stowage::OffloadCounters counters = manager.counters();
  const stowage::TierUsage usage = manager.usage(accelerator);
  std::printf("device            %s\n", platform->accelerator(0).description().c_str());
  std::printf("model             %d blocks, %.2f MiB of fp32 weights in pinned host RAM\n", kBlocks,
              kBlocks * block_bytes / 1048576.0);
  std::printf("accelerator peak  %.2f MiB (budget %.2f MiB)\n", usage.peak_bytes / 1048576.0,
              static_cast<double>(*usage.budget) / 1048576.0);
  std::printf("fetches           %llu (prefetch hits %llu, misses %llu)\n",
              static_cast<unsigned long long>(counters.fetches),
              static_cast<unsigned long long>(counters.prefetch_hits),
              static_cast<unsigned long long>(counters.prefetch_misses));
  std::printf("bytes to device   %.2f MiB\n", counters.bytes_h2d / 1048576.0);
  std::printf("relative error    %.3g vs float64 reference\n", relative_error);
  // fp32 GEMMs (TF32 is not used: cuBLASLt runs with fp32 compute).
  if (!(relative_error < 1e-4) || usage.peak_bytes > *usage.budget) {
    std::fprintf(stderr, "custom_module: FAILED (error %.3g, peak %llu bytes)\n", relative_error,
                 static_cast<unsigned long long>(usage.peak_bytes));
    return 1;
  }
  std::printf("OK\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "auto";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--device=", 0) == 0)
      device = arg.substr(9);
    else if (arg == "--device" && i + 1 < argc)
      device = argv[++i];
    else {
      std::fprintf(stderr, "usage: custom_module [--device auto|cuda|sim]\n");
      return 2;
    }
  }
  try {
    return run(stowage::parse_device_choice(device));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_module: %s\n", e.what());
    return 1;
  }
}
