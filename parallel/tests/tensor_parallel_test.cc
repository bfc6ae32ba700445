// Tensor parallelism on simulated accelerators: the dense transformer
// fixtures (transformers' outputs, models/testdata) split over 1, 2 and 4
// ranks, each rank with its own manager, budget, plan and prefetch, joined
// by the in-process all-reduce.
//
// Tolerance: the ranks' partial sums are added in another order than one
// accelerator's dot products, so logits differ by rounding only: at most
// kLogitTolerance x the largest |logit| of the row from N = 1's (measured
// here: ~1e-6 and below on these fixtures), and the greedy tokens are the
// same.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/memory_resource.h"
#include "core/platform.h"
#include "mmap_store/checkpoint.h"
#include "models/transformer.h"
#include "models/transformer_runner.h"
#include "offload/loader.h"
#include "parallel/collective.h"
#include "parallel/sim_collective.h"
#include "parallel/tensor_parallel_runner.h"

namespace stowage::parallel {
namespace {

const std::string kTestdata = "models/testdata/";
constexpr double kLogitTolerance = 1e-5;

std::vector<int32_t> reference_ids(const std::string& folder, const std::string& name) {
  auto file = mmap_store::open_checkpoint(folder + "/reference.safetensors");
  Tensor t = file->tensor(name);
  const auto* p = static_cast<const int32_t*>(t.data());
  return std::vector<int32_t>(p, p + t.numel());
}

models::TransformerRunShape shape_for(size_t prompt) {
  models::TransformerRunShape shape;
  shape.max_step_tokens = static_cast<int64_t>(prompt);
  shape.max_context = shape.max_step_tokens + 32;
  shape.all_logits = true;
  return shape;
}

// Rank r's accelerator budget (nullopt: none), and its memory override.
struct RankPlacement {
  std::function<std::optional<uint64_t>(int rank)> budget;
  std::map<int, MemoryResource*> memory;
};

TensorParallelSetup setup_for(int ranks, const RankPlacement& placement = {}) {
  TensorParallelSetup setup;
  setup.ranks = ranks;
  setup.offload = [placement](int r, Tier acc) {
    OffloadOptions o;
    o.prefetch_depth = 1;
    if (placement.budget) {
      if (auto b = placement.budget(r)) o.set_budget(acc, *b);
    }
    auto m = placement.memory.find(r);
    if (m != placement.memory.end()) o.memory_overrides[acc] = m->second;
    return o;
  };
  setup.load = [placement](int r, Tier acc) {
    LoadOptions l;
    l.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
    std::optional<uint64_t> budget = placement.budget ? placement.budget(r) : std::nullopt;
    l.accelerators = {TierCapacity{acc, budget, uint64_t{1} << 30}};
    return l;
  };
  return setup;
}

std::unique_ptr<Platform> sim_platform(int accelerators) {
  return Platform::create(DeviceChoice::kSim, SimOptions{accelerators, uint64_t{1} << 30, 0});
}

struct SplitRun {
  std::vector<int32_t> output;
  std::vector<float> logits;
  std::vector<models::GenerationResult> ranks;
};

SplitRun generate(const std::string& folder, int ranks, const RankPlacement& placement = {}) {
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  auto platform = sim_platform(4);
  TensorParallelRunner tp(*platform, folder, setup_for(ranks, placement), shape_for(prompt.size()));
  models::GenerationOptions options;
  options.max_new_tokens = 32;
  options.ignore_eos = true;
  SplitRun run;
  run.ranks = tp.generate(prompt, options);
  run.output = run.ranks[0].output_ids;
  run.logits = run.ranks[0].logits;
  return run;
}

// max |a - b| / max |b| over each row of `vocab` logits.
double max_row_error(const std::vector<float>& a, const std::vector<float>& b, size_t vocab) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t row = 0; row + vocab <= std::min(a.size(), b.size()); row += vocab) {
    double scale = 0, diff = 0;
    for (size_t i = row; i < row + vocab; ++i) {
      scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
      diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    }
    worst = std::max(worst, diff / std::max(scale, 1e-30));
  }
  return worst;
}

// The message of the E that `fn` throws ("" and a failure when none).
template <typename E>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

class TensorParallelFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TensorParallelFixture, TwoAndFourRanksGiveOneRanksTokensAndLogitsWithinTolerance) {
  const std::string folder = kTestdata + GetParam();
  const size_t vocab = static_cast<size_t>(models::read_transformer_config(folder).vocab_size);
  const SplitRun one = generate(folder, 1);
  // N = 1 is transformers' run (the runner alone is checked against it in
  // models/tests/transformer_test.cc).
  EXPECT_EQ(one.output, reference_ids(folder, "output_ids"));
  for (int ranks : {2, 4}) {
    const SplitRun split = generate(folder, ranks);
    EXPECT_EQ(split.output, one.output) << ranks << " ranks";
    const double error = max_row_error(split.logits, one.logits, vocab);
    EXPECT_LE(error, kLogitTolerance) << ranks << " ranks";
    RecordProperty("max_row_error_" + std::to_string(ranks), std::to_string(error));
    // Every rank computed the same logits from the same reduced state.
    for (int r = 1; r < ranks; ++r) EXPECT_EQ(split.ranks[r].logits, split.logits) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(DenseFixtures, TensorParallelFixture,
                         ::testing::Values("llama_f32", "qwen2_f16", "mistral_sharded_f32",
                                           "llama3_tied_bf16"));

TEST(TensorParallel, OneRankGivesTheRunnersBitsExactly) {
  const std::string folder = kTestdata + "llama_f32";
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  auto platform = sim_platform(1);
  OffloadManager manager(*platform, OffloadOptions{});
  auto kernels =
      models::make_linear_kernels(*platform, manager.memory(platform->accelerator(0).tier()));
  LoadOptions load;
  load.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  load.accelerators = {TierCapacity{platform->accelerator(0).tier(), std::nullopt, 1u << 30}};
  models::TransformerRunner runner(manager, folder, *kernels, load, shape_for(prompt.size()));
  models::GenerationOptions options;
  options.max_new_tokens = 32;
  options.ignore_eos = true;
  const models::GenerationResult alone = runner.generate(prompt, options);
  const SplitRun one = generate(folder, 1);
  EXPECT_EQ(one.output, alone.output_ids);
  EXPECT_EQ(one.logits, alone.logits);
}

// On CUDA (skips without a GPU, or without NCCL): as many ranks as GPUs
// (at most 2) through NCCL give the runner's tokens on one GPU.
TEST(TensorParallel, OnCudaTheRanksThroughNcclGiveOneGpusTokens) {
  if (!cuda_device_available()) GTEST_SKIP() << "needs a CUDA GPU";
  if (!nccl_available()) GTEST_SKIP() << "this build has no NCCL";
  const std::string folder = kTestdata + "llama_f32";
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  auto platform = Platform::create(DeviceChoice::kCuda);
  const int ranks = std::min(platform->accelerator_count(), 2);
  TensorParallelRunner tp(*platform, folder, setup_for(ranks), shape_for(prompt.size()));
  models::GenerationOptions options;
  options.max_new_tokens = 32;
  options.ignore_eos = true;
  const std::vector<models::GenerationResult> results = tp.generate(prompt, options);
  EXPECT_EQ(results[0].output_ids, reference_ids(folder, "output_ids")) << ranks << " ranks";
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(results[r].logits, results[0].logits);
}

// The bytes rank r's part keeps on its accelerator as working memory plus
// two fetch slots and a quarter of its weights: the plan streams the rest.
uint64_t streaming_budget(const std::string& folder, int ranks, int rank) {
  const models::TransformerConfig config = models::read_transformer_config(folder);
  std::shared_ptr<const mmap_store::Checkpoint> base =
      mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
  const TensorParallelShare share = tensor_parallel_share(config, ranks, rank);
  ShardCheckpoint part(base, config, share);
  auto platform = sim_platform(1);
  auto kernels = models::make_linear_kernels(*platform);
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  const uint64_t working = models::transformer_working_bytes(
      models::describe_model_checkpoint(shard_config(config, share), part),
      shape_for(prompt.size()), *kernels);
  // The modules that stream off the accelerator (not the embedding, read in
  // place): two slots of the largest and a quarter of them all.
  models::TransformerLoadLayout layout = models::transformer_load_layout(
      models::describe_model_checkpoint(shard_config(config, share), part), part);
  uint64_t largest = 0, streamable = 0;
  for (const PlanModule& m :
       plan_modules(part, &layout.order, models::transformer_module_of, layout.read_in_place)) {
    if (m.read_in_place) continue;
    largest = std::max<uint64_t>(largest, m.bytes() + 256 * m.tensors.size());
    streamable += m.bytes();
  }
  // Less than the whole share, so something streams.
  return working + std::min(2 * largest + streamable / 4, streamable - 1);
}

TEST(TensorParallel, EachRankStreamsItsPartUnderItsOwnBudgetAndGivesTheSameTokens) {
  const std::string folder = kTestdata + "llama_f32";
  constexpr int kRanks = 2;
  const uint64_t budgets[kRanks] = {streaming_budget(folder, kRanks, 0),
                                    streaming_budget(folder, kRanks, 1)};
  RankPlacement placement;
  placement.budget = [&budgets](int r) -> std::optional<uint64_t> { return budgets[r]; };
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  auto platform = sim_platform(kRanks);
  TensorParallelRunner tp(*platform, folder, setup_for(kRanks, placement),
                          shape_for(prompt.size()));
  for (int r = 0; r < kRanks; ++r) {
    TensorParallelRank& rank = tp.rank(r);
    EXPECT_EQ(rank.tier, platform->accelerator(r).tier());
    // Its own plan streams part of its share.
    EXPECT_GT(rank.runner->loaded().plan.largest_streamed_unit, 0u) << "rank " << r;
    EXPECT_EQ(rank.runner->spec().config.num_heads, 2);
    EXPECT_EQ(rank.runner->spec().config.intermediate_size, 80);
  }
  models::GenerationOptions options;
  options.max_new_tokens = 32;
  options.ignore_eos = true;
  const std::vector<models::GenerationResult> results = tp.generate(prompt, options);
  EXPECT_EQ(results[0].output_ids, reference_ids(folder, "output_ids"));
  for (int r = 0; r < kRanks; ++r) {
    // Each rank streamed over its own link, within its own budget.
    EXPECT_GT(results[r].decode_counters.bytes_h2d, 0u) << "rank " << r;
    const TierUsage usage = tp.rank(r).manager->usage(tp.rank(r).tier);
    EXPECT_LE(usage.peak_bytes, budgets[r]) << "rank " << r;
  }
}

TEST(TensorParallel, ARankOutOfMemoryEndsEveryRankWithAClearError) {
  const std::string folder = kTestdata + "llama_f32";
  auto platform = sim_platform(2);
  std::atomic<bool> fail{false};
  FaultInjectionAdaptor faulty(platform->accelerator(1).memory(),
                               [&fail](uint64_t, size_t) { return fail.load(); });
  RankPlacement placement;
  placement.memory[1] = &faulty;
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  TensorParallelRunner tp(*platform, folder, setup_for(2, placement), shape_for(prompt.size()));
  // Loaded; generate allocates the KV caches, which rank 1 cannot.
  fail = true;
  models::GenerationOptions options;
  options.max_new_tokens = 8;
  const auto start = std::chrono::steady_clock::now();
  const std::string what = error_of<OutOfMemoryError>([&] { tp.generate(prompt, options); });
  EXPECT_EQ(what.rfind("tensor-parallel rank 1 of 2 (sim:1) failed: ", 0), 0u) << what;
  EXPECT_NE(what.find("every rank stopped"), std::string::npos) << what;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_TRUE(tp.group().aborted());
  // The group is spent: a later generate says so instead of waiting.
  EXPECT_THROW(tp.generate(prompt, options), InvalidInputError);
}

TEST(TensorParallel, ACollectiveFailureOnOneRankEndsEveryRankWithAClearError) {
  const std::string folder = kTestdata + "mistral_sharded_f32";
  auto platform = sim_platform(4);
  TensorParallelSetup setup = setup_for(4);
  SimCollectiveOptions faults;
  // Rank 3's 10th all-reduce (in the second decode step) fails.
  faults.fail = [](int rank, uint64_t call) { return rank == 3 && call == 9; };
  setup.group = std::make_unique<SimCollectiveGroup>(4, faults);
  const std::vector<int32_t> prompt = reference_ids(folder, "prompt_ids");
  TensorParallelRunner tp(*platform, folder, std::move(setup), shape_for(prompt.size()));
  models::GenerationOptions options;
  options.max_new_tokens = 8;
  const std::string what = error_of<DeviceError>([&] { tp.generate(prompt, options); });
  EXPECT_EQ(what.rfind("tensor-parallel rank 3 of 4 (sim:3) failed: ", 0), 0u) << what;
  EXPECT_NE(what.find("injected collective fault"), std::string::npos) << what;
  for (const char* other : {"rank 0: ", "rank 1: ", "rank 2: "}) {
    EXPECT_NE(what.find(other), std::string::npos) << other << " in " << what;
  }
}

TEST(TensorParallel, ABudgetTooSmallForARanksWorkingMemoryFailsNamingTheRank) {
  const std::string folder = kTestdata + "llama_f32";
  RankPlacement placement;
  placement.budget = [](int r) -> std::optional<uint64_t> {
    return r == 1 ? std::optional<uint64_t>(4096) : std::nullopt;
  };
  auto platform = sim_platform(2);
  const std::string what = error_of<OutOfBudgetError>(
      [&] { TensorParallelRunner tp(*platform, folder, setup_for(2, placement), shape_for(8)); });
  EXPECT_EQ(what.rfind("tensor-parallel rank 1 of 2 (sim:1) failed: ", 0), 0u) << what;
  EXPECT_NE(what.find("working memory"), std::string::npos) << what;
}

TEST(TensorParallel, AModelThatCannotSplitIsRefusedBeforeLoading) {
  auto platform = sim_platform(4);
  EXPECT_THROW(TensorParallelRunner(*platform, kTestdata + "llama_f32", setup_for(3), shape_for(8)),
               InvalidInputError);
  EXPECT_THROW(
      TensorParallelRunner(*platform, kTestdata + "mixtral_f32", setup_for(2), shape_for(8)),
      InvalidInputError);
  auto two = sim_platform(2);
  EXPECT_THROW(TensorParallelRunner(*two, kTestdata + "llama_f32", setup_for(4), shape_for(8)),
               InvalidInputError);
}

}  // namespace
}  // namespace stowage::parallel
