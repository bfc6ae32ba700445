#include "mmap_store/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "mmap_store/detail/json_file.h"

namespace stowage::mmap_store {
namespace {

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string errno_text() { return std::strerror(errno); }

// What is at `path` (a final link not followed), for messages; null when
// nothing is there.
const char* kind_at(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return nullptr;  // absent, or the rename will say why
  if (S_ISREG(st.st_mode)) return "a regular file";
  if (S_ISDIR(st.st_mode)) return "a folder";
  if (S_ISLNK(st.st_mode)) return "a symbolic link";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) return "a device";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  return "not a regular file";
}

// Throws IoError when the target may not be replaced under `replace`.
void check_target(const std::string& path, AtomicFileOptions::Replace replace) {
  const char* kind = kind_at(path);
  if (kind == nullptr) return;
  if (replace == AtomicFileOptions::Replace::kNever) {
    throw IoError(fmt::format("{}: refusing to write: {} already exists there", path, kind));
  }
  if (std::strcmp(kind, "a regular file") != 0) {
    throw IoError(fmt::format(
        "{}: refusing to write over {}: only a regular file or nothing is replaced", path, kind));
  }
}

// rename(2) that never replaces an existing `to`.
int rename_no_replace(const char* from, const char* to) {
  if (::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  // A file system without RENAME_NOREPLACE: link(2) fails on an existing name.
  if (::link(from, to) != 0) return -1;
  ::unlink(from);
  return 0;
}

}  // namespace

AtomicFile::AtomicFile(std::string path, AtomicFileOptions options)
    : path_(std::move(path)), options_(options) {
  check_target(path_, options_.replace);
  std::string pattern = detail::folder_of(path_) + "/." + base_of(path_) + ".tmp-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  {
    std::unique_lock<std::mutex> hold;
    if (options_.registry != nullptr) hold = options_.registry->hold();
    fd_ = ::mkostemp(buf.data(), O_CLOEXEC);
    if (fd_ < 0) {
      throw IoError(fmt::format("{}: cannot create a temporary file in {}: {}", path_,
                                detail::folder_of(path_), errno_text()));
    }
    temp_ = buf.data();
    if (options_.registry != nullptr) {
      try {
        options_.registry->add(temp_);
      } catch (...) {
        abandon();
        throw;
      }
    }
  }
  if (::fchmod(fd_, 0644) != 0) {
    const std::string why = errno_text();
    abandon();
    throw IoError(fmt::format("{}: cannot set the mode of {}: {}", path_, buf.data(), why));
  }
}

AtomicFile::~AtomicFile() { abandon(); }

void AtomicFile::abandon() noexcept { drop_temp(true); }

void AtomicFile::drop_temp(bool remove) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (temp_.empty()) return;
  if (remove) ::unlink(temp_.c_str());
  if (options_.registry != nullptr) {
    try {
      options_.registry->forget(temp_);
    } catch (...) {
      // Forgetting is best effort: a later cleanup of a path already gone is harmless.
    }
  }
  temp_.clear();
}

void AtomicFile::write(const void* data, size_t bytes) {
  STOWAGE_EXPECTS(fd_ >= 0, IoError, "{}: write after the file was committed or abandoned", path_);
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string message =
          fmt::format("{}: writing {} bytes to {} failed after {} bytes: {}", path_, bytes, temp_,
                      written_, n < 0 ? errno_text() : "wrote nothing");
      abandon();
      throw IoError(message);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
}

void AtomicFile::commit() {
  STOWAGE_EXPECTS(fd_ >= 0, IoError, "{}: commit after the file was committed or abandoned", path_);
  try {
    if (options_.durable && ::fsync(fd_) != 0) {
      throw IoError(fmt::format("{}: fsync of {} failed: {}", path_, temp_, errno_text()));
    }
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      throw IoError(fmt::format("{}: close of {} failed: {}", path_, temp_, errno_text()));
    }
    // Checked again: the target may have appeared since the constructor.
    if (options_.replace == AtomicFileOptions::Replace::kNever) {
      if (rename_no_replace(temp_.c_str(), path_.c_str()) != 0) {
        const char* kind = kind_at(path_);
        throw IoError(fmt::format(
            "{}: rename from {} failed: {}", path_, temp_,
            kind != nullptr ? fmt::format("{} already exists there", kind) : errno_text()));
      }
    } else {
      check_target(path_, options_.replace);
      if (::rename(temp_.c_str(), path_.c_str()) != 0) {
        throw IoError(fmt::format("{}: rename from {} failed: {}", path_, temp_, errno_text()));
      }
    }
  } catch (...) {
    abandon();
    throw;
  }
  drop_temp(false);  // renamed: nothing to remove
  if (options_.durable) {
    int dir = ::open(detail::folder_of(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);  // best effort: the rename is durable once the folder is
      ::close(dir);
    }
  }
}

void write_file_atomically(const std::string& path, std::string_view bytes,
                           AtomicFileOptions options) {
  AtomicFile f(path, options);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

}  // namespace stowage::mmap_store
