#include "core/platform.h"

#include <vector>

#include "core/detail/cuda_backend.h"
#include "core/detail/sim_backend.h"
#include "core/error.h"

namespace stowage {
namespace {

class SimPlatform final : public Platform {
 public:
  explicit SimPlatform(const SimOptions& options)
      : pinned_(Tier::pinned_host(), "pinned host memory (sim)", /*huge_pages=*/true) {
    STOWAGE_EXPECTS(options.accelerator_count >= 1, InvalidInputError,
                    "sim platform needs at least 1 accelerator, found {}",
                    options.accelerator_count);
    for (int i = 0; i < options.accelerator_count; ++i)
      accelerators_.push_back(detail::make_sim_accelerator(i, options));
  }
  Backend backend() const override { return Backend::kSim; }
  int accelerator_count() const override { return static_cast<int>(accelerators_.size()); }
  Accelerator& accelerator(int index) override { return *accelerators_.at(checked(index)); }
  MemoryResource& pinned_host_memory() override { return pinned_; }
  // Simulated copies are memcpy from any host memory: nothing to pin.
  HostRegistration register_host_memory(const void* data, size_t bytes, bool) override {
    return HostRegistration(data, bytes, {});
  }

 private:
  size_t checked(int index) const {
    STOWAGE_EXPECTS(index >= 0 && index < accelerator_count(), InvalidInputError,
                    "accelerator sim:{} requested, but the platform has {}", index,
                    accelerator_count());
    return static_cast<size_t>(index);
  }
  HostMemoryResource pinned_;
  std::vector<std::unique_ptr<Accelerator>> accelerators_;
};

class CudaPlatform final : public Platform {
 public:
  explicit CudaPlatform(int count) : pinned_(detail::make_cuda_pinned_host_memory()) {
    for (int i = 0; i < count; ++i) accelerators_.push_back(detail::make_cuda_accelerator(i));
  }
  Backend backend() const override { return Backend::kCuda; }
  int accelerator_count() const override { return static_cast<int>(accelerators_.size()); }
  Accelerator& accelerator(int index) override {
    STOWAGE_EXPECTS(index >= 0 && index < accelerator_count(), InvalidInputError,
                    "accelerator cuda:{} requested, but {} GPU(s) are visible", index,
                    accelerator_count());
    return *accelerators_[static_cast<size_t>(index)];
  }
  MemoryResource& pinned_host_memory() override { return *pinned_; }
  HostRegistration register_host_memory(const void* data, size_t bytes,
                                        bool read_only) override {
    return detail::cuda_host_register(data, bytes, read_only);
  }

 private:
  std::unique_ptr<MemoryResource> pinned_;
  std::vector<std::unique_ptr<Accelerator>> accelerators_;
};

}  // namespace

DeviceChoice parse_device_choice(const std::string& text) {
  if (text == "auto") return DeviceChoice::kAuto;
  if (text == "cuda") return DeviceChoice::kCuda;
  if (text == "sim") return DeviceChoice::kSim;
  throw InvalidInputError(fmt::format("invalid device '{}': expected auto, cuda or sim", text));
}

bool cuda_device_available() { return detail::cuda_device_count() > 0; }

std::unique_ptr<Platform> Platform::create(DeviceChoice choice, const SimOptions& sim) {
  const int gpus = choice == DeviceChoice::kSim ? 0 : detail::cuda_device_count();
  if (choice == DeviceChoice::kCuda && gpus == 0) {
    throw DeviceError(
        "--device cuda requested, but no CUDA GPU is visible (or this build has no CUDA support)");
  }
  if (gpus > 0) return std::make_unique<CudaPlatform>(gpus);
  return std::make_unique<SimPlatform>(sim);
}

}  // namespace stowage
