#include "mmap_store/safetensors_reader.h"

#include <fmt/format.h>

#include "core/error.h"
#include "mmap_store/detail/header_parser.h"
#include "mmap_store/detail/mapped_file.h"

namespace stowage::mmap_store {

struct SafetensorsFile::State {
  std::string path;
  std::shared_ptr<Buffer> mapping;  // the whole file
  std::shared_ptr<Buffer> data;     // the data section, sharing the mapping
  uint64_t data_start = 0;
  CheckpointIndex index;
  std::vector<std::pair<std::string, std::string>> metadata;

  explicit State(const std::string& p) : path(p), index(p, "the header") {}
};

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto state = std::make_unique<State>(path);
  state->mapping = detail::map_file_read_only(path);
  const Buffer& m = *state->mapping;
  detail::ParsedHeader header = detail::parse_safetensors_header(
      static_cast<const unsigned char*>(m.data()), m.size(), m.size(), path);
  state->data_start = header.data_start;
  // A view of the data section whose release keeps the whole mapping alive.
  std::shared_ptr<Buffer> keep = state->mapping;
  char* base = m.data() == nullptr
                   ? nullptr
                   : static_cast<char*>(const_cast<void*>(m.data())) + header.data_start;
  auto release = [keep]() mutable { keep.reset(); };
  if (const FileOrigin* file = m.file_origin()) {
    FileOrigin origin = *file;
    origin.offset += header.data_start;
    state->data = std::make_shared<Buffer>(
        Buffer::adopt(base, header.data_bytes, Tier::disk(), release, std::move(origin)));
  } else {
    state->data =
        std::make_shared<Buffer>(Buffer::adopt(base, header.data_bytes, Tier::disk(), release));
  }
  for (auto& e : header.tensors) {
    TensorInfo info;
    info.name = e.name;
    info.dtype = e.dtype;
    info.shape = std::move(e.shape);
    info.offset = e.begin;
    info.bytes = e.end - e.begin;
    info.file = path;
    info.file_offset = header.data_start + e.begin;
    state->index.add(std::move(info));
  }
  state->metadata = std::move(header.metadata);
  return std::unique_ptr<SafetensorsFile>(new SafetensorsFile(std::move(state)));
}

SafetensorsFile::SafetensorsFile(std::unique_ptr<State> state) : state_(std::move(state)) {}
SafetensorsFile::~SafetensorsFile() = default;

const std::string& SafetensorsFile::path() const { return state_->path; }
const CheckpointIndex& SafetensorsFile::index() const { return state_->index; }
Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& i = info(name);
  return Tensor::from_storage(state_->data, i.offset, i.dtype, i.shape);
}
const std::vector<std::pair<std::string, std::string>>& SafetensorsFile::metadata() const {
  return state_->metadata;
}
uint64_t SafetensorsFile::data_start() const { return state_->data_start; }

}  // namespace stowage::mmap_store
