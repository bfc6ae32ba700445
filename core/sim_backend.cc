#include "core/detail/sim_backend.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/detail/backend.h"
#include "core/error.h"

namespace stowage::detail {
namespace {

using Clock = std::chrono::steady_clock;

class SimStream;

// One graph capture in progress: the operations of the capturing streams, in
// the order they were enqueued.
struct SimCapture {
  enum class Kind { kTask, kCopy, kRecord, kWait };
  struct Op {
    SimStream* stream = nullptr;
    Kind kind = Kind::kTask;
    std::function<void()> task;
    void* dst = nullptr;
    const void* src = nullptr;
    size_t bytes = 0;
    int event = -1;  // index of a captured record
  };
  explicit SimCapture(SimStream* o) : origin(o) {}

  void add(Op op) {
    std::lock_guard<std::mutex> lock(mutex);
    ops.push_back(std::move(op));
  }
  // Keeps the first broken rule; finish() reports it.
  void fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex);
    if (failure.empty()) failure = why;
  }

  SimStream* const origin;
  std::mutex mutex;
  std::vector<Op> ops;
  int records = 0;
  std::vector<SimStream*> joined;
  std::string failure;
  bool active = true;
};

struct SimEventState {
  std::mutex mutex;
  std::condition_variable done;
  uint64_t recorded = 0;   // generation of the last record() call
  uint64_t completed = 0;  // highest generation whose queue position ran
  Clock::time_point completed_at{};
  // Set while the last record() was captured by an active capture.
  std::shared_ptr<SimCapture> capture;
  int capture_record = -1;
};

// The capture an event was last recorded in, if that capture is still open.
// REQUIRES: state->mutex held.
std::shared_ptr<SimCapture> open_capture_of(const SimEventState& state) {
  if (state.capture == nullptr) return nullptr;
  std::lock_guard<std::mutex> lock(state.capture->mutex);
  return state.capture->active ? state.capture : nullptr;
}

[[noreturn]] void throw_captured_event_query() {
  throw InvalidInputError(
      "an event recorded during a graph capture was queried or waited on by the host before "
      "the capture ended");
}

class SimEvent final : public EventImpl {
 public:
  SimEvent() : state_(std::make_shared<SimEventState>()) {}
  Backend backend() const override { return Backend::kSim; }
  bool ready() const override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (open_capture_of(*state_) != nullptr) throw_captured_event_query();
    return state_->completed >= state_->recorded;
  }
  void synchronize() const override {
    std::unique_lock<std::mutex> lock(state_->mutex);
    if (open_capture_of(*state_) != nullptr) throw_captured_event_query();
    const uint64_t target = state_->recorded;
    state_->done.wait(lock, [&] { return state_->completed >= target; });
  }
  float elapsed_ms_since(const EventImpl& start) const override {
    // Each timestamp is read under its own lock: holding both at once would
    // order the two mutexes by argument order (a lock-order inversion).
    const Clock::time_point begin = static_cast<const SimEvent&>(start).completed_at();
    return std::chrono::duration<float, std::milli>(completed_at() - begin).count();
  }
  Clock::time_point completed_at() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->completed_at;
  }
  const std::shared_ptr<SimEventState>& state() const { return state_; }

 private:
  std::shared_ptr<SimEventState> state_;
};

class SimStream final : public StreamImpl {
 public:
  SimStream(int device_index, double copy_bytes_per_second)
      : device_index_(device_index),
        copy_rate_(copy_bytes_per_second),
        worker_([this] { run(); }) {}

  ~SimStream() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    worker_.join();
  }

  Backend backend() const override { return Backend::kSim; }
  int device_index() const override { return device_index_; }
  void* native_handle() const override { return nullptr; }

  void copy(void* dst, const void* src, size_t bytes) override {
    if (auto capture = current_capture()) {
      SimCapture::Op op;
      op.stream = this;
      op.kind = SimCapture::Kind::kCopy;
      op.dst = dst;
      op.src = src;
      op.bytes = bytes;
      capture->add(std::move(op));
      return;
    }
    const double rate = copy_rate_;
    enqueue([dst, src, bytes, rate] {
      const auto start = Clock::now();
      std::memcpy(dst, src, bytes);
      if (rate > 0) {
        // Model a link of `rate` bytes/s: the copy takes at least bytes/rate.
        std::this_thread::sleep_until(
            start + std::chrono::duration<double>(static_cast<double>(bytes) / rate));
      }
    });
  }

  void fill_zero(void* dst, size_t bytes) override {
    host_task([dst, bytes] { std::memset(dst, 0, bytes); });
  }

  void host_task(std::function<void()> task) override {
    if (auto capture = current_capture()) {
      SimCapture::Op op;
      op.stream = this;
      op.task = std::move(task);
      capture->add(std::move(op));
      return;
    }
    enqueue(std::move(task));
  }

  void record(EventImpl& event) override {
    auto state = static_cast<SimEvent&>(require_sim(event)).state();
    if (auto capture = current_capture()) {
      SimCapture::Op op;
      op.stream = this;
      op.kind = SimCapture::Kind::kRecord;
      {
        std::lock_guard<std::mutex> lock(capture->mutex);
        op.event = capture->records++;
      }
      {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->capture = capture;
        state->capture_record = op.event;
      }
      capture->add(std::move(op));
      return;
    }
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      state->capture.reset();
      generation = ++state->recorded;
    }
    enqueue([state, generation] {
      {
        std::lock_guard<std::mutex> lock(state->mutex);
        if (generation > state->completed) {
          state->completed = generation;
          state->completed_at = Clock::now();
        }
      }
      state->done.notify_all();
    });
  }

  void wait(const EventImpl& event) override {
    auto state = static_cast<const SimEvent&>(require_sim(event)).state();
    std::shared_ptr<SimCapture> captured_in;
    int record = -1;
    uint64_t target;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      captured_in = open_capture_of(*state);
      record = state->capture_record;
      target = state->recorded;
    }
    std::shared_ptr<SimCapture> mine = current_capture();
    if (captured_in != nullptr) {
      if (mine != nullptr && mine != captured_in) {
        mine->fail("a stream of one graph capture waited on an event of another");
        throw InvalidInputError("a stream of one graph capture waited on an event of another");
      }
      if (mine == nullptr) join(captured_in);
      SimCapture::Op op;
      op.stream = this;
      op.kind = SimCapture::Kind::kWait;
      op.event = record;
      captured_in->add(std::move(op));
      return;
    }
    if (mine != nullptr && target > 0) {
      const std::string why =
          "a capturing stream waited on an event recorded outside the graph capture";
      mine->fail(why);
      throw InvalidInputError(why);
    }
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      if (state->completed >= target) return;  // nothing pending to wait for
    }
    enqueue([state, target] {
      std::unique_lock<std::mutex> lock(state->mutex);
      state->done.wait(lock, [&] { return state->completed >= target; });
    });
  }

  void synchronize() override {
    if (auto capture = current_capture()) {
      const std::string why = "a capturing stream was synchronized";
      capture->fail(why);
      throw InvalidInputError(why);
    }
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t target = enqueued_;
    idle_.wait(lock, [&] { return completed_ >= target; });
    if (error_) {
      std::exception_ptr error = std::exchange(error_, nullptr);
      std::rethrow_exception(error);
    }
  }

  bool capturing() const override { return current_capture() != nullptr; }
  void begin_capture() override {
    std::lock_guard<std::mutex> lock(mutex_);
    capture_ = std::make_shared<SimCapture>(this);
  }
  std::unique_ptr<GraphImpl> end_capture() override;

  std::shared_ptr<SimCapture> current_capture() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return capture_;
  }
  void leave_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    capture_.reset();
  }
  double copy_rate() const { return copy_rate_; }

 private:
  void join(const std::shared_ptr<SimCapture>& capture) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      capture_ = capture;
    }
    std::lock_guard<std::mutex> lock(capture->mutex);
    capture->joined.push_back(this);
  }

  template <typename E>
  static E& require_sim(E& event) {
    if (event.backend() != Backend::kSim) {
      throw InvalidInputError("a sim stream was given an event of another backend");
    }
    return event;
  }

  void enqueue(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
      ++enqueued_;
    }
    work_ready_.notify_one();
  }

  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued has run
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      std::exception_ptr error;
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error && !error_) error_ = error;
        ++completed_;
      }
      idle_.notify_all();
    }
  }

  const int device_index_;
  const double copy_rate_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> queue_;
  uint64_t enqueued_ = 0;
  uint64_t completed_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::shared_ptr<SimCapture> capture_;  // the capture this stream records into
  std::thread worker_;  // last: starts after the members it uses exist
};

// A finished capture: its operations, replayed on the launch stream (the
// origin's) and on private streams standing in for the joined ones.
class SimGraph final : public GraphImpl {
 public:
  SimGraph(std::vector<SimCapture::Op> ops, int records, SimStream* origin,
           const std::vector<SimStream*>& joined)
      : ops_(std::move(ops)), origin_(origin) {
    for (int i = 0; i < records; ++i) records_.push_back(std::make_unique<SimEvent>());
    for (SimStream* j : joined) {
      streams_[j] = std::make_unique<SimStream>(j->device_index(), j->copy_rate());
    }
  }

  void launch(StreamImpl& stream) override {
    STOWAGE_EXPECTS(stream.backend() == Backend::kSim, InvalidInputError,
                    "a sim graph was launched on a stream of another backend");
    start_.reset(new SimEvent());
    stream.record(*start_);
    for (auto& [original, own] : streams_) own->wait(*start_);
    for (const SimCapture::Op& op : ops_) {
      StreamImpl& target =
          op.stream == origin_ ? stream : static_cast<StreamImpl&>(*streams_.at(op.stream));
      switch (op.kind) {
        case SimCapture::Kind::kTask:
          target.host_task(op.task);
          break;
        case SimCapture::Kind::kCopy:
          target.copy(op.dst, op.src, op.bytes);
          break;
        case SimCapture::Kind::kRecord:
          target.record(*records_[op.event]);
          break;
        case SimCapture::Kind::kWait:
          target.wait(*records_[op.event]);
          break;
      }
    }
  }

 private:
  std::vector<SimCapture::Op> ops_;
  SimStream* origin_;  // a key: the stream that began the capture
  std::vector<std::unique_ptr<SimEvent>> records_;
  std::unique_ptr<SimEvent> start_;
  std::map<SimStream*, std::unique_ptr<SimStream>> streams_;
};

std::unique_ptr<GraphImpl> SimStream::end_capture() {
  std::shared_ptr<SimCapture> capture = current_capture();
  STOWAGE_EXPECTS(capture != nullptr && capture->origin == this, InvalidInputError,
                  "end of a graph capture on a stream that did not begin one");
  std::vector<SimStream*> joined;
  std::vector<SimCapture::Op> ops;
  std::string failure;
  int records = 0;
  {
    std::lock_guard<std::mutex> lock(capture->mutex);
    capture->active = false;
    joined = capture->joined;
    ops = std::move(capture->ops);
    failure = capture->failure;
    records = capture->records;
  }
  leave_capture();
  for (SimStream* j : joined) j->leave_capture();
  STOWAGE_EXPECTS(failure.empty(), InvalidInputError, "graph capture failed: {}", failure);
  // Every joined stream's last operation is a record the origin waits on later.
  for (SimStream* j : joined) {
    int last = -1;
    for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
      if (ops[i].stream == j) last = i;
    }
    bool rejoined = false;
    if (last >= 0 && ops[last].kind == SimCapture::Kind::kRecord) {
      for (size_t i = last + 1; i < ops.size(); ++i) {
        rejoined = rejoined || (ops[i].stream == this && ops[i].kind == SimCapture::Kind::kWait &&
                                ops[i].event == ops[last].event);
      }
    }
    STOWAGE_EXPECTS(rejoined, InvalidInputError,
                    "graph capture failed: a stream joined the capture but was not joined back "
                    "to the stream that began it");
  }
  return std::make_unique<SimGraph>(std::move(ops), records, this, joined);
}

// Host memory standing in for device memory, with the device's capacity.
class SimDeviceMemory final : public MemoryResource {
 public:
  SimDeviceMemory(Tier tier, uint64_t capacity) : tier_(tier), capacity_(capacity) {}
  Tier tier() const override { return tier_; }
  std::string name() const override { return tier_.to_string() + " memory"; }
  uint64_t in_use() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_use_;
  }
  uint64_t high() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return high_;
  }
  void reset_high() {
    std::lock_guard<std::mutex> lock(mutex_);
    high_ = in_use_;
  }
  uint64_t capacity() const { return capacity_; }

 private:
  void* do_allocate(size_t bytes, StreamRef stream) override {
    if (bytes == 0) return nullptr;
    STOWAGE_EXPECTS(!stream.capturing(), InvalidInputError,
                    "{}: a stream-ordered allocation of {} bytes during a graph capture (the "
                    "graph would hold memory outside every budget)",
                    tier_.to_string(), bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (bytes > capacity_ - in_use_) {
        throw OutOfMemoryError(
            fmt::format("{}: out of memory allocating {} bytes (capacity {} bytes, {} in use)",
                        tier_.to_string(), bytes, capacity_, in_use_));
      }
      in_use_ += bytes;
      high_ = std::max(high_, in_use_);
    }
    void* ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (ptr == nullptr) {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= bytes;
      throw OutOfMemoryError(
          fmt::format("{}: host could not back {} bytes", tier_.to_string(), bytes));
    }
    return ptr;
  }
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override {
    auto release = [this, ptr, bytes] {
      std::free(ptr);
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= bytes;
    };
    if (stream.is_null()) {
      release();
    } else if (stream.capturing()) {
      // A free recorded into a graph would run at every launch: refuse the
      // capture and keep the memory (freeing it now could let the captured
      // work read reused bytes).
      static_cast<SimStream*>(stream.impl())
          ->current_capture()
          ->fail(fmt::format("{}: {} bytes freed on a capturing stream", tier_.to_string(), bytes));
    } else {
      stream.host_task(release);
    }
  }

  Tier tier_;
  uint64_t capacity_;
  mutable std::mutex mutex_;
  uint64_t in_use_ = 0;
  uint64_t high_ = 0;
};

class SimAccelerator final : public Accelerator {
 public:
  SimAccelerator(int index, const SimOptions& options)
      : tier_(Tier::accelerator(Backend::kSim, index)),
        options_(options),
        memory_(tier_, options.memory_bytes) {}
  Tier tier() const override { return tier_; }
  std::string description() const override {
    return fmt::format("simulated accelerator ({})", tier_.to_string());
  }
  MemoryResource& memory() override { return memory_; }
  Stream create_stream() override {
    return Stream(std::make_unique<SimStream>(tier_.index(), options_.copy_bytes_per_second));
  }
  Event create_event() override { return Event(std::make_unique<SimEvent>()); }
  uint64_t total_bytes() const override { return memory_.capacity(); }
  uint64_t free_bytes() const override { return memory_.capacity() - memory_.in_use(); }
  void make_current() override {}
  void set_host_wait(HostWait) override {}  // sim waits sleep on a condition variable
  DevicePoolUsage pool_usage() const override {
    const uint64_t used = memory_.in_use(), high = memory_.high();
    return DevicePoolUsage{used, used, high, high};
  }
  void reset_pool_high_watermarks() override { memory_.reset_high(); }
  void release_cached_memory() override {}

 private:
  Tier tier_;
  SimOptions options_;
  SimDeviceMemory memory_;
};

}  // namespace

std::unique_ptr<Accelerator> make_sim_accelerator(int index, const SimOptions& options) {
  return std::make_unique<SimAccelerator>(index, options);
}

}  // namespace stowage::detail
