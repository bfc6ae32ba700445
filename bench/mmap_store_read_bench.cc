// Asynchronous staged read throughput (FileHandle + StagingRing: disk ->
// pinned slots on the I/O pool) vs a plain sequential read() of the same file,
// cold (the file's pages dropped with posix_fadvise(POSIX_FADV_DONTNEED)
// before each run) and warm. Prints the median GiB/s of each and the ratios.
//
// Each side in its best reasonable configuration: the staged path with the
// library's defaults (IoOptions::from_environment(), default_staging_ring_shape)
// unless flags say otherwise; plain read() of each chunk size in --chunks into
// one buffer (cache-hot destination), the best median counting as "plain".
// Also shown: plain read() cycling over buffers of the ring's footprint.
//
//   bazel run //bench:mmap_store_read_bench -- [--size 2GiB] [--file PATH]
//     [--iters 5] [--slot BYTES] [--slots N] [--task BYTES] [--threads N]
//     [--readahead BYTES] [--direct] [--chunks 1MiB,4MiB,16MiB] [--only cold|warm]
//     [--verbose]
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
#include <thread>
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
  IoOptions io = IoOptions::from_environment();
  StagingRingShape ring;  // set from `io` unless --slot/--slots
  uint64_t slot = 0;      // 0: the default shape's
  int slots = 0;
  bool direct = false;
  std::vector<uint64_t> chunks = {uint64_t{1} << 20, uint64_t{4} << 20, uint64_t{16} << 20};
  std::string only;      // "", "cold" or "warm"
  bool verbose = false;  // print every run, not only the medians
};

std::vector<uint64_t> parse_sizes(const std::string& list) {
  std::vector<uint64_t> sizes;
  size_t begin = 0;
  while (begin <= list.size()) {
    size_t end = list.find(',', begin);
    if (end == std::string::npos) end = list.size();
    sizes.push_back(parse_byte_size(list.substr(begin, end - begin)));
    begin = end + 1;
  }
  return sizes;
}

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
      // Only the last wakes the timing thread: a wakeup per chunk would take
      // CPU time from the reads that the plain read() side does not pay.
      if (done >= size) cv.notify_all();
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
      o.io.task_bytes = static_cast<size_t>(std::max<uint64_t>(1, parse_byte_size(next())));
    else if (a == "--threads")
      o.io.threads = static_cast<unsigned>(std::max(1, std::atoi(next().c_str())));
    else if (a == "--readahead")
      o.io.readahead_bytes = static_cast<size_t>(parse_byte_size(next()));
    else if (a == "--direct")
      o.direct = true;
    else if (a == "--chunks")
      o.chunks = parse_sizes(next());
    else if (a == "--only")
      o.only = next();
    else if (a == "--verbose")
      o.verbose = true;
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
  o.ring = default_staging_ring_shape(o.io);
  if (o.slot > 0) o.ring.slot_bytes = static_cast<size_t>(o.slot);
  if (o.slots > 0) o.ring.slot_count = static_cast<size_t>(o.slots);
  const size_t slot = o.ring.slot_bytes;
  const size_t slots = o.ring.slot_count;
  auto platform = Platform::create(DeviceChoice::kAuto);
  MemoryResource& pinned = platform->pinned_host_memory();
  HostMemoryResource host;
  const double gib = static_cast<double>(o.size) / double(1 << 30);
  const auto mib = [](uint64_t bytes) { return static_cast<double>(bytes) / double(1 << 20); };
  std::string chunk_list;
  for (uint64_t c : o.chunks)
    chunk_list += fmt::format("{}{:g}", chunk_list.empty() ? "" : "/", mib(c));

  fmt::print("file {} ({:.2f} GiB), {} iterations, backend {}, {} hardware threads\n", o.file, gib,
             o.iters,
             platform->backend() == Backend::kCuda ? "cuda (cudaHostAlloc slots)"
                                                   : "sim (aligned host slots)",
             std::thread::hardware_concurrency());
  fmt::print(
      "staged: {} slots x {:g} MiB, task {:g} MiB, {} threads, readahead {:g} MiB{}; plain: "
      "read() of {} MiB chunks into 1 buffer (best counts), and of {:g} MiB chunks cycling over "
      "{} buffers (the ring's footprint)\n",
      slots, mib(slot), mib(o.io.task_bytes), o.io.threads, mib(o.io.readahead_bytes),
      o.direct ? ", O_DIRECT" : "", chunk_list, mib(slot), slots);
  // Long-lived buffers, touched once so page faults are not timed.
  std::vector<void*> ring_sized;
  for (size_t i = 0; i < slots; ++i) {
    ring_sized.push_back(host.allocate(slot));
    std::memset(ring_sized.back(), 0, slot);
  }
  const uint64_t largest_chunk = *std::max_element(o.chunks.begin(), o.chunks.end());
  void* one_buffer = host.allocate(largest_chunk);
  std::memset(one_buffer, 0, largest_chunk);
  const std::vector<void*> one{one_buffer};
  IoThreadPool pool(o.io.threads);
  FileHandle file(o.file, pool, o.io, o.direct);
  StagingRing ring(pinned, slot, slots);
  staged_read_seconds(file, ring, std::min<uint64_t>(o.size, slot * slots));  // fault slots in
  for (bool cold : {true, false}) {
    if (!o.only.empty() && o.only != (cold ? "cold" : "warm")) continue;
    std::vector<std::vector<double>> plain1(o.chunks.size());
    std::vector<double> plainn, staged;
    if (!cold) {  // warm the cache once
      plain_read_seconds(o.file, o.size, one, o.chunks[0]);
    }
    for (int i = 0; i < o.iters; ++i) {  // interleaved, so drift hits all alike
      for (size_t c = 0; c < o.chunks.size(); ++c) {
        if (cold) drop_cache(o.file);
        plain1[c].push_back(gib / plain_read_seconds(o.file, o.size, one, o.chunks[c]));
      }
      if (cold) drop_cache(o.file);
      plainn.push_back(gib / plain_read_seconds(o.file, o.size, ring_sized, slot));
      if (cold) drop_cache(o.file);
      staged.push_back(gib / staged_read_seconds(file, ring, o.size));
      if (o.verbose) {
        std::string runs;
        for (const auto& p : plain1) runs += fmt::format("{:.2f} ", p.back());
        fmt::print("  {} run {}: plain 1 buffer {}| {} buffers {:.2f} | staged {:.2f} GiB/s\n",
                   cold ? "cold" : "warm", i, runs, slots, plainn.back(), staged.back());
      }
    }
    std::string each;
    double p1 = 0;
    uint64_t best_chunk = 0;
    for (size_t c = 0; c < o.chunks.size(); ++c) {
      const double m = median(plain1[c]);
      each += fmt::format("{}{:.2f}", each.empty() ? "" : "/", m);
      if (m > p1) {
        p1 = m;
        best_chunk = o.chunks[c];
      }
    }
    const double pn = median(plainn), s = median(staged);
    fmt::print(
        "{:<5} plain read() 1 buffer {} GiB/s (best {:6.2f}, {:g} MiB chunks), {} buffers {:6.2f} "
        "GiB/s | staged async {:6.2f} GiB/s | ratio {:.2f}x vs best plain, {:.2f}x vs {} "
        "buffers\n",
        cold ? "cold" : "warm", each, p1, mib(best_chunk), slots, pn, s, s / p1, s / pn, slots);
  }
  host.deallocate(one_buffer, largest_chunk);
  for (void* b : ring_sized) host.deallocate(b, slot);
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
