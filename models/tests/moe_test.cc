// The mixture-of-experts architectures (Mixtral, Qwen2-MoE, Qwen3-MoE)
// against transformers on the committed fixtures (tools/
// make_transformer_fixtures.py: tiny random models with the logits, greedy
// tokens and routed expert ids transformers computed), on the simulated
// accelerator: experts resident, fetched on demand (streamed) and computed
// on the host where their weights are all give transformers' tokens and
// expert ids, within the accelerator's budget.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>

#include "core/platform.h"
#include "mmap_store/checkpoint.h"
#include "models/mlp_runner.h"
#include "models/transformer_runner.h"
#include "offload/loader.h"

namespace stowage::models {
namespace {

const std::string kTestdata = "models/testdata/";

struct MoeReference {
  std::vector<int32_t> prompt, output, expert_ids;  // expert_ids: [layers, positions, top_k]
  std::vector<float> logits;
  int64_t vocab = 0, layers = 0, positions = 0, top_k = 0;
};

template <typename T>
std::vector<T> values_of(const mmap_store::Checkpoint& file, const std::string& name) {
  const Tensor t = file.tensor(name);
  return std::vector<T>(static_cast<const T*>(t.data()), static_cast<const T*>(t.data()) + t.numel());
}

MoeReference moe_reference(const std::string& folder) {
  auto file = mmap_store::open_checkpoint(folder + "/reference.safetensors");
  MoeReference r;
  r.prompt = values_of<int32_t>(*file, "prompt_ids");
  r.output = values_of<int32_t>(*file, "output_ids");
  r.logits = values_of<float>(*file, "logits");
  r.expert_ids = values_of<int32_t>(*file, "expert_ids");
  r.vocab = file->info("logits").shape[1];
  const Shape ids = file->info("expert_ids").shape;
  r.layers = ids[0];
  r.positions = ids[1];
  r.top_k = ids[2];
  return r;
}

// Where the routed experts live and run.
enum class ExpertPlacement {
  kResident,  // everything on the accelerator
  kStreamed,  // experts in pinned RAM, fetched on demand into the fetch slots
  kOnHost,    // experts in pinned RAM, computed there (hostcompute)
  kCached,    // experts in pinned RAM, run from the accelerator expert cache
  kChosen,    // cached, on the host or split: whichever choose_expert_compute measured fastest
};

struct MoeRun {
  std::vector<int32_t> output;
  std::vector<float> logits;
  std::vector<std::vector<int32_t>> experts;  // per layer, as GenerationResult gives them
  uint64_t peak = 0, budget = 0, bytes_h2d = 0;
  int64_t off_accelerator_experts = 0;
  ExpertCacheCounters cache;  // summed over the layers
  ExpertPredictionCounters prediction;
  uint64_t cache_bytes = 0;
  int64_t cache_slots = 0;
  uint64_t host_beside = 0;  // GenerationResult::host_experts_beside
};

bool is_expert(const std::string& module) { return module.find(".experts.") != std::string::npos; }

MoeRun run_moe(const std::string& folder, ExpertPlacement placement, int64_t cache_slots = 6,
               bool predict = true, uint64_t extra_budget = 0,
               DeviceChoice device = DeviceChoice::kSim,
               std::optional<LoadQuantization> quantize = std::nullopt,
               const std::function<void(TransformerRunner&)>& configure = nullptr) {
  const MoeReference ref = moe_reference(folder);
  auto platform = Platform::create(device, SimOptions{1, uint64_t{1} << 30, 0});
  const Tier acc = platform->accelerator(0).tier();
  TransformerRunShape shape;
  shape.max_step_tokens = static_cast<int64_t>(ref.prompt.size());
  shape.max_context = shape.max_step_tokens + 32;
  shape.all_logits = true;
  if (placement == ExpertPlacement::kCached || placement == ExpertPlacement::kChosen) {
    shape.expert_cache_slots = cache_slots;
  }

  // Budget: the working memory, two fetch slots of the largest module and
  // every module but the routed experts, so the plan (experts last) leaves
  // the experts off the accelerator.
  auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
  uint64_t largest = 0, not_experts = 0;
  std::vector<std::string> order;
  for (const PlanModule& m : plan_modules(*checkpoint, &order, transformer_module_of)) {
    largest = std::max<uint64_t>(largest, m.bytes() + 256 * m.tensors.size());
    if (!is_expert(m.path)) not_experts += m.bytes() + 256 * m.tensors.size();
  }
  auto probe_kernels = make_linear_kernels(*platform);
  const uint64_t working = transformer_working_bytes(
      planned_spec(describe_model_folder(folder, *checkpoint), quantize), shape, *probe_kernels);
  OffloadOptions options;
  options.working_reserve[acc] = working;
  std::map<int, uint64_t> budgets;
  MoeRun run;
  if (placement != ExpertPlacement::kResident) {
    run.budget = working + 2 * largest + not_experts + extra_budget;
    options.set_budget(acc, run.budget);
    budgets[0] = run.budget;
  }
  OffloadManager manager(*platform, options);
  LoadOptions load;
  load.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  load.accelerators = memory_budget_for(*platform, budgets).accelerators;
  // An automatic cache needs the experts kept off the accelerator (--cpu-moe);
  // quantized, the budget (of float sizes) would hold them.
  if (cache_slots < 0 || quantize) load.tensor_overrides = experts_off_accelerator(ref.layers);
  load.quantize = quantize;
  auto kernels = make_linear_kernels(*platform, manager.memory(acc));
  TransformerRunner runner(manager, folder, *kernels, load, shape);
  if (placement == ExpertPlacement::kCached && runner.expert_cache() != nullptr) {
    runner.configure_expert_cache(ReplacementPolicyKind::kLfuAging, predict);
    run.cache_bytes = runner.expert_cache()->bytes();
  }
  run.cache_slots = runner.shape().expert_cache_slots;
  if (placement == ExpertPlacement::kChosen) {
    // A link rate: the split is measured too (the cache is there).
    const auto choice = runner.choose_expert_compute(ref.prompt, 4, 1e9);
    EXPECT_GT(choice.accelerator_step_s, 0);
    EXPECT_GT(choice.host_step_s, 0);
    EXPECT_GT(choice.split_step_s, 0);
    EXPECT_TRUE(choice.split_costs.has_value() && choice.split_costs->host_seconds_per_byte > 0);
    // The host's cost is its own compute time over the bytes it computed in
    // decode steps (not the whole generation's time, which counted the
    // prefill and the accelerator's work against the host).
    const TransformerModel::HostDecodeWork work = runner.model().host_expert_decode_work();
    EXPECT_GT(work.bytes, 0u);
    EXPECT_GT(work.seconds, 0.0);
    EXPECT_EQ(runner.expert_compute(), choice.chosen);
  }
  for (const auto& [module, tier] : runner.loaded().plan.device_map) {
    if (!is_expert(module) || tier == acc) continue;
    ++run.off_accelerator_experts;
    if (placement == ExpertPlacement::kOnHost) manager.set_host_compute(module, true);
  }
  if (configure) configure(runner);
  GenerationOptions generation;
  generation.max_new_tokens = 32;
  generation.ignore_eos = true;
  generation.record_routing = true;
  const GenerationResult result = runner.generate(ref.prompt, generation);
  run.output = result.output_ids;
  run.logits = result.logits;
  run.experts = result.routed_experts;
  run.peak = manager.usage(acc).peak_bytes;
  run.bytes_h2d = result.prefill_counters.bytes_h2d + result.decode_counters.bytes_h2d;
  run.host_beside = result.host_experts_beside;
  for (const ExpertCacheCounters& c : result.expert_cache) run.cache += c;
  for (const ExpertPredictionCounters& p : result.expert_predictions) {
    run.prediction.routed += p.routed;
    run.prediction.correct += p.correct;
    run.prediction.withheld += p.withheld;
  }
  return run;
}

double worst_row_error(const std::vector<float>& got, const std::vector<float>& want,
                       int64_t vocab) {
  double worst = 0;
  for (size_t row = 0; row * vocab < want.size(); ++row) {
    double scale = 1, err = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      scale = std::max(scale, std::fabs(double(want[row * vocab + i])));
      err = std::max(err, std::fabs(double(got[row * vocab + i]) - want[row * vocab + i]));
    }
    worst = std::max(worst, err / scale);
  }
  return worst;
}

// The expert ids of every sparse layer and position equal transformers'.
void expect_reference_experts(const MoeRun& run, const MoeReference& ref) {
  ASSERT_EQ(static_cast<int64_t>(run.experts.size()), ref.layers);
  int64_t sparse = 0;
  for (int64_t layer = 0; layer < ref.layers; ++layer) {
    const auto begin = ref.expert_ids.begin() + layer * ref.positions * ref.top_k;
    const std::vector<int32_t> want(begin, begin + ref.positions * ref.top_k);
    if (want.front() < 0) {  // a dense layer
      EXPECT_TRUE(run.experts[layer].empty()) << layer;
      continue;
    }
    ++sparse;
    EXPECT_EQ(run.experts[layer], want) << "layer " << layer;
  }
  EXPECT_GT(sparse, 0);
}

class MoeParity : public ::testing::TestWithParam<std::string> {};

// Resident: transformers' 32 greedy tokens, logits within the dense
// family's 1e-4, and the routed expert ids of every layer and position.
TEST_P(MoeParity, ResidentMatchesTransformersTokensLogitsAndExperts) {
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const MoeRun run = run_moe(folder, ExpertPlacement::kResident);
  EXPECT_EQ(run.output, ref.output);
  ASSERT_EQ(run.logits.size(), ref.logits.size());
  EXPECT_LT(worst_row_error(run.logits, ref.logits, ref.vocab), 1e-4);
  expect_reference_experts(run, ref);
}

// Experts off the accelerator, fetched on demand or computed on the host:
// the same tokens and experts; fetched, the resident logits bit for bit
// (same kernels, same bytes); on the host, within 1e-4 of transformers.
// Peak accelerator memory stays within the budget.
TEST_P(MoeParity, StreamedAndHostComputedExpertsGiveTheResidentTokens) {
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const MoeRun resident = run_moe(folder, ExpertPlacement::kResident);
  const MoeRun streamed = run_moe(folder, ExpertPlacement::kStreamed);
  const MoeRun host = run_moe(folder, ExpertPlacement::kOnHost);
  for (const MoeRun* run : {&streamed, &host}) {
    EXPECT_GT(run->off_accelerator_experts, 0) << "the test means what it says";
    EXPECT_EQ(run->output, ref.output);
    expect_reference_experts(*run, ref);
    EXPECT_LE(run->peak, run->budget);
    ASSERT_EQ(run->logits.size(), resident.logits.size());
  }
  EXPECT_EQ(std::memcmp(streamed.logits.data(), resident.logits.data(),
                        resident.logits.size() * sizeof(float)),
            0);
  EXPECT_LT(worst_row_error(host.logits, ref.logits, ref.vocab), 1e-4);
  // Host-computed experts are never fetched.
  EXPECT_LT(host.bytes_h2d, streamed.bytes_h2d);
}

// Through the accelerator expert cache (6 slots, LFU with aging, the next
// layer's experts predicted and prefetched): transformers' tokens and
// expert ids, the resident logits bit for bit (the same kernels read the
// same bytes from a cache slot), peak accelerator memory within the budget
// with the cache and the KV cache in it; the cache hits, and the predictions
// are counted. With one slot the second routed expert of a token finds no
// slot and runs through the hooks: still the same logits.
TEST_P(MoeParity, CachedExpertsGiveTheResidentLogitsWithinTheBudget) {
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const MoeRun resident = run_moe(folder, ExpertPlacement::kResident);
  const MoeRun streamed = run_moe(folder, ExpertPlacement::kStreamed);
  for (int64_t slots : {6, 1}) {
    SCOPED_TRACE(slots);
    const MoeRun cached = run_moe(folder, ExpertPlacement::kCached, slots);
    EXPECT_GT(cached.off_accelerator_experts, 0);
    EXPECT_EQ(cached.output, ref.output);
    expect_reference_experts(cached, ref);
    ASSERT_EQ(cached.logits.size(), resident.logits.size());
    EXPECT_EQ(std::memcmp(cached.logits.data(), resident.logits.data(),
                          resident.logits.size() * sizeof(float)),
              0);
    EXPECT_GT(cached.cache_bytes, 0u);
    EXPECT_LE(cached.peak, cached.budget);
    EXPECT_GT(cached.cache.hits, 0u);
    EXPECT_GT(cached.cache.misses, 0u);
    if (slots == 1) {
      EXPECT_GT(cached.cache.uncached, 0u);
    } else {
      // Cached experts cross the link less often than fetched-per-use ones.
      EXPECT_LT(cached.bytes_h2d, streamed.bytes_h2d);
      EXPECT_GT(cached.prediction.routed, 0u);
      EXPECT_GT(cached.cache.predicted, 0u);
    }
  }
}

// An automatic cache takes the slots the budget leaves free after loading
// (the experts kept off the accelerator, as --cpu-moe does): none when the
// budget holds only the rest of the model; with 2 MiB more than its margin
// (1% + 16 MiB), one slot per expert off the accelerator (these experts are
// a few KiB); the resident logits, within the budget.
TEST_P(MoeParity, AutomaticCacheTakesWhatTheBudgetLeaves) {
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const MoeRun resident = run_moe(folder, ExpertPlacement::kResident);
  const MoeRun none = run_moe(folder, ExpertPlacement::kCached, -1, true, 0);
  EXPECT_EQ(none.cache_slots, 0);
  const MoeRun some = run_moe(folder, ExpertPlacement::kCached, -1, true, uint64_t{20} << 20);
  EXPECT_EQ(some.cache_slots, some.off_accelerator_experts);
  int64_t sparse_layers = 0;
  for (int64_t layer = 0; layer < ref.layers; ++layer) {
    sparse_layers += ref.expert_ids[layer * ref.positions * ref.top_k] >= 0 ? 1 : 0;
  }
  EXPECT_EQ(some.off_accelerator_experts, 8 * sparse_layers);  // every expert (--cpu-moe)
  EXPECT_LE(some.peak, some.budget);
  ASSERT_EQ(some.logits.size(), resident.logits.size());
  EXPECT_EQ(std::memcmp(some.logits.data(), resident.logits.data(),
                        resident.logits.size() * sizeof(float)),
            0);
}

// The automatic choice measures the three ways and keeps one; each gives
// transformers' tokens and expert ids.
TEST_P(MoeParity, MeasuredChoiceOfExpertComputeKeepsTheTokens) {
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const MoeRun chosen = run_moe(folder, ExpertPlacement::kChosen);
  EXPECT_EQ(chosen.output, ref.output);
  expect_reference_experts(chosen, ref);
  EXPECT_LE(chosen.peak, chosen.budget);
}

// Split (TransformerModel::set_expert_split): each absent expert goes, in
// turn, to what finishes it first given what the layer's earlier ones took
// of each path. The prompt's step sends whole experts each way; a batch-1
// decode step may also split one by rows of its gate and up so both paths
// end together (their other rows and its down projection copied as a part:
// ExpertCache::fetch_part), the host's work on the runner's lane beside the
// accelerator's experts. With the host's cost 1.5x the link's, splitting
// beats either whole path, so no decode expert goes to the host whole; at a
// third of the link's, a layer's first absent expert goes to the host whole
// and the next is split. Transformers' tokens and expert ids, logits within
// 1e-4 (the host's kernels and another order of the sum), within the budget.
TEST_P(MoeParity, SplitBetweenLinkAndHostKeepsTheTokens) {
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const auto split_with = [&](double link, double host) {
    return run_moe(folder, ExpertPlacement::kCached, 2, true, 0, DeviceChoice::kSim, std::nullopt,
                   [link, host](TransformerRunner& runner) {
                     runner.model().set_expert_split(
                         TransformerModel::ExpertSplitCosts{link, host});
                   });
  };
  const MoeRun rows = split_with(1e-9, 1.5e-9);
  const MoeRun whole = split_with(3e-9, 1e-9);
  for (const MoeRun* split : {&rows, &whole}) {
    EXPECT_EQ(split->output, ref.output);
    expect_reference_experts(*split, ref);
    EXPECT_LT(worst_row_error(split->logits, ref.logits, ref.vocab), 1e-4);
    EXPECT_LE(split->peak, split->budget);
    EXPECT_GT(split->cache.host, 0u);  // the prompt's step
    EXPECT_GT(split->cache.split, 0u);
    EXPECT_GT(split->cache.bytes_copied, 0u);  // the parts, and the prompt's copies
  }
  EXPECT_EQ(rows.host_beside, 0u);
  EXPECT_GT(whole.host_beside, 0u);
  EXPECT_LE(whole.host_beside, whole.cache.host);
  // Without a split the same run computes nothing on the host.
  const MoeRun cached = run_moe(folder, ExpertPlacement::kCached, 2);
  EXPECT_EQ(cached.cache.host, 0u);
  EXPECT_EQ(cached.cache.split, 0u);
}

// Guesses that are mostly wrong stop costing copies: under a routing that
// walks every expert in turn (the router's guesses cannot follow it), the
// layers' recent accuracy falls under the floor and their guesses are
// withheld; the tokens follow the forced routing either way.
TEST_P(MoeParity, WrongGuessesAreWithheldFromPrefetch) {
  const std::string folder = kTestdata + GetParam();
  auto walk = [](TransformerRunner& runner) {
    auto calls = std::make_shared<int64_t>(0);
    const int64_t experts = runner.spec().config.moe->num_experts;
    const int64_t k = runner.spec().config.moe->experts_per_token;
    runner.model().set_forced_routing([calls, experts, k](size_t) {
      std::vector<int32_t> ids;
      for (int64_t j = 0; j < k; ++j) ids.push_back(static_cast<int32_t>((*calls * k + j) % experts));
      ++*calls;
      return ids;
    });
  };
  const MoeRun walked = run_moe(folder, ExpertPlacement::kCached, 6, true, 0, DeviceChoice::kSim,
                                std::nullopt, walk);
  EXPECT_GT(walked.prediction.routed, 0u);
  EXPECT_LT(walked.prediction.accuracy(), TransformerModel::kPrefetchAccuracyFloor);
  // Once the accuracy falls (a few steps of 32), most guesses are withheld.
  EXPECT_GT(walked.prediction.withheld, walked.cache.predicted);
}

// Without prediction nothing is prefetched or counted as predicted; the
// logits are the same.
TEST_P(MoeParity, PredictionOffPrefetchesNothing) {
  const std::string folder = kTestdata + GetParam();
  const MoeRun predicted = run_moe(folder, ExpertPlacement::kCached, 6, true);
  const MoeRun plain = run_moe(folder, ExpertPlacement::kCached, 6, false);
  EXPECT_EQ(plain.cache.predicted, 0u);
  EXPECT_EQ(plain.prediction.routed, 0u);
  ASSERT_EQ(plain.logits.size(), predicted.logits.size());
  EXPECT_EQ(std::memcmp(plain.logits.data(), predicted.logits.data(),
                        plain.logits.size() * sizeof(float)),
            0);
}

bool gpu_visible() {
  try {
    return Platform::create(DeviceChoice::kAuto)->backend() == Backend::kCuda;
  } catch (const std::exception&) {
    return false;
  }
}

// On CUDA (the MoE kernels of kernels/cuda/moe_kernels.cu, cuBLASLt
// projections): transformers' tokens and expert ids resident, through the
// expert cache, with experts computed on the host and split between the two
// (the host's on their own stream); logits within 1e-4
// (float32 weights); the cache's logits the resident ones bit for bit.
TEST_P(MoeParity, CudaResidentCachedAndHostComputedExpertsMatchTransformers) {
  if (!gpu_visible()) GTEST_SKIP() << "no GPU visible";
  const std::string folder = kTestdata + GetParam();
  const MoeReference ref = moe_reference(folder);
  const auto cuda = DeviceChoice::kCuda;
  const MoeRun resident = run_moe(folder, ExpertPlacement::kResident, 6, true, 0, cuda);
  const MoeRun cached = run_moe(folder, ExpertPlacement::kCached, 6, true, 0, cuda);
  const MoeRun host = run_moe(folder, ExpertPlacement::kOnHost, 6, true, 0, cuda);
  // The split, its decode steps' host experts and host rows on the lane (a
  // second CUDA stream), the other rows from part copies.
  const MoeRun split = run_moe(folder, ExpertPlacement::kCached, 2, true, 0, cuda, std::nullopt,
                               [](TransformerRunner& runner) {
                                 runner.model().set_expert_split(
                                     TransformerModel::ExpertSplitCosts{3e-9, 1e-9});
                               });
  EXPECT_GT(split.host_beside, 0u);
  EXPECT_GT(split.cache.split, 0u);
  for (const MoeRun* run : {&resident, &cached, &host, &split}) {
    EXPECT_EQ(run->output, ref.output);
    expect_reference_experts(*run, ref);
    ASSERT_EQ(run->logits.size(), ref.logits.size());
    EXPECT_LT(worst_row_error(run->logits, ref.logits, ref.vocab), 1e-4);
  }
  EXPECT_EQ(std::memcmp(cached.logits.data(), resident.logits.data(),
                        resident.logits.size() * sizeof(float)),
            0);
  EXPECT_LE(cached.peak, cached.budget);
  EXPECT_GT(cached.cache.hits, 0u);
}

// Quantized while loading (NF4 with double quantization: each expert's
// packed codes, absmax codes, nested absmax, maps and state are records of
// its module, moved together): resident, through the cache and fetched on
// demand give the same tokens, expert ids and logits bit for bit, and the
// cache copied every part (its bytes per miss are the whole module's).
TEST_P(MoeParity, QuantizedExpertsMoveWithTheirQuantStateThroughTheCache) {
  const std::string folder = kTestdata + GetParam();
  LoadQuantization q;
  q.method = quant::WeightFormat::kNf4;
  q.double_quant = true;
  const auto sim = DeviceChoice::kSim;
  const MoeRun resident = run_moe(folder, ExpertPlacement::kResident, 6, true, 0, sim, q);
  const MoeRun cached = run_moe(folder, ExpertPlacement::kCached, 6, true, 0, sim, q);
  const MoeRun streamed = run_moe(folder, ExpertPlacement::kStreamed, 6, true, 0, sim, q);
  EXPECT_GT(cached.off_accelerator_experts, 0);
  for (const MoeRun* run : {&cached, &streamed}) {
    EXPECT_EQ(run->output, resident.output);
    EXPECT_EQ(run->experts, resident.experts);
    ASSERT_EQ(run->logits.size(), resident.logits.size());
    EXPECT_EQ(std::memcmp(run->logits.data(), resident.logits.data(),
                          resident.logits.size() * sizeof(float)),
              0);
    EXPECT_LE(run->peak, run->budget);
  }
  EXPECT_GT(cached.cache.misses, 0u);
  // A 4-bit expert's parts: more than its packed codes alone.
  auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
  const TransformerSpec spec = describe_model_folder(folder, *checkpoint);
  const LinearSpec& gate = spec.layers[0].moe.experts[0].gate;
  const uint64_t packed = 3 * static_cast<uint64_t>(gate.in_features() * gate.out_features()) / 2;
  EXPECT_GT(cached.cache.bytes_copied / (cached.cache.misses + cached.cache.predicted), packed);
}

// Quantized to NF4 while loading (blocks of 64 within a row: any row bound
// aligns), the split by rows copies each split expert's gate and up rows
// from its bound as byte ranges of the packed codes and absmax, with the
// maps and state whole: the tokens and expert ids of the resident NF4 run,
// logits within 1e-4 of it, experts split and within the budget.
TEST_P(MoeParity, QuantizedExpertsSplitByRowsKeepTheTokens) {
  const std::string folder = kTestdata + GetParam();
  LoadQuantization q;
  q.method = quant::WeightFormat::kNf4;
  q.double_quant = false;
  const auto sim = DeviceChoice::kSim;
  const MoeRun resident = run_moe(folder, ExpertPlacement::kResident, 6, true, 0, sim, q);
  const MoeRun split = run_moe(folder, ExpertPlacement::kCached, 2, true, 0, sim, q,
                               [](TransformerRunner& runner) {
                                 runner.model().set_expert_split(
                                     TransformerModel::ExpertSplitCosts{1e-9, 1.5e-9});
                               });
  EXPECT_EQ(split.output, resident.output);
  EXPECT_EQ(split.experts, resident.experts);
  EXPECT_LT(worst_row_error(split.logits, resident.logits, moe_reference(folder).vocab), 1e-4);
  EXPECT_GT(split.cache.split, 0u);
  EXPECT_LE(split.peak, split.budget);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MoeParity,
                         ::testing::Values("mixtral_f32", "qwen2_moe_f32", "qwen3_moe_f32"));

TEST(MoeConfigParsing, MixtralQwen2MoeAndQwen3MoeKeys) {
  const TransformerConfig mixtral = read_transformer_config(kTestdata + "mixtral_f32");
  ASSERT_TRUE(mixtral.moe.has_value());
  EXPECT_EQ(mixtral.moe->num_experts, 8);
  EXPECT_EQ(mixtral.moe->experts_per_token, 2);
  EXPECT_TRUE(mixtral.moe->renormalize);
  EXPECT_EQ(mixtral.moe->block, "block_sparse_moe");
  const TransformerConfig qwen2 = read_transformer_config(kTestdata + "qwen2_moe_f32");
  EXPECT_FALSE(qwen2.moe->renormalize);
  EXPECT_EQ(qwen2.moe->shared_expert_intermediate_size, 48);
  EXPECT_TRUE(qwen2.qkv_bias);
  const TransformerConfig qwen3 = read_transformer_config(kTestdata + "qwen3_moe_f32");
  EXPECT_TRUE(qwen3.moe->renormalize);
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_TRUE(is_sparse_layer(qwen3, 0));
  EXPECT_FALSE(is_sparse_layer(qwen3, 1));  // mlp_only_layers
  EXPECT_TRUE(is_sparse_layer(qwen3, 2));
}

TEST(MoeModules, EachExpertRouterAndSharedExpertIsItsOwnModule) {
  EXPECT_EQ(transformer_module_of("model.layers.3.block_sparse_moe.experts.5.w1.weight"),
            std::make_pair(std::string("model.layers.3.block_sparse_moe.experts.5"),
                           std::string("w1.weight")));
  EXPECT_EQ(transformer_module_of("model.layers.3.mlp.experts.12.down_proj.weight.absmax"),
            std::make_pair(std::string("model.layers.3.mlp.experts.12"),
                           std::string("down_proj.weight.absmax")));
  EXPECT_EQ(transformer_module_of("model.layers.0.mlp.gate.weight").first,
            "model.layers.0.mlp.gate");
  EXPECT_EQ(transformer_module_of("model.layers.0.mlp.shared_expert.up_proj.weight").first,
            "model.layers.0.mlp.shared_expert");
  EXPECT_EQ(transformer_module_of("model.layers.0.mlp.shared_expert_gate.weight").first,
            "model.layers.0.mlp.shared_expert_gate");
  // A dense layer's MLP stays in the layer.
  EXPECT_EQ(transformer_module_of("model.layers.0.mlp.gate_proj.weight").first, "model.layers.0");
}

}  // namespace
}  // namespace stowage::models
