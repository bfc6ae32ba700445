#include "mmap_store/detail/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace stowage::mmap_store::detail {
namespace {

std::string folder_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  std::string pattern = folder_of(path_) + "/." + base_of(path_) + ".tmp-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) {
    throw IoError(fmt::format("{}: cannot create a temporary file in {}: {}", path_,
                              folder_of(path_), std::strerror(errno)));
  }
  temp_ = buf.data();
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw IoError(fmt::format("{}: writing {} bytes to {} failed: {}", path_, bytes, temp_,
                                n < 0 ? std::strerror(errno) : "wrote nothing"));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) {
    throw IoError(fmt::format("{}: fsync of {} failed: {}", path_, temp_, std::strerror(errno)));
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw IoError(fmt::format("{}: close of {} failed: {}", path_, temp_, std::strerror(errno)));
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    throw IoError(fmt::format("{}: rename from {} failed: {}", path_, temp_, std::strerror(errno)));
  }
  committed_ = true;
  int dir = ::open(folder_of(path_).c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);  // best effort: the rename is durable once the folder is
    ::close(dir);
  }
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

}  // namespace stowage::mmap_store::detail
