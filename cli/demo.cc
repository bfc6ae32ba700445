// `stowage demo` (CLI.md): builds a synthetic MLP checkpoint larger than the
// accelerator budget it then gives, runs it once all-resident (where it fits)
// and once offloaded, checks that the outputs agree, and prints a table.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/measure.h"
#include "cli/mlp_common.h"
#include "cli/mlp_session.h"
#include "cli/synthetic.h"
#include "core/error.h"
#include "mmap_store/checkpoint.h"
#include "mmap_store/output_path.h"
#include "models/linear.h"
#include "models/mlp_runner.h"
#include "offload/planner.h"

namespace stowage::cli {
namespace {

// Removes the demo's temporary folder on every exit path.
// Recorded in `temporaries` (may be null) so an interrupt removes it too.
class TempFolder {
 public:
  explicit TempFolder(mmap_store::TemporaryFileRegistry* temporaries) : temporaries_(temporaries) {
    std::string pattern = (std::filesystem::temp_directory_path() / "stowage_demo_XXXXXX").string();
    std::unique_lock<std::mutex> hold;
    if (temporaries_) hold = temporaries_->hold();
    STOWAGE_EXPECTS(::mkdtemp(pattern.data()) != nullptr, IoError,
                    "cannot create a temporary folder from {}", pattern);
    path_ = pattern;
    if (temporaries_) temporaries_->add(path_);
  }
  ~TempFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
    if (temporaries_) temporaries_->forget(path_);
  }
  const std::string& path() const { return path_; }

 private:
  mmap_store::TemporaryFileRegistry* temporaries_;
  std::string path_;
};

DType parse_dtype_flag(const std::string& text) {
  if (text == "float16") return DType::kF16;
  if (text == "bfloat16") return DType::kBF16;
  if (text == "float32") return DType::kF32;
  throw UsageError(fmt::format("--dtype: expected float16, bfloat16 or float32, found '{}'", text));
}

std::string seconds_text(double s) { return fmt::format("{:.4f} s", s); }
std::string rate_text(double bytes_per_second) {
  return fmt::format("{:.2f} GiB/s", bytes_per_second / double(1ull << 30));
}

int demo(const std::vector<std::string>& args, mmap_store::TemporaryFileRegistry* temporaries) {
  ArgParser p("demo", {"layers", "hidden", "batch", "dtype", "quant", "max-memory", "prefetch",
                       "trace", "device", "iters"});
  p.parse(args);
  p.expect_positional(0, "no positional arguments");
  const std::string quant = p.get_or("quant", "none");
  if (quant != "none" && quant != "int8" && quant != "nf4" && quant != "fp4") {
    throw UsageError(fmt::format("--quant: expected none, int8, nf4 or fp4, found '{}'", quant));
  }
  if (auto trace_path = p.get("trace")) mmap_store::check_output_file(*trace_path, {}, "--trace");
  // Budgets are checked before the checkpoint is made.
  const std::optional<MemoryBudgets> given_budgets =
      p.has("max-memory") ? std::optional(parse_max_memory(*p.get("max-memory"))) : std::nullopt;
  auto platform =
      make_platform(p.get_or("device", "auto"), given_budgets.value_or(MemoryBudgets{}));
  const bool cuda = platform->backend() == Backend::kCuda;
  Accelerator& accelerator = platform->accelerator(0);

  SyntheticMlp spec;
  spec.layers = static_cast<int>(p.get_int("layers", cuda ? 24 : 8, 1, 100000));
  spec.hidden = p.get_int("hidden", cuda ? 8192 : 4096, 1, 1 << 20);
  spec.dtype = parse_dtype_flag(p.get_or("dtype", "float16"));
  const int64_t batch = p.get_int("batch", 8, 1, 1 << 20);
  const int prefetch = static_cast<int>(p.get_int("prefetch", 2, 0, 64));
  const int iters = static_cast<int>(p.get_int("iters", cuda ? 5 : 3, 1, 100000));

  TempFolder folder(temporaries);
  const std::string fp_path = folder.path() + "/model.safetensors";
  write_synthetic_mlp(spec, fp_path, true);
  std::string model_path = fp_path;
  if (quant != "none") {
    model_path = folder.path() + "/model." + quant + ".safetensors";
    const int status = run_quantize(
        {"--method", quant, "--device", cuda ? "cuda" : "sim", fp_path, model_path}, temporaries);
    STOWAGE_EXPECTS(status == 0, InternalError, "quantizing the demo checkpoint to {} failed",
                    quant);
  }
  auto checkpoint = mmap_store::open_checkpoint(model_path);
  uint64_t model_bytes = 0;
  uint64_t largest_layer = 0;
  for (int i = 0; i < spec.layers; ++i) {
    uint64_t layer = 0;
    for (const std::string& name : checkpoint->names()) {
      if (name.rfind(fmt::format("layers.{}.", i), 0) == 0) layer += checkpoint->info(name).bytes;
    }
    model_bytes += layer;
    largest_layer = std::max(largest_layer, layer);
  }

  Tensor x = synthetic_input(platform->pageable_host_memory(), batch, spec.hidden, 7);

  // All-resident, where the model fits the accelerator with room to spare.
  std::optional<TimedForwards> resident;
  if (model_bytes + model_bytes / 8 + (uint64_t{256} << 20) < accelerator.free_bytes()) {
    const SessionConfig config = session_config_for(*platform, {}, std::nullopt, prefetch);
    resident = time_forwards(*platform, *checkpoint, x, config, 1, iters);
  }

  // Offloaded: the accelerator gets a quarter of the model for weights (or
  // just the streaming slots, if that is more) plus the working reserve for
  // activations and kernel scratch, unless told.
  const uint64_t working =
      working_reserve_bytes(*platform, models::describe_checkpoint(*checkpoint), batch);
  SessionConfig offloaded_config = session_config_for(
      *platform, given_budgets.value_or(MemoryBudgets{}), std::nullopt, prefetch);
  if (!given_budgets) {
    // largest_layer sums the layer's tensors without the 256-byte offsets a
    // slot aligns them to; this margin covers that padding, with room.
    constexpr uint64_t kSlotPaddingMargin = uint64_t{64} << 10;
    offloaded_config.budget.set_budget(
        accelerator.tier(),
        std::max(model_bytes / 4,
                 streaming_reserve_bytes(prefetch, largest_layer) + kSlotPaddingMargin) +
            working);
  }
  TraceRecorder trace;
  if (p.has("trace")) offloaded_config.trace = &trace;
  TimedForwards offloaded = time_forwards(*platform, *checkpoint, x, offloaded_config, 1, iters);
  const double link =
      measure_pinned_h2d_rate(*platform, 0, cuda ? (uint64_t{512} << 20) : (uint64_t{64} << 20));
  if (auto trace_path = p.get("trace")) write_text_file(*trace_path, trace.to_json());

  // The same kernels run in both: the outputs must agree bit for bit.
  bool identical = true;
  double difference = 0;
  if (resident) {
    identical = bitwise_equal(resident->y, offloaded.y);
    difference = max_abs_difference(resident->y, offloaded.y);
  }

  const int forwards = 1 + iters;
  const auto per_forward = [&](uint64_t bytes) { return format_bytes(bytes / forwards); };
  std::printf("stowage demo: %d layers of %lldx%lld %s%s, batch %lld, on %s\n", spec.layers,
              static_cast<long long>(spec.hidden), static_cast<long long>(spec.hidden),
              std::string(torch_name(spec.dtype)).c_str(),
              quant == "none" ? "" : (" -> " + quant).c_str(), static_cast<long long>(batch),
              accelerator.description().c_str());
  std::printf("checkpoint: %s of weights; prefetch depth %d; medians of %d forwards\n\n",
              format_bytes(model_bytes).c_str(), prefetch, iters);
  std::printf("%-26s %-16s %-16s\n", "", "resident", "offloaded");
  const auto row = [](const char* label, const std::string& a, const std::string& b) {
    std::printf("%-26s %-16s %-16s\n", label, a.c_str(), b.c_str());
  };
  const std::string none = "-";
  const std::optional<uint64_t> budget = offloaded_config.budget.budget_of(accelerator.tier());
  row("forward time", resident ? seconds_text(resident->median_s) : "does not fit",
      seconds_text(offloaded.median_s));
  row("accelerator budget", "none", budget ? format_bytes(*budget) : "none");
  row("working-memory reserve", resident ? format_bytes(resident->working_reserve) : none,
      format_bytes(offloaded.working_reserve));
  row("peak accelerator memory", resident ? format_bytes(resident->accelerator.peak_bytes) : none,
      format_bytes(offloaded.accelerator.peak_bytes));
  row("streamed per forward", resident ? format_bytes(resident->streamed_bytes) : none,
      format_bytes(offloaded.streamed_bytes));
  row("effective streaming rate", none,
      offloaded.streamed_bytes ? rate_text(offloaded.streamed_bytes / offloaded.median_s) : none);
  row("bytes to device / fwd", resident ? per_forward(resident->counters.bytes_h2d) : none,
      per_forward(offloaded.counters.bytes_h2d));
  row("stall time / fwd", none, fmt::format("{:.3f} ms", offloaded.counters.stall_ms / forwards));
  row("prefetch hits / misses", none,
      fmt::format("{} / {}", offloaded.counters.prefetch_hits, offloaded.counters.prefetch_misses));
  std::printf("\npinned host-to-device link: %s (measured now)", rate_text(link).c_str());
  if (offloaded.streamed_bytes) {
    std::printf("; streaming at %.0f%% of it",
                100.0 * offloaded.streamed_bytes / offloaded.median_s / link);
  }
  std::printf("\n");
  if (offloaded.streamed_bytes == 0) {
    std::printf(
        "nothing streamed: the whole model fits the offloaded run's accelerator budget, so the "
        "offloaded run is resident too (give --max-memory 0=SIZE below %s to stream)\n",
        format_bytes(model_bytes + offloaded.working_reserve).c_str());
  }
  if (p.has("trace")) std::printf("trace: %s (open in Perfetto)\n", p.get("trace")->c_str());
  if (!resident) {
    std::printf("agreement: not checked (the model does not fit the accelerator all-resident)\n");
    return 0;
  }
  if (identical) {
    std::printf("agreement: offloaded output identical to resident, bit for bit\n");
    return 0;
  }
  std::printf("agreement: FAILED: outputs differ (max |difference| %.6g)\n", difference);
  return 1;
}

}  // namespace

int run_demo(const std::vector<std::string>& args, mmap_store::TemporaryFileRegistry* temporaries) {
  return demo(args, temporaries);
}

}  // namespace stowage::cli
