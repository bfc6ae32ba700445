// Accelerators and the host memory tiers, discovered once and owned by a
// Platform object (no global state: two Platforms in a process are
// independent; on CUDA they share the physical devices).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/host_registration.h"
#include "core/memory_resource.h"
#include "core/stream.h"
#include "core/tier.h"

namespace stowage {

// What an accelerator's stream-ordered allocator holds: on CUDA the
// attributes of the device's current memory pool (the one memory()
// allocates from with cudaMallocAsync); on sim the simulated memory, which
// caches nothing (reserved == used).
struct DevicePoolUsage {
  uint64_t reserved_bytes = 0;       // mapped from the device: used plus cached
  uint64_t used_bytes = 0;           // handed out and not yet freed
  uint64_t reserved_high_bytes = 0;  // highest since reset_pool_high_watermarks()
  uint64_t used_high_bytes = 0;      // highest since reset_pool_high_watermarks()
};

// The granularity in which a CUDA memory pool maps device memory. After
// Accelerator::release_cached_memory, a freed allocation can still hold up
// to its first and last page mapped, where they are shared with live
// allocations: checks of cudaMemGetInfo allow 2 x this.
constexpr uint64_t kDevicePoolPageBytes = uint64_t{2} << 20;

// One accelerator: a CUDA device or a simulated one.
//
// Thread safety: all members may be called from several threads.
class Accelerator {
 public:
  virtual ~Accelerator() = default;
  virtual Tier tier() const = 0;
  // E.g. "NVIDIA H100 80GB HBM3 (cuda:0)" or "simulated accelerator (sim:0)".
  virtual std::string description() const = 0;
  // The device's memory, stream-ordered, with no budget of its own (wrap it
  // in a BudgetAdaptor). Throws OutOfMemoryError when the device is full.
  virtual MemoryResource& memory() = 0;
  virtual Stream create_stream() = 0;
  virtual Event create_event() = 0;
  virtual uint64_t total_bytes() const = 0;
  // cudaMemGetInfo's free bytes on CUDA; capacity minus bytes in use on sim.
  virtual uint64_t free_bytes() const = 0;
  // Makes this device current for the calling thread (cudaSetDevice).
  virtual void make_current() = 0;
  // How host threads wait for this device's streams and events
  // (synchronize()): kSpin (the default) polls, for the soonest wake-up;
  // kSleep sleeps in the driver, for runs whose host threads need every core
  // while another thread waits (host compute beside the accelerator: a
  // spinning waiter takes a core from the compute team, and the team waits
  // for its slowest thread). Applies to waits that begin after the call, on
  // streams and events made before it too. Sim's waits always sleep.
  enum class HostWait { kSpin, kSleep };
  virtual void set_host_wait(HostWait wait) = 0;

  // The device's own view of its memory, independent of any accounting
  // above it (tests check the accounting against it). Throws DeviceError.
  virtual DevicePoolUsage pool_usage() const = 0;
  // Sets the pool's high watermarks to its current reserved and used bytes.
  virtual void reset_pool_high_watermarks() = 0;
  // Waits for all work on the device, then gives the pool's cached free
  // memory back to the device (cudaMemPoolTrimTo(pool, 0)), so that
  // free_bytes() counts every byte freed so far. The pool keeps what live
  // allocations still use (it maps memory in 2 MiB pages, so a page shared
  // with a live allocation stays). On sim nothing is cached: frees already
  // count, once the streams they were ordered on have run them.
  virtual void release_cached_memory() = 0;
};

enum class DeviceChoice { kAuto, kCuda, kSim };

// Parses "auto" | "cuda" | "sim"; throws InvalidInputError otherwise.
DeviceChoice parse_device_choice(const std::string& text);

struct SimOptions {
  int accelerator_count = 1;
  // Capacity of each simulated accelerator.
  uint64_t memory_bytes = uint64_t{64} << 30;
  // Copy rate between host and a simulated accelerator, to model a PCIe link
  // so overlap can be tested without a GPU; 0 means as fast as memcpy.
  double copy_bytes_per_second = 0;
};

// True when this build has CUDA and at least one GPU is visible. Any CUDA
// error while asking (no driver, no device) means false.
bool cuda_device_available();

class Platform {
 public:
  // kAuto picks CUDA when a GPU is visible, else sim. kCuda without a GPU
  // throws DeviceError.
  static std::unique_ptr<Platform> create(DeviceChoice choice = DeviceChoice::kAuto,
                                          const SimOptions& sim = {});
  virtual ~Platform() = default;

  virtual Backend backend() const = 0;
  virtual int accelerator_count() const = 0;
  virtual Accelerator& accelerator(int index) = 0;
  // Pinned (page-locked) host memory: cudaHostAlloc on CUDA, aligned host
  // memory on sim. Tier: pinned host.
  virtual MemoryResource& pinned_host_memory() = 0;
  // Ordinary pageable host memory.
  MemoryResource& pageable_host_memory() { return pageable_; }
  // Registers host memory mapped elsewhere (e.g. a shared-memory segment) so
  // that copies from it run as from pinned memory: cudaHostRegister on CUDA
  // (portable; read-only mappings with cudaHostRegisterReadOnly), nothing on
  // sim. [data, data + bytes) must stay mapped while the registration lives.
  // Throws DeviceError naming the bytes when the driver refuses.
  virtual HostRegistration register_host_memory(const void* data, size_t bytes,
                                                bool read_only) = 0;

 private:
  HostMemoryResource pageable_;
};

}  // namespace stowage
