#include "core/stream_graph.h"

#include "core/detail/backend.h"
#include "core/error.h"

namespace stowage {

StreamGraph::StreamGraph() = default;
StreamGraph::StreamGraph(std::unique_ptr<detail::GraphImpl> impl) : impl_(std::move(impl)) {}
StreamGraph::StreamGraph(StreamGraph&&) noexcept = default;
StreamGraph& StreamGraph::operator=(StreamGraph&&) noexcept = default;
StreamGraph::~StreamGraph() = default;

void StreamGraph::launch(StreamRef stream) const {
  STOWAGE_EXPECTS(impl_ != nullptr, InvalidInputError, "launch() of an empty graph");
  STOWAGE_EXPECTS(!stream.is_null(), InvalidInputError, "a graph launch needs a stream");
  impl_->launch(*stream.impl());
}

GraphCapture::GraphCapture(StreamRef origin) : origin_(origin) {
  STOWAGE_EXPECTS(!origin.is_null(), InvalidInputError, "a graph capture needs a stream");
  STOWAGE_EXPECTS(!origin.capturing(), InvalidInputError,
                  "a graph capture was begun on a stream that is already capturing");
  origin.impl()->begin_capture();
}

GraphCapture::~GraphCapture() {
  if (!open_) return;
  try {
    origin_.impl()->end_capture();
  } catch (const std::exception&) {
    // Discarded: the capture failed, which is why it was not finished.
  }
}

StreamGraph GraphCapture::finish() {
  STOWAGE_EXPECTS(open_, InvalidInputError, "finish() of a graph capture already finished");
  open_ = false;
  return StreamGraph(origin_.impl()->end_capture());
}

}  // namespace stowage
