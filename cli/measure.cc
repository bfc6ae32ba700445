#include "cli/measure.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "kernels/memory_read.h"

namespace stowage::cli {

namespace {

// Bytes per second of `pass` (which enqueues work over `bytes` on the stream):
// the median of `repeats` timed passes after one warm-up.
template <typename Pass>
double median_rate(Accelerator& device, StreamRef stream, uint64_t bytes, int repeats,
                   Pass&& pass) {
  Event start = device.create_event();
  Event end = device.create_event();
  std::vector<double> rates;
  for (int i = 0; i <= repeats; ++i) {
    stream.record(start);
    pass();
    stream.record(end);
    end.synchronize();
    if (i == 0) continue;  // warm-up
    const double seconds = Event::elapsed_ms(start, end) / 1e3;
    rates.push_back(static_cast<double>(bytes) / std::max(seconds, 1e-9));
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace

double measure_pinned_h2d_rate(Platform& platform, int accelerator, uint64_t bytes, int repeats) {
  Accelerator& device = platform.accelerator(accelerator);
  Stream stream = device.create_stream();
  Buffer host(platform.pinned_host_memory(), bytes);
  std::memset(host.data(), 1, bytes);
  Buffer target(device.memory(), bytes, stream);
  const double rate = median_rate(device, stream, bytes, repeats, [&] {
    stream.ref().copy(target.data(), host.data(), bytes);
  });
  target.reset(stream);
  stream.synchronize();
  return rate;
}

double measure_pinned_h2d_rate_beside(Platform& platform, int accelerator, uint64_t bytes,
                                      const std::function<void()>& beside) {
  Accelerator& device = platform.accelerator(accelerator);
  Stream stream = device.create_stream();
  Buffer host(platform.pinned_host_memory(), bytes);
  std::memset(host.data(), 1, bytes);
  Buffer target(device.memory(), bytes, stream);
  stream.ref().copy(target.data(), host.data(), bytes);  // warm-up
  stream.synchronize();
  std::atomic<bool> stop{false};
  uint64_t copied = 0;
  double seconds = 0;
  std::exception_ptr copy_error;
  std::thread copier([&] {
    const auto start = std::chrono::steady_clock::now();
    try {
      while (!stop.load()) {
        stream.ref().copy(target.data(), host.data(), bytes);
        stream.synchronize();
        copied += bytes;
      }
    } catch (...) {
      copy_error = std::current_exception();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  std::exception_ptr beside_error;
  try {
    beside();
  } catch (...) {
    beside_error = std::current_exception();
  }
  stop = true;
  copier.join();
  target.reset(stream);
  stream.synchronize();
  if (beside_error) std::rethrow_exception(beside_error);
  if (copy_error) std::rethrow_exception(copy_error);
  return static_cast<double>(copied) / std::max(seconds, 1e-9);
}

double measure_device_read_rate(Platform& platform, int accelerator, uint64_t bytes,
                                int repeats) {
  Accelerator& device = platform.accelerator(accelerator);
  Stream stream = device.create_stream();
  bytes = bytes / 16 * 16;
  Buffer data(device.memory(), bytes, stream);
  Buffer checksum(device.memory(), sizeof(uint64_t), stream);
  stream.ref().fill_zero(data.data(), bytes);
  const double rate = median_rate(device, stream, bytes, repeats, [&] {
    kernels::read_checksum(data.data(), bytes, static_cast<uint64_t*>(checksum.data()), stream);
  });
  data.reset(stream);
  checksum.reset(stream);
  stream.synchronize();
  return rate;
}

void drop_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double measure_cold_sequential_read_rate(const std::string& path) {
  drop_page_cache(path);
  const int fd = ::open(path.c_str(), O_RDONLY);
  STOWAGE_EXPECTS(fd >= 0, IoError, "cannot open {} to measure its read rate: {}", path,
                  std::strerror(errno));
  std::vector<char> chunk(8 << 20);
  uint64_t total = 0;
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const ssize_t got = ::read(fd, chunk.data(), chunk.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      ::close(fd);
      throw IoError(
          fmt::format("reading {} at byte {} failed: {}", path, total, std::strerror(error)));
    }
    if (got == 0) break;
    total += static_cast<uint64_t>(got);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(fd);
  return static_cast<double>(total) / std::max(seconds, 1e-9);
}

}  // namespace stowage::cli
