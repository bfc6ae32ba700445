#include "parallel/sim_collective.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace stowage::parallel {

class SimCollectiveGroup::Rank final : public Communicator {
 public:
  Rank(SimCollectiveGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int ranks() const override { return group_.size(); }
  void all_reduce_sum(StreamRef stream, float* data, size_t count) override {
    STOWAGE_EXPECTS(!stream.is_null() && stream.backend() == Backend::kSim, InvalidInputError,
                    "rank {}: the in-process collective needs a simulated accelerator's stream",
                    rank_);
    stream.host_task([this, data, count] { group_.all_reduce(rank_, data, count); });
  }

 private:
  SimCollectiveGroup& group_;
  const int rank_;
};

SimCollectiveGroup::SimCollectiveGroup(int ranks, SimCollectiveOptions options)
    : options_(std::move(options)) {
  STOWAGE_EXPECTS(ranks >= 1, InvalidInputError,
                  "a collective group needs at least 1 rank, "
                  "found {}",
                  ranks);
  for (int r = 0; r < ranks; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r));
  buffers_.assign(static_cast<size_t>(ranks), nullptr);
  counts_.assign(static_cast<size_t>(ranks), 0);
}

SimCollectiveGroup::~SimCollectiveGroup() = default;

Communicator& SimCollectiveGroup::rank(int r) {
  STOWAGE_EXPECTS(r >= 0 && r < size(), InvalidInputError,
                  "rank {} requested, but the group has {} ranks", r, size());
  return *ranks_[static_cast<size_t>(r)];
}

void SimCollectiveGroup::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (abort_reason_.empty()) abort_reason_ = why.empty() ? "aborted" : why;
  }
  changed_.notify_all();
}

bool SimCollectiveGroup::aborted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !abort_reason_.empty();
}

std::string SimCollectiveGroup::abort_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return abort_reason_;
}

uint64_t SimCollectiveGroup::completed_calls() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return generation_;
}

void SimCollectiveGroup::all_reduce(int rank, float* data, size_t count) {
  const size_t n = ranks_.size();
  std::unique_lock<std::mutex> lock(mutex_);
  auto aborted_error = [&] {
    return DeviceError(
        fmt::format("rank {}: all-reduce {} of {} floats ended: the group was "
                    "aborted ({})",
                    rank, generation_, count, abort_reason_));
  };
  if (!abort_reason_.empty()) throw aborted_error();
  if (options_.fail && options_.fail(rank, generation_)) {
    const std::string why =
        fmt::format("rank {}: all-reduce {} of {} floats failed (injected collective fault)", rank,
                    generation_, count);
    if (abort_reason_.empty()) abort_reason_ = why;
    lock.unlock();
    changed_.notify_all();
    throw DeviceError(why);
  }
  const uint64_t generation = generation_;
  buffers_[static_cast<size_t>(rank)] = data;
  counts_[static_cast<size_t>(rank)] = count;
  if (++arrived_ < static_cast<int>(n)) {
    changed_.wait(lock, [&] { return generation_ != generation || !abort_reason_.empty(); });
    if (generation_ == generation) throw aborted_error();
    return;
  }
  // The last rank in: every rank's buffer is ready (each call is ordered
  // after its stream's earlier work).
  // Named in rank order, whichever rank came in last, so the message is the
  // same on every run.
  if (std::any_of(counts_.begin(), counts_.end(), [&](size_t c) { return c != count; })) {
    std::string counts;
    for (size_t r = 0; r < n; ++r) {
      counts += fmt::format("{}rank {} reduces {} floats", r == 0 ? "" : ", ", r, counts_[r]);
    }
    const std::string why =
        fmt::format("all-reduce {}: the ranks' calls differ: {}", generation_, counts);
    abort_reason_ = why;
    lock.unlock();
    changed_.notify_all();
    throw DeviceError(why);
  }
  std::vector<float> sum(buffers_[0], buffers_[0] + count);
  for (size_t r = 1; r < n; ++r) {
    const float* b = buffers_[r];
    for (size_t i = 0; i < count; ++i) sum[i] += b[i];
  }
  for (size_t r = 0; r < n; ++r) std::copy(sum.begin(), sum.end(), buffers_[r]);
  arrived_ = 0;
  ++generation_;
  lock.unlock();
  changed_.notify_all();
}

}  // namespace stowage::parallel
