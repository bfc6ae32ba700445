// decide_compute_split: the bytes only the link can carry after the decoder
// layers (a streamed head) are counted on the link path, so the split moves
// more layers to the host and the estimate includes them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/model_session.h"

namespace stowage::cli {
namespace {

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
      decide_compute_split(streamed_layers(23, layer), true, rates, 1, 15);
  const ComputeSplitReport with =
      decide_compute_split(streamed_layers(23, layer), true, rates, 1, 15, 0, head);
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

}  // namespace
}  // namespace stowage::cli
