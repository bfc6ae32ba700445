// A checkpoint: named tensors read from files (one safetensors file, a sharded
// safetensors checkpoint, or an accelerate offload folder), all behind one
// interface.
//
// Tensors come out on Tier::disk(): their bytes are the read-only memory map
// of the file (zero copy). Writing through Tensor::data() of such a tensor is
// undefined (the mapping is read-only). A tensor keeps its mapping alive, so
// it may outlive the Checkpoint object.
//
// Thread safety: after open returns, every const member may be called from
// several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "core/tensor.h"

namespace stowage::mmap_store {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t offset = 0;  // byte offset within `file`'s data (0 for an offload .dat)
  uint64_t bytes = 0;
  std::string file;  // the file holding the bytes
  // Absolute byte offset of the tensor in `file` (for FileHandle::pread /
  // StagingRing::read): the data start plus `offset` in a safetensors file.
  uint64_t file_offset = 0;
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;
  // What was opened (the .safetensors file, the index, the folder).
  virtual const std::string& path() const = 0;
  // Tensor names in file order (header order; for a sharded checkpoint the
  // weight_map's order).
  virtual const std::vector<std::string>& names() const = 0;
  virtual bool contains(const std::string& name) const = 0;
  // Throws InvalidInputError naming the tensor and path() when absent.
  virtual const TensorInfo& info(const std::string& name) const = 0;
  // Zero-copy tensor on Tier::disk(). Throws InvalidInputError when absent.
  virtual Tensor tensor(const std::string& name) const = 0;
  // `__metadata__` (safetensors) or the index's "metadata" (sharded), in
  // file order; empty for an offload folder.
  virtual const std::vector<std::pair<std::string, std::string>>& metadata() const = 0;
  // Sum of the tensors' bytes.
  uint64_t total_bytes() const;
};

// Opens PATH by its kind: a directory holding index.json (offload folder), a
// file ending in ".index.json" (sharded), else a single safetensors file.
// Throws InvalidInputError (malformed) or IoError (cannot read).
std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path);

}  // namespace stowage::mmap_store
