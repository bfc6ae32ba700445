// Collectives between the accelerators of one tensor-parallel group: the
// all-reduce that joins the ranks' partial sums after attention and after
// the MLP (parallel/tensor_parallel_runner.h). Two implementations behind
// one interface: an in-process one over simulated accelerators
// (sim_collective.h: CI tests the split, the plan and the outputs without
// GPUs), and NCCL over CUDA devices (nccl_collective.h; built where NCCL is
// found, third_party/nccl). Nothing here is home-made transport: between
// GPUs the bytes move through NCCL.
//
// Thread safety: each rank's Communicator is used by that rank's thread;
// CollectiveGroup::abort may be called from any thread at any time.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/platform.h"
#include "core/stream.h"

namespace stowage::parallel {

// One rank's end of a group.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int ranks() const = 0;
  // Enqueues on `stream` (a stream of this rank's accelerator) an in-place
  // sum over every rank of `count` floats at `data` (this rank's device
  // memory): afterwards every rank holds the same bits. Stream-ordered: the
  // host does not wait. REQUIRES: every rank enqueues the same sequence of
  // calls with the same counts (NCCL's rule). A failure (a count that differs
  // between ranks, an aborted group, an NCCL error) surfaces as DeviceError
  // naming the rank and the call at the stream's synchronize.
  virtual void all_reduce_sum(StreamRef stream, float* data, size_t count) = 0;
};

// The ranks of one group, made together (one process, one thread per rank).
class CollectiveGroup {
 public:
  virtual ~CollectiveGroup() = default;
  virtual int size() const = 0;
  // Rank r's communicator. Throws InvalidInputError outside 0 .. size() - 1.
  virtual Communicator& rank(int r) = 0;
  // Ends every collective in flight and every later one on every rank with
  // DeviceError carrying `why` (the first reason given wins): a rank that
  // failed calls it so the others never wait for it. Idempotent.
  virtual void abort(const std::string& why) = 0;
  virtual bool aborted() const = 0;
  // The first reason abort() was given; empty while not aborted.
  virtual std::string abort_reason() const = 0;
  // "sim" or "nccl <version>".
  virtual std::string description() const = 0;
};

// A group over `accelerators` (platform indices, one per rank, all
// distinct) of `platform`: in-process on sim, NCCL on CUDA. Throws
// InvalidInputError for an empty, repeated or out-of-range list, and
// DeviceError on CUDA when this build has no NCCL (naming how to get it).
std::unique_ptr<CollectiveGroup> make_collective_group(Platform& platform,
                                                       const std::vector<int>& accelerators);

// Whether this build can run collectives between CUDA devices.
bool nccl_available();

}  // namespace stowage::parallel
