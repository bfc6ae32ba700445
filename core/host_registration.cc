#include "core/host_registration.h"

#include <utility>

namespace stowage {

HostRegistration::HostRegistration(const void* data, size_t bytes,
                                   std::function<void()> unregister)
    : data_(data), bytes_(bytes), unregister_(std::move(unregister)) {}

HostRegistration::HostRegistration(HostRegistration&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      unregister_(std::move(other.unregister_)) {
  other.unregister_ = nullptr;
}

HostRegistration& HostRegistration::operator=(HostRegistration&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    unregister_ = std::move(other.unregister_);
    other.unregister_ = nullptr;
  }
  return *this;
}

HostRegistration::~HostRegistration() { reset(); }

void HostRegistration::reset() {
  if (unregister_) {
    std::function<void()> undo = std::move(unregister_);
    unregister_ = nullptr;
    undo();
  }
  data_ = nullptr;
  bytes_ = 0;
}

}  // namespace stowage
