// Helpers for the offload tests: a backend-parameterized fixture (sim always,
// CUDA where a GPU is visible), deterministic host tensors, byte reads.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/platform.h"
#include "core/tensor.h"
#include "offload/offload_manager.h"

namespace stowage::testing_support {

inline std::string backend_name(const ::testing::TestParamInfo<DeviceChoice>& info) {
  return info.param == DeviceChoice::kCuda ? "Cuda" : "Sim";
}

// A pageable host tensor of `dtype` and `shape` filled with bytes from `seed`.
inline Tensor host_tensor(Platform& platform, DType dtype, Shape shape, uint32_t seed) {
  Tensor t = Tensor::empty(platform.pageable_host_memory(), dtype, std::move(shape));
  std::mt19937 rng(seed);
  auto* bytes = static_cast<unsigned char*>(t.data());
  for (uint64_t i = 0; i < t.bytes(); ++i) bytes[i] = static_cast<unsigned char>(rng());
  return t;
}

inline std::vector<unsigned char> bytes_of(const Tensor& host) {
  const auto* p = static_cast<const unsigned char*>(host.data());
  return std::vector<unsigned char>(p, p + host.bytes());
}

// A fresh empty folder under the test's temporary directory.
inline std::string temp_folder(const std::string& name) {
  std::string pattern = ::testing::TempDir() + "/" + name + "XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  const char* made = ::mkdtemp(buffer.data());
  return made == nullptr ? ::testing::TempDir() : std::string(made);
}

// Sim always; CUDA skipped without a GPU. Makes the platform in SetUp.
class BackendTest : public ::testing::TestWithParam<DeviceChoice> {
 protected:
  void SetUp() override {
    if (GetParam() == DeviceChoice::kCuda && !cuda_device_available()) {
      GTEST_SKIP() << "no CUDA GPU visible";
    }
    platform_ = Platform::create(GetParam(), sim_options());
  }
  virtual SimOptions sim_options() const { return SimOptions{}; }
  Tier acc(int i = 0) { return platform_->accelerator(i).tier(); }
  std::unique_ptr<Platform> platform_;
};

}  // namespace stowage::testing_support
