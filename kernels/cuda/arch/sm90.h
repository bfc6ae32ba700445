// PTX wrappers for sm_90 (Hopper) features the kernels use: shared-memory
// mbarriers, bulk (TMA) copies and L2 prefetches, programmatic dependent
// launch (griddepcontrol) and named barriers. Device code only, nvcc only;
// every wrapper exists only where __CUDA_ARCH__ >= 900, so a kernel that
// calls one guards its body the same way. As CUTLASS's arch/ headers: one
// place for instructions tied to an architecture, so a kernel reads as its
// algorithm and a port to another architecture has one file to change.
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900

namespace stowage::kernels::detail::sm90 {

// The 32-bit shared-window address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarriers (a 64-bit object in shared memory) ----

// Sets `bar` to expect `count` arrivals per phase. Make the initialisation
// visible (fence_mbarrier_init, then a block barrier) before any other thread
// or copy uses `bar`.
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count)
               : "memory");
}
// Orders earlier mbarrier_init calls before later uses across the cluster.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// Arrives on `bar` and adds `bytes` to the transaction count its current
// phase waits for (the bulk copies counted on it complete them).
__device__ __forceinline__ void mbarrier_expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)),
               "r"(bytes)
               : "memory");
}
// One arrival on `bar`.
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
}
// Spins until the phase of `bar` with parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  }
}

// ---- bulk copies ----

// Global -> shared bulk copy of `bytes` (a multiple of 16, both addresses
// 16-byte aligned), completing `bytes` of the transaction count of `bar`.
__device__ __forceinline__ void bulk_copy_to_shared(void* dst, const void* src, uint32_t bytes,
                                                    uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}
// Asks the L2 to fetch `bytes` (a multiple of 16, 16-byte aligned) from
// global memory; nothing reaches the block.
__device__ __forceinline__ void l2_prefetch(const void* src, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(bytes) : "memory");
}

// ---- programmatic dependent launch ----

// In a kernel launched with cudaLaunchAttributeProgrammaticStreamSerialization:
// waits until the kernel before it in the stream has completed and its
// writes are visible. A no-op for a kernel launched without the attribute.
__device__ __forceinline__ void grid_dependency_wait() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}
// Lets the next (dependent) kernel in the stream start launching; it still
// waits in grid_dependency_wait for this kernel's completion.
__device__ __forceinline__ void launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// ---- named barriers (ids 1..15; 0 is __syncthreads) ----

// Waits until kThreads threads (a multiple of 32) have reached barrier kId.
template <int kId, int kThreads>
__device__ __forceinline__ void named_barrier_sync() {
  asm volatile("bar.sync %0, %1;" ::"n"(kId), "n"(kThreads) : "memory");
}
// As named_barrier_sync with the id and count known only at run time.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
// Counts this thread's warp towards barrier kId without waiting.
template <int kId, int kThreads>
__device__ __forceinline__ void named_barrier_arrive() {
  asm volatile("bar.arrive %0, %1;" ::"n"(kId), "n"(kThreads) : "memory");
}

}  // namespace stowage::kernels::detail::sm90

#endif  // __CUDA_ARCH__ >= 900
