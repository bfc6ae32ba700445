#include "hooks/hook_registry.h"

#include <algorithm>
#include <exception>

#include "core/error.h"

namespace stowage::hooks {

HookHandle HookRegistry::insert(Lists& lists, HookPhase phase, HookFn hook, int order) {
  STOWAGE_EXPECTS(static_cast<bool>(hook), InvalidInputError, "a hook must not be empty");
  auto& slot = phase == HookPhase::kPreForward ? lists.pre : lists.post;
  auto list = slot ? std::make_shared<List>(*slot) : std::make_shared<List>();
  uint64_t id = next_id_++;
  Entry entry{order, id, std::move(hook)};
  auto pos =
      std::upper_bound(list->begin(), list->end(), entry, [](const Entry& a, const Entry& b) {
        return a.order < b.order || (a.order == b.order && a.id < b.id);
      });
  list->insert(pos, std::move(entry));
  slot = std::move(list);
  return HookHandle{id};
}

HookHandle HookRegistry::add(const Module& module, HookPhase phase, HookFn hook, int order) {
  std::lock_guard<std::mutex> lock(mutex_);
  const HookHandle handle = insert(per_module_[&module], phase, std::move(hook), order);
  module_of_[handle.id] = &module;
  return handle;
}

HookHandle HookRegistry::add_global(HookPhase phase, HookFn hook, int order) {
  std::lock_guard<std::mutex> lock(mutex_);
  const HookHandle handle = insert(global_, phase, std::move(hook), order);
  module_of_[handle.id] = nullptr;
  return handle;
}

bool HookRegistry::remove(HookHandle handle) {
  if (!handle.valid()) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  auto erase = [&](Lists& lists) {
    for (auto* slot : {&lists.pre, &lists.post}) {
      if (!*slot) continue;
      const List& list = **slot;
      auto it =
          std::find_if(list.begin(), list.end(), [&](const Entry& e) { return e.id == handle.id; });
      if (it == list.end()) continue;
      auto copy = std::make_shared<List>();
      copy->reserve(list.size() - 1);
      for (const Entry& e : list) {
        if (e.id != handle.id) copy->push_back(e);
      }
      *slot = copy->empty() ? nullptr : std::shared_ptr<const List>(std::move(copy));
      return true;
    }
    return false;
  };
  auto owner = module_of_.find(handle.id);
  if (owner == module_of_.end()) return false;
  const Module* module = owner->second;
  module_of_.erase(owner);
  if (module == nullptr) return erase(global_);
  auto lists = per_module_.find(module);
  return lists != per_module_.end() && erase(lists->second);
}

void HookRegistry::remove_all(const Module& module) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = per_module_.find(&module);
  if (it == per_module_.end()) return;
  for (const auto* slot : {&it->second.pre, &it->second.post}) {
    if (*slot) {
      for (const Entry& e : **slot) module_of_.erase(e.id);
    }
  }
  per_module_.erase(it);
}

size_t HookRegistry::count(const Module& module, HookPhase phase) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto size = [&](const Lists& lists) -> size_t {
    const auto& slot = phase == HookPhase::kPreForward ? lists.pre : lists.post;
    return slot ? slot->size() : 0;
  };
  size_t n = size(global_);
  auto it = per_module_.find(&module);
  if (it != per_module_.end()) n += size(it->second);
  return n;
}

void HookRegistry::run_phase(const List* a, const List* b, ForwardContext& ctx, bool swallow) {
  // Merge the module's and the global lists by (order, id) without allocating.
  size_t i = 0, j = 0;
  size_t na = a ? a->size() : 0, nb = b ? b->size() : 0;
  while (i < na || j < nb) {
    const Entry* next;
    if (j >= nb || (i < na && ((*a)[i].order < (*b)[j].order ||
                               ((*a)[i].order == (*b)[j].order && (*a)[i].id < (*b)[j].id)))) {
      next = &(*a)[i++];
    } else {
      next = &(*b)[j++];
    }
    if (swallow) {
      try {
        next->fn(ctx);
      } catch (...) {
      }
    } else {
      next->fn(ctx);
    }
  }
}

void HookRegistry::run_forward(Module& module, StreamRef stream, std::vector<TensorView> inputs,
                               std::vector<TensorView> outputs) {
  STOWAGE_EXPECTS(module.has_forward(), InvalidInputError, "module '{}' has no forward to run",
                  module.path());
  std::shared_ptr<const List> global_pre, global_post, pre, post;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    global_pre = global_.pre;
    global_post = global_.post;
    auto it = per_module_.find(&module);
    if (it != per_module_.end()) {
      pre = it->second.pre;
      post = it->second.post;
    }
  }
  ForwardContext ctx(module, stream, std::move(inputs), std::move(outputs));
  std::exception_ptr error;
  try {
    run_phase(pre.get(), global_pre.get(), ctx, /*swallow=*/false);
    module.forward()(ctx);
  } catch (...) {
    error = std::current_exception();
    ctx.mark_failed();
  }
  if (error) {
    run_phase(post.get(), global_post.get(), ctx, /*swallow=*/true);
    std::rethrow_exception(error);
  }
  run_phase(post.get(), global_post.get(), ctx, /*swallow=*/false);
}

void run_forward_without_hooks(Module& module, StreamRef stream, std::vector<TensorView> inputs,
                               std::vector<TensorView> outputs) {
  STOWAGE_EXPECTS(module.has_forward(), InvalidInputError, "module '{}' has no forward to run",
                  module.path());
  ForwardContext ctx(module, stream, std::move(inputs), std::move(outputs));
  module.forward()(ctx);
}

}  // namespace stowage::hooks
