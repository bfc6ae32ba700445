#include "parallel/nccl_collective.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "parallel/detail/nccl_check.h"

namespace stowage::parallel {

namespace {

class NcclGroup;

class NcclRank final : public Communicator {
 public:
  NcclRank(NcclGroup& group, int rank, int device, ncclComm_t comm)
      : group_(group), rank_(rank), device_(device), comm_(comm) {}
  int rank() const override;
  int ranks() const override;
  void all_reduce_sum(StreamRef stream, float* data, size_t count) override;
  ncclComm_t comm() const { return comm_; }
  int device() const { return device_; }

 private:
  NcclGroup& group_;
  const int rank_;
  const int device_;
  ncclComm_t comm_;
};

class NcclGroup final : public CollectiveGroup {
 public:
  explicit NcclGroup(const std::vector<int>& devices) {
    std::vector<ncclComm_t> comms(devices.size());
    STOWAGE_CUDA_TRY_FOR(
        ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
        "making NCCL communicators for {} CUDA devices", devices.size());
    for (size_t r = 0; r < devices.size(); ++r) {
      ranks_.push_back(
          std::make_unique<NcclRank>(*this, static_cast<int>(r), devices[r], comms[r]));
    }
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclGroup() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    watchdog_.join();
    for (auto& r : ranks_) {
      cudaSetDevice(r->device());
      if (aborted()) continue;  // ncclCommAbort freed them
      ncclCommDestroy(r->comm());
    }
  }
  int size() const override { return static_cast<int>(ranks_.size()); }
  Communicator& rank(int r) override {
    STOWAGE_EXPECTS(r >= 0 && r < size(), InvalidInputError,
                    "rank {} requested, but the group has {} ranks", r, size());
    return *ranks_[static_cast<size_t>(r)];
  }
  void abort(const std::string& why) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!reason_.empty()) return;
      reason_ = why.empty() ? "aborted" : why;
      aborted_ = true;
    }
    // Ends the kernels in flight: a rank blocked in a stream synchronize
    // waiting for a peer that will never come returns with an error.
    for (auto& r : ranks_) ncclCommAbort(r->comm());
    wake_.notify_all();
  }
  bool aborted() const override { return aborted_.load(); }
  std::string abort_reason() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return reason_;
  }
  std::string description() const override { return "NCCL " + nccl_version(); }

 private:
  // Polls each communicator's asynchronous error (a failure of a peer or of
  // the transport) and aborts the group with it.
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_ && !aborted_) {
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      if (stopping_ || aborted_) break;
      for (auto& r : ranks_) {
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(r->comm(), &async) != ncclSuccess || async == ncclSuccess ||
            async == ncclInProgress) {
          continue;
        }
        const std::string why =
            fmt::format("rank {} (cuda:{}): NCCL reported {}: {}", r->rank(), r->device(),
                        static_cast<int>(async), ncclGetErrorString(async));
        lock.unlock();
        abort(why);
        return;
      }
    }
  }

  std::vector<std::unique_ptr<NcclRank>> ranks_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::string reason_;
  std::atomic<bool> aborted_{false};
  bool stopping_ = false;
  std::thread watchdog_;

  friend class NcclRank;
};

int NcclRank::rank() const { return rank_; }
int NcclRank::ranks() const { return group_.size(); }

void NcclRank::all_reduce_sum(StreamRef stream, float* data, size_t count) {
  STOWAGE_EXPECTS(!stream.is_null() && stream.backend() == Backend::kCuda, InvalidInputError,
                  "rank {}: NCCL needs a CUDA stream", rank_);
  if (group_.aborted()) {
    throw DeviceError(
        fmt::format("rank {} (cuda:{}): all-reduce of {} floats refused: the group "
                    "was aborted ({})",
                    rank_, device_, count, group_.abort_reason()));
  }
  STOWAGE_CUDA_TRY_FOR(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_,
                                     static_cast<cudaStream_t>(stream.native_handle())),
                       "rank {} (cuda:{}): all-reduce of {} floats", rank_, device_, count);
}

}  // namespace

std::unique_ptr<CollectiveGroup> make_nccl_collective_group(const std::vector<int>& devices) {
  return std::make_unique<NcclGroup>(devices);
}

std::string nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  return fmt::format("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
}

}  // namespace stowage::parallel
