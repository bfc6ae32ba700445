// Streams and events over two backends: CUDA (cudaStream_t / cudaEvent_t) and
// the host-simulated accelerator (each stream a worker thread running its
// queue in order). Code written against StreamRef and Event runs unchanged on
// both, so the offload pipeline is tested in CI without a GPU.
//
// Semantics follow CUDA's: work enqueued on one stream runs in order; record()
// captures the stream's position at the time of the call; wait() makes later
// work on a stream wait for the most recent record() of the event as of the
// call; work on different streams may run concurrently.
//
// Thread safety: a Stream may be used from several threads at once (enqueues
// are serialized); an Event must not be recorded from two threads at once.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "core/tier.h"

namespace stowage {

namespace detail {
class StreamImpl;
class EventImpl;
}  // namespace detail

// An event: a marker in a stream's queue. Owning, move-only.
class Event {
 public:
  // Defined out of line: the implicit definition would need EventImpl
  // complete in every file that default-constructs an Event.
  Event();
  explicit Event(std::unique_ptr<detail::EventImpl> impl);
  Event(Event&&) noexcept;
  Event& operator=(Event&&) noexcept;
  ~Event();

  bool valid() const { return impl_ != nullptr; }
  // True when the work captured by the last record() has run (true if the
  // event was never recorded). Never blocks.
  bool ready() const;
  // Blocks the calling thread until ready(). Rethrows nothing: stream errors
  // surface through Stream/StreamRef::synchronize().
  void synchronize() const;
  // Milliseconds between two recorded and completed events of one backend.
  static float elapsed_ms(const Event& start, const Event& end);

  detail::EventImpl* impl() const { return impl_.get(); }

 private:
  std::unique_ptr<detail::EventImpl> impl_;
};

// A non-owning handle to a stream; cheap to copy. A default-constructed
// StreamRef is "no stream": work given to it runs synchronously on the
// calling thread (host memory only).
class StreamRef {
 public:
  StreamRef() = default;
  explicit StreamRef(detail::StreamImpl* impl) : impl_(impl) {}

  bool is_null() const { return impl_ == nullptr; }
  Backend backend() const;
  int device_index() const;
  // The stream's accelerator tier ("cuda:0", "sim:0").
  Tier tier() const;
  // cudaStream_t on CUDA; nullptr on sim and for a null ref.
  void* native_handle() const;

  // Enqueues a copy of `bytes` bytes; host pointers must be pinned for the
  // copy to be asynchronous on CUDA. Either side may be host or device.
  void copy(void* dst, const void* src, size_t bytes) const;
  void fill_zero(void* dst, size_t bytes) const;
  // Enqueues host work. On sim it runs on the stream's worker thread (this is
  // how sim "kernels" execute). On CUDA it runs through cudaLaunchHostFunc
  // and must not call CUDA. An exception it throws becomes the stream's error.
  void host_task(std::function<void()> task) const;
  void record(Event& event) const;
  void wait(const Event& event) const;
  // Blocks until all enqueued work ran; rethrows (and clears) the first error
  // a task on this stream raised since the last synchronize.
  void synchronize() const;
  // True while the stream records into a graph capture (core/stream_graph.h)
  // instead of running its work. False for a null ref.
  bool capturing() const;

  detail::StreamImpl* impl() const { return impl_; }
  bool operator==(const StreamRef& o) const { return impl_ == o.impl_; }
  bool operator!=(const StreamRef& o) const { return impl_ != o.impl_; }

 private:
  detail::StreamImpl* impl_ = nullptr;
};

// An owning stream. Move-only; its destructor waits for queued work.
class Stream {
 public:
  Stream();  // out of line, as Event()
  explicit Stream(std::unique_ptr<detail::StreamImpl> impl);
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;
  ~Stream();

  StreamRef ref() const { return StreamRef(impl_.get()); }
  operator StreamRef() const { return ref(); }  // NOLINT: a view of an owner
  bool valid() const { return impl_ != nullptr; }
  void synchronize() const { ref().synchronize(); }

 private:
  std::unique_ptr<detail::StreamImpl> impl_;
};

}  // namespace stowage
