// A home for host-tier records' bytes outside the manager's own pinned
// memory: the seam through which the streaming loader puts what the plan
// keeps on Tier::pinned_host() into memory shared with other processes
// (hostcache/), or adopts it from there with no read of the checkpoint.
//
// The loader (load_checkpoint with LoadOptions::host_store) calls, once per
// load, after planning and before placing anything:
//   auto load = store.begin_load(checkpoint, options, host_modules);
// then, module by module in execution order:
//   - load->holds(module): the store already has the module's records (as an
//     earlier load placed them, quantization included); the loader places
//     load->records(module) in order and reads nothing of the checkpoint for
//     that module (adopted on the host tier, copied to an accelerator);
//   - otherwise, for a module the plan puts on the host tier, each record's
//     bytes go through load->keep(info, source) (host-readable source), and
//     the manager adopts the tensor keep() returns;
// and finally load->commit() once every record was placed. A load that
// throws before commit() leaves the store as it was (the per-load object's
// destructor abandons what it kept). Disk-homed modules never go through the
// store.
//
// Tensors given out (records(), keep()) are on Tier::pinned_host(), read-only,
// and keep their memory mapped for as long as any of them lives; the manager
// adopts them without counting them against its pinned budget (their bytes
// are the store's to account).
//
// Thread safety: a store may serve loads from several threads; one
// HostTierLoad REQUIRES external synchronization.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "mmap_store/checkpoint.h"
#include "offload/loader.h"
#include "offload/planner.h"
#include "offload/residency_table.h"

namespace stowage {

// How a record is placed in its manager, so a later load can place it again
// exactly: place(module, name, role, ...) for a weight, bias or buffer;
// place_quant_part(<record `weight`>, suffix, ..., name) for a quant-state part.
struct StoredRecordInfo {
  std::string module;  // the checkpoint's module path (no LoadOptions::module_prefix)
  std::string name;    // the record's name inside the module
  TensorRole role = TensorRole::kWeight;
  std::string weight;  // kQuantState: the local name of the part's weight
  std::string suffix;  // kQuantState: the part name ("SCB", "absmax", ...)
};

struct StoredRecord {
  StoredRecordInfo info;
  Tensor tensor;  // Tier::pinned_host(), read-only
};

class HostTierLoad {
 public:
  virtual ~HostTierLoad() = default;
  // Whether the store has every record of `module` (checkpoint path).
  virtual bool holds(const std::string& module) const = 0;
  // The module's records in placement order (weights before their parts).
  // REQUIRES: holds(module).
  virtual std::vector<StoredRecord> records(const std::string& module) const = 0;
  // Copies `source` (host-readable: host memory or a disk mapping) into the
  // store as record `info` and returns the stored tensor; or returns `source`
  // itself when this load adds nothing to the store (it holds contents an
  // earlier load built under another plan): the manager then copies it into
  // its own pinned memory. Only called for modules the plan puts on the host
  // tier and holds() denies.
  virtual Tensor keep(const StoredRecordInfo& info, const Tensor& source) = 0;
  // Every record was placed: what keep() stored becomes visible to later
  // loads. Throws when it cannot be published (the load then fails).
  virtual void commit() = 0;
};

class HostTierStore {
 public:
  virtual ~HostTierStore() = default;
  // Starts one load of `checkpoint` under `options` (its quantization is part
  // of what the stored bytes are); `host_modules` are the modules the plan
  // puts on Tier::pinned_host(), with their planned bytes (an upper bound of
  // what keep() will be given). May block while another process builds the
  // same contents. Throws InvalidInputError / OutOfBudgetError / IoError
  // naming what is wrong; never gives records that do not match the
  // checkpoint and recipe.
  virtual std::unique_ptr<HostTierLoad> begin_load(const mmap_store::Checkpoint& checkpoint,
                                                   const LoadOptions& options,
                                                   const std::vector<PlanModule>& host_modules) = 0;
};

}  // namespace stowage
