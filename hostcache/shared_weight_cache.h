// One host copy for many processes: the host-tier records of a model live
// in a named shared-memory segment (segment.h) keyed by the checkpoint's
// identity and the recipe (cache_key.h). The first process to load builds
// it, streaming from the checkpoint through the loader; later ones attach to
// it with no load and no copy, and their residency tables' host records
// point into it, read-only. Each process registers the segment's bytes with
// its platform (cudaHostRegister on CUDA) so copies from them run at the
// pinned rate.
//
//   hostcache::SharedWeightCache cache(platform, options);
//   LoadOptions load = ...;
//   load.host_store = &cache;   // load_checkpoint builds or attaches
//
// Crash safety:
//  - a builder holds the segment's lock file (flock, released by the kernel
//    when it dies) for the whole build, so concurrent builders of one
//    segment do not both build: the second waits, then attaches;
//  - the state word is written last; a segment left kBuilding by a builder
//    that died is removed and built again by the next process;
//  - each attached process holds a slot (pid and start time); a slot whose
//    process is gone (SIGKILL included) counts for nothing;
//  - the last process to leave removes the segment unless it was opened
//    with `keep`; a process only removes the build it attached to (the
//    generation it mapped), never a later one of the same name.
// Bad segments: a segment of another layout version or not Stowage's is an
// InvalidInputError naming it (never removed: other software may use it); a
// corrupt header or directory, or an unfinished build, is rebuilt; a changed
// checkpoint has another key, so it never meets the old segment.
//
// Thread safety: begin_load may be called from several threads (loads of
// one key share one attachment).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/platform.h"
#include "offload/host_tier_store.h"

namespace stowage::hostcache {

struct SharedWeightCacheOptions {
  // Segment names are PREFIX-ID in /dev/shm (tests set their own prefix).
  std::string prefix = "stowage-hc";
  // The model family's tag in the recipe ("mlp", "transformer").
  std::string family = "mlp";
  // Leave the segment for later processes when the last one leaves.
  bool keep = false;
  // Host-wide limit on the bytes of all segments of this prefix (pinned by
  // every process that registers them); nullopt: half the host's memory.
  std::optional<uint64_t> pinned_budget_bytes;
};

// The prefix's allowed spelling: [A-Za-z0-9_.-]{1,64}. Throws InvalidInputError.
void check_prefix(const std::string& prefix);

class Attachment;

class SharedWeightCache final : public HostTierStore {
 public:
  // `platform` (registration of the shared pages) must outlive the cache
  // and every tensor it gives. This process leaves a segment (its slot
  // freed, the segment removed when it was the last and not `keep`) when the
  // cache and every tensor from the segment are gone.
  SharedWeightCache(Platform& platform, SharedWeightCacheOptions options);
  ~SharedWeightCache() override;

  std::unique_ptr<HostTierLoad> begin_load(const mmap_store::Checkpoint& checkpoint,
                                           const LoadOptions& options,
                                           const std::vector<PlanModule>& host_modules) override;

  // What the last begin_load did: "built", "attached" or "none" (nothing on
  // the host tier and no segment to attach), and the segment's name.
  struct LastLoad {
    std::string action;
    std::string segment;
    uint64_t host_bytes = 0;  // record bytes served from or stored in the segment
    // Why the platform refused to register the segment's bytes (they are
    // then copied at the pageable rate); empty when registered.
    std::string registration_error;
  };
  LastLoad last_load() const;

 private:
  Platform& platform_;
  SharedWeightCacheOptions options_;
  mutable std::mutex mutex_;
  // By segment name; held until the cache is destroyed, so that successive
  // loads in one process (bench's runs) do not leave and build again.
  std::map<std::string, std::shared_ptr<Attachment>> attachments_;
  LastLoad last_;
};

}  // namespace stowage::hostcache
