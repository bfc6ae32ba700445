#include "offload/offload_manager.h"

#include <mutex>
#include <utility>

#include "core/error.h"
#include "offload/fetch_scheduler.h"
#include "offload/placement.h"
#include "offload/tier_memory.h"

namespace stowage {

// The three parts and the mutex that serializes them. Members are declared
// in the order they depend on each other: the scheduler's streams and the
// placement's copies use the tiers' memory.
class OffloadManager::Impl {
 public:
  explicit Impl(OffloadManager& owner)
      : owner(owner),
        memory(owner.platform_, owner.options_, owner.options_.memory_overrides),
        scheduler(owner.platform_, owner.options_, owner.table_, memory, counters),
        placement(owner.platform_, owner.table_, memory, owner.options_.disk_store,
                  scheduler.copy_streams(), counters) {}

  // Waits for all queued work, then drops every copy the table holds while
  // the memory resources they came from still exist.
  ~Impl() {
    try {
      synchronize();
    } catch (...) {
      // Stream errors were reported to the caller who ran the work; the
      // memory must still be returned.
    }
    std::lock_guard<std::mutex> lock(mutex);
    scheduler.release_all();
    ResidencyTable& table = owner.table_;
    for (RecordId id = 0; id < table.size(); ++id) {
      for (Tier t : table.tiers_of(id)) table.take_copy(id, t);
    }
  }

  void synchronize() {
    std::vector<StreamRef> streams;
    {
      std::lock_guard<std::mutex> lock(mutex);
      streams = scheduler.all_streams();
    }
    for (StreamRef s : streams) s.synchronize();
    std::lock_guard<std::mutex> lock(mutex);
    scheduler.resolve_pending(true);
  }

  OffloadManager& owner;
  std::mutex mutex;
  OffloadCounters counters;
  TierMemory memory;
  FetchScheduler scheduler;
  Placement placement;
};

OffloadManager::OffloadManager(Platform& platform, OffloadOptions options)
    : platform_(platform), options_(std::move(options)), impl_(std::make_unique<Impl>(*this)) {}

OffloadManager::~OffloadManager() = default;

MemoryResource& OffloadManager::memory(Tier tier) { return impl_->memory.memory(tier); }

TierUsage OffloadManager::usage(Tier tier) const {
  if (tier != Tier::disk()) return impl_->memory.usage(tier, 0);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->memory.usage(tier, table_.bytes_on(Tier::disk()));
}

uint64_t OffloadManager::disk_bytes() const { return table_.bytes_on(Tier::disk()); }

StreamRef OffloadManager::compute_stream(Tier accelerator) {
  return impl_->scheduler.compute_stream(accelerator);
}

StreamRef OffloadManager::copy_stream(Tier accelerator) {
  return impl_->scheduler.copy_stream(accelerator);
}

RecordId OffloadManager::place(const std::string& module, const std::string& name, TensorRole role,
                               const Tensor& source, Tier tier) {
  STOWAGE_EXPECTS(source.defined(), InvalidInputError,
                  "offload manager: place({}.{}) was given an undefined tensor", module, name);
  STOWAGE_EXPECTS(role != TensorRole::kQuantState, InvalidInputError,
                  "offload manager: quant-state part {}.{} must be placed with "
                  "place_quant_part (it needs its weight)",
                  module, name);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const RecordId id = impl_->placement.place(module, name, role, source, tier);
  impl_->scheduler.records_changed(module);
  return id;
}

RecordId OffloadManager::place_quant_part(RecordId weight, const std::string& suffix,
                                          const Tensor& source, const std::string& name) {
  STOWAGE_EXPECTS(source.defined(), InvalidInputError,
                  "offload manager: quant-state part '{}' was given an undefined tensor", suffix);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const RecordId id = impl_->placement.place_quant_part(weight, suffix, source, name);
  impl_->scheduler.records_changed(table_.get(id).module);
  return id;
}

void OffloadManager::move_module(const std::string& module, Tier tier) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const std::vector<RecordId> ids = table_.records_of(module);
  STOWAGE_EXPECTS(!ids.empty(), InvalidInputError,
                  "offload manager: cannot move unknown module '{}'", module);
  const ModuleHandle handle = impl_->scheduler.handle(module);
  impl_->scheduler.prepare_move(handle, tier);
  impl_->placement.move(ids, tier);
  impl_->scheduler.moved(handle);
}

Tensor OffloadManager::read_to_host(const std::string& module, const std::string& name) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const auto id = table_.find(module, name);
  STOWAGE_EXPECTS(id.has_value(), InvalidInputError, "offload manager: no tensor {}.{} to read",
                  module, name);
  return impl_->placement.read_to_host(*id);
}

void OffloadManager::declare_execution_order(const std::vector<std::string>& modules) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.declare_execution_order(modules);
}

void OffloadManager::set_execution_accelerator(const std::string& module, Tier accelerator) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.set_execution_accelerator(module, accelerator);
}

void OffloadManager::set_host_compute(const std::string& module, bool on) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.set_host_compute(module, on);
}

bool OffloadManager::host_compute(const std::string& module) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.host_compute(module);
}

uint64_t OffloadManager::layout_version() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.layout_version();
}

void OffloadManager::dispatch() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.dispatch();
}

int OffloadManager::fetch_slots(Tier accelerator) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.fetch_slots(accelerator);
}

ModuleHandle OffloadManager::module_handle(const std::string& module) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.placed_module(module);
}

ModuleForward OffloadManager::begin_forward(ModuleHandle module, StreamRef compute) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.begin_forward(module, compute, lock);
}

void OffloadManager::end_forward(ModuleHandle module, StreamRef compute) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.end_forward(module, compute);
}

ModuleForward OffloadManager::begin_forward(const std::string& module, StreamRef compute) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.begin_forward(impl_->scheduler.handle(module), compute, lock);
}

void OffloadManager::end_forward(const std::string& module, StreamRef compute) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.end_forward(impl_->scheduler.handle(module), compute);
}

void OffloadManager::begin_capture(StreamRef compute) {
  STOWAGE_EXPECTS(!compute.is_null(), InvalidInputError,
                  "offload manager: a capture needs a compute stream");
  impl_->synchronize();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.begin_capture(compute);
}

OffloadCounters OffloadManager::end_capture(StreamRef compute) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->scheduler.end_capture(compute);
}

void OffloadManager::abandon_capture() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.abandon_capture();
}

void OffloadManager::note_launch(StreamRef compute, const OffloadCounters& per_launch) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.note_launch(compute, per_launch);
}

void OffloadManager::synchronize() { impl_->synchronize(); }

OffloadCounters OffloadManager::counters() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->scheduler.resolve_pending(false);
  OffloadCounters c = impl_->counters;
  c.slot_allocation_failures += impl_->scheduler.slot_allocation_failures();
  return c;
}

}  // namespace stowage
