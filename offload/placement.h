// Placement and moves: puts records' bytes on tiers and moves modules between
// tiers, always as byte copies (quant-state parts included; nothing is ever
// re-quantized), synchronously on the accelerators' copy streams. Bytes come
// from TierMemory's budgeted resources, or from the DiskStore for the disk
// tier. Used by OffloadManager, which checks that no forward uses what moves.
//
// Thread safety: none; REQUIRES external synchronization (the manager's
// mutex).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/platform.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "offload/disk_io.h"
#include "offload/residency_table.h"
#include "offload/tier_memory.h"

namespace stowage {

// True for the tiers the host can read directly (host RAM, disk mappings).
bool host_readable(Tier tier);

// The copy of `record` a copy is best made from (host memory, pinned first,
// then another accelerator, then disk); nullptr when it has none.
const Tensor* best_source(const TensorRecord& record);

class Placement {
 public:
  // `copy_streams[i]` is accelerator i's copy stream. Everything given must
  // outlive this object; `counters` receives the bytes copied.
  Placement(Platform& platform, ResidencyTable& table, TierMemory& memory,
            std::shared_ptr<DiskStore> disk_store, std::vector<StreamRef> copy_streams,
            OffloadCounters& counters);

  // See OffloadManager::place and place_quant_part.
  RecordId place(const std::string& module, const std::string& name, TensorRole role,
                 const Tensor& source, Tier tier);
  RecordId place_quant_part(RecordId weight, const std::string& suffix, const Tensor& source,
                            const std::string& name);
  // Moves records `ids` (one module's) to `tier`: first a copy of each on
  // `tier` (a failure leaves them as they were), then the copies elsewhere
  // are freed and `tier` becomes their home.
  void move(const std::vector<RecordId>& ids, Tier tier);
  // A pageable host copy of record `id`'s bytes.
  Tensor read_to_host(RecordId id);

 private:
  StreamRef copy_stream(Tier accelerator) const;
  void copy_sync(const Tensor& dst, const Tensor& src);
  Tensor materialize(const Tensor& src, Tier tier, const std::string& key);
  Tensor adopt_or_copy(const Tensor& source, Tier tier, const std::string& key);
  uint64_t disk_bytes() const { return table_.bytes_on(Tier::disk()); }

  Platform& platform_;
  ResidencyTable& table_;
  TierMemory& memory_;
  std::shared_ptr<DiskStore> disk_store_;
  std::vector<StreamRef> copy_streams_;
  OffloadCounters& counters_;
};

}  // namespace stowage
