#include "mmap_store/checkpoint.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/error.h"
#include "mmap_store/offload_folder.h"
#include "mmap_store/safetensors_reader.h"
#include "mmap_store/sharded_checkpoint.h"

namespace stowage::mmap_store {

CheckpointIndex::CheckpointIndex(std::string source, std::string listing)
    : source_(std::move(source)), listing_(std::move(listing)) {}

size_t CheckpointIndex::add(TensorInfo info) {
  const size_t position = infos_.size();
  STOWAGE_EXPECTS(positions_.emplace(info.name, position).second, InvalidInputError,
                  "{}: tensor '{}' listed twice in {}", source_, info.name, listing_);
  names_.push_back(info.name);
  infos_.push_back(std::move(info));
  return position;
}

ptrdiff_t CheckpointIndex::find(const std::string& name) const {
  auto it = positions_.find(name);
  return it == positions_.end() ? -1 : static_cast<ptrdiff_t>(it->second);
}

const TensorInfo& CheckpointIndex::info(const std::string& name) const {
  auto it = positions_.find(name);
  STOWAGE_EXPECTS(it != positions_.end(), InvalidInputError,
                  "{}: no tensor named '{}' in {} ({} tensors)", source_, name, listing_,
                  infos_.size());
  return infos_[it->second];
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& name : names()) total += info(name).bytes;
  return total;
}

std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return OffloadFolder::open(path);
  const std::string suffix = ".index.json";
  if (path.size() >= suffix.size() &&
      path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return ShardedCheckpoint::open(path);
  }
  return SafetensorsFile::open(path);
}

}  // namespace stowage::mmap_store
