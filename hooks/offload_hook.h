// The offload hook: streams a module's tensors around its forward through an
// OffloadManager (DESIGN.md, "The prefetch pipeline").
//
//   pre_forward(k):  manager.begin_forward(k): the compute stream waits on
//                    module k's fetch event (no host wait), fetches for the
//                    next d modules of the execution order are queued on the
//                    copy stream; the forward's tensor views are pointed at
//                    the bytes the manager gives (a fetch slot, or the
//                    resident copy).
//   post_forward(k): manager.end_forward(k): an event on the compute stream
//                    marks when k's slot may be reused (stream-ordered, no
//                    host synchronization).
//
// Execution order: declared by the host program (declare_execution_order), or
// recorded on the first forward: the modules are noted in the order their
// pre_forward runs, and the order is declared to the manager when a module
// runs a second time (the next pass began) or finish_recording() is called.
// Until then nothing is prefetched (each module is fetched on demand).
//
// The hook registers itself with HookRegistry::kOffloadPreOrder (before user
// pre hooks) and kOffloadPostOrder (after user post hooks), so user hooks
// (logging, timing) run beside it and see the module's tensors in place.
//
// Thread safety: forwards of different modules may run from several threads
// at once (one model per thread, each with its own OffloadHook, through one
// manager). Forwards of one module must not overlap.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "hooks/hook_registry.h"
#include "hooks/module.h"
#include "offload/offload_manager.h"

namespace stowage::hooks {

class OffloadHook {
 public:
  // Attaches to each of `modules`. The manager knows module m as
  // `prefix + m.path()` (a prefix lets several models share one manager,
  // e.g. "model_a."); each must be in the manager's table (InvalidInputError
  // names one that is not). The manager, the registry and the modules must
  // outlive the hook.
  OffloadHook(OffloadManager& manager, HookRegistry& registry, std::vector<Module*> modules,
              std::string prefix = "");
  // Attaches to every module under `root` (root included) that has records in
  // the manager's table (under `prefix`).
  static std::unique_ptr<OffloadHook> attach_to_tree(OffloadManager& manager,
                                                     HookRegistry& registry, Module& root,
                                                     const std::string& prefix = "");
  // Removes its hooks. REQUIRES: no forward of its modules in flight.
  ~OffloadHook();
  OffloadHook(const OffloadHook&) = delete;
  OffloadHook& operator=(const OffloadHook&) = delete;

  // Declares the order (stops recording). Every module must be attached.
  void declare_execution_order(const std::vector<Module*>& order);
  // Ends recording now and declares what was recorded (no-op when the order
  // is already known or nothing was recorded).
  void finish_recording();
  bool execution_order_known() const;
  // The declared or recorded order so far (the manager's module names).
  std::vector<std::string> execution_order() const;

 private:
  struct Attached {
    Module* module = nullptr;
    std::string name;     // the manager's name: prefix + path
    ModuleHandle handle;  // resolved once: forwards do no lookup by name
    // Record name -> the module's tensor index (-1: the module does not
    // declare it), cached from the first begin_forward in record order.
    std::vector<std::string> names;
    std::vector<int> indices;
    std::atomic<bool> in_forward{false};
  };
  void pre_forward(Attached& a, ForwardContext& ctx);
  void post_forward(Attached& a, ForwardContext& ctx);
  void declare_locked(std::vector<std::string> order);

  OffloadManager& manager_;
  HookRegistry& registry_;
  std::string prefix_;
  std::unordered_map<const Module*, std::unique_ptr<Attached>> attached_;
  std::vector<HookHandle> handles_;

  mutable std::mutex order_mutex_;
  std::atomic<bool> order_known_{false};
  std::vector<std::string> order_;
};

}  // namespace stowage::hooks
