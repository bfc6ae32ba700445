// The built-in MLP family (CLI.md, "MLP family"): tensors layers.{i}.weight
// [out_i, in_i] for i = 0 .. L-1 with no gaps, optional layers.{i}.bias
// [out_i]; weights float32/float16/bfloat16, or quantized in the
// bitsandbytes layout (int8 with layers.{i}.SCB; nf4/fp4 with
// layers.{i}.weight.absmax and the other state keys). Forward: h = x; for each
// layer h = h @ W_i^T + b_i, ReLU on every layer but the last; float32
// accumulation; y float32 [batch, out_{L-1}].
//
// Each layer is a module ("layers.3") of the hooks/ module API whose tensors
// are named as in the checkpoint minus the module path ("weight", "bias",
// "SCB", "weight.absmax", ...), so an offload hook can stream it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/memory_resource.h"
#include "core/tensor.h"
#include "hooks/hook_registry.h"
#include "hooks/module.h"
#include "models/linear.h"
#include "models/linear_spec.h"

namespace stowage::models {

// A layer: its module ("layers.3") and tensor names (checkpoint order) and
// the linear layer they hold.
struct MlpLayer : LinearSpec {
  std::string module;
  std::vector<std::string> tensors;
};

struct MlpSpec {
  std::vector<MlpLayer> layers;
  std::string source;  // the checkpoint it was read from (for messages)
  int64_t in_features() const { return layers.front().in_features(); }
  int64_t out_features() const { return layers.back().out_features(); }
};

// Recognizes the family in a checkpoint's tensor list. `read_bytes` returns
// the bytes of a (small) tensor by full name: it is used for the 4-bit
// quant_state JSON only. Throws InvalidInputError naming `source` and the
// tensor when the list is not an MLP of this family (missing layers.0.weight,
// a gap, in_{i+1} != out_i, a bias of the wrong shape, a missing or malformed
// quant-state key, an unknown tensor).
MlpSpec describe_mlp(const std::vector<TensorMeta>& tensors,
                     const std::function<std::vector<uint8_t>(const std::string&)>& read_bytes,
                     const std::string& source);

// Accelerator bytes a forward of `spec` at `batch` rows allocates from the
// manager's memory besides the weights and the fetch slots: x and y
// (MlpRunner::forward), the two activation buffers (MlpModel::forward) and
// what `kernels` hold (LinearKernels::working_bytes: on CUDA the cuBLASLt
// workspace and e.g. a 4-bit weight dequantized for a GEMM). What
// LoadOptions::working_reserve keeps on the compute accelerator so that a
// forward never needs memory the plan gave to weights. Forwards of larger
// batches may need more. Overflow-checked: throws InvalidInputError naming
// the source and the layer when an activation of `batch` rows would need
// more than 2^58 bytes (layers of zero bytes can declare any width).
uint64_t working_memory_bytes(const MlpSpec& spec, int64_t batch, const LinearKernels& kernels);

// The module tree of an MLP: root -> "layers" -> "0" .. "L-1". The layers'
// tensors start with no bytes: give them bytes with Module::set_tensor
// (resident) or let an offload hook provide them per forward.
//
// Thread safety: forward() may run from several threads at once on
// different streams only if every layer's bytes are resident (or the hooks
// are thread-safe); a model object is otherwise used by one thread.
class MlpModel {
 public:
  // `kernels` must outlive the model.
  MlpModel(MlpSpec spec, LinearKernels& kernels);
  MlpModel(const MlpModel&) = delete;
  MlpModel& operator=(const MlpModel&) = delete;

  const MlpSpec& spec() const { return spec_; }
  hooks::Module& root() { return root_; }
  size_t layer_count() const { return layers_.size(); }
  hooks::Module& layer(size_t i) { return *layers_[i]; }
  // The layer modules in execution order.
  std::vector<hooks::Module*> execution_order() const { return layers_; }

  // Enqueues the forward on `stream`: x F32 [batch, in_0] and y F32 [batch,
  // out_last], both valid on the stream's device. Activations come from
  // `activation_memory` (stream-ordered, freed on `stream` at the end). Each
  // layer runs through `registry.run_forward`, so its hooks run.
  void forward(hooks::HookRegistry& registry, StreamRef stream, const TensorView& x,
               const TensorView& y, MemoryResource& activation_memory);

 private:
  void build_layer(size_t i);

  MlpSpec spec_;
  LinearKernels& kernels_;
  hooks::Module root_;
  std::vector<hooks::Module*> layers_;
};

}  // namespace stowage::models
