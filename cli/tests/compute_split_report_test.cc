// decide_compute_split: the bytes only the link can carry after the decoder
// layers (a streamed head) are counted on the link path, so the split moves
// more layers to the host and the estimate includes them.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "cli/model_session.h"

namespace stowage::cli {
namespace {

// One streamed layer ahead: the sessions' default (--prefetch 1).
constexpr int kPrefetchDepth = 1;

std::vector<SplitLayer> streamed_layers(int n, uint64_t bytes) {
  std::vector<SplitLayer> out;
  for (int i = 0; i < n; ++i) {
    SplitLayer l;
    l.module = "model.layers." + std::to_string(i);
    l.bytes = l.off_accelerator_bytes = bytes;
    l.host_readable = l.float_weights = true;
    out.push_back(l);
  }
  return out;
}

// The H100 run that showed it: 23 streamed layers of 436 MB and a 1.05 GB
// head, a 55 GB/s link beside a 100 GB/s host.
TEST(ComputeSplitReport, AStreamedHeadCountsOnTheLinkPath) {
  const ComputeRates rates{55e9, 100e9};
  const uint64_t layer = 436224000, head = 1050673152;
  const ComputeSplitReport without =
      decide_compute_split(streamed_layers(23, layer), true, rates, kPrefetchDepth, 1, 15);
  const ComputeSplitReport with =
      decide_compute_split(streamed_layers(23, layer), true, rates, kPrefetchDepth, 1, 15, 0, head);
  EXPECT_GT(with.split.host_bytes, without.split.host_bytes);
  EXPECT_EQ(with.split.streamed_bytes + with.split.host_bytes, 23 * layer + head);
  // Balanced with the head in: the link's total (head included) within a
  // layer of its share of the bytes at the two rates.
  const double total = 23.0 * layer + head;
  EXPECT_NEAR(static_cast<double>(with.split.streamed_bytes), total * 55 / 155, layer);
  EXPECT_NEAR(with.split.estimated_seconds, total / 155e9, layer / 55e9);
  // The head is never a host module, and the layer list is the layers.
  for (const std::string& m : with.decode_host_modules()) EXPECT_EQ(m.rfind("model.layers.", 0), 0u);
  EXPECT_EQ(with.layers.size(), 23u);
}

// The H200 run that showed it: one projection's kernels measured 90 GB/s,
// the layers on the host ran at 73 in the decode steps. The host's weight
// time is its own time less the layers' attention; its rate alone scales
// with the shared one.
TEST(ComputeSplitReport, TheHostRateFromDecodeStepsIsItsOwnTimeLessAttention) {
  const ComputeRates start{55e9, 100e9, 50e9, 90e9};
  const std::optional<ComputeRates> r =
      rates_from_host_decode_work(start, 8000000000, 10, 0.1, 0.001);
  ASSERT_TRUE(r.has_value());
  EXPECT_DOUBLE_EQ(r->host_bytes_per_s_shared, 8e9 / 0.09);
  EXPECT_DOUBLE_EQ(r->host_bytes_per_s, 100e9 * (8e9 / 0.09) / 90e9);
  EXPECT_EQ(r->link_bytes_per_s, start.link_bytes_per_s);
  EXPECT_EQ(r->link_bytes_per_s_shared, start.link_bytes_per_s_shared);
  // Attention taken as more than half the time: half is counted as weights.
  EXPECT_DOUBLE_EQ(rates_from_host_decode_work(start, 8000000000, 10, 0.1, 0.009)
                       ->host_bytes_per_s_shared,
                   8e9 / 0.05);
  // No shared rate measured at start: the alone rate scales from itself.
  EXPECT_DOUBLE_EQ(
      rates_from_host_decode_work({55e9, 100e9}, 5000000000, 5, 0.1, 0)->host_bytes_per_s, 5e10);
  // Measured with nothing streamed beside (a split that put every layer on
  // the host): the rate alone, and the shared one scales with it.
  const std::optional<ComputeRates> alone =
      rates_from_host_decode_work(start, 8000000000, 10, 0.1, 0, false);
  ASSERT_TRUE(alone.has_value());
  EXPECT_DOUBLE_EQ(alone->host_bytes_per_s, 8e10);
  EXPECT_DOUBLE_EQ(alone->host_bytes_per_s_shared, 90e9 * 8e10 / 100e9);
  // Nothing to go by.
  EXPECT_FALSE(rates_from_host_decode_work(start, 0, 0, 0.1, 0).has_value());
  EXPECT_FALSE(rates_from_host_decode_work(start, 100, 1, 0, 0).has_value());
}

// The H100 run that showed it (session 15): a start-up host rate far above
// what the decode steps reach put all 22 layers on the host; those steps ran
// at 105 GB/s with the link idle. Taken as the shared rate, the rate alone
// stayed high and the next decision kept every layer there (45 ms estimated,
// 107 ms measured); taken as the rate alone, the next decision streams
// layers again.
TEST(ComputeSplitReport, ARateMeasuredWithTheLinkIdleIsTheRateAlone) {
  const ComputeRates start{55e9, 1000e9, 54e9, 900e9};
  const uint64_t layer = 436224000;
  const ComputeSplitReport first =
      decide_compute_split(streamed_layers(22, layer), true, start, kPrefetchDepth, 1, 15);
  ASSERT_EQ(first.decode_host_modules().size(), 22u);
  EXPECT_FALSE(link_ran_beside_host(first.split, start));
  const auto measured = rates_from_host_decode_work(start, 22 * uint64_t{layer}, 22,
                                                    22 * layer / 105e9, 0,
                                                    link_ran_beside_host(first.split, start));
  ASSERT_TRUE(measured.has_value());
  EXPECT_NEAR(measured->host_bytes_per_s, 105e9, 1e3);
  EXPECT_NEAR(measured->host_bytes_per_s_shared, 94.5e9, 1e3);
  const ComputeSplitReport next =
      decide_compute_split(streamed_layers(22, layer), true, *measured, kPrefetchDepth, 1, 15);
  EXPECT_LT(next.decode_host_modules().size(), 18u);
  EXPECT_GT(next.split.streamed_bytes, 4 * uint64_t{layer});
  // That split streams about as long as the host computes: it ran beside it.
  EXPECT_TRUE(link_ran_beside_host(next.split, next.rates()));
}

// Deciding again at the slower measured host rate (here half the start's)
// moves layers to the link and estimates the step at the rates that ran.
TEST(ComputeSplitReport, ASlowerMeasuredHostRateMovesLayersToTheLink) {
  const ComputeRates start{55e9, 90e9, 54e9, 90e9};
  const uint64_t layer = 436224000;
  const ComputeSplitReport before =
      decide_compute_split(streamed_layers(23, layer), true, start, kPrefetchDepth, 1, 15);
  const std::optional<ComputeRates> measured =
      rates_from_host_decode_work(start, 14 * uint64_t{layer}, 14, 14 * layer / 45e9, 0);
  ASSERT_TRUE(measured.has_value());
  const ComputeSplitReport after =
      decide_compute_split(streamed_layers(23, layer), true, *measured, kPrefetchDepth, 1, 15);
  EXPECT_LT(after.split.host_bytes, before.split.host_bytes);
  EXPECT_EQ(after.split.host_bytes + after.split.streamed_bytes, 23 * layer);
  EXPECT_GT(after.split.estimated_seconds, before.split.estimated_seconds);
}

}  // namespace
}  // namespace stowage::cli
