// An MLP checkpoint loaded into an OffloadManager and run through the offload
// hook: the glue `stowage run` and the tests use.
//
//   OffloadManager manager(platform, options);
//   MlpRunner runner(manager, *checkpoint, kernels, load_options);
//   Tensor y = runner.forward(x);  // x, y: host float32
//
// Thread safety: one runner per thread; several runners (each with its own
// checkpoint and LoadOptions::module_prefix) may share one manager and run
// from several threads at once.
#pragma once

#include <memory>
#include <string>

#include "core/stream.h"
#include "core/tensor.h"
#include "hooks/hook_registry.h"
#include "hooks/offload_hook.h"
#include "mmap_store/checkpoint.h"
#include "models/linear.h"
#include "models/mlp.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"

namespace stowage::models {

// Describes the MLP in a checkpoint (describe_mlp over its tensor list),
// after checking its quantized weights by quant/'s rules
// (check_quantized_weights).
MlpSpec describe_checkpoint(const mmap_store::Checkpoint& checkpoint);

// Describes the MLP whose layers `modules` a manager holds (under `prefix`),
// e.g. after quantizing while loading.
MlpSpec describe_loaded(OffloadManager& manager, const std::string& prefix,
                        const std::vector<std::string>& modules);

class MlpRunner {
 public:
  // Recognizes the MLP (InvalidInputError naming the file and tensor when
  // the checkpoint is not one), loads it into `manager` (planned under
  // `load` capacities; module_order is set to the layer order), attaches the
  // offload hook with the layer order declared. `manager`, `checkpoint` and
  // `kernels` must outlive the runner. Runs on the manager's compute
  // accelerator with a compute stream of its own.
  MlpRunner(OffloadManager& manager, const mmap_store::Checkpoint& checkpoint,
            LinearKernels& kernels, LoadOptions load);
  ~MlpRunner();

  MlpModel& model() { return *model_; }
  hooks::HookRegistry& registry() { return registry_; }
  hooks::OffloadHook& offload_hook() { return *hook_; }
  const LoadedCheckpoint& loaded() const { return loaded_; }
  StreamRef stream() const { return stream_.ref(); }

  // Runs the forward on host float32 x [batch, in] and returns y [batch,
  // out] in pageable host memory. Copies x to the accelerator, runs every
  // layer through the hooks, copies y back and waits for the stream (the
  // only host synchronization per call).
  Tensor forward(const Tensor& x);

 private:
  OffloadManager& manager_;
  Tier accelerator_;
  Stream stream_;
  std::unique_ptr<MlpModel> model_;
  hooks::HookRegistry registry_;
  std::unique_ptr<hooks::OffloadHook> hook_;
  LoadedCheckpoint loaded_;
};

}  // namespace stowage::models
