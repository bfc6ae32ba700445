// A Hugging Face model folder loaded for `stowage generate` and `stowage
// bench`: the offload manager under the command's budgets (its working
// reserve set from the model and the run's shape, so the fetch slots leave
// the KV cache and activations their room), the platform's kernels and the
// transformer runner, in the order they must be destroyed.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "cli/mlp_session.h"
#include "core/platform.h"
#include "models/linear.h"
#include "models/transformer_runner.h"
#include "offload/compute_split.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"

namespace stowage::cli {

struct ModelSession {
  Tier accelerator = Tier::pinned_host();
  std::unique_ptr<OffloadManager> manager;
  std::unique_ptr<models::LinearKernels> kernels;
  std::unique_ptr<models::TransformerRunner> runner;
  ~ModelSession();
};

// Loads `folder` (a progress bar on a terminal when `progress`). Throws as
// TransformerRunner does: OutOfBudgetError naming the bytes when the budget
// cannot hold the working memory, InvalidInputError naming the key or tensor.
std::unique_ptr<ModelSession> open_model_session(Platform& platform, const std::string& folder,
                                                 const SessionConfig& config,
                                                 const std::optional<LoadQuantization>& quantize,
                                                 const models::TransformerRunShape& shape,
                                                 bool progress);

// --run-on-host: the decoder layers whose module name ("model.layers.3")
// fully matches the RE2 `pattern` and that the plan put off the accelerator
// compute on the host, where their weights are (OffloadManager::
// set_host_compute); matching layers resident on the accelerator stay there.
// Returns how many compute on the host. Throws UsageError naming the flag
// for an invalid pattern, or one that matches a module that is not a
// decoder layer (only those have a host path) or no layer off the
// accelerator.
int compute_on_host(ModelSession& session, const std::string& pattern);

// --host-compute auto: which decoder layers off the accelerator compute on
// the host during decode at `batch` sequences (offload/compute_split.h),
// from `link_bytes_per_s` and the host kernels' rate measured now on a layer
// of the model's largest projection shape and weight dtype at `batch` rows.
// Layers whose projections are quantized (int8, 4-bit) stream: the host rate
// is measured for float weights only. The caller applies the choice to the
// decode steps (GenerationOptions::decode_host_modules).
struct HostComputeChoice {
  ComputeSplit split;
  double host_bytes_per_s = 0;
  double link_bytes_per_s = 0;
};
HostComputeChoice choose_decode_host_compute(ModelSession& session, double link_bytes_per_s,
                                             int64_t batch);

}  // namespace stowage::cli
