#include "cli/tensor_parallel.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "cli/measure.h"
#include "cli/mlp_common.h"
#include "core/error.h"
#include "core/memory_resource.h"
#include "mmap_store/checkpoint.h"
#include "models/transformer.h"

namespace stowage::cli {
namespace {

// Rank r's part of the command's budget: accelerator r's budget (the others
// keep only their physical size) and a ranks-th of the cpu budget.
MemoryBudget rank_budget(MemoryBudget budget, int ranks, int rank) {
  for (size_t i = 0; i < budget.accelerators.size(); ++i) {
    if (static_cast<int>(i) != rank) budget.accelerators[i].budget.reset();
  }
  if (budget.cpu && budget.cpu->budget) *budget.cpu->budget /= static_cast<uint64_t>(ranks);
  return budget;
}

SessionConfig rank_config(const SessionConfig& config, int ranks, int rank) {
  SessionConfig own = config;
  own.budget = rank_budget(config.budget, ranks, rank);
  return own;
}

}  // namespace

std::vector<int> parse_tensor_parallel_list(const ArgParser& parser,
                                            const std::vector<std::string>& flags_not_split) {
  std::vector<int> out;
  for (int64_t n :
       parse_int_list(kTensorParallelFlag, parser.get_or(kTensorParallelFlag, "1"), 1, 64)) {
    out.push_back(static_cast<int>(n));
  }
  const int most = *std::max_element(out.begin(), out.end());
  if (most == 1) return out;
  for (const std::string& flag : flags_not_split) {
    if (!parser.has(flag)) continue;
    if (flag == "host-compute" && parser.get_or(flag, "off") == "off") continue;
    throw UsageError(fmt::format(
        "--tensor-parallel {} does not take --{} yet: each rank runs its part of every layer on "
        "its own accelerator, from host RAM",
        most, flag));
  }
  return out;
}

int parse_tensor_parallel(const ArgParser& parser,
                          const std::vector<std::string>& flags_not_split) {
  const std::vector<int> ranks = parse_tensor_parallel_list(parser, flags_not_split);
  if (ranks.size() != 1) {
    throw UsageError(
        fmt::format("--tensor-parallel: expected one number of accelerators, found "
                    "'{}'",
                    parser.get_or(kTensorParallelFlag, "")));
  }
  return ranks.front();
}

parallel::TensorParallelSetup tensor_parallel_setup(
    const SessionConfig& config, int ranks, const std::optional<LoadQuantization>& quantize) {
  parallel::TensorParallelSetup setup;
  setup.ranks = ranks;
  setup.offload = [config, ranks](int rank, Tier) {
    return offload_options(rank_config(config, ranks, rank));
  };
  setup.load = [config, ranks, quantize](int rank, Tier) {
    const SessionConfig own = rank_config(config, ranks, rank);
    LoadOptions load = load_options(offload_options(own), own);
    load.quantize = quantize;
    return load;
  };
  return setup;
}

uint64_t RankRun::streamed_bytes_per_step() const {
  return decode_steps > 0 ? decode_streamed_bytes / static_cast<uint64_t>(decode_steps) : 0;
}

double RankRun::streamed_bytes_per_s() const {
  return decode_seconds > 0 ? static_cast<double>(decode_streamed_bytes) / decode_seconds : 0;
}

std::string share_text(const models::TransformerConfig& c, const parallel::TensorParallelShare& s) {
  auto range = [](int64_t begin, int64_t count) {
    return count == 1 ? fmt::format("{}", begin) : fmt::format("{}-{}", begin, begin + count - 1);
  };
  return fmt::format("heads {} of {}, kv heads {} of {}, intermediate {} of {}",
                     range(s.q_head_begin, s.q_heads), c.num_heads,
                     range(s.kv_head_begin, s.kv_heads), c.num_kv_heads,
                     range(s.intermediate_begin, s.intermediate), c.intermediate_size);
}

std::vector<RankRun> rank_runs(Platform& platform, parallel::TensorParallelRunner& runner,
                               const std::vector<models::GenerationResult>& results,
                               bool measure_links) {
  std::vector<RankRun> out;
  for (int r = 0; r < runner.ranks(); ++r) {
    parallel::TensorParallelRank& rank = runner.rank(r);
    const models::GenerationResult& g = results.at(static_cast<size_t>(r));
    RankRun run;
    run.accelerator = rank.tier.to_string();
    run.share = share_text(runner.config(), rank.share);
    run.prefill_streamed_bytes = g.prefill_counters.bytes_h2d;
    run.decode_streamed_bytes = g.decode_counters.bytes_h2d;
    run.decode_steps = g.decode_steps;
    run.decode_seconds = g.decode_seconds;
    run.peak_bytes = rank.manager->usage(rank.tier).peak_bytes;
    if (measure_links) {
      run.link_bytes_per_s =
          measure_pinned_h2d_rate(platform, rank.accelerator, uint64_t{256} << 20, 3);
    }
    out.push_back(std::move(run));
  }
  return out;
}

boost::json::object tensor_parallel_json(const std::vector<RankRun>& ranks) {
  boost::json::object o;
  o["ranks"] = ranks.size();
  boost::json::array each;
  for (const RankRun& r : ranks) {
    boost::json::object e;
    e["accelerator"] = r.accelerator;
    e["share"] = r.share;
    e["prefill_streamed_bytes"] = r.prefill_streamed_bytes;
    e["streamed_bytes_per_token"] = r.streamed_bytes_per_step();
    e["streamed_bytes_per_s"] = r.streamed_bytes_per_s();
    e["link_bytes_per_s"] = r.link_bytes_per_s;
    e["peak_accelerator_bytes"] = r.peak_bytes;
    each.push_back(std::move(e));
  }
  o["per_rank"] = std::move(each);
  return o;
}

std::string tensor_parallel_text(const std::vector<RankRun>& ranks) {
  const double gib = 1024.0 * 1024.0 * 1024.0;
  std::string out;
  for (size_t r = 0; r < ranks.size(); ++r) {
    const RankRun& run = ranks[r];
    const std::string link = run.link_bytes_per_s > 0 ? fmt::format(" of its {:.2f} GiB/s link",
                                                                    run.link_bytes_per_s / gib)
                                                      : std::string();
    out += fmt::format(
        "tensor-parallel rank {} ({}): {}; streamed {} a token, {:.2f} GiB/s{}; peak {}\n", r,
        run.accelerator, run.share, format_bytes(run.streamed_bytes_per_step()),
        run.streamed_bytes_per_s() / gib, link, format_bytes(run.peak_bytes));
  }
  return out;
}

int plan_tensor_parallel(Platform& platform, const std::string& folder,
                         const MemoryBudgets& budgets, int ranks, int prefetch,
                         const models::TransformerRunShape& shape, bool json) {
  models::TransformerConfig config = models::read_transformer_config(folder);
  config.source = folder;
  parallel::check_tensor_parallel(config, ranks);
  if (ranks > platform.accelerator_count()) {
    throw UsageError(fmt::format(
        "--tensor-parallel {} needs {} accelerators, but {} are present (on sim, name each in "
        "--max-memory: 0=...,1=...)",
        ranks, ranks, platform.accelerator_count()));
  }
  std::shared_ptr<const mmap_store::Checkpoint> base =
      mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
  std::unique_ptr<models::LinearKernels> kernels = models::make_linear_kernels(platform);
  boost::json::array per_rank;
  std::string text;
  for (int r = 0; r < ranks; ++r) {
    const parallel::TensorParallelShare share = parallel::tensor_parallel_share(config, ranks, r);
    const parallel::ShardCheckpoint part(base, config, share);
    const models::TransformerSpec spec =
        models::describe_model_checkpoint(parallel::shard_config(config, share), part);
    models::TransformerLoadLayout layout = models::transformer_load_layout(spec, part);
    std::vector<std::string>& order = layout.order;
    PlanRequest request{
        rank_budget(memory_budget_for(platform, budgets.accelerators, budgets.cpu), ranks, r)};
    request.accelerators = {request.accelerators.at(static_cast<size_t>(r))};
    request.modules =
        plan_modules(part, &order, models::transformer_module_of, layout.read_in_place);
    request.spread_resident = layout.spread_resident;  // as each rank's runner plans
    const Tier tier = platform.accelerator(r).tier();
    request.prefetch_depth = prefetch;
    request.working_reserve[tier] = models::transformer_working_bytes(spec, shape, *kernels);
    const Plan plan = plan_device_map(request);
    const uint64_t kv = models::kv_cache_bytes(spec, shape);
    if (json) {
      boost::json::object o;
      o["rank"] = r;
      o["accelerator"] = tier.to_string();
      o["share"] = share_text(config, share);
      o["part_bytes"] = part.total_bytes();
      o["kv_cache_bytes"] = kv;
      boost::json::object per_tier;
      for (const auto& [t, bytes] : plan.bytes_per_tier) per_tier[t.to_string()] = bytes;
      o["bytes_per_tier"] = std::move(per_tier);
      o["largest_streamed_unit"] = plan.largest_streamed_unit;
      boost::json::array modules;
      for (size_t i = 0; i < plan.device_map.size(); ++i) {
        boost::json::object m;
        m["module"] = plan.device_map[i].first;
        m["tier"] = plan.device_map[i].second.to_string();
        m["bytes"] = request.modules[i].bytes();
        m["streamed"] = plan.streamed(plan.device_map[i].first);
        modules.push_back(std::move(m));
      }
      o["modules"] = std::move(modules);
      per_rank.push_back(std::move(o));
    } else {
      text += fmt::format(
          "tensor-parallel rank {} of {} ({}): {}; its part {} (KV cache {}, in the working "
          "reserve)\n",
          r, ranks, tier.to_string(), share_text(config, share), format_bytes(part.total_bytes()),
          format_bytes(kv));
      text += plan.to_string(request);
    }
  }
  if (json) {
    boost::json::object out;
    out["model"] = folder;
    out["prefetch"] = prefetch;
    out["batch"] = shape.batch;
    out["architecture"] = models::architecture_name(config.architecture);
    out["tensor_parallel"] = std::move(per_rank);
    std::puts(boost::json::serialize(out).c_str());
  } else {
    std::fputs(escape_control(text, true).c_str(), stdout);
  }
  return 0;
}

}  // namespace stowage::cli
