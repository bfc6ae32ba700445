// Fetch throughput of the offload manager: modules homed on pinned host
// streamed through the slot pool, copy-only and with a compute stand-in
// (device memset of a scratch buffer), at prefetch depth 0 and 2. Prints
// medians, effective GiB/s, stall time, prefetch hits and the ratio of the
// depth-0 time to the depth-2 time. With --disk-stagers, the modules are
// homed on the disk tier (a folder DiskStore under $TMPDIR) and read through
// each named DiskStager (memcpy, file_read), warm or, with --cold 1, with the
// files' pages dropped (posix_fadvise DONTNEED) before every pass.
//
// Reproduce: bazel run -c opt //bench:offload_fetch_bench -- [--device auto|cuda|sim]
//            [--module-mib N] [--modules N] [--iters N] [--compute-fills N]
//            [--disk-stagers memcpy,file_read] [--cold 0|1]
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/platform.h"
#include "offload/offload_manager.h"

namespace stowage {
namespace {

struct Config {
  DeviceChoice device = DeviceChoice::kAuto;
  uint64_t module_bytes = 0;  // 0: 64 MiB on CUDA, 4 MiB on sim
  int modules = 16;
  int iters = 5;
  int compute_fills = -1;  // -1: 96 on CUDA (about the copy time of a module), 1 on sim
  std::vector<std::string> disk_stagers;  // empty: modules on pinned host
  bool cold = false;
};

DiskStagerKind parse_stager(const std::string& name) {
  if (name == "memcpy") return DiskStagerKind::kMemcpy;
  if (name == "file_read") return DiskStagerKind::kFileRead;
  throw InvalidInputError(fmt::format("unknown disk stager '{}' (memcpy, file_read)", name));
}

// Drops the page cache of every disk-tier file the manager's records map:
// unmaps the pages from this process first (a page mapped by the memcpy
// stager's reads would otherwise stay cached), then drops them.
void drop_disk_pages(const OffloadManager& manager) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  for (RecordId id = 0; id < manager.table().size(); ++id) {
    const Tensor t = manager.table().copy_on(id, Tier::disk());
    const FileOrigin* origin = t.storage()->file_origin();
    if (origin == nullptr) continue;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(t.storage()->data()) / page * page;
    const uintptr_t end = reinterpret_cast<uintptr_t>(t.storage()->data()) + t.storage()->size();
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
    const int fd = ::open(origin->path.c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct Result {
  double median_s = 0;
  OffloadCounters counters;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// `stager`: null for modules on pinned host, else home them on disk.
Result run(Platform& platform, const Config& config, int depth, int compute_fills,
           const std::string* stager = nullptr) {
  OffloadOptions options;
  options.prefetch_depth = depth;
  const Tier home = stager ? Tier::disk() : Tier::pinned_host();
  if (stager != nullptr) {
    const char* tmp = std::getenv("TMPDIR");
    options.disk_store = make_folder_disk_store(
        fmt::format("{}/offload_fetch_bench.{}", tmp ? tmp : "/tmp", ::getpid()));
    options.disk_stager_kind = parse_stager(*stager);
  }
  OffloadManager manager(platform, options);
  std::vector<std::string> order;
  for (int i = 0; i < config.modules; ++i) {
    const std::string module = "layers." + std::to_string(i);
    Tensor w = Tensor::empty(manager.memory(Tier::pinned_host()), DType::kU8,
                             Shape{static_cast<int64_t>(config.module_bytes)});
    std::memset(w.data(), i, w.bytes());
    manager.place(module, "weight", TensorRole::kWeight, w, home);
    order.push_back(module);
  }
  manager.declare_execution_order(order);
  manager.dispatch();
  const Tier acc = platform.accelerator(0).tier();
  Buffer scratch(manager.memory(acc), config.module_bytes);
  StreamRef compute = manager.compute_stream(acc);
  std::vector<double> seconds;
  const OffloadCounters before = manager.counters();
  for (int it = 0; it < config.iters + 1; ++it) {
    if (stager != nullptr && config.cold) {
      manager.synchronize();
      drop_disk_pages(manager);
    }
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& module : order) {
      manager.begin_forward(module);
      for (int f = 0; f < compute_fills; ++f) compute.fill_zero(scratch.data(), scratch.size());
      manager.end_forward(module);
    }
    compute.synchronize();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (it > 0) seconds.push_back(s);  // the first pass warms up
  }
  manager.synchronize();
  Result r;
  r.median_s = median(seconds);
  r.counters = manager.counters();
  r.counters.prefetch_hits -= before.prefetch_hits;
  r.counters.prefetch_misses -= before.prefetch_misses;
  r.counters.stall_ms -= before.stall_ms;
  return r;
}

int main_impl(int argc, char** argv) {
  Config config;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--device") {
      config.device = parse_device_choice(value);
    } else if (flag == "--module-mib") {
      config.module_bytes = std::stoull(value) << 20;
    } else if (flag == "--modules") {
      config.modules = std::stoi(value);
    } else if (flag == "--compute-fills") {
      config.compute_fills = std::stoi(value);
    } else if (flag == "--iters") {
      config.iters = std::stoi(value);
    } else if (flag == "--disk-stagers") {
      for (size_t b = 0; b <= value.size();) {
        size_t e = value.find(',', b);
        if (e == std::string::npos) e = value.size();
        config.disk_stagers.push_back(value.substr(b, e - b));
        b = e + 1;
      }
    } else if (flag == "--cold") {
      config.cold = value == "1";
    } else {
      throw InvalidInputError(fmt::format("unknown flag {}", flag));
    }
  }
  SimOptions sim;
  sim.copy_bytes_per_second = 8e9;  // a modest PCIe-like link on sim
  auto platform = Platform::create(config.device, sim);
  const bool cuda = platform->backend() == Backend::kCuda;
  if (config.module_bytes == 0) config.module_bytes = cuda ? (64ull << 20) : (4ull << 20);
  const double gib = static_cast<double>(config.module_bytes) * config.modules / (1ull << 30);
  fmt::print("offload fetch bench on {}: {} modules x {} MiB from {}, median of {}\n",
             platform->accelerator(0).description(), config.modules, config.module_bytes >> 20,
             config.disk_stagers.empty() ? "pinned host" : "disk", config.iters);
  const int fills = config.compute_fills >= 0 ? config.compute_fills : (cuda ? 96 : 1);
  if (!config.disk_stagers.empty()) {
    fmt::print("  modules on disk, {}, depth 2, copy only; interleaved passes, median of {}\n",
               config.cold ? "cold (pages dropped before each pass)" : "warm", config.iters);
    std::map<std::string, std::vector<double>> seconds;
    for (int round = 0; round < 3; ++round) {  // interleaved, so drift hits all alike
      for (const std::string& stager : config.disk_stagers) {
        seconds[stager].push_back(run(*platform, config, 2, 0, &stager).median_s);
      }
    }
    const double first = median(seconds[config.disk_stagers[0]]);
    for (const std::string& stager : config.disk_stagers) {
      const double s = median(seconds[stager]);
      fmt::print("  disk stager {:<10} {:8.2f} ms/pass  {:7.2f} GiB/s  ({:.2f}x of {})\n", stager,
                 s * 1e3, gib / s, first / s, config.disk_stagers[0]);
    }
    fmt::print(
        "reproduce: bazel run -c opt //bench:offload_fetch_bench -- --device {} --module-mib {} "
        "--modules {} --iters {} --disk-stagers {} --cold {}\n",
        cuda ? "cuda" : "sim", config.module_bytes >> 20, config.modules, config.iters,
        fmt::join(config.disk_stagers, ","), config.cold ? 1 : 0);
    return 0;
  }
  for (int compute : {0, fills}) {
    Result d0 = run(*platform, config, 0, compute);
    Result d2 = run(*platform, config, 2, compute);
    for (const auto& [depth, r] : {std::pair<int, const Result&>{0, d0}, {2, d2}}) {
      fmt::print(
          "  {:<22} depth {}: {:8.2f} ms/pass  {:7.2f} GiB/s effective  stall {:8.2f} ms  "
          "hits {} misses {}\n",
          compute == 0 ? "copy only" : fmt::format("with compute ({} fills)", compute), depth,
          r.median_s * 1e3, gib / r.median_s, r.counters.stall_ms / (config.iters + 1),
          r.counters.prefetch_hits, r.counters.prefetch_misses);
    }
    fmt::print("  ratio depth0/depth2 {:.2f}\n", d0.median_s / d2.median_s);
  }
  fmt::print(
      "reproduce: bazel run -c opt //bench:offload_fetch_bench -- --device {} "
      "--module-mib {} --modules {} --iters {} --compute-fills {}\n",
      cuda ? "cuda" : "sim", config.module_bytes >> 20, config.modules, config.iters, fills);
  return 0;
}

}  // namespace
}  // namespace stowage

int main(int argc, char** argv) {
  try {
    return stowage::main_impl(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "offload_fetch_bench: {}\n", e.what());
    return 1;
  }
}
