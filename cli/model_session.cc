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

}  // namespace stowage::cli
