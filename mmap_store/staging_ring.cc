#include "mmap_store/staging_ring.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "core/error.h"

namespace stowage::mmap_store {

StagingRingShape default_staging_ring_shape(const IoOptions& io) {
  StagingRingShape shape;
  shape.slot_bytes = std::max(kDefaultStagingSlotBytes, 4 * io.task_bytes);
  const size_t task = std::max<size_t>(1, std::min(io.task_bytes, shape.slot_bytes));
  const size_t tasks_per_slot = (shape.slot_bytes + task - 1) / task;
  const size_t wanted_tasks = size_t{2} * std::max(1u, io.threads);
  shape.slot_count = std::max<size_t>(2, (wanted_tasks + tasks_per_slot - 1) / tasks_per_slot);
  return shape;
}

struct Pending {
  FileHandle* file;
  uint64_t offset;
  size_t bytes;
  StagingRing::Consumer consumer;
  bool hinted = false;  // a readahead hint was posted for it
};

// A readahead hint to post once the lock is released.
struct Hint {
  FileHandle* file;
  uint64_t offset;
  size_t bytes;
};

struct StagingRing::State {
  MemoryResource& pinned;
  size_t slot_bytes;
  std::vector<void*> slots;
  std::mutex mutex;
  std::condition_variable idle;
  std::vector<int> free;  // slot indices
  std::vector<bool> held;
  std::deque<Pending> queue;
  size_t in_flight = 0;  // reads started whose consumer has not returned
  bool closing = false;

  State(MemoryResource& r, size_t bytes) : pinned(r), slot_bytes(bytes) {}

  // Starts queued requests while slots are free, then hints the ones still
  // queued. Called with the lock held; unlocks around the start of each read
  // and to post the hints.
  void dispatch(std::unique_lock<std::mutex>& lock, const std::shared_ptr<State>& self) {
    start_free(lock, self);
    std::vector<Hint> hints = take_hints();
    if (hints.empty()) return;
    lock.unlock();
    for (const Hint& h : hints) h.file->advise_willneed(h.offset, h.bytes);
    lock.lock();
  }

  // The queued requests within their file's readahead window (bytes queued
  // ahead of them, counted from the queue's front) not hinted yet. Called
  // with the lock held.
  std::vector<Hint> take_hints() {
    std::vector<Hint> hints;
    if (closing) return hints;
    uint64_t ahead = 0;
    for (Pending& p : queue) {
      ahead += p.bytes;
      if (ahead > p.file->options().readahead_bytes) break;
      if (p.hinted || !p.file->reading_from_device()) continue;
      p.hinted = true;
      // Requests that follow each other in one file become one hint.
      if (!hints.empty() && hints.back().file == p.file &&
          hints.back().offset + hints.back().bytes == p.offset) {
        hints.back().bytes += p.bytes;
      } else {
        hints.push_back(Hint{p.file, p.offset, p.bytes});
      }
    }
    return hints;
  }

  void start_free(std::unique_lock<std::mutex>& lock, const std::shared_ptr<State>& self) {
    while (!queue.empty() && !free.empty() && !closing) {
      Pending p = std::move(queue.front());
      queue.pop_front();
      int slot = free.back();
      free.pop_back();
      held[slot] = true;
      ++in_flight;
      lock.unlock();
      start(std::move(p), slot, self);
      lock.lock();
    }
  }

  void start(Pending p, int slot, const std::shared_ptr<State>& self) {
    void* dst = slots[slot];
    auto consumer = std::make_shared<Consumer>(std::move(p.consumer));
    const uint64_t offset = p.offset;
    const size_t bytes = p.bytes;
    p.file->pread(dst, bytes, offset,
                  [self, slot, dst, offset, bytes, consumer](std::exception_ptr error) {
                    StagedRead r;
                    r.bytes = bytes;
                    r.offset = offset;
                    r.error = error;
                    if (error) {
                      self->give_back(slot, self);  // no bytes to consume: the slot is free again
                    } else {
                      r.data = dst;
                      r.slot = slot;
                    }
                    try {
                      (*consumer)(r);
                    } catch (...) {
                      // A consumer must not throw; the ring stays usable if one does.
                    }
                    std::lock_guard<std::mutex> lock(self->mutex);
                    --self->in_flight;
                    self->idle.notify_all();
                  });
  }

  void give_back(int slot, const std::shared_ptr<State>& self) {
    std::unique_lock<std::mutex> lock(mutex);
    STOWAGE_EXPECTS(slot >= 0 && static_cast<size_t>(slot) < slots.size() && held[slot],
                    InvalidInputError, "staging ring: slot {} is not held (ring of {} slots)", slot,
                    slots.size());
    held[slot] = false;
    free.push_back(slot);
    dispatch(lock, self);
    idle.notify_all();
  }
};

StagingRing::StagingRing(MemoryResource& pinned, size_t slot_bytes, size_t slot_count)
    : state_(std::make_shared<State>(pinned, slot_bytes)) {
  STOWAGE_EXPECTS(slot_bytes > 0 && slot_count > 0, InvalidInputError,
                  "staging ring: expected a positive slot size and count, found {} x {} bytes",
                  slot_count, slot_bytes);
  for (size_t i = 0; i < slot_count; ++i) {
    try {
      state_->slots.push_back(pinned.allocate(slot_bytes));
    } catch (...) {
      for (void* p : state_->slots) pinned.deallocate(p, slot_bytes);
      throw;
    }
    state_->free.push_back(static_cast<int>(slot_count - 1 - i));  // slot 0 goes first
  }
  state_->held.assign(slot_count, false);
}

StagingRing::~StagingRing() {
  std::deque<Pending> dropped;
  {
    std::unique_lock<std::mutex> lock(state_->mutex);
    state_->closing = true;
    dropped.swap(state_->queue);
  }
  for (auto& p : dropped) {
    StagedRead r;
    r.bytes = p.bytes;
    r.offset = p.offset;
    r.error = std::make_exception_ptr(IoError(fmt::format(
        "{}: read of {} bytes at offset {} cancelled: the staging ring was destroyed first",
        p.file->path(), p.bytes, p.offset)));
    try {
      p.consumer(r);
    } catch (...) {
    }
  }
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->idle.wait(lock, [&] { return state_->in_flight == 0; });
  for (void* p : state_->slots) state_->pinned.deallocate(p, state_->slot_bytes);
  state_->slots.clear();
}

void StagingRing::read(FileHandle& file, uint64_t offset, size_t bytes, Consumer consumer) {
  STOWAGE_EXPECTS(bytes <= state_->slot_bytes, InvalidInputError,
                  "{}: read of {} bytes at offset {} does not fit a staging slot of {} bytes",
                  file.path(), bytes, offset, state_->slot_bytes);
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->queue.push_back(Pending{&file, offset, bytes, std::move(consumer)});
  state_->dispatch(lock, state_);
}

void StagingRing::release(int slot) { state_->give_back(slot, state_); }

void StagingRing::release_after(StreamRef stream, int slot) {
  if (stream.is_null()) {
    release(slot);
    return;
  }
  std::weak_ptr<State> weak = state_;
  stream.host_task([weak, slot] {
    if (auto self = weak.lock()) self->give_back(slot, self);
  });
}

size_t StagingRing::slot_bytes() const { return state_->slot_bytes; }
size_t StagingRing::slot_count() const { return state_->held.size(); }
size_t StagingRing::free_slots() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->free.size();
}

}  // namespace stowage::mmap_store
