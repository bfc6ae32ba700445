// Programmatic dependent launch (PDL, sm_90 and later) for the decode
// step's kernels: a kernel launched through launch_dependent() may start
// while the kernel before it in the stream ends, and waits for that kernel
// (its completion and the visibility of its writes) in
// wait_for_prior_kernels() before it touches anything earlier work wrote or
// reads. The kernel before lets it start early by calling
// allow_dependent_launch() (once every one of its blocks has, or has ended).
// A decode step is a chain of short kernels, so this hides most of each
// launch gap and the ramp of the next GEMV: its blocks ask the L2 for their
// first weight bytes (prefetch_to_l2, safe before the wait: a prefetch
// moves nothing into the block, and the L2 is coherent for every writer)
// while the kernel before drains. Stream capture turns these launches into
// programmatic edges of the graph, so replay keeps the overlap.
//
// Rules for a kernel launched this way: every thread calls
// wait_for_prior_kernels() before its first read of memory that earlier
// work in the stream may write (activations, positions, caches) and before
// its first write of global memory, and no block returns before the call (a
// grid ends only after it has waited, so the next kernel's wait covers every
// kernel before). Elsewhere (older GPUs, STOWAGE_PDL=0) the launch is an
// ordinary one and the calls do nothing.
//
// nvcc only; host and device code of kernels/cuda/*.cu.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernels/cuda/arch/sm90.h"

namespace stowage::kernels::detail {

// Waits for the kernels before this one in the stream (a no-op in a kernel
// not launched as a programmatic dependent, or before sm_90).
__device__ __forceinline__ void wait_for_prior_kernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::grid_dependency_wait();
#endif
}

// Lets the next kernel in the stream, if launched as a programmatic
// dependent, start once every block of this one has called this (or ended).
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::launch_dependents();
#endif
}

// Asks the L2 for `bytes` (a multiple of 16) at `p` (16-byte aligned);
// nothing on older GPUs.
__device__ __forceinline__ void prefetch_to_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  sm90::l2_prefetch(p, bytes);
#endif
}

// Whether kernels launched now on the current device may be programmatic
// dependents: compute capability 9.0 or later, and the environment variable
// STOWAGE_PDL is not "0" (read once per process; "0" gives ordinary
// launches, for comparison). Cached per device.
inline bool dependent_launch_allowed() {
  static const bool disabled = [] {
    const char* v = std::getenv("STOWAGE_PDL");
    return v != nullptr && std::strcmp(v, "0") == 0;
  }();
  if (disabled) return false;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();  // the launch that follows reports the failure itself
    return false;
  }
  constexpr int kDevices = 64;
  // 0: not asked yet, 1: no, 2: yes.
  static std::atomic<int> known[kDevices];
  if (device >= 0 && device < kDevices) {
    const int k = known[device].load(std::memory_order_relaxed);
    if (k != 0) return k == 2;
  }
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const bool allowed = major >= 9;
  if (device >= 0 && device < kDevices) {
    known[device].store(allowed ? 2 : 1, std::memory_order_relaxed);
  }
  return allowed;
}

// Where allowed, makes the launch `config` describes a programmatic
// dependent: appends the attribute at attributes[config.numAttrs] and points
// config.attrs at `attributes`, which holds config's other attributes first
// and has room for one more.
inline void allow_programmatic_start(cudaLaunchConfig_t& config, cudaLaunchAttribute* attributes) {
  if (!dependent_launch_allowed()) return;
  cudaLaunchAttribute& a = attributes[config.numAttrs];
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attributes;
  config.numAttrs += 1;
}

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent
// of the kernel before it where allowed. Returns the launch's status.
template <typename... Params, typename... Args>
cudaError_t launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attributes[1];
  allow_programmatic_start(config, attributes);
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace stowage::kernels::detail
