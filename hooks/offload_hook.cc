#include "hooks/offload_hook.h"

#include <algorithm>

#include "core/error.h"

namespace stowage::hooks {

OffloadHook::OffloadHook(OffloadManager& manager, HookRegistry& registry,
                         std::vector<Module*> modules, std::string prefix)
    : manager_(manager), registry_(registry), prefix_(std::move(prefix)) {
  for (Module* m : modules) {
    STOWAGE_EXPECTS(m != nullptr, InvalidInputError, "OffloadHook: a module pointer is null");
    STOWAGE_EXPECTS(!manager_.table().records_of(prefix_ + m->path()).empty(), InvalidInputError,
                    "OffloadHook: module '{}' has no tensors in the offload manager's table",
                    prefix_ + m->path());
    STOWAGE_EXPECTS(attached_.count(m) == 0, InvalidInputError,
                    "OffloadHook: module '{}' is listed twice", m->path());
    auto a = std::make_unique<Attached>();
    a->module = m;
    a->name = prefix_ + m->path();
    a->handle = manager_.module_handle(a->name);
    attached_.emplace(m, std::move(a));
  }
  for (Module* m : modules) {
    Attached* a = attached_.at(m).get();
    handles_.push_back(registry_.add_pre_forward(
        *m, [this, a](ForwardContext& ctx) { pre_forward(*a, ctx); },
        HookRegistry::kOffloadPreOrder));
    handles_.push_back(registry_.add_post_forward(
        *m, [this, a](ForwardContext& ctx) { post_forward(*a, ctx); },
        HookRegistry::kOffloadPostOrder));
  }
}

std::unique_ptr<OffloadHook> OffloadHook::attach_to_tree(OffloadManager& manager,
                                                         HookRegistry& registry, Module& root,
                                                         const std::string& prefix) {
  std::vector<Module*> modules;
  root.for_each([&](Module& m) {
    if (!manager.table().records_of(prefix + m.path()).empty()) modules.push_back(&m);
  });
  return std::make_unique<OffloadHook>(manager, registry, std::move(modules), prefix);
}

OffloadHook::~OffloadHook() {
  for (HookHandle h : handles_) registry_.remove(h);
}

void OffloadHook::declare_locked(std::vector<std::string> order) {
  order_ = std::move(order);
  if (!order_.empty()) manager_.declare_execution_order(order_);
  order_known_.store(true);
}

void OffloadHook::declare_execution_order(const std::vector<Module*>& order) {
  std::vector<std::string> paths;
  for (Module* m : order) {
    STOWAGE_EXPECTS(m != nullptr && attached_.count(m) != 0, InvalidInputError,
                    "OffloadHook: module '{}' in the declared execution order is not attached",
                    m ? m->path() : "(null)");
    paths.push_back(prefix_ + m->path());
  }
  std::lock_guard<std::mutex> lock(order_mutex_);
  STOWAGE_EXPECTS(!order_known_.load(), InvalidInputError,
                  "OffloadHook: the execution order is already known ({} modules)", order_.size());
  declare_locked(std::move(paths));
}

void OffloadHook::finish_recording() {
  std::lock_guard<std::mutex> lock(order_mutex_);
  if (order_known_.load() || order_.empty()) return;
  declare_locked(order_);
}

bool OffloadHook::execution_order_known() const { return order_known_.load(); }

std::vector<std::string> OffloadHook::execution_order() const {
  std::lock_guard<std::mutex> lock(order_mutex_);
  return order_;
}

void OffloadHook::pre_forward(Attached& a, ForwardContext& ctx) {
  if (!order_known_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(order_mutex_);
    if (!order_known_.load()) {
      if (std::find(order_.begin(), order_.end(), a.name) != order_.end()) {
        declare_locked(order_);  // the second pass began: the order is complete
      } else {
        order_.push_back(a.name);
      }
    }
  }
  ModuleForward fwd = manager_.begin_forward(a.handle, ctx.stream());
  a.in_forward.store(true);
  if (ctx.stream().is_null()) ctx.set_stream(fwd.compute_stream);
  // Map record names to the module's tensor indices once; the manager gives
  // records in a stable order, so later forwards skip the name lookups.
  bool cached = a.names.size() == fwd.tensors.size();
  for (size_t i = 0; cached && i < fwd.tensors.size(); ++i) {
    cached = a.names[i] == fwd.tensors[i].first;
  }
  if (!cached) {
    a.names.clear();
    a.indices.clear();
    for (const auto& [name, view] : fwd.tensors) {
      a.names.push_back(name);
      a.indices.push_back(ctx.module().tensor_index(name));
    }
  }
  for (size_t i = 0; i < fwd.tensors.size(); ++i) {
    if (a.indices[i] >= 0) ctx.set_view(static_cast<size_t>(a.indices[i]), fwd.tensors[i].second);
  }
}

void OffloadHook::post_forward(Attached& a, ForwardContext& ctx) {
  // After a failed pre hook the module may never have begun its forward.
  if (!a.in_forward.exchange(false)) return;
  manager_.end_forward(a.handle, ctx.stream());
}

}  // namespace stowage::hooks
