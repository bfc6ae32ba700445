#include "hostcache/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace stowage::hostcache {

LockFile::LockFile(std::string path) : path_(std::move(path)) {
  for (;;) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    STOWAGE_EXPECTS(fd >= 0, IoError, "host cache: cannot open the lock file {}: {}", path_,
                    std::strerror(errno));
    int rc;
    do {
      rc = ::flock(fd, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int err = errno;
      ::close(fd);
      throw IoError(fmt::format("host cache: cannot lock {}: {}", path_, std::strerror(err)));
    }
    // The holder before us may have removed the file: then this lock guards
    // nothing, and a newcomer may lock a new file of the same name.
    struct stat held {}, named {};
    if (::fstat(fd, &held) == 0 && ::stat(path_.c_str(), &named) == 0 &&
        held.st_dev == named.st_dev && held.st_ino == named.st_ino) {
      fd_ = fd;
      return;
    }
    ::close(fd);
  }
}

LockFile::LockFile(LockFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

LockFile::~LockFile() {
  if (fd_ >= 0) ::close(fd_);  // closing drops the flock
}

void LockFile::remove() { ::unlink(path_.c_str()); }

}  // namespace stowage::hostcache
