// Reading one .safetensors file through a read-only memory map
// (Boost.Interprocess file_mapping + mapped_region). The whole header is
// validated (every rule of FORMATS.md) before any tensor is exposed.
#pragma once

#include <memory>
#include <string>

#include "mmap_store/checkpoint.h"

namespace stowage::mmap_store {

class SafetensorsFile final : public Checkpoint {
 public:
  // Maps and validates `path`. Throws InvalidInputError naming the file, the
  // tensor and the broken rule with expected vs found; IoError when the file
  // cannot be opened or mapped.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile() override;

  const std::string& path() const override;
  const CheckpointIndex& index() const override;
  Tensor tensor(const std::string& name) const override;
  const std::vector<std::pair<std::string, std::string>>& metadata() const override;
  // Byte offset of the data in the file (8 + header length).
  uint64_t data_start() const;

  struct State;

 private:
  explicit SafetensorsFile(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace stowage::mmap_store
