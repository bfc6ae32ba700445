// The collective over CUDA devices of one host through NCCL: one
// communicator per rank, made together with ncclCommInitAll (one process,
// one thread per rank), each all-reduce an ncclAllReduce on the rank's
// stream. Built only where NCCL is found (third_party/nccl).
//
// No rank waits forever for another: abort() (a rank failed on the host:
// out of memory, a bad input) calls ncclCommAbort on every communicator,
// which ends the kernels in flight, and a watchdog thread polls each
// communicator's asynchronous error (a peer's NCCL failure) and aborts the
// group with it.
//
// Thread safety: as collective.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/collective.h"

namespace stowage::parallel {

// `devices`: the CUDA device of each rank (distinct). Throws DeviceError
// naming NCCL's error when the communicators cannot be made.
std::unique_ptr<CollectiveGroup> make_nccl_collective_group(const std::vector<int>& devices);

// NCCL's version as "2.32.6".
std::string nccl_version();

}  // namespace stowage::parallel
