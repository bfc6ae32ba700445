// A Hugging Face model folder loaded for `stowage generate` and `stowage
// bench`: the offload manager under the command's budgets (its working
// reserve set from the model and the run's shape, so the fetch slots leave
// the KV cache and activations their room), the platform's kernels and the
// transformer runner, in the order they must be destroyed.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "cli/args.h"
#include "cli/mlp_session.h"
#include "core/platform.h"
#include "models/linear.h"
#include "models/transformer_runner.h"
#include "offload/compute_split.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"

namespace stowage::cli {

struct ModelSession {
  Tier accelerator = Tier::pinned_host();
  std::unique_ptr<OffloadManager> manager;
  std::unique_ptr<models::LinearKernels> kernels;
  std::unique_ptr<models::TransformerRunner> runner;
  ~ModelSession();
};

// A run of `batch` sequences of `prompt_tokens`, then `new_tokens` (at
// least one) generated one at a time.
models::TransformerRunShape run_shape(int64_t batch, int64_t prompt_tokens, int64_t new_tokens);

// --quant none|int8|nf4|fp4, --blocksize (a power of two in quant's range,
// default 64) and --double-quant (generate, bench --model). UsageError
// naming the flag for a bad value; when `refuse_unused`, also for
// --blocksize or --double-quant without a 4-bit --quant.
std::optional<LoadQuantization> parse_quant_flags(const ArgParser& parser, bool refuse_unused);

// Loads `folder` (a progress bar on a terminal when `progress`). Throws as
// TransformerRunner does: OutOfBudgetError naming the bytes when the budget
// cannot hold the working memory, InvalidInputError naming the key or tensor.
std::unique_ptr<ModelSession> open_model_session(Platform& platform, const std::string& folder,
                                                 const SessionConfig& config,
                                                 const std::optional<LoadQuantization>& quantize,
                                                 const models::TransformerRunShape& shape,
                                                 bool progress);

// The flags of host compute (generate, bench, plan): --run-on-host REGEX,
// --host-compute off|auto, --no-host-compute (the spelling of
// --host-compute off), --host-threads N.
inline const std::vector<std::string> kHostComputeValueFlags = {"run-on-host", "host-compute",
                                                                "host-threads"};
inline const char* kNoHostComputeFlag = "no-host-compute";
struct HostComputeFlags {
  std::optional<std::string> run_on_host;  // checked as an RE2 pattern
  bool auto_split = false;                 // --host-compute auto
  bool forbidden = false;                  // --no-host-compute (or --host-compute off given)
  // --host-threads, or models::default_host_compute_threads(): the host
  // kernels' threads, one core left to the copy submission by default.
  int threads = 0;
};
// Throws UsageError naming the flags for a value of --host-compute other
// than off and auto, an invalid --run-on-host pattern, --host-threads out of
// 1..1024, and --no-host-compute beside --host-compute auto, --run-on-host
// or --host-threads (each asks for the host compute it forbids).
HostComputeFlags parse_host_compute_flags(const ArgParser& parser);

// One decoder layer as the compute split sees it.
struct SplitLayer {
  std::string module;                  // "model.layers.3"
  uint64_t bytes = 0;                  // all its tensors
  uint64_t off_accelerator_bytes = 0;  // those a forward fetches (0: resident)
  bool host_readable = false;          // every tensor in host RAM or on disk
  bool float_weights = false;          // float projections (the measured host rate's kind)
  bool run_on_host = false;            // --run-on-host chose it
};

// --run-on-host: marks the layers of `layers` whose module name fully
// matches the RE2 `pattern` and that are off the accelerator (layers
// resident there stay). Returns how many it marked. Throws UsageError naming
// the flag for a pattern that matches one of `modules` that is not a
// decoder layer (only those have a host path), a layer with tensors on the
// accelerator and off it (--override-tensor: it cannot compute on the host),
// or no layer off the accelerator.
int mark_run_on_host(const std::string& pattern, const std::vector<std::string>& modules,
                     std::vector<SplitLayer>& layers);

// The decoder layers of a loaded session as the split sees them.
std::vector<SplitLayer> session_split_layers(ModelSession& session);

// --run-on-host on a loaded session: mark_run_on_host, then the marked
// layers compute on the host where their weights are (OffloadManager::
// set_host_compute). Returns how many.
int compute_on_host(ModelSession& session, const std::string& pattern);

// Where each decoder layer computes in each phase, and the rates the decode
// split was chosen from (issue #19: visible in `stowage plan` and the --json
// reports). Phases: the decode steps at `decode_batch`, and the prefill
// (which always streams the layers off the accelerator but those
// --run-on-host computes on the host).
struct ComputeSplitReport {
  struct Layer {
    std::string module;
    uint64_t bytes = 0;
    uint64_t streamed_bytes = 0;  // fetched per forward when streamed
    std::string decode;           // "resident", "streamed" or "host"
    std::string prefill;
  };
  std::vector<Layer> layers;
  int64_t decode_batch = 1;
  bool auto_split = false;  // --host-compute auto chose the decode column
  double link_bytes_per_s = 0;
  double host_bytes_per_s = 0;  // 0: not measured (no auto split, or no float layer)
  // Each rate while the other path runs too (both read host memory); 0: not measured.
  double link_bytes_per_s_shared = 0;
  double host_bytes_per_s_shared = 0;
  std::string link_rate_source;  // "measured", "given" or "" (not used)
  // Also "decode": from the host's own time in decode steps of the split
  // (calibrate_compute_split, `calibration_rounds` generations).
  std::string host_rate_source;
  int calibration_rounds = 0;
  int host_threads = 0;
  // Seconds a layer computed on the host spends per decode step in its
  // attention (models::measure_host_attention_seconds at the decode batch and
  // the run's full context), added to its weight bytes' time; 0: not counted.
  double host_attention_seconds = 0;
  // The streamed layers the copies run ahead of the compute
  // (session_prefetch_depth), which bounds how long a host layer can hide
  // copies behind it.
  int prefetch_depth = 0;
  ComputeSplit split;  // the decode split (auto) over the layers off the accelerator
  std::vector<std::string> decode_host_modules() const;
  // The rates above as the split takes them.
  ComputeRates rates() const {
    return {link_bytes_per_s, host_bytes_per_s, link_bytes_per_s_shared, host_bytes_per_s_shared};
  }
};

// Decides the phases of `layers`: resident layers stay; --run-on-host layers
// compute on the host in both phases; with `auto_split`, the others off the
// accelerator are split for the decode steps by choose_compute_split at
// `rates` (the --run-on-host layers counted on the host path; quantized or
// partly resident layers stream), each host layer costing
// `host_attention_seconds` per step beyond its weight bytes, the copies
// running at most `prefetch_depth` streamed layers ahead of the compute.
// `streamed_after_layers`: bytes a step fetches after the decoder layers
// that only the link can carry (the head and the final norm when they are
// not resident), counted on the link path so the split balances the paths
// with them in.
ComputeSplitReport decide_compute_split(const std::vector<SplitLayer>& layers, bool auto_split,
                                        const ComputeRates& rates, int prefetch_depth,
                                        int64_t decode_batch,
                                        int host_threads, double host_attention_seconds = 0,
                                        uint64_t streamed_after_layers = 0);

// The streamed modules the session's copies run ahead of its compute: its
// accelerator's fetch slots less one (OffloadManager::fetch_slots, which may
// be fewer than --prefetch asked for), or the depth asked for where nothing
// streams yet.
int session_prefetch_depth(ModelSession& session);

// The bytes of the head and the final norm that are off the session's
// accelerator (fetched every step; decide_compute_split's streamed_after_layers).
uint64_t session_streamed_after_layers(ModelSession& session);

// The host kernels' rate on the model's largest projection shape at `batch`
// rows on `threads` threads (models::measure_host_linear_rate), for the
// float weight dtype of its first float layer; 0 when no layer is float.
double measure_model_host_rate(const models::TransformerSpec& spec, int64_t batch, int threads);

// --host-compute auto on a loaded session: the split at `batch` from
// `link_bytes_per_s` and the host rate measured now (measure_model_host_rate);
// with `platform` and a measured link rate, also both rates measured at once
// (the link's copies to the compute accelerator beside the host kernels). The caller
// applies report.decode_host_modules() to the decode steps
// (GenerationOptions::decode_host_modules). Without auto, the report of
// where the layers compute as they are.
ComputeSplitReport session_compute_split(ModelSession& session, const HostComputeFlags& flags,
                                         double link_bytes_per_s, int64_t batch,
                                         Platform* platform = nullptr);

// The rates with the host's replaced by what the host did in decode steps:
// `bytes` of weights in `forwards` layer forwards over `seconds` of its own
// compute time (models::TransformerModel::host_layer_decode_work), less
// `attention_seconds` a forward for their attention (at most half the time).
// With `link_beside` (the link streamed beside those layers) that is the
// host's shared rate, and its rate alone scales with it; without (the split
// streamed little or nothing), it is the rate alone, and the shared one
// scales with it. nullopt when there is nothing to go by (no bytes or time).
std::optional<ComputeRates> rates_from_host_decode_work(const ComputeRates& rates, uint64_t bytes,
                                                        uint64_t forwards, double seconds,
                                                        double attention_seconds,
                                                        bool link_beside = true);

// Whether the link ran beside the host layers of `split` for most of their
// time (its streamed bytes took at least half the host's time at the shared
// rates): what rates_from_host_decode_work's measurement then was.
bool link_ran_beside_host(const ComputeSplit& split, const ComputeRates& rates);

// --host-compute auto, refined by running it: the start-up rates come from
// one projection's kernels and one copy, while a step's host layers also pay
// for their norms, attention, team runs and the link's reads beside them. Up
// to `rounds` times, generates `steps` tokens of `prompt` with the report's
// split, takes the host's rate from those decode steps
// (rates_from_host_decode_work) and decides again; stops when the split
// stays the same or puts nothing on the host. Returns the report unchanged
// without auto, without host layers, or with no room for a step; else with
// host_rate_source "decode" and calibration_rounds set.
// The decode steps a calibration generation runs (bench and generate).
constexpr int64_t kCalibrationSteps = 8;
ComputeSplitReport calibrate_compute_split(ModelSession& session, ComputeSplitReport report,
                                           const std::vector<int32_t>& prompt, int64_t steps,
                                           int rounds = 2);

// The report as JSON: {"decode_batch", "auto", "link_bytes_per_s",
// "host_bytes_per_s", "link_rate", "host_rate" (measured/given), "host_threads",
// "streamed_bytes", "host_bytes", "estimated_step_seconds",
// "all_streamed_step_seconds", "decode_host_modules",
// "layers": [{"module", "bytes", "streamed_bytes", "decode", "prefill"}]}.
boost::json::object compute_split_json(const ComputeSplitReport& report);
// The report as text: a line of rates, then a line per layer.
std::string compute_split_text(const ComputeSplitReport& report);

}  // namespace stowage::cli
