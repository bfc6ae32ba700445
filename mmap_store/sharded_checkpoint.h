// A sharded safetensors checkpoint: "model.safetensors.index.json"
// ({"metadata": {...}, "weight_map": {tensor: shard file}}) opened as one
// logical checkpoint. Shard paths are relative to the index's folder.
#pragma once

#include <memory>
#include <string>

#include "mmap_store/checkpoint.h"

namespace stowage::mmap_store {

class ShardedCheckpoint final : public Checkpoint {
 public:
  // Opens the index and every shard it names, validating each shard fully.
  // Throws InvalidInputError naming the index, the tensor and the shard when
  // the index is malformed, a shard is missing or malformed, or a tensor the
  // index lists is absent from its shard.
  static std::unique_ptr<ShardedCheckpoint> open(const std::string& index_path);
  ~ShardedCheckpoint() override;

  const std::string& path() const override;
  const CheckpointIndex& index() const override;
  Tensor tensor(const std::string& name) const override;
  const std::vector<std::pair<std::string, std::string>>& metadata() const override;

  struct State;

 private:
  explicit ShardedCheckpoint(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace stowage::mmap_store
