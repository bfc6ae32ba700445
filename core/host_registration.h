// Host memory allocated elsewhere (a shared-memory segment, a file mapping)
// registered with an accelerator platform so that copies from it run at the
// pinned rate: cudaHostRegister on CUDA, nothing on the simulated
// accelerator (its "pinned" memory is ordinary host memory already).
//
// HostRegistration owns one registration and undoes it in its destructor
// (cudaHostUnregister). Move-only. The memory must stay mapped while the
// registration lives, and no copy from it may be in flight when it ends.
//
// Thread safety: distinct objects may be used from several threads; one
// object REQUIRES external synchronization.
#pragma once

#include <cstddef>
#include <functional>

namespace stowage {

class HostRegistration {
 public:
  HostRegistration() = default;
  // `unregister` (may be empty) runs once, when the registration ends.
  HostRegistration(const void* data, size_t bytes, std::function<void()> unregister);
  HostRegistration(HostRegistration&& other) noexcept;
  HostRegistration& operator=(HostRegistration&& other) noexcept;
  HostRegistration(const HostRegistration&) = delete;
  HostRegistration& operator=(const HostRegistration&) = delete;
  ~HostRegistration();

  const void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  bool active() const { return data_ != nullptr; }
  // Ends the registration now (a no-op when none is held).
  void reset();

 private:
  const void* data_ = nullptr;
  size_t bytes_ = 0;
  std::function<void()> unregister_;
};

}  // namespace stowage
