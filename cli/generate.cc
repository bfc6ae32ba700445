// `stowage generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3)
// [--max-new-tokens N] [--temperature T --top-p P --top-k K --seed S]
// [--ignore-eos] [--max-memory ...] [--offload-dir DIR] [--quant none|int8|nf4|fp4
// [--blocksize N] [--double-quant]] [--prefetch N] [--device ...] [--json]
// [--dump-logits FILE] [--trace FILE.json] [--tensor-parallel N]`: runs a
// Hugging Face model folder of the transformer family (CLI.md) through the
// offload runtime (split over N accelerators with --tensor-parallel) and
// prints the text as it is generated, then one line of rates.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/host_cache_flags.h"
#include "cli/measure.h"
#include "cli/mlp_common.h"
#include "cli/mlp_session.h"
#include "cli/model_session.h"
#include "cli/moe_flags.h"
#include "cli/tensor_parallel.h"
#include "core/error.h"
#include "mmap_store/output_path.h"
#include "mmap_store/safetensors_writer.h"
#include "models/linear.h"
#include "models/transformer_runner.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"
#include "parallel/tensor_parallel_runner.h"
#include "tokenizer/streaming_decoder.h"
#include "tokenizer/tokenizer.h"

namespace stowage::cli {
namespace {

std::vector<int32_t> parse_ids(const std::string& text) {
  const std::vector<int64_t> values = parse_int_list("prompt-ids", text, 0, INT32_MAX);
  return std::vector<int32_t>(values.begin(), values.end());
}

}  // namespace

int run_generate(const std::vector<std::string>& args,
                 mmap_store::TemporaryFileRegistry* temporaries) {
  std::vector<std::string> value_flags = {
      "model",  "prompt",       "prompt-ids", "max-new-tokens", "temperature", "top-p",
      "top-k",  "seed",         "max-memory", "offload-dir",    "quant",       "blocksize",
      "prefetch", "device",     "dump-logits", "batch",         "override-tensor",
      kTensorParallelFlag};
  value_flags.insert(value_flags.end(), kHostComputeValueFlags.begin(),
                     kHostComputeValueFlags.end());
  value_flags.insert(value_flags.end(), kMoeValueFlags.begin(), kMoeValueFlags.end());
  value_flags.push_back("trace");
  ArgParser parser("generate", with_host_cache_flags(value_flags),
                   {"ignore-eos", "json", "double-quant", "cuda-graphs", kNoHostComputeFlag,
                    kNoExpertPredictFlag},
                   kHostCacheOptionalFlags);
  parser.allow_repeated({"override-tensor"});
  parser.parse(args);
  parser.expect_positional(0, "");
  const bool generation_graphs = parser.has("cuda-graphs");
  const HostComputeFlags host_flags = parse_host_compute_flags(parser);
  const MoeFlags moe_flags = parse_moe_flags(parser);
  std::vector<std::string> not_split = {"offload-dir", "cuda-graphs", "host-cache",
                                        kNoExpertPredictFlag};
  not_split.insert(not_split.end(), kHostComputeValueFlags.begin(), kHostComputeValueFlags.end());
  not_split.insert(not_split.end(), kMoeValueFlags.begin(), kMoeValueFlags.end());
  const int tensor_parallel = parse_tensor_parallel(parser, not_split);
  const auto model = parser.get("model");
  if (!model) throw UsageError("--model DIR is required");
  if (parser.has("prompt") == parser.has("prompt-ids")) {
    throw UsageError("give exactly one of --prompt TEXT and --prompt-ids 1,2,3");
  }
  const int64_t max_new = parser.get_int("max-new-tokens", 128, 0, 1 << 20);
  const double temperature = parser.get_double("temperature", 0.0);
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    throw UsageError(fmt::format("--temperature: expected a number >= 0, found {}", temperature));
  }
  const double top_p = parser.get_double("top-p", 1.0);
  if (!(top_p > 0 && top_p <= 1)) {
    throw UsageError(fmt::format("--top-p: expected a number in (0, 1], found {}", top_p));
  }
  const int64_t top_k = parser.get_int("top-k", 0, 0, INT32_MAX);
  const int64_t seed = parser.get_int("seed", 0, 0, INT64_MAX);
  const int64_t batch = parser.get_int("batch", 1, 1, 4096);
  const int prefetch = static_cast<int>(parser.get_int("prefetch", 1, 0, 64));
  const auto max_memory = parser.get("max-memory");
  const MemoryBudgets budgets = max_memory ? parse_max_memory(*max_memory) : MemoryBudgets{};
  const auto offload_dir = parser.get("offload-dir");
  if (budgets.disk && !offload_dir) {
    throw UsageError("--max-memory gives a disk budget but no --offload-dir was given");
  }
  const std::optional<LoadQuantization> quantize = parse_quant_flags(parser, true);
  const bool json = parser.has("json");
  const auto dump_logits = parser.get("dump-logits");
  // Outputs never replace the model's own files, and are refused before loading.
  if (dump_logits) mmap_store::check_output_file(*dump_logits, {*model}, "--dump-logits");
  const auto trace_path = parser.get("trace");
  if (trace_path) {
    mmap_store::check_output_file(*trace_path, {*model}, "--trace");
    if (dump_logits && std::filesystem::weakly_canonical(*trace_path) ==
                           std::filesystem::weakly_canonical(*dump_logits)) {
      throw UsageError(
          fmt::format("--trace and --dump-logits name the same file '{}'", *trace_path));
    }
  }
  if (offload_dir) mmap_store::check_output_folder(*offload_dir, {*model}, "--offload-dir");

  // The tokenizer, where the prompt is text or the folder has one.
  const std::string tokenizer_path = (std::filesystem::path(*model) / "tokenizer.json").string();
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (std::filesystem::is_regular_file(tokenizer_path)) {
    tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(tokenizer_path));
  } else if (parser.has("prompt")) {
    throw InvalidInputError(fmt::format(
        "{}: --prompt needs the folder's tokenizer.json, found none (give --prompt-ids instead)",
        *model));
  }
  const std::vector<int32_t> prompt = parser.has("prompt")
                                          ? tok->encode(*parser.get("prompt"), true)
                                          : parse_ids(*parser.get("prompt-ids"));
  if (prompt.empty()) throw InvalidInputError("the prompt encodes to no tokens");

  auto platform = make_platform(parser.get_or("device", "auto"), budgets, tensor_parallel);
  SessionConfig session_config = session_config_for(*platform, budgets, offload_dir, prefetch);
  session_config.tensor_overrides = parse_tensor_overrides(
      parser.get_all("override-tensor"), *platform, offload_dir ? "" : "--offload-dir");
  for (const TensorOverride& o : models::experts_off_accelerator(moe_flags.cpu_moe)) {
    session_config.tensor_overrides.push_back(o);
  }
  std::unique_ptr<hostcache::SharedWeightCache> host_cache =
      make_host_cache(*platform, parser, "transformer");
  session_config.host_cache = host_cache.get();
  // Every copy, compute and stall span of the run (written after the
  // session ends, when the spans' events have all been reached).
  TraceRecorder trace;
  if (trace_path) session_config.trace = &trace;
  models::TransformerRunShape shape =
      run_shape(batch, static_cast<int64_t>(prompt.size()), max_new);
  shape.all_logits = dump_logits.has_value();
  shape.expert_cache_slots = moe_flags.expert_cache_slots;

  models::GenerationResult result;
  std::string text;
  uint64_t peak = 0;
  uint64_t streamed_per_token = 0;
  double link_rate = 0;
  int64_t vocab = 0;
  Tier acc = Tier::pinned_host();
  int host_layers = 0;
  ComputeSplitReport split;
  boost::json::object moe;  // MoE models: cache and prediction (moe_report)
  std::vector<RankRun> ranks;  // --tensor-parallel N > 1
  models::GenerationOptions generation;
  generation.max_new_tokens = max_new;
  generation.temperature = static_cast<float>(temperature);
  generation.top_p = static_cast<float>(top_p);
  generation.top_k = top_k;
  generation.seed = static_cast<uint64_t>(seed);
  generation.ignore_eos = parser.has("ignore-eos");
  generation.graphs = generation_graphs;
  std::unique_ptr<tokenizer::StreamingDecoder> stream_text;
  if (tok) stream_text = std::make_unique<tokenizer::StreamingDecoder>(*tok, true);
  int64_t printed = 0;
  generation.on_token = [&](int32_t id) {
    if (json) return;
    if (stream_text) {
      std::fputs(stream_text->append(id).c_str(), stdout);
    } else {
      std::printf("%s%d", printed++ == 0 ? "" : " ", id);
    }
    std::fflush(stdout);
  };
  if (tensor_parallel > 1) {
    // Each rank its part of every layer on its own accelerator and budget.
    parallel::TensorParallelRunner runner(
        *platform, *model, tensor_parallel_setup(session_config, tensor_parallel, quantize), shape);
    vocab = runner.config().vocab_size;
    acc = runner.rank(0).tier;
    const std::vector<models::GenerationResult> results = runner.generate(prompt, generation);
    result = results.front();
    bool streamed = false;
    for (const models::GenerationResult& r : results) {
      streamed = streamed || r.prefill_counters.bytes_h2d + r.decode_counters.bytes_h2d > 0;
    }
    ranks = rank_runs(*platform, runner, results, streamed);
    for (const RankRun& r : ranks) {
      peak = std::max(peak, r.peak_bytes);
      streamed_per_token += r.streamed_bytes_per_step();
    }
    for (const RankRun& r : ranks) link_rate += r.link_bytes_per_s;  // every rank's link
  } else {
    std::unique_ptr<ModelSession> session =
        open_model_session(*platform, *model, session_config, quantize, shape, true);
    acc = session->accelerator;
    session->runner->set_host_threads(host_flags.threads);
    if (host_flags.run_on_host) host_layers = compute_on_host(*session, *host_flags.run_on_host);
    OffloadManager& manager = *session->manager;
    models::TransformerRunner& runner = *session->runner;
    vocab = runner.spec().config.vocab_size;
    apply_moe_flags(runner, moe_flags, max_new, prompt,
                    moe_flags_need_link_rate(moe_flags)
                        ? measure_pinned_h2d_rate(*platform,
                                                  manager.options().compute_accelerator,
                                                  uint64_t{256} << 20, 3)
                        : 0.0);

    split = calibrate_compute_split(
        *session,
        session_compute_split(
            *session, host_flags,
            host_flags.auto_split ? measure_pinned_h2d_rate(*platform,
                                                            manager.options().compute_accelerator,
                                                            uint64_t{256} << 20, 3)
                                  : 0.0,
            batch, platform.get()),
        prompt, kCalibrationSteps);
    generation.decode_host_modules = split.decode_host_modules();
    result = runner.generate(prompt, generation);
    if (runner.spec().config.moe) moe = moe_report(runner, result, moe_flags);
    peak = manager.usage(acc).peak_bytes;
    const int64_t steps = result.decode_steps;
    if (steps > 0) streamed_per_token = result.decode_counters.bytes_h2d / steps;
    if (result.decode_counters.bytes_h2d + result.prefill_counters.bytes_h2d > 0) {
      link_rate = measure_pinned_h2d_rate(*platform, manager.options().compute_accelerator,
                                          uint64_t{256} << 20, 3);
    }
  }
  if (stream_text && !json) std::fputs(stream_text->finish().c_str(), stdout);
  if (tok) text = tok->decode(result.output_ids, true);
  if (trace_path) trace.write(*trace_path);

  const double prefill_rate =
      result.prefill_seconds > 0
          ? static_cast<double>(result.prompt_tokens * batch) / result.prefill_seconds
          : 0;
  const double decode_rate =
      result.decode_seconds > 0
          ? static_cast<double>(result.decode_steps * batch) / result.decode_seconds
          : 0;
  double streamed_rate =
      result.decode_seconds > 0
          ? static_cast<double>(result.decode_counters.bytes_h2d) / result.decode_seconds
          : 0;
  if (!ranks.empty()) {
    // Every rank's link at once.
    streamed_rate = 0;
    for (const RankRun& r : ranks) streamed_rate += r.streamed_bytes_per_s();
  }
  if (dump_logits) {
    const int64_t positions = static_cast<int64_t>(result.logits.size()) / vocab;
    mmap_store::AtomicFileOptions out_options;
    out_options.registry = temporaries;  // removed by the interrupt handler
    mmap_store::SafetensorsWriter writer(*dump_logits, out_options);
    writer.declare("logits", DType::kF32, Shape{positions, vocab});
    writer.write("logits", result.logits.data(), result.logits.size() * sizeof(float));
    writer.commit();
  }
  if (json) {
    boost::json::object o;
    o["prompt_ids"] = boost::json::value_from(prompt);
    o["output_ids"] = boost::json::value_from(result.output_ids);
    o["text"] = text;
    o["prefill_tokens_per_s"] = prefill_rate;
    o["decode_tokens_per_s"] = decode_rate;
    o["streamed_bytes_per_token"] = streamed_per_token;
    o["streamed_bytes_per_s"] = streamed_rate;
    o["prefill_streamed_bytes"] = result.prefill_counters.bytes_h2d;
    o["link_bytes_per_s"] = link_rate;
    o["link_busy_share"] = link_busy_share(result.decode_counters, result.decode_seconds);
    o["peak_accelerator_bytes"] = peak;
    o["prefill_seconds"] = result.prefill_seconds;
    o["decode_seconds"] = result.decode_seconds;
    o["decode_steps"] = result.decode_steps;
    o["batch"] = batch;
    o["host_layers"] = host_layers;
    o["host_threads"] = host_flags.threads;
    // Where each layer computed in each phase, and the rates the split was
    // chosen from (its decode_host_modules, estimated step: with auto).
    o["host_compute"] = compute_split_json(split);
    if (!moe.empty()) o["moe"] = moe;
    if (!ranks.empty()) o["tensor_parallel"] = tensor_parallel_json(ranks);
    if (generation_graphs) {
      o["graph_launches"] = result.graph_launches;
      o["graph_fallback"] = result.graph_fallback;
    }
    std::printf("%s\n", boost::json::serialize(o).c_str());
  } else {
    std::printf("\n");
    const double gib = 1024.0 * 1024.0 * 1024.0;
    std::string link;
    if (link_rate > 0) {
      link = fmt::format(
          ", streamed {:.2f} GiB/s ({:.0f}% of the {:.2f} GiB/s link, busy {:.0f}% of the decode)",
          streamed_rate / gib, 100.0 * streamed_rate / link_rate, link_rate / gib,
          100.0 * link_busy_share(result.decode_counters, result.decode_seconds));
    } else {
      link = ", nothing streamed";
    }
    std::printf(
        "prefill %.1f tokens/s (%lld tokens), decode %.2f tokens/s (%lld steps)%s, peak "
        "%s memory %s\n",
        prefill_rate, static_cast<long long>(result.prompt_tokens * batch), decode_rate,
        static_cast<long long>(result.decode_steps), link.c_str(), acc.to_string().c_str(),
        format_bytes(peak).c_str());
    if (!ranks.empty()) std::fputs(tensor_parallel_text(ranks).c_str(), stdout);
    if (host_layers > 0) {
      std::printf("decoder layers computed on the host: %d (on %d host threads)\n", host_layers,
                  host_flags.threads);
    }
    if (host_flags.auto_split) {
      std::printf(
          "host compute (auto): %zu decoder layers on the host during decode (host %.2f GiB/s "
          "beside link %.2f GiB/s%s, %d host threads; estimated %.1f ms a step against %.1f ms "
          "streaming alone)\n",
          split.split.host_modules.size(), split.rates().host_while_shared() / gib,
          split.rates().link_while_shared() / gib,
          split.host_rate_source == "decode" ? ", the host's measured in decode steps" : "",
          split.host_threads,
          1e3 * split.split.estimated_seconds, 1e3 * split.split.all_streamed_seconds);
    }
    if (generation_graphs) {
      if (result.graph_fallback.empty()) {
        std::printf("decode steps replayed from a captured graph: %lld\n",
                    static_cast<long long>(result.graph_launches));
      } else {
        std::printf("decode steps ran uncaptured: %s\n", result.graph_fallback.c_str());
      }
    }
  }
  return 0;
}

}  // namespace stowage::cli
