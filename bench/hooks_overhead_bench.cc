// Host-side overhead of a module forward through hooks/: the registry alone,
// with a user hook, and with the offload hook's bookkeeping (resident
// modules: begin_forward/end_forward, no copies). The forward itself enqueues
// nothing, so the time is the hooks' cost. Target: < 5 us per module forward.
//
// Reproduce: bazel run -c opt //bench:hooks_overhead_bench [-- --device sim|cuda]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "core/platform.h"
#include "hooks/hook_registry.h"
#include "hooks/offload_hook.h"
#include "offload/offload_manager.h"

namespace {

using namespace stowage;
using Clock = std::chrono::steady_clock;

constexpr int kModules = 32;
constexpr int kPasses = 300;  // forwards per sample: kModules * kPasses
constexpr int kSamples = 15;

// Median over samples of nanoseconds per module forward.
template <typename Fn>
double median_ns(Fn&& one_pass) {
  std::vector<double> samples;
  for (int s = 0; s < kSamples; ++s) {
    auto t0 = Clock::now();
    for (int p = 0; p < kPasses; ++p) one_pass();
    auto t1 = Clock::now();
    samples.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() /
                      (kPasses * kModules));
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "sim";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--device") device = argv[i + 1];
  }
  auto platform = Platform::create(parse_device_choice(device));
  const Tier acc = platform->accelerator(0).tier();

  hooks::Module root;
  std::vector<hooks::Module*> modules;
  for (int i = 0; i < kModules; ++i) {
    hooks::Module& m = root.add_descendant(fmt::format("layers.{}", i));
    m.add_tensor("weight");
    m.add_tensor("bias");
    m.set_forward([](hooks::ForwardContext&) {});
    modules.push_back(&m);
  }
  StreamRef no_stream;

  hooks::HookRegistry bare;
  auto pass_bare = [&] {
    for (hooks::Module* m : modules) bare.run_forward(*m, no_stream);
  };
  const double t_bare = median_ns(pass_bare);

  hooks::HookRegistry with_user;
  uint64_t calls = 0;
  with_user.add_global(hooks::HookPhase::kPreForward, [&](hooks::ForwardContext&) { ++calls; });
  with_user.add_global(hooks::HookPhase::kPostForward, [&](hooks::ForwardContext&) { ++calls; });
  auto pass_user = [&] {
    for (hooks::Module* m : modules) with_user.run_forward(*m, no_stream);
  };
  const double t_user = median_ns(pass_user);

  OffloadOptions options;
  options.prefetch_depth = 2;
  OffloadManager manager(*platform, options);
  {
    Tensor w = Tensor::empty(platform->pageable_host_memory(), DType::kF16, Shape{32, 32});
    Tensor b = Tensor::empty(platform->pageable_host_memory(), DType::kF32, Shape{32});
    std::memset(w.data(), 0, w.bytes());
    std::memset(b.data(), 0, b.bytes());
    for (hooks::Module* m : modules) {
      manager.place(m->path(), "weight", TensorRole::kWeight, w, acc);
      manager.place(m->path(), "bias", TensorRole::kBias, b, acc);
    }
  }
  hooks::HookRegistry offload_registry;
  hooks::OffloadHook hook(manager, offload_registry, modules);
  hook.declare_execution_order(modules);
  StreamRef compute = manager.compute_stream(acc);
  auto pass_offload = [&] {
    for (hooks::Module* m : modules) offload_registry.run_forward(*m, compute);
  };
  pass_offload();
  compute.synchronize();
  const double t_offload = median_ns(pass_offload);
  compute.synchronize();

  fmt::print("hooks overhead per module forward ({}; {} modules x {} passes, median of {})\n",
             platform->accelerator(0).description(), kModules, kPasses, kSamples);
  fmt::print("  registry, no hooks:              {:8.0f} ns\n", t_bare);
  fmt::print("  registry + 2 user hooks:         {:8.0f} ns\n", t_user);
  fmt::print(
      "  registry + offload hook (resident, no copies): {:8.0f} ns  ({:.2f} us; target < 5 "
      "us: {})\n",
      t_offload, t_offload / 1000.0, t_offload < 5000.0 ? "met" : "NOT met");
  fmt::print("  offload hook / bare registry:    {:8.1f}x\n", t_offload / t_bare);
  fmt::print("reproduce: bazel run -c opt //bench:hooks_overhead_bench -- --device {}\n", device);
  return calls == 0 ? 1 : 0;
}
