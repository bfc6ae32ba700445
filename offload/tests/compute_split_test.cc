// choose_compute_split: the balance of link and host time, the interleaving,
// and the cases where everything streams.
#include "offload/compute_split.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace stowage {
namespace {

// Copies that may run far ahead: the split then balances the totals alone.
constexpr int kDeep = 64;

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
  const ComputeSplit s = choose_compute_split(layers(24, 436 << 20), rates, kDeep);
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
  const ComputeSplit s = choose_compute_split(layers(12, 100), {50, 100}, kDeep);
  std::vector<bool> host(12, false);
  for (const std::string& m : s.host_modules) host[std::stoi(m.substr(13))] = true;
  for (int i = 1; i < 12; ++i) EXPECT_FALSE(!host[i - 1] && !host[i]) << "layers " << i - 1 << ", " << i;
  EXPECT_EQ(s.host_modules.size(), 8u);
}

TEST(ComputeSplit, EverythingStreamsWithoutAHostRateOrAHostPath) {
  EXPECT_TRUE(choose_compute_split(layers(8, 1000), {50e9, 0}, kDeep).host_modules.empty());
  std::vector<SplitCandidate> c = layers(8, 1000);
  for (auto& m : c) m.host_capable = false;
  const ComputeSplit s = choose_compute_split(c, {50e9, 1e12}, kDeep);
  EXPECT_TRUE(s.host_modules.empty());
  EXPECT_EQ(s.streamed_bytes, 8000u);
  EXPECT_DOUBLE_EQ(s.estimated_seconds, s.all_streamed_seconds);
}

// A host far slower than the link (a large batch, whose host compute is
// compute-bound) takes nothing: the split is never worse than streaming.
TEST(ComputeSplit, ASlowHostTakesNothingAndNeverMakesTheStepSlower) {
  const ComputeSplit slow = choose_compute_split(layers(8, 1 << 20), {50e9, 1e9}, kDeep);
  EXPECT_TRUE(slow.host_modules.empty());
  for (double host : {1e8, 1e9, 2e10, 5e10, 1e11, 1e12}) {
    const ComputeSplit s = choose_compute_split(layers(9, 3 << 20), {50e9, host}, kDeep);
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
  EXPECT_GE(choose_compute_split(bytes_only, rates, kDeep).host_modules.size(), 3u);
  std::vector<SplitCandidate> with_attention = bytes_only;
  for (SplitCandidate& c : with_attention) c.host_extra_seconds = 0.056;
  const ComputeSplit s = choose_compute_split(with_attention, rates, kDeep);
  EXPECT_EQ(s.host_modules.size(), 1u);
  const double host_path = 436e6 / 9.4e9 + 0.056;
  EXPECT_NEAR(s.estimated_seconds, 24 * 436e6 / 52e9, 1e-9);  // the link path, the longer
  EXPECT_LT(host_path, s.estimated_seconds);
  // A small extra moves fewer layers than none does, and the estimate counts it.
  std::vector<SplitCandidate> batch1 = layers(25, 436'000'000);
  const ComputeSplit fast = choose_compute_split(batch1, {52e9, 82e9}, kDeep);
  for (SplitCandidate& c : batch1) c.host_extra_seconds = 0.002;
  const ComputeSplit slower = choose_compute_split(batch1, {52e9, 82e9}, kDeep);
  EXPECT_LT(slower.host_modules.size(), fast.host_modules.size());
  EXPECT_GT(slower.estimated_seconds, fast.estimated_seconds);
  batch1[3].host_extra_seconds = -1;
  EXPECT_THROW(choose_compute_split(batch1, {52e9, 82e9}, kDeep), InvalidInputError);
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

  const ComputeSplit s = choose_compute_split(layers(30, 1000000000), shared, kDeep);
  const ComputeSplit a = choose_compute_split(layers(30, 1000000000), alone, kDeep);
  EXPECT_NEAR(a.estimated_seconds, 0.2, 0.02);
  // Never better than both paths at their shared rates the whole step, nor
  // than the estimate that ignores the sharing.
  EXPECT_GE(s.estimated_seconds, 30e9 / (25e9 + 75e9) * 0.999);
  EXPECT_GT(s.estimated_seconds, a.estimated_seconds);
  EXPECT_DOUBLE_EQ(s.two_path_limit_seconds,
                   two_path_seconds(static_cast<double>(s.streamed_bytes),
                                    static_cast<double>(s.host_bytes), 0, shared));
  EXPECT_GE(s.estimated_seconds, s.two_path_limit_seconds * (1 - 1e-12));
  // The shared link is slower relative to the host: the host takes more.
  EXPECT_GT(s.host_bytes, a.host_bytes);
  EXPECT_THROW(choose_compute_split(layers(2, 1), {50e9, 100e9, -1, 0}, kDeep), InvalidInputError);
}

// A step played through: one 10 s host module, then three streamed modules
// of 1 s each. Without prefetching everything is serial (13 s); one module
// ahead (two slots, both free while the host module runs) hides two copies
// behind the host module (11 s); three ahead hide them all (10 s).
TEST(ComputeSplit, TheCopiesRunAheadOfTheComputeOnlyByThePrefetchDepth) {
  std::vector<SplitCandidate> c = layers(4, 100);
  c[0].bytes = 1000;
  const std::vector<bool> host = {true, false, false, false};
  const ComputeRates rates{100, 100};
  EXPECT_NEAR(pipeline_seconds(c, host, rates, 0), 13.0, 1e-9);
  EXPECT_NEAR(pipeline_seconds(c, host, rates, 1), 11.0, 1e-9);
  EXPECT_NEAR(pipeline_seconds(c, host, rates, 2), 10.0, 1e-9);
  EXPECT_NEAR(pipeline_seconds(c, host, rates, 3), 10.0, 1e-9);
  EXPECT_NEAR(pipeline_seconds(c, host, rates, kDeep), 10.0, 1e-9);
  // Everything streamed: the link never idles once it runs ahead.
  EXPECT_NEAR(pipeline_seconds(c, {false, false, false, false}, rates, 1), 13.0, 1e-9);
  EXPECT_NEAR(pipeline_seconds(c, {false, false, false, false}, rates, 0), 13.0, 1e-9);
  // While both paths run, each at its shared rate: the host module at half
  // speed for the 4 s the two copies take beside it (2 s of its work), then
  // alone; the third copy after it.
  EXPECT_NEAR(pipeline_seconds(c, host, {100, 100, 50, 50}, 1), 4 + 8 + 1, 1e-9);
  EXPECT_THROW(pipeline_seconds(c, {true}, rates, 1), InvalidInputError);
  EXPECT_THROW(pipeline_seconds(c, host, rates, -1), InvalidInputError);
}

// The H100's batch-32 decode (session 13): the host kernels at 4.96 GB/s and
// 4.6 ms of attention a layer beside a 55 GB/s link, one streamed layer
// ahead. A host layer takes 93 ms, the copies queued before it 8 ms, so the
// link would idle for most of it: nothing goes to the host. Copies that
// could run far ahead (the balance of the totals alone, as before) put one
// layer there, which measured 0.255 s a step against 0.197 streaming alone.
TEST(ComputeSplit, AHostLayerLongerThanTheQueuedCopiesStaysStreamed) {
  const ComputeRates rates{55.45e9, 4.96e9, 54.9e9, 4.64e9};
  std::vector<SplitCandidate> c = layers(23, 436'224'000);
  for (SplitCandidate& l : c) l.host_extra_seconds = 0.0046;
  const ComputeSplit deep = choose_compute_split(c, rates, kDeep);
  EXPECT_EQ(deep.host_modules.size(), 1u);
  const ComputeSplit one_ahead = choose_compute_split(c, rates, 1);
  EXPECT_TRUE(one_ahead.host_modules.empty());
  EXPECT_DOUBLE_EQ(one_ahead.estimated_seconds, one_ahead.all_streamed_seconds);
  // Played with one module ahead, the deep split's placement is slower than
  // streaming alone, by about the host layer less one copy.
  std::vector<bool> placement(c.size(), false);
  for (size_t i = 0; i < c.size(); ++i) placement[i] = c[i].module == deep.host_modules[0];
  const double played = pipeline_seconds(c, placement, rates, 1);
  EXPECT_GT(played, one_ahead.all_streamed_seconds + 0.05);
  // At batch 1 (the host at 86 GB/s, 74 beside the link) the layers still
  // split, interleaved so each copy hides behind a host layer, and the step
  // stays within a few percent of the two-path limit.
  const ComputeRates batch1{55.45e9, 86.1e9, 54.56e9, 74.2e9};
  for (SplitCandidate& l : c) l.host_extra_seconds = 60e-6;
  const ComputeSplit s = choose_compute_split(c, batch1, 1);
  EXPECT_GE(s.host_modules.size(), 10u);
  EXPECT_LE(s.host_modules.size(), 16u);
  EXPECT_LT(s.estimated_seconds, s.two_path_limit_seconds * 1.05);
  EXPECT_LT(s.estimated_seconds, 0.6 * s.all_streamed_seconds);
}

// A shared rate measured above the rate alone (noise, or a calibration
// that rescaled one of the two) counts as the rate alone: a path never gains
// from the other's load, and the played step never beats the two-path limit.
TEST(ComputeSplit, ASharedRateAboveTheRateAloneCountsAsTheRateAlone) {
  const ComputeRates noisy{10e9, 12.4e9, 0, 26e9};
  EXPECT_DOUBLE_EQ(noisy.host_while_shared(), 12.4e9);
  EXPECT_DOUBLE_EQ(noisy.link_while_shared(), 10e9);
  EXPECT_DOUBLE_EQ((ComputeRates{10e9, 12e9, 20e9, 6e9}).link_while_shared(), 10e9);
  EXPECT_DOUBLE_EQ((ComputeRates{10e9, 12e9, 8e9, 6e9}).link_while_shared(), 8e9);
  std::vector<SplitCandidate> c = layers(2, 172544);
  for (SplitCandidate& l : c) l.host_extra_seconds = 1.5e-6;
  const ComputeSplit s = choose_compute_split(c, noisy, 1);
  EXPECT_LE(s.two_path_limit_seconds, s.estimated_seconds * (1 + 1e-9));
}

TEST(ComputeSplit, BadRatesAreRefused) {
  EXPECT_THROW(choose_compute_split(layers(1, 1), {0, 1}, kDeep), InvalidInputError);
  EXPECT_THROW(choose_compute_split(layers(1, 1), {1, -1}, kDeep), InvalidInputError);
  EXPECT_THROW(choose_compute_split(layers(1, 1), {1, 1}, -1), InvalidInputError);
}

// --run-on-host layers are on the host whatever the rates: listed, counted
// on the host path, and the split balances the other layers against them.
TEST(ComputeSplit, ForcedHostLayersCountOnTheHostPath) {
  std::vector<SplitCandidate> c = layers(6, 100);
  c[0].on_host = true;
  c[1].on_host = true;
  const ComputeSplit s = choose_compute_split(c, {100, 100}, kDeep);
  ASSERT_GE(s.host_modules.size(), 2u);
  EXPECT_EQ(s.host_modules[0], "model.layers.0");
  EXPECT_EQ(s.host_modules[1], "model.layers.1");
  EXPECT_EQ(s.host_bytes + s.streamed_bytes, 600u);
  EXPECT_EQ(s.host_bytes, 300u) << "2 forced, then the balance takes 1 more of the 4";
  EXPECT_DOUBLE_EQ(s.estimated_seconds, 3.0);
  const ComputeSplit no_rate = choose_compute_split(c, {100, 0}, kDeep);
  EXPECT_EQ(no_rate.host_modules.size(), 2u) << "forced layers stay on the host";
  EXPECT_EQ(no_rate.streamed_bytes, 400u);
}

}  // namespace
}  // namespace stowage
