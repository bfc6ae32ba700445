#include "hooks/module.h"

#include "core/error.h"

namespace stowage::hooks {

Module& Module::add_child(const std::string& name) {
  STOWAGE_EXPECTS(!name.empty() && name.find('.') == std::string::npos, InvalidInputError,
                  "module '{}': a child name must be non-empty and have no '.', found '{}'", path_,
                  name);
  STOWAGE_EXPECTS(child_by_name_.count(name) == 0, InvalidInputError,
                  "module '{}' already has a child named '{}'", path_, name);
  auto child = std::make_unique<Module>();
  child->name_ = name;
  child->path_ = path_.empty() ? name : path_ + "." + name;
  child->parent_ = this;
  child_by_name_.emplace(name, child.get());
  children_.push_back(std::move(child));
  return *children_.back();
}

Module& Module::add_descendant(const std::string& path) {
  Module* node = this;
  size_t begin = 0;
  while (begin <= path.size() && !path.empty()) {
    size_t end = path.find('.', begin);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(begin, end - begin);
    auto it = node->child_by_name_.find(part);
    node = it != node->child_by_name_.end() ? it->second : &node->add_child(part);
    begin = end + 1;
  }
  return *node;
}

Module* Module::find(std::string_view path) {
  Module* node = this;
  size_t begin = 0;
  while (!path.empty() && begin <= path.size()) {
    size_t end = path.find('.', begin);
    if (end == std::string_view::npos) end = path.size();
    auto it = node->child_by_name_.find(std::string(path.substr(begin, end - begin)));
    if (it == node->child_by_name_.end()) return nullptr;
    node = it->second;
    begin = end + 1;
  }
  return node;
}

void Module::for_each(const std::function<void(Module&)>& visit) {
  visit(*this);
  for (const auto& child : children_) child->for_each(visit);
}

size_t Module::add_tensor(const std::string& name, Tensor tensor) {
  STOWAGE_EXPECTS(!name.empty(), InvalidInputError, "module '{}': a tensor name is empty", path_);
  STOWAGE_EXPECTS(tensor_index_.count(name) == 0, InvalidInputError,
                  "module '{}' already has a tensor named '{}'", path_, name);
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(ModuleTensor{name, std::move(tensor)});
  return tensors_.size() - 1;
}

int Module::tensor_index(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? -1 : static_cast<int>(it->second);
}

void Module::set_tensor(std::string_view name, Tensor tensor) {
  int index = tensor_index(name);
  STOWAGE_EXPECTS(index >= 0, InvalidInputError, "module '{}' has no tensor named '{}'", path_,
                  name);
  tensors_[index].tensor = std::move(tensor);
}

const Tensor& Module::tensor(std::string_view name) const {
  int index = tensor_index(name);
  STOWAGE_EXPECTS(index >= 0, InvalidInputError, "module '{}' has no tensor named '{}'", path_,
                  name);
  return tensors_[index].tensor;
}

ForwardContext::ForwardContext(Module& module, StreamRef stream, std::vector<TensorView> inputs,
                               std::vector<TensorView> outputs)
    : module_(&module), stream_(stream), inputs_(std::move(inputs)), outputs_(std::move(outputs)) {
  const auto& tensors = module.tensors();
  views_.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].tensor.defined()) views_[i] = tensors[i].tensor.view();
  }
}

const TensorView& ForwardContext::tensor(std::string_view name) const {
  int index = module_->tensor_index(name);
  STOWAGE_EXPECTS(index >= 0, InvalidInputError, "module '{}' has no tensor named '{}'",
                  module_->path(), name);
  return tensor_at(static_cast<size_t>(index));
}

const TensorView& ForwardContext::tensor_at(size_t index) const {
  STOWAGE_EXPECTS(index < views_.size(), InvalidInputError,
                  "module '{}': tensor index {} is out of range (it has {} tensors)",
                  module_->path(), index, views_.size());
  STOWAGE_EXPECTS(views_[index].data() != nullptr || views_[index].bytes() == 0 ||
                      module_->tensors()[index].tensor.defined(),
                  InvalidInputError,
                  "module '{}': tensor '{}' has no bytes for this forward (it is not resident "
                  "and no hook fetched it)",
                  module_->path(), module_->tensors()[index].name);
  return views_[index];
}

}  // namespace stowage::hooks
