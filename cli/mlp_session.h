// What `stowage demo`, `bench` and `run` share: turning the common flags
// (--max-memory, --offload-dir, --prefetch, --trace) into an OffloadManager
// and LoadOptions, loading an MLP checkpoint through them, and timing
// forwards.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/platform.h"
#include "core/tensor.h"
#include "mmap_store/checkpoint.h"
#include "models/linear.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"
#include "offload/trace.h"

namespace stowage::cli {

struct SessionConfig {
  // The run's one budget, from session_config_for: --max-memory over each
  // tier's physical size, the disk tier with offload_dir, --prefetch.
  MemoryBudget budget;
  std::optional<std::string> offload_dir;  // the disk store
  TraceRecorder* trace = nullptr;          // must outlive the session
  // --host-cache: host-tier records in the host-wide shared segment
  // (hostcache/); nullptr: in the manager's own pinned memory. Must outlive
  // the session.
  HostTierStore* host_cache = nullptr;
  // --override-tensor: tensors placed apart from their module.
  std::vector<TensorOverride> tensor_overrides;
};

// A session on `platform` under `budgets` (--max-memory; absent tiers:
// physical size only, pinned host's the host's RAM), with the disk tier
// where `offload_dir` is given. InvalidInputError for a disk budget without
// `offload_dir`.
SessionConfig session_config_for(Platform& platform, const MemoryBudgets& budgets,
                                 const std::optional<std::string>& offload_dir, int prefetch_depth);
// OffloadOptions for `config`: its budget, the disk store, the trace.
OffloadOptions offload_options(const SessionConfig& config);
// LoadOptions planning under `options`' budget (its working reserve
// included), with `config`'s host cache and tensor overrides.
LoadOptions load_options(const OffloadOptions& options, const SessionConfig& config);


struct TimedForwards {
  std::vector<double> seconds;  // one per timed forward
  double median_s = 0;
  Tensor y;                  // the last forward's output (host float32)
  OffloadCounters counters;  // over the warm-up and timed forwards, not the load
  TierUsage accelerator;     // the compute accelerator's usage (peak over load and forwards)
  Plan plan;
  uint64_t working_reserve = 0;  // kept on the compute accelerator for activations and scratch
  uint64_t weight_bytes = 0;     // all bytes placed
  uint64_t streamed_bytes = 0;   // bytes of modules streamed per forward
  std::string residency_report;  // the residency table's report at the end
};

// Loads `checkpoint` into a new manager under `config`, runs `warmup`
// untimed and `iters` timed forwards of `x` (host float32), calling
// `before_each` (may be empty) before every forward, outside the timing.
// The kernels (the platform's, models::make_linear_kernels) take all their
// accelerator memory from the manager's budgeted memory, and the plan keeps
// the working reserve they and the activations need at x's batch
// (working_reserve_bytes; the manager's slots leave it too), so peak
// accounting covers everything and stays within the budget.
TimedForwards time_forwards(Platform& platform, const mmap_store::Checkpoint& checkpoint,
                            const Tensor& x, const SessionConfig& config, int warmup, int iters,
                            const std::function<void()>& before_each = {});

// Largest |a - b| over two float32 tensors of one shape (0 when identical);
// InvalidInputError when the shapes differ.
double max_abs_difference(const Tensor& a, const Tensor& b);
bool bitwise_equal(const Tensor& a, const Tensor& b);

// Writes `text` to `path` through mmap_store's atomic writer (a trace or
// report is never left half-written). Throws IoError.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace stowage::cli
