// Pre- and post-forward hooks around modules, and run_forward(), the one call
// that runs a module's forward with its hooks.
//
// A hook is registered for one module or for every module, with an `order`
// (lower runs first; equal orders run in registration order), and is removed
// by the handle registration returned. run_forward(module) runs, in order:
// the pre hooks, the module's forward, the post hooks. If a pre hook or the
// forward throws, the post hooks still run with ctx.failed() true (so a hook
// that took a resource in pre, such as an offload slot, gives it back), their
// own exceptions are swallowed, and the first exception is rethrown.
//
// Thread safety: all members may be called from several threads at once.
// A hook may register or remove hooks (itself included) while it runs; the
// change applies from the next run_forward(). A forward sees the hooks as they
// were when its run_forward() began.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "hooks/module.h"

namespace stowage::hooks {

using HookFn = std::function<void(ForwardContext& ctx)>;

enum class HookPhase { kPreForward, kPostForward };

// Identifies one registration; value type, cheap to copy. A default handle
// names no hook.
struct HookHandle {
  uint64_t id = 0;
  bool valid() const { return id != 0; }
};

class HookRegistry {
 public:
  // Default order of user hooks; the offload hook uses kOffloadOrder so that
  // it wraps user hooks: its pre runs first (tensors are on the device before
  // user pre hooks run) and its post runs last.
  static constexpr int kDefaultOrder = 0;
  static constexpr int kOffloadPreOrder = -1000;
  static constexpr int kOffloadPostOrder = 1000;

  HookRegistry() = default;
  HookRegistry(const HookRegistry&) = delete;
  HookRegistry& operator=(const HookRegistry&) = delete;

  // Registers `hook` for `module` (the Module must outlive the registration).
  HookHandle add(const Module& module, HookPhase phase, HookFn hook, int order = kDefaultOrder);
  // Registers `hook` for every module run through this registry.
  HookHandle add_global(HookPhase phase, HookFn hook, int order = kDefaultOrder);
  HookHandle add_pre_forward(const Module& module, HookFn hook, int order = kDefaultOrder) {
    return add(module, HookPhase::kPreForward, std::move(hook), order);
  }
  HookHandle add_post_forward(const Module& module, HookFn hook, int order = kDefaultOrder) {
    return add(module, HookPhase::kPostForward, std::move(hook), order);
  }

  // Removes the hook; false when the handle names no registered hook (already
  // removed, or default).
  bool remove(HookHandle handle);
  // Removes every hook registered for `module` (not the global ones).
  void remove_all(const Module& module);
  // Number of hooks that would run for `module` in `phase`.
  size_t count(const Module& module, HookPhase phase) const;

  // Runs `module`'s pre hooks, forward and post hooks on `stream` with the
  // given inputs/outputs (see the file comment). A module with no forward is
  // an InvalidInputError naming it.
  void run_forward(Module& module, StreamRef stream, std::vector<TensorView> inputs = {},
                   std::vector<TensorView> outputs = {});

 private:
  struct Entry {
    int order;
    uint64_t id;
    HookFn fn;
  };
  using List = std::vector<Entry>;  // sorted by (order, id)
  struct Lists {
    std::shared_ptr<const List> pre;
    std::shared_ptr<const List> post;
  };

  HookHandle insert(Lists& lists, HookPhase phase, HookFn hook, int order);
  static void run_phase(const List* a, const List* b, ForwardContext& ctx, bool swallow);

  mutable std::mutex mutex_;
  uint64_t next_id_ = 1;
  Lists global_;
  std::unordered_map<const Module*, Lists> per_module_;
  // Hook id -> its module (nullptr: global), so remove() finds the one list
  // to edit instead of scanning every module's: removing the hooks of n
  // modules was quadratic in n (issue #15 item 6).
  std::unordered_map<uint64_t, const Module*> module_of_;
};

// Convenience: runs `module` with only its own forward (no hooks).
void run_forward_without_hooks(Module& module, StreamRef stream,
                               std::vector<TensorView> inputs = {},
                               std::vector<TensorView> outputs = {});

}  // namespace stowage::hooks
