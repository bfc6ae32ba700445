// The interfaces a backend implements. Not part of the public API.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "core/stream.h"

namespace stowage::detail {

class EventImpl {
 public:
  virtual ~EventImpl() = default;
  virtual Backend backend() const = 0;
  virtual bool ready() const = 0;
  virtual void synchronize() const = 0;
  virtual float elapsed_ms_since(const EventImpl& start) const = 0;
};

class GraphImpl {
 public:
  virtual ~GraphImpl() = default;
  virtual void launch(class StreamImpl& stream) = 0;
};

class StreamImpl {
 public:
  virtual ~StreamImpl() = default;
  virtual Backend backend() const = 0;
  virtual int device_index() const = 0;
  virtual void* native_handle() const = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  virtual void host_task(std::function<void()> task) = 0;
  virtual void record(EventImpl& event) = 0;
  virtual void wait(const EventImpl& event) = 0;
  virtual void synchronize() = 0;
  // Graph capture (core/stream_graph.h). capturing(): this stream records
  // instead of running (it began a capture or joined one).
  virtual bool capturing() const = 0;
  virtual void begin_capture() = 0;
  // Ends the capture begun on this stream; throws when it failed. The
  // capture is over either way.
  virtual std::unique_ptr<GraphImpl> end_capture() = 0;
};

}  // namespace stowage::detail
