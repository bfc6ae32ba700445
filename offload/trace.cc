#include "offload/trace.h"

#include <fmt/format.h>

#include <map>

#include "core/error.h"
#include "mmap_store/atomic_file.h"

namespace stowage {

struct TraceRecorder::Timeline {
  int pid = 0;
  std::string name;
  Event base;
  std::map<int, std::string> tracks;
};

struct TraceRecorder::PendingSpan {
  int pid = 0;
  int tid = 0;
  std::string name;
  std::string category;
  Event start;
  Event end;
  double drop_below_us = -1;
};

namespace {

std::string json_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

}  // namespace

TraceRecorder::~TraceRecorder() {
  // Events must complete before they are destroyed on sim; resolve quietly.
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& span : spans_) span->end.synchronize();
}

void TraceRecorder::open_timeline(int pid, const std::string& name, Event base) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& t : timelines_) {
    if (t->pid == pid) return;
  }
  auto timeline = std::make_shared<Timeline>();
  timeline->pid = pid;
  timeline->name = name;
  timeline->base = std::move(base);
  timelines_.push_back(std::move(timeline));
}

bool TraceRecorder::has_timeline(int pid) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& t : timelines_) {
    if (t->pid == pid) return true;
  }
  return false;
}

void TraceRecorder::name_track(int pid, int tid, const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& t : timelines_) {
    if (t->pid == pid) t->tracks[tid] = name;
  }
}

void TraceRecorder::add_span(int pid, int tid, std::string name, std::string category, Event start,
                             Event end, double drop_below_us) {
  auto span = std::make_shared<PendingSpan>();
  span->pid = pid;
  span->tid = tid;
  span->name = std::move(name);
  span->category = std::move(category);
  span->start = std::move(start);
  span->end = std::move(end);
  span->drop_below_us = drop_below_us;
  std::lock_guard<std::mutex> lock(mutex_);
  spans_.push_back(std::move(span));
}

size_t TraceRecorder::span_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return spans_.size();
}

std::vector<TraceSpan> TraceRecorder::spans() const {
  std::vector<std::shared_ptr<PendingSpan>> pending;
  std::map<int, std::shared_ptr<Timeline>> timelines;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending = spans_;
    for (const auto& t : timelines_) timelines[t->pid] = t;
  }
  std::vector<TraceSpan> out;
  out.reserve(pending.size());
  for (const auto& p : pending) {
    auto it = timelines.find(p->pid);
    STOWAGE_EXPECTS(it != timelines.end(), InvalidInputError,
                    "trace: span '{}' is on timeline {}, which was never opened", p->name, p->pid);
    it->second->base.synchronize();
    p->start.synchronize();
    p->end.synchronize();
    TraceSpan s;
    s.name = p->name;
    s.category = p->category;
    s.pid = p->pid;
    s.tid = p->tid;
    s.ts_us = 1000.0 * Event::elapsed_ms(it->second->base, p->start);
    s.dur_us = 1000.0 * Event::elapsed_ms(p->start, p->end);
    if (s.dur_us < 0) s.dur_us = 0;
    if (s.dur_us < p->drop_below_us) continue;
    out.push_back(std::move(s));
  }
  return out;
}

std::string TraceRecorder::to_json() const {
  const std::vector<TraceSpan> resolved = spans();
  std::vector<std::shared_ptr<Timeline>> timelines;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    timelines = timelines_;
  }
  std::string out = "{\"traceEvents\":[";
  bool first = true;
  auto add = [&](const std::string& event) {
    if (!first) out += ",\n";
    first = false;
    out += event;
  };
  for (const auto& t : timelines) {
    add(fmt::format(R"({{"name":"process_name","ph":"M","pid":{},"tid":0,"args":{{"name":"{}"}}}})",
                    t->pid, json_escape(t->name)));
    for (const auto& [tid, name] : t->tracks) {
      add(fmt::format(
          R"({{"name":"thread_name","ph":"M","pid":{},"tid":{},"args":{{"name":"{}"}}}})", t->pid,
          tid, json_escape(name)));
    }
  }
  for (const TraceSpan& s : resolved) {
    add(fmt::format(
        R"({{"name":"{}","cat":"{}","ph":"X","ts":{:.3f},"dur":{:.3f},"pid":{},"tid":{}}})",
        json_escape(s.name), json_escape(s.category), s.ts_us, s.dur_us, s.pid, s.tid));
  }
  out += "],\"displayTimeUnit\":\"ms\"}\n";
  return out;
}

void TraceRecorder::write(const std::string& path) const {
  // Under a temporary name, renamed into place: a failed write leaves no
  // half trace where a complete one was.
  mmap_store::write_file_atomically(path, to_json());
}

}  // namespace stowage
