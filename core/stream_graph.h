// Stream capture into a replayable graph (CUDA graphs; the simulated
// accelerator records and replays its queue operations the same way), so a
// step of many small operations is enqueued with one launch.
//
//   GraphCapture capture(stream);          // work on `stream` is recorded, not run
//   ... enqueue the step on `stream` ...   // other streams join through events
//   StreamGraph graph = capture.finish();  // throws if the capture failed
//   graph.launch(stream);                  // replays it: the same operations,
//                                          // the same pointers and arguments
//
// Capture rules (CUDA's, enforced alike on sim, so CI finds what the GPU
// would refuse):
//  - a stream joins the capture by waiting on an event recorded on a
//    capturing stream; every joined stream must be joined back (the origin
//    waits on an event recorded on it after its last captured operation)
//    before finish();
//  - a capturing stream must not synchronize, allocate or free
//    stream-ordered memory (memory resources refuse: the graph would own
//    memory outside every budget), nor wait on an event recorded outside the
//    capture; an event recorded during the capture must not be queried or
//    waited on by the host until the capture ends;
//  - on CUDA, host work (StreamRef::host_task) cannot be captured.
// A broken rule throws (InvalidInputError or DeviceError) at the call; the
// capture is then unusable and finish() throws too. Host memory the graph
// copies from is read at each launch (write it before launching).
#pragma once

#include <memory>

#include "core/stream.h"

namespace stowage {

namespace detail {
class GraphImpl;
}  // namespace detail

// A finished capture. Move-only. Launch from one thread at a time.
class StreamGraph {
 public:
  StreamGraph();
  explicit StreamGraph(std::unique_ptr<detail::GraphImpl> impl);
  StreamGraph(StreamGraph&&) noexcept;
  StreamGraph& operator=(StreamGraph&&) noexcept;
  ~StreamGraph();

  bool valid() const { return impl_ != nullptr; }
  // Enqueues one replay on `stream` (of the capture's device): it starts
  // after the work already on `stream` and later work waits for all of it.
  void launch(StreamRef stream) const;

 private:
  std::unique_ptr<detail::GraphImpl> impl_;
};

// Begins capturing `origin` on construction; ends (and discards) a capture
// not finished when destroyed.
class GraphCapture {
 public:
  explicit GraphCapture(StreamRef origin);
  ~GraphCapture();
  GraphCapture(const GraphCapture&) = delete;
  GraphCapture& operator=(const GraphCapture&) = delete;

  // Ends the capture and instantiates the graph. Throws DeviceError or
  // InvalidInputError naming what broke the capture.
  StreamGraph finish();

 private:
  StreamRef origin_;
  bool open_ = true;
};

}  // namespace stowage
