#include "offload/replacement_policy.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "offload/routing_trace.h"

namespace stowage {
namespace {

// The keys (layer * experts + expert) of a routing trace, in order.
std::vector<uint64_t> keys_of(const RoutingTraceOptions& o) {
  std::vector<uint64_t> keys;
  for (const auto& step : make_routing_trace(o)) {
    for (size_t layer = 0; layer < step.size(); ++layer) {
      for (int32_t e : step[layer]) keys.push_back(layer * o.experts + e);
    }
  }
  return keys;
}

double hit_rate(ReplacementPolicyKind kind, size_t capacity, const std::vector<uint64_t>& keys) {
  auto policy = make_replacement_policy(kind);
  return replay_hit_rate(*policy, capacity, keys);
}

// Mixtral's shape (32 layers x 8 experts, top-2) with a quarter of the
// experts cached: under Zipf(1.0) routing, counting uses keeps the popular
// experts that LRU lets the rare ones push out.
TEST(ReplacementPolicyTest, LfuWithAgingBeatsLruOnAZipfTrace) {
  RoutingTraceOptions o;
  o.layers = 32;
  o.experts = 8;
  o.top_k = 2;
  o.steps = 400;
  o.zipf_exponent = 1.0;
  o.seed = 7;
  const std::vector<uint64_t> keys = keys_of(o);
  const double lru = hit_rate(ReplacementPolicyKind::kLru, 64, keys);
  const double lfu = hit_rate(ReplacementPolicyKind::kLfuAging, 64, keys);
  EXPECT_GT(lfu, lru + 0.05) << "lfu " << lfu << " lru " << lru;
  RecordProperty("lru_hit_rate", std::to_string(lru));
  RecordProperty("lfu_hit_rate", std::to_string(lfu));
}

// Uniform routing has nothing to exploit: the frequency policy hits about
// the cached fraction (a quarter); LRU a little less, since the layers come
// round in a cycle longer than the cache.
TEST(ReplacementPolicyTest, UniformRoutingHitsAboutTheCachedFraction) {
  RoutingTraceOptions o;
  o.layers = 32;
  o.steps = 400;
  const std::vector<uint64_t> keys = keys_of(o);
  const double lru = hit_rate(ReplacementPolicyKind::kLru, 64, keys);
  const double lfu = hit_rate(ReplacementPolicyKind::kLfuAging, 64, keys);
  EXPECT_NEAR(lfu, 0.25, 0.05);
  EXPECT_GT(lru, 0.15);
  EXPECT_LE(lru, lfu + 0.01);
}

// Aging follows a shift in popularity: after the favourite changes, the new
// one is kept although the old one has the larger lifetime count.
TEST(ReplacementPolicyTest, AgingLetsANewFavouriteDisplaceTheOldOne) {
  auto policy = make_replacement_policy(ReplacementPolicyKind::kLfuAging, 8);
  for (int i = 0; i < 100; ++i) policy->touch(1);
  for (int i = 0; i < 60; ++i) policy->touch(2);
  EXPECT_EQ(policy->victim({1, 2}), 1u);
  auto no_aging = make_replacement_policy(ReplacementPolicyKind::kLfuAging, 1u << 30);
  for (int i = 0; i < 100; ++i) no_aging->touch(1);
  for (int i = 0; i < 60; ++i) no_aging->touch(2);
  EXPECT_EQ(no_aging->victim({1, 2}), 2u);
}

TEST(ReplacementPolicyTest, LruEvictsTheLeastRecentlyUsed) {
  auto policy = make_replacement_policy(ReplacementPolicyKind::kLru);
  policy->touch(3);
  policy->touch(4);
  policy->touch(3);
  EXPECT_EQ(policy->victim({3, 4}), 4u);
  EXPECT_EQ(policy->victim({3, 9}), 9u);  // never used: oldest
}

TEST(ReplacementPolicyTest, UnknownPolicyNameIsRefused) {
  EXPECT_EQ(parse_replacement_policy("lru"), ReplacementPolicyKind::kLru);
  EXPECT_EQ(parse_replacement_policy("lfu"), ReplacementPolicyKind::kLfuAging);
  EXPECT_THROW(parse_replacement_policy("arc"), InvalidInputError);
}

TEST(RoutingTraceTest, ZipfSkewsAndUniformDoesNot) {
  RoutingTraceOptions o;
  o.layers = 1;
  o.experts = 8;
  o.top_k = 1;
  o.steps = 4000;
  o.zipf_exponent = 1.0;
  std::vector<int> count(8);
  for (const auto& step : make_routing_trace(o)) count[step[0][0]]++;
  const int top = *std::max_element(count.begin(), count.end());
  // Zipf(1) over 8: the favourite takes 1 / H(8) = 37% of the draws.
  EXPECT_NEAR(top / 4000.0, 0.368, 0.03);
  o.zipf_exponent = 0;
  std::fill(count.begin(), count.end(), 0);
  for (const auto& step : make_routing_trace(o)) count[step[0][0]]++;
  EXPECT_NEAR(*std::max_element(count.begin(), count.end()) / 4000.0, 0.125, 0.03);
  // Distinct experts within a step.
  o.top_k = 2;
  for (const auto& step : make_routing_trace(o)) EXPECT_NE(step[0][0], step[0][1]);
}

}  // namespace
}  // namespace stowage
