#include "cli/model_session.h"

#include <fmt/format.h>
#include <re2/re2.h>

#include "cli/args.h"
#include "mmap_store/checkpoint.h"

namespace stowage::cli {

ModelSession::~ModelSession() {
  runner.reset();  // before the kernels and the manager it uses
  kernels.reset();
  manager.reset();
}

std::unique_ptr<ModelSession> open_model_session(Platform& platform, const std::string& folder,
                                                 const SessionConfig& config,
                                                 const std::optional<LoadQuantization>& quantize,
                                                 const models::TransformerRunShape& shape,
                                                 bool progress) {
  OffloadOptions options = offload_options(platform, config);
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
  LoadOptions load = load_options(platform, config);
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

int compute_on_host(ModelSession& session, const std::string& pattern) {
  check_regex_flag("--run-on-host", pattern);
  const RE2 re(pattern, RE2::Quiet);
  OffloadManager& manager = *session.manager;
  const std::string layer_prefix = "model.layers.";
  int matched_off = 0, matched_resident = 0;
  for (const std::string& module : manager.table().modules()) {
    if (!RE2::FullMatch(module, re)) continue;
    if (module.compare(0, layer_prefix.size(), layer_prefix) != 0 ||
        module.find('.', layer_prefix.size()) != std::string::npos) {
      throw UsageError(fmt::format(
          "--run-on-host '{}' matches module '{}': only decoder layers (model.layers.N) can "
          "compute on the host",
          pattern, module));
    }
    const TensorRecord r = manager.table().get(manager.table().records_of(module).front());
    if (r.on(session.accelerator)) {
      ++matched_resident;
      continue;
    }
    manager.set_host_compute(module, true);
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

HostComputeChoice choose_decode_host_compute(ModelSession& session, double link_bytes_per_s,
                                             int64_t batch) {
  const models::TransformerSpec& spec = session.runner->spec();
  const models::TransformerConfig& c = spec.config;
  OffloadManager& manager = *session.manager;
  std::vector<SplitCandidate> candidates;
  DType dtype = DType::kF32;
  bool any_float = false;
  for (const models::DecoderLayerSpec& layer : spec.layers) {
    const std::vector<RecordId> ids = manager.table().records_of(layer.module);
    if (ids.empty() || manager.table().get(ids.front()).on(session.accelerator)) continue;
    uint64_t bytes = 0;
    for (RecordId id : ids) bytes += manager.table().get(id).bytes;
    const bool float_weights = layer.gate.format == models::WeightFormat::kFloat;
    if (float_weights) {
      dtype = layer.gate.weight_dtype;
      any_float = true;
    }
    candidates.push_back({layer.module, bytes, float_weights});
  }
  HostComputeChoice choice;
  choice.link_bytes_per_s = link_bytes_per_s;
  if (any_float) {
    choice.host_bytes_per_s =
        models::measure_host_linear_rate(dtype, c.intermediate_size, c.hidden_size, batch);
  }
  choice.split = choose_compute_split(candidates, {link_bytes_per_s, choice.host_bytes_per_s});
  return choice;
}

}  // namespace stowage::cli
