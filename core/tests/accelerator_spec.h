// A fixture for specifications that every backend present must meet: the
// simulated accelerator always, CUDA where a GPU is visible (skipped
// otherwise). Derive one fixture per suite and instantiate it with
// kAllBackends and backend_name.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/platform.h"

namespace stowage::testing_support {

class AcceleratorSpec : public ::testing::TestWithParam<DeviceChoice> {
 protected:
  void SetUp() override {
    if (GetParam() == DeviceChoice::kCuda && !cuda_device_available()) {
      GTEST_SKIP() << "no CUDA GPU visible";
    }
    platform_ = Platform::create(GetParam());
  }
  Accelerator& accelerator() { return platform_->accelerator(0); }
  std::unique_ptr<Platform> platform_;
};

inline const auto kAllBackends = ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda);

inline std::string backend_name(const ::testing::TestParamInfo<DeviceChoice>& info) {
  return info.param == DeviceChoice::kSim ? "Sim" : "Cuda";
}

}  // namespace stowage::testing_support
