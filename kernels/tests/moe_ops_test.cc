// The specification of moe_ops.h over every backend present (sim always,
// CUDA where a GPU is visible), against float64 references written here.
#include "kernels/moe_ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "kernels/tests/test_util.h"

namespace stowage::kernels {
namespace {

std::vector<float> random_floats(int64_t count, uint32_t seed, float scale = 1.0f) {
  return test_util::to_floats(test_util::random_values(DType::kF32, count, seed, scale).data(),
                              DType::kF32, count);
}

class MoeOpsOnBackend : public ::testing::TestWithParam<DeviceChoice> {
 public:
  void SetUp() override {
    if (GetParam() == DeviceChoice::kCuda && !cuda_device_available()) {
      GTEST_SKIP() << "no CUDA GPU visible";
    }
    platform_ = Platform::create(GetParam());
    stream_.emplace(platform_->accelerator(0).create_stream());
  }
  template <typename T>
  Buffer upload(const std::vector<T>& host) {
    Buffer b(platform_->accelerator(0).memory(), std::max<size_t>(host.size() * sizeof(T), 1),
             stream());
    if (!host.empty()) stream().copy(b.data(), host.data(), host.size() * sizeof(T));
    // The copy reads `host` when the stream runs it: wait, so a caller may
    // pass a temporary or free its vector right after.
    stream_->synchronize();
    return b;
  }
  template <typename T>
  std::vector<T> download(const Buffer& b, int64_t count) {
    std::vector<T> host(static_cast<size_t>(count));
    stream().copy(host.data(), b.data(), count * sizeof(T));
    stream_->synchronize();
    return host;
  }
  StreamRef stream() { return stream_->ref(); }

  std::unique_ptr<Platform> platform_;
  std::optional<Stream> stream_;
};

// The routing of transformers' MixtralTopKRouter / Qwen2MoeTopKRouter in float64:
// softmax, the top_k largest (stable by index), optionally renormalized.
void reference_route(const std::vector<float>& logits, int64_t rows, int64_t experts,
                     int64_t top_k, bool renormalize, std::vector<int32_t>& ids,
                     std::vector<double>& weights) {
  ids.clear();
  weights.clear();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> p(experts);
    double top = -INFINITY, sum = 0;
    for (int64_t e = 0; e < experts; ++e) top = std::max(top, double(logits[r * experts + e]));
    for (int64_t e = 0; e < experts; ++e) sum += p[e] = std::exp(logits[r * experts + e] - top);
    std::vector<int32_t> order(experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double chosen = 0;
    for (int64_t j = 0; j < top_k; ++j) chosen += p[order[j]] / sum;
    for (int64_t j = 0; j < top_k; ++j) {
      ids.push_back(order[j]);
      weights.push_back(p[order[j]] / sum / (renormalize ? chosen : 1.0));
    }
  }
}

TEST_P(MoeOpsOnBackend, RouteChoosesTheTopKBySoftmaxLargestFirst) {
  for (bool renormalize : {true, false}) {
    const int64_t rows = 37, experts = 60, top_k = 4;
    const std::vector<float> logits = random_floats(rows * experts, 3, 2.0f);
    Buffer d_logits = upload(logits);
    Buffer d_ids = upload(std::vector<int32_t>(rows * top_k));
    Buffer d_w = upload(std::vector<float>(rows * top_k));
    moe_route({rows, experts, top_k, renormalize, static_cast<const float*>(d_logits.data()),
               static_cast<int32_t*>(d_ids.data()), static_cast<float*>(d_w.data())},
              stream());
    std::vector<int32_t> ref_ids;
    std::vector<double> ref_w;
    reference_route(logits, rows, experts, top_k, renormalize, ref_ids, ref_w);
    const std::vector<int32_t> ids = download<int32_t>(d_ids, rows * top_k);
    const std::vector<float> w = download<float>(d_w, rows * top_k);
    EXPECT_EQ(ids, ref_ids);
    for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(w[i], ref_w[i], 1e-6) << i;
  }
}

TEST_P(MoeOpsOnBackend, RouteBreaksTiesTowardTheLowerExpertAndNeverPicksNaN) {
  const std::vector<float> logits = {1.0f, NAN, 1.0f, 1.0f, 0.5f, 1.0f};
  Buffer d_logits = upload(logits);
  Buffer d_ids = upload(std::vector<int32_t>(3));
  Buffer d_w = upload(std::vector<float>(3));
  moe_route({1, 6, 3, false, static_cast<const float*>(d_logits.data()),
             static_cast<int32_t*>(d_ids.data()), static_cast<float*>(d_w.data())},
            stream());
  const std::vector<int32_t> ids = download<int32_t>(d_ids, 3);
  // A NaN logit makes the whole softmax NaN: every p is NaN, so the order
  // falls back to the lowest experts; without NaN, ties go to the lower one.
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2}));
  const std::vector<float> tied = {1.0f, 2.0f, 1.0f, 2.0f};
  Buffer d_tied = upload(tied);
  moe_route({1, 4, 3, true, static_cast<const float*>(d_tied.data()),
             static_cast<int32_t*>(d_ids.data()), static_cast<float*>(d_w.data())},
            stream());
  EXPECT_EQ(download<int32_t>(d_ids, 3), (std::vector<int32_t>{1, 3, 0}));
}

TEST_P(MoeOpsOnBackend, AccumulateAddsTheWeightedOutputToTheRowsRoutedToTheExpert) {
  const int64_t rows = 5, hidden = 33, top_k = 2;
  const std::vector<int32_t> ids = {0, 3, 3, 1, 2, 0, 1, 2, 3, 0};
  const std::vector<float> weights = {0.6f, 0.4f, 0.7f, 0.3f, 0.5f, 0.5f, 0.9f, 0.1f, 0.2f, 0.8f};
  const std::vector<float> y = random_floats(rows * hidden, 5), out = random_floats(rows * hidden, 6);
  Buffer d_ids = upload(ids), d_w = upload(weights), d_y = upload(y), d_out = upload(out);
  moe_accumulate({rows, hidden, top_k, 3, static_cast<const int32_t*>(d_ids.data()),
                  static_cast<const float*>(d_w.data()), static_cast<const float*>(d_y.data()),
                  static_cast<float*>(d_out.data())},
                 stream());
  const std::vector<float> got = download<float>(d_out, rows * hidden);
  const float w_of_row[] = {0.4f, 0.7f, 0.0f, 0.0f, 0.2f};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < hidden; ++c) {
      // CUDA contracts out + w * y into one fused multiply-add (one rounding instead of two),
      // so the bound is a rounding of the terms' magnitude, not of a possibly cancelled sum.
      const float product = w_of_row[r] * y[r * hidden + c];
      EXPECT_NEAR(got[r * hidden + c], out[r * hidden + c] + product,
                  4e-7f * (std::fabs(out[r * hidden + c]) + std::fabs(product)));
    }
  }
}

TEST_P(MoeOpsOnBackend, SigmoidGateAddScalesEachRowBySigmoidOfItsGate) {
  const int64_t rows = 3, hidden = 17;
  const std::vector<float> gate = {-2.0f, 0.0f, 3.0f};
  const std::vector<float> y = random_floats(rows * hidden, 7), out = random_floats(rows * hidden, 8);
  Buffer d_g = upload(gate), d_y = upload(y), d_out = upload(out);
  sigmoid_gate_add({rows, hidden, static_cast<const float*>(d_g.data()),
                    static_cast<const float*>(d_y.data()), static_cast<float*>(d_out.data())},
                   stream());
  const std::vector<float> got = download<float>(d_out, rows * hidden);
  for (int64_t r = 0; r < rows; ++r) {
    const double g = 1.0 / (1.0 + std::exp(-double(gate[r])));
    for (int64_t c = 0; c < hidden; ++c) {
      EXPECT_NEAR(got[r * hidden + c], out[r * hidden + c] + g * y[r * hidden + c], 1e-6);
    }
  }
}

TEST_P(MoeOpsOnBackend, RouteRefusesTopKLargerThanTheExperts) {
  float f = 0;
  int32_t i = 0;
  EXPECT_THROW(moe_route({1, 2, 3, true, &f, &i, &f}, stream()), InvalidInputError);
}

INSTANTIATE_TEST_SUITE_P(Backends, MoeOpsOnBackend,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         [](const auto& info) {
                           return info.param == DeviceChoice::kSim ? "Sim" : "Cuda";
                         });

}  // namespace
}  // namespace stowage::kernels
