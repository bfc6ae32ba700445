#include "offload/offload_manager.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "core/error.h"
#include "mmap_store/checkpoint.h"
#include "offload/slot_pool.h"

namespace stowage {
namespace {

bool host_readable(Tier tier) { return tier.is_host() || tier == Tier::disk(); }

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

const Tensor* best_source(const TensorRecord& record) {
  const Tensor* best = nullptr;
  for (const auto& [tier, tensor] : record.copies) {
    if (best == nullptr || source_rank(tier) < source_rank(best->tier())) best = &tensor;
  }
  return best;
}

constexpr int kComputeTid = 1;
constexpr int kCopyTid = 2;

}  // namespace

const TensorView* ModuleForward::find(const std::string& name) const {
  for (const auto& [n, view] : tensors) {
    if (n == name) return &view;
  }
  return nullptr;
}

// Everything mutable of a manager, behind one mutex.
class OffloadManager::Impl {
 public:
  struct AcceleratorState {
    Accelerator* accelerator = nullptr;
    Tier tier = Tier::pinned_host();
    Stream compute;
    Stream copy;
    std::unique_ptr<SlotPool> pool;
    Buffer staging;  // pinned, for disk reads
    // Recycled ticket events, kept by role: SimEvent::elapsed_ms_since locks
    // (end, start) in that order, so an event must not swap roles between
    // tickets (a lock-order inversion ThreadSanitizer reports).
    std::vector<Event> spare_done_events;
    std::vector<Event> spare_reached_events;
    std::map<detail::StreamImpl*, int> trace_tids;
    Event capture_fork, capture_join;  // the copy stream into and out of a capture
  };

  struct TierMemory {
    std::unique_ptr<BudgetAdaptor> budget;
    std::unique_ptr<StatisticsAdaptor> stats;
  };

  // What begin_forward needs of a module, cached until it moves.
  struct ModuleInfo {
    std::vector<RecordId> ids;
    std::vector<std::string> names;
    std::vector<Tensor> sources;   // best source of each record, for fetches
    std::optional<Tier> resident;  // an accelerator holding every record
    std::vector<TensorView> resident_views;
    // A module on several tiers (tensor overrides) fetched to accelerator
    // a: its records with a copy on a are used in place, the others copied
    // into the slot. [a][record]: that copy's view, null where a has none.
    std::vector<std::vector<TensorView>> in_place;
    // Bytes the slot of accelerator a holds for it (the copied records at
    // 256-byte aligned offsets), by accelerator index.
    std::vector<uint64_t> packed_bytes;
    bool has_disk_source = false;
  };

  struct ActiveForward {
    int accelerator = 0;
    int slot = -1;  // -1: resident, no slot
    StreamRef compute;
    std::vector<RecordId> ids;
    Event trace_start;
  };

  struct PendingTicket {
    int accelerator = 0;
    std::shared_ptr<FetchTicket> ticket;
  };

  explicit Impl(OffloadManager& owner) : owner_(owner) {
    Platform& platform = owner.platform_;
    const OffloadOptions& options = owner.options_;
    STOWAGE_EXPECTS(options.prefetch_depth >= 0, InvalidInputError,
                    "offload manager: prefetch depth must be >= 0, found {}",
                    options.prefetch_depth);
    STOWAGE_EXPECTS(options.compute_accelerator >= 0 &&
                        options.compute_accelerator < platform.accelerator_count(),
                    InvalidInputError,
                    "offload manager: compute accelerator {} does not exist (the platform has "
                    "{} accelerators)",
                    options.compute_accelerator, platform.accelerator_count());
    for (int i = 0; i < platform.accelerator_count(); ++i) {
      auto state = std::make_unique<AcceleratorState>();
      state->accelerator = &platform.accelerator(i);
      state->tier = state->accelerator->tier();
      state->compute = state->accelerator->create_stream();
      state->copy = state->accelerator->create_stream();
      add_memory(state->tier, state->accelerator->memory());
      if (options.trace != nullptr) {
        Event base = state->accelerator->create_event();
        state->copy.ref().record(base);
        base.synchronize();
        options.trace->open_timeline(i, state->accelerator->description(), std::move(base));
        options.trace->name_track(i, kComputeTid, "compute");
        options.trace->name_track(i, kCopyTid, "copy");
        state->trace_tids[state->compute.ref().impl()] = kComputeTid;
        state->trace_tids[state->copy.ref().impl()] = kCopyTid;
      }
      accelerators_.push_back(std::move(state));
    }
    add_memory(Tier::pinned_host(), platform.pinned_host_memory());
    add_memory(Tier::pageable_host(), platform.pageable_host_memory());
    stager_ = options.disk_stager
                  ? options.disk_stager
                  : std::shared_ptr<DiskStager>(make_disk_stager(options.disk_stager_kind));
  }

  // ---- memory
  void add_memory(Tier tier, MemoryResource& platform_memory) {
    const OffloadOptions& options = owner_.options_;
    MemoryResource* upstream = &platform_memory;
    auto override_it = options.memory_overrides.find(tier);
    if (override_it != options.memory_overrides.end() && override_it->second != nullptr) {
      upstream = override_it->second;
    }
    TierMemory memory;
    auto budget_it = options.budgets.find(tier);
    if (budget_it != options.budgets.end()) {
      memory.budget = std::make_unique<BudgetAdaptor>(*upstream, budget_it->second,
                                                      tier.to_string() + " budget");
      upstream = memory.budget.get();
    }
    memory.stats = std::make_unique<StatisticsAdaptor>(*upstream);
    memories_[tier] = std::move(memory);
  }

  MemoryResource& memory(Tier tier) {
    auto it = memories_.find(tier);
    STOWAGE_EXPECTS(it != memories_.end(), InvalidInputError,
                    "offload manager: no memory for tier {} on this platform{}", tier.to_string(),
                    tier == Tier::disk() ? " (the disk tier is written through a DiskStore)" : "");
    return *it->second.stats;
  }

  TierUsage usage(Tier tier) {
    TierUsage u;
    if (tier == Tier::disk()) {
      std::lock_guard<std::mutex> lock(mutex_);
      u.bytes_in_use = owner_.table_.bytes_on(Tier::disk());
      u.peak_bytes = std::max(disk_peak_, u.bytes_in_use);
    } else {
      MemoryResource& m = memory(tier);
      auto& stats = static_cast<StatisticsAdaptor&>(m);
      u.bytes_in_use = stats.bytes_in_use();
      u.peak_bytes = stats.peak_bytes();
    }
    auto it = owner_.options_.budgets.find(tier);
    if (it != owner_.options_.budgets.end()) u.budget = it->second;
    return u;
  }

  AcceleratorState& accelerator(Tier tier) {
    STOWAGE_EXPECTS(tier.is_accelerator() && tier.index() >= 0 &&
                        tier.index() < static_cast<int>(accelerators_.size()) &&
                        accelerators_[tier.index()]->tier == tier,
                    InvalidInputError, "offload manager: {} is not an accelerator of this platform",
                    tier.to_string());
    return *accelerators_[tier.index()];
  }

  Event take_event(AcceleratorState& a, std::vector<Event>& spares) {
    if (!spares.empty()) {
      Event e = std::move(spares.back());
      spares.pop_back();
      return e;
    }
    return a.accelerator->create_event();
  }

  int trace_tid(AcceleratorState& a, StreamRef stream) {
    auto it = a.trace_tids.find(stream.impl());
    if (it != a.trace_tids.end()) return it->second;
    const int tid = static_cast<int>(a.trace_tids.size()) + 1;
    a.trace_tids[stream.impl()] = tid;
    owner_.options_.trace->name_track(a.tier.index(), tid, fmt::format("compute (stream {})", tid));
    return tid;
  }

  // ---- synchronous copies (placement, moves, host reads)

  // Copies all bytes of `src` into `dst` and waits. REQUIRES: mutex_ held.
  void copy_sync(const Tensor& dst, const Tensor& src) {
    const uint64_t n = src.bytes();
    if (n == 0) return;
    const Tier d = dst.tier();
    const Tier s = src.tier();
    if (!d.is_accelerator() && !s.is_accelerator()) {
      std::memcpy(dst.data(), src.data(), n);
    } else {
      StreamRef stream = d.is_accelerator() ? accelerator(d).copy.ref() : accelerator(s).copy.ref();
      stream.copy(dst.data(), src.data(), n);
      stream.synchronize();
    }
    if (s == Tier::disk()) {
      // A file shrunk under its mapping read zeros: an IoError naming it.
      mmap_store::check_mapped_read(src, "a disk-tier tensor read by the offload manager");
      counters_.bytes_disk_read += n;
    }
    if (d.is_accelerator() && s.is_accelerator()) {
      counters_.bytes_d2d += n;
    } else if (d.is_accelerator()) {
      counters_.bytes_h2d += n;
    } else if (s.is_accelerator()) {
      counters_.bytes_d2h += n;
    }
  }

  void check_disk_budget(uint64_t bytes, const std::string& key) {
    auto it = owner_.options_.budgets.find(Tier::disk());
    if (it == owner_.options_.budgets.end()) return;
    const uint64_t in_use = owner_.table_.bytes_on(Tier::disk());
    STOWAGE_EXPECTS(bytes <= it->second && in_use <= it->second - bytes, OutOfBudgetError,
                    "disk tier: writing {} ({} bytes) would exceed its budget of {} bytes ({} "
                    "bytes in use)",
                    key, bytes, it->second, in_use);
  }

  // A copy of `src`'s bytes on `tier`. REQUIRES: mutex_ held.
  Tensor materialize(const Tensor& src, Tier tier, const std::string& key) {
    if (tier == Tier::disk()) {
      STOWAGE_EXPECTS(owner_.options_.disk_store != nullptr, InvalidInputError,
                      "offload manager: {} goes to disk but no offload folder (DiskStore) was "
                      "given",
                      key);
      check_disk_budget(src.bytes(), key);
      Tensor host = src;
      if (!host_readable(src.tier())) {
        host = Tensor::empty(memory(Tier::pageable_host()), src.dtype(), src.shape());
        copy_sync(host, src);
      }
      Tensor out = owner_.options_.disk_store->write(key, host);
      counters_.bytes_disk_written += src.bytes();
      return out;
    }
    Tensor out = Tensor::empty(memory(tier), src.dtype(), src.shape());
    copy_sync(out, src);
    return out;
  }

  // `source` itself when it already lives in the manager's memory of
  // `tier` (or is a disk mapping for the disk tier); else a copy.
  Tensor adopt_or_copy(const Tensor& source, Tier tier, const std::string& key) {
    if (tier == Tier::disk() && source.tier() == Tier::disk()) {
      check_disk_budget(source.bytes(), key);
      return source;
    }
    if (tier != Tier::disk() && source.storage()->resource() == &memory(tier)) return source;
    // Host memory on this tier owned outside any resource (a segment shared
    // by processes, offload/host_tier_store.h): adopted, its bytes accounted
    // by its owner, not by this tier's budget.
    if (tier.is_host() && source.tier() == tier && source.storage()->resource() == nullptr) {
      return source;
    }
    return materialize(source, tier, key);
  }

  void note_disk_peak() { disk_peak_ = std::max(disk_peak_, owner_.table_.bytes_on(Tier::disk())); }

  RecordId place(const std::string& module, const std::string& name, TensorRole role,
                 const Tensor& source, Tier tier) {
    STOWAGE_EXPECTS(source.defined(), InvalidInputError,
                    "offload manager: place({}.{}) was given an undefined tensor", module, name);
    STOWAGE_EXPECTS(role != TensorRole::kQuantState, InvalidInputError,
                    "offload manager: quant-state part {}.{} must be placed with "
                    "place_quant_part (it needs its weight)",
                    module, name);
    std::lock_guard<std::mutex> lock(mutex_);
    STOWAGE_EXPECTS(!owner_.table_.find(module, name).has_value(), InvalidInputError,
                    "offload manager: tensor {}.{} is already placed", module, name);
    Tensor placed = adopt_or_copy(source, tier, module + "." + name);
    TensorSpec spec;
    spec.module = module;
    spec.name = name;
    spec.role = role;
    spec.dtype = source.dtype();
    spec.shape = source.shape();
    spec.home = tier;
    const RecordId id = owner_.table_.add(spec);
    owner_.table_.set_copy(id, std::move(placed));
    note_disk_peak();
    modules_.erase(module);
    return id;
  }

  RecordId place_quant_part(RecordId weight, const std::string& suffix, const Tensor& source,
                            const std::string& name) {
    STOWAGE_EXPECTS(source.defined(), InvalidInputError,
                    "offload manager: quant-state part '{}' was given an undefined tensor", suffix);
    std::lock_guard<std::mutex> lock(mutex_);
    const TensorRecord w = owner_.table_.get(weight);
    const std::string part_name = name.empty() ? w.name + "." + suffix : name;
    STOWAGE_EXPECTS(!owner_.table_.find(w.module, part_name).has_value(), InvalidInputError,
                    "offload manager: tensor {}.{} is already placed", w.module, part_name);
    Tensor placed = adopt_or_copy(source, w.home, w.module + "." + part_name);
    const RecordId id =
        owner_.table_.add_quant_part(weight, suffix, source.dtype(), source.shape(), name);
    owner_.table_.set_copy(id, std::move(placed));
    note_disk_peak();
    modules_.erase(w.module);
    return id;
  }

  // Drops a prefetched (not in forward) slot copy of `module`, after its
  // copies finished. REQUIRES: mutex_ held.
  void drop_prefetched(const std::string& module) {
    for (auto& a : accelerators_) {
      if (!a->pool) continue;
      const int i = a->pool->find(module);
      if (i < 0) continue;
      Slot& s = a->pool->slot(i);
      if (s.state != Slot::State::kFetched) continue;
      s.ticket->done.synchronize();
      s.state = Slot::State::kFree;
      s.module.clear();
      s.views.clear();
      s.ticket.reset();
    }
  }

  void move_module(const std::string& module, Tier tier) {
    std::lock_guard<std::mutex> lock(mutex_);
    ResidencyTable& table = owner_.table_;
    const std::vector<RecordId> ids = table.records_of(module);
    STOWAGE_EXPECTS(!ids.empty(), InvalidInputError,
                    "offload manager: cannot move unknown module '{}'", module);
    STOWAGE_EXPECTS(active_.count(module) == 0, InvalidInputError,
                    "offload manager: cannot move module '{}' to {} while it is in a forward",
                    module, tier.to_string());
    if (tier.is_accelerator()) accelerator(tier);  // validates
    drop_prefetched(module);
    auto last = last_use_.find(module);
    if (last != last_use_.end()) last->second.synchronize();
    // Phase 1: a copy of every record on `tier`. A failure here leaves the
    // module as it was (the new copies are freed on unwinding).
    std::vector<Tensor> fresh(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const TensorRecord r = table.get(ids[i]);
      auto here = r.copies.find(tier);
      if (here != r.copies.end()) {
        fresh[i] = here->second;
        continue;
      }
      const Tensor* src = best_source(r);
      STOWAGE_EXPECTS(src != nullptr, InternalError,
                      "offload manager: tensor {}.{} has no copy on any tier", r.module, r.name);
      fresh[i] = materialize(*src, tier, r.module + "." + r.name);
      table.note_copy(ids[i], r.bytes);
    }
    // Phase 2: commit, then free the copies on the other tiers.
    modules_.erase(module);
    ++layout_version_;
    std::vector<Tensor> dropped;
    for (size_t i = 0; i < ids.size(); ++i) {
      table.set_copy(ids[i], fresh[i]);
      for (Tier t : table.tiers_of(ids[i])) {
        if (t != tier) dropped.push_back(table.take_copy(ids[i], t));
      }
      table.set_home(ids[i], tier);
    }
    note_disk_peak();
    fresh.clear();
    dropped.clear();
  }

  Tensor read_to_host(const std::string& module, const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto id = owner_.table_.find(module, name);
    STOWAGE_EXPECTS(id.has_value(), InvalidInputError, "offload manager: no tensor {}.{} to read",
                    module, name);
    const TensorRecord r = owner_.table_.get(*id);
    const Tensor* src = best_source(r);
    STOWAGE_EXPECTS(src != nullptr, InternalError,
                    "offload manager: tensor {}.{} has no copy on any tier", module, name);
    Tensor out = Tensor::empty(owner_.platform_.pageable_host_memory(), r.dtype, r.shape);
    copy_sync(out, *src);
    return out;
  }

  // ---- streaming

  void declare_execution_order(const std::vector<std::string>& modules) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::set<std::string> seen;
    for (const std::string& m : modules) {
      STOWAGE_EXPECTS(seen.insert(m).second, InvalidInputError,
                      "offload manager: module '{}' appears twice in an execution order", m);
      STOWAGE_EXPECTS(order_pos_.count(m) == 0, InvalidInputError,
                      "offload manager: module '{}' is already in another execution order", m);
    }
    const size_t order = orders_.size();
    orders_.push_back(modules);
    for (size_t i = 0; i < modules.size(); ++i) order_pos_[modules[i]] = {order, i};
  }

  const ModuleInfo& module_info(const std::string& module) {
    auto it = modules_.find(module);
    if (it != modules_.end()) return it->second;
    ModuleInfo info;
    info.ids = owner_.table_.records_of(module);
    STOWAGE_EXPECTS(!info.ids.empty(), InvalidInputError,
                    "offload manager: unknown module '{}' (no tensor of it was placed)", module);
    std::vector<TensorRecord> records;
    for (RecordId id : info.ids) records.push_back(owner_.table_.get(id));
    for (const auto& a : accelerators_) {
      const bool all = std::all_of(records.begin(), records.end(),
                                   [&](const TensorRecord& r) { return r.on(a->tier); });
      if (all) {
        info.resident = a->tier;
        break;
      }
    }
    info.in_place.resize(accelerators_.size());
    info.packed_bytes.assign(accelerators_.size(), 0);
    for (const TensorRecord& r : records) {
      info.names.push_back(r.name);
      const Tensor* src = best_source(r);
      STOWAGE_EXPECTS(src != nullptr, InternalError,
                      "offload manager: tensor {}.{} has no copy on any tier", r.module, r.name);
      info.sources.push_back(*src);
      if (src->tier() == Tier::disk()) info.has_disk_source = true;
      if (info.resident) info.resident_views.push_back(r.copies.at(*info.resident).view());
      for (size_t a = 0; a < accelerators_.size(); ++a) {
        auto copy = r.copies.find(accelerators_[a]->tier);
        info.in_place[a].push_back(copy == r.copies.end() ? TensorView() : copy->second.view());
        if (copy == r.copies.end()) {
          info.packed_bytes[a] = slot_offset_align(info.packed_bytes[a]) + r.bytes;
        }
      }
    }
    return modules_.emplace(module, std::move(info)).first->second;
  }

  // The accelerator a streamed module runs on.
  int execution_index(const std::string& module) const {
    auto it = execution_.find(module);
    return it == execution_.end() ? owner_.options_.compute_accelerator : it->second;
  }

  void set_execution_accelerator(const std::string& module, Tier tier) {
    std::lock_guard<std::mutex> lock(mutex_);
    AcceleratorState& a = accelerator(tier);
    STOWAGE_EXPECTS(active_.count(module) == 0, InvalidInputError,
                    "offload manager: cannot change where module '{}' runs during its forward",
                    module);
    drop_prefetched(module);
    execution_[module] = a.tier.index();
    dispatched_ = false;  // the pools are sized again at the next forward
    ++layout_version_;
  }

  void set_host_compute(const std::string& module, bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    STOWAGE_EXPECTS(active_.count(module) == 0, InvalidInputError,
                    "offload manager: cannot change where module '{}' runs during its forward",
                    module);
    const ModuleInfo& info = module_info(module);
    for (size_t i = 0; i < info.sources.size(); ++i) {
      STOWAGE_EXPECTS(host_readable(info.sources[i].tier()), InvalidInputError,
                      "offload manager: module '{}' cannot compute on the host: tensor '{}' has "
                      "no copy in host RAM or on disk",
                      module, info.names[i]);
    }
    drop_prefetched(module);
    if (on) {
      host_compute_.insert(module);
    } else {
      host_compute_.erase(module);
    }
    dispatched_ = false;  // the slots are sized again for what is still streamed
    ++layout_version_;
  }

  bool host_compute(const std::string& module) {
    std::lock_guard<std::mutex> lock(mutex_);
    return host_compute_.count(module) != 0;
  }

  uint64_t layout_version() {
    std::lock_guard<std::mutex> lock(mutex_);
    return layout_version_;
  }

  void dispatch_locked() {
    ++layout_version_;
    for (const auto& [name, act] : active_) {
      STOWAGE_EXPECTS(act.slot < 0, InvalidInputError,
                      "offload manager: dispatch() while streamed module '{}' is in a forward",
                      name);
    }
    const std::vector<std::string> modules = owner_.table_.modules();
    for (auto& owned : accelerators_) {
      AcceleratorState& a = *owned;
      if (a.pool) {
        for (int i = 0; i < a.pool->size(); ++i) {
          Slot& s = a.pool->slot(i);
          if (s.ticket) s.ticket->done.synchronize();
          if (s.released_recorded) s.released.synchronize();
        }
        a.pool.reset();
      }
      a.staging.reset();
      uint64_t slot_bytes = 0;
      uint64_t largest_disk_record = 0;
      std::string largest;
      for (const std::string& m : modules) {
        const ModuleInfo& info = module_info(m);
        if (info.resident || host_compute_.count(m) != 0 ||
            execution_index(m) != a.tier.index()) {
          continue;
        }
        if (info.packed_bytes[a.tier.index()] > slot_bytes) {
          slot_bytes = info.packed_bytes[a.tier.index()];
          largest = m;
        }
        for (const Tensor& src : info.sources) {
          if (src.tier() == Tier::disk()) {
            largest_disk_record = std::max<uint64_t>(largest_disk_record, src.bytes());
          }
        }
      }
      if (slot_bytes == 0) continue;
      a.pool = std::make_unique<SlotPool>(*a.accelerator, memory(a.tier), slot_bytes,
                                          slot_count(owner_.options_.prefetch_depth),
                                          working_memory_guard(a));
      if (!owner_.options_.lazy_slots) {
        a.pool->fill();
        if (a.pool->size() == 0) throw_no_slot(a, largest);
      }
      if (largest_disk_record > 0) {
        const uint64_t bytes = std::max<uint64_t>(
            1, disk_staging_buffer_bytes(owner_.options_.disk_staging_bytes, largest_disk_record));
        try {
          a.staging = Buffer(memory(Tier::pinned_host()), bytes);
        } catch (const Error& e) {
          throw OutOfBudgetError(fmt::format(
              "offload manager: the pinned staging buffer for disk reads ({} bytes) does not "
              "fit: {}",
              bytes, e.what()));
        }
      }
    }
    dispatched_ = true;
  }

  // Refuses a slot that would leave less of `a`'s budget available than the
  // part of its working reserve not in use yet (none without a budget or a
  // reserve). Runs under the manager's lock, from the pool of `a`.
  SlotPool::GrowthCheck working_memory_guard(AcceleratorState& a) {
    auto reserve_it = owner_.options_.working_reserve.find(a.tier);
    const BudgetAdaptor* budget = memories_.at(a.tier).budget.get();
    if (reserve_it == owner_.options_.working_reserve.end() || reserve_it->second == 0 ||
        budget == nullptr) {
      return {};
    }
    const uint64_t reserve = reserve_it->second;
    AcceleratorState* state = &a;
    return [this, state, budget, reserve](uint64_t slot_bytes) -> std::string {
      const uint64_t in_use = budget->bytes_in_use();
      const uint64_t held = owner_.table_.bytes_on(state->tier) + state->pool->bytes();
      const uint64_t working_in_use = in_use > held ? in_use - held : 0;
      const uint64_t keep = reserve > working_in_use ? reserve - working_in_use : 0;
      const uint64_t available = budget->bytes_available();
      if (available >= slot_bytes && available - slot_bytes >= keep) return "";
      return fmt::format(
          "{} budget: a fetch slot of {} bytes would leave {} bytes of the {} bytes available, "
          "less than the {} bytes of the working-memory reserve (activations and kernel "
          "scratch) not in use yet",
          state->tier.to_string(), slot_bytes, available >= slot_bytes ? available - slot_bytes : 0,
          available, keep);
    };
  }

  [[noreturn]] void throw_no_slot(AcceleratorState& a, const std::string& module) {
    const std::string message = fmt::format(
        "offload manager: no fetch slot of {} bytes could be allocated on {} for streamed "
        "module '{}' ({} bytes): {}",
        a.pool->slot_bytes(), a.tier.to_string(), module,
        module_info(module).packed_bytes[a.tier.index()],
        a.pool->failure());
    if (a.pool->failure().find("budget") != std::string::npos) throw OutOfBudgetError(message);
    throw OutOfMemoryError(message);
  }

  // Enqueues the copies of `info`'s records into slot `index` of `a`.
  void issue_fetch(AcceleratorState& a, int index, const std::string& module,
                   const ModuleInfo& info) {
    Slot& s = a.pool->slot(index);
    StreamRef copy = a.copy.ref();
    TraceRecorder* trace = capturing_ ? nullptr : owner_.options_.trace;
    if (capturing_ && forked_.insert(a.tier.index()).second) {
      if (!a.capture_fork.valid()) a.capture_fork = a.accelerator->create_event();
      capture_stream_.record(a.capture_fork);
      copy.wait(a.capture_fork);
    }
    if (s.released_recorded) copy.wait(s.released);
    Event trace_start;
    if (trace != nullptr) {
      trace_start = a.accelerator->create_event();
      copy.record(trace_start);
    }
    char* base = static_cast<char*>(s.memory.data());
    uint64_t offset = 0;
    s.views.clear();
    for (size_t i = 0; i < info.ids.size(); ++i) {
      const TensorView& in_place = info.in_place[a.tier.index()][i];
      if (in_place.data() != nullptr) {
        s.views.emplace_back(info.names[i], in_place);  // already on a: used where it is
        continue;
      }
      const Tensor& src = info.sources[i];
      const uint64_t n = src.bytes();
      offset = slot_offset_align(offset);
      char* dst = base + offset;
      if (src.tier() == Tier::disk()) {
        const uint64_t chunk = a.staging.size();
        STOWAGE_EXPECTS(chunk > 0 || n == 0, InternalError,
                        "offload manager: {} has bytes on disk but no staging buffer was "
                        "allocated (call dispatch() after placing it)",
                        module);
        for (uint64_t done = 0; done < n; done += chunk) {
          const uint64_t k = std::min(chunk, n - done);
          stager_->enqueue_read(copy, src, done, k, a.staging.data());
          copy.copy(dst + done, a.staging.data(), k);
        }
        counters_.bytes_disk_read += n;
        counters_.bytes_h2d += n;
      } else {
        copy.copy(dst, src.data(), n);
        if (src.tier().is_accelerator()) {
          counters_.bytes_d2d += n;
        } else {
          counters_.bytes_h2d += n;
        }
      }
      owner_.table_.note_copy(info.ids[i], n);
      s.views.emplace_back(info.names[i], TensorView(dst, src.dtype(), src.shape(), a.tier));
      offset += n;
    }
    auto ticket = std::make_shared<FetchTicket>();
    ticket->module = module;
    ticket->done = take_event(a, a.spare_done_events);
    ticket->reached = take_event(a, a.spare_reached_events);
    copy.record(ticket->done);
    if (trace != nullptr) {
      Event trace_end = a.accelerator->create_event();
      copy.record(trace_end);
      trace->add_span(a.tier.index(), kCopyTid, "fetch " + module, "copy", std::move(trace_start),
                      std::move(trace_end));
    }
    s.ticket = std::move(ticket);
    s.state = Slot::State::kFetched;
    s.module = module;
    s.fetch_serial = ++fetch_serial_;
    ++counters_.fetches;
  }

  // Queues fetches of the next prefetch_depth streamed modules after
  // `module` in its execution order, while slots are free.
  void prefetch_after(const std::string& module) {
    auto pos = order_pos_.find(module);
    if (pos == order_pos_.end() || owner_.options_.prefetch_depth == 0) return;
    if (!dispatched_) {
      // A prefetch never fails the forward that triggered it: without slots,
      // the error surfaces at the streamed module's own begin_forward.
      try {
        dispatch_locked();
      } catch (const OutOfMemoryError&) {
        return;
      } catch (const OutOfBudgetError&) {
        return;
      }
    }
    const std::vector<std::string>& order = orders_[pos->second.first];
    const size_t n = order.size();
    int found = 0;
    for (size_t step = 1; step < n && found < owner_.options_.prefetch_depth; ++step) {
      size_t j = pos->second.second + step;
      if (j >= n) {
        if (!owner_.options_.wrap_around || capturing_) break;
        j -= n;
      }
      const std::string& next = order[j];
      const ModuleInfo& info = module_info(next);
      if (info.resident || host_compute_.count(next) != 0) continue;
      ++found;
      AcceleratorState& a = *accelerators_[execution_index(next)];
      if (!a.pool) continue;
      if (active_.count(next) != 0 || a.pool->find(next) >= 0) continue;
      if (info.packed_bytes[a.tier.index()] > a.pool->slot_bytes()) continue;
      const int index = a.pool->acquire_free(true);
      if (index < 0) continue;  // that accelerator's slots are busy; others may be free
      issue_fetch(a, index, next, info);
    }
  }

  // A slot for `module` (not yet fetched) on `a`: free, grown, stolen from a
  // prefetch, or released by another thread's forward. REQUIRES: lock held.
  int slot_for_on_demand(AcceleratorState& a, const std::string& module,
                         std::unique_lock<std::mutex>& lock) {
    for (;;) {
      int index = a.pool->acquire_free(true);
      if (index >= 0) return index;
      // Steal the prefetch that was issued last (furthest ahead).
      uint64_t newest = 0;
      for (int i = 0; i < a.pool->size(); ++i) {
        Slot& s = a.pool->slot(i);
        if (s.state == Slot::State::kFetched && s.fetch_serial >= newest) {
          newest = s.fetch_serial;
          index = i;
        }
      }
      if (index >= 0) {
        Slot& s = a.pool->slot(index);
        s.state = Slot::State::kFree;
        s.module.clear();
        s.views.clear();
        s.ticket.reset();
        return index;
      }
      if (a.pool->size() == 0) throw_no_slot(a, module);
      const auto me = std::this_thread::get_id();
      bool other_thread = false;
      for (int i = 0; i < a.pool->size(); ++i) {
        if (a.pool->slot(i).owner != me) other_thread = true;
      }
      STOWAGE_EXPECTS(other_thread, OutOfBudgetError,
                      "offload manager: module '{}' needs a fetch slot on {}, but all {} slots "
                      "are used by forwards running on this thread (nested forwards of streamed "
                      "modules need a larger prefetch depth)",
                      module, a.tier.to_string(), a.pool->size());
      slot_freed_.wait(lock);
      if (a.pool->find(module) >= 0) return -1;  // another thread fetched it meanwhile
    }
  }

  ModuleForward begin_forward(const std::string& module, StreamRef compute) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!capturing_) resolve_pending(false);
    STOWAGE_EXPECTS(active_.count(module) == 0, InvalidInputError,
                    "offload manager: begin_forward('{}') while a forward of it is running",
                    module);
    const ModuleInfo& info = module_info(module);
    TraceRecorder* trace = capturing_ ? nullptr : owner_.options_.trace;
    ModuleForward fwd;
    fwd.module = module;
    ActiveForward act;
    if (!info.resident && host_compute_.count(module) != 0) {
      // Computed where the bytes are: the host copies' views, ordered on the
      // compute stream of the accelerator that runs the model.
      AcceleratorState& a = *accelerators_[execution_index(module)];
      fwd.accelerator = info.sources.front().tier();
      fwd.compute_stream = compute.is_null() ? a.compute.ref() : compute;
      for (size_t i = 0; i < info.ids.size(); ++i) {
        fwd.tensors.emplace_back(info.names[i], info.sources[i].view());
      }
      act.accelerator = a.tier.index();
    } else if (info.resident) {
      AcceleratorState& a = accelerator(*info.resident);
      fwd.accelerator = a.tier;
      fwd.compute_stream = compute.is_null() ? a.compute.ref() : compute;
      for (size_t i = 0; i < info.ids.size(); ++i) {
        fwd.tensors.emplace_back(info.names[i], info.resident_views[i]);
      }
      act.accelerator = a.tier.index();
    } else {
      AcceleratorState& a = *accelerators_[execution_index(module)];
      StreamRef cs = compute.is_null() ? a.compute.ref() : compute;
      STOWAGE_EXPECTS(cs.tier() == a.tier, InvalidInputError,
                      "offload manager: module '{}' runs on {} but was given a stream of {}",
                      module, a.tier.to_string(), cs.tier().to_string());
      if (!dispatched_) dispatch_locked();
      const uint64_t packed = info.packed_bytes[a.tier.index()];
      if (!a.pool || a.pool->slot_bytes() < packed) {
        const bool idle = !a.pool || std::all_of(active_.begin(), active_.end(),
                                                 [&](auto& kv) { return kv.second.slot < 0; });
        STOWAGE_EXPECTS(idle, InvalidInputError,
                        "offload manager: module '{}' needs {} bytes but the fetch slots hold "
                        "{}; call dispatch() again after moving modules",
                        module, packed, a.pool ? a.pool->slot_bytes() : 0);
        dispatch_locked();
      }
      int index = a.pool->find(module);
      while (index < 0) {
        index = slot_for_on_demand(a, module, lock);
        if (index >= 0) {
          // The lock may have been released while waiting: look the module up again.
          issue_fetch(a, index, module, module_info(module));
          ++counters_.sync_fallbacks;
        } else {
          index = a.pool->find(module);
        }
      }
      Slot& s = a.pool->slot(index);
      s.state = Slot::State::kInUse;
      s.owner = std::this_thread::get_id();
      Event stall_start;
      if (trace != nullptr) {
        stall_start = a.accelerator->create_event();
        cs.record(stall_start);
      }
      cs.record(s.ticket->reached);
      s.ticket->reached_recorded = true;
      cs.wait(s.ticket->done);
      if (!capturing_) pending_.push_back(PendingTicket{a.tier.index(), s.ticket});
      if (trace != nullptr) {
        Event stall_end = a.accelerator->create_event();
        cs.record(stall_end);
        trace->add_span(a.tier.index(), trace_tid(a, cs), "stall: wait for " + module, "stall",
                        std::move(stall_start), std::move(stall_end), 2.0);
      }
      fwd.accelerator = a.tier;
      fwd.compute_stream = cs;
      fwd.streamed = true;
      fwd.tensors = s.views;
      act.accelerator = a.tier.index();
      act.slot = index;
    }
    act.compute = fwd.compute_stream;
    act.ids = module_info(module).ids;
    for (RecordId id : act.ids) owner_.table_.pin(id);
    if (trace != nullptr) {
      act.trace_start = accelerators_[act.accelerator]->accelerator->create_event();
      act.compute.record(act.trace_start);
    }
    active_.emplace(module, std::move(act));
    prefetch_after(module);
    return fwd;
  }

  void end_forward(const std::string& module, StreamRef compute) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = active_.find(module);
    STOWAGE_EXPECTS(it != active_.end(), InvalidInputError,
                    "offload manager: end_forward('{}') without begin_forward", module);
    ActiveForward& act = it->second;
    StreamRef cs = compute.is_null() ? act.compute : compute;
    AcceleratorState& a = *accelerators_[act.accelerator];
    if (act.slot >= 0) {
      Slot& s = a.pool->slot(act.slot);
      cs.record(s.released);
      s.released_recorded = true;
      s.state = Slot::State::kFree;
      s.module.clear();
      s.views.clear();
      s.ticket.reset();
      s.owner = std::thread::id();
    }
    const std::vector<TensorView>& in_place = module_info(module).in_place[act.accelerator];
    const bool any_in_place = std::any_of(in_place.begin(), in_place.end(),
                                          [](const TensorView& v) { return v.data() != nullptr; });
    if (act.slot < 0 || any_in_place) {
      // Resident tensors stay in use until this point of the compute stream;
      // move_module waits for it before freeing them.
      auto last = last_use_.find(module);
      if (last == last_use_.end()) {
        last = last_use_.emplace(module, a.accelerator->create_event()).first;
      }
      cs.record(last->second);
    }
    for (RecordId id : act.ids) owner_.table_.unpin(id);
    if (TraceRecorder* trace = capturing_ ? nullptr : owner_.options_.trace) {
      Event end = a.accelerator->create_event();
      cs.record(end);
      trace->add_span(a.tier.index(), trace_tid(a, cs), module, "compute",
                      std::move(act.trace_start), std::move(end));
    }
    active_.erase(it);
    slot_freed_.notify_all();
  }

  // Turns completed fetch tickets into hits, misses and stall time.
  // REQUIRES: mutex_ held.
  void resolve_pending(bool block) {
    while (!pending_.empty()) {
      PendingTicket& p = pending_.front();
      if (block) {
        p.ticket->reached.synchronize();
        p.ticket->done.synchronize();
      } else if (!p.ticket->reached.ready() || !p.ticket->done.ready()) {
        break;
      }
      const float ms = Event::elapsed_ms(p.ticket->reached, p.ticket->done);
      if (ms <= 0) {
        ++counters_.prefetch_hits;
      } else {
        ++counters_.prefetch_misses;
        counters_.stall_ms += ms;
      }
      AcceleratorState& a = *accelerators_[p.accelerator];
      if (p.ticket.use_count() == 1) {
        a.spare_done_events.push_back(std::move(p.ticket->done));
        a.spare_reached_events.push_back(std::move(p.ticket->reached));
      }
      pending_.pop_front();
    }
  }

  // Every slot free, with nothing ordering its reuse. REQUIRES: lock held.
  void empty_slots() {
    for (auto& a : accelerators_) {
      if (!a->pool) continue;
      for (int i = 0; i < a->pool->size(); ++i) {
        Slot& s = a->pool->slot(i);
        s.state = Slot::State::kFree;
        s.module.clear();
        s.views.clear();
        s.ticket.reset();
        s.released_recorded = false;
      }
    }
  }

  void begin_capture(StreamRef compute) {
    STOWAGE_EXPECTS(!compute.is_null(), InvalidInputError,
                    "offload manager: a capture needs a compute stream");
    synchronize();
    std::lock_guard<std::mutex> lock(mutex_);
    STOWAGE_EXPECTS(!capturing_, InvalidInputError,
                    "offload manager: begin_capture() while a capture is open");
    STOWAGE_EXPECTS(active_.empty(), InvalidInputError,
                    "offload manager: begin_capture() while module '{}' is in a forward",
                    active_.empty() ? "" : active_.begin()->first);
    if (!dispatched_) dispatch_locked();
    empty_slots();
    capturing_ = true;
    capture_stream_ = compute;
    capture_start_ = counters_;
    forked_.clear();
  }

  OffloadCounters end_capture(StreamRef compute) {
    std::lock_guard<std::mutex> lock(mutex_);
    STOWAGE_EXPECTS(capturing_, InvalidInputError,
                    "offload manager: end_capture() without begin_capture()");
    STOWAGE_EXPECTS(active_.empty(), InvalidInputError,
                    "offload manager: end_capture() while module '{}' is in a forward",
                    active_.empty() ? "" : active_.begin()->first);
    for (int index : forked_) {
      AcceleratorState& a = *accelerators_[index];
      if (!a.capture_join.valid()) a.capture_join = a.accelerator->create_event();
      a.copy.ref().record(a.capture_join);
      compute.wait(a.capture_join);
    }
    const OffloadCounters per_launch = counters_since(counters_, capture_start_);
    counters_ = capture_start_;  // the capture moved nothing; launches count
    capturing_ = false;
    forked_.clear();
    return per_launch;
  }

  void abandon_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!capturing_) return;
    counters_ = capture_start_;
    capturing_ = false;
    forked_.clear();
    // Slots and resident modules' last uses were ordered by captured work
    // that never ran.
    empty_slots();
    last_use_.clear();
  }

  void note_launch(StreamRef compute, const OffloadCounters& per_launch) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& a : accelerators_) {
      if (!a->pool) continue;
      for (int i = 0; i < a->pool->size(); ++i) {
        Slot& s = a->pool->slot(i);
        compute.record(s.released);
        s.released_recorded = true;
      }
    }
    for (auto& [module, event] : last_use_) compute.record(event);
    counters_.bytes_h2d += per_launch.bytes_h2d;
    counters_.bytes_d2h += per_launch.bytes_d2h;
    counters_.bytes_d2d += per_launch.bytes_d2d;
    counters_.bytes_disk_read += per_launch.bytes_disk_read;
    counters_.bytes_disk_written += per_launch.bytes_disk_written;
    counters_.fetches += per_launch.fetches;
    counters_.sync_fallbacks += per_launch.sync_fallbacks;
  }

  void synchronize() {
    std::vector<StreamRef> streams;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& a : accelerators_) {
        streams.push_back(a->copy.ref());
        streams.push_back(a->compute.ref());
      }
    }
    for (StreamRef s : streams) s.synchronize();
    std::lock_guard<std::mutex> lock(mutex_);
    resolve_pending(true);
  }

  OffloadCounters counters() {
    std::lock_guard<std::mutex> lock(mutex_);
    resolve_pending(false);
    OffloadCounters c = counters_;
    for (auto& a : accelerators_) {
      if (a->pool) c.slot_allocation_failures += a->pool->allocation_failures();
    }
    return c;
  }

  void dispatch() {
    std::lock_guard<std::mutex> lock(mutex_);
    dispatch_locked();
  }

  StreamRef compute_stream(Tier tier) { return accelerator(tier).compute.ref(); }
  StreamRef copy_stream(Tier tier) { return accelerator(tier).copy.ref(); }

  // Waits for all work and drops every copy the table holds, while the
  // memory resources they came from still exist.
  void shut_down() {
    try {
      synchronize();
    } catch (...) {
      // Stream errors were reported to the caller who ran the work; the
      // memory must still be returned.
    }
    std::lock_guard<std::mutex> lock(mutex_);
    modules_.clear();
    for (auto& a : accelerators_) {
      a->pool.reset();
      a->staging.reset();
    }
    ResidencyTable& table = owner_.table_;
    for (RecordId id = 0; id < table.size(); ++id) {
      for (Tier t : table.tiers_of(id)) table.take_copy(id, t);
    }
  }

 private:
  OffloadManager& owner_;
  std::mutex mutex_;
  std::condition_variable slot_freed_;
  std::vector<std::unique_ptr<AcceleratorState>> accelerators_;
  std::map<Tier, TierMemory> memories_;
  std::shared_ptr<DiskStager> stager_;
  std::map<std::string, ModuleInfo> modules_;
  std::vector<std::vector<std::string>> orders_;
  std::map<std::string, std::pair<size_t, size_t>> order_pos_;
  std::map<std::string, ActiveForward> active_;
  std::deque<PendingTicket> pending_;
  std::map<std::string, Event> last_use_;  // of resident modules, on their compute stream
  // Graph capture (begin_capture .. end_capture).
  bool capturing_ = false;
  StreamRef capture_stream_;
  OffloadCounters capture_start_;
  std::set<int> forked_;  // accelerators whose copy stream joined the capture
  std::set<std::string> host_compute_;  // modules computed where their bytes are
  uint64_t layout_version_ = 0;
  OffloadCounters counters_;
  uint64_t disk_peak_ = 0;
  bool dispatched_ = false;               // the slot pools match what is streamed
  std::map<std::string, int> execution_;  // streamed module -> accelerator index
  uint64_t fetch_serial_ = 0;
};

OffloadManager::OffloadManager(Platform& platform, OffloadOptions options)
    : platform_(platform), options_(std::move(options)), impl_(std::make_unique<Impl>(*this)) {}

OffloadManager::~OffloadManager() { impl_->shut_down(); }

MemoryResource& OffloadManager::memory(Tier tier) { return impl_->memory(tier); }
TierUsage OffloadManager::usage(Tier tier) const { return impl_->usage(tier); }
uint64_t OffloadManager::disk_bytes() const { return table_.bytes_on(Tier::disk()); }
StreamRef OffloadManager::compute_stream(Tier accelerator) {
  return impl_->compute_stream(accelerator);
}
StreamRef OffloadManager::copy_stream(Tier accelerator) { return impl_->copy_stream(accelerator); }

RecordId OffloadManager::place(const std::string& module, const std::string& name, TensorRole role,
                               const Tensor& source, Tier tier) {
  return impl_->place(module, name, role, source, tier);
}

RecordId OffloadManager::place_quant_part(RecordId weight, const std::string& suffix,
                                          const Tensor& source, const std::string& name) {
  return impl_->place_quant_part(weight, suffix, source, name);
}

void OffloadManager::move_module(const std::string& module, Tier tier) {
  impl_->move_module(module, tier);
}

Tensor OffloadManager::read_to_host(const std::string& module, const std::string& name) {
  return impl_->read_to_host(module, name);
}

void OffloadManager::declare_execution_order(const std::vector<std::string>& modules) {
  impl_->declare_execution_order(modules);
}

void OffloadManager::dispatch() { impl_->dispatch(); }

void OffloadManager::set_execution_accelerator(const std::string& module, Tier accelerator) {
  impl_->set_execution_accelerator(module, accelerator);
}

ModuleForward OffloadManager::begin_forward(const std::string& module, StreamRef compute) {
  return impl_->begin_forward(module, compute);
}

void OffloadManager::end_forward(const std::string& module, StreamRef compute) {
  impl_->end_forward(module, compute);
}

void OffloadManager::synchronize() { impl_->synchronize(); }
void OffloadManager::begin_capture(StreamRef compute) { impl_->begin_capture(compute); }
OffloadCounters OffloadManager::end_capture(StreamRef compute) {
  return impl_->end_capture(compute);
}
void OffloadManager::abandon_capture() { impl_->abandon_capture(); }
void OffloadManager::set_host_compute(const std::string& module, bool on) {
  impl_->set_host_compute(module, on);
}
bool OffloadManager::host_compute(const std::string& module) const {
  return impl_->host_compute(module);
}
uint64_t OffloadManager::layout_version() const { return impl_->layout_version(); }
void OffloadManager::note_launch(StreamRef compute, const OffloadCounters& per_launch) {
  impl_->note_launch(compute, per_launch);
}
OffloadCounters OffloadManager::counters() const { return impl_->counters(); }

OffloadCounters counters_since(const OffloadCounters& now, const OffloadCounters& then) {
  OffloadCounters d = now;
  d.bytes_h2d -= then.bytes_h2d;
  d.bytes_d2h -= then.bytes_d2h;
  d.bytes_d2d -= then.bytes_d2d;
  d.bytes_disk_read -= then.bytes_disk_read;
  d.bytes_disk_written -= then.bytes_disk_written;
  d.fetches -= then.fetches;
  d.prefetch_hits -= then.prefetch_hits;
  d.prefetch_misses -= then.prefetch_misses;
  d.sync_fallbacks -= then.sync_fallbacks;
  d.slot_allocation_failures -= then.slot_allocation_failures;
  d.stall_ms -= then.stall_ms;
  return d;
}

}  // namespace stowage
