#include "cli/mlp_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "cli/mlp_common.h"
#include "core/error.h"
#include "mmap_store/atomic_file.h"
#include "models/mlp_runner.h"

namespace stowage::cli {

SessionConfig session_config_for(Platform& platform, const MemoryBudgets& budgets,
                                 const std::optional<std::string>& offload_dir,
                                 int prefetch_depth) {
  STOWAGE_EXPECTS(!budgets.disk || offload_dir, InvalidInputError,
                  "--max-memory gives a disk budget, but no --offload-dir was given");
  SessionConfig config;
  config.budget = memory_budget_for(platform, budgets.accelerators, budgets.cpu,
                                    host_physical_bytes(), offload_dir.has_value(), budgets.disk);
  config.budget.prefetch_depth = prefetch_depth;
  config.offload_dir = offload_dir;
  return config;
}

OffloadOptions offload_options(const SessionConfig& config) {
  OffloadOptions options{config.budget};
  if (config.offload_dir) options.disk_store = make_folder_disk_store(*config.offload_dir);
  options.trace = config.trace;
  return options;
}

LoadOptions load_options(const OffloadOptions& options, const SessionConfig& config) {
  LoadOptions load{options};
  load.host_store = config.host_cache;
  load.tensor_overrides = config.tensor_overrides;
  return load;
}

TimedForwards time_forwards(Platform& platform, const mmap_store::Checkpoint& checkpoint,
                            const Tensor& x, const SessionConfig& config, int warmup, int iters,
                            const std::function<void()>& before_each) {
  OffloadOptions options = offload_options(config);
  const Tier accelerator = platform.accelerator(options.compute_accelerator).tier();
  const uint64_t working =
      working_reserve_bytes(platform, models::describe_checkpoint(checkpoint), x.shape()[0]);
  options.working_reserve[accelerator] = working;
  OffloadManager manager(platform, options);
  std::unique_ptr<models::LinearKernels> kernels =
      models::make_linear_kernels(platform, manager.memory(accelerator));
  LoadOptions load = load_options(options, config);
  models::MlpRunner runner(manager, checkpoint, *kernels, load);
  TimedForwards result;
  result.plan = runner.loaded().plan;
  result.working_reserve = working;
  result.weight_bytes = runner.loaded().bytes;
  const Tier compute = accelerator;
  for (const PlanModule& module : runner.loaded().request.modules) {
    if (!result.plan.streamed(module.path)) continue;
    for (const PlanTensor& t : module.tensors) {
      // A module on several tiers fetches only its tensors off the accelerator.
      if (result.plan.tier_of_tensor(module.path, t.name) != compute) {
        result.streamed_bytes += t.bytes;
      }
    }
  }
  // Counters from here on: the forwards only, not the load.
  const OffloadCounters at_load = manager.counters();
  for (int i = 0; i < warmup + iters; ++i) {
    if (before_each) before_each();
    const auto start = std::chrono::steady_clock::now();
    result.y = runner.forward(x);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= warmup) result.seconds.push_back(seconds);
  }
  manager.synchronize();
  std::vector<double> sorted = result.seconds;
  std::sort(sorted.begin(), sorted.end());
  result.median_s = sorted.empty() ? 0 : sorted[sorted.size() / 2];
  result.counters = counters_since(manager.counters(), at_load);
  result.residency_report = manager.table().report();
  result.accelerator = manager.usage(accelerator);
  return result;
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  STOWAGE_EXPECTS(a.dtype() == DType::kF32 && b.dtype() == DType::kF32 && a.shape() == b.shape(),
                  InvalidInputError,
                  "comparing outputs: expected two float32 tensors of one shape, found {} and {}",
                  a.shape().to_string(), b.shape().to_string());
  double worst = 0;
  const float* pa = a.data_as<const float>();
  const float* pb = b.data_as<const float>();
  for (uint64_t i = 0; i < a.numel(); ++i) {
    const double d = std::fabs(static_cast<double>(pa[i]) - pb[i]);
    if (!(d <= worst)) worst = d;  // NaN propagates as the worst
  }
  return worst;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

void write_text_file(const std::string& path, const std::string& text) {
  mmap_store::write_file_atomically(path, text);
}

}  // namespace stowage::cli
