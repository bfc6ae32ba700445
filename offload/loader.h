// The streaming loader: opens a checkpoint (one safetensors file, a sharded
// index, or an offload folder, through mmap_store), groups its tensors into
// modules, plans a device map under the manager's budgets (planner.h), and
// streams each tensor to its tier through the OffloadManager, optionally
// quantizing it on the way.
//
// Seed lesson 4 (transformers' 4-bit loading leak): loading streams. Tensors
// are read one at a time from the memory map; a tensor's staging copy (on the
// accelerator when it is quantized there) is freed before the next tensor is
// staged, so peak accelerator memory while loading is at most the final
// resident bytes plus 2 x the largest source tensor.
//
// Thread safety: load_checkpoint may run from several threads for different
// managers; for one manager REQUIRES external synchronization with forwards.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "mmap_store/checkpoint.h"
#include "offload/offload_manager.h"
#include "offload/planner.h"
#include "offload/residency_table.h"
#include "quant/quant_state.h"

namespace stowage {

class HostTierStore;

// Splits a checkpoint tensor name into (module path, name inside the module):
// the module is the name minus its last component, except that a weight's
// bitsandbytes state keys belong to the weight's module:
//   "layers.0.weight"                      -> ("layers.0", "weight")
//   "layers.0.weight.absmax"               -> ("layers.0", "weight.absmax")
//   "layers.0.weight.quant_state.bitsandbytes__nf4"
//                                          -> ("layers.0", "weight.quant_state.bitsandbytes__nf4")
//   "layers.0.SCB"                         -> ("layers.0", "SCB")
//   "scale" (no dot)                       -> ("", "scale")
std::pair<std::string, std::string> split_module_path(const std::string& tensor_name);

// Groups a checkpoint's tensors into modules: tensor name -> (module path,
// name inside the module). split_module_path is the default; a model family
// whose streamed unit is larger than one layer of the file (a whole decoder
// layer) passes its own.
using ModuleSplitter = std::function<std::pair<std::string, std::string>(const std::string&)>;

// The role a tensor plays in its module, from its local name: "bias" and
// "*.bias" are biases; "weight"/"*weight" weights; the bitsandbytes state keys
// ("SCB", "weight_format", "<weight>.absmax", ...; "<p>.SCB" and
// "<p>.weight_format" beside "<p>.weight") quant-state parts of their weight; the rest buffers. For
// a quant-state part, `weight` is the local name of its weight and `suffix` its part name ("SCB",
// "absmax", ...).
struct TensorPlace {
  TensorRole role = TensorRole::kBuffer;
  std::string weight;
  std::string suffix;
};
TensorPlace classify_tensor(const std::string& local_name,
                            const std::vector<std::string>& module_tensor_names);

// Orders module paths with numbers compared as numbers ("layers.2" before
// "layers.10"); the default execution order for checkpoints, whose files
// list names alphabetically.
std::vector<std::string> natural_module_order(std::vector<std::string> modules);

struct LoadProgress {
  size_t tensors_done = 0;
  size_t tensors_total = 0;
  uint64_t bytes_done = 0;   // source bytes read so far
  uint64_t bytes_total = 0;  // source bytes of the checkpoint
  std::string tensor;        // the tensor just placed
};

// Quantizing on the way (bitsandbytes layouts, quant/ and kernels/ rules).
// Each selected weight is staged on the compute accelerator, quantized there
// by kernels/ (on sim: kernels/' CPU counterparts on the simulated device;
// on CUDA: the CUDA kernels), and its parts placed on the weight's planned
// tier; then the staging is freed, before the next tensor is read. With
// `on_host` the CPU quantizers of quant/ run on the host instead. Both are
// quant::WeightQuantizer implementations following layout().
struct LoadQuantization {
  quant::WeightFormat method = quant::WeightFormat::kNf4;
  int64_t blocksize = 64;      // 4-bit
  bool double_quant = false;   // 4-bit
  DType storage = DType::kU8;  // 4-bit quant_storage
  // Which tensors (by checkpoint info) to quantize; empty: every 2-D F16,
  // BF16 or F32 tensor whose name inside its module is "weight".
  std::function<bool(const mmap_store::TensorInfo&)> select;
  bool on_host = false;

  // The layout a selected tensor of `dtype` and `shape` is quantized to:
  // quant::quantized_layout's, int8 from the tensor's own dtype on the
  // accelerator and from float16 on the host.
  quant::WeightLayout layout(DType dtype, const Shape& shape) const;
};

// A tensor placed apart from its module (--override-tensor REGEX=TIER, as
// llama.cpp's -ot; planner.h step 6).
struct TensorOverride {
  std::string pattern;  // RE2, full match on the checkpoint's tensor name
  Tier tier = Tier::pinned_host();
};

// Sets PlanTensor::tier of every tensor of `modules` an override matches:
// the first override whose pattern fully matches the tensor's full name
// ("module.name", the checkpoint's name) wins; a quant-state part goes with
// its weight (a move is of the weight and its state together). Returns, per
// override, how many tensors it placed. Throws InvalidInputError for an
// invalid pattern, or one that places no tensor (a typo would otherwise
// change nothing, silently), naming it and a tensor name for comparison.
std::vector<size_t> apply_tensor_overrides(std::vector<PlanModule>& modules,
                                           const std::vector<TensorOverride>& overrides);

// The budget (memory_budget.h) the checkpoint is planned under, whole: the
// manager's own, or the share of it this checkpoint may fill when several
// share one manager (module_prefix). Its prefetch depth and disk staging
// size must be the manager's (the MemoryBudget both were copied from), since
// the plan reserves what the manager's slots and staging buffer take. The
// manager's budgets still apply at allocation time.
struct LoadOptions : MemoryBudget {
  // Execution order of the modules (paths); empty: natural_module_order of
  // the checkpoint's modules. Must list every module exactly once.
  std::vector<std::string> module_order;
  // No-split regexes over module paths (planner.h step 1).
  std::vector<std::string> no_split;
  // Resident units spread among the streamed ones (planner.h step 8).
  bool spread_resident = false;
  // Tensors placed apart from their module (apply_tensor_overrides). A
  // module left on several tiers is fetched whole for its forward, its
  // tensors on the accelerator used in place (planner.h step 6), and keeps
  // its host-tier tensors in the manager's pinned memory, not in host_store.
  std::vector<TensorOverride> tensor_overrides;
  // Tensor name -> (module, local name); empty: split_module_path.
  ModuleSplitter module_of;
  // Modules read in place (PlanModule::read_in_place), e.g. an embedding:
  // the planner gives them no slot bytes, and one the plan leaves off the
  // accelerators is set to run where its bytes are
  // (OffloadManager::set_host_compute), so the manager sizes no slot for it.
  std::vector<std::string> read_in_place;
  // Prepended to every module path in the manager ("model_a." lets two
  // checkpoints with the same names share one manager). The execution order
  // and the plan use the checkpoint's own paths.
  std::string module_prefix;
  // Quantize selected weights while loading (nullopt: place bytes as they
  // are).
  std::optional<LoadQuantization> quantize;
  // Called after each tensor is placed (on the calling thread).
  std::function<void(const LoadProgress&)> progress;
  // Where host-tier records' bytes live (offload/host_tier_store.h), e.g. a
  // segment shared by every process running this checkpoint (hostcache/);
  // nullptr: the manager's own pinned memory. Must outlive the load.
  HostTierStore* host_store = nullptr;
};

struct LoadedCheckpoint {
  PlanRequest request;
  Plan plan;
  std::vector<std::string> module_order;  // execution order used
  size_t tensors = 0;
  uint64_t bytes = 0;  // bytes placed (all tiers)
};

// Groups the checkpoint's tensors into planner modules, in `module_order`
// (empty: natural order), grouped by `module_of` (empty: split_module_path),
// the modules named in `read_in_place` marked so (PlanModule::read_in_place).
// Throws InvalidInputError for an order that misses or repeats a module, or
// a read-in-place name that is no module.
std::vector<PlanModule> plan_modules(const mmap_store::Checkpoint& checkpoint,
                                     std::vector<std::string>* module_order,
                                     const ModuleSplitter& module_of = {},
                                     const std::vector<std::string>& read_in_place = {});

// Bytes a weight of `info` takes once quantized with `q` (an upper bound:
// the 4-bit state JSON is counted as 256 bytes).
uint64_t quantized_bytes(const mmap_store::TensorInfo& info, const LoadQuantization& q);
// Whether `q` selects the tensor (see LoadQuantization::select).
bool selected_for_quantization(const mmap_store::TensorInfo& info, const LoadQuantization& q);

// Plans and places every tensor of `checkpoint` in `manager` (see the file
// comment). Throws OutOfBudgetError (from the planner, naming the module and
// budgets, before anything is placed; or from an allocation), InvalidInputError
// and IoError naming the checkpoint and tensor.
LoadedCheckpoint load_checkpoint(const mmap_store::Checkpoint& checkpoint, OffloadManager& manager,
                                 const LoadOptions& options);

}  // namespace stowage
