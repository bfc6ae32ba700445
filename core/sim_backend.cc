#include "core/detail/sim_backend.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "core/detail/backend.h"
#include "core/error.h"

namespace stowage::detail {
namespace {

using Clock = std::chrono::steady_clock;

struct SimEventState {
  std::mutex mutex;
  std::condition_variable done;
  uint64_t recorded = 0;   // generation of the last record() call
  uint64_t completed = 0;  // highest generation whose queue position ran
  Clock::time_point completed_at{};
};

class SimEvent final : public EventImpl {
 public:
  SimEvent() : state_(std::make_shared<SimEventState>()) {}
  Backend backend() const override { return Backend::kSim; }
  bool ready() const override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->completed >= state_->recorded;
  }
  void synchronize() const override {
    std::unique_lock<std::mutex> lock(state_->mutex);
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
    enqueue([dst, bytes] { std::memset(dst, 0, bytes); });
  }

  void host_task(std::function<void()> task) override { enqueue(std::move(task)); }

  void record(EventImpl& event) override {
    auto state = static_cast<SimEvent&>(require_sim(event)).state();
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
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
    uint64_t target;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      target = state->recorded;
      if (state->completed >= target) return;  // nothing pending to wait for
    }
    enqueue([state, target] {
      std::unique_lock<std::mutex> lock(state->mutex);
      state->done.wait(lock, [&] { return state->completed >= target; });
    });
  }

  void synchronize() override {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t target = enqueued_;
    idle_.wait(lock, [&] { return completed_ >= target; });
    if (error_) {
      std::exception_ptr error = std::exchange(error_, nullptr);
      std::rethrow_exception(error);
    }
  }

 private:
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
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> queue_;
  uint64_t enqueued_ = 0;
  uint64_t completed_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread worker_;  // last: starts after the members it uses exist
};

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
  void* do_allocate(size_t bytes, StreamRef) override {
    if (bytes == 0) return nullptr;
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
