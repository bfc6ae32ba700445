#include "hostcompute/worker_team.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"

namespace stowage::hostcompute {
namespace {

// Pauses a worker polls for the next task before it sleeps: about 10 us to
// 0.1 ms, by the CPU's pause latency.
constexpr int kSpins = 2000;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

WorkerTeam::WorkerTeam(int size) {
  STOWAGE_EXPECTS(size >= 1, InvalidInputError,
                  "host worker team: expected at least 1 thread, found {}", size);
  workers_.reserve(static_cast<size_t>(size - 1));
  for (int member = 1; member < size; ++member) {
    workers_.emplace_back([this, member] { worker_loop(member); });
  }
}

WorkerTeam::~WorkerTeam() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
  }
  start_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void WorkerTeam::call(int member) {
  try {
    fn_(context_, member);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void WorkerTeam::worker_loop(int member) {
  uint64_t seen = 0;
  for (;;) {
    for (int spin = 0; spin < kSpins && generation_.load(std::memory_order_acquire) == seen &&
                       !stop_.load(std::memory_order_acquire);
         ++spin) {
      cpu_relax();
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] {
        return generation_.load(std::memory_order_acquire) != seen ||
               stop_.load(std::memory_order_acquire);
      });
    }
    if (generation_.load(std::memory_order_acquire) == seen) return;  // stopped, no task
    seen = generation_.load(std::memory_order_acquire);
    call(member);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Taking the mutex orders this notify after the caller's predicate check.
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

void WorkerTeam::run_erased(TaskFn fn, const void* context) {
  std::lock_guard<std::mutex> serial(run_mutex_);
  fn_ = fn;
  context_ = context;
  error_ = nullptr;
  if (!workers_.empty()) {
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    start_.notify_all();
  }
  call(0);
  if (!workers_.empty()) {
    for (int spin = 0; spin < kSpins && pending_.load(std::memory_order_acquire) != 0; ++spin) {
      cpu_relax();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
  }
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace stowage::hostcompute
