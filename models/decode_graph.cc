#include "models/decode_graph.h"

#include <exception>

namespace stowage::models {

DecodeGraph::DecodeGraph(TransformerModel& model, hooks::HookRegistry& registry,
                         OffloadManager* manager, StreamRef stream, TransformerState& state)
    : model_(model), registry_(registry), manager_(manager), stream_(stream), state_(state) {}

void DecodeGraph::capture() {
  if (model_.has_sparse_layers()) {
    // Each sparse layer reads its routed experts back on the host mid-step.
    fallback_reason_ =
        "a mixture-of-experts step chooses its experts from data (a host synchronization per "
        "sparse layer), so it is not captured";
    return;
  }
  try {
    if (manager_ != nullptr) manager_->begin_capture(stream_);
    GraphCapture capture(stream_);
    logits_ = model_.enqueue_step(registry_, stream_, state_, 1);
    OffloadCounters per_launch;
    if (manager_ != nullptr) per_launch = manager_->end_capture(stream_);
    graph_ = capture.finish();
    per_launch_ = per_launch;
  } catch (const std::exception& e) {
    if (manager_ != nullptr) manager_->abandon_capture();
    fallback_reason_ = e.what();
    graph_ = StreamGraph();
  }
  if (manager_ != nullptr) layout_version_ = manager_->layout_version();
}

TensorView DecodeGraph::step(const std::vector<int32_t>& ids) {
  model_.prepare_step(stream_, state_, ids, 1);
  if (manager_ != nullptr && manager_->layout_version() != layout_version_) {
    // A graph (or a failed capture) of another layout: its copies and views
    // name slots and tiers that have changed since.
    graph_ = StreamGraph();
    fallback_reason_.clear();
  }
  if (!graph_.valid() && fallback_reason_.empty()) capture();
  TensorView logits;
  if (graph_.valid()) {
    graph_.launch(stream_);
    if (manager_ != nullptr) manager_->note_launch(stream_, per_launch_);
    logits = logits_;
    ++launches_;
  } else {
    logits = model_.enqueue_step(registry_, stream_, state_, 1);
  }
  TransformerModel::advance_step(state_, 1);
  return logits;
}

}  // namespace stowage::models
