#include "offload/slot_pool.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace stowage {

SlotPool::SlotPool(Accelerator& accelerator, MemoryResource& memory, uint64_t slot_bytes,
                   int target_slots, GrowthCheck check)
    : accelerator_(accelerator),
      memory_(memory),
      slot_bytes_(slot_bytes),
      target_(target_slots),
      check_(std::move(check)) {}

int SlotPool::fill() {
  while (try_grow() >= 0) {
  }
  return size();
}

int SlotPool::try_grow() {
  if (size() >= target_ || failures_ > 0) return -1;
  if (check_) {
    std::string refused = check_(slot_bytes_);
    if (!refused.empty()) {
      ++failures_;
      failure_ = std::move(refused);
      return -1;
    }
  }
  auto slot = std::make_unique<Slot>();
  try {
    slot->memory = Buffer(memory_, slot_bytes_);
  } catch (const OutOfMemoryError& e) {
    ++failures_;
    failure_ = e.what();
    return -1;
  } catch (const OutOfBudgetError& e) {
    ++failures_;
    failure_ = e.what();
    return -1;
  }
  slot->released = accelerator_.create_event();
  slots_.push_back(std::move(slot));
  return size() - 1;
}

SlotPool::~SlotPool() {
  for (const auto& s : slots_) {
    if (s->ticket) s->ticket->done.synchronize();
    if (s->released_recorded) s->released.synchronize();
  }
}

void Slot::clear() {
  state = State::kFree;
  module = -1;
  views.clear();
  ticket.reset();
  owner = std::thread::id();
}

int SlotPool::find(int module) const {
  for (int i = 0; i < size(); ++i) {
    if (slots_[i]->state != Slot::State::kFree && slots_[i]->module == module) return i;
  }
  return -1;
}

int SlotPool::acquire_free(bool allow_grow) {
  for (int i = 0; i < size(); ++i) {
    if (slots_[i]->state == Slot::State::kFree) return i;
  }
  return allow_grow ? try_grow() : -1;
}

void SlotPool::drop_prefetch(int module) {
  const int i = find(module);
  if (i < 0 || slots_[i]->state != Slot::State::kFetched) return;
  slots_[i]->ticket->done.synchronize();
  slots_[i]->clear();
}

int SlotPool::steal_newest_prefetch() {
  int index = -1;
  uint64_t newest = 0;
  for (int i = 0; i < size(); ++i) {
    const Slot& s = *slots_[i];
    if (s.state == Slot::State::kFetched && s.fetch_serial >= newest) {
      newest = s.fetch_serial;
      index = i;
    }
  }
  if (index >= 0) slots_[index]->clear();
  return index;
}

void SlotPool::empty() {
  for (const auto& s : slots_) {
    s->clear();
    s->released_recorded = false;
  }
}

void SlotPool::release_all_after(StreamRef compute) {
  for (const auto& s : slots_) {
    compute.record(s->released);
    s->released_recorded = true;
  }
}

bool SlotPool::has_slot_not_owned_by(std::thread::id me) const {
  return std::any_of(slots_.begin(), slots_.end(),
                     [me](const std::unique_ptr<Slot>& s) { return s->owner != me; });
}

}  // namespace stowage
