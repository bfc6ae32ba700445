#include "mmap_store/detail/mapped_file.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <system_error>

#include "core/error.h"
#include "mmap_store/checkpoint.h"

namespace stowage::mmap_store {
namespace {

// The mappings map_file_read_only made, for the SIGBUS handler (issue #15
// item 5): a read of a mapped page past the end of a file that shrank after
// it was mapped raises SIGBUS, which would end the process. The handler maps
// a page of zeros over the faulting page of a registered mapping, marks the
// mapping and returns, so the read completes (with zeros); check_mapped_read
// then turns the mark into an IoError naming the file, and no caller uses
// the zeros. A signal handler reaches only process-wide state, hence this
// one table (mappings are per process too): fixed-size, lock-free, written
// by registration and read by the handler. A mapping that finds the table
// full is left unguarded.
struct GuardedRange {
  std::atomic<uintptr_t> begin{0};  // 0: free; 1: being registered
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> faulted{false};
  std::atomic<const std::string*> path{nullptr};  // owned by the mapping's deleter
};
constexpr size_t kGuardedRanges = size_t{1} << 16;
GuardedRange g_ranges[kGuardedRanges];
std::atomic<size_t> g_next_range{0};
std::atomic<uint64_t> g_faults{0};
struct sigaction g_previous_sigbus;
uintptr_t g_page_size = 4096;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (GuardedRange& r : g_ranges) {
    const uintptr_t begin = r.begin.load(std::memory_order_acquire);
    if (begin <= 1 || addr < begin || addr >= r.end.load(std::memory_order_acquire)) continue;
    // The raw system call: no interceptor (a sanitizer's) runs in the handler.
    const long mapped = ::syscall(SYS_mmap, addr & ~(g_page_size - 1), g_page_size, PROT_READ,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (mapped == -1) break;
    r.faulted.store(true, std::memory_order_release);
    g_faults.fetch_add(1, std::memory_order_release);
    return;  // the read runs again and finds zeros
  }
  // Not a registered mapping: what would have happened without us.
  if ((g_previous_sigbus.sa_flags & SA_SIGINFO) != 0 && g_previous_sigbus.sa_sigaction != nullptr) {
    g_previous_sigbus.sa_sigaction(sig, info, context);
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
  } else {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGBUS, &dfl, nullptr);  // the faulting read runs again and ends the process
  }
}

void install_sigbus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    const long page = ::sysconf(_SC_PAGESIZE);
    if (page > 0) g_page_size = static_cast<uintptr_t>(page);
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &g_previous_sigbus);
  });
}

// Registers [data, data + size) of `path`; returns the table index, or -1
// when the table is full.
long guard_range(const void* data, uint64_t size, const std::string& path) {
  install_sigbus_handler();
  const size_t start = g_next_range.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < kGuardedRanges; ++i) {
    GuardedRange& r = g_ranges[(start + i) % kGuardedRanges];
    uintptr_t expected = 0;
    if (!r.begin.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
    r.faulted.store(false, std::memory_order_relaxed);
    r.path.store(new std::string(path), std::memory_order_relaxed);
    r.end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    r.begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    return static_cast<long>((start + i) % kGuardedRanges);
  }
  return -1;
}

// Before the range is unmapped.
void unguard_range(long index) {
  if (index < 0) return;
  GuardedRange& r = g_ranges[index];
  r.begin.store(1, std::memory_order_release);
  r.end.store(0, std::memory_order_release);
  delete r.path.exchange(nullptr, std::memory_order_acq_rel);
  r.begin.store(0, std::memory_order_release);
}

}  // namespace

void check_mapped_read(const void* data, uint64_t bytes, std::string_view what) {
  if (g_faults.load(std::memory_order_acquire) == 0) return;
  const uintptr_t first = reinterpret_cast<uintptr_t>(data);
  const uintptr_t last = first + bytes;
  for (const GuardedRange& r : g_ranges) {
    const uintptr_t begin = r.begin.load(std::memory_order_acquire);
    if (begin <= 1 || !r.faulted.load(std::memory_order_acquire)) continue;
    if (last <= begin || first >= r.end.load(std::memory_order_acquire)) continue;
    const std::string* path = r.path.load(std::memory_order_acquire);
    throw IoError(fmt::format(
        "{}: the file shrank while it was mapped (truncated or rewritten in place by another "
        "process?): reading {} found no data past its new end; the result is discarded",
        path ? *path : std::string("a mapped file"), what));
  }
}

void check_mapped_read(const Tensor& tensor, std::string_view what) {
  if (tensor.defined() && tensor.tier() == Tier::disk()) {
    check_mapped_read(tensor.data(), tensor.bytes(), what);
  }
}

namespace detail {

namespace bip = boost::interprocess;

uint64_t file_size_or_throw(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw IoError(
        fmt::format("{}: cannot open: {}", path, ec ? ec.message() : std::string("no such file")));
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw IoError(fmt::format("{}: expected a regular file", path));
  }
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw IoError(fmt::format("{}: cannot read its size: {}", path, ec.message()));
  return size;
}

std::shared_ptr<Buffer> map_file_read_only(const std::string& path) {
  const uint64_t size = file_size_or_throw(path);
  if (size == 0) {
    return std::make_shared<Buffer>(Buffer::adopt(nullptr, 0, Tier::disk(), {}));
  }
  try {
    bip::file_mapping mapping(path.c_str(), bip::read_only);
    // The size of the file that was opened, not of what the path named a
    // moment ago: a file that shrank in between is refused here, not mapped
    // past its end.
    struct stat st;
    if (::fstat(mapping.get_mapping_handle().handle, &st) != 0) {
      throw IoError(fmt::format("{}: cannot read its size: {}", path, std::strerror(errno)));
    }
    if (static_cast<uint64_t>(st.st_size) != size) {
      throw IoError(fmt::format("{}: the file changed size while it was opened ({} bytes, then {})",
                                path, size, static_cast<uint64_t>(st.st_size)));
    }
    auto region = std::make_shared<bip::mapped_region>(mapping, bip::read_only, 0, size);
    void* data = region->get_address();
    // The file that was mapped: a path renamed over later names another.
    FileOrigin origin{path, 0, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    const long guard = guard_range(data, region->get_size(), path);
    return std::make_shared<Buffer>(Buffer::adopt(
        data, region->get_size(), Tier::disk(),
        [region, guard]() mutable {
          unguard_range(guard);
          region.reset();
        },
        std::move(origin)));
  } catch (const bip::interprocess_exception& e) {
    throw IoError(fmt::format("{}: cannot map {} bytes read-only: {}", path, size, e.what()));
  }
}

}  // namespace detail
}  // namespace stowage::mmap_store
