#include "mmap_store/offload_folder.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <mutex>
#include <unordered_map>

#include "core/error.h"
#include "mmap_store/atomic_file.h"
#include "mmap_store/detail/json_file.h"
#include "mmap_store/detail/mapped_file.h"

namespace stowage::mmap_store {

namespace json = boost::json;

namespace {

void check_name(const std::string& folder, const std::string& name) {
  STOWAGE_EXPECTS(!name.empty() && name != "." && name != ".." &&
                      name.find('/') == std::string::npos && name.find('\0') == std::string::npos,
                  InvalidInputError,
                  "{}: tensor name '{}' cannot be a file name in the offload folder", folder, name);
}

// accelerate stores bfloat16 as int16 data under the dtype name "bfloat16";
// the other names are numpy's, which match torch's for these dtypes.
std::string index_dtype_name(DType dtype) { return std::string(torch_name(dtype)); }

}  // namespace

// ---- writer ----

struct OffloadFolderWriter::State {
  std::string folder;
  json::object index;
};

OffloadFolderWriter::OffloadFolderWriter(std::string folder) : state_(std::make_unique<State>()) {
  state_->folder = std::move(folder);
  std::error_code ec;
  std::filesystem::create_directories(state_->folder, ec);
  if (ec) {
    throw IoError(
        fmt::format("{}: cannot create the offload folder: {}", state_->folder, ec.message()));
  }
  const std::string index = state_->folder + "/index.json";
  if (std::filesystem::exists(index)) {
    json::value v = detail::read_json_file(index);
    STOWAGE_EXPECTS(v.is_object(), InvalidInputError,
                    "{}: expected an object of tensor name to {{dtype, shape}}", index);
    state_->index = std::move(v.as_object());
  }
}

OffloadFolderWriter::~OffloadFolderWriter() = default;

void OffloadFolderWriter::write(const std::string& name, DType dtype, const Shape& shape,
                                const void* data, size_t bytes) {
  State& s = *state_;
  check_name(s.folder, name);
  STOWAGE_EXPECTS(dtype != DType::kPacked4, InvalidInputError,
                  "{}: tensor '{}': store packed 4-bit codes as uint8", s.folder, name);
  auto numel = shape.checked_numel();
  STOWAGE_EXPECTS(
      numel && *numel <= UINT64_MAX / dtype_size(dtype) && *numel * dtype_size(dtype) == bytes,
      InvalidInputError, "{}: tensor '{}': {} {} needs {} bytes, {} were given", s.folder, name,
      torch_name(dtype), shape.to_string(), numel ? *numel * dtype_size(dtype) : 0, bytes);
  AtomicFile file(s.folder + "/" + name + ".dat");
  file.write(data, bytes);
  file.commit();
  json::array dims;
  for (int64_t d : shape.dims()) dims.emplace_back(d);
  json::object entry;
  entry["dtype"] = index_dtype_name(dtype);
  entry["shape"] = std::move(dims);
  s.index[name] = std::move(entry);
}

void OffloadFolderWriter::write(const std::string& name, const TensorView& tensor) {
  write(name, tensor.dtype(), tensor.shape(), tensor.data(), tensor.bytes());
}

void OffloadFolderWriter::finish() {
  write_file_atomically(state_->folder + "/index.json", json::serialize(state_->index));
}

// ---- reader ----

struct OffloadFolder::State {
  std::string folder;
  CheckpointIndex index;
  std::vector<std::pair<std::string, std::string>> no_metadata;
  mutable std::mutex mutex;
  mutable std::unordered_map<std::string, std::shared_ptr<Buffer>> maps;

  explicit State(const std::string& f) : folder(f), index(f, "index.json") {}
};

std::unique_ptr<OffloadFolder> OffloadFolder::open(const std::string& folder) {
  const std::string index_path = folder + "/index.json";
  auto s = std::make_unique<State>(folder);
  json::value root = detail::read_json_file(index_path);
  STOWAGE_EXPECTS(root.is_object(), InvalidInputError,
                  "{}: expected an object of tensor name to {{\"dtype\", \"shape\"}}, found {}",
                  index_path, json::serialize(root).substr(0, 60));
  for (const auto& kv : root.as_object()) {
    std::string name(kv.key());
    check_name(folder, name);
    const json::object* entry = kv.value().if_object();
    STOWAGE_EXPECTS(entry && entry->contains("dtype") && entry->at("dtype").is_string() &&
                        entry->contains("shape") && entry->at("shape").is_array(),
                    InvalidInputError,
                    "{}: tensor '{}': expected {{\"dtype\": NAME, \"shape\": [..]}}, found {}",
                    index_path, name, json::serialize(kv.value()).substr(0, 80));
    std::string dtype_name(entry->at("dtype").as_string());
    auto dtype = dtype_from_torch_name(dtype_name);
    STOWAGE_EXPECTS(dtype && *dtype != DType::kPacked4, InvalidInputError,
                    "{}: tensor '{}': unknown dtype \"{}\"", index_path, name, dtype_name);
    std::vector<int64_t> dims;
    for (const json::value& d : entry->at("shape").as_array()) {
      STOWAGE_EXPECTS(d.is_int64() && d.as_int64() >= 0, InvalidInputError,
                      "{}: tensor '{}': expected non-negative integer extents, found {}",
                      index_path, name, json::serialize(d));
      dims.push_back(d.as_int64());
    }
    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    info.shape = Shape(std::move(dims));
    auto numel = info.shape.checked_numel();
    STOWAGE_EXPECTS(numel && *numel <= UINT64_MAX / dtype_size(*dtype), InvalidInputError,
                    "{}: tensor '{}': shape {} overflows", index_path, name,
                    info.shape.to_string());
    info.bytes = *numel * dtype_size(*dtype);  // a 0-d tensor: one element, as stored
    info.file = folder + "/" + name + ".dat";
    uint64_t found;
    try {
      found = detail::file_size_or_throw(info.file);
    } catch (const IoError& e) {
      throw InvalidInputError(
          fmt::format("{}: tensor '{}' listed in index.json: {}", folder, name, e.what()));
    }
    STOWAGE_EXPECTS(found == info.bytes, InvalidInputError,
                    "{}: tensor '{}': {} {} needs {} bytes, {} has {}", folder, name, dtype_name,
                    info.shape.to_string(), info.bytes, info.file, found);
    s->index.add(std::move(info));
  }
  return std::unique_ptr<OffloadFolder>(new OffloadFolder(std::move(s)));
}

OffloadFolder::OffloadFolder(std::unique_ptr<State> state) : state_(std::move(state)) {}
OffloadFolder::~OffloadFolder() = default;
const std::string& OffloadFolder::path() const { return state_->folder; }
const CheckpointIndex& OffloadFolder::index() const { return state_->index; }
Tensor OffloadFolder::tensor(const std::string& name) const {
  const TensorInfo& i = info(name);
  std::shared_ptr<Buffer> map;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    auto& slot = state_->maps[name];
    if (!slot) slot = detail::map_file_read_only(i.file);
    map = slot;
  }
  STOWAGE_EXPECTS(map->size() == i.bytes, InvalidInputError,
                  "{}: tensor '{}': {} changed size to {} bytes, expected {}", state_->folder, name,
                  i.file, map->size(), i.bytes);
  return Tensor::from_storage(map, 0, i.dtype, i.shape);
}
const std::vector<std::pair<std::string, std::string>>& OffloadFolder::metadata() const {
  return state_->no_metadata;
}

}  // namespace stowage::mmap_store
