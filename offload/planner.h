// The planner: a device map (module -> tier) under per-tier budgets, in the
// manner of accelerate's infer_auto_device_map (seed lesson 5: max_memory per
// GPU, e.g. {0: "1GB", 1: "2GB"}).
//
// Algorithm.
//  1. Units. A module (all its tensors) is the smallest unit and is never
//     split across tiers. A no-split pattern (RE2 regex, full match)
//     that matches a module path or one of its ancestor paths ("layers" for
//     "layers.3.attn") makes every module under the shortest matching path one
//     unit, placed whole on one tier. For the MLP family each module is a
//     layer ("layers.3"), so no-split patterns change nothing there unless
//     they match an ancestor ("layers" keeps the whole stack on one tier).
//  2. Tied tensors (one storage, several names, e.g. an embedding and an
//     output head) are counted once: their bytes go to the first module in
//     execution order that uses one of the names; later users count 0 for
//     them. Plan::tied_to maps every other name to that first name.
//  3. Reserve. When anything is streamed (placed off the accelerators), each
//     accelerator keeps slot_count(d) x the largest streamed unit for the
//     fetch slots (a unit's slot bytes: its tensors at 256-byte aligned
//     offsets, as the slots hold them; slot_count(d), the same pool
//     OffloadManager allocates). The reserve
//     depends on what ends up streamed, so placement is iterated as
//     accelerate does: place with reserve r, recompute r from the result,
//     until r covers the largest streamed unit (r only grows, so this ends).
//     Likewise, when anything lands on disk, the cpu tier keeps the pinned
//     buffer disk reads are staged through: disk_staging_buffer_bytes of
//     disk_staging_bytes and the largest tensor on disk. A cpu budget that cannot hold
//     it (beside the tensors overridden onto cpu) fails the plan with
//     OutOfBudgetError naming that tensor, the bytes and the budgets.
//     Working memory. Before anything is placed, each accelerator also keeps
//     working_reserve[tier]: the activations and kernel scratch
//     (cuBLASLt workspace, a dequantized 4-bit weight, converted inputs) its
//     forwards allocate from the same budget. The caller computes it from the
//     model (models::working_memory_bytes for the MLP family). An accelerator
//     whose limit cannot hold its working reserve fails the plan with
//     OutOfBudgetError naming the accelerator, the reserve and the budget.
//  4. Placement, units in execution order: accelerators in the order given
//     (moving to the next one when a unit does not fit in what remains, never
//     back), then pinned host (cpu), then disk. A unit that fits nowhere
//     throws OutOfBudgetError naming the module, its bytes and every budget.
//  5. The minimum that can run. Streamed modules run on the first
//     accelerator of the request (the compute accelerator: the runners list
//     it alone or first). The offload manager runs with fewer slots than
//     slot_count(d) (prefetching stops early, fetches wait for a free slot)
//     but not with none, so when the reserve of step 3 does not fit there
//     the plan keeps as many slots as fit (Plan::fetch_slots) and fails with
//     OutOfBudgetError, naming the accelerator, the largest streamed unit,
//     its slot bytes, the working reserve and the budgets, when not even one
//     slot fits beside the working reserve: the budget the run would fail
//     at its first forward fails the plan, before anything is loaded.
//  6. Tensors placed apart from their module (--override-tensor, as
//     llama.cpp's -ot). A PlanTensor with a `tier` is placed on that tier,
//     not with its module: the bytes of every such tensor are taken from its
//     tier before any unit is placed (in execution order; one that does not
//     fit throws OutOfBudgetError naming the tensor, the tier, its bytes, the
//     tier's budget and what earlier overrides and the working reserve took),
//     and the module's other tensors are placed as a unit as above. A module
//     whose tensors end up on more than one tier is fetched whole for its
//     forward: its tensors on the accelerator that runs it are used in place
//     and the rest (those on host RAM, disk or another accelerator) are
//     copied into a fetch slot, so its slot bytes are those of the tensors
//     not on the first accelerator. Such a module never computes on the host
//     (OffloadManager::set_host_compute needs every tensor host-readable).
//  7. Slot-sized outliers. Every fetch slot is as large as the largest
//     streamed unit, so one large unit streamed late in execution order (an
//     output head of 1 GB behind layers of 0.4 GB) can cost more slot bytes
//     than it holds. The planner then keeps the largest streamed unit on the
//     first accelerator, places the other units in execution order around it
//     (steps 3-6), and keeps the result when it leaves more unit bytes on the
//     accelerators and no more on disk; it repeats with the next largest
//     streamed unit until that no longer helps.
//  8. Resident units spread (PlanRequest::spread_resident). Placement in
//     execution order keeps the first units resident and streams the rest.
//     For a model whose units repeat (decoder layers of one size) that puts
//     all the resident compute in one run at the start of a step, during
//     which the copies can only fill the fetch slots and then wait: in a
//     long prefill the link idles for most of that run. With this flag, the
//     units interchangeable with the largest streamed one (one module each,
//     the same bytes and slot bytes, no tensor placed apart, not read in
//     place, on the first accelerator or on cpu) keep their count on the
//     accelerator but at evenly spaced positions among them, so each
//     resident unit's compute falls between streamed ones and the copies
//     never stop for it. Bytes per tier, the reserves and the slot size stay
//     as step 4 left them.
//
// Thread safety: plan_device_map is a pure function.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tier.h"
#include "offload/memory_budget.h"

namespace stowage {

struct PlanTensor {
  std::string name;  // inside the module: "weight", "weight.absmax"
  uint64_t bytes = 0;
  // Placed on this tier, apart from its module (step 6); nullopt: with it.
  std::optional<Tier> tier;
};

struct PlanModule {
  std::string path;  // "layers.3"
  std::vector<PlanTensor> tensors;
  // Its forward reads only what it needs from whichever tier holds it (an
  // embedding table's rows) and never fetches it into a slot: off the
  // accelerators it takes no slot bytes (steps 3 and 7).
  bool read_in_place = false;
  uint64_t bytes() const;
};

// What to place and the budget to place it under (memory_budget.h: the
// tiers in the order filled, the reserves, the prefetch depth).
struct PlanRequest : MemoryBudget {
  std::vector<PlanModule> modules;  // in execution order; paths unique
  std::vector<std::string> no_split;  // regexes over module paths
  bool spread_resident = false;       // step 8
  // Groups of full tensor names ("module.name") that share one storage.
  std::vector<std::vector<std::string>> tied;
};

struct Plan {
  // Every module of the request, in execution order.
  std::vector<std::pair<std::string, Tier>> device_map;
  // Bytes of placed modules per tier (tied tensors counted once); every tier
  // of the request is present, 0 when empty.
  std::map<Tier, uint64_t> bytes_per_tier;
  // Bytes kept on each accelerator for the fetch slots (0 when nothing is
  // streamed); every accelerator of the request is present.
  std::map<Tier, uint64_t> reserve_per_accelerator;
  // Bytes kept on each accelerator for working memory (activations and
  // kernel scratch): PlanRequest::working_reserve, 0 where absent; every
  // accelerator of the request is present.
  std::map<Tier, uint64_t> working_reserve_per_accelerator;
  uint64_t largest_streamed_unit = 0;  // 0 when nothing is streamed
  // Fetch slots of largest_streamed_unit the first accelerator keeps (step
  // 5): slot_count(prefetch_depth), or fewer (at least 1) where the budget
  // holds fewer; its reserve_per_accelerator is fetch_slots x the unit.
  int fetch_slots = 1;
  uint64_t cpu_reserve = 0;  // disk staging kept on cpu (0: nothing on disk)
  int prefetch_depth = 1;
  // Tied names other than the first, each mapped to the first (placed) name.
  std::map<std::string, std::string> tied_to;
  // The tensors placed apart from their module (PlanTensor::tier, step 6):
  // module path -> (name inside the module, tier), in the module's order.
  std::map<std::string, std::vector<std::pair<std::string, Tier>>> tensor_tiers;

  // device_map's positions by module path (plan_device_map fills it, so
  // tier_of is a lookup: a scan per module made loading quadratic, issue #15
  // item 6); tier_of scans device_map where it does not cover it.
  std::unordered_map<std::string, size_t> module_position;

  // The tier of a module's tensors that no override placed (for a module
  // whose every tensor is overridden, its first tensor's tier). Throws
  // InvalidInputError for a module not in the map.
  Tier tier_of(const std::string& module) const;
  // The tier of one tensor (`name` inside `module`): its override, else its
  // module's tier.
  Tier tier_of_tensor(const std::string& module, const std::string& name) const;
  // Whether the module's tensors are on more than one tier (overrides).
  bool on_several_tiers(const std::string& module) const;
  // Whether the module is fetched for its forward: some tensor of it is off
  // the accelerators, or its tensors are on more than one tier.
  bool streamed(const std::string& module) const {
    return !tier_of(module).is_accelerator() || on_several_tiers(module);
  }
  // The modules placed on `tier`, in execution order.
  std::vector<std::string> modules_on(Tier tier) const;
  // A printable device map: one line per module (path, tier, bytes), then
  // bytes per tier, the streaming reserve on each accelerator and, when any
  // accelerator keeps one, the working-memory reserve.
  std::string to_string(const PlanRequest& request) const;
};

// Throws OutOfBudgetError when a unit fits on no tier, an accelerator
// cannot hold its working reserve, the first accelerator cannot hold one
// fetch slot beside it (step 5), or the tensors overridden to a tier do not
// fit there (step 6); InvalidInputError for a bad regex, a tensor overridden
// to a tier the request does not fill,
// duplicate module paths, a tied name no module has, or a working reserve
// for a tier that is not one of the request's accelerators.
Plan plan_device_map(const PlanRequest& request);

}  // namespace stowage
