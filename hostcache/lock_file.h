// An exclusive lock that a crash releases: flock(2) on a file, which the
// kernel drops when the holder dies (SIGKILL included). Boost's named mutexes
// are not used because a holder that dies leaves them locked.
//
// The lock file may be removed by the holder (when the last user of a
// segment leaves); a waiter that then gets the lock on the removed file sees
// that the path no longer names its file and locks again.
//
// Thread safety: one object REQUIRES external synchronization.
#pragma once

#include <string>

namespace stowage::hostcache {

class LockFile {
 public:
  // Locks `path` (created 0600 when absent), blocking until it is free.
  // Throws IoError naming the path.
  explicit LockFile(std::string path);
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&&) = delete;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;
  // Unlocks (the file stays unless remove() was called).
  ~LockFile();

  // Removes the lock file while holding it (REQUIRES: held).
  void remove();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace stowage::hostcache
