// `stowage bench` (CLI.md): the options of `run` plus --batch and --iters;
// times resident and offloaded forwards of a checkpoint (medians) and reports
// them against reference rates measured in the same run: the pinned
// host-to-device link and, with --cold, the disk's sequential read rate.
#include <boost/json.hpp>
#include <cstdio>

#include "cli/args.h"
#include "cli/bench_model.h"
#include "cli/commands.h"
#include "cli/host_cache_flags.h"
#include "cli/measure.h"
#include "cli/mlp_common.h"
#include "cli/mlp_session.h"
#include "cli/synthetic.h"
#include "core/error.h"
#include "mmap_store/checkpoint.h"
#include "mmap_store/output_path.h"
#include "models/linear.h"
#include "models/mlp_runner.h"

namespace stowage::cli {
namespace {

// The value of --model in `args` ("" when absent).
std::string model_argument(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--model" && i + 1 < args.size()) return args[i + 1];
    if (args[i].rfind("--model=", 0) == 0) return args[i].substr(8);
  }
  return "";
}

int bench(const std::vector<std::string>& args) {
  if (is_model_folder(model_argument(args))) return bench_model_folder(args);
  ArgParser p("bench",
              with_host_cache_flags({"model", "max-memory", "offload-dir", "prefetch", "trace",
                                     "device", "batch", "iters", "warmup", "override-tensor"}),
              {"report", "json", "cold", "no-resident"}, kHostCacheOptionalFlags);
  p.allow_repeated({"override-tensor"});
  p.parse(args);
  p.expect_positional(0, "no positional arguments (the checkpoint is --model FILE)");
  const auto model_path = p.get("model");
  if (!model_path) throw UsageError("--model FILE is required");
  const int64_t batch = p.get_int("batch", 1, 1, 1 << 20);
  const int iters = static_cast<int>(p.get_int("iters", 10, 1, 1000000));
  const int warmup = static_cast<int>(p.get_int("warmup", 2, 0, 1000000));
  MemoryBudgets budgets;
  if (auto text = p.get("max-memory")) budgets = parse_max_memory(*text);
  if (auto dir = p.get("offload-dir")) {
    mmap_store::check_output_folder(*dir, {*model_path}, "--offload-dir");
  }
  if (auto path = p.get("trace")) mmap_store::check_output_file(*path, {*model_path}, "--trace");
  auto platform = make_platform(p.get_or("device", "auto"), budgets);
  const bool cuda = platform->backend() == Backend::kCuda;
  Accelerator& accelerator = platform->accelerator(0);

  auto checkpoint = mmap_store::open_checkpoint(*model_path);
  const models::MlpSpec spec = models::describe_checkpoint(*checkpoint);
  Tensor x = synthetic_input(platform->pageable_host_memory(), batch, spec.in_features(), 7);
  uint64_t model_bytes = 0;
  for (const std::string& name : checkpoint->names()) model_bytes += checkpoint->info(name).bytes;

  const int prefetch = static_cast<int>(p.get_int("prefetch", 2, 0, 64));
  SessionConfig config = session_config_for(*platform, budgets, p.get("offload-dir"), prefetch);
  config.tensor_overrides = parse_tensor_overrides(p.get_all("override-tensor"), *platform,
                                                   config.offload_dir ? "" : "--offload-dir");
  TraceRecorder trace;
  if (p.has("trace")) config.trace = &trace;
  std::unique_ptr<hostcache::SharedWeightCache> host_cache = make_host_cache(*platform, p, "mlp");
  config.host_cache = host_cache.get();

  // With --cold, every forward starts with the checkpoint out of the page
  // cache, so disk-homed weights are read from the device.
  std::function<void()> before_each;
  if (p.has("cold")) before_each = [&] { drop_page_cache(*model_path); };

  std::optional<TimedForwards> resident;
  if (!p.has("no-resident") &&
      model_bytes + model_bytes / 8 + (uint64_t{256} << 20) < accelerator.free_bytes()) {
    const SessionConfig resident_config = session_config_for(*platform, {}, std::nullopt, prefetch);
    resident = time_forwards(*platform, *checkpoint, x, resident_config, warmup, iters);
  }
  TimedForwards offloaded =
      time_forwards(*platform, *checkpoint, x, config, warmup, iters, before_each);
  const double link =
      measure_pinned_h2d_rate(*platform, 0, cuda ? (uint64_t{1} << 30) : (uint64_t{64} << 20));
  std::optional<double> disk_rate;
  if (p.has("cold")) disk_rate = measure_cold_sequential_read_rate(*model_path);
  if (auto path = p.get("trace")) write_text_file(*path, trace.to_json());

  const int forwards = warmup + iters;
  const double streamed_rate =
      offloaded.streamed_bytes ? offloaded.streamed_bytes / offloaded.median_s : 0.0;
  const bool agree = !resident || bitwise_equal(resident->y, offloaded.y);
  if (p.has("json")) {
    boost::json::object o;
    o["model"] = *model_path;
    o["device"] = accelerator.description();
    o["batch"] = batch;
    o["iters"] = iters;
    o["weight_bytes"] = model_bytes;
    o["streamed_bytes"] = offloaded.streamed_bytes;
    if (resident) o["resident_forward_s"] = resident->median_s;
    o["offloaded_forward_s"] = offloaded.median_s;
    o["offloaded_forward_all_s"] = boost::json::value_from(offloaded.seconds);
    o["effective_gib_s"] = streamed_rate / double(1ull << 30);
    o["pinned_h2d_gib_s"] = link / double(1ull << 30);
    if (disk_rate) o["disk_sequential_gib_s"] = *disk_rate / double(1ull << 30);
    o["peak_accelerator_bytes"] = offloaded.accelerator.peak_bytes;
    o["stall_ms_per_forward"] = offloaded.counters.stall_ms / forwards;
    o["bytes_h2d_per_forward"] = offloaded.counters.bytes_h2d / forwards;
    o["bytes_disk_read_per_forward"] = offloaded.counters.bytes_disk_read / forwards;
    o["prefetch_hits"] = offloaded.counters.prefetch_hits;
    o["prefetch_misses"] = offloaded.counters.prefetch_misses;
    if (host_cache) {
      o["host_cache"] = host_cache_report(*host_cache);
    }
    // Without a resident run there is nothing to compare with: say so rather than claim it.
    if (resident) {
      o["outputs_identical"] = agree;
    } else {
      o["outputs_identical"] = "not compared";
    }
    std::printf("%s\n", boost::json::serialize(o).c_str());
  } else {
    std::printf("stowage bench: %s on %s, batch %lld, median of %d (after %d warm-up)\n",
                model_path->c_str(), accelerator.description().c_str(),
                static_cast<long long>(batch), iters, warmup);
    if (resident) std::printf("resident forward        %.4f s\n", resident->median_s);
    std::printf("offloaded forward       %.4f s\n", offloaded.median_s);
    std::printf("streamed per forward    %s of %s\n",
                format_bytes(offloaded.streamed_bytes).c_str(), format_bytes(model_bytes).c_str());
    std::printf("effective rate          %.2f GiB/s\n", streamed_rate / double(1ull << 30));
    std::printf("pinned H2D link         %.2f GiB/s (same run)\n", link / double(1ull << 30));
    if (disk_rate) {
      std::printf("disk sequential read    %.2f GiB/s cold (same run); streaming at %.2fx of it\n",
                  *disk_rate / double(1ull << 30), streamed_rate / *disk_rate);
    }
    std::printf("peak accelerator memory %s\n",
                format_bytes(offloaded.accelerator.peak_bytes).c_str());
    std::printf("stall per forward       %.3f ms\n", offloaded.counters.stall_ms / forwards);
    std::printf("prefetch hits / misses  %llu / %llu\n",
                static_cast<unsigned long long>(offloaded.counters.prefetch_hits),
                static_cast<unsigned long long>(offloaded.counters.prefetch_misses));
    std::printf("outputs                 %s\n",
                !resident ? "not compared (no resident run)"
                          : (agree ? "identical (bit for bit)" : "DIFFER"));
    if (p.has("report")) std::printf("\n%s", offloaded.residency_report.c_str());
  }
  return agree ? 0 : 1;
}

}  // namespace

int run_bench(const std::vector<std::string>& args) { return bench(args); }

}  // namespace stowage::cli
