// How a transformer of the Llama family (Llama, Qwen2, Mistral: dense
// layers) splits over N ranks, Megatron-style, and each rank's part of a
// checkpoint as a checkpoint of its own.
//
// Rank r of N holds, in every decoder layer:
//   q_proj, k_proj, v_proj  its heads' rows (output columns): query heads
//                           [r H/N, (r+1) H/N), and the key/value heads
//                           those query heads read: [r K/N, (r+1) K/N) when
//                           N divides K, else (K divides N) the one head
//                           r / (N/K), replicated on N/K ranks (as vLLM
//                           does when there are fewer KV heads than ranks);
//                           their biases (Qwen2) likewise;
//   o_proj                  the matching input columns (its output is a
//                           partial sum);
//   gate_proj, up_proj      intermediate rows [r I/N, (r+1) I/N);
//   down_proj               the matching input columns (a partial sum);
//   o_proj / down_proj bias rank 0 the checkpoint's, the others zeros (the
//                           all-reduce adds it once);
//   norms, q_norm / k_norm  whole (replicated).
// Embeddings, the final norm and lm_head are replicated: every rank gathers
// its own embedding rows and computes the whole logits from the reduced
// hidden state (no all-gather; each rank streams the whole head, a cost of
// lm_head's bytes per rank per token that a vocabulary split would save).
//
// Thread safety: plain values and pure functions; a ShardCheckpoint's const
// members may be called from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/memory_resource.h"
#include "mmap_store/checkpoint.h"
#include "models/transformer_config.h"

namespace stowage::parallel {

// Rank `rank`'s part of every decoder layer.
struct TensorParallelShare {
  int rank = 0;
  int ranks = 1;
  int64_t q_head_begin = 0, q_heads = 0;
  int64_t kv_head_begin = 0, kv_heads = 0;
  int64_t intermediate_begin = 0, intermediate = 0;
};

// Throws InvalidInputError naming the config's source and the sizes when
// the model cannot split into `ranks`: ranks < 1; N not dividing the query
// heads or the intermediate size; N and the KV heads not dividing one
// another; a mixture-of-experts model (not split yet).
void check_tensor_parallel(const models::TransformerConfig& config, int ranks);

// Rank `rank` of `ranks` (check_tensor_parallel first).
TensorParallelShare tensor_parallel_share(const models::TransformerConfig& config, int ranks,
                                          int rank);

// The config of a rank's part: its heads, KV heads and intermediate size
// (hidden size, head_dim and the rest unchanged).
models::TransformerConfig shard_config(const models::TransformerConfig& config,
                                       const TensorParallelShare& share);

// Rank share.rank's part of `base` (a checkpoint of `config`) as a
// checkpoint: every tensor under its name, the split ones sliced as the file
// comment says. Row slices and replicated tensors are views of `base`'s
// mapping (Tier::disk(), zero copy); column slices and the zero biases are
// copied into host memory when tensor() is called (one tensor at a time,
// as the loader reads them). Throws InvalidInputError naming the tensor for
// one that is not a float tensor of the dense family (a checkpoint already
// quantized: quantize each rank's part while loading instead).
class ShardCheckpoint final : public mmap_store::Checkpoint {
 public:
  ShardCheckpoint(std::shared_ptr<const mmap_store::Checkpoint> base,
                  const models::TransformerConfig& config, const TensorParallelShare& share);
  const std::string& path() const override { return path_; }
  const mmap_store::CheckpointIndex& index() const override { return index_; }
  Tensor tensor(const std::string& name) const override;
  const std::vector<std::pair<std::string, std::string>>& metadata() const override {
    return base_->metadata();
  }

  // How a tensor of the rank's part is cut from the base's.
  struct Cut {
    enum class Kind { kWhole, kRows, kColumns, kZeros } kind = Kind::kWhole;
    int64_t begin = 0, count = 0;  // rows or columns (elements for a vector)
  };

 private:
  std::shared_ptr<const mmap_store::Checkpoint> base_;
  std::string path_;
  mmap_store::CheckpointIndex index_;
  std::vector<Cut> cuts_;  // by index position
  mutable HostMemoryResource host_;
};

}  // namespace stowage::parallel
