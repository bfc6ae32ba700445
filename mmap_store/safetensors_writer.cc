#include "mmap_store/safetensors_writer.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "mmap_store/atomic_file.h"

namespace stowage::mmap_store {

namespace json = boost::json;

struct Declared {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t bytes;
};

struct SafetensorsWriter::State {
  AtomicFile file;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<Declared> tensors;
  // Name -> index in `tensors`: each write looks its tensor up in constant
  // time (a scan per write made 100000 small tensors quadratic).
  std::unordered_map<std::string, size_t> index;
  bool header_written = false;
  bool committed = false;
  size_t current = 0;    // index of the tensor being written
  uint64_t written = 0;  // bytes of tensors[current] written so far

  State(std::string path, AtomicFileOptions options) : file(std::move(path), options) {}

  const Declared* find(const std::string& name) const {
    auto it = index.find(name);
    return it != index.end() && it->second < tensors.size() ? &tensors[it->second] : nullptr;
  }

  void write_header() {
    json::object header;
    if (!metadata.empty()) {
      json::object m;
      for (const auto& [k, v] : metadata) m[k] = v;
      header["__metadata__"] = std::move(m);
    }
    uint64_t offset = 0;
    for (const auto& t : tensors) {
      json::array shape;
      for (int64_t d : t.shape.dims()) shape.emplace_back(d);
      json::object entry;
      entry["dtype"] = std::string(safetensors_name(t.dtype));
      entry["shape"] = std::move(shape);
      entry["data_offsets"] = json::array{offset, offset + t.bytes};
      header[t.name] = std::move(entry);
      offset += t.bytes;
    }
    std::string text = json::serialize(header);
    text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(text.size() >> (8 * i));
    file.write(length, 8);
    file.write(text.data(), text.size());
    header_written = true;
    skip_empty();
  }

  void skip_empty() {
    while (current < tensors.size() && written == tensors[current].bytes) {
      ++current;
      written = 0;
    }
  }

  void require_not_started(const char* what) const {
    STOWAGE_EXPECTS(!header_written, InvalidInputError,
                    "{}: {} after tensor data was written; declare everything first", file.path(),
                    what);
  }
};

SafetensorsWriter::SafetensorsWriter(std::string path, AtomicFileOptions options)
    : state_(std::make_unique<State>(std::move(path), options)) {}
SafetensorsWriter::~SafetensorsWriter() = default;

const std::string& SafetensorsWriter::path() const { return state_->file.path(); }

void SafetensorsWriter::set_metadata(std::vector<std::pair<std::string, std::string>> metadata) {
  state_->require_not_started("set_metadata");
  state_->metadata = std::move(metadata);
}

void SafetensorsWriter::declare(const std::string& name, DType dtype, const Shape& shape) {
  State& s = *state_;
  s.require_not_started("declare");
  STOWAGE_EXPECTS(name != "__metadata__", InvalidInputError,
                  "{}: '__metadata__' is reserved and cannot name a tensor", s.file.path());
  STOWAGE_EXPECTS(s.index.emplace(name, s.tensors.size()).second, InvalidInputError,
                  "{}: tensor '{}' declared twice", s.file.path(), name);
  STOWAGE_EXPECTS(dtype != DType::kPacked4, InvalidInputError,
                  "{}: tensor '{}': packed 4-bit codes have no safetensors dtype; declare them "
                  "as U8 bytes",
                  s.file.path(), name);
  auto numel = shape.checked_numel();
  STOWAGE_EXPECTS(numel && *numel <= UINT64_MAX / dtype_size(dtype), InvalidInputError,
                  "{}: tensor '{}': shape {} is negative or its byte size overflows", s.file.path(),
                  name, shape.to_string());
  s.tensors.push_back({name, dtype, shape, *numel * dtype_size(dtype)});
}

void SafetensorsWriter::append(const void* data, size_t bytes) {
  State& s = *state_;
  STOWAGE_EXPECTS(!s.committed, InvalidInputError, "{}: append after commit", s.file.path());
  if (!s.header_written) s.write_header();
  if (bytes == 0) return;
  STOWAGE_EXPECTS(s.current < s.tensors.size(), InvalidInputError,
                  "{}: {} more bytes given after every declared tensor was written", s.file.path(),
                  bytes);
  const Declared& t = s.tensors[s.current];
  STOWAGE_EXPECTS(bytes <= t.bytes - s.written, InvalidInputError,
                  "{}: tensor '{}' holds {} bytes, {} were written and {} more were given",
                  s.file.path(), t.name, t.bytes, s.written, bytes);
  s.file.write(data, bytes);
  s.written += bytes;
  s.skip_empty();
}

void SafetensorsWriter::write(const std::string& name, const void* data, size_t bytes) {
  State& s = *state_;
  if (!s.header_written) s.write_header();
  // Zero-byte tensors hold no data: writing one is a no-op wherever it comes.
  if (const Declared* t = s.find(name); t && t->bytes == 0 && bytes == 0) return;
  STOWAGE_EXPECTS(
      s.current < s.tensors.size() && s.tensors[s.current].name == name && s.written == 0,
      InvalidInputError, "{}: tensor '{}' written out of order; expected {}", s.file.path(), name,
      s.current < s.tensors.size() ? "'" + s.tensors[s.current].name + "'"
                                   : std::string("no more tensors"));
  STOWAGE_EXPECTS(bytes == s.tensors[s.current].bytes, InvalidInputError,
                  "{}: tensor '{}' was declared with {} bytes, {} were given", s.file.path(), name,
                  s.tensors[s.current].bytes, bytes);
  append(data, bytes);
}

void SafetensorsWriter::write(const std::string& name, const TensorView& tensor) {
  State& s = *state_;
  if (const Declared* t = s.find(name)) {
    STOWAGE_EXPECTS(t->dtype == tensor.dtype() && t->shape == tensor.shape(), InvalidInputError,
                    "{}: tensor '{}' was declared {} {}, the data given is {} {}", s.file.path(),
                    name, safetensors_name(t->dtype), t->shape.to_string(),
                    safetensors_name(tensor.dtype()), tensor.shape().to_string());
  }
  write(name, tensor.data(), tensor.bytes());
}

void SafetensorsWriter::commit() {
  State& s = *state_;
  STOWAGE_EXPECTS(!s.committed, InvalidInputError, "{}: committed twice", s.file.path());
  if (!s.header_written) s.write_header();
  STOWAGE_EXPECTS(s.current == s.tensors.size(), InvalidInputError,
                  "{}: tensor '{}' is incomplete: {} of {} bytes written", s.file.path(),
                  s.tensors[s.current].name, s.written, s.tensors[s.current].bytes);
  s.file.commit();
  s.committed = true;
}

}  // namespace stowage::mmap_store
