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
#include "offload/loader.h"
#include "offload/planner.h"

namespace stowage::cli {

// The most accelerators a simulated platform offers (as many as the largest
// GPU hosts): a budget for "9999" is a usage error, not 10000 accelerators.
constexpr int kMaxSimulatedAccelerators = 8;

// A platform for --device (default auto) with enough simulated accelerators
// for the budgets' largest accelerator index. Throws UsageError for a bad
// --device and when a budget names an accelerator the platform lacks (a CUDA
// platform's count, or kMaxSimulatedAccelerators on sim). A simulated
// platform has at least `min_accelerators` (--tensor-parallel N: N ranks).
std::unique_ptr<Platform> make_platform(const std::string& device, const MemoryBudgets& budgets,
                                        int min_accelerators = 1);

// --override-tensor REGEX=TIER (repeatable; llama.cpp's -ot): the tensors
// whose checkpoint name fully matches REGEX (RE2) are placed on TIER, an
// accelerator index of `platform`, `cpu` (pinned host RAM) or `disk`, as
// --max-memory names tiers (offload/loader.h's apply_tensor_overrides).
// Throws UsageError naming the flag, the value and what was expected for a
// value with no '=', an invalid pattern, an unknown tier, an accelerator the
// platform lacks, or `disk` when `disk_needs` is not empty (what the command
// needs for a disk tier, e.g. "--offload-dir").
std::vector<TensorOverride> parse_tensor_overrides(const std::vector<std::string>& values,
                                                   Platform& platform,
                                                   const std::string& disk_needs);

// The working memory (activations and kernel scratch, models::
// working_memory_bytes) a forward of `spec` at `batch` rows allocates on an
// accelerator of `platform` with the platform's kernels
// (models::make_linear_kernels): the planner's and the manager's working
// reserve for the compute accelerator.
uint64_t working_reserve_bytes(Platform& platform, const models::MlpSpec& spec, int64_t batch);

}  // namespace stowage::cli
