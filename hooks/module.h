// The module API: a tree of named modules (paths like "layers.3"), each
// holding named tensors (weights, biases, buffers, quant-state parts) and a
// forward that is the host program's own code.
//
// A forward runs through hooks::run_forward() (hooks/hook_registry.h), which
// builds a ForwardContext: the compute stream, the call's inputs/outputs, and
// a device-accessible view of each of the module's tensors. Hooks may replace
// those views before the forward runs (the offload hook points them at the
// slot the module was fetched into), so a forward never needs to know where
// its tensors live between calls.
//
// Thread safety: building a tree (add_child, add_tensor, set_forward) REQUIRES
// external synchronization; once built, a tree may be read and its modules run
// from several threads (a module's forward must itself be thread-safe for
// that, and one module's tensors must not be replaced while it runs).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/stream.h"
#include "core/tensor.h"

namespace stowage::hooks {

class ForwardContext;
class Module;

// The host program's forward: enqueue work on ctx.stream() that reads
// ctx.tensor(...) and ctx.inputs(), and writes ctx.outputs(). It may throw;
// run_forward() then still runs the post hooks (marked failed()).
using ForwardFn = std::function<void(ForwardContext& ctx)>;

// One named tensor a module owns. `tensor` may be undefined when the bytes are
// held elsewhere (e.g. by an offload manager's residency table): then a hook
// must provide the view before the forward reads it.
struct ModuleTensor {
  std::string name;
  Tensor tensor;
};

class Module {
 public:
  // A root module (path ""). Children are made by add_child().
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The local name ("3") and the dotted path from the root ("layers.3"; "" for
  // the root).
  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }
  Module* parent() const { return parent_; }

  // Adds a child named `name` (no dots, not empty, unique among siblings;
  // InvalidInputError otherwise) and returns it. Children keep insertion order.
  Module& add_child(const std::string& name);
  // Returns the module at `path` relative to this one, making the missing
  // modules on the way ("layers.3" makes "layers" then "3").
  Module& add_descendant(const std::string& path);
  // The module at `path` relative to this one ("" is this module); nullptr if
  // absent.
  Module* find(std::string_view path);
  const std::vector<std::unique_ptr<Module>>& children() const { return children_; }
  // Visits this module and its descendants, parents before children, children
  // in insertion order.
  void for_each(const std::function<void(Module&)>& visit);

  // Adds a named tensor (names unique within the module). Returns its index,
  // stable for the module's lifetime.
  size_t add_tensor(const std::string& name, Tensor tensor = Tensor());
  const std::vector<ModuleTensor>& tensors() const { return tensors_; }
  // Index of tensor `name`, or -1.
  int tensor_index(std::string_view name) const;
  // Replaces the bytes held for tensor `name` (InvalidInputError if absent).
  void set_tensor(std::string_view name, Tensor tensor);
  const Tensor& tensor(std::string_view name) const;

  void set_forward(ForwardFn forward) { forward_ = std::move(forward); }
  bool has_forward() const { return static_cast<bool>(forward_); }
  const ForwardFn& forward() const { return forward_; }

 private:
  std::string name_;
  std::string path_;
  Module* parent_ = nullptr;
  std::vector<std::unique_ptr<Module>> children_;
  // Child by name: finding a child among n siblings by scanning made
  // building a tree of n layers quadratic (issue #15 item 6).
  std::unordered_map<std::string, Module*> child_by_name_;
  std::vector<ModuleTensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  ForwardFn forward_;
};

// What a forward (and its hooks) sees. Made by run_forward(); lives for one
// call.
class ForwardContext {
 public:
  ForwardContext(Module& module, StreamRef stream, std::vector<TensorView> inputs,
                 std::vector<TensorView> outputs);

  Module& module() const { return *module_; }
  const std::string& path() const { return module_->path(); }
  // The compute stream all of this forward's work is enqueued on.
  StreamRef stream() const { return stream_; }
  // Hooks may pick the stream when the caller gave none (the offload hook
  // uses the offload manager's compute stream then).
  void set_stream(StreamRef stream) { stream_ = stream; }
  const std::vector<TensorView>& inputs() const { return inputs_; }
  const std::vector<TensorView>& outputs() const { return outputs_; }

  // The view of the module's tensor `name` for this forward. Throws
  // InvalidInputError naming the module and tensor when the module has no
  // such tensor or nothing provided its bytes.
  const TensorView& tensor(std::string_view name) const;
  // The same by index (Module::tensor_index); no name lookup.
  const TensorView& tensor_at(size_t index) const;
  // Whether tensor `index` has a view (has bytes) for this forward.
  bool has_tensor_at(size_t index) const { return views_[index].data() != nullptr; }
  // Points tensor `index` at other bytes for this forward (hooks do this).
  void set_view(size_t index, TensorView view) { views_[index] = std::move(view); }
  size_t tensor_count() const { return views_.size(); }

  // True while post hooks run after a pre hook or the forward threw.
  bool failed() const { return failed_; }
  void mark_failed() { failed_ = true; }

 private:
  Module* module_;
  StreamRef stream_;
  std::vector<TensorView> inputs_;
  std::vector<TensorView> outputs_;
  std::vector<TensorView> views_;
  bool failed_ = false;
};

}  // namespace stowage::hooks
