#include "mmap_store/checkpoint.h"

#include "mmap_store/safetensors_reader.h"

namespace stowage::mmap_store {

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& name : names()) total += info(name).bytes;
  return total;
}

std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path) {
  return SafetensorsFile::open(path);
}

}  // namespace stowage::mmap_store
