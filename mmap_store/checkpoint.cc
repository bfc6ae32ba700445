#include "mmap_store/checkpoint.h"

#include <filesystem>

#include "mmap_store/offload_folder.h"
#include "mmap_store/safetensors_reader.h"
#include "mmap_store/sharded_checkpoint.h"

namespace stowage::mmap_store {

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
