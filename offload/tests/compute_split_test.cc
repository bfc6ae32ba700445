// choose_compute_split: the balance of link and host time, the interleaving,
// and the cases where everything streams.
#include "offload/compute_split.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace stowage {
namespace {

std::vector<SplitCandidate> layers(int n, uint64_t bytes) {
  std::vector<SplitCandidate> out;
  for (int i = 0; i < n; ++i) out.push_back({"model.layers." + std::to_string(i), bytes, true});
  return out;
}

// The H100 host's rates of the issue: a 51 GB/s link beside a host that
// reads at 95 GB/s takes about 95 / (51 + 95) of the bytes on the host, and
// the step takes the balanced time, well under streaming alone.
TEST(ComputeSplit, BalancesTheTwoPathsByTheirRates) {
  const ComputeRates rates{51e9, 95e9};
  const ComputeSplit s = choose_compute_split(layers(24, 436 << 20), rates);
  const double host_share = static_cast<double>(s.host_bytes) / (s.host_bytes + s.streamed_bytes);
  EXPECT_NEAR(host_share, 95.0 / (51 + 95), 0.05);
  const double balanced = 24.0 * (436 << 20) / (51e9 + 95e9);
  EXPECT_LT(s.estimated_seconds, balanced * 1.1);
  EXPECT_GE(s.estimated_seconds, balanced * 0.999);
  EXPECT_NEAR(s.all_streamed_seconds, 24.0 * (436 << 20) / 51e9, 1e-9);
}

// The paths alternate: no two streamed modules in a row while the host is
// the faster path (each copy has host work before it to hide behind).
TEST(ComputeSplit, InterleavesThePaths) {
  const ComputeSplit s = choose_compute_split(layers(12, 100), {50, 100});
  std::vector<bool> host(12, false);
  for (const std::string& m : s.host_modules) host[std::stoi(m.substr(13))] = true;
  for (int i = 1; i < 12; ++i) EXPECT_FALSE(!host[i - 1] && !host[i]) << "layers " << i - 1 << ", " << i;
  EXPECT_EQ(s.host_modules.size(), 8u);
}

TEST(ComputeSplit, EverythingStreamsWithoutAHostRateOrAHostPath) {
  EXPECT_TRUE(choose_compute_split(layers(8, 1000), {50e9, 0}).host_modules.empty());
  std::vector<SplitCandidate> c = layers(8, 1000);
  for (auto& m : c) m.host_capable = false;
  const ComputeSplit s = choose_compute_split(c, {50e9, 1e12});
  EXPECT_TRUE(s.host_modules.empty());
  EXPECT_EQ(s.streamed_bytes, 8000u);
  EXPECT_DOUBLE_EQ(s.estimated_seconds, s.all_streamed_seconds);
}

// A host far slower than the link (a large batch, whose host compute is
// compute-bound) takes nothing: the split is never worse than streaming.
TEST(ComputeSplit, ASlowHostTakesNothingAndNeverMakesTheStepSlower) {
  const ComputeSplit slow = choose_compute_split(layers(8, 1 << 20), {50e9, 1e9});
  EXPECT_TRUE(slow.host_modules.empty());
  for (double host : {1e8, 1e9, 2e10, 5e10, 1e11, 1e12}) {
    const ComputeSplit s = choose_compute_split(layers(9, 3 << 20), {50e9, host});
    EXPECT_LE(s.estimated_seconds, s.all_streamed_seconds) << host;
  }
}

// A host layer's attention over its host KV cache counts on the host path:
// at the H100's batch-32 rates (the host kernels at 9.4 GB/s, the link at
// 52 GB/s), 56 ms of attention a host layer (against 8 ms to stream its
// 436 MB) leaves one layer on the host, where weight bytes alone put four.
TEST(ComputeSplit, TheHostLayersAttentionTimeCountsOnTheHostPath) {
  const ComputeRates rates{52e9, 9.4e9};  // the host kernels' rate at batch 32
  std::vector<SplitCandidate> bytes_only = layers(25, 436'000'000);
  EXPECT_GE(choose_compute_split(bytes_only, rates).host_modules.size(), 3u);
  std::vector<SplitCandidate> with_attention = bytes_only;
  for (SplitCandidate& c : with_attention) c.host_extra_seconds = 0.056;
  const ComputeSplit s = choose_compute_split(with_attention, rates);
  EXPECT_EQ(s.host_modules.size(), 1u);
  const double host_path = 436e6 / 9.4e9 + 0.056;
  EXPECT_NEAR(s.estimated_seconds, 24 * 436e6 / 52e9, 1e-9);  // the link path, the longer
  EXPECT_LT(host_path, s.estimated_seconds);
  // A small extra moves fewer layers than none does, and the estimate counts it.
  std::vector<SplitCandidate> batch1 = layers(25, 436'000'000);
  const ComputeSplit fast = choose_compute_split(batch1, {52e9, 82e9});
  for (SplitCandidate& c : batch1) c.host_extra_seconds = 0.002;
  const ComputeSplit slower = choose_compute_split(batch1, {52e9, 82e9});
  EXPECT_LT(slower.host_modules.size(), fast.host_modules.size());
  EXPECT_GT(slower.estimated_seconds, fast.estimated_seconds);
  batch1[3].host_extra_seconds = -1;
  EXPECT_THROW(choose_compute_split(batch1, {52e9, 82e9}), InvalidInputError);
}

// Both paths read host memory. Where they slow each other (the H100 host:
// a host layer at 75 GB/s alone took as long as a 51 GB/s fetch beside it),
// the step is estimated at the shared rates until the shorter path ends.
TEST(ComputeSplit, PathsThatShareHostMemoryRunAtTheirSharedRates) {
  const ComputeRates alone{50e9, 100e9};
  const ComputeRates shared{50e9, 100e9, 25e9, 75e9};
  // 10 GB streamed (0.4 s shared) beside 20 GB on the host (0.267 s shared):
  // the host ends first, with 1/3 of the link's bytes left at 50 GB/s.
  EXPECT_NEAR(two_path_seconds(10e9, 20e9, 0, shared), 0.2 / 0.75 + (1 - 0.2 / 0.75 / 0.4) * 0.2,
              1e-12);
  EXPECT_NEAR(two_path_seconds(10e9, 20e9, 0, alone), 0.2, 1e-12);
  // The link ends first: the host's rest at its rate alone, extra seconds included.
  EXPECT_NEAR(two_path_seconds(2.5e9, 30e9, 0.1, shared), 0.1 + (1 - 0.1 / 0.5) * 0.4, 1e-12);
  EXPECT_DOUBLE_EQ(two_path_seconds(0, 30e9, 0.1, shared), 0.4);
  EXPECT_DOUBLE_EQ(two_path_seconds(30e9, 0, 0, shared), 0.6);

  const ComputeSplit s = choose_compute_split(layers(30, 1000000000), shared);
  const ComputeSplit a = choose_compute_split(layers(30, 1000000000), alone);
  EXPECT_NEAR(a.estimated_seconds, 0.2, 0.02);
  // Never better than both paths at their shared rates the whole step, nor
  // than the estimate that ignores the sharing.
  EXPECT_GE(s.estimated_seconds, 30e9 / (25e9 + 75e9) * 0.999);
  EXPECT_GT(s.estimated_seconds, a.estimated_seconds);
  EXPECT_DOUBLE_EQ(s.estimated_seconds,
                   two_path_seconds(static_cast<double>(s.streamed_bytes),
                                    static_cast<double>(s.host_bytes), 0, shared));
  // The shared link is slower relative to the host: the host takes more.
  EXPECT_GT(s.host_bytes, a.host_bytes);
  EXPECT_THROW(choose_compute_split(layers(2, 1), {50e9, 100e9, -1, 0}), InvalidInputError);
}

TEST(ComputeSplit, BadRatesAreRefused) {
  EXPECT_THROW(choose_compute_split(layers(1, 1), {0, 1}), InvalidInputError);
  EXPECT_THROW(choose_compute_split(layers(1, 1), {1, -1}), InvalidInputError);
}

// --run-on-host layers are on the host whatever the rates: listed, counted
// on the host path, and the split balances the other layers against them.
TEST(ComputeSplit, ForcedHostLayersCountOnTheHostPath) {
  std::vector<SplitCandidate> c = layers(6, 100);
  c[0].on_host = true;
  c[1].on_host = true;
  const ComputeSplit s = choose_compute_split(c, {100, 100});
  ASSERT_GE(s.host_modules.size(), 2u);
  EXPECT_EQ(s.host_modules[0], "model.layers.0");
  EXPECT_EQ(s.host_modules[1], "model.layers.1");
  EXPECT_EQ(s.host_bytes + s.streamed_bytes, 600u);
  EXPECT_EQ(s.host_bytes, 300u) << "2 forced, then the balance takes 1 more of the 4";
  EXPECT_DOUBLE_EQ(s.estimated_seconds, 3.0);
  const ComputeSplit no_rate = choose_compute_split(c, {100, 0});
  EXPECT_EQ(no_rate.host_modules.size(), 2u) << "forced layers stay on the host";
  EXPECT_EQ(no_rate.streamed_bytes, 400u);
}

}  // namespace
}  // namespace stowage
