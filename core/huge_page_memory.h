// Host memory on transparent huge pages: an anonymous mapping aligned to
// 2 MiB and advised MADV_HUGEPAGE, for large long-lived buffers that the host
// reads from end to end (weights computed on the host, the sources of fetches).
// With 4 KiB pages such reads miss the TLB every page and the hardware
// prefetchers stop at each page boundary; on a virtual machine each miss walks
// two page tables. Figures: bench/results/host-2026-12-07-s13/huge_pages.md.
//
// The advice is best effort: where the kernel's transparent huge pages are
// off, the mapping is ordinary 4 KiB pages and everything else holds.
//
// Thread safety: distinct objects may be used from several threads.
#pragma once

#include <cstddef>
#include <mutex>
#include <unordered_map>

namespace stowage {

// Allocations of at least this many bytes go on huge pages in the pinned host
// memory resources (smaller ones would waste up to a huge page each).
inline constexpr size_t kHugePageMinBytes = size_t{8} << 20;

class HugePageMapping {
 public:
  static constexpr size_t kHugePageBytes = size_t{2} << 20;

  HugePageMapping() = default;
  // Maps `bytes` (> 0) rounded up to kHugePageBytes, zero-filled, at an
  // address aligned to kHugePageBytes. Throws OutOfMemoryError naming the
  // bytes when the host cannot map them.
  explicit HugePageMapping(size_t bytes);
  HugePageMapping(HugePageMapping&& other) noexcept;
  HugePageMapping& operator=(HugePageMapping&& other) noexcept;
  HugePageMapping(const HugePageMapping&) = delete;
  HugePageMapping& operator=(const HugePageMapping&) = delete;
  ~HugePageMapping();  // unmaps

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }  // the mapped length
  // Whether the kernel took the MADV_HUGEPAGE advice.
  bool advised() const { return advised_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool advised_ = false;
};

// The live mappings of an allocator, by address: what it hands out as
// pointers and takes back to unmap. Thread-safe.
class HugePageMappings {
 public:
  // Keeps `mapping`; returns its address.
  void* keep(HugePageMapping mapping);
  // The mapping at `ptr`, moved out (its destructor unmaps it), or an empty
  // one where `ptr` is not one of the kept mappings.
  HugePageMapping take(void* ptr);

 private:
  std::mutex mutex_;
  std::unordered_map<void*, HugePageMapping> by_address_;
};

}  // namespace stowage
