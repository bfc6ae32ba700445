// Memory resources in the manner of RMM: one small interface with
// stream-ordered allocate/deallocate, and adaptors that add a byte budget,
// statistics (in use, peak) or injected faults by wrapping another resource.
//
// Thread safety: every resource and adaptor here may be used from several
// threads at once.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "core/huge_page_memory.h"
#include "core/stream.h"
#include "core/tier.h"

namespace stowage {

class MemoryResource {
 public:
  virtual ~MemoryResource() = default;

  // Returns `bytes` bytes (nullptr for 0 bytes). The memory may be used on
  // `stream` at once, and elsewhere once `stream`'s prior work is done; with
  // a null stream, on every stream at once.
  // Throws OutOfBudgetError / OutOfMemoryError naming this resource.
  void* allocate(size_t bytes, StreamRef stream = {}) { return do_allocate(bytes, stream); }
  // Frees memory from allocate(); stream-ordered: it is reused only after the
  // work already enqueued on `stream` has run. nullptr is ignored.
  void deallocate(void* ptr, size_t bytes, StreamRef stream = {}) {
    if (ptr != nullptr) do_deallocate(ptr, bytes, stream);
  }
  virtual Tier tier() const = 0;
  virtual std::string name() const = 0;

 private:
  virtual void* do_allocate(size_t bytes, StreamRef stream) = 0;
  virtual void do_deallocate(void* ptr, size_t bytes, StreamRef stream) = 0;
};

// Plain host memory (64-byte aligned; 4096 for 4 KiB and larger, so buffers
// can be used with O_DIRECT). Tier: pageable host, unless told otherwise
// (the sim backend's "pinned" and "device" memory are host memory too).
// With `huge_pages`, allocations of kHugePageMinBytes and more are
// HugePageMapping's (huge_page_memory.h: 2 MiB aligned, on transparent huge
// pages where the kernel gives them).
class HostMemoryResource final : public MemoryResource {
 public:
  explicit HostMemoryResource(Tier tier = Tier::pageable_host(), std::string name = "host memory",
                              bool huge_pages = false);
  ~HostMemoryResource() override;
  Tier tier() const override { return tier_; }
  std::string name() const override { return name_; }

 private:
  void* do_allocate(size_t bytes, StreamRef stream) override;
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override;
  void release(void* ptr);
  Tier tier_;
  std::string name_;
  bool huge_pages_;
  HugePageMappings mappings_;  // the huge-page allocations
};

// Counts bytes in use and their peak through an upstream resource.
class StatisticsAdaptor final : public MemoryResource {
 public:
  explicit StatisticsAdaptor(MemoryResource& upstream) : upstream_(upstream) {}
  uint64_t bytes_in_use() const { return in_use_.load(); }
  uint64_t peak_bytes() const { return peak_.load(); }
  uint64_t allocation_count() const { return allocations_.load(); }
  // Sets the peak to the bytes in use now.
  void reset_peak() { peak_.store(in_use_.load()); }
  Tier tier() const override { return upstream_.tier(); }
  std::string name() const override { return upstream_.name(); }

 private:
  void* do_allocate(size_t bytes, StreamRef stream) override;
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override;
  MemoryResource& upstream_;
  std::atomic<uint64_t> in_use_{0};
  std::atomic<uint64_t> peak_{0};
  std::atomic<uint64_t> allocations_{0};
};

// Refuses an allocation that would take the bytes in use past a budget, with
// an OutOfBudgetError naming the resource, the bytes asked, the budget and the
// bytes in use. The budget counts from this adaptor's own allocations.
class BudgetAdaptor final : public MemoryResource {
 public:
  BudgetAdaptor(MemoryResource& upstream, uint64_t budget_bytes, std::string name = "");
  uint64_t budget_bytes() const { return budget_; }
  uint64_t bytes_in_use() const;
  uint64_t bytes_available() const;
  Tier tier() const override { return upstream_.tier(); }
  std::string name() const override { return name_; }

 private:
  void* do_allocate(size_t bytes, StreamRef stream) override;
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override;
  MemoryResource& upstream_;
  uint64_t budget_;
  std::string name_;
  mutable std::mutex mutex_;
  uint64_t in_use_ = 0;
};

// Test seam (LevelDB's fault-injecting Env): fails allocations the predicate
// picks with OutOfMemoryError, as a device out of memory would.
class FaultInjectionAdaptor final : public MemoryResource {
 public:
  // Called with (allocation ordinal from 0, bytes); true means fail it.
  using FailurePredicate = std::function<bool(uint64_t, size_t)>;
  FaultInjectionAdaptor(MemoryResource& upstream, FailurePredicate should_fail);
  uint64_t injected_failures() const { return failures_.load(); }
  Tier tier() const override { return upstream_.tier(); }
  std::string name() const override { return upstream_.name(); }

 private:
  void* do_allocate(size_t bytes, StreamRef stream) override;
  void do_deallocate(void* ptr, size_t bytes, StreamRef stream) override;
  MemoryResource& upstream_;
  FailurePredicate should_fail_;
  std::atomic<uint64_t> ordinal_{0};
  std::atomic<uint64_t> failures_{0};
};

// "1.5GiB" etc. Parses sizes as CLI.md gives them: plain bytes, KiB/MiB/GiB/TiB
// (1024), KB/MB/GB/TB (1000), B; case-insensitive. Throws InvalidInputError.
uint64_t parse_byte_size(const std::string& text);
// "3.00 GiB", "512 B".
std::string format_bytes(uint64_t bytes);

}  // namespace stowage
