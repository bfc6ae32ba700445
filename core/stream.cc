#include "core/stream.h"

#include <cstring>

#include "core/detail/backend.h"
#include "core/error.h"

namespace stowage {

Event::Event() = default;
Event::Event(std::unique_ptr<detail::EventImpl> impl) : impl_(std::move(impl)) {}
Event::Event(Event&&) noexcept = default;
Event& Event::operator=(Event&&) noexcept = default;
Event::~Event() = default;

bool Event::ready() const { return impl_ == nullptr || impl_->ready(); }
void Event::synchronize() const {
  if (impl_ != nullptr) impl_->synchronize();
}
float Event::elapsed_ms(const Event& start, const Event& end) {
  STOWAGE_EXPECTS(start.valid() && end.valid() && start.impl_->backend() == end.impl_->backend(),
                  InvalidInputError, "elapsed_ms needs two valid events of one backend");
  return end.impl_->elapsed_ms_since(*start.impl_);
}

namespace {
detail::StreamImpl& require(detail::StreamImpl* impl, const char* what) {
  if (impl == nullptr)
    throw InvalidInputError(fmt::format("{} needs a stream, found a null StreamRef", what));
  return *impl;
}
}  // namespace

Backend StreamRef::backend() const { return require(impl_, "backend()").backend(); }
int StreamRef::device_index() const { return require(impl_, "device_index()").device_index(); }
Tier StreamRef::tier() const { return Tier::accelerator(backend(), device_index()); }
void* StreamRef::native_handle() const {
  return impl_ == nullptr ? nullptr : impl_->native_handle();
}

void StreamRef::copy(void* dst, const void* src, size_t bytes) const {
  if (bytes == 0) return;
  if (impl_ == nullptr) {
    std::memcpy(dst, src, bytes);
    return;
  }
  impl_->copy(dst, src, bytes);
}

void StreamRef::fill_zero(void* dst, size_t bytes) const {
  if (bytes == 0) return;
  if (impl_ == nullptr) {
    std::memset(dst, 0, bytes);
    return;
  }
  impl_->fill_zero(dst, bytes);
}

void StreamRef::host_task(std::function<void()> task) const {
  if (impl_ == nullptr) {
    task();
    return;
  }
  impl_->host_task(std::move(task));
}

void StreamRef::record(Event& event) const {
  STOWAGE_EXPECTS(event.valid(), InvalidInputError, "record() needs a valid event");
  require(impl_, "record()").record(*event.impl());
}

void StreamRef::wait(const Event& event) const {
  if (!event.valid()) return;
  require(impl_, "wait()").wait(*event.impl());
}

void StreamRef::synchronize() const {
  if (impl_ != nullptr) impl_->synchronize();
}

bool StreamRef::capturing() const { return impl_ != nullptr && impl_->capturing(); }

Stream::Stream() = default;
Stream::Stream(std::unique_ptr<detail::StreamImpl> impl) : impl_(std::move(impl)) {}
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&&) noexcept = default;
Stream::~Stream() = default;

}  // namespace stowage
