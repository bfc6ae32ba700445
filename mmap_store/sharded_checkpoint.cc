#include "mmap_store/sharded_checkpoint.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <map>

#include "core/error.h"
#include "mmap_store/detail/json_file.h"
#include "mmap_store/safetensors_reader.h"

namespace stowage::mmap_store {

namespace json = boost::json;

struct ShardedCheckpoint::State {
  std::string path;
  CheckpointIndex index;
  std::vector<const SafetensorsFile*> owner;  // by index position
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards;
  std::vector<std::pair<std::string, std::string>> metadata;

  explicit State(const std::string& p) : path(p), index(p, "the weight_map") {}
};

std::unique_ptr<ShardedCheckpoint> ShardedCheckpoint::open(const std::string& index_path) {
  auto s = std::make_unique<State>(index_path);
  json::value root = detail::read_json_file(index_path);
  STOWAGE_EXPECTS(root.is_object() && root.as_object().contains("weight_map") &&
                      root.as_object().at("weight_map").is_object(),
                  InvalidInputError,
                  "{}: expected a checkpoint index object with a \"weight_map\" object of "
                  "tensor name to shard file",
                  index_path);
  if (const json::value* m = root.as_object().if_contains("metadata"); m && m->is_object()) {
    for (const auto& kv : m->as_object()) {
      s->metadata.emplace_back(std::string(kv.key()), kv.value().is_string()
                                                          ? std::string(kv.value().as_string())
                                                          : json::serialize(kv.value()));
    }
  }
  const std::string folder = detail::folder_of(index_path);
  for (const auto& kv : root.as_object().at("weight_map").as_object()) {
    std::string name(kv.key());
    STOWAGE_EXPECTS(kv.value().is_string(), InvalidInputError,
                    "{}: weight_map entry for tensor '{}' should name a shard file, found {}",
                    index_path, name, json::serialize(kv.value()));
    std::string shard(kv.value().as_string());
    auto it = s->shards.find(shard);
    if (it == s->shards.end()) {
      std::unique_ptr<SafetensorsFile> file;
      try {
        file = SafetensorsFile::open(folder + "/" + shard);
      } catch (const IoError& e) {
        throw InvalidInputError(
            fmt::format("{}: shard '{}' holding tensor '{}' cannot be opened: {}", index_path,
                        shard, name, e.what()));
      }
      it = s->shards.emplace(shard, std::move(file)).first;
    }
    STOWAGE_EXPECTS(it->second->contains(name), InvalidInputError,
                    "{}: tensor '{}' is listed in shard '{}', but that shard has no such tensor",
                    index_path, name, shard);
    s->index.add(it->second->info(name));
    s->owner.push_back(it->second.get());
  }
  return std::unique_ptr<ShardedCheckpoint>(new ShardedCheckpoint(std::move(s)));
}

ShardedCheckpoint::ShardedCheckpoint(std::unique_ptr<State> state) : state_(std::move(state)) {}
ShardedCheckpoint::~ShardedCheckpoint() = default;
const std::string& ShardedCheckpoint::path() const { return state_->path; }
const CheckpointIndex& ShardedCheckpoint::index() const { return state_->index; }
Tensor ShardedCheckpoint::tensor(const std::string& name) const {
  info(name);  // throws, naming the index, when absent
  return state_->owner[static_cast<size_t>(state_->index.find(name))]->tensor(name);
}
const std::vector<std::pair<std::string, std::string>>& ShardedCheckpoint::metadata() const {
  return state_->metadata;
}

}  // namespace stowage::mmap_store
