// Shared by `stowage plan` and `stowage run`: the platform and the planner's
// tier capacities from --device and --max-memory.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/platform.h"
#include "models/mlp.h"
#include "offload/planner.h"

namespace stowage::cli {

// The most accelerators a simulated platform offers (as many as the largest
// GPU hosts): a budget for "9999" is a usage error, not 10000 accelerators.
constexpr int kMaxSimulatedAccelerators = 8;

// A platform for --device (default auto) with enough simulated accelerators
// for the budgets' largest accelerator index. Throws UsageError for a bad
// --device and when a budget names an accelerator the platform lacks (a CUDA
// platform's count, or kMaxSimulatedAccelerators on sim).
std::unique_ptr<Platform> make_platform(const std::string& device, const MemoryBudgets& budgets);

struct PlannerTiers {
  std::vector<TierCapacity> accelerators;
  std::optional<TierCapacity> cpu;
  std::optional<TierCapacity> disk;
};
// Every accelerator with its budget (if any) and physical size; pinned host
// with its budget (or unlimited); disk only when `with_disk`.
PlannerTiers planner_tiers(Platform& platform, const MemoryBudgets& budgets, bool with_disk);

// The working memory (activations and kernel scratch, models::
// working_memory_bytes) a forward of `spec` at `batch` rows allocates on an
// accelerator of `platform` with the platform's kernels
// (models::make_linear_kernels): the planner's and the manager's working
// reserve for the compute accelerator.
uint64_t working_reserve_bytes(Platform& platform, const models::MlpSpec& spec, int64_t batch);

}  // namespace stowage::cli
