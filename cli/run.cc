// `stowage run --model FILE --input IN --output OUT [--max-memory ...]
// [--offload-dir DIR] [--prefetch N] [--trace FILE.json] [--report]
// [--device auto|cuda|sim]`: runs the MLP family on tensor `x` of IN and
// writes `y` (float32) to OUT (CLI.md).
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/host_cache_flags.h"
#include "cli/mlp_common.h"
#include "cli/mlp_session.h"
#include "core/error.h"
#include "core/memory_resource.h"
#include "mmap_store/checkpoint.h"
#include "mmap_store/output_path.h"
#include "mmap_store/safetensors_writer.h"
#include "models/linear.h"
#include "models/mlp_runner.h"
#include "offload/disk_io.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"
#include "offload/trace.h"

namespace stowage::cli {

namespace {

// Reads tensor `x` of IN as a float32 host tensor.
Tensor read_input(const mmap_store::Checkpoint& input, Platform& platform) {
  STOWAGE_EXPECTS(input.contains("x"), InvalidInputError,
                  "{}: expected a tensor named 'x', found {} tensor(s){}", input.path(),
                  input.names().size(),
                  input.names().empty() ? "" : fmt::format(" ('{}', ...)", input.names()[0]));
  Tensor x = input.tensor("x");
  STOWAGE_EXPECTS(x.shape().rank() == 2 && is_floating_point(x.dtype()) &&
                      x.dtype() != DType::kF8E4M3 && x.dtype() != DType::kF8E5M2,
                  InvalidInputError,
                  "{}: tensor 'x': expected F32/F16/BF16 [batch, in], found {} {}", input.path(),
                  safetensors_name(x.dtype()), x.shape().to_string());
  Tensor out = Tensor::empty(platform.pageable_host_memory(), DType::kF32, x.shape());
  for (uint64_t i = 0; i < x.numel(); ++i) {
    out.data_as<float>()[i] = load_as_float(x.data(), x.dtype(), static_cast<size_t>(i));
  }
  mmap_store::check_mapped_read(x, "tensor 'x'");
  return out;
}

}  // namespace

int run_run(const std::vector<std::string>& args, mmap_store::TemporaryFileRegistry* temporaries) {
  ArgParser parser("run",
                   with_host_cache_flags({"model", "input", "output", "max-memory", "offload-dir",
                                          "prefetch", "trace", "device", "override-tensor"}),
                   {"report"}, kHostCacheOptionalFlags);
  parser.allow_repeated({"override-tensor"});
  parser.parse(args);
  parser.expect_positional(0, "");
  auto model = parser.get("model");
  auto input_path = parser.get("input");
  auto output_path = parser.get("output");
  if (!model) throw UsageError("--model FILE is required");
  if (!input_path) throw UsageError("--input IN is required");
  if (!output_path) throw UsageError("--output OUT is required");
  const auto max_memory = parser.get("max-memory");
  const MemoryBudgets budgets = max_memory ? parse_max_memory(*max_memory) : MemoryBudgets{};
  const auto offload_dir = parser.get("offload-dir");
  if (budgets.disk && !offload_dir) {
    throw UsageError("--max-memory gives a disk budget but no --offload-dir was given");
  }
  const int prefetch = static_cast<int>(parser.get_int("prefetch", 1, 0, 64));
  // Outputs never replace an input, and are refused before any work.
  const std::vector<std::string> inputs = {*model, *input_path};
  mmap_store::check_output_file(*output_path, inputs, "--output");
  if (offload_dir) mmap_store::check_output_folder(*offload_dir, inputs, "--offload-dir");
  if (auto trace_path = parser.get("trace")) {
    mmap_store::check_output_file(*trace_path, inputs, "--trace");
    if (std::filesystem::weakly_canonical(*trace_path) ==
        std::filesystem::weakly_canonical(*output_path)) {
      throw UsageError(fmt::format("--trace and --output name the same file '{}'", *trace_path));
    }
  }

  auto checkpoint = mmap_store::open_checkpoint(*model);
  auto input = mmap_store::open_checkpoint(*input_path);
  auto platform = make_platform(parser.get_or("device", "auto"), budgets);
  Tensor x = read_input(*input, *platform);
  std::unique_ptr<hostcache::SharedWeightCache> host_cache =
      make_host_cache(*platform, parser, "mlp");

  TraceRecorder trace;
  SessionConfig session = session_config_for(*platform, budgets, offload_dir, prefetch);
  session.tensor_overrides = parse_tensor_overrides(parser.get_all("override-tensor"), *platform,
                                                    offload_dir ? "" : "--offload-dir");
  if (parser.has("trace")) session.trace = &trace;
  session.host_cache = host_cache.get();
  OffloadOptions options = offload_options(session);
  // Activations and kernel scratch for x's batch: kept by the plan and left
  // free by the fetch slots.
  options.working_reserve[platform->accelerator(options.compute_accelerator).tier()] =
      working_reserve_bytes(*platform, models::describe_checkpoint(*checkpoint), x.shape()[0]);

  Tensor y;
  {
    OffloadManager manager(*platform, options);
    std::unique_ptr<models::LinearKernels> kernels = models::make_linear_kernels(
        *platform,
        manager.memory(platform->accelerator(manager.options().compute_accelerator).tier()));
    LoadOptions load = load_options(options, session);
    ProgressBar bar("loading", checkpoint->total_bytes());
    load.progress = [&bar](const LoadProgress& p) { bar.update(p.bytes_done); };
    models::MlpRunner runner(manager, *checkpoint, *kernels, load);
    bar.finish();
    y = runner.forward(x);
    manager.synchronize();
    if (parser.has("report")) {
      std::fputs(manager.table().report().c_str(), stdout);
      const OffloadCounters c = manager.counters();
      const Tier acc = platform->accelerator(manager.options().compute_accelerator).tier();
      std::printf(
          "peak %s memory: %s\nbytes host->device: %s, device->host: %s, read from disk: %s\n"
          "fetches: %llu, prefetch hits: %llu, misses: %llu, synchronous fallbacks: %llu, "
          "stall: %.3f ms\n",
          acc.to_string().c_str(), format_bytes(manager.usage(acc).peak_bytes).c_str(),
          format_bytes(c.bytes_h2d).c_str(), format_bytes(c.bytes_d2h).c_str(),
          format_bytes(c.bytes_disk_read).c_str(), static_cast<unsigned long long>(c.fetches),
          static_cast<unsigned long long>(c.prefetch_hits),
          static_cast<unsigned long long>(c.prefetch_misses),
          static_cast<unsigned long long>(c.sync_fallbacks), c.stall_ms);
    }
  }
  if (auto trace_path = parser.get("trace")) trace.write(*trace_path);

  mmap_store::AtomicFileOptions out_options;
  out_options.registry = temporaries;  // removed by the interrupt handler
  mmap_store::SafetensorsWriter writer(*output_path, out_options);
  writer.declare("y", DType::kF32, y.shape());
  writer.write("y", y.view());
  writer.commit();
  return 0;
}

}  // namespace stowage::cli
