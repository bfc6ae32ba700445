#include "cli/model_session.h"

#include <fmt/format.h>
#include <re2/re2.h>

#include <algorithm>
#include <map>
#include <set>

#include "cli/args.h"
#include "cli/measure.h"
#include "mmap_store/checkpoint.h"
#include "quant/quant_state.h"

namespace stowage::cli {

ModelSession::~ModelSession() {
  runner.reset();  // before the kernels and the manager it uses
  kernels.reset();
  manager.reset();
}

models::TransformerRunShape run_shape(int64_t batch, int64_t prompt_tokens, int64_t new_tokens) {
  models::TransformerRunShape shape;
  shape.batch = batch;
  shape.max_step_tokens = prompt_tokens;
  shape.max_context = prompt_tokens + std::max<int64_t>(new_tokens, 1);
  return shape;
}

std::optional<LoadQuantization> parse_quant_flags(const ArgParser& parser, bool refuse_unused) {
  const std::string method = parser.get_or("quant", "none");
  std::optional<quant::WeightFormat> m;
  if (method != "none") {
    m = quant::quantized_format_from_name(method);
    if (!m) {
      throw UsageError(
          fmt::format("--quant: expected none, int8, nf4 or fp4, found '{}'", method));
    }
  }
  const bool four_bit = m && *m != quant::WeightFormat::kInt8;
  if (refuse_unused && !four_bit && (parser.has("blocksize") || parser.has("double-quant"))) {
    throw UsageError(m ? "--blocksize and --double-quant apply to --quant nf4 or fp4, not int8"
                       : "--blocksize and --double-quant need --quant nf4 or fp4");
  }
  if (!m) return std::nullopt;
  LoadQuantization q;
  q.method = *m;
  if (refuse_unused && !four_bit) return q;
  q.blocksize = parser.get_int("blocksize", 64, quant::kMinBlocksize, quant::kMaxBlocksize);
  if (!quant::is_valid_blocksize(q.blocksize)) {
    throw UsageError(fmt::format("--blocksize: expected a power of two in {}..{}, found {}",
                                 quant::kMinBlocksize, quant::kMaxBlocksize, q.blocksize));
  }
  q.double_quant = parser.has("double-quant");
  return q;
}

std::unique_ptr<ModelSession> open_model_session(Platform& platform, const std::string& folder,
                                                 const SessionConfig& config,
                                                 const std::optional<LoadQuantization>& quantize,
                                                 const models::TransformerRunShape& shape,
                                                 bool progress) {
  OffloadOptions options = offload_options(config);
  auto session = std::make_unique<ModelSession>();
  session->accelerator = platform.accelerator(options.compute_accelerator).tier();
  uint64_t checkpoint_bytes = 0;
  {
    // The same working memory the runner keeps in the plan, known before the
    // manager exists so that its fetch slots leave it free.
    auto checkpoint = mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
    std::unique_ptr<models::LinearKernels> sizing = models::make_linear_kernels(platform);
    const models::TransformerSpec spec =
        models::planned_spec(models::describe_model_folder(folder, *checkpoint), quantize);
    options.working_reserve[session->accelerator] =
        models::transformer_working_bytes(spec, shape, *sizing);
    checkpoint_bytes = checkpoint->total_bytes();
  }
  session->manager = std::make_unique<OffloadManager>(platform, options);
  session->kernels =
      models::make_linear_kernels(platform, session->manager->memory(session->accelerator));
  LoadOptions load = load_options(options, config);
  load.quantize = quantize;
  std::unique_ptr<ProgressBar> bar;
  if (progress) {
    bar = std::make_unique<ProgressBar>("loading", checkpoint_bytes);
    load.progress = [&bar](const LoadProgress& p) { bar->update(p.bytes_done); };
  }
  session->runner = std::make_unique<models::TransformerRunner>(*session->manager, folder,
                                                                *session->kernels, load, shape);
  if (bar) bar->finish();
  return session;
}

HostComputeFlags parse_host_compute_flags(const ArgParser& parser) {
  HostComputeFlags flags;
  const std::string mode = parser.get_or("host-compute", "off");
  if (mode != "off" && mode != "auto") {
    throw UsageError(fmt::format("--host-compute: expected off or auto, found '{}'", mode));
  }
  flags.auto_split = mode == "auto";
  flags.forbidden =
      parser.has(kNoHostComputeFlag) || (parser.has("host-compute") && !flags.auto_split);
  flags.run_on_host = parser.get("run-on-host");
  if (flags.run_on_host) check_regex_flag("--run-on-host", *flags.run_on_host);
  if (parser.has(kNoHostComputeFlag)) {
    for (const char* other : {"run-on-host", "host-threads"}) {
      if (parser.has(other)) {
        throw UsageError(fmt::format(
            "--no-host-compute forbids host compute, but --{} asks for it", other));
      }
    }
    if (flags.auto_split) {
      throw UsageError(
          "--no-host-compute forbids host compute, but --host-compute auto asks for it "
          "(--no-host-compute is --host-compute off)");
    }
  }
  flags.threads = static_cast<int>(
      parser.get_int("host-threads", models::default_host_compute_threads(), 1, 1024));
  return flags;
}

int mark_run_on_host(const std::string& pattern, const std::vector<std::string>& modules,
                     std::vector<SplitLayer>& layers) {
  check_regex_flag("--run-on-host", pattern);
  const RE2 re(pattern, RE2::Quiet);
  std::map<std::string, SplitLayer*> by_module;
  for (SplitLayer& l : layers) by_module[l.module] = &l;
  int matched_off = 0, matched_resident = 0;
  for (const std::string& module : modules) {
    if (!RE2::FullMatch(module, re)) continue;
    auto it = by_module.find(module);
    if (it == by_module.end()) {
      throw UsageError(fmt::format(
          "--run-on-host '{}' matches module '{}': only decoder layers (model.layers.N) can "
          "compute on the host",
          pattern, module));
    }
    SplitLayer& layer = *it->second;
    if (layer.off_accelerator_bytes == 0) {
      ++matched_resident;
      continue;
    }
    if (!layer.host_readable) {
      throw UsageError(fmt::format(
          "--run-on-host '{}' matches layer '{}', which has tensors on the accelerator "
          "(--override-tensor) beside those off it: a layer computes on the host only when all "
          "its tensors are in host RAM or on disk",
          pattern, module));
    }
    layer.run_on_host = true;
    ++matched_off;
  }
  if (matched_off == 0) {
    throw UsageError(fmt::format(
        "--run-on-host '{}' matches no decoder layer off the accelerator ({} matched are "
        "resident there, where they compute)",
        pattern, matched_resident));
  }
  return matched_off;
}

std::vector<SplitLayer> session_split_layers(ModelSession& session) {
  const ResidencyTable& table = session.manager->table();
  std::vector<SplitLayer> out;
  for (const models::DecoderLayerSpec& layer : session.runner->spec().layers) {
    SplitLayer l;
    l.module = layer.module;
    l.host_readable = true;
    for (RecordId id : table.records_of(layer.module)) {
      const TensorRecord r = table.get(id);
      l.bytes += r.bytes;
      if (r.on(session.accelerator)) {
        l.host_readable = false;
      } else {
        l.off_accelerator_bytes += r.bytes;
      }
    }
    l.float_weights = layer.gate.layout.format == quant::WeightFormat::kFloat &&
                      layer.q.layout.format == quant::WeightFormat::kFloat;
    l.run_on_host = session.manager->host_compute(layer.module);
    out.push_back(std::move(l));
  }
  return out;
}

int session_prefetch_depth(ModelSession& session) {
  // The pool may hold fewer slots than the depth asked for (the budget).
  const int slots = session.accelerator.is_accelerator()
                        ? session.manager->fetch_slots(session.accelerator)
                        : 0;
  return slots > 0 ? slots - 1 : session.manager->options().prefetch_depth;
}

uint64_t session_streamed_after_layers(ModelSession& session) {
  const ResidencyTable& table = session.manager->table();
  uint64_t bytes = 0;
  for (const std::string& module :
       {session.runner->spec().head_module, std::string(models::kFinalNormModule)}) {
    for (RecordId id : table.records_of(module)) {
      const TensorRecord r = table.get(id);
      if (!r.on(session.accelerator)) bytes += r.bytes;
    }
  }
  return bytes;
}

int compute_on_host(ModelSession& session, const std::string& pattern) {
  std::vector<SplitLayer> layers = session_split_layers(session);
  const int marked = mark_run_on_host(pattern, session.manager->table().modules(), layers);
  for (const SplitLayer& l : layers) {
    if (l.run_on_host) session.manager->set_host_compute(l.module, true);
  }
  return marked;
}

std::vector<std::string> ComputeSplitReport::decode_host_modules() const {
  std::vector<std::string> out;
  for (const Layer& l : layers) {
    if (l.decode == "host" && l.prefill != "host") out.push_back(l.module);
  }
  return out;
}

ComputeSplitReport decide_compute_split(const std::vector<SplitLayer>& layers, bool auto_split,
                                        const ComputeRates& rates, int prefetch_depth,
                                        int64_t decode_batch,
                                        int host_threads, double host_attention_seconds,
                                        uint64_t streamed_after_layers) {
  ComputeSplitReport report;
  report.decode_batch = decode_batch;
  report.auto_split = auto_split;
  report.link_bytes_per_s = rates.link_bytes_per_s;
  report.host_bytes_per_s = rates.host_bytes_per_s;
  report.link_bytes_per_s_shared = rates.link_bytes_per_s_shared;
  report.host_bytes_per_s_shared = rates.host_bytes_per_s_shared;
  report.host_threads = host_threads;
  report.host_attention_seconds = host_attention_seconds;
  report.prefetch_depth = prefetch_depth;
  std::vector<SplitCandidate> candidates;
  for (const SplitLayer& l : layers) {
    if (l.off_accelerator_bytes == 0) continue;
    candidates.push_back({l.module, l.off_accelerator_bytes, l.host_readable && l.float_weights,
                          l.run_on_host, host_attention_seconds});
  }
  if (streamed_after_layers > 0) {
    candidates.push_back({"(head and final norm)", streamed_after_layers, false});
  }
  if (auto_split) report.split = choose_compute_split(candidates, rates, prefetch_depth);
  const std::set<std::string> host(report.split.host_modules.begin(),
                                   report.split.host_modules.end());
  for (const SplitLayer& l : layers) {
    ComputeSplitReport::Layer r;
    r.module = l.module;
    r.bytes = l.bytes;
    r.streamed_bytes = l.off_accelerator_bytes;
    if (l.off_accelerator_bytes == 0) {
      r.decode = r.prefill = "resident";
    } else if (l.run_on_host) {
      r.decode = r.prefill = "host";
    } else {
      r.prefill = "streamed";
      r.decode = host.count(l.module) != 0 ? "host" : "streamed";
    }
    report.layers.push_back(std::move(r));
  }
  return report;
}

double measure_model_host_rate(const models::TransformerSpec& spec, int64_t batch, int threads) {
  for (const models::DecoderLayerSpec& layer : spec.layers) {
    if (layer.gate.layout.format != quant::WeightFormat::kFloat) continue;
    const models::TransformerConfig& c = spec.config;
    return models::measure_host_linear_rate(layer.gate.layout.storage, c.intermediate_size,
                                            c.hidden_size, batch, 3, threads);
  }
  return 0;
}

ComputeSplitReport session_compute_split(ModelSession& session, const HostComputeFlags& flags,
                                         double link_bytes_per_s, int64_t batch,
                                         Platform* platform) {
  ComputeRates rates{link_bytes_per_s, 0};
  double attention_seconds = 0;
  if (flags.auto_split) {
    const models::TransformerSpec& spec = session.runner->spec();
    rates.host_bytes_per_s = measure_model_host_rate(spec, batch, flags.threads);
    if (platform != nullptr && link_bytes_per_s > 0 && rates.host_bytes_per_s > 0) {
      rates.link_bytes_per_s_shared = measure_pinned_h2d_rate_beside(
          *platform, session.manager->options().compute_accelerator, uint64_t{64} << 20, [&] {
            rates.host_bytes_per_s_shared = measure_model_host_rate(spec, batch, flags.threads);
          });
    }
    attention_seconds = models::measure_host_attention_seconds(
        session.runner->spec().config, batch, session.runner->shape().max_context);
  }
  ComputeSplitReport report =
      decide_compute_split(session_split_layers(session), flags.auto_split, rates,
                           session_prefetch_depth(session), batch,
                           flags.threads, attention_seconds, session_streamed_after_layers(session));
  report.link_rate_source = link_bytes_per_s > 0 ? "measured" : "";
  report.host_rate_source = rates.host_bytes_per_s > 0 ? "measured" : "";
  return report;
}

std::optional<ComputeRates> rates_from_host_decode_work(const ComputeRates& rates, uint64_t bytes,
                                                        uint64_t forwards, double seconds,
                                                        double attention_seconds,
                                                        bool link_beside) {
  if (bytes == 0 || forwards == 0 || !(seconds > 0)) return std::nullopt;
  const double weight_seconds =
      std::max(seconds - attention_seconds * static_cast<double>(forwards), 0.5 * seconds);
  const double measured = static_cast<double>(bytes) / weight_seconds;
  ComputeRates out = rates;
  if (link_beside) {
    const double before = rates.host_while_shared();
    out.host_bytes_per_s = before > 0 ? rates.host_bytes_per_s * measured / before : measured;
    out.host_bytes_per_s_shared = measured;
  } else {
    // The rate alone; the shared one, where measured, scales with it.
    const double before = rates.host_bytes_per_s;
    if (rates.host_bytes_per_s_shared > 0 && before > 0) {
      out.host_bytes_per_s_shared = rates.host_bytes_per_s_shared * measured / before;
    }
    out.host_bytes_per_s = measured;
  }
  return out;
}

bool link_ran_beside_host(const ComputeSplit& split, const ComputeRates& rates) {
  if (split.host_bytes == 0 || rates.host_while_shared() <= 0) return false;
  const double link_seconds = static_cast<double>(split.streamed_bytes) / rates.link_while_shared();
  const double host_seconds = static_cast<double>(split.host_bytes) / rates.host_while_shared();
  return link_seconds >= 0.5 * host_seconds;
}

ComputeSplitReport calibrate_compute_split(ModelSession& session, ComputeSplitReport report,
                                           const std::vector<int32_t>& prompt, int64_t steps,
                                           int rounds) {
  models::TransformerRunner& runner = *session.runner;
  steps = std::min<int64_t>(
      steps, runner.shape().max_context - static_cast<int64_t>(prompt.size()) - 1);
  if (!report.auto_split || steps < 1 || prompt.empty()) return report;
  for (int round = 0; round < rounds; ++round) {
    const std::vector<std::string> host = report.decode_host_modules();
    if (host.empty()) break;
    models::GenerationOptions o;
    o.ignore_eos = true;
    o.max_new_tokens = steps + 1;
    o.decode_host_modules = host;
    const models::TransformerModel::HostDecodeWork before =
        runner.model().host_layer_decode_work();
    runner.generate(prompt, o);
    const models::TransformerModel::HostDecodeWork after = runner.model().host_layer_decode_work();
    const std::optional<ComputeRates> rates = rates_from_host_decode_work(
        report.rates(), after.bytes - before.bytes, after.forwards - before.forwards,
        after.seconds - before.seconds, report.host_attention_seconds,
        link_ran_beside_host(report.split, report.rates()));
    if (!rates) break;
    ComputeSplitReport next = decide_compute_split(
        session_split_layers(session), true, *rates, report.prefetch_depth, report.decode_batch,
        report.host_threads,
        report.host_attention_seconds, session_streamed_after_layers(session));
    next.link_rate_source = report.link_rate_source;
    next.host_rate_source = "decode";
    next.calibration_rounds = round + 1;
    const bool same = next.decode_host_modules() == host;
    report = std::move(next);
    if (same) break;
  }
  return report;
}

boost::json::object compute_split_json(const ComputeSplitReport& report) {
  boost::json::object o;
  o["decode_batch"] = report.decode_batch;
  o["auto"] = report.auto_split;
  o["link_bytes_per_s"] = report.link_bytes_per_s;
  o["link_rate"] = report.link_rate_source;
  o["host_bytes_per_s"] = report.host_bytes_per_s;
  o["link_bytes_per_s_shared"] = report.link_bytes_per_s_shared;
  o["host_bytes_per_s_shared"] = report.host_bytes_per_s_shared;
  o["host_rate"] = report.host_rate_source;
  o["calibration_rounds"] = report.calibration_rounds;
  o["host_threads"] = report.host_threads;
  o["host_attention_seconds"] = report.host_attention_seconds;
  o["streamed_bytes"] = report.split.streamed_bytes;
  o["host_bytes"] = report.split.host_bytes;
  o["estimated_step_seconds"] = report.split.estimated_seconds;
  o["all_streamed_step_seconds"] = report.split.all_streamed_seconds;
  o["two_path_limit_step_seconds"] = report.split.two_path_limit_seconds;
  o["prefetch_depth"] = report.prefetch_depth;
  o["decode_host_modules"] = boost::json::value_from(report.decode_host_modules());
  boost::json::array layers;
  for (const ComputeSplitReport::Layer& l : report.layers) {
    boost::json::object e;
    e["module"] = l.module;
    e["bytes"] = l.bytes;
    e["streamed_bytes"] = l.streamed_bytes;
    e["decode"] = l.decode;
    e["prefill"] = l.prefill;
    layers.push_back(std::move(e));
  }
  o["layers"] = std::move(layers);
  return o;
}

std::string compute_split_text(const ComputeSplitReport& report) {
  const double gib = 1024.0 * 1024.0 * 1024.0;
  auto rate = [&](double bytes_per_s, const std::string& source) {
    const std::string from =
        source == "decode"
            ? fmt::format("measured in the decode steps of {} calibration generation{}",
                          report.calibration_rounds, report.calibration_rounds == 1 ? "" : "s")
            : source;
    return bytes_per_s > 0 ? fmt::format("{:.2f} GiB/s {}", bytes_per_s / gib, from)
                           : std::string("not measured");
  };
  std::string out = fmt::format(
      "compute split (decode at batch {}{}; link {}, host {}, {} host thread{}):\n",
      report.decode_batch, report.auto_split ? ", chosen by --host-compute auto" : "",
      rate(report.link_bytes_per_s, report.link_rate_source),
      rate(report.host_bytes_per_s, report.host_rate_source), report.host_threads,
      report.host_threads == 1 ? "" : "s");
  if (report.link_bytes_per_s_shared > 0) {
    out += fmt::format("  both at once: link {:.2f} GiB/s beside host {:.2f} GiB/s\n",
                       report.link_bytes_per_s_shared / gib, report.host_bytes_per_s_shared / gib);
  }
  if (report.auto_split) {
    out += fmt::format(
        "  estimated decode step {:.3f} ms on the off-accelerator layers against {:.3f} ms "
        "streaming alone (a host layer's attention: {:.3f} ms a step)\n",
        1e3 * report.split.estimated_seconds, 1e3 * report.split.all_streamed_seconds,
        1e3 * report.host_attention_seconds);
  }
  size_t width = 6;
  for (const auto& l : report.layers) width = std::max(width, l.module.size());
  out += fmt::format("  {:<{}}  {:>14}  {:<8}  {:<8}\n", "layer", width, "bytes", "decode",
                     "prefill");
  for (const auto& l : report.layers) {
    out += fmt::format("  {:<{}}  {:>14}  {:<8}  {:<8}\n", l.module, width, l.bytes, l.decode,
                       l.prefill);
  }
  return out;
}

}  // namespace stowage::cli
