// Asynchronous positional reads in the manner of kvikio's FileHandle::pread:
// a file opened once (optionally with O_DIRECT), reads split into tasks of a
// set size that run on a Boost.Asio thread pool, and a future (or callback)
// per request. A short read or an I/O error fails that request (IoError
// naming the file, offset and bytes); it never yields wrong bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <utility>

namespace stowage::mmap_store {

// I/O settings. Defaults, overridable from the environment in one place.
// The measurements behind the defaults: bench/results/io-defaults.md.
struct IoOptions {
  size_t task_bytes = default_task_bytes(default_threads());  // requests split into these
  unsigned threads = default_threads();                       // threads of an IoThreadPool
  // A StagingRing asks the OS to start reading (posix_fadvise WILLNEED) the
  // queued requests up to this many bytes beyond those being read, while the
  // file is read from the device, so that a disk which needs a deep queue of
  // in-order requests gets one without more threads. Off (0) by default (it
  // was slower on the build host's disk). Ignored with O_DIRECT.
  size_t readahead_bytes = 0;

  // std::thread::hardware_concurrency() clamped to [2, 16] (2 when unknown).
  static unsigned default_threads();
  // 1 MiB for fewer than 8 threads, 4 MiB from 8 on.
  static size_t default_task_bytes(unsigned threads);
  // The defaults, overridden by STOWAGE_IO_TASK_SIZE (a size: "4MiB",
  // "1048576"), STOWAGE_IO_THREADS and STOWAGE_IO_READAHEAD (a size; "0"
  // turns the hints off). Throws InvalidInputError when set but malformed.
  static IoOptions from_environment();
};

// A pool of I/O threads (boost::asio::thread_pool) owned by this object.
// Thread safety: post() may be called from any thread, including its own.
class IoThreadPool {
 public:
  explicit IoThreadPool(unsigned threads = IoOptions{}.threads);
  // Runs what was posted, then joins the threads.
  ~IoThreadPool();
  IoThreadPool(const IoThreadPool&) = delete;
  IoThreadPool& operator=(const IoThreadPool&) = delete;
  void post(std::function<void()> task);
  unsigned threads() const { return threads_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  unsigned threads_;
};

// The operating-system seam (LevelDB's Env): tests wrap it to inject faults.
// Thread safety: read_at may be called from several threads at once.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  virtual const std::string& path() const = 0;
  virtual uint64_t size() const = 0;
  // One positional read, as pread(2): returns the bytes read (fewer than
  // asked is allowed; 0 at end of file) or -errno.
  virtual int64_t read_at(void* dst, size_t bytes, uint64_t offset) = 0;
  // The opened file's (device, inode), to tell it from another file that
  // took its path; {0, 0} where unknown.
  virtual std::pair<uint64_t, uint64_t> identity() const { return {0, 0}; }
  // Reads only what the page cache already holds, from `offset` on, without
  // waiting for the device (preadv2 with RWF_NOWAIT): the bytes read, or 0
  // when the first byte is not cached, the file cannot tell, or the read
  // fails (read_at then reports the error). FileHandle tries it first to
  // tell warm reads from cold ones. This default always says 0.
  virtual int64_t read_cached_at(void* dst, size_t bytes, uint64_t offset) {
    (void)dst;
    (void)bytes;
    (void)offset;
    return 0;
  }
  // A hint, as posix_fadvise(POSIX_FADV_WILLNEED): start reading the range
  // into the page cache and return without waiting. Errors are ignored.
  virtual void advise_willneed(uint64_t offset, size_t bytes) {
    (void)offset;
    (void)bytes;
  }
};

// Opens `path` read-only. With `direct`, reads whose buffer, offset and
// size are 4096-aligned bypass the page cache (O_DIRECT); the others, and
// all reads where the file system refuses O_DIRECT, go through the page
// cache. Throws IoError naming the file.
std::unique_ptr<RandomAccessFile> open_random_access_file(const std::string& path,
                                                          bool direct = false);

// Test seam: consults `fault(offset, bytes)` before each read_at of the
// wrapped file and injects what it returns. The predicate is called from
// several threads at once.
class FaultInjectingFile final : public RandomAccessFile {
 public:
  enum class Fault {
    kNone,
    kEio,         // the read fails with EIO
    kShortRead,   // the read returns 0: the file seems to end early
    kPartialRead  // half the bytes come back (legal for pread; callers retry)
  };
  using FaultPredicate = std::function<Fault(uint64_t offset, size_t bytes)>;
  FaultInjectingFile(std::unique_ptr<RandomAccessFile> base, FaultPredicate fault);
  const std::string& path() const override { return base_->path(); }
  uint64_t size() const override { return base_->size(); }
  int64_t read_at(void* dst, size_t bytes, uint64_t offset) override;
  std::pair<uint64_t, uint64_t> identity() const override { return base_->identity(); }
  void advise_willneed(uint64_t offset, size_t bytes) override {
    base_->advise_willneed(offset, bytes);
  }

 private:
  std::unique_ptr<RandomAccessFile> base_;
  FaultPredicate fault_;
};

// One open file reading into host memory on an IoThreadPool.
// Thread safety: pread/read may be called from several threads at once.
// REQUIRES: the pool outlives the handle's requests; `dst` stays valid until
// the request completes.
class FileHandle {
 public:
  FileHandle(const std::string& path, IoThreadPool& pool, IoOptions options = {},
             bool direct = false);
  FileHandle(std::unique_ptr<RandomAccessFile> file, IoThreadPool& pool, IoOptions options = {});
  ~FileHandle();

  using Completion = std::function<void(std::exception_ptr error)>;
  // Reads exactly [offset, offset + bytes) into dst, as tasks of
  // options.task_bytes on the pool. The future holds `bytes`, or an IoError
  // (short read, EIO, range past the end of the file).
  std::future<size_t> pread(void* dst, size_t bytes, uint64_t offset);
  // Same; `done` runs once, on a pool thread, when every task has finished
  // (with the first error, or null).
  void pread(void* dst, size_t bytes, uint64_t offset, Completion done);
  // Synchronous read on the calling thread (no splitting). Throws IoError.
  void read(void* dst, size_t bytes, uint64_t offset);
  // Posts a readahead hint for [offset, offset + bytes) to the pool
  // (RandomAccessFile::advise_willneed, in pieces the kernel honours whole)
  // and returns at once.
  void advise_willneed(uint64_t offset, size_t bytes);
  // True when a read of this handle had to wait for the device (missed the
  // page cache) within the last options().readahead_bytes bytes it read. A
  // StagingRing hints the requests it queues only then: on a warm file the
  // hints would only cost a walk of the cached pages.
  bool reading_from_device() const;

  const std::string& path() const;
  uint64_t size() const;
  const IoOptions& options() const { return options_; }

 private:
  struct CacheMisses;
  std::shared_ptr<RandomAccessFile> file_;
  IoThreadPool& pool_;
  IoOptions options_;
  std::shared_ptr<CacheMisses> misses_;
};

}  // namespace stowage::mmap_store
