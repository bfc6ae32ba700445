// `stowage bench --model DIR [--max-memory ...] [--offload-dir DIR] [--prefetch N]
// [--quant none|int8|nf4|fp4 [--blocksize N] [--double-quant]] [--prompt-tokens P]
// [--new-tokens N] [--batches 1,8,32] [--no-resident] [--cuda-graphs] [--run-on-host REGEX]
// [--host-compute off|auto] [--cpu-moe N] [--expert-cache N|auto [--expert-cache-policy lfu|lru]
// [--no-expert-predict]] [--expert-compute accelerator|host|split|auto]
// [--routing-trace uniform|zipf:S] [--tensor-parallel N[,N...]] [--device ...] [--json]`
// (the MoE flags: cli/moe_flags.h;
// each run of a MoE model reports its expert cache and predictions under "moe"):
// for a model folder, in one run: the pinned host-to-device rate, then for each
// configuration (resident where it fits, and under --max-memory when given) the
// prefill of a P-token prompt at batch 1 and the decode of N new tokens at each
// batch (after a 16-token prompt), with tokens/s, the bytes streamed per step,
// the streamed GiB/s, the link-limited tokens/s (link rate / streamed bytes
// per step x batch), stall time and peak accelerator memory. With --cuda-graphs
// each decode is measured a second time with its steps replayed from a
// captured graph (models/decode_graph.h). The device's own read rate is
// measured too: resident decode is bounded by it (weights read per step /
// read rate, the "HBM limit"). With --tensor-parallel each configuration is
// measured for each N listed, split over accelerators 0 .. N-1 (each rank
// under its accelerator's --max-memory budget), with each rank's streamed
// bytes and rate beside its accelerator's own link rate.
#include "cli/bench_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <random>

#include "cli/args.h"
#include "cli/host_cache_flags.h"
#include "cli/measure.h"
#include "cli/mlp_common.h"
#include "cli/mlp_session.h"
#include "cli/model_session.h"
#include "cli/moe_flags.h"
#include "cli/tensor_parallel.h"
#include "core/error.h"
#include "mmap_store/output_path.h"

namespace stowage::cli {
namespace {

constexpr int64_t kDecodePromptTokens = 16;

struct Measurement {
  std::string config;  // "resident" or the budget
  std::string phase;   // "prefill" or "decode"
  int64_t batch = 1;
  int64_t tokens = 0;  // prompt tokens (prefill) or decode steps
  double seconds = 0;
  double tokens_per_s = 0;
  uint64_t streamed_bytes_per_step = 0;
  double streamed_bytes_per_s = 0;
  double link_limit_tokens_per_s = 0;  // 0 when nothing is streamed
  double stall_ms = 0;
  double link_busy_share = 0;  // the copy streams' busy time over the phase's (link_busy_share)
  uint64_t peak_accelerator_bytes = 0;
  bool graphs = false;
  int host_layers = 0;  // decoder layers computed on the host (--run-on-host)
  // --host-compute auto: layers the split put on the host for the decode,
  // the host kernels' rate it measured, and its estimate of a step.
  int auto_host_layers = 0;
  double host_rate = 0;
  double estimated_step_seconds = 0;
  // Where each layer computed in each phase and the rates (budgeted runs).
  std::optional<ComputeSplitReport> split;
  int64_t graph_launches = 0;
  std::string graph_fallback;
  double read_limit_tokens_per_s = 0;  // resident: device read rate / weight bytes per step
  // A budgeted prefill measured in the same run as the resident one: the
  // bound P / max(resident prefill seconds, streamed bytes / link rate), i.e.
  // the lower of the resident prefill's and the link limit's tokens/s.
  double prefill_bound_tokens_per_s = 0;
  int tensor_parallel = 1;
  std::vector<RankRun> ranks;  // tensor_parallel > 1
  boost::json::object moe;             // MoE models: cache and prediction (moe_report)
};

std::vector<int64_t> parse_batches(const std::string& text) {
  return parse_int_list("batches", text, 1, 4096);
}

std::vector<int32_t> random_prompt(int64_t tokens, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(0, vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  for (int32_t& v : ids) v = static_cast<int32_t>(id(rng));
  return ids;
}

// The untimed generation before a timed one, so first-touch costs (kernel
// plans for the step's shapes, lazily loaded kernels, pools) stay out of the
// timing: the prompt's step alone before a timed prefill, the prompt and two
// decode steps before a timed decode.
models::GenerationOptions warm_up(const models::GenerationOptions& timed, bool prefill) {
  models::GenerationOptions warm = timed;
  warm.max_new_tokens = prefill ? 1 : 2;
  return warm;
}

// One model load for one shape; the generation is timed by the runner.
Measurement measure(Platform& platform, const std::string& folder, const SessionConfig& config,
                    const std::optional<LoadQuantization>& quantize, const std::string& label,
                    bool prefill, int64_t batch, int64_t prompt_tokens, int64_t new_tokens,
                    double link_rate, int64_t vocab, bool graphs,
                    const HostComputeFlags& host_flags, const MoeFlags& moe_flags) {
  models::TransformerRunShape shape = run_shape(batch, prompt_tokens, new_tokens);
  if (label != "resident") shape.expert_cache_slots = moe_flags.expert_cache_slots;
  std::unique_ptr<ModelSession> session =
      open_model_session(platform, folder, config, quantize, shape, false);
  session->runner->set_host_threads(host_flags.threads);
  const int host_layers = host_flags.run_on_host && label != "resident"
                              ? compute_on_host(*session, *host_flags.run_on_host)
                              : 0;
  const std::vector<int32_t> prompt = random_prompt(prompt_tokens, vocab, 11);
  apply_moe_flags(*session->runner, moe_flags, new_tokens, prompt, link_rate);
  models::GenerationOptions generation;
  generation.ignore_eos = true;
  generation.max_new_tokens = prefill ? 1 : new_tokens;
  generation.graphs = graphs;
  std::optional<ComputeSplitReport> choice;
  if (label != "resident") {
    HostComputeFlags flags = host_flags;
    flags.auto_split = host_flags.auto_split && !prefill;  // each decode batch chooses its own
    choice = calibrate_compute_split(
        *session, session_compute_split(*session, flags, link_rate, batch, &platform), prompt,
        kCalibrationSteps);
    generation.decode_host_modules = choice->decode_host_modules();
  }
  session->runner->generate(prompt, warm_up(generation, prefill));
  const models::GenerationResult r = session->runner->generate(prompt, generation);
  Measurement m;
  m.config = label;
  if (session->runner->spec().config.moe) m.moe = moe_report(*session->runner, r, moe_flags);
  m.phase = prefill ? "prefill" : "decode";
  m.batch = batch;
  const OffloadCounters& c = prefill ? r.prefill_counters : r.decode_counters;
  const int64_t steps = prefill ? 1 : r.decode_steps;
  m.tokens = prefill ? prompt_tokens : r.decode_steps;
  m.seconds = prefill ? r.prefill_seconds : r.decode_seconds;
  const double work = static_cast<double>(prefill ? prompt_tokens * batch : r.decode_steps * batch);
  m.tokens_per_s = m.seconds > 0 ? work / m.seconds : 0;
  m.streamed_bytes_per_step = steps > 0 ? c.bytes_h2d / static_cast<uint64_t>(steps) : 0;
  m.streamed_bytes_per_s = m.seconds > 0 ? static_cast<double>(c.bytes_h2d) / m.seconds : 0;
  if (m.streamed_bytes_per_step > 0 && link_rate > 0) {
    m.link_limit_tokens_per_s = link_rate / static_cast<double>(m.streamed_bytes_per_step) *
                                (prefill ? static_cast<double>(prompt_tokens) : 1.0) *
                                static_cast<double>(batch);
  }
  m.stall_ms = c.stall_ms;
  m.link_busy_share = link_busy_share(c, m.seconds);
  m.peak_accelerator_bytes = session->manager->usage(session->accelerator).peak_bytes;
  m.graphs = graphs;
  m.host_layers = host_layers;
  if (choice) {
    m.auto_host_layers = static_cast<int>(choice->decode_host_modules().size());
    m.host_rate = choice->host_bytes_per_s;
    m.estimated_step_seconds = choice->split.estimated_seconds;
    m.split = std::move(choice);
  }
  m.graph_launches = r.graph_launches;
  m.graph_fallback = r.graph_fallback;
  return m;
}

// One model load split over `ranks` accelerators (--tensor-parallel) for one
// shape; `links`: each accelerator's pinned host-to-device rate.
Measurement measure_split(Platform& platform, const std::string& folder,
                          const SessionConfig& config,
                          const std::optional<LoadQuantization>& quantize, const std::string& label,
                          bool prefill, int64_t batch, int64_t prompt_tokens, int64_t new_tokens,
                          const std::vector<double>& links, int64_t vocab, int ranks) {
  models::TransformerRunShape shape = run_shape(batch, prompt_tokens, new_tokens);
  parallel::TensorParallelRunner runner(
      platform, folder, tensor_parallel_setup(config, ranks, quantize), shape);
  const std::vector<int32_t> prompt = random_prompt(prompt_tokens, vocab, 11);
  models::GenerationOptions generation;
  generation.ignore_eos = true;
  generation.max_new_tokens = prefill ? 1 : new_tokens;
  runner.generate(prompt, warm_up(generation, prefill));
  const std::vector<models::GenerationResult> results = runner.generate(prompt, generation);
  const models::GenerationResult& r = results.front();
  Measurement m;
  m.config = fmt::format("{} tp={}", label, ranks);
  m.tensor_parallel = ranks;
  m.phase = prefill ? "prefill" : "decode";
  m.batch = batch;
  m.tokens = prefill ? prompt_tokens : r.decode_steps;
  m.seconds = prefill ? r.prefill_seconds : r.decode_seconds;
  const double work = static_cast<double>(prefill ? prompt_tokens * batch : r.decode_steps * batch);
  m.tokens_per_s = m.seconds > 0 ? work / m.seconds : 0;
  m.ranks = rank_runs(platform, runner, results, false);
  // The step is as slow as its slowest rank's link: each streams its own part.
  double limit = 0;
  for (size_t i = 0; i < m.ranks.size(); ++i) {
    RankRun& rank = m.ranks[i];
    rank.link_bytes_per_s = links.at(static_cast<size_t>(runner.rank(static_cast<int>(i)).accelerator));
    const models::GenerationResult& g = results[i];
    const uint64_t bytes = prefill ? g.prefill_counters.bytes_h2d : g.decode_counters.bytes_h2d;
    const uint64_t per_step = prefill ? bytes : rank.streamed_bytes_per_step();
    m.streamed_bytes_per_step += per_step;
    m.streamed_bytes_per_s += m.seconds > 0 ? static_cast<double>(bytes) / m.seconds : 0;
    m.stall_ms = std::max(m.stall_ms, (prefill ? g.prefill_counters : g.decode_counters).stall_ms);
    m.link_busy_share = std::max(
        m.link_busy_share,
        link_busy_share(prefill ? g.prefill_counters : g.decode_counters, m.seconds));
    m.peak_accelerator_bytes = std::max(m.peak_accelerator_bytes, rank.peak_bytes);
    if (per_step > 0 && rank.link_bytes_per_s > 0) {
      const double own = rank.link_bytes_per_s / static_cast<double>(per_step) *
                         (prefill ? static_cast<double>(prompt_tokens) : 1.0) *
                         static_cast<double>(batch);
      limit = limit > 0 ? std::min(limit, own) : own;
    }
  }
  m.link_limit_tokens_per_s = limit;
  return m;
}

}  // namespace

bool is_model_folder(const std::string& path) {
  return std::filesystem::is_directory(path) &&
         std::filesystem::exists(std::filesystem::path(path) / "config.json");
}

int bench_model_folder(const std::vector<std::string>& args) {
  std::vector<std::string> value_flags = {"model",     "max-memory",    "offload-dir",
                                          "prefetch",  "device",        "quant",
                                          "blocksize", "prompt-tokens", "new-tokens",
                                          "batches",   "override-tensor", kTensorParallelFlag};
  value_flags.insert(value_flags.end(), kHostComputeValueFlags.begin(),
                     kHostComputeValueFlags.end());
  value_flags.insert(value_flags.end(), kMoeValueFlags.begin(), kMoeValueFlags.end());
  ArgParser p("bench", with_host_cache_flags(value_flags),
              {"json", "no-resident", "double-quant", "cuda-graphs", kNoHostComputeFlag,
               kNoExpertPredictFlag},
              kHostCacheOptionalFlags);
  p.allow_repeated({"override-tensor"});
  p.parse(args);
  p.expect_positional(0, "no positional arguments (the model is --model DIR)");
  const std::string folder = *p.get("model");
  const int64_t prompt_tokens = p.get_int("prompt-tokens", 512, 1, 1 << 20);
  const int64_t new_tokens = p.get_int("new-tokens", 32, 1, 1 << 20);
  const std::vector<int64_t> batches = parse_batches(p.get_or("batches", "1,8,32"));
  const std::optional<LoadQuantization> quantize = parse_quant_flags(p, false);
  const int prefetch = static_cast<int>(p.get_int("prefetch", 2, 0, 64));
  MemoryBudgets budgets;
  if (auto text = p.get("max-memory")) budgets = parse_max_memory(*text);
  const std::optional<std::string> offload_dir = p.get("offload-dir");
  if (offload_dir) {
    mmap_store::check_output_folder(*offload_dir, {*p.get("model")}, "--offload-dir");
  }
  if (budgets.disk && !offload_dir) {
    throw UsageError("--max-memory gives a disk budget but no --offload-dir was given");
  }
  std::vector<std::string> not_split = {"offload-dir", "cuda-graphs", "host-cache",
                                        kNoExpertPredictFlag};
  not_split.insert(not_split.end(), kHostComputeValueFlags.begin(), kHostComputeValueFlags.end());
  not_split.insert(not_split.end(), kMoeValueFlags.begin(), kMoeValueFlags.end());
  const std::vector<int> splits = parse_tensor_parallel_list(p, not_split);
  const int most_ranks = *std::max_element(splits.begin(), splits.end());
  auto platform = make_platform(p.get_or("device", "auto"), budgets, most_ranks);
  if (most_ranks > platform->accelerator_count()) {
    throw UsageError(fmt::format("--tensor-parallel {} needs {} accelerators, but {} are present",
                                 most_ranks, most_ranks, platform->accelerator_count()));
  }
  SessionConfig budgeted = session_config_for(*platform, budgets, offload_dir, prefetch);
  budgeted.tensor_overrides = parse_tensor_overrides(p.get_all("override-tensor"), *platform,
                                                     offload_dir ? "" : "--offload-dir");
  if (!budgeted.tensor_overrides.empty() && !p.has("max-memory")) {
    throw UsageError("--override-tensor applies to the budgeted runs: it needs --max-memory");
  }
  const MoeFlags moe_flags = parse_moe_flags(p);
  if ((moe_flags.cpu_moe > 0 || moe_flags.expert_cache_slots != 0) && !p.has("max-memory")) {
    throw UsageError(
        "--cpu-moe and --expert-cache apply to the budgeted runs: they need --max-memory");
  }
  for (const TensorOverride& o : models::experts_off_accelerator(moe_flags.cpu_moe)) {
    budgeted.tensor_overrides.push_back(o);
  }
  std::unique_ptr<hostcache::SharedWeightCache> host_cache =
      make_host_cache(*platform, p, "transformer");
  budgeted.host_cache = host_cache.get();
  int64_t vocab = 0;
  uint64_t step_weight_bytes = 0;  // a decode step reads every weight but the embedding rows
  {
    auto checkpoint = mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
    const models::TransformerConfig config =
        models::describe_model_folder(folder, *checkpoint).config;
    vocab = config.vocab_size;
    step_weight_bytes = checkpoint->total_bytes();
    const std::string table = std::string(models::kEmbeddingModule) + ".weight";
    if (!config.tie_word_embeddings && checkpoint->contains(table)) {
      step_weight_bytes -= checkpoint->info(table).bytes;
    }
  }
  const double link_rate = measure_pinned_h2d_rate(*platform, 0, uint64_t{512} << 20, 5);
  // Each accelerator's own link, alone (--tensor-parallel: the ranks'
  // links; the same run as the measurements).
  std::vector<double> links = {link_rate};
  for (int a = 1; a < most_ranks; ++a) {
    links.push_back(measure_pinned_h2d_rate(*platform, a, uint64_t{512} << 20, 5));
  }
  const double read_rate = measure_device_read_rate(*platform, 0, uint64_t{1} << 30, 5);
  const bool graphs = p.has("cuda-graphs");
  const HostComputeFlags host_flags = parse_host_compute_flags(p);
  const bool auto_host = host_flags.auto_split;
  if (host_flags.run_on_host && !p.has("max-memory")) {
    throw UsageError("--run-on-host needs --max-memory");
  }

  std::vector<std::pair<std::string, SessionConfig>> configs;
  if (!p.has("no-resident")) {
    configs.emplace_back("resident", session_config_for(*platform, {}, std::nullopt, prefetch));
  }
  if (p.has("max-memory")) configs.emplace_back(*p.get("max-memory"), budgeted);
  if (configs.empty()) throw UsageError("--no-resident needs --max-memory");

  std::vector<Measurement> runs;
  for (const int ranks : splits) {
  for (const auto& [label, config] : configs) {
    try {
      if (ranks > 1) {
        runs.push_back(measure_split(*platform, folder, config, quantize, label, true, 1,
                                     prompt_tokens, 1, links, vocab, ranks));
        for (int64_t batch : batches) {
          runs.push_back(measure_split(*platform, folder, config, quantize, label, false, batch,
                                       kDecodePromptTokens, new_tokens, links, vocab, ranks));
        }
        continue;
      }
      runs.push_back(measure(*platform, folder, config, quantize, label, true, 1, prompt_tokens, 1,
                             link_rate, vocab, false, host_flags, moe_flags));
      for (int64_t batch : batches) {
        for (bool captured : {false, true}) {
          if (captured && !graphs) continue;
          Measurement m = measure(*platform, folder, config, quantize, label, false, batch,
                                  kDecodePromptTokens, new_tokens, link_rate, vocab, captured,
                                  host_flags, moe_flags);
          if (label == "resident" && step_weight_bytes > 0) {
            m.read_limit_tokens_per_s =
                read_rate / static_cast<double>(step_weight_bytes) * static_cast<double>(batch);
          }
          runs.push_back(std::move(m));
        }
      }
    } catch (const OutOfMemoryError& e) {
      if (label != "resident") throw;
      std::fprintf(stderr, "stowage bench: resident run skipped: %s\n", e.what());
    } catch (const OutOfBudgetError& e) {
      if (label != "resident") throw;
      std::fprintf(stderr, "stowage bench: resident run skipped: %s\n", e.what());
    }
  }
  }

  for (Measurement& m : runs) {
    if (m.phase != "prefill" || m.config == "resident" || m.link_limit_tokens_per_s <= 0) continue;
    for (const Measurement& r : runs) {
      if (r.phase == "prefill" && r.config == "resident" && r.tensor_parallel == m.tensor_parallel &&
          r.tokens == m.tokens) {
        m.prefill_bound_tokens_per_s = std::min(r.tokens_per_s, m.link_limit_tokens_per_s);
      }
    }
  }

  const double gib = 1024.0 * 1024.0 * 1024.0;
  if (p.has("json")) {
    boost::json::object o;
    o["model"] = folder;
    o["link_bytes_per_s"] = link_rate;
    o["link_bytes_per_s_per_accelerator"] = boost::json::value_from(links);
    o["device_read_bytes_per_s"] = read_rate;
    o["decode_step_weight_bytes"] = step_weight_bytes;
    o["prompt_tokens"] = prompt_tokens;
    o["new_tokens"] = new_tokens;
    o["host_threads"] = host_flags.threads;
    boost::json::array list;
    for (const Measurement& m : runs) {
      boost::json::object r;
      r["config"] = m.config;
      r["phase"] = m.phase;
      r["batch"] = m.batch;
      r["tokens"] = m.tokens;
      r["seconds"] = m.seconds;
      r["tokens_per_s"] = m.tokens_per_s;
      r["streamed_bytes_per_step"] = m.streamed_bytes_per_step;
      r["streamed_bytes_per_s"] = m.streamed_bytes_per_s;
      r["link_limit_tokens_per_s"] = m.link_limit_tokens_per_s;
      r["share_of_link_limit"] =
          m.link_limit_tokens_per_s > 0 ? m.tokens_per_s / m.link_limit_tokens_per_s : 0.0;
      r["stall_ms"] = m.stall_ms;
      r["link_busy_share"] = m.link_busy_share;
      r["peak_accelerator_bytes"] = m.peak_accelerator_bytes;
      r["graphs"] = m.graphs;
      r["host_layers"] = m.host_layers;
      if (auto_host && m.phase == "decode" && m.config != "resident") {
        r["auto_host_layers"] = m.auto_host_layers;
        r["host_bytes_per_s"] = m.host_rate;
        r["estimated_step_seconds"] = m.estimated_step_seconds;
      }
      if (m.split) r["host_compute"] = compute_split_json(*m.split);
      if (!m.moe.empty()) r["moe"] = m.moe;
      r["tensor_parallel"] = m.tensor_parallel;
      if (!m.ranks.empty()) r["ranks"] = tensor_parallel_json(m.ranks)["per_rank"];
      if (m.graphs) {
        r["graph_launches"] = m.graph_launches;
        r["graph_fallback"] = m.graph_fallback;
      }
      if (m.prefill_bound_tokens_per_s > 0) {
        r["prefill_bound_tokens_per_s"] = m.prefill_bound_tokens_per_s;
        r["share_of_prefill_bound"] = m.tokens_per_s / m.prefill_bound_tokens_per_s;
      }
      if (m.read_limit_tokens_per_s > 0) {
        r["read_limit_tokens_per_s"] = m.read_limit_tokens_per_s;
        r["share_of_read_limit"] = m.tokens_per_s / m.read_limit_tokens_per_s;
      }
      list.push_back(std::move(r));
    }
    o["runs"] = std::move(list);
    if (host_cache) {
      o["host_cache"] = host_cache_report(*host_cache);
    }
    std::printf("%s\n", boost::json::serialize(o).c_str());
    return 0;
  }
  std::printf(
      "model %s; pinned host-to-device link %.2f GiB/s, device read %.1f GiB/s (same run)\n",
      folder.c_str(), link_rate / gib, read_rate / gib);
  for (size_t a = 1; a < links.size(); ++a) {
    std::printf("accelerator %zu's link %.2f GiB/s\n", a, links[a] / gib);
  }
  std::printf("host compute: %d thread%s (one core left to the copy submission by default)\n",
              host_flags.threads, host_flags.threads == 1 ? "" : "s");
  std::printf("%-16s %-8s %5s %8s %12s %14s %10s %14s %10s %12s\n", "config", "phase", "batch",
              "tokens", "tokens/s", "streamed/step", "GiB/s", "link limit/s", "of limit", "peak");
  for (const Measurement& m : runs) {
    if (m.graphs && !m.graph_fallback.empty()) {
      std::printf("(graphs: %s)\n", m.graph_fallback.c_str());
    }
    std::printf(
        "%-16s %-8s %5lld %8lld %12.2f %14s %10.2f %14s %10s %12s\n", m.config.c_str(),
        (m.phase + (m.graphs ? "+graph" : "")).c_str(), static_cast<long long>(m.batch), static_cast<long long>(m.tokens),
        m.tokens_per_s, format_bytes(m.streamed_bytes_per_step).c_str(),
        m.streamed_bytes_per_s / gib,
        m.link_limit_tokens_per_s > 0 ? fmt::format("{:.2f}", m.link_limit_tokens_per_s).c_str()
                                      : "-",
        m.link_limit_tokens_per_s > 0
            ? fmt::format("{:.0f}%", 100.0 * m.tokens_per_s / m.link_limit_tokens_per_s).c_str()
            : "-",
        format_bytes(m.peak_accelerator_bytes).c_str());
    if (m.prefill_bound_tokens_per_s > 0) {
      std::printf("%-16s prefill bound P / max(resident prefill, streamed bytes / link): %.2f "
                  "tokens/s; this run %.0f%% of it\n",
                  "", m.prefill_bound_tokens_per_s,
                  100.0 * m.tokens_per_s / m.prefill_bound_tokens_per_s);
    }
    if (!m.ranks.empty()) std::fputs(tensor_parallel_text(m.ranks).c_str(), stdout);
  }
  std::printf("reproduce: stowage bench --model %s%s%s\n", folder.c_str(),
              p.has("max-memory") ? (" --max-memory " + *p.get("max-memory")).c_str() : "",
              p.has(kTensorParallelFlag)
                  ? (" --tensor-parallel " + *p.get(kTensorParallelFlag)).c_str()
                  : "");
  return 0;
}

}  // namespace stowage::cli
