// Helpers for the offload tests: a backend-parameterized fixture (sim always,
// CUDA where a GPU is visible), deterministic host tensors, byte reads.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <map>
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

// A stack of layers, each a u8 weight and an f32 bias with distinct bytes.
struct Model {
  std::vector<std::string> modules;
  std::map<std::string, Tensor> tensors;  // "layers.i.weight" -> host source
  uint64_t bytes = 0;
};

inline Model make_model(Platform& platform, const std::string& prefix, int layers,
                        int64_t weight_bytes, uint32_t seed = 1) {
  Model m;
  for (int i = 0; i < layers; ++i) {
    const std::string module = prefix + "." + std::to_string(i);
    m.modules.push_back(module);
    m.tensors[module + ".weight"] =
        host_tensor(platform, DType::kU8, Shape{weight_bytes}, seed * 1000 + 2 * i);
    m.tensors[module + ".bias"] =
        host_tensor(platform, DType::kF32, Shape{16}, seed * 1000 + 2 * i + 1);
    m.bytes += weight_bytes + 64;
  }
  return m;
}

inline void place_model(OffloadManager& manager, const Model& m,
                        const std::map<std::string, Tier>& where) {
  for (const std::string& module : m.modules) {
    const Tier tier = where.at(module);
    manager.place(module, "weight", TensorRole::kWeight, m.tensors.at(module + ".weight"), tier);
    manager.place(module, "bias", TensorRole::kBias, m.tensors.at(module + ".bias"), tier);
  }
}

inline std::map<std::string, Tier> all_on(const Model& m, Tier tier) {
  std::map<std::string, Tier> out;
  for (const auto& module : m.modules) out.insert_or_assign(module, tier);
  return out;
}

// The bytes each forward saw: the "forward" of a module copies its weight
// and bias out of the views on the compute stream, so it reads exactly what
// the slot holds when the compute stream gets there.
inline std::vector<unsigned char> stream_forward(OffloadManager& manager, Platform& platform,
                                                 const Model& m, StreamRef compute = {}) {
  uint64_t total = 0;
  for (const auto& [name, t] : m.tensors) total += t.bytes();
  Buffer out(platform.pinned_host_memory(), total);
  uint64_t offset = 0;
  StreamRef used;
  for (const std::string& module : m.modules) {
    ModuleForward fwd = manager.begin_forward(module, compute);
    used = fwd.compute_stream;
    for (const char* name : {"bias", "weight"}) {
      const TensorView* view = fwd.find(name);
      EXPECT_NE(view, nullptr) << module << "." << name;
      if (view == nullptr) continue;
      fwd.compute_stream.copy(static_cast<char*>(out.data()) + offset, view->data(), view->bytes());
      offset += view->bytes();
    }
    manager.end_forward(module, compute);
  }
  used.synchronize();
  const auto* p = static_cast<const unsigned char*>(out.data());
  return std::vector<unsigned char>(p, p + offset);
}

inline std::vector<unsigned char> expected_forward(const Model& m) {
  std::vector<unsigned char> out;
  for (const std::string& module : m.modules) {
    for (const char* name : {"bias", "weight"}) {
      const auto b = bytes_of(m.tensors.at(module + "." + name));
      out.insert(out.end(), b.begin(), b.end());
    }
  }
  return out;
}

}  // namespace stowage::testing_support
