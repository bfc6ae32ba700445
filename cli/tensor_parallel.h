// --tensor-parallel N for `stowage generate`, `stowage bench --model` and
// `stowage plan`: a model folder split over N accelerators
// (parallel/tensor_parallel_runner.h), each rank planned under its own
// accelerator's --max-memory budget ("0=3GiB,1=3GiB") and an equal share of
// the cpu budget, streaming its part over its own link.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/mlp_session.h"
#include "core/platform.h"
#include "models/transformer_runner.h"
#include "offload/loader.h"
#include "offload/planner.h"
#include "parallel/tensor_parallel_runner.h"

namespace stowage::cli {

inline const char* kTensorParallelFlag = "tensor-parallel";

// --tensor-parallel N (1 when absent). Throws UsageError for N outside
// 1 .. 64, and, with N > 1, naming each flag given that a split run does not
// take yet: --offload-dir (each rank's disk tier), --run-on-host,
// --host-compute auto, --host-threads, --host-cache, --cuda-graphs and the
// mixture-of-experts flags (`flags_not_split` lists those the command has).
int parse_tensor_parallel(const ArgParser& parser, const std::vector<std::string>& flags_not_split);
// The same for a comma-separated list (bench: --tensor-parallel 1,2 measures
// each in one run), in the order given.
std::vector<int> parse_tensor_parallel_list(const ArgParser& parser,
                                            const std::vector<std::string>& flags_not_split);

// The ranks' setup under `config`'s budgets: rank r on accelerator r with
// accelerator r's budget, and 1/N of the cpu budget each.
parallel::TensorParallelSetup tensor_parallel_setup(
    const SessionConfig& config, int ranks, const std::optional<LoadQuantization>& quantize);

// What one rank did in a generation, for the reports.
struct RankRun {
  std::string accelerator;  // "cuda:1"
  std::string share;        // "heads 16-31 of 32, kv heads 4-7, intermediate 7168-14335"
  uint64_t prefill_streamed_bytes = 0;
  uint64_t decode_streamed_bytes = 0;
  int64_t decode_steps = 0;
  double decode_seconds = 0;
  uint64_t peak_bytes = 0;
  double link_bytes_per_s =
      0;  // this accelerator's pinned host-to-device rate, alone; 0: not measured
  uint64_t streamed_bytes_per_step() const;
  double streamed_bytes_per_s() const;
};

// "heads 2-3 of 4, kv heads 1 of 2, intermediate 80-159 of 160".
std::string share_text(const models::TransformerConfig& config,
                       const parallel::TensorParallelShare& share);

// Each rank's report after a generation (links measured when `measure_links`).
std::vector<RankRun> rank_runs(Platform& platform, parallel::TensorParallelRunner& runner,
                               const std::vector<models::GenerationResult>& results,
                               bool measure_links);

boost::json::object tensor_parallel_json(const std::vector<RankRun>& ranks);
// A line per rank.
std::string tensor_parallel_text(const std::vector<RankRun>& ranks);

// `stowage plan --tensor-parallel N`: each rank's plan of its part of
// `folder` under its budgets, as text or JSON ("tensor_parallel": [...]).
// Returns the exit code.
int plan_tensor_parallel(Platform& platform, const std::string& folder,
                         const MemoryBudgets& budgets, int ranks, int prefetch,
                         const models::TransformerRunShape& shape, bool json);

}  // namespace stowage::cli
