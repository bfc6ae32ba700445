// CublasLtContext: the cuBLASLt state the matmuls of kernels/ use on a CUDA
// stream: a handle, a workspace, scratch memory for intermediate buffers
// (int8 activations, int32 accumulators, dequantized 4-bit weights), and per
// shape the matmul descriptor, the matrix layouts and the chosen algorithm
// (created on first use of a shape and reused, never per call). Owned by the
// caller; no global state: two contexts never share anything.
//
// Creating one is cheap and needs no GPU: CUDA resources are made on the
// first CUDA call, on the then-current device, and released by the
// destructor (which synchronizes that device's use of them). Calls on a
// sim or null stream never touch it.
//
// Thread safety: none. REQUIRES external synchronization, and all CUDA work
// given one context must be on streams of one device and must not run
// concurrently on two streams (the workspace and scratch are shared).
#pragma once

#include <cstddef>
#include <memory>

namespace stowage::kernels {

namespace detail {
struct CublasLtState;
}  // namespace detail

class CublasLtContext {
 public:
  CublasLtContext();
  ~CublasLtContext();
  CublasLtContext(CublasLtContext&&) noexcept;
  CublasLtContext& operator=(CublasLtContext&&) noexcept;
  CublasLtContext(const CublasLtContext&) = delete;
  CublasLtContext& operator=(const CublasLtContext&) = delete;

  // Matmul shapes planned so far (each holds its descriptors and algorithm).
  size_t cached_plan_count() const;

  // Internal: the CUDA state, created on first use.
  detail::CublasLtState& state();

 private:
  std::unique_ptr<detail::CublasLtState> state_;
};

}  // namespace stowage::kernels
