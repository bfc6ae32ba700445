// A memory-bound floor for the GEMV benchmarks: a kernel that only streams
// the given device arrays (16-byte no-L1-allocate loads over a grid of one
// 1024-thread block per SM, folded into a value no one reads), so a GEMV over
// the same bytes can be compared with the time reading them alone takes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace stowage::bench {

struct ReadFloorArrays {
  const void* ptr[3] = {nullptr, nullptr, nullptr};  // 16-byte aligned
  size_t bytes[3] = {0, 0, 0};  // each read in whole 16-byte units (a tail < 16 B is skipped)
};

// Reads every array once on `stream`; `sink` (device, 4 bytes) is written
// only in the impossible case that the fold hits a sentinel.
cudaError_t launch_read_floor(const ReadFloorArrays& arrays, unsigned* sink, int sms,
                              cudaStream_t stream);

}  // namespace stowage::bench
