#include "offload/slot_pool.h"

#include <utility>

#include "core/error.h"

namespace stowage {

uint64_t slot_offset_align(uint64_t offset) { return (offset + 255) / 256 * 256; }

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

int SlotPool::find(const std::string& module) const {
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

}  // namespace stowage
