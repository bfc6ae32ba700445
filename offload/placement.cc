#include "offload/placement.h"

#include <cstring>
#include <utility>

#include "core/error.h"
#include "mmap_store/checkpoint.h"

namespace stowage {
namespace {

// Lower is preferred as the source of a copy: host memory (fast, pinned
// first), then another accelerator, then disk.
int source_rank(Tier tier) {
  switch (tier.kind()) {
    case TierKind::kPinnedHost:
      return 0;
    case TierKind::kPageableHost:
      return 1;
    case TierKind::kAccelerator:
      return 2;
    case TierKind::kDisk:
      return 3;
  }
  return 4;
}

}  // namespace

bool host_readable(Tier tier) { return tier.is_host() || tier == Tier::disk(); }

const Tensor* best_source(const TensorRecord& record) {
  const Tensor* best = nullptr;
  for (const auto& [tier, tensor] : record.copies) {
    if (best == nullptr || source_rank(tier) < source_rank(best->tier())) best = &tensor;
  }
  return best;
}

Placement::Placement(Platform& platform, ResidencyTable& table, TierMemory& memory,
                     std::shared_ptr<DiskStore> disk_store, std::vector<StreamRef> copy_streams,
                     OffloadCounters& counters)
    : platform_(platform),
      table_(table),
      memory_(memory),
      disk_store_(std::move(disk_store)),
      copy_streams_(std::move(copy_streams)),
      counters_(counters) {}

StreamRef Placement::copy_stream(Tier tier) const {
  STOWAGE_EXPECTS(tier.is_accelerator() && tier.index() >= 0 &&
                      tier.index() < static_cast<int>(copy_streams_.size()),
                  InvalidInputError, "offload manager: {} is not an accelerator of this platform",
                  tier.to_string());
  return copy_streams_[tier.index()];
}

// Copies all bytes of `src` into `dst` and waits.
void Placement::copy_sync(const Tensor& dst, const Tensor& src) {
  const uint64_t n = src.bytes();
  if (n == 0) return;
  const Tier d = dst.tier();
  const Tier s = src.tier();
  if (!d.is_accelerator() && !s.is_accelerator()) {
    std::memcpy(dst.data(), src.data(), n);
  } else {
    StreamRef stream = copy_stream(d.is_accelerator() ? d : s);
    stream.copy(dst.data(), src.data(), n);
    stream.synchronize();
  }
  // A file shrunk under its mapping read zeros: an IoError naming it.
  if (s == Tier::disk()) {
    mmap_store::check_mapped_read(src, "a disk-tier tensor read by the offload manager");
  }
  count_copy(counters_, d, s, n);
}

// A copy of `src`'s bytes on `tier`.
Tensor Placement::materialize(const Tensor& src, Tier tier, const std::string& key) {
  if (tier == Tier::disk()) {
    STOWAGE_EXPECTS(disk_store_ != nullptr, InvalidInputError,
                    "offload manager: {} goes to disk but no offload folder (DiskStore) was "
                    "given",
                    key);
    memory_.check_disk_budget(src.bytes(), disk_bytes(), key);
    Tensor host = src;
    if (!host_readable(src.tier())) {
      host = Tensor::empty(memory_.memory(Tier::pageable_host()), src.dtype(), src.shape());
      copy_sync(host, src);
    }
    Tensor out = disk_store_->write(key, host);
    counters_.bytes_disk_written += src.bytes();
    return out;
  }
  Tensor out = Tensor::empty(memory_.memory(tier), src.dtype(), src.shape());
  copy_sync(out, src);
  return out;
}

// `source` itself when it already lives in the manager's memory of `tier`
// (or is a disk mapping for the disk tier); else a copy.
Tensor Placement::adopt_or_copy(const Tensor& source, Tier tier, const std::string& key) {
  if (tier == Tier::disk() && source.tier() == Tier::disk()) {
    memory_.check_disk_budget(source.bytes(), disk_bytes(), key);
    return source;
  }
  if (tier != Tier::disk() && source.storage()->resource() == &memory_.memory(tier)) return source;
  // Host memory on this tier owned outside any resource (a segment shared by
  // processes, offload/host_tier_store.h): adopted, its bytes accounted by
  // its owner, not by this tier's budget.
  if (tier.is_host() && source.tier() == tier && source.storage()->resource() == nullptr) {
    return source;
  }
  return materialize(source, tier, key);
}

RecordId Placement::place(const std::string& module, const std::string& name, TensorRole role,
                          const Tensor& source, Tier tier) {
  STOWAGE_EXPECTS(!table_.find(module, name).has_value(), InvalidInputError,
                  "offload manager: tensor {}.{} is already placed", module, name);
  Tensor placed = adopt_or_copy(source, tier, module + "." + name);
  TensorSpec spec;
  spec.module = module;
  spec.name = name;
  spec.role = role;
  spec.dtype = source.dtype();
  spec.shape = source.shape();
  spec.home = tier;
  const RecordId id = table_.add(spec);
  table_.set_copy(id, std::move(placed));
  memory_.note_disk_bytes(disk_bytes());
  return id;
}

RecordId Placement::place_quant_part(RecordId weight, const std::string& suffix,
                                     const Tensor& source, const std::string& name) {
  const TensorRecord w = table_.get(weight);
  const std::string part_name = name.empty() ? w.name + "." + suffix : name;
  STOWAGE_EXPECTS(!table_.find(w.module, part_name).has_value(), InvalidInputError,
                  "offload manager: tensor {}.{} is already placed", w.module, part_name);
  Tensor placed = adopt_or_copy(source, w.home, w.module + "." + part_name);
  const RecordId id = table_.add_quant_part(weight, suffix, source.dtype(), source.shape(), name);
  table_.set_copy(id, std::move(placed));
  memory_.note_disk_bytes(disk_bytes());
  return id;
}

void Placement::move(const std::vector<RecordId>& ids, Tier tier) {
  if (tier.is_accelerator()) copy_stream(tier);  // validates
  // Phase 1: a copy of every record on `tier`. A failure here leaves the
  // module as it was (the new copies are freed on unwinding).
  std::vector<Tensor> fresh(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const TensorRecord r = table_.get(ids[i]);
    auto here = r.copies.find(tier);
    if (here != r.copies.end()) {
      fresh[i] = here->second;
      continue;
    }
    const Tensor* src = best_source(r);
    STOWAGE_EXPECTS(src != nullptr, InternalError,
                    "offload manager: tensor {}.{} has no copy on any tier", r.module, r.name);
    fresh[i] = materialize(*src, tier, r.module + "." + r.name);
    table_.note_copy(ids[i], r.bytes);
  }
  // Phase 2: commit, then free the copies on the other tiers.
  std::vector<Tensor> dropped;
  for (size_t i = 0; i < ids.size(); ++i) {
    table_.set_copy(ids[i], fresh[i]);
    for (Tier t : table_.tiers_of(ids[i])) {
      if (t != tier) dropped.push_back(table_.take_copy(ids[i], t));
    }
    table_.set_home(ids[i], tier);
  }
  memory_.note_disk_bytes(disk_bytes());
}

Tensor Placement::read_to_host(RecordId id) {
  const TensorRecord r = table_.get(id);
  const Tensor* src = best_source(r);
  STOWAGE_EXPECTS(src != nullptr, InternalError,
                  "offload manager: tensor {}.{} has no copy on any tier", r.module, r.name);
  Tensor out = Tensor::empty(platform_.pageable_host_memory(), r.dtype, r.shape);
  copy_sync(out, *src);
  return out;
}

}  // namespace stowage
