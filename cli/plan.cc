// `stowage plan --model FILE --max-memory ... [--no-split REGEX] [--json]
// [--prefetch N] [--batch N] [--device auto|cuda|sim]`: prints the device map
// of FILE's modules under the budgets (CLI.md). For a checkpoint of the MLP
// family, accelerator 0 keeps the working memory (activations and kernel
// scratch) a forward of --batch rows (default 1) needs, as `stowage run` does.
// For a Hugging Face model folder of the transformer family, the modules are
// its decoder layers, final norm, head and embedding table, and accelerator 0
// keeps the KV cache and activations of --batch sequences of --prompt-tokens
// + --max-new-tokens positions, as `stowage generate` does. With
// --tensor-parallel N, each rank's plan of its part of the folder
// (cli/tensor_parallel.h), under its accelerator's budget.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/measure.h"
#include "cli/mlp_common.h"
#include "cli/model_session.h"
#include "cli/tensor_parallel.h"
#include "core/error.h"
#include "core/memory_resource.h"
#include "mmap_store/checkpoint.h"
#include "models/mlp_runner.h"
#include "models/transformer_runner.h"
#include "offload/loader.h"
#include "offload/planner.h"

namespace stowage::cli {
namespace {

// The MLP family's description of `checkpoint`, or nothing for a checkpoint
// of another layout (planned with no working reserve).
std::optional<models::MlpSpec> mlp_spec_if_any(const mmap_store::Checkpoint& checkpoint) {
  try {
    return models::describe_checkpoint(checkpoint);
  } catch (const InvalidInputError&) {
    return std::nullopt;
  }
}

}  // namespace

int run_plan(const std::vector<std::string>& args) {
  std::vector<std::string> value_flags = {"model",         "max-memory",     "no-split",
                                          "prefetch",      "batch",          "device",
                                          "prompt-tokens", "max-new-tokens", "override-tensor",
                                          "link-rate",     "host-rate",      kTensorParallelFlag};
  value_flags.insert(value_flags.end(), kHostComputeValueFlags.begin(),
                     kHostComputeValueFlags.end());
  ArgParser parser("plan", value_flags, {"json", kNoHostComputeFlag});
  parser.allow_repeated({"override-tensor"});
  parser.parse(args);
  parser.expect_positional(0, "");
  auto model = parser.get("model");
  if (!model) throw UsageError("--model FILE is required");
  auto max_memory = parser.get("max-memory");
  if (!max_memory) throw UsageError("--max-memory is required (e.g. 0=2GiB,cpu=16GiB)");
  const MemoryBudgets budgets = parse_max_memory(*max_memory);
  const int prefetch = static_cast<int>(parser.get_int("prefetch", 1, 0, 64));
  if (auto no_split = parser.get("no-split")) check_regex_flag("no-split", *no_split);
  const int64_t batch = parser.get_int("batch", 1, 1, 1 << 20);

  const bool folder = std::filesystem::is_directory(*model) &&
                      std::filesystem::exists(std::filesystem::path(*model) / "config.json");
  if (!folder && (parser.has("prompt-tokens") || parser.has("max-new-tokens"))) {
    throw UsageError("--prompt-tokens and --max-new-tokens apply to a model folder");
  }
  for (const char* flag : {"run-on-host", "host-compute", "host-threads", "no-host-compute",
                           "link-rate", "host-rate"}) {
    if (!folder && parser.has(flag)) {
      throw UsageError(fmt::format("--{} applies to a model folder (its decoder layers)", flag));
    }
  }
  const HostComputeFlags host_flags = parse_host_compute_flags(parser);
  auto rate_flag = [&](const char* flag) -> double {
    const auto text = parser.get(flag);
    if (!text) return 0;
    uint64_t bytes = 0;
    try {
      bytes = parse_byte_size(*text);
    } catch (const Error&) {
      bytes = 0;
    }
    if (bytes == 0) {
      throw UsageError(fmt::format(
          "--{}: expected bytes per second as a size > 0 (e.g. 50GiB or 12.5GB), found '{}'", flag,
          *text));
    }
    if (!host_flags.auto_split) {
      throw UsageError(fmt::format("--{} is a rate the split of --host-compute auto is chosen "
                                   "from: it needs --host-compute auto",
                                   flag));
    }
    return static_cast<double>(bytes);
  };
  const double given_link_rate = rate_flag("link-rate");
  const double given_host_rate = rate_flag("host-rate");
  const int64_t prompt_tokens = parser.get_int("prompt-tokens", 128, 1, 1 << 24);
  const int64_t new_tokens = parser.get_int("max-new-tokens", 128, 0, 1 << 24);
  const int tensor_parallel =
      parse_tensor_parallel(parser, {"run-on-host", "host-compute", "host-threads",
                                     "link-rate", "host-rate", "override-tensor", "no-split"});
  if (tensor_parallel > 1) {
    // Each rank's plan of its part (--tensor-parallel N; the model folder).
    if (!folder) throw UsageError("--tensor-parallel applies to a model folder");
    if (budgets.disk) throw UsageError("--tensor-parallel does not take a disk budget yet");
    auto platform = make_platform(parser.get_or("device", "auto"), budgets, tensor_parallel);
    const models::TransformerRunShape shape = run_shape(batch, prompt_tokens, new_tokens);
    return plan_tensor_parallel(*platform, *model, budgets, tensor_parallel, prefetch, shape,
                                parser.has("json"));
  }
  auto checkpoint =
      mmap_store::open_checkpoint(folder ? models::model_checkpoint_path(*model) : *model);
  // The quantization states are checked by the rules inspect and run use
  // (models::check_quantized_weights), also for a checkpoint of no model
  // family, so a plan is never made for a checkpoint that cannot load.
  models::check_quantized_weights(*checkpoint);
  auto platform = make_platform(parser.get_or("device", "auto"), budgets);
  const std::vector<TensorOverride> overrides =
      parse_tensor_overrides(parser.get_all("override-tensor"), *platform,
                             budgets.disk ? "" : "a disk budget in --max-memory (disk=SIZE)");

  PlanRequest request{memory_budget_for(*platform, budgets.accelerators, budgets.cpu, UINT64_MAX,
                                        budgets.disk.has_value(), budgets.disk)};
  request.prefetch_depth = prefetch;
  std::vector<std::string> order;
  std::optional<models::TransformerSpec> transformer;
  uint64_t kv_bytes = 0;
  if (folder) {
    transformer = models::describe_model_folder(*model, *checkpoint);
    models::TransformerLoadLayout layout = models::transformer_load_layout(*transformer, *checkpoint);
    order = std::move(layout.order);
    request.modules = plan_modules(*checkpoint, &order, models::transformer_module_of,
                                   layout.read_in_place);
    request.spread_resident = layout.spread_resident;
    const models::TransformerRunShape shape = run_shape(batch, prompt_tokens, new_tokens);
    models::check_context_supported(transformer->config, shape.max_context);
    std::unique_ptr<models::LinearKernels> kernels = models::make_linear_kernels(*platform);
    kv_bytes = models::kv_cache_bytes(*transformer, shape);
    request.working_reserve[platform->accelerator(0).tier()] =
        models::transformer_working_bytes(*transformer, shape, *kernels);
  } else {
    request.modules = plan_modules(*checkpoint, &order);
  }
  if (auto no_split = parser.get("no-split")) request.no_split.push_back(*no_split);
  if (folder) {
    // set above
  } else if (std::optional<models::MlpSpec> spec = mlp_spec_if_any(*checkpoint)) {
    request.working_reserve[platform->accelerator(0).tier()] =
        working_reserve_bytes(*platform, *spec, batch);
  }
  apply_tensor_overrides(request.modules, overrides);
  const Plan plan = plan_device_map(request);

  // Where each decoder layer computes in each phase (issue #19): resident,
  // streamed, or on the host (--run-on-host; --host-compute auto at the
  // rates measured here on the platform, as generate measures them, or
  // given by --link-rate / --host-rate).
  std::optional<ComputeSplitReport> split;
  if (transformer) {
    const Tier compute = platform->accelerator(0).tier();
    std::vector<SplitLayer> layers;
    std::map<std::string, const PlanModule*> planned;
    for (const PlanModule& m : request.modules) planned[m.path] = &m;
    for (const models::DecoderLayerSpec& spec_layer : transformer->layers) {
      SplitLayer l;
      l.module = spec_layer.module;
      l.host_readable = true;
      for (const PlanTensor& t : planned.at(l.module)->tensors) {
        l.bytes += t.bytes;
        const Tier tier = plan.tier_of_tensor(l.module, t.name);
        if (tier == compute) {
          l.host_readable = false;
        } else {
          l.off_accelerator_bytes += t.bytes;
        }
      }
      if (l.off_accelerator_bytes == 0) l.host_readable = false;
      l.float_weights = spec_layer.gate.layout.format == quant::WeightFormat::kFloat &&
                        spec_layer.q.layout.format == quant::WeightFormat::kFloat;
      layers.push_back(std::move(l));
    }
    if (host_flags.run_on_host) {
      mark_run_on_host(*host_flags.run_on_host, order, layers);
    }
    ComputeRates rates;
    std::string link_source, host_source;
    if (host_flags.auto_split) {
      rates.link_bytes_per_s = given_link_rate > 0
                                   ? given_link_rate
                                   : measure_pinned_h2d_rate(*platform, 0, uint64_t{256} << 20, 3);
      rates.host_bytes_per_s = given_host_rate > 0
                                   ? given_host_rate
                                   : measure_model_host_rate(*transformer, 1, host_flags.threads);
      link_source = given_link_rate > 0 ? "given" : "measured";
      host_source = given_host_rate > 0 ? "given" : rates.host_bytes_per_s > 0 ? "measured" : "";
    } else {
      rates.link_bytes_per_s = 1;  // unused: no split is chosen
    }
    // A given host rate is a what-if: the weight bytes alone, not a
    // measurement of this host's attention.
    const double attention_seconds =
        host_flags.auto_split && rates.host_bytes_per_s > 0 && given_host_rate <= 0
            ? models::measure_host_attention_seconds(
                  transformer->config, 1, prompt_tokens + std::max<int64_t>(new_tokens, 1))
            : 0;
    // The head and final norm off the accelerator stream every step on the
    // link alone (session_streamed_after_layers, as generate counts them).
    uint64_t after_layers = 0;
    for (const std::string& module :
         {transformer->head_module, std::string(models::kFinalNormModule)}) {
      const auto it = planned.find(module);
      if (it == planned.end()) continue;
      for (const PlanTensor& t : it->second->tensors) {
        if (plan.tier_of_tensor(module, t.name) != compute) after_layers += t.bytes;
      }
    }
    // The copies run ahead by the slots the plan holds, less one (fewer than
    // --prefetch asks for where the budget holds fewer; session_prefetch_depth).
    split = decide_compute_split(layers, host_flags.auto_split, rates,
                                 plan.fetch_slots > 0 ? plan.fetch_slots - 1 : prefetch, 1,
                                 host_flags.threads,
                                 attention_seconds, after_layers);
    if (!host_flags.auto_split) split->link_bytes_per_s = 0;
    split->link_rate_source = link_source;
    split->host_rate_source = host_source;
  }
  // The KV caches the accelerator allocates: none for a layer computed on
  // the host in every step, one shared scratch for those computed there in
  // the decode steps only (models::TransformerState::place_kv_cache).
  uint64_t device_kv_bytes = kv_bytes;
  if (split && !split->layers.empty()) {
    const uint64_t layer_kv = kv_bytes / split->layers.size();
    uint64_t on_device = 0;
    bool scratch = false;
    for (const ComputeSplitReport::Layer& l : split->layers) {
      if (l.decode != "host") ++on_device;
      if (l.decode == "host" && l.prefill != "host") scratch = true;
    }
    device_kv_bytes = layer_kv * (on_device + (scratch ? 1 : 0));
  }

  if (!parser.has("json")) {
    std::fputs(escape_control(plan.to_string(request), true).c_str(), stdout);
    if (transformer) {
      std::printf(
          "%s: %lld layers, KV cache %s for %lld sequence(s) x %lld positions "
          "(in the working-memory reserve)\n",
          models::architecture_name(transformer->config.architecture),
          static_cast<long long>(transformer->config.num_layers), format_bytes(kv_bytes).c_str(),
          static_cast<long long>(batch),
          static_cast<long long>(prompt_tokens + std::max<int64_t>(new_tokens, 1)));
      std::fputs(escape_control(compute_split_text(*split), true).c_str(), stdout);
      if (device_kv_bytes != kv_bytes) {
        std::printf("KV cache on the accelerator %s (layers computed on the host keep theirs "
                    "there)\n",
                    format_bytes(device_kv_bytes).c_str());
      }
    }
    return 0;
  }
  boost::json::object out;
  out["model"] = checkpoint->path();
  out["prefetch"] = prefetch;
  boost::json::array modules;
  for (size_t i = 0; i < plan.device_map.size(); ++i) {
    const auto& [path, tier] = plan.device_map[i];
    boost::json::object m;
    m["module"] = path;
    m["tier"] = tier.to_string();
    m["bytes"] = request.modules[i].bytes();
    m["streamed"] = plan.streamed(path);
    auto overridden = plan.tensor_tiers.find(path);
    if (overridden != plan.tensor_tiers.end()) {
      // Tensors placed apart from the module (--override-tensor).
      boost::json::array tensors;
      for (const auto& [name, tensor_tier] : overridden->second) {
        boost::json::object t;
        t["tensor"] = name;
        t["tier"] = tensor_tier.to_string();
        tensors.push_back(std::move(t));
      }
      m["tensor_tiers"] = std::move(tensors);
    }
    modules.push_back(std::move(m));
  }
  out["modules"] = std::move(modules);
  boost::json::object per_tier, reserve;
  for (const auto& [tier, bytes] : plan.bytes_per_tier) per_tier[tier.to_string()] = bytes;
  for (const auto& [tier, bytes] : plan.reserve_per_accelerator) reserve[tier.to_string()] = bytes;
  out["bytes_per_tier"] = std::move(per_tier);
  out["reserve_per_accelerator"] = std::move(reserve);
  out["largest_streamed_unit"] = plan.largest_streamed_unit;
  boost::json::object working;
  for (const auto& [tier, bytes] : plan.working_reserve_per_accelerator) {
    working[tier.to_string()] = bytes;
  }
  out["working_reserve_per_accelerator"] = std::move(working);
  out["batch"] = batch;
  if (transformer) {
    out["architecture"] = models::architecture_name(transformer->config.architecture);
    out["kv_cache_bytes"] = kv_bytes;
    out["device_kv_cache_bytes"] = device_kv_bytes;
    out["prompt_tokens"] = prompt_tokens;
    out["max_new_tokens"] = new_tokens;
    out["host_compute"] = compute_split_json(*split);
  }
  std::puts(boost::json::serialize(out).c_str());
  return 0;
}

}  // namespace stowage::cli
