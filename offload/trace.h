// A trace recorder: copy and compute spans per stream, and stalls (compute
// waiting for a copy), written as Chrome trace-event JSON that Perfetto and
// chrome://tracing open:
//   {"traceEvents":[{"name":"fetch layers.3","cat":"copy","ph":"X",
//                    "ts":12.5,"dur":80.0,"pid":0,"tid":1}, ...]}
// plus "M" metadata events naming each process (accelerator) and thread
// (stream track).
//
// Spans are pairs of Events recorded on a stream around the work; times are
// resolved at the end (to_json / spans), as Event::elapsed_ms from a base
// event recorded on that accelerator when the timeline was opened. On CUDA
// these are cudaEvent pairs; on sim an event's time is the host timestamp the
// stream's worker thread takes when it reaches the event, i.e. a host
// timestamp taken around the copy or compute. So nothing on the hot path
// synchronizes with the host.
//
// Thread safety: every member may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/stream.h"

namespace stowage {

// A resolved span, times in microseconds from the timeline's base.
struct TraceSpan {
  std::string name;
  std::string category;  // "copy", "compute", "stall"
  int pid = 0;           // timeline (one per accelerator)
  int tid = 0;           // track (one per stream)
  double ts_us = 0;
  double dur_us = 0;
  double end_us() const { return ts_us + dur_us; }
};

class TraceRecorder {
 public:
  TraceRecorder() = default;
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;
  ~TraceRecorder();

  // Opens timeline `pid` named `name` whose time 0 is `base`, an event
  // already recorded on a stream of that accelerator (before any span of the
  // timeline). Opening an open pid again is ignored (the first base stays).
  void open_timeline(int pid, const std::string& name, Event base);
  bool has_timeline(int pid) const;
  // Names track `tid` of timeline `pid` ("copy", "compute", ...).
  void name_track(int pid, int tid, const std::string& name);

  // Adds a span between two events recorded on one stream of timeline `pid`
  // (start before end). The recorder keeps the events until resolved. A span
  // shorter than `drop_below_us` is left out when resolved (stalls that did
  // not happen).
  void add_span(int pid, int tid, std::string name, std::string category, Event start, Event end,
                double drop_below_us = -1);

  size_t span_count() const;
  // Resolves every span (blocks until its events completed) in the order
  // added. Throws InvalidInputError for a span on a timeline never opened.
  std::vector<TraceSpan> spans() const;
  // The Chrome trace-event JSON of spans() and the names.
  std::string to_json() const;
  // Writes to_json() to `path` under a temporary name renamed into place
  // (mmap_store/atomic_file.h); throws IoError naming the path on failure.
  void write(const std::string& path) const;

 private:
  struct PendingSpan;
  struct Timeline;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Timeline>> timelines_;
  std::vector<std::shared_ptr<PendingSpan>> spans_;
};

}  // namespace stowage
