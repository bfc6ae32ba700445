#include "mmap_store/file_handle.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage::mmap_store {

// ---- options ----

unsigned IoOptions::default_threads() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return std::clamp(hardware == 0 ? 2u : hardware, 2u, 16u);
}

size_t IoOptions::default_task_bytes(unsigned threads) {
  return threads >= 8 ? size_t{4} << 20 : size_t{1} << 20;
}

IoOptions IoOptions::from_environment() {
  IoOptions o;
  if (const char* v = std::getenv("STOWAGE_IO_TASK_SIZE"); v && *v) {
    uint64_t bytes = parse_byte_size(v);
    STOWAGE_EXPECTS(bytes > 0, InvalidInputError,
                    "STOWAGE_IO_TASK_SIZE: expected a positive size, found '{}'", v);
    o.task_bytes = static_cast<size_t>(bytes);
  }
  if (const char* v = std::getenv("STOWAGE_IO_THREADS"); v && *v) {
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    STOWAGE_EXPECTS(end && *end == '\0' && n >= 1 && n <= 256, InvalidInputError,
                    "STOWAGE_IO_THREADS: expected an integer 1..256, found '{}'", v);
    o.threads = static_cast<unsigned>(n);
  }
  if (const char* v = std::getenv("STOWAGE_IO_READAHEAD"); v && *v) {
    o.readahead_bytes = static_cast<size_t>(parse_byte_size(v));
  }
  return o;
}

// ---- thread pool ----

struct IoThreadPool::Impl {
  explicit Impl(unsigned n) : pool(n) {}
  boost::asio::thread_pool pool;
};

IoThreadPool::IoThreadPool(unsigned threads)
    : impl_(std::make_unique<Impl>(std::max(1u, threads))), threads_(std::max(1u, threads)) {}

IoThreadPool::~IoThreadPool() { impl_->pool.join(); }

void IoThreadPool::post(std::function<void()> task) {
  boost::asio::post(impl_->pool, std::move(task));
}

// ---- POSIX files ----

namespace {

constexpr uint64_t kDirectAlignment = 4096;

class PosixFile final : public RandomAccessFile {
 public:
  PosixFile(std::string path, bool direct) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      throw IoError(fmt::format("{}: cannot open for reading: {}", path_, std::strerror(errno)));
    }
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      int e = errno;
      ::close(fd_);
      throw IoError(fmt::format("{}: cannot stat: {}", path_, std::strerror(e)));
    }
    size_ = static_cast<uint64_t>(st.st_size);
    identity_ = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    if (direct) direct_fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);  // may fail
  }
  ~PosixFile() override {
    ::close(fd_);
    if (direct_fd_ >= 0) ::close(direct_fd_);
  }
  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::pair<uint64_t, uint64_t> identity() const override { return identity_; }
  int64_t read_at(void* dst, size_t bytes, uint64_t offset) override {
    int fd = fd_;
    if (direct_fd_ >= 0 && reinterpret_cast<uintptr_t>(dst) % kDirectAlignment == 0 &&
        offset % kDirectAlignment == 0 && bytes % kDirectAlignment == 0) {
      fd = direct_fd_;
    }
    ssize_t n = ::pread(fd, dst, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINVAL && fd == direct_fd_) {
      n = ::pread(fd_, dst, bytes, static_cast<off_t>(offset));  // O_DIRECT refused
    }
    return n < 0 ? -static_cast<int64_t>(errno) : static_cast<int64_t>(n);
  }
  int64_t read_cached_at(void* dst, size_t bytes, uint64_t offset) override {
    if (direct_fd_ >= 0 || no_nowait_.load(std::memory_order_relaxed)) return 0;
    struct iovec iov = {dst, bytes};
    const ssize_t n = ::preadv2(fd_, &iov, 1, static_cast<off_t>(offset), RWF_NOWAIT);
    if (n >= 0) return n;
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
      no_nowait_.store(true, std::memory_order_relaxed);  // old kernel or file system
    }
    return 0;  // EAGAIN (not cached) and the rest: read_at reads or reports it
  }
  void advise_willneed(uint64_t offset, size_t bytes) override {
    // O_DIRECT reads bypass the page cache the hint would fill.
    if (direct_fd_ >= 0 || bytes == 0) return;
    (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(bytes),
                          POSIX_FADV_WILLNEED);
  }

 private:
  std::string path_;
  int fd_ = -1;
  int direct_fd_ = -1;
  uint64_t size_ = 0;
  std::pair<uint64_t, uint64_t> identity_{0, 0};
  std::atomic<bool> no_nowait_{false};
};

// Reads exactly `bytes` or throws IoError; `request_*` name the whole request.
// Returns true when the page cache did not hold all of them (the read waited
// for the device).
bool read_fully(RandomAccessFile& file, char* dst, size_t bytes, uint64_t offset,
                uint64_t request_offset, size_t request_bytes) {
  size_t done = 0;
  if (bytes > 0) {
    const int64_t n = file.read_cached_at(dst, bytes, offset);
    if (n > 0) done = std::min(static_cast<size_t>(n), bytes);
  }
  const bool missed = done < bytes;
  while (done < bytes) {
    int64_t n = file.read_at(dst + done, bytes - done, offset + done);
    if (n == -EINTR) continue;
    if (n < 0) {
      throw IoError(fmt::format("{}: read of {} bytes at offset {} failed at offset {}: {}",
                                file.path(), request_bytes, request_offset, offset + done,
                                std::strerror(static_cast<int>(-n))));
    }
    if (n == 0) {
      throw IoError(
          fmt::format("{}: short read: {} bytes at offset {} asked, the file ended at offset {} "
                      "(file size {})",
                      file.path(), request_bytes, request_offset, offset + done, file.size()));
    }
    done += static_cast<size_t>(n);
  }
  return missed;
}

}  // namespace

std::unique_ptr<RandomAccessFile> open_random_access_file(const std::string& path, bool direct) {
  return std::make_unique<PosixFile>(path, direct);
}

FaultInjectingFile::FaultInjectingFile(std::unique_ptr<RandomAccessFile> base, FaultPredicate fault)
    : base_(std::move(base)), fault_(std::move(fault)) {}

int64_t FaultInjectingFile::read_at(void* dst, size_t bytes, uint64_t offset) {
  switch (fault_(offset, bytes)) {
    case Fault::kEio:
      return -EIO;
    case Fault::kShortRead:
      return 0;  // the file seems to end here
    case Fault::kPartialRead:
      if (bytes >= 2) return base_->read_at(dst, bytes / 2, offset);
      break;
    case Fault::kNone:
      break;
  }
  return base_->read_at(dst, bytes, offset);
}

// ---- FileHandle ----

FileHandle::FileHandle(const std::string& path, IoThreadPool& pool, IoOptions options, bool direct)
    : FileHandle(open_random_access_file(path, direct), pool, options) {}

// Bytes read through a handle, and where the last read that missed the page
// cache ended (in those bytes), shared with its tasks.
struct FileHandle::CacheMisses {
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> read_at_last_miss{0};
  std::atomic<bool> any{false};
  void note(size_t bytes, bool missed) {
    const uint64_t total = bytes_read.fetch_add(bytes) + bytes;
    if (missed) {
      read_at_last_miss.store(total);
      any.store(true);
    }
  }
};

FileHandle::FileHandle(std::unique_ptr<RandomAccessFile> file, IoThreadPool& pool,
                       IoOptions options)
    : file_(std::move(file)),
      pool_(pool),
      options_(options),
      misses_(std::make_shared<CacheMisses>()) {
  if (options_.task_bytes == 0) options_.task_bytes = IoOptions{}.task_bytes;
}

FileHandle::~FileHandle() = default;

const std::string& FileHandle::path() const { return file_->path(); }
uint64_t FileHandle::size() const { return file_->size(); }

void FileHandle::read(void* dst, size_t bytes, uint64_t offset) {
  misses_->note(bytes, read_fully(*file_, static_cast<char*>(dst), bytes, offset, offset, bytes));
}

// posix_fadvise(WILLNEED) reads at most max(read_ahead_kb, max_sectors_kb)
// of a range per call (the kernel's force_page_cache_ra), 128 KiB on a
// default Linux block device: larger hints go in pieces of that size.
constexpr size_t kHintPieceBytes = size_t{128} << 10;

void FileHandle::advise_willneed(uint64_t offset, size_t bytes) {
  pool_.post([file = file_, offset, bytes] {
    for (size_t done = 0; done < bytes; done += kHintPieceBytes) {
      file->advise_willneed(offset + done, std::min(kHintPieceBytes, bytes - done));
    }
  });
}

bool FileHandle::reading_from_device() const {
  return misses_->any.load() &&
         misses_->bytes_read.load() - misses_->read_at_last_miss.load() <= options_.readahead_bytes;
}

namespace {

// Shared by the tasks of one request: the last to finish completes it.
struct Request {
  std::atomic<size_t> remaining;
  std::mutex mutex;
  std::exception_ptr error;
  FileHandle::Completion done;
  Request(size_t tasks, FileHandle::Completion d) : remaining(tasks), done(std::move(d)) {}
  void finish_task(std::exception_ptr e) {
    if (e) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!error) error = e;
    }
    if (remaining.fetch_sub(1) == 1) {
      std::exception_ptr first;
      {
        std::lock_guard<std::mutex> lock(mutex);
        first = error;
      }
      done(first);
    }
  }
};

}  // namespace

void FileHandle::pread(void* dst, size_t bytes, uint64_t offset, Completion done) {
  const uint64_t size = file_->size();
  if (offset > size || bytes > size - offset) {
    auto error = std::make_exception_ptr(
        IoError(fmt::format("{}: short read: {} bytes at offset {} asked, the file has {} bytes",
                            file_->path(), bytes, offset, size)));
    pool_.post([done = std::move(done), error] { done(error); });
    return;
  }
  const size_t task = options_.task_bytes;
  const size_t tasks = bytes == 0 ? 1 : (bytes + task - 1) / task;
  auto request = std::make_shared<Request>(tasks, std::move(done));
  char* out = static_cast<char*>(dst);
  for (size_t i = 0; i < tasks; ++i) {
    const size_t begin = i * task;
    const size_t len = std::min(task, bytes - begin);
    pool_.post([file = file_, misses = misses_, request, out, begin, len, offset, bytes] {
      std::exception_ptr error;
      try {
        misses->note(len, read_fully(*file, out + begin, len, offset + begin, offset, bytes));
      } catch (...) {
        error = std::current_exception();
      }
      request->finish_task(error);
    });
  }
}

std::future<size_t> FileHandle::pread(void* dst, size_t bytes, uint64_t offset) {
  auto promise = std::make_shared<std::promise<size_t>>();
  std::future<size_t> future = promise->get_future();
  pread(dst, bytes, offset, [promise, bytes](std::exception_ptr error) {
    if (error) {
      promise->set_exception(error);
    } else {
      promise->set_value(bytes);
    }
  });
  return future;
}

}  // namespace stowage::mmap_store
