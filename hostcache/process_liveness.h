// A process named so that a reused pid does not pass for it: its pid and its
// start time (field 22 of /proc/PID/stat, clock ticks since boot). A process
// killed with SIGKILL leaves no chance to say it is gone; this is how the
// host cache tells that a slot's owner is gone anyway.
#pragma once

#include <cstdint>

namespace stowage::hostcache {

struct ProcessId {
  uint64_t pid = 0;
  uint64_t start_time = 0;
  bool empty() const { return pid == 0; }
};

// The calling process.
ProcessId current_process();
// Whether `id` names a running process: kill(pid, 0) finds it (EPERM: it
// exists, owned by another user) and its start time is unchanged.
bool process_alive(const ProcessId& id);

}  // namespace stowage::hostcache
