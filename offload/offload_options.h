// How an OffloadManager is set up: its memory budget, where streamed
// modules run, slot allocation, the working-memory reserve, the disk tier and
// tracing. Read by the manager's parts (tier_memory, placement,
// fetch_scheduler); see offload_manager.h for the whole.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "core/memory_resource.h"
#include "core/platform.h"
#include "offload/disk_io.h"
#include "offload/memory_budget.h"
#include "offload/trace.h"

namespace stowage {

// The budget (memory_budget.h) the manager enforces: each tier's budget
// wraps its memory in a BudgetAdaptor (a tier with none is limited only by
// its memory; physical sizes are the planner's); slot_count(prefetch_depth)
// slots per streaming accelerator; slots never take the part of an
// accelerator's working_reserve not yet in use (working memory in use: the
// tier's bytes in use less resident records and slots), so under a budget
// tighter than the plan prefetching shrinks (fetches fall back to
// synchronous) instead of a kernel running out of memory; a pinned staging
// buffer of disk_staging_buffer_bytes(disk_staging_bytes, ...) when a
// streamed module has bytes on disk (large records staged in chunks).
struct OffloadOptions : MemoryBudget {
  // Upstream memory for a tier instead of the platform's (a test seam, e.g. a
  // FaultInjectionAdaptor over accelerator(0).memory()). Must outlive the
  // manager. The manager wraps it in its budget and statistics adaptors.
  std::map<Tier, MemoryResource*> memory_overrides;
  // The accelerator that runs streamed modules (those homed off the
  // accelerators) unless set_execution_accelerator says otherwise, as
  // accelerate runs offloaded modules on its main device;
  // accelerator-resident modules run on their own.
  int compute_accelerator = 0;
  // When the last module of an execution order begins, prefetch the first
  // ones again (the next forward of the model).
  bool wrap_around = true;
  // Allocate each slot at its first use instead of all in dispatch().
  bool lazy_slots = false;
  // Needed to place or move anything on Tier::disk(); nullptr: no disk tier.
  std::shared_ptr<DiskStore> disk_store;
  // Disk -> pinned staging; nullptr: make_disk_stager(disk_stager_kind).
  std::shared_ptr<DiskStager> disk_stager;
  // The memcpy from the mapping (with madvise readahead) by default (why:
  // bench/results/header-figures.md). kFileRead: mmap_store's FileHandle
  // preads, falling back to the memcpy for tensors with no file.
  DiskStagerKind disk_stager_kind = DiskStagerKind::kMemcpy;
  // Records copy, compute and stall spans when set. Must outlive the manager.
  TraceRecorder* trace = nullptr;
};

}  // namespace stowage
