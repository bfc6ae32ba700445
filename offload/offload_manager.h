// The offload manager: places every tensor of every module on a tier, moves
// modules between tiers as byte copies, and fetches streamed modules into a
// per-accelerator slot pool around their forwards, prefetching the next ones
// on a copy stream. Written against core's StreamRef / Event / MemoryResource
// only, so it runs unchanged on the sim and CUDA backends.
//
// A facade over three parts, one responsibility each, behind one mutex:
// TierMemory (tier_memory.h: budgeted, counted memory per tier, usage,
// counters), Placement (placement.h: placing records, moving modules, host
// reads) and FetchScheduler (fetch_scheduler.h: streams, slot pools, fetches
// and prefetches, the working-memory guard, stalls, tracing, capture), whose
// slots' state the SlotPool (slot_pool.h) owns.
//
// Invariants (DESIGN.md's seed lessons):
//  - a move is a byte copy of every record of the module, quant-state parts
//    included; nothing is ever re-quantized (lessons 1, 2);
//  - an offloaded tensor is a real tensor on pinned host or mapped from disk,
//    readable from the host at any time (lesson 3);
//  - every tier's bytes come from a budgeted, counted resource: usage(tier)
//    gives bytes in use and the peak, and the budget is never exceeded.
//
// The forward protocol (the offload hook calls these):
//   auto fwd = manager.begin_forward("layers.3");  // compute waits for fetch
//   ... enqueue the forward on fwd.compute_stream using fwd.find("weight") ...
//   manager.end_forward("layers.3");               // slot reusable after it
// begin_forward makes the compute stream wait on the module's fetch event
// (stream-ordered, the host does not wait) and queues fetches of the next
// `prefetch_depth` streamed modules of the execution order while slots are
// free; after a module that holds no slot (resident, or computed on the
// host), of the next prefetch_depth + 1, so every slot can take a copy while
// it runs.
// end_forward records an event on the compute stream; the copy stream waits
// on it before overwriting that slot. No host synchronization in the steady
// state.
//
// Slot pool: on each accelerator that runs streamed modules, slot_count(d) =
// d + 1 slots (planner.h) of the largest streamed module's bytes (its records
// packed at 256-byte alignment), allocated once by dispatch() (or lazily, one
// slot at first need, with OffloadOptions::lazy_slots). If a slot cannot be
// allocated (accelerator out of memory or budget), the pool keeps the slots
// it has: prefetching stops early and a module with no free slot is fetched
// synchronously into the next released slot. With no slot at all the forward
// fails with OutOfMemoryError / OutOfBudgetError naming the module and bytes.
// Slots never take the part of OffloadOptions::working_reserve not in use yet.
// Output is never wrong.
//
// A module whose records are on several tiers (tensor overrides, planner.h
// step 6) is streamed: for its forward the records that have a copy on the
// accelerator running it are used in place and only the others are copied
// into the slot (its slot bytes count those only).
//
// Thread safety: every member may be called from several threads at once. Two
// threads may run forwards of their own modules concurrently through one
// manager (each declares its own execution order); the forwards of one module
// must not overlap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/memory_resource.h"
#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "offload/fetch_scheduler.h"
#include "offload/offload_options.h"
#include "offload/residency_table.h"
#include "offload/tier_memory.h"

namespace stowage {

class OffloadManager {
 public:
  // `platform` must outlive the manager. Creates a compute and a copy stream
  // per accelerator.
  OffloadManager(Platform& platform, OffloadOptions options);
  // Waits for all queued work, then frees slots, staging and every copy.
  ~OffloadManager();
  OffloadManager(const OffloadManager&) = delete;
  OffloadManager& operator=(const OffloadManager&) = delete;

  ResidencyTable& table() { return table_; }
  const ResidencyTable& table() const { return table_; }
  Platform& platform() { return platform_; }
  const OffloadOptions& options() const { return options_; }

  // The budgeted, counted resource of a host or accelerator tier. A tensor
  // allocated from it and given to place() on that tier is adopted, not
  // copied (the streaming loader's path). Throws InvalidInputError for disk.
  MemoryResource& memory(Tier tier);
  TierUsage usage(Tier tier) const;
  // Bytes on the disk tier now (records with a disk copy made or adopted).
  uint64_t disk_bytes() const;
  StreamRef compute_stream(Tier accelerator);
  StreamRef copy_stream(Tier accelerator);

  // --- Placement. Registers record (module, name) and puts its bytes on
  // `tier`: adopted when `source` already lives there in memory(tier), is a
  // disk-tier mapping and tier is disk, or is host memory of `tier` adopted
  // from elsewhere (Buffer::adopt, no resource: e.g. a segment shared across
  // processes, whose bytes its owner accounts, not this tier's budget);
  // otherwise copied (synchronously).
  // Throws InvalidInputError for a duplicate name or a dtype/shape that does
  // not match the source's bytes; OutOfBudgetError when the tier is full.
  RecordId place(const std::string& module, const std::string& name, TensorRole role,
                 const Tensor& source, Tier tier);
  // A quant-state part of weight record `weight` (quant/ gives parts as
  // (suffix, Tensor) pairs), placed with the weight on its home tier.
  RecordId place_quant_part(RecordId weight, const std::string& suffix, const Tensor& source,
                            const std::string& name = "");

  // Moves every record of `module` (quant-state parts included) to `tier` by
  // byte copies, then frees the copies on other tiers: bytes in use on the
  // source tier go back to what they were before the module was placed.
  // Synchronous. Throws InvalidInputError for an unknown module or one in a
  // forward, OutOfBudgetError when the target tier is full (nothing moved).
  void move_module(const std::string& module, Tier tier);

  // A host copy (pageable) of the record's current bytes, from whichever tier
  // holds it. Throws InvalidInputError for an unknown record.
  Tensor read_to_host(const std::string& module, const std::string& name);

  // --- Streaming. Declares one execution order (module paths). May be
  // called once per independent model (e.g. one per host thread); a module
  // belongs to at most one order. Modules not declared are fetched on demand
  // and never prefetched.
  void declare_execution_order(const std::vector<std::string>& modules);
  // Runs streamed module `module` on `accelerator` (fetching it into that
  // accelerator's slot pool) instead of OffloadOptions::compute_accelerator.
  // The pools are sized again at the next forward. REQUIRES: no forward of a
  // streamed module in flight. Throws InvalidInputError for a tier that is
  // not an accelerator here.
  void set_execution_accelerator(const std::string& module, Tier accelerator);
  // Runs `module` where its bytes are (host RAM or the disk mapping) instead
  // of fetching it (on = true), or fetches it again (false): begin_forward
  // then gives views of its host copies on no accelerator (the forward
  // computes on the host), and prefetching passes over it. A module resident
  // on an accelerator is not affected. REQUIRES: no forward of it in flight.
  // Throws InvalidInputError for an unknown module or one with a record
  // that has no host-readable copy.
  void set_host_compute(const std::string& module, bool on);
  bool host_compute(const std::string& module) const;
  // Changes whenever what a forward does may have changed: slot pools
  // allocated again, a module moved, or where a module runs changed. A
  // captured graph taken at another version is stale.
  uint64_t layout_version() const;

  // Allocates the slot pools (one per accelerator running streamed modules,
  // and pinned staging where they have bytes on disk)
  // for the modules streamed now. Called by the first begin_forward if not
  // called before; call again after moves that change what is streamed (it
  // waits for in-flight work first). REQUIRES: no forward in flight.
  void dispatch();
  // The fetch slots `accelerator`'s pool holds for the modules streamed now
  // (dispatching first if needed): slot_count(prefetch_depth), or fewer
  // where the budget held fewer; 0 where nothing streams to it. The copies
  // run ahead of the compute by one less. REQUIRES: no forward in flight.
  // Throws InvalidInputError for a tier that is not an accelerator here.
  int fetch_slots(Tier accelerator);

  // See the protocol above. Throws InvalidInputError for an unknown module
  // or one already in a forward. `compute` overrides the manager's compute
  // stream of the module's accelerator (same accelerator).
  ModuleForward begin_forward(const std::string& module, StreamRef compute = {});
  void end_forward(const std::string& module, StreamRef compute = {});
  // The same through a handle resolved once (module_handle), so a caller
  // running many forwards (the offload hook) does no lookup by name per
  // forward. module_handle throws InvalidInputError for a module with no
  // records; a handle stays valid for the manager's life (moves included).
  ModuleHandle module_handle(const std::string& module);
  ModuleForward begin_forward(ModuleHandle module, StreamRef compute = {});
  void end_forward(ModuleHandle module, StreamRef compute = {});

  // --- Graph capture (core/stream_graph.h). A captured step replays the
  // same copies into the same slots at every launch, so its capture starts
  // from a known state and the manager is told of each launch:
  //   manager.begin_capture(compute);  // then GraphCapture capture(compute)
  //   ... the step's forwards (captured) ...
  //   OffloadCounters per_launch = manager.end_capture(compute);  // then capture.finish()
  //   graph.launch(compute); manager.note_launch(compute, per_launch);
  // begin_capture waits for all queued work, allocates the slot pools and
  // empties every slot. Until end_capture, forwards fork the copy streams
  // from `compute` (so their copies join the capture), record no timing or
  // trace events, and prefetch within the step only (no wrap-around into
  // the next one). end_capture joins the copy streams back into `compute`
  // and returns the counters one launch adds (the capture itself moved
  // nothing). note_launch orders later fetches and moves after the launch.
  // abandon_capture() restores a usable state after a failed capture
  // (nothing captured ran). REQUIRES: no forward in flight at begin and
  // end; one capture at a time.
  void begin_capture(StreamRef compute);
  OffloadCounters end_capture(StreamRef compute);
  void abandon_capture();
  void note_launch(StreamRef compute, const OffloadCounters& per_launch);

  // Waits for every copy and compute stream, then resolves pending stall
  // measurements into counters().
  void synchronize();
  // Counters so far (stall time: measurements already complete).
  OffloadCounters counters() const;

 private:
  class Impl;
  Platform& platform_;
  OffloadOptions options_;
  ResidencyTable table_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stowage
