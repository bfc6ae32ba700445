#include "parallel/tensor_parallel_runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "mmap_store/checkpoint.h"
#include "parallel/rank_threads.h"

namespace stowage::parallel {

TensorParallelRank::~TensorParallelRank() {
  runner.reset();  // before the kernels and the manager it uses
  kernels.reset();
  manager.reset();
}

TensorParallelRunner::TensorParallelRunner(Platform& platform, const std::string& folder,
                                           TensorParallelSetup setup,
                                           const models::TransformerRunShape& shape)
    : platform_(platform) {
  config_ = models::read_transformer_config(folder);
  config_.source = folder;
  check_tensor_parallel(config_, setup.ranks);
  std::vector<int> accelerators = setup.accelerators;
  if (accelerators.empty()) {
    accelerators.resize(static_cast<size_t>(setup.ranks));
    std::iota(accelerators.begin(), accelerators.end(), 0);
  }
  STOWAGE_EXPECTS(static_cast<int>(accelerators.size()) == setup.ranks, InvalidInputError,
                  "tensor parallelism over {} ranks names {} accelerators", setup.ranks,
                  accelerators.size());
  STOWAGE_EXPECTS(setup.ranks <= platform.accelerator_count(), InvalidInputError,
                  "tensor parallelism over {} ranks needs {} accelerators, but the platform has "
                  "{}",
                  setup.ranks, setup.ranks, platform.accelerator_count());
  group_ = setup.group != nullptr ? std::move(setup.group)
                                  : make_collective_group(platform, accelerators);
  STOWAGE_EXPECTS(group_->size() == setup.ranks, InvalidInputError,
                  "the collective group has {} ranks, the split {}", group_->size(), setup.ranks);
  std::shared_ptr<const mmap_store::Checkpoint> base =
      mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
  for (int r = 0; r < setup.ranks; ++r) {
    auto rank = std::make_unique<TensorParallelRank>();
    rank->accelerator = accelerators[static_cast<size_t>(r)];
    rank->tier = platform.accelerator(rank->accelerator).tier();
    rank->share = tensor_parallel_share(config_, setup.ranks, r);
    ranks_.push_back(std::move(rank));
  }
  run_on_ranks(rank_names(), group_.get(), [&](int r) {
    TensorParallelRank& rank = *ranks_[static_cast<size_t>(r)];
    platform.accelerator(rank.accelerator).make_current();
    models::TransformerConfig config = shard_config(config_, rank.share);
    config.source = fmt::format("{} (tensor-parallel rank {} of {})", folder, r, setup.ranks);
    auto part = std::make_unique<ShardCheckpoint>(base, config_, rank.share);
    LoadOptions load = setup.load ? setup.load(r, rank.tier) : LoadOptions{};
    OffloadOptions options = setup.offload ? setup.offload(r, rank.tier) : OffloadOptions{};
    options.compute_accelerator = rank.accelerator;
    {
      // The working memory the runner keeps in its plan, known before the
      // manager exists so that its fetch slots leave it free.
      std::unique_ptr<models::LinearKernels> sizing = models::make_linear_kernels(platform);
      const models::TransformerSpec spec =
          models::planned_spec(models::describe_model_checkpoint(config, *part), load.quantize);
      options.working_reserve[rank.tier] = models::transformer_working_bytes(spec, shape, *sizing);
    }
    rank.manager = std::make_unique<OffloadManager>(platform, options);
    rank.kernels = models::make_linear_kernels(platform, rank.manager->memory(rank.tier));
    rank.runner = std::make_unique<models::TransformerRunner>(*rank.manager, std::move(part),
                                                              config, *rank.kernels, load, shape);
    Communicator& communicator = group_->rank(r);
    rank.runner->model().set_tensor_parallel(
        {r, [&communicator](StreamRef stream, float* data, size_t count) {
           communicator.all_reduce_sum(stream, data, count);
         }});
  });
}

TensorParallelRunner::~TensorParallelRunner() {
  // Every rank's streams drain before the group goes (a collective in
  // flight was aborted by run_on_ranks when a peer failed).
  ranks_.clear();
  group_.reset();
}

std::vector<std::string> TensorParallelRunner::rank_names() const {
  std::vector<std::string> names;
  for (const auto& rank : ranks_) names.push_back(rank->tier.to_string());
  return names;
}

std::vector<models::GenerationResult> TensorParallelRunner::generate(
    const std::vector<int32_t>& prompt, const models::GenerationOptions& options) {
  STOWAGE_EXPECTS(!group_->aborted(), InvalidInputError,
                  "this tensor-parallel group was aborted ({}); load the model again",
                  group_->abort_reason());
  std::vector<models::GenerationResult> results(ranks_.size());
  run_on_ranks(rank_names(), group_.get(), [&](int r) {
    TensorParallelRank& rank = *ranks_[static_cast<size_t>(r)];
    platform_.accelerator(rank.accelerator).make_current();
    models::GenerationOptions own = options;
    if (r != 0) own.on_token = nullptr;
    results[static_cast<size_t>(r)] = rank.runner->generate(prompt, own);
  });
  for (size_t r = 1; r < results.size(); ++r) {
    STOWAGE_EXPECTS(results[r].output_ids == results[0].output_ids, InternalError,
                    "tensor-parallel rank {} chose other tokens than rank 0 ({} against {} "
                    "tokens): the all-reduce gave the ranks different bits",
                    r, results[r].output_ids.size(), results[0].output_ids.size());
  }
  return results;
}

}  // namespace stowage::parallel
