#include "hostcache/process_liveness.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

namespace stowage::hostcache {
namespace {

// Field 22 of /proc/PID/stat; 0 when it cannot be read. The command name
// (field 2) is in parentheses and may hold spaces: fields count from the
// last ')'.
uint64_t start_time_of(uint64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(fields >> field)) return 0;
  }
  try {
    return std::stoull(field);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

ProcessId current_process() {
  const auto pid = static_cast<uint64_t>(::getpid());
  return ProcessId{pid, start_time_of(pid)};
}

bool process_alive(const ProcessId& id) {
  if (id.pid == 0 || id.pid > static_cast<uint64_t>(INT32_MAX)) return false;
  if (::kill(static_cast<pid_t>(id.pid), 0) != 0 && errno != EPERM) return false;
  const uint64_t now = start_time_of(id.pid);
  // A zombie or a process /proc does not show: trust kill().
  return now == 0 || id.start_time == 0 || now == id.start_time;
}

}  // namespace stowage::hostcache
