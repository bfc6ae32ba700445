// The in-process collective over simulated accelerators: each all-reduce
// is a host task on the rank's stream that meets the other ranks' at a
// rendezvous, where the last rank to arrive sums the ranks' buffers in rank
// order (0, 1, ...) and writes the sum to every rank. Every rank gets the
// same bits, so ranks that choose tokens from the reduced logits agree.
//
// A fault seam, as LevelDB's Env: SimCollectiveOptions::fail lets a test
// make one rank's n-th call fail as an NCCL error would, to check that the
// whole group ends with a clear error and no rank hangs.
//
// Thread safety: as collective.h.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/collective.h"

namespace stowage::parallel {

struct SimCollectiveOptions {
  // Called with (rank, call ordinal of that rank from 0) before each call
  // joins the rendezvous; true makes the call fail with DeviceError (and
  // abort the group). Empty: no faults.
  std::function<bool(int rank, uint64_t call)> fail;
};

class SimCollectiveGroup final : public CollectiveGroup {
 public:
  // `ranks` >= 1 ranks. Throws InvalidInputError otherwise.
  explicit SimCollectiveGroup(int ranks, SimCollectiveOptions options = {});
  ~SimCollectiveGroup() override;

  int size() const override { return static_cast<int>(ranks_.size()); }
  Communicator& rank(int r) override;
  void abort(const std::string& why) override;
  bool aborted() const override;
  std::string abort_reason() const override;
  std::string description() const override { return "in-process (sim)"; }

  // Calls completed by every rank so far.
  uint64_t completed_calls() const;

 private:
  class Rank;
  // Blocks until every rank has arrived with its call (or the group is
  // aborted: DeviceError); the last to arrive reduces.
  void all_reduce(int rank, float* data, size_t count);

  SimCollectiveOptions options_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t generation_ = 0;  // calls completed by every rank
  std::vector<float*> buffers_;
  std::vector<size_t> counts_;
  int arrived_ = 0;
  std::string abort_reason_;
};

}  // namespace stowage::parallel
