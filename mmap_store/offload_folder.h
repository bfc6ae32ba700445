// accelerate's offload folder, the disk tier's own layout: "index.json"
// ({name: {"dtype": "float16", "shape": [..]}}) and one "NAME.dat" of raw
// little-endian bytes per tensor (a numpy memmap). bfloat16 is written as
// int16 data with dtype "bfloat16"; a 0-d tensor is listed with shape [] and
// holds one element in its .dat (accelerate's utils/offload.py).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "mmap_store/checkpoint.h"

namespace stowage::mmap_store {

// Writes tensors into an offload folder (created if absent). An index.json
// already there is kept and extended, as accelerate's offload_state_dict does.
// Each .dat and the index are written under temporary names and renamed.
//
// Thread safety: none (REQUIRES external synchronization).
class OffloadFolderWriter {
 public:
  explicit OffloadFolderWriter(std::string folder);
  ~OffloadFolderWriter();
  // Writes NAME.dat and records it in the index (written by finish()).
  // Throws InvalidInputError when `bytes` does not match dtype and shape or
  // the name would leave the folder; IoError when writing fails.
  void write(const std::string& name, DType dtype, const Shape& shape, const void* data,
             size_t bytes);
  void write(const std::string& name, const TensorView& tensor);
  // Writes index.json. Tensors written after finish() need another finish().
  void finish();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// Reads an offload folder; each tensor's .dat is memory-mapped when first
// asked for (zero copy, Tier::disk()).
class OffloadFolder final : public Checkpoint {
 public:
  // Parses index.json and checks each NAME.dat exists with the byte size its
  // dtype and shape give. Throws InvalidInputError naming the folder, the
  // tensor and what was expected and found.
  static std::unique_ptr<OffloadFolder> open(const std::string& folder);
  ~OffloadFolder() override;

  const std::string& path() const override;
  const CheckpointIndex& index() const override;
  Tensor tensor(const std::string& name) const override;
  const std::vector<std::pair<std::string, std::string>>& metadata() const override;

  struct State;

 private:
  explicit OffloadFolder(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace stowage::mmap_store
