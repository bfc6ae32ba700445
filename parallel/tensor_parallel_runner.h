// A model folder of the dense transformer family run tensor-parallel over N
// accelerators: each rank holds its part of every layer (tensor_shard.h)
// under its own budget, with its own OffloadManager (its own plan, fetch
// slots, copy stream and prefetch), its own kernels and its own
// models::TransformerRunner, so each rank streams its part over its own
// link. The ranks run at once, one host thread each (run_on_ranks), and meet
// twice a layer in an all-reduce (collective.h: in-process on sim, NCCL on
// CUDA).
//
//   TensorParallelSetup setup;
//   setup.ranks = 2;
//   setup.offload = [&](int rank, Tier acc) { ... budgets of `acc` ... };
//   setup.load = [&](int rank, Tier acc) { ... planner capacities ... };
//   TensorParallelRunner tp(platform, "model/", std::move(setup), shape);
//   std::vector<GenerationResult> r = tp.generate(prompt, options);  // r[0]: the output
//
// Every rank computes the whole logits from the same reduced hidden state
// (lm_head replicated), so every rank chooses the same tokens (the
// all-reduce gives every rank the same bits); generate checks that they did.
// Outputs differ from one accelerator's by the reduction order only
// (tests: parallel/tests/tensor_parallel_test.cc give the tolerance).
//
// A rank that fails (out of memory or budget, a collective failure) aborts
// the group, so no rank waits for it: every rank ends, and the constructor
// or generate throws one error naming the rank, its accelerator and what
// each rank saw (run_on_ranks).
//
// Thread safety: one thread uses a runner; it runs its ranks on threads of
// its own.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/platform.h"
#include "models/linear.h"
#include "models/transformer_runner.h"
#include "offload/loader.h"
#include "offload/offload_manager.h"
#include "parallel/collective.h"
#include "parallel/tensor_shard.h"

namespace stowage::parallel {

struct TensorParallelSetup {
  int ranks = 1;
  // The accelerator (platform index) of each rank; empty: 0 .. ranks - 1.
  std::vector<int> accelerators;
  // Rank r's manager options and load options, given its accelerator's
  // tier: its budget, its share of the host budget. The runner sets the
  // compute accelerator and the working reserve (the rank's KV cache and
  // activations) itself; the load options' accelerators other than the
  // rank's are ignored.
  std::function<OffloadOptions(int rank, Tier accelerator)> offload;
  std::function<LoadOptions(int rank, Tier accelerator)> load;
  // nullptr: make_collective_group over the accelerators.
  std::unique_ptr<CollectiveGroup> group;
};

// One rank: what it runs on and its own pieces, destroyed runner first.
struct TensorParallelRank {
  int accelerator = 0;
  Tier tier = Tier::pinned_host();
  TensorParallelShare share;
  std::unique_ptr<OffloadManager> manager;
  std::unique_ptr<models::LinearKernels> kernels;
  std::unique_ptr<models::TransformerRunner> runner;
  ~TensorParallelRank();
};

class TensorParallelRunner {
 public:
  // Checks the split (check_tensor_parallel: InvalidInputError before
  // anything is loaded), then loads every rank's part at once. Throws as
  // run_on_ranks does when a rank cannot load (its budget too small for its
  // part's working memory: OutOfBudgetError naming the bytes).
  TensorParallelRunner(Platform& platform, const std::string& folder, TensorParallelSetup setup,
                       const models::TransformerRunShape& shape);
  ~TensorParallelRunner();
  TensorParallelRunner(const TensorParallelRunner&) = delete;
  TensorParallelRunner& operator=(const TensorParallelRunner&) = delete;

  int ranks() const { return static_cast<int>(ranks_.size()); }
  TensorParallelRank& rank(int r) { return *ranks_.at(static_cast<size_t>(r)); }
  CollectiveGroup& group() { return *group_; }
  // The whole model's config (each rank's runner has its part's).
  const models::TransformerConfig& config() const { return config_; }

  // Runs TransformerRunner::generate on every rank at once; options.on_token
  // is called from rank 0's thread. Returns each rank's result (index =
  // rank; [0] is the output). Throws as run_on_ranks does; InternalError if
  // the ranks chose different tokens.
  std::vector<models::GenerationResult> generate(const std::vector<int32_t>& prompt,
                                                 const models::GenerationOptions& options);

 private:
  std::vector<std::string> rank_names() const;

  Platform& platform_;
  models::TransformerConfig config_;
  std::unique_ptr<CollectiveGroup> group_;  // outlives the ranks' streams
  std::vector<std::unique_ptr<TensorParallelRank>> ranks_;
};

}  // namespace stowage::parallel
