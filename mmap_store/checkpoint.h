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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
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

// The tensors of one checkpoint by name, in file order: what every reader
// answers names(), contains() and info() from.
//
// Thread safety: const members may be called from several threads at once.
class CheckpointIndex {
 public:
  // `source` (the path) and `listing` (where the names are listed: "the
  // header", "index.json", "the weight_map") are for messages.
  CheckpointIndex(std::string source, std::string listing);
  // Appends `info` and returns its position. Throws InvalidInputError naming
  // the tensor when the name is already listed.
  size_t add(TensorInfo info);
  const std::vector<std::string>& names() const { return names_; }
  size_t size() const { return infos_.size(); }
  // Position of `name`, or -1 when absent.
  ptrdiff_t find(const std::string& name) const;
  bool contains(const std::string& name) const { return find(name) >= 0; }
  // Throws InvalidInputError naming the tensor, the source and the listing
  // when absent.
  const TensorInfo& info(const std::string& name) const;
  const TensorInfo& at(size_t position) const { return infos_.at(position); }

 private:
  std::string source_;
  std::string listing_;
  std::vector<std::string> names_;
  std::vector<TensorInfo> infos_;
  std::unordered_map<std::string, size_t> positions_;
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;
  // What was opened (the .safetensors file, the index, the folder).
  virtual const std::string& path() const = 0;
  // The tensors by name (file order: header order; for a sharded checkpoint
  // the weight_map's order).
  virtual const CheckpointIndex& index() const = 0;
  const std::vector<std::string>& names() const { return index().names(); }
  bool contains(const std::string& name) const { return index().contains(name); }
  // Throws InvalidInputError naming the tensor and path() when absent.
  const TensorInfo& info(const std::string& name) const { return index().info(name); }
  // Zero-copy tensor on Tier::disk(). Throws InvalidInputError when absent.
  virtual Tensor tensor(const std::string& name) const = 0;
  // `__metadata__` (safetensors) or the index's "metadata" (sharded), in
  // file order; empty for an offload folder.
  virtual const std::vector<std::pair<std::string, std::string>>& metadata() const = 0;
  // Sum of the tensors' bytes.
  uint64_t total_bytes() const;
};

// A file shrunk while mapped (truncated or rewritten in place by another
// process): a read of a tensor's bytes past the file's new end finds zeros
// instead of ending the process by SIGBUS, and marks the mapping. Throws
// IoError naming the file and `what` (the tensor) when [data, data + bytes)
// lies in such a marked mapping. Call it after reading a tensor's bytes from
// its mapping and before using them. One atomic load when no mapping was
// ever hit. Thread safety: any thread.
void check_mapped_read(const void* data, uint64_t bytes, std::string_view what);
// The same for a tensor on Tier::disk() (a no-op for other tiers).
void check_mapped_read(const Tensor& tensor, std::string_view what);

// Opens PATH by its kind: a directory holding index.json (offload folder), a
// file ending in ".index.json" (sharded), else a single safetensors file.
// Throws InvalidInputError (malformed) or IoError (cannot read).
std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path);

}  // namespace stowage::mmap_store
