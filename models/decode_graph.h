// Decode steps replayed from a captured graph (core/stream_graph.h): CUDA
// graphs on CUDA, the simulated accelerator's replay on sim. The first step
// captures TransformerModel::enqueue_step (the offload manager's fetches
// into its fixed slots included: OffloadManager::begin_capture); every step
// then launches the graph once instead of enqueuing some ten operations per
// layer. The launch reads the step's ids, positions and embedding rows from
// the state's pinned staging and the position from device memory, so its
// outputs are the uncaptured step's, bit for bit.
//
// Where the capture is impossible (host work in the step, e.g. a module
// streamed from disk through the host stager on CUDA; kernels that allocate
// scratch per call, e.g. the int8 and 4-bit GEMMs with float32 activations;
// a budget too tight for the slots), the first step says why
// (fallback_reason()) and every step runs uncaptured: slower, never wrong.
//
// One graph per state and batch: the state's buffers and the model's
// embedding source must not change while the graph lives. When the offload
// manager's layout changes (OffloadManager::layout_version: slots allocated
// again, a module moved or computed elsewhere), the next step captures again.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/stream.h"
#include "core/stream_graph.h"
#include "hooks/hook_registry.h"
#include "models/transformer.h"
#include "offload/offload_manager.h"

namespace stowage::models {

class DecodeGraph {
 public:
  // `manager` (nullptr when no module is offloaded) runs the model's offload
  // hook; every reference must outlive the graph.
  DecodeGraph(TransformerModel& model, hooks::HookRegistry& registry, OffloadManager* manager,
              StreamRef stream, TransformerState& state);

  // One decode step (one new token per sequence), as
  // model.step(registry, stream, state, ids, 1).
  TensorView step(const std::vector<int32_t>& ids);

  bool captured() const { return graph_.valid(); }
  // Why the step runs uncaptured; empty while capture works (or before the
  // first step).
  const std::string& fallback_reason() const { return fallback_reason_; }
  int64_t launches() const { return launches_; }

 private:
  void capture();

  TransformerModel& model_;
  hooks::HookRegistry& registry_;
  OffloadManager* manager_;
  StreamRef stream_;
  TransformerState& state_;
  StreamGraph graph_;
  OffloadCounters per_launch_;
  uint64_t layout_version_ = 0;  // the manager's at the last capture attempt
  TensorView logits_;
  std::string fallback_reason_;
  int64_t launches_ = 0;
};

}  // namespace stowage::models
