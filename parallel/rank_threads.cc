#include "parallel/rank_threads.h"

#include <fmt/format.h>

#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace stowage::parallel {
namespace {

struct RankFailure {
  int rank = -1;
  ErrorKind kind = ErrorKind::kInternal;
  std::string what;
};

[[noreturn]] void throw_of_kind(ErrorKind kind, const std::string& message) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
      throw InvalidInputError(message);
    case ErrorKind::kOutOfBudget:
      throw OutOfBudgetError(message);
    case ErrorKind::kOutOfMemory:
      throw OutOfMemoryError(message);
    case ErrorKind::kDevice:
      throw DeviceError(message);
    case ErrorKind::kIo:
      throw IoError(message);
    case ErrorKind::kInternal:
      break;
  }
  throw InternalError(message);
}

}  // namespace

void run_on_ranks(const std::vector<std::string>& names, CollectiveGroup* group,
                  const std::function<void(int rank)>& fn) {
  const int n = static_cast<int>(names.size());
  std::mutex mutex;
  std::vector<RankFailure> failures;  // in the order they happened
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      RankFailure failure;
      try {
        fn(r);
        return;
      } catch (const Error& e) {
        failure = {r, e.kind(), e.what()};
      } catch (const std::exception& e) {
        failure = {r, ErrorKind::kInternal, e.what()};
      }
      {
        std::lock_guard<std::mutex> lock(mutex);
        failures.push_back(failure);
      }
      if (group != nullptr) {
        group->abort(
            fmt::format("rank {} ({}) failed: {}", r, names[static_cast<size_t>(r)], failure.what));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (failures.empty()) return;
  // The cause: the failure the group was aborted with (a collective's own
  // failure aborts it before its rank's thread sees it), else the first.
  size_t cause = 0;
  const std::string reason = group != nullptr ? group->abort_reason() : std::string();
  for (size_t i = 0; i < failures.size(); ++i) {
    if (!reason.empty() && reason.find(failures[i].what) != std::string::npos) {
      cause = i;
      break;
    }
  }
  const RankFailure& first = failures[cause];
  std::string others;
  for (size_t i = 0; i < failures.size(); ++i) {
    if (i == cause) continue;
    others += fmt::format("{}rank {}: {}", others.empty() ? "" : "; ", failures[i].rank,
                          failures[i].what);
  }
  throw_of_kind(first.kind,
                fmt::format("tensor-parallel rank {} of {} ({}) failed: {}; every rank stopped{}",
                            first.rank, n, names[static_cast<size_t>(first.rank)], first.what,
                            others.empty() ? "" : fmt::format(" ({})", others)));
}

}  // namespace stowage::parallel
