// The host linear kernels (models/linear.h) from several threads at once, as
// the tensor-parallel ranks on sim call them: each rank's stream thread runs
// its own layers' products at the same time as the others'.
//
// Seed lesson: OpenBLAS's serial library (Debian 0.3.21, @openblas) hands two
// threads in sgemm or sgemv at once the same buffer now and then (its
// allocator claims a buffer outside its lock), and both compute garbage;
// parallel/tensor_parallel_test failed at 4 ranks now and then from it. Many
// small products back to back on several threads make that window wide: each
// call is mostly the allocation. Without the lock in models/linear_host.cc
// both cases failed in each of 10 runs here (2 cores).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/tier.h"
#include "models/linear.h"

namespace stowage::models {
namespace {

struct ProductShape {
  const char* name;
  int64_t batch, out, in;
};

void PrintTo(const ProductShape& s, std::ostream* os) {
  *os << s.name << " [" << s.batch << ", " << s.in << "] x [" << s.out << ", " << s.in << "]^T";
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = uniform(rng);
  return v;
}

class HostLinearFromThreads : public ::testing::TestWithParam<ProductShape> {};

TEST_P(HostLinearFromThreads, CallsAtOnceGiveTheBitsOfACallAlone) {
  const ProductShape shape = GetParam();
  constexpr int kThreads = 8;
  constexpr int kCalls = 10000;
  std::vector<float> weight = random_floats(static_cast<size_t>(shape.out * shape.in), 1);
  LinearWeights w;
  w.out_features = shape.out;
  w.in_features = shape.in;
  w.weight =
      TensorView(weight.data(), DType::kF32, Shape{shape.out, shape.in}, Tier::pageable_host());
  std::unique_ptr<LinearKernels> kernels = make_host_linear_kernels();
  auto view = [&](std::vector<float>& v, int64_t cols) {
    return TensorView(v.data(), DType::kF32, Shape{shape.batch, cols}, Tier::pageable_host());
  };
  // Each thread its own input; its output computed alone first (a null
  // stream runs the kernel on the calling thread).
  std::vector<std::vector<float>> inputs, alone;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(random_floats(static_cast<size_t>(shape.batch * shape.in), 100 + t));
    alone.emplace_back(static_cast<size_t>(shape.batch * shape.out));
    kernels->linear(StreamRef(), w, view(inputs[t], shape.in), view(alone[t], shape.out), false);
  }
  std::atomic<int> ready{0};
  std::vector<int> differing(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> y(alone[t].size());
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // start together
      for (int call = 0; call < kCalls; ++call) {
        kernels->linear(StreamRef(), w, view(inputs[t], shape.in), view(y, shape.out), false);
        if (std::memcmp(y.data(), alone[t].data(), y.size() * sizeof(float)) != 0) ++differing[t];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(differing[t], 0) << "thread " << t << ": " << differing[t] << " of " << kCalls
                               << " calls gave other bits than the call alone";
  }
}

// sgemv at batch 1 (a weight wide enough that OpenBLAS takes its buffer from
// its allocator, not the stack); sgemm above it.
INSTANTIATE_TEST_SUITE_P(Products, HostLinearFromThreads,
                         ::testing::Values(ProductShape{"gemv", 1, 256, 512},
                                           ProductShape{"gemm", 8, 160, 64}),
                         [](const ::testing::TestParamInfo<ProductShape>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace stowage::models
