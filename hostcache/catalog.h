// The host's shared weight segments of one prefix, as `stowage cache list`
// and `stowage cache drop` see them.
//
// Thread safety: free functions, safe from several threads and processes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hostcache/process_liveness.h"

namespace stowage::hostcache {

struct SegmentListing {
  std::string name;   // PREFIX-ID (in /dev/shm)
  std::string id;     // ID: what `cache drop` takes
  std::string model;  // the checkpoint's path ("" when the header is not readable)
  std::string recipe;
  // "ready", "building" (its builder runs), "abandoned" (its builder died
  // before finishing), "corrupt", "other-version", "foreign".
  std::string state;
  uint64_t bytes = 0;           // stored record bytes (ready), else the segment's size
  uint64_t resident_bytes = 0;  // host memory the segment holds now
  bool keep = false;
  bool stale = false;  // no live process attached and unfinished, corrupt, or its checkpoint changed
  std::vector<ProcessId> attached;  // live processes
};

// Names PREFIX-ID of the segments in /dev/shm (lock files excluded).
std::vector<std::string> segment_names(const std::string& prefix);
// Every segment of `prefix`, by name. Takes no lock: a segment being
// attached or detached at that moment may show a slot early or late.
std::vector<SegmentListing> list_segments(const std::string& prefix);

enum class DropSelection { kOne, kAll, kStale };
// Removes the selected segments (kOne: the one whose ID is `id`), each under
// its lock file (so waiting for a build in progress), with its lock file.
// Processes attached keep their mapping and never remove a later build.
// Foreign segments are removed only when named. Returns the names removed.
std::vector<std::string> drop_segments(const std::string& prefix, DropSelection selection,
                                       const std::string& id = "");

}  // namespace stowage::hostcache
