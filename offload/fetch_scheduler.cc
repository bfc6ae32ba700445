#include "offload/fetch_scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <thread>
#include <utility>

#include "core/error.h"
#include "offload/placement.h"

namespace stowage {
namespace {

constexpr int kComputeTid = 1;
constexpr int kCopyTid = 2;

}  // namespace

const TensorView* ModuleForward::find(const std::string& name) const {
  for (const auto& [n, view] : tensors) {
    if (n == name) return &view;
  }
  return nullptr;
}

struct FetchScheduler::AcceleratorState {
  Accelerator* accelerator = nullptr;
  Tier tier = Tier::pinned_host();
  Stream compute;
  Stream copy;
  std::unique_ptr<SlotPool> pool;
  Buffer staging;  // pinned, for disk reads
  // Recycled ticket events, kept by role: SimEvent::elapsed_ms_since locks
  // (end, start) in that order, so an event must not swap roles between
  // tickets (a lock-order inversion ThreadSanitizer reports).
  std::vector<Event> spare_started_events;
  std::vector<Event> spare_done_events;
  std::vector<Event> spare_reached_events;
  std::map<detail::StreamImpl*, int> trace_tids;
  Event capture_fork, capture_join;  // the copy stream into and out of a capture
};

// What a forward needs of a module, cached until it is placed into or moved.
struct FetchScheduler::ModuleInfo {
  std::vector<RecordId> ids;
  std::vector<std::string> names;
  std::vector<Tensor> sources;   // best source of each record, for fetches
  std::optional<Tier> resident;  // an accelerator holding every record
  std::vector<TensorView> resident_views;
  // A module on several tiers (tensor overrides) fetched to accelerator a:
  // its records with a copy on a are used in place, the others copied into
  // the slot. [a][record]: that copy's view, null where a has none.
  std::vector<std::vector<TensorView>> in_place;
  // Bytes the slot of accelerator a holds for it (the copied records at
  // 256-byte aligned offsets), by accelerator index.
  std::vector<uint64_t> packed_bytes;
  // By accelerator index: some record is used in place there.
  std::vector<char> uses_in_place;
};

struct FetchScheduler::Module {
  int id = 0;
  std::string name;
  std::optional<ModuleInfo> info;
  // Its execution order and position there; order < 0: in none.
  int order = -1;
  size_t position = 0;
  int execution = -1;  // accelerator index of a streamed forward; -1: the default
  bool host_compute = false;
  // The forward in flight.
  bool in_forward = false;
  int accelerator = 0;
  int slot = -1;  // -1: resident or computed on the host, no slot
  StreamRef compute;
  std::vector<RecordId> pinned;
  Event trace_start;
  // Of a module with resident copies, on its compute stream: move() waits
  // for it before freeing them. Invalid until its first forward.
  Event last_use;
};

FetchScheduler::FetchScheduler(Platform& platform, const OffloadOptions& options,
                               ResidencyTable& table, TierMemory& memory,
                               OffloadCounters& counters)
    : platform_(platform),
      options_(options),
      table_(table),
      memory_(memory),
      counters_(counters) {
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
  stager_ = options.disk_stager
                ? options.disk_stager
                : std::shared_ptr<DiskStager>(make_disk_stager(options.disk_stager_kind));
}

FetchScheduler::~FetchScheduler() = default;

std::vector<StreamRef> FetchScheduler::copy_streams() const {
  std::vector<StreamRef> out;
  for (const auto& a : accelerators_) out.push_back(a->copy.ref());
  return out;
}

std::vector<StreamRef> FetchScheduler::all_streams() const {
  std::vector<StreamRef> out;
  for (const auto& a : accelerators_) {
    out.push_back(a->copy.ref());
    out.push_back(a->compute.ref());
  }
  return out;
}

FetchScheduler::AcceleratorState& FetchScheduler::state(Tier tier) {
  STOWAGE_EXPECTS(tier.is_accelerator() && tier.index() >= 0 &&
                      tier.index() < static_cast<int>(accelerators_.size()) &&
                      accelerators_[tier.index()]->tier == tier,
                  InvalidInputError, "offload manager: {} is not an accelerator of this platform",
                  tier.to_string());
  return *accelerators_[tier.index()];
}

StreamRef FetchScheduler::compute_stream(Tier tier) { return state(tier).compute.ref(); }

StreamRef FetchScheduler::copy_stream(Tier tier) { return state(tier).copy.ref(); }

int FetchScheduler::fetch_slots(Tier accelerator) {
  AcceleratorState& a = state(accelerator);
  if (!dispatched_) dispatch();
  return a.pool ? static_cast<int>(a.pool->size()) : 0;
}

// ---- the module table

ModuleHandle FetchScheduler::handle(const std::string& name) {
  auto it = ids_.find(name);
  if (it != ids_.end()) return ModuleHandle{it->second};
  auto m = std::make_unique<Module>();
  m->id = static_cast<int>(modules_.size());
  m->name = name;
  modules_.push_back(std::move(m));
  ids_.emplace(name, modules_.back()->id);
  return ModuleHandle{modules_.back()->id};
}

ModuleHandle FetchScheduler::placed_module(const std::string& name) {
  const ModuleHandle h = handle(name);
  info(module(h));  // throws for a module with no records
  return h;
}

FetchScheduler::Module& FetchScheduler::module(ModuleHandle h) {
  STOWAGE_EXPECTS(h.id >= 0 && h.id < static_cast<int>(modules_.size()), InvalidInputError,
                  "offload manager: module handle {} was not given by this manager ({} modules)",
                  h.id, modules_.size());
  return *modules_[h.id];
}

void FetchScheduler::records_changed(const std::string& name) {
  auto it = ids_.find(name);
  if (it != ids_.end()) modules_[it->second]->info.reset();
}

const FetchScheduler::ModuleInfo& FetchScheduler::info(Module& m) {
  if (m.info) return *m.info;
  ModuleInfo info;
  info.ids = table_.records_of(m.name);
  STOWAGE_EXPECTS(!info.ids.empty(), InvalidInputError,
                  "offload manager: unknown module '{}' (no tensor of it was placed)", m.name);
  std::vector<TensorRecord> records;
  for (RecordId id : info.ids) records.push_back(table_.get(id));
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
  info.uses_in_place.assign(accelerators_.size(), 0);
  for (const TensorRecord& r : records) {
    info.names.push_back(r.name);
    const Tensor* src = best_source(r);
    STOWAGE_EXPECTS(src != nullptr, InternalError,
                    "offload manager: tensor {}.{} has no copy on any tier", r.module, r.name);
    info.sources.push_back(*src);
    if (info.resident) info.resident_views.push_back(r.copies.at(*info.resident).view());
    for (size_t a = 0; a < accelerators_.size(); ++a) {
      auto copy = r.copies.find(accelerators_[a]->tier);
      info.in_place[a].push_back(copy == r.copies.end() ? TensorView() : copy->second.view());
      if (copy == r.copies.end()) {
        info.packed_bytes[a] = slot_append(info.packed_bytes[a], r.bytes);
      } else {
        info.uses_in_place[a] = 1;
      }
    }
  }
  m.info = std::move(info);
  return *m.info;
}

FetchScheduler::AcceleratorState& FetchScheduler::runs_on(const Module& m) {
  return *accelerators_[m.execution < 0 ? options_.compute_accelerator : m.execution];
}

const FetchScheduler::Module* FetchScheduler::first_in_forward(bool in_slot_only) const {
  for (const auto& m : modules_) {
    if (m->in_forward && (!in_slot_only || m->slot >= 0)) return m.get();
  }
  return nullptr;
}

void FetchScheduler::drop_prefetch(const Module& m) {
  for (auto& a : accelerators_) {
    if (a->pool) a->pool->drop_prefetch(m.id);
  }
}

void FetchScheduler::prepare_move(ModuleHandle h, Tier tier) {
  Module& m = module(h);
  STOWAGE_EXPECTS(!m.in_forward, InvalidInputError,
                  "offload manager: cannot move module '{}' to {} while it is in a forward",
                  m.name, tier.to_string());
  if (tier.is_accelerator()) state(tier);  // validates
  drop_prefetch(m);
  if (m.last_use.valid()) m.last_use.synchronize();
}

void FetchScheduler::moved(ModuleHandle h) {
  module(h).info.reset();
  ++layout_version_;
}

// ---- where modules run

void FetchScheduler::declare_execution_order(const std::vector<std::string>& names) {
  std::vector<int> order;
  std::set<int> seen;
  for (const std::string& name : names) {
    const int id = handle(name).id;
    STOWAGE_EXPECTS(seen.insert(id).second, InvalidInputError,
                    "offload manager: module '{}' appears twice in an execution order", name);
    STOWAGE_EXPECTS(modules_[id]->order < 0, InvalidInputError,
                    "offload manager: module '{}' is already in another execution order", name);
    order.push_back(id);
  }
  const int index = static_cast<int>(orders_.size());
  for (size_t i = 0; i < order.size(); ++i) {
    modules_[order[i]]->order = index;
    modules_[order[i]]->position = i;
  }
  orders_.push_back(std::move(order));
}

FetchScheduler::Module& FetchScheduler::not_in_forward(const std::string& name) {
  Module& m = module(handle(name));
  STOWAGE_EXPECTS(!m.in_forward, InvalidInputError,
                  "offload manager: cannot change where module '{}' runs during its forward",
                  name);
  return m;
}

void FetchScheduler::runs_elsewhere(const Module& m) {
  drop_prefetch(m);
  dispatched_ = false;  // the pools are sized again at the next forward
  ++layout_version_;
}

void FetchScheduler::set_execution_accelerator(const std::string& name, Tier tier) {
  AcceleratorState& a = state(tier);
  Module& m = not_in_forward(name);
  m.execution = a.tier.index();
  runs_elsewhere(m);
}

void FetchScheduler::set_host_compute(const std::string& name, bool on) {
  Module& m = not_in_forward(name);
  const ModuleInfo& i = info(m);
  for (size_t r = 0; r < i.sources.size(); ++r) {
    STOWAGE_EXPECTS(host_readable(i.sources[r].tier()), InvalidInputError,
                    "offload manager: module '{}' cannot compute on the host: tensor '{}' has "
                    "no copy in host RAM or on disk",
                    name, i.names[r]);
  }
  m.host_compute = on;
  runs_elsewhere(m);
}

bool FetchScheduler::host_compute(const std::string& name) const {
  auto it = ids_.find(name);
  return it != ids_.end() && modules_[it->second]->host_compute;
}

// ---- slot pools

void FetchScheduler::dispatch() {
  ++layout_version_;
  if (const Module* busy = first_in_forward(true)) {
    throw InvalidInputError(fmt::format(
        "offload manager: dispatch() while streamed module '{}' is in a forward", busy->name));
  }
  const std::vector<std::string> names = table_.modules();
  for (auto& owned : accelerators_) {
    AcceleratorState& a = *owned;
    a.pool.reset();  // after the last fetch into and forward from each slot
    a.staging.reset();
    uint64_t slot_bytes = 0;
    uint64_t largest_disk_record = 0;
    Module* largest = nullptr;
    for (const std::string& name : names) {
      Module& m = module(handle(name));
      const ModuleInfo& i = info(m);
      if (i.resident || m.host_compute || &runs_on(m) != &a) continue;
      if (i.packed_bytes[a.tier.index()] > slot_bytes) {
        slot_bytes = i.packed_bytes[a.tier.index()];
        largest = &m;
      }
      for (const Tensor& src : i.sources) {
        if (src.tier() == Tier::disk()) {
          largest_disk_record = std::max<uint64_t>(largest_disk_record, src.bytes());
        }
      }
    }
    if (slot_bytes == 0) continue;
    a.pool = std::make_unique<SlotPool>(*a.accelerator, memory_.memory(a.tier), slot_bytes,
                                        slot_count(options_.prefetch_depth),
                                        working_memory_guard(a));
    if (!options_.lazy_slots) {
      a.pool->fill();
      if (a.pool->size() == 0) throw_no_slot(a, *largest);
    }
    if (largest_disk_record > 0) {
      const uint64_t bytes = std::max<uint64_t>(
          1, disk_staging_buffer_bytes(options_.disk_staging_bytes, largest_disk_record));
      try {
        a.staging = Buffer(memory_.memory(Tier::pinned_host()), bytes);
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
SlotPool::GrowthCheck FetchScheduler::working_memory_guard(AcceleratorState& a) {
  const uint64_t reserve = options_.working_reserve_of(a.tier);
  const BudgetAdaptor* budget = memory_.budget_adaptor(a.tier);
  if (reserve == 0 || budget == nullptr) return {};
  AcceleratorState* state = &a;
  return [this, state, budget, reserve](uint64_t slot_bytes) -> std::string {
    const uint64_t in_use = budget->bytes_in_use();
    const uint64_t held = table_.bytes_on(state->tier) + state->pool->bytes();
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

void FetchScheduler::throw_no_slot(AcceleratorState& a, Module& m) {
  const std::string message = fmt::format(
      "offload manager: no fetch slot of {} bytes could be allocated on {} for streamed "
      "module '{}' ({} bytes): {}",
      a.pool->slot_bytes(), a.tier.to_string(), m.name, info(m).packed_bytes[a.tier.index()],
      a.pool->failure());
  if (a.pool->failure().find("budget") != std::string::npos) throw OutOfBudgetError(message);
  throw OutOfMemoryError(message);
}

uint64_t FetchScheduler::slot_allocation_failures() const {
  uint64_t n = 0;
  for (const auto& a : accelerators_) {
    if (a->pool) n += a->pool->allocation_failures();
  }
  return n;
}

void FetchScheduler::release_all() {
  for (auto& m : modules_) {
    m->info.reset();
    m->last_use = Event();
  }
  for (auto& a : accelerators_) {
    a->pool.reset();
    a->staging.reset();
  }
}

// ---- fetches

Event FetchScheduler::take_event(AcceleratorState& a, std::vector<Event>& spares) {
  if (!spares.empty()) {
    Event e = std::move(spares.back());
    spares.pop_back();
    return e;
  }
  return a.accelerator->create_event();
}

int FetchScheduler::trace_tid(AcceleratorState& a, StreamRef stream) {
  auto it = a.trace_tids.find(stream.impl());
  if (it != a.trace_tids.end()) return it->second;
  const int tid = static_cast<int>(a.trace_tids.size()) + 1;
  a.trace_tids[stream.impl()] = tid;
  options_.trace->name_track(a.tier.index(), tid, fmt::format("compute (stream {})", tid));
  return tid;
}

// Enqueues the copies of `info`'s records into slot `index` of `a`.
void FetchScheduler::issue_fetch(AcceleratorState& a, int index, Module& m,
                                 const ModuleInfo& info) {
  Slot& s = a.pool->slot(index);
  StreamRef copy = a.copy.ref();
  TraceRecorder* trace = capturing_ ? nullptr : options_.trace;
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
  // The copy stream runs its work in order: from here to `done` the link
  // (or the disk staging before it) is busy with this fetch alone.
  Event started = take_event(a, a.spare_started_events);
  copy.record(started);
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
                      m.name);
      for (uint64_t done = 0; done < n; done += chunk) {
        const uint64_t k = std::min(chunk, n - done);
        stager_->enqueue_read(copy, src, done, k, a.staging.data());
        copy.copy(dst + done, a.staging.data(), k);
      }
    } else {
      copy.copy(dst, src.data(), n);
    }
    count_copy(counters_, a.tier, src.tier(), n);
    table_.note_copy(info.ids[i], n);
    s.views.emplace_back(info.names[i], TensorView(dst, src.dtype(), src.shape(), a.tier));
    offset += n;
  }
  auto ticket = std::make_shared<FetchTicket>();
  ticket->started = std::move(started);
  ticket->done = take_event(a, a.spare_done_events);
  ticket->reached = take_event(a, a.spare_reached_events);
  copy.record(ticket->done);
  if (trace != nullptr) {
    Event trace_end = a.accelerator->create_event();
    copy.record(trace_end);
    trace->add_span(a.tier.index(), kCopyTid, "fetch " + m.name, "copy", std::move(trace_start),
                    std::move(trace_end));
  }
  s.ticket = std::move(ticket);
  s.state = Slot::State::kFetched;
  s.module = m.id;
  s.fetch_serial = ++fetch_serial_;
  ++counters_.fetches;
}

// Queues fetches of the next prefetch_depth streamed modules after `m` in
// its execution order, while slots are free.
void FetchScheduler::prefetch_after(const Module& m) {
  if (m.order < 0 || options_.prefetch_depth == 0) return;
  if (!dispatched_) {
    // A prefetch never fails the forward that triggered it: without slots,
    // the error surfaces at the streamed module's own begin_forward.
    try {
      dispatch();
    } catch (const OutOfMemoryError&) {
      return;
    } catch (const OutOfBudgetError&) {
      return;
    }
  }
  const std::vector<int>& order = orders_[m.order];
  const size_t n = order.size();
  // A streamed module holds one of the slot_count(depth) = depth + 1 slots
  // while it runs; one that holds none (resident, computed on the host)
  // leaves them all to the copies.
  const int window = options_.prefetch_depth + (m.slot < 0 ? 1 : 0);
  int found = 0;
  for (size_t step = 1; step < n && found < window; ++step) {
    size_t j = m.position + step;
    if (j >= n) {
      if (!options_.wrap_around || capturing_) break;
      j -= n;
    }
    Module& next = *modules_[order[j]];
    const ModuleInfo& i = info(next);
    if (i.resident || next.host_compute) continue;
    ++found;
    AcceleratorState& a = runs_on(next);
    if (!a.pool) continue;
    if (next.in_forward || a.pool->find(next.id) >= 0) continue;
    if (i.packed_bytes[a.tier.index()] > a.pool->slot_bytes()) continue;
    const int index = a.pool->acquire_free(true);
    if (index < 0) continue;  // that accelerator's slots are busy; others may be free
    issue_fetch(a, index, next, i);
  }
}

// A slot for `m` (not yet fetched) on `a`: free, grown, stolen from a
// prefetch, or released by another thread's forward; -1 when another thread
// fetched `m` while this one waited.
int FetchScheduler::slot_for_on_demand(AcceleratorState& a, Module& m,
                                       std::unique_lock<std::mutex>& lock) {
  for (;;) {
    int index = a.pool->acquire_free(true);
    if (index >= 0) return index;
    index = a.pool->steal_newest_prefetch();
    if (index >= 0) return index;
    if (a.pool->size() == 0) throw_no_slot(a, m);
    STOWAGE_EXPECTS(a.pool->has_slot_not_owned_by(std::this_thread::get_id()), OutOfBudgetError,
                    "offload manager: module '{}' needs a fetch slot on {}, but all {} slots "
                    "are used by forwards running on this thread (nested forwards of streamed "
                    "modules need a larger prefetch depth)",
                    m.name, a.tier.to_string(), a.pool->size());
    slot_freed_.wait(lock);
    if (a.pool->find(m.id) >= 0) return -1;
  }
}

// ---- forwards

ModuleForward FetchScheduler::begin_streamed(Module& m, StreamRef compute,
                                             std::unique_lock<std::mutex>& lock) {
  AcceleratorState& a = runs_on(m);
  StreamRef cs = compute.is_null() ? a.compute.ref() : compute;
  STOWAGE_EXPECTS(cs.tier() == a.tier, InvalidInputError,
                  "offload manager: module '{}' runs on {} but was given a stream of {}", m.name,
                  a.tier.to_string(), cs.tier().to_string());
  if (!dispatched_) dispatch();
  const uint64_t packed = info(m).packed_bytes[a.tier.index()];
  if (!a.pool || a.pool->slot_bytes() < packed) {
    const bool idle = !a.pool || first_in_forward(true) == nullptr;
    STOWAGE_EXPECTS(idle, InvalidInputError,
                    "offload manager: module '{}' needs {} bytes but the fetch slots hold "
                    "{}; call dispatch() again after moving modules",
                    m.name, packed, a.pool ? a.pool->slot_bytes() : 0);
    dispatch();
  }
  int index = a.pool->find(m.id);
  while (index < 0) {
    index = slot_for_on_demand(a, m, lock);
    if (index >= 0) {
      // The lock may have been released while waiting: resolve the module again.
      issue_fetch(a, index, m, info(m));
      ++counters_.sync_fallbacks;
    } else {
      index = a.pool->find(m.id);
    }
  }
  Slot& s = a.pool->slot(index);
  s.state = Slot::State::kInUse;
  s.owner = std::this_thread::get_id();
  TraceRecorder* trace = capturing_ ? nullptr : options_.trace;
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
    trace->add_span(a.tier.index(), trace_tid(a, cs), "stall: wait for " + m.name, "stall",
                    std::move(stall_start), std::move(stall_end), 2.0);
  }
  ModuleForward fwd;
  fwd.accelerator = a.tier;
  fwd.compute_stream = cs;
  fwd.streamed = true;
  fwd.tensors = s.views;
  m.accelerator = a.tier.index();
  m.slot = index;
  return fwd;
}

ModuleForward FetchScheduler::begin_forward(ModuleHandle h, StreamRef compute,
                                            std::unique_lock<std::mutex>& lock) {
  if (!capturing_) resolve_pending(false);
  Module& m = module(h);
  STOWAGE_EXPECTS(!m.in_forward, InvalidInputError,
                  "offload manager: begin_forward('{}') while a forward of it is running",
                  m.name);
  const ModuleInfo& i = info(m);
  ModuleForward fwd;
  m.slot = -1;
  if (i.resident || m.host_compute) {
    // Resident: its copies on that accelerator. Computed where its bytes are
    // (host compute): the host copies' views, ordered on the compute stream
    // of the accelerator that runs the model.
    AcceleratorState& a = i.resident ? state(*i.resident) : runs_on(m);
    fwd.accelerator = i.resident ? a.tier : i.sources.front().tier();
    fwd.compute_stream = compute.is_null() ? a.compute.ref() : compute;
    fwd.tensors.reserve(i.ids.size());
    for (size_t r = 0; r < i.ids.size(); ++r) {
      fwd.tensors.emplace_back(i.names[r], i.resident ? i.resident_views[r] : i.sources[r].view());
    }
    m.accelerator = a.tier.index();
  } else {
    fwd = begin_streamed(m, compute, lock);
  }
  fwd.module = m.name;
  m.compute = fwd.compute_stream;
  m.pinned = info(m).ids;
  for (RecordId id : m.pinned) table_.pin(id);
  if (!capturing_ && options_.trace != nullptr) {
    m.trace_start = accelerators_[m.accelerator]->accelerator->create_event();
    m.compute.record(m.trace_start);
  }
  m.in_forward = true;
  prefetch_after(m);
  return fwd;
}

void FetchScheduler::end_forward(ModuleHandle h, StreamRef compute) {
  Module& m = module(h);
  STOWAGE_EXPECTS(m.in_forward, InvalidInputError,
                  "offload manager: end_forward('{}') without begin_forward", m.name);
  StreamRef cs = compute.is_null() ? m.compute : compute;
  AcceleratorState& a = *accelerators_[m.accelerator];
  if (m.slot >= 0) {
    Slot& s = a.pool->slot(m.slot);
    cs.record(s.released);
    s.released_recorded = true;
    s.clear();
  }
  if (m.slot < 0 || info(m).uses_in_place[m.accelerator]) {
    // Resident tensors stay in use until this point of the compute stream;
    // a move waits for it before freeing them.
    if (!m.last_use.valid()) m.last_use = a.accelerator->create_event();
    cs.record(m.last_use);
  }
  for (RecordId id : m.pinned) table_.unpin(id);
  if (TraceRecorder* trace = capturing_ ? nullptr : options_.trace) {
    Event end = a.accelerator->create_event();
    cs.record(end);
    trace->add_span(a.tier.index(), trace_tid(a, cs), m.name, "compute", std::move(m.trace_start),
                    std::move(end));
  }
  m.in_forward = false;
  m.slot = -1;
  slot_freed_.notify_all();
}

void FetchScheduler::resolve_pending(bool block) {
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
    counters_.fetch_ms += std::max(0.0f, Event::elapsed_ms(p.ticket->started, p.ticket->done));
    AcceleratorState& a = *accelerators_[p.accelerator];
    if (p.ticket.use_count() == 1) {
      a.spare_started_events.push_back(std::move(p.ticket->started));
      a.spare_done_events.push_back(std::move(p.ticket->done));
      a.spare_reached_events.push_back(std::move(p.ticket->reached));
    }
    pending_.pop_front();
  }
}

// ---- graph capture

void FetchScheduler::begin_capture(StreamRef compute) {
  STOWAGE_EXPECTS(!capturing_, InvalidInputError,
                  "offload manager: begin_capture() while a capture is open");
  const Module* busy = first_in_forward(false);
  STOWAGE_EXPECTS(busy == nullptr, InvalidInputError,
                  "offload manager: begin_capture() while module '{}' is in a forward",
                  busy ? busy->name : "");
  if (!dispatched_) dispatch();
  for (auto& a : accelerators_) {
    if (a->pool) a->pool->empty();
  }
  capturing_ = true;
  capture_stream_ = compute;
  capture_start_ = counters_;
  forked_.clear();
}

OffloadCounters FetchScheduler::end_capture(StreamRef compute) {
  STOWAGE_EXPECTS(capturing_, InvalidInputError,
                  "offload manager: end_capture() without begin_capture()");
  const Module* busy = first_in_forward(false);
  STOWAGE_EXPECTS(busy == nullptr, InvalidInputError,
                  "offload manager: end_capture() while module '{}' is in a forward",
                  busy ? busy->name : "");
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

void FetchScheduler::abandon_capture() {
  if (!capturing_) return;
  counters_ = capture_start_;
  capturing_ = false;
  forked_.clear();
  // Slots and resident modules' last uses were ordered by captured work that
  // never ran.
  for (auto& a : accelerators_) {
    if (a->pool) a->pool->empty();
  }
  for (auto& m : modules_) m->last_use = Event();
}

void FetchScheduler::note_launch(StreamRef compute, const OffloadCounters& per_launch) {
  for (auto& a : accelerators_) {
    if (a->pool) a->pool->release_all_after(compute);
  }
  for (auto& m : modules_) {
    if (m->last_use.valid()) compute.record(m->last_use);
  }
  counters_.bytes_h2d += per_launch.bytes_h2d;
  counters_.bytes_d2h += per_launch.bytes_d2h;
  counters_.bytes_d2d += per_launch.bytes_d2d;
  counters_.bytes_disk_read += per_launch.bytes_disk_read;
  counters_.bytes_disk_written += per_launch.bytes_disk_written;
  counters_.fetches += per_launch.fetches;
  counters_.sync_fallbacks += per_launch.sync_fallbacks;
}

}  // namespace stowage
