// CublasLtContext: the cuBLASLt state the matmuls of kernels/ use on a CUDA
// stream: a handle, a workspace, scratch memory for intermediate buffers
// (int8 activations, int32 accumulators, dequantized 4-bit weights), the
// batch-1 4-bit GEMV's tile counters (8 bytes its blocks take tiles from,
// zero between calls), and per shape the matmul descriptor, the matrix
// layouts and the chosen algorithm or GEMV plan (created on first use of a
// shape and reused, never per call). Owned by the
// caller; no global state: two contexts never share anything.
//
// Creating one is cheap and needs no GPU: CUDA resources are made on the
// first CUDA call, on the then-current device, and released by the
// destructor (which synchronizes that device's use of them). Calls on a
// sim or null stream never touch it.
//
// Memory. By default the workspace (cudaMalloc) and scratch
// (cudaMallocAsync) come from the device directly. Given a MemoryResource
// (e.g. an OffloadManager's budgeted accelerator memory), both come from it
// instead, so a budget's accounting sees them: the workspace
// (workspace_bytes, allocated at the first matmul) and one scratch block
// that grows to exactly the largest *_scratch_bytes a call needed (freed
// stream-ordered when it grows). Budget exhaustion then surfaces as the
// resource's OutOfBudgetError from the matmul call.
//
// Thread safety: none. REQUIRES external synchronization, and all CUDA work
// given one context must be on streams of one device and must not run
// concurrently on two streams (the workspace, scratch and tile counters are
// shared).
#pragma once

#include <cstddef>
#include <memory>

namespace stowage {
class MemoryResource;
}  // namespace stowage

namespace stowage::kernels {

namespace detail {
struct CublasLtState;
// Frees a state; defined with the state by the backend (detail/cuda_ops.cc,
// or detail/cuda_ops_stub.cc in a build without CUDA).
struct CublasLtStateDeleter {
  void operator()(CublasLtState* state) const noexcept;
};
using CublasLtStatePtr = std::unique_ptr<CublasLtState, CublasLtStateDeleter>;
}  // namespace detail

class CublasLtContext {
 public:
  // cuBLASLt's workspace when none is given: 32 MiB.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  CublasLtContext();
  // Workspace and scratch from `memory` (nullptr: the device directly), which
  // must be memory of the device the context runs on and outlive the
  // context. workspace_bytes may be 0 (cuBLASLt then picks algorithms that
  // need none).
  explicit CublasLtContext(MemoryResource* memory, size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~CublasLtContext();
  CublasLtContext(CublasLtContext&&) noexcept;
  CublasLtContext& operator=(CublasLtContext&&) noexcept;
  CublasLtContext(const CublasLtContext&) = delete;
  CublasLtContext& operator=(const CublasLtContext&) = delete;

  // Matmul shapes planned so far (each holds its descriptors and algorithm).
  size_t cached_plan_count() const;
  MemoryResource* memory() const { return memory_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Internal: the CUDA state, created on first use.
  detail::CublasLtState& state();

 private:
  MemoryResource* memory_ = nullptr;
  size_t workspace_bytes_ = kDefaultWorkspaceBytes;
  detail::CublasLtStatePtr state_;
};

}  // namespace stowage::kernels
