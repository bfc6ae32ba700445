// Asynchronous staged read throughput (FileHandle + StagingRing: disk ->
// pinned slots on the I/O pool) vs a plain sequential read() of the same file,
// cold (the file's pages dropped with posix_fadvise(POSIX_FADV_DONTNEED)
// before each run) and warm. Prints the median GiB/s of each and the ratio.
//
//   bazel run //bench:mmap_store_read_bench -- [--size 2GiB] [--file PATH]
//     [--iters 5] [--slot 16MiB] [--slots 4] [--task 4MiB] [--threads 4] [--direct]
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/memory_resource.h"
#include "core/platform.h"
#include "mmap_store/file_handle.h"
#include "mmap_store/staging_ring.h"

namespace {

using namespace stowage;
using namespace stowage::mmap_store;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string file;
  uint64_t size = uint64_t{2} << 30;
  int iters = 5;
  uint64_t slot = uint64_t{16} << 20;
  int slots = 4;
  uint64_t task = uint64_t{4} << 20;
  int threads = 4;
  bool direct = false;
};

void drop_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw IoError(fmt::format("{}: cannot open", path));
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void make_file(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw IoError(fmt::format("{}: cannot create", path));
  std::vector<uint64_t> chunk((64 << 20) / 8);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (uint64_t done = 0; done < size;) {
    for (auto& v : chunk) v = (x ^= x << 13, x ^= x >> 7, x ^= x << 17);
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size() * 8, size - done));
    if (::write(fd, chunk.data(), n) != static_cast<ssize_t>(n)) {
      throw IoError(fmt::format("{}: write failed", path));
    }
    done += n;
  }
  ::fsync(fd);
  ::close(fd);
}

// Plain sequential read() of slot-sized chunks, cycling over `bufs` (one
// buffer: the destination stays cache-hot; as many as the ring has slots: the
// same destination footprint as the staged path).
double plain_read_seconds(const std::string& path, uint64_t size, const std::vector<void*>& bufs,
                          size_t chunk) {
  auto t0 = Clock::now();
  int fd = ::open(path.c_str(), O_RDONLY);
  uint64_t total = 0;
  for (size_t i = 0;; ++i) {
    ssize_t n = ::read(fd, bufs[i % bufs.size()], chunk);
    if (n <= 0) break;
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (total != size) throw IoError(fmt::format("{}: read {} of {} bytes", path, total, size));
  return s;
}

// The staged pipeline: every slot-sized chunk read through the ring; the
// consumer touches the slot (where the device copy would start) and releases.
// The pool, file handle and ring are long-lived, as in the offload pipeline:
// only the reads are timed.
double staged_read_seconds(FileHandle& file, StagingRing& ring, uint64_t size) {
  const uint64_t slot = ring.slot_bytes();
  std::mutex m;
  std::condition_variable cv;
  uint64_t done = 0;
  bool failed = false;
  std::atomic<uint64_t> checksum{0};
  auto t0 = Clock::now();
  for (uint64_t off = 0; off < size; off += slot) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(slot, size - off));
    ring.read(file, off, n, [&](const StagedRead& r) {
      if (!r.error) {
        checksum += *static_cast<const unsigned char*>(r.data);
        ring.release(r.slot);
      }
      std::lock_guard<std::mutex> lock(m);
      done += r.bytes;
      failed |= static_cast<bool>(r.error);
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done >= size; });
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (failed) throw IoError(fmt::format("{}: a staged read failed", file.path()));
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InvalidInputError(fmt::format("{} needs a value", a));
      return argv[++i];
    };
    if (a == "--file")
      o.file = next();
    else if (a == "--size")
      o.size = parse_byte_size(next());
    else if (a == "--iters")
      o.iters = std::max(1, std::atoi(next().c_str()));
    else if (a == "--slot")
      o.slot = parse_byte_size(next());
    else if (a == "--slots")
      o.slots = std::max(1, std::atoi(next().c_str()));
    else if (a == "--task")
      o.task = parse_byte_size(next());
    else if (a == "--threads")
      o.threads = std::max(1, std::atoi(next().c_str()));
    else if (a == "--direct")
      o.direct = true;
    else
      throw InvalidInputError(fmt::format("unknown flag {}", a));
  }
  bool created = false;
  if (o.file.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    o.file = fmt::format("{}/stowage_read_bench.{}.bin", tmp ? tmp : "/tmp", ::getpid());
    make_file(o.file, o.size);
    created = true;
  } else {
    int fd = ::open(o.file.c_str(), O_RDONLY);
    if (fd < 0) throw IoError(fmt::format("{}: cannot open", o.file));
    o.size = static_cast<uint64_t>(::lseek(fd, 0, SEEK_END));
    ::close(fd);
  }
  auto platform = Platform::create(DeviceChoice::kAuto);
  MemoryResource& pinned = platform->pinned_host_memory();
  HostMemoryResource host;
  const double gib = static_cast<double>(o.size) / double(1 << 30);

  fmt::print("file {} ({:.2f} GiB), {} iterations, backend {}\n", o.file, gib, o.iters,
             platform->backend() == Backend::kCuda ? "cuda (cudaHostAlloc slots)"
                                                   : "sim (aligned host slots)");
  fmt::print(
      "staged: {} slots x {} MiB, task {} MiB, {} threads{}; plain: read() of {} MiB chunks "
      "into 1 buffer, and cycling over {} buffers (the ring's footprint)\n",
      o.slots, o.slot >> 20, o.task >> 20, o.threads, o.direct ? ", O_DIRECT" : "", o.slot >> 20,
      o.slots);
  // Long-lived buffers, touched once so page faults are not timed.
  std::vector<void*> ring_sized;
  for (int i = 0; i < o.slots; ++i) {
    ring_sized.push_back(host.allocate(o.slot));
    std::memset(ring_sized.back(), 0, o.slot);
  }
  const std::vector<void*> one{ring_sized[0]};
  IoThreadPool pool(o.threads);
  IoOptions io;
  io.task_bytes = o.task;
  io.threads = o.threads;
  FileHandle file(o.file, pool, io, o.direct);
  StagingRing ring(pinned, o.slot, o.slots);
  staged_read_seconds(file, ring, std::min<uint64_t>(o.size, o.slot * o.slots));  // fault slots in
  for (bool cold : {true, false}) {
    std::vector<double> plain1, plainn, staged;
    if (!cold) {  // warm the cache once
      plain_read_seconds(o.file, o.size, one, o.slot);
    }
    for (int i = 0; i < o.iters; ++i) {  // interleaved, so drift hits all three alike
      if (cold) drop_cache(o.file);
      plain1.push_back(gib / plain_read_seconds(o.file, o.size, one, o.slot));
      if (cold) drop_cache(o.file);
      plainn.push_back(gib / plain_read_seconds(o.file, o.size, ring_sized, o.slot));
      if (cold) drop_cache(o.file);
      staged.push_back(gib / staged_read_seconds(file, ring, o.size));
    }
    double p1 = median(plain1), pn = median(plainn), s = median(staged);
    fmt::print(
        "{:<5} plain read() 1 buffer {:6.2f} GiB/s, {} buffers {:6.2f} GiB/s | staged async "
        "{:6.2f} GiB/s | ratio {:.2f}x vs 1 buffer, {:.2f}x vs {} buffers\n",
        cold ? "cold" : "warm", p1, o.slots, pn, s, s / p1, s / pn, o.slots);
  }
  for (void* b : ring_sized) host.deallocate(b, o.slot);
  if (created) ::unlink(o.file.c_str());
  std::string cmd = "bazel run //bench:mmap_store_read_bench --";
  for (int i = 1; i < argc; ++i) cmd += std::string(" ") + argv[i];
  fmt::print("reproduce: {}\n", cmd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mmap_store_read_bench: {}\n", e.what());
    return 1;
  }
}
