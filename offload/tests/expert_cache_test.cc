// The accelerator expert cache (offload/expert_cache.h) over the sim backend
// and CUDA (skipped without a GPU): bytes arrive unchanged, hits and misses
// counted per layer, the policy's victim evicted but never an expert in use
// or routed in the same call, slots allocated once within the budget.
#include "offload/expert_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/error.h"
#include "offload/tests/test_support.h"

namespace stowage {
namespace {

using testing_support::BackendTest;
using testing_support::Model;

class ExpertCacheTest : public BackendTest {
 protected:
  // Eight "experts" of 4 KiB + a bias each, in pinned host RAM.
  void make(std::map<Tier, uint64_t> budgets = {}) {
    OffloadOptions options;
    for (const auto& [tier, bytes] : budgets) options.set_budget(tier, bytes);
    manager_ = std::make_unique<OffloadManager>(*platform_, options);
    model_ = testing_support::make_model(*platform_, "experts", 8, 4096);
    testing_support::place_model(*manager_, model_,
                                 testing_support::all_on(model_, Tier::pinned_host()));
  }
  ExpertCacheOptions options(int64_t slots, ReplacementPolicyKind policy) const {
    ExpertCacheOptions o;
    o.slots = slots;
    o.slot_bytes = ExpertCache::slot_bytes_for(manager_->table(), model_.modules);
    o.policy = policy;
    return o;
  }
  // What a forward of `module` from the cache reads (weight then bias).
  std::vector<unsigned char> read(ExpertCache& cache, const std::string& module) {
    const StreamRef compute = manager_->compute_stream(acc());
    const ModuleForward f = cache.acquire(module, compute);
    std::vector<unsigned char> out(4096 + 64);
    compute.copy(out.data(), f.find("weight")->data(), 4096);
    compute.copy(out.data() + 4096, f.find("bias")->data(), 64);
    cache.release(module, compute);
    compute.synchronize();
    return out;
  }
  std::vector<unsigned char> expected(const std::string& module) {
    auto w = testing_support::bytes_of(model_.tensors.at(module + ".weight"));
    const auto b = testing_support::bytes_of(model_.tensors.at(module + ".bias"));
    w.insert(w.end(), b.begin(), b.end());
    return w;
  }

  std::unique_ptr<OffloadManager> manager_;
  Model model_;
};

TEST_P(ExpertCacheTest, FetchedExpertsReadTheirHostBytesAndHitsAreCounted) {
  make();
  ExpertCache cache(*manager_, acc(), options(3, ReplacementPolicyKind::kLfuAging));
  EXPECT_TRUE(cache.cacheable("experts.0"));
  using F = ExpertCache::Fetch;
  EXPECT_EQ(cache.fetch({"experts.0", "experts.1"}, 2), (std::vector<F>{F::kMiss, F::kMiss}));
  EXPECT_EQ(read(cache, "experts.0"), expected("experts.0"));
  EXPECT_EQ(read(cache, "experts.1"), expected("experts.1"));
  EXPECT_EQ(cache.fetch({"experts.1", "experts.2"}, 2), (std::vector<F>{F::kHit, F::kMiss}));
  EXPECT_EQ(read(cache, "experts.2"), expected("experts.2"));
  const std::vector<ExpertCacheCounters> c = cache.counters();
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2].hits, 1u);
  EXPECT_EQ(c[2].misses, 3u);
  EXPECT_EQ(c[2].bytes_copied, 3u * (4096 + 64));
}

// A part copy (fetch_part): the named record's byte range alone, the others
// whole, in a slot the policy frees; fetch() does not find it (it is not the
// cached expert), the experts routed with it are never evicted for it, it
// counts as `split` with its bytes, and the slot is free again after
// release_part. With every slot in use or kept, -1.
TEST_P(ExpertCacheTest, PartCopiesHoldTheirRangesAndFreeTheirSlot) {
  make();
  ExpertCache cache(*manager_, acc(), options(2, ReplacementPolicyKind::kLfuAging));
  using F = ExpertCache::Fetch;
  EXPECT_EQ(cache.fetch({"experts.0"}, 1), (std::vector<F>{F::kMiss}));
  const int part = cache.fetch_part("experts.1", {{"weight", 1024, 2048}}, {"experts.0"}, 1);
  ASSERT_GE(part, 0);
  EXPECT_FALSE(cache.holds("experts.1"));
  const StreamRef compute = manager_->compute_stream(acc());
  const ModuleForward f = cache.acquire_part(part, compute);
  ASSERT_NE(f.find("weight"), nullptr);
  ASSERT_NE(f.find("bias"), nullptr);
  EXPECT_EQ(f.find("weight")->bytes(), 2048u);
  std::vector<unsigned char> weight(2048), bias(64);
  compute.copy(weight.data(), f.find("weight")->data(), 2048);
  compute.copy(bias.data(), f.find("bias")->data(), 64);
  // The cached expert and the kept one leave no slot for another part.
  EXPECT_EQ(cache.fetch_part("experts.2", {}, {"experts.0"}, 1), -1);
  cache.release_part(part, compute);
  compute.synchronize();
  const auto whole = testing_support::bytes_of(model_.tensors.at("experts.1.weight"));
  EXPECT_EQ(weight, std::vector<unsigned char>(whole.begin() + 1024, whole.begin() + 3072));
  EXPECT_EQ(bias, testing_support::bytes_of(model_.tensors.at("experts.1.bias")));
  EXPECT_EQ(read(cache, "experts.0"), expected("experts.0"));  // not evicted
  const std::vector<ExpertCacheCounters> c = cache.counters();
  EXPECT_EQ(c[1].split, 1u);
  EXPECT_EQ(c[1].misses, 1u);
  EXPECT_EQ(c[1].bytes_copied, (4096u + 64) + (2048u + 64));
  // Released, the slot takes a whole expert.
  EXPECT_EQ(cache.fetch({"experts.3"}, 1), (std::vector<F>{F::kMiss}));
  EXPECT_TRUE(cache.holds("experts.0"));
  EXPECT_THROW(cache.acquire_part(part, compute), InvalidInputError);
}

// With every slot holding an expert routed in this call, the next one finds
// none: kUncached (the caller runs it another way), nothing evicted.
TEST_P(ExpertCacheTest, ExpertsRoutedTogetherAreNeverEvictedForEachOther) {
  make();
  ExpertCache cache(*manager_, acc(), options(2, ReplacementPolicyKind::kLru));
  using F = ExpertCache::Fetch;
  EXPECT_EQ(cache.fetch({"experts.0", "experts.1", "experts.2"}, 0),
            (std::vector<F>{F::kMiss, F::kMiss, F::kUncached}));
  EXPECT_EQ(cache.counters()[0].uncached, 1u);
  EXPECT_EQ(read(cache, "experts.0"), expected("experts.0"));
  EXPECT_EQ(read(cache, "experts.1"), expected("experts.1"));
}

// A frequently used expert survives a burst of others under LFU with aging;
// LRU lets the burst push it out.
TEST_P(ExpertCacheTest, LfuKeepsThePopularExpertThroughABurst) {
  make();
  for (auto kind : {ReplacementPolicyKind::kLfuAging, ReplacementPolicyKind::kLru}) {
    ExpertCache cache(*manager_, acc(), options(2, kind));
    for (int i = 0; i < 5; ++i) cache.fetch({"experts.0"}, 0);
    cache.fetch({"experts.1"}, 0);
    cache.fetch({"experts.2"}, 0);
    cache.fetch({"experts.3"}, 0);
    const auto again = cache.fetch({"experts.0"}, 0);
    EXPECT_EQ(again[0], kind == ReplacementPolicyKind::kLfuAging ? ExpertCache::Fetch::kHit
                                                                 : ExpertCache::Fetch::kMiss)
        << replacement_policy_name(kind);
    EXPECT_EQ(read(cache, "experts.0"), expected("experts.0"));
  }
}

// A prefetched expert routed later is a hit, counted as a prediction used.
TEST_P(ExpertCacheTest, PrefetchedExpertsAreHitsWhenRouted) {
  make();
  ExpertCache cache(*manager_, acc(), options(3, ReplacementPolicyKind::kLfuAging));
  cache.prefetch({"experts.4", "experts.5"}, 1);
  const auto f = cache.fetch({"experts.5", "experts.6"}, 1);
  EXPECT_EQ(f[0], ExpertCache::Fetch::kHit);
  const ExpertCacheCounters c = cache.counters()[1];
  EXPECT_EQ(c.predicted, 2u);
  EXPECT_EQ(c.predicted_used, 1u);
  EXPECT_EQ(read(cache, "experts.5"), expected("experts.5"));
}

// The slots come from the accelerator's budget: more than it holds is an
// OutOfBudgetError at construction, and what fits stays within the budget.
TEST_P(ExpertCacheTest, SlotsComeFromTheBudget) {
  // A slot: the 4096-byte weight, the bias at the next 256-byte offset (4352).
  const uint64_t budget = 3 * 4352 + 100;
  make({{acc(), budget}});
  ASSERT_EQ(options(1, ReplacementPolicyKind::kLru).slot_bytes, 4352u);
  EXPECT_THROW(ExpertCache(*manager_, acc(), options(4, ReplacementPolicyKind::kLru)),
               OutOfBudgetError);
  {
    ExpertCache cache(*manager_, acc(), options(2, ReplacementPolicyKind::kLru));
    cache.fetch({"experts.0", "experts.1"}, 0);
    EXPECT_EQ(read(cache, "experts.1"), expected("experts.1"));
    EXPECT_LE(manager_->usage(acc()).peak_bytes, budget);
  }
}

// Resident experts and those computed on the host do not go through the cache.
TEST_P(ExpertCacheTest, ResidentAndHostComputedExpertsAreNotCacheable) {
  make();
  manager_->move_module("experts.3", acc());
  manager_->set_host_compute("experts.4", true);
  ExpertCache cache(*manager_, acc(), options(2, ReplacementPolicyKind::kLru));
  EXPECT_FALSE(cache.cacheable("experts.3"));
  EXPECT_FALSE(cache.cacheable("experts.4"));
  EXPECT_TRUE(cache.cacheable("experts.5"));
  EXPECT_THROW(cache.acquire("experts.5", manager_->compute_stream(acc())), InvalidInputError);
}

// Two threads fetching, reading and releasing their own experts through one
// cache (each with its own compute stream) read the right bytes. A slot per
// expert: an expert fetched by one thread is not evicted by the other before
// its acquire (the contract: one model's forwards use a cache at a time).
TEST_P(ExpertCacheTest, TwoThreadsUseOneCache) {
  make();
  ExpertCache cache(*manager_, acc(), options(8, ReplacementPolicyKind::kLfuAging));
  std::atomic<int> wrong{0};
  auto work = [&](int first) {
    Stream compute = platform_->accelerator(0).create_stream();
    for (int round = 0; round < 20; ++round) {
      const std::string module = "experts." + std::to_string(first + round % 4);
      if (cache.fetch({module}, first)[0] == ExpertCache::Fetch::kUncached) continue;
      const ModuleForward f = cache.acquire(module, compute.ref());
      std::vector<unsigned char> out(4096);
      compute.ref().copy(out.data(), f.find("weight")->data(), 4096);
      cache.release(module, compute.ref());
      compute.synchronize();
      const auto want = testing_support::bytes_of(model_.tensors.at(module + ".weight"));
      if (out != want) ++wrong;
    }
  };
  std::thread a(work, 0), b(work, 4);
  a.join();
  b.join();
  EXPECT_EQ(wrong.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, ExpertCacheTest,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         testing_support::backend_name);

}  // namespace
}  // namespace stowage
