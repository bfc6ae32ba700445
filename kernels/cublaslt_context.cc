#include "kernels/cublaslt_context.h"

#include "kernels/detail/cuda_ops.h"

namespace stowage::kernels {

CublasLtContext::CublasLtContext() = default;
CublasLtContext::CublasLtContext(MemoryResource* memory, size_t workspace_bytes)
    : memory_(memory), workspace_bytes_(workspace_bytes) {}
CublasLtContext::~CublasLtContext() = default;
CublasLtContext::CublasLtContext(CublasLtContext&&) noexcept = default;
CublasLtContext& CublasLtContext::operator=(CublasLtContext&&) noexcept = default;

size_t CublasLtContext::cached_plan_count() const {
  return state_ == nullptr ? 0 : detail::cached_plan_count(*state_);
}

detail::CublasLtState& CublasLtContext::state() {
  if (state_ == nullptr) state_ = detail::make_cublaslt_state(memory_, workspace_bytes_);
  return *state_;
}

}  // namespace stowage::kernels
