// A fixed team of threads that runs one task at a time on all of them: the
// host kernels split a layer's output rows across it. Threads are started by
// the constructor and joined by the destructor; no thread outlives the team.
// Between tasks the workers spin briefly (a decode step runs layers back to
// back, and a wake-up through the kernel costs tens of microseconds), then
// sleep on a condition variable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace stowage::hostcompute {

class WorkerTeam {
 public:
  // `size` >= 1 members: the thread that calls run() plus size - 1 workers.
  // Throws InvalidInputError for size < 1.
  explicit WorkerTeam(int size);
  ~WorkerTeam();
  WorkerTeam(const WorkerTeam&) = delete;
  WorkerTeam& operator=(const WorkerTeam&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls task(member) once for each member in [0, size()), member 0 on the
  // calling thread, and returns when all have returned; rethrows the first
  // exception a call threw. Thread safety: calls from several threads run one
  // after another.
  template <typename Task>
  void run(const Task& task) {
    run_erased(
        [](const void* context, int member) { (*static_cast<const Task*>(context))(member); },
        &task);
  }

 private:
  using TaskFn = void (*)(const void*, int);
  void run_erased(TaskFn fn, const void* context);
  void worker_loop(int member);
  void call(int member);

  std::mutex run_mutex_;  // one task at a time
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  TaskFn fn_ = nullptr;
  const void* context_ = nullptr;
  std::exception_ptr error_;  // under mutex_
  std::vector<std::thread> workers_;
};

}  // namespace stowage::hostcompute
