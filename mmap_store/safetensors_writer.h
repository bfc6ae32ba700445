// Streaming safetensors writer. Declare every tensor first (name, dtype,
// shape; optional __metadata__), then stream each tensor's bytes in declared
// order; commit() makes the file appear at its final name.
//
// The file is written under a temporary name in the target folder, fsync'd
// and renamed into place by commit(), so the final name only ever holds a
// complete file; a writer destroyed without commit() removes its temporary
// file. The header is padded with spaces so the data starts 8-byte aligned,
// as the Python safetensors writer does; offsets follow declaration order.
//
// Thread safety: none (one writer, one thread; REQUIRES external
// synchronization).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "core/tensor.h"
#include "mmap_store/atomic_file.h"

namespace stowage::mmap_store {

class SafetensorsWriter {
 public:
  // Creates the temporary file beside `path` (mmap_store/atomic_file.h: what
  // may be replaced, and the optional registry of temporary files). Throws
  // IoError when the folder is not writable or the target is refused.
  explicit SafetensorsWriter(std::string path, AtomicFileOptions options = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // REQUIRES: before the first write/append. Written as "__metadata__".
  void set_metadata(std::vector<std::pair<std::string, std::string>> metadata);
  // Declares the next tensor. REQUIRES: before the first write/append.
  // Throws InvalidInputError on a duplicate or reserved name, a negative or
  // overflowing shape, or DType::kPacked4 (store packed codes as U8).
  void declare(const std::string& name, DType dtype, const Shape& shape);

  // Appends bytes to the tensors in declared order (a tensor may come in
  // several chunks, a chunk may not cross into the next tensor). The header
  // is written on the first call. Throws InvalidInputError when more bytes
  // come than the current tensor holds; IoError when writing fails.
  void append(const void* data, size_t bytes);
  // Writes the whole of `name`, which must be the next tensor to write and
  // have exactly its declared byte size.
  void write(const std::string& name, const void* data, size_t bytes);
  // Same, checking dtype and shape against the declaration.
  void write(const std::string& name, const TensorView& tensor);
  // Checks every declared byte was written, fsyncs, renames into place and
  // fsyncs the folder. Throws InvalidInputError naming the first incomplete
  // tensor.
  void commit();

  const std::string& path() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace stowage::mmap_store
