// hostcompute::HostGemv against the machine's own multi-threaded host memory
// read rate, with the same thread count: for each team size and each weight
// format at batch 1 on 8192x8192 and 4096x14336 layers (and batches 2, 4, 8
// at the largest team), each sample first
// reads the layers' bytes with a plain streaming XOR, then sweeps copies of
// the layer through the kernel (the copies fill --gib, far more than the
// caches, as a decode step reads a model's layers, so no weight byte comes
// from the cache). Prints the effective GB/s (weight bytes with their scales
// / time per call), the read rate, and their ratio taken sample by sample
// (both see the same moment's load on the machine); medians of --samples.
// Each team size also reports the fixed cost of a call and the kernels'
// compute rates with the weight in the L2 cache (what the decode leaves to
// spare over the read rate).
//   bazel run //bench:host_gemv_bench -- [--first-threads 1] [--threads N]
//       [--samples 5] [--gib 2] [--isa avx512|avx2|scalar] [--in-cache 1 (only those)]
//       [--pages huge|4k|both (the layers on huge pages, as the runtime's pinned
//       memory holds large weights, on 4 KiB pages, or both side by side)]
#include <fmt/format.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/huge_page_memory.h"
#include "hostcompute/host_gemv.h"
#include "hostcompute/worker_team.h"

namespace stowage::hostcompute {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int first_threads = 1;  // team sizes first_threads .. threads
  int samples = 5;
  double gib = 2.0;
  std::string pages = "huge";  // huge, 4k or both (--pages)
  bool in_cache = false;       // only the in-cache compute rates
  std::optional<HostIsa> isa;  // default: the best this CPU runs
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

// The 1-minute load average: other work on the machine lowers both rates.
std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  in >> first;
  return first.empty() ? "unknown" : first;
}

// A buffer of `bytes` (a multiple of 4096), 4096-aligned, filled by `fill`;
// with `huge`, a HugePageMapping as the runtime's pinned host memory gives
// large weights (core/huge_page_memory.h), else 4 KiB pages.
struct PageBuffer {
  explicit PageBuffer(uint64_t bytes, bool huge = false) : size(bytes) {
    if (huge) {
      mapping = HugePageMapping(bytes);
      data = static_cast<uint8_t*>(mapping.data());
      return;
    }
    data = static_cast<uint8_t*>(std::aligned_alloc(4096, bytes));
    if (data == nullptr) throw std::bad_alloc();
  }
  ~PageBuffer() {
    if (mapping.data() == nullptr) std::free(data);
  }
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  HugePageMapping mapping;
  uint8_t* data;
  uint64_t size;
};

uint64_t xorshift(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// Fills words [begin, end) of buf from a per-range seed; 16-bit values are
// kept finite and normal so no denormal slows the arithmetic.
void fill(uint64_t* words, uint64_t count, bool sixteen_bit, WorkerTeam& team) {
  team.run([&](int member) {
    const uint64_t begin = count * member / team.size(), end = count * (member + 1) / team.size();
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (begin + 1);
    for (uint64_t i = begin; i < end; ++i) {
      uint64_t v = xorshift(s);
      if (sixteen_bit) v = (v & 0x83ff83ff83ff83ffull) | 0x3c003c003c003c00ull;
      words[i] = v;
    }
  });
}

// Seconds for the team to read bytes [0, bytes) of `buffer` once: a streaming
// XOR, each member its contiguous share.
double read_seconds(const PageBuffer& buffer, uint64_t bytes, WorkerTeam& team) {
  std::vector<uint64_t> sinks(static_cast<size_t>(team.size()) * 8);
  const auto t0 = Clock::now();
  team.run([&](int member) {
    const uint64_t chunks = bytes / 128;
    const uint64_t begin = chunks * member / team.size();
    const uint64_t end = chunks * (member + 1) / team.size();
#if defined(__x86_64__)
    const __m128i* p = reinterpret_cast<const __m128i*>(buffer.data);
    __m128i a[8] = {};
    for (uint64_t c = begin; c < end; ++c) {
      for (int j = 0; j < 8; ++j) a[j] = _mm_xor_si128(a[j], _mm_load_si128(p + c * 8 + j));
    }
    for (int j = 1; j < 8; ++j) a[0] = _mm_xor_si128(a[0], a[j]);
    sinks[member * 8] = static_cast<uint64_t>(_mm_cvtsi128_si64(a[0]));
#else
    const uint64_t* p = reinterpret_cast<const uint64_t*>(buffer.data);
    uint64_t x = 0;
    for (uint64_t i = begin * 16; i < end * 16; ++i) x ^= p[i];
    sinks[member * 8] = x;
#endif
  });
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

enum class Layout { kBF16, kF16, kInt8, kNf4, kNf4Double, kFp4 };

struct Format {
  const char* name;
  Layout layout;
};

constexpr Format kFormats[] = {{"bf16", Layout::kBF16},        {"f16", Layout::kF16},
                               {"int8", Layout::kInt8},        {"nf4", Layout::kNf4},
                               {"nf4-dq", Layout::kNf4Double}, {"fp4", Layout::kFp4}};

// `copies` layers of one format laid out one after another in `weights`
// (the codes) and `state` (scales, absmax, nested absmax).
struct LayerSet {
  std::vector<quant::WeightView> layers;
  uint64_t code_bytes = 0;       // per layer, in `weights`
  uint64_t bytes_per_layer = 0;  // with the scales: what a call reads
};

LayerSet make_layers(Layout layout, int64_t n, int64_t k, PageBuffer& weights,
                     std::vector<float>& state, std::vector<uint8_t>& codes) {
  quant::WeightView w;
  w.out = n;
  w.in = k;
  uint64_t code_bytes = 0;
  const int64_t blocks = n * k / 64;
  switch (layout) {
    case Layout::kBF16:
    case Layout::kF16:
      w.dtype = layout == Layout::kBF16 ? DType::kBF16 : DType::kF16;
      code_bytes = static_cast<uint64_t>(n * k) * 2;
      break;
    case Layout::kInt8:
      w.format = quant::WeightFormat::kInt8;
      w.dtype = DType::kI8;
      code_bytes = static_cast<uint64_t>(n * k);
      break;
    case Layout::kNf4:
    case Layout::kNf4Double:
    case Layout::kFp4:
      w.format = layout == Layout::kFp4 ? quant::WeightFormat::kFp4 : quant::WeightFormat::kNf4;
      w.blocksize = 64;
      code_bytes = static_cast<uint64_t>(n * k) / 2;
      break;
  }
  LayerSet set;
  const int copies = static_cast<int>(weights.size / code_bytes);
  // Per layer: SCB (n floats) or absmax (blocks floats) or nested absmax.
  const int64_t state_floats =
      layout == Layout::kInt8 ? n : (layout == Layout::kNf4Double ? (blocks + 255) / 256 : blocks);
  state.assign(static_cast<size_t>(state_floats) * copies, 0.5f);
  codes.assign(layout == Layout::kNf4Double ? static_cast<size_t>(blocks) * copies : 0, 200);
  for (int c = 0; c < copies; ++c) {
    quant::WeightView layer = w;
    layer.data = weights.data + c * code_bytes;
    float* s = state.data() + static_cast<size_t>(state_floats) * c;
    if (layout == Layout::kInt8) layer.scb = s;
    if (layout == Layout::kNf4 || layout == Layout::kFp4) layer.absmax = s;
    if (layout == Layout::kNf4Double) {
      layer.absmax_codes = codes.data() + static_cast<size_t>(blocks) * c;
      layer.nested_absmax = s;
    }
    set.layers.push_back(layer);
  }
  set.code_bytes = code_bytes;
  set.bytes_per_layer = set.layers[0].bytes();
  return set;
}

struct Measurement {
  double seconds_per_layer;  // median
  double rate;               // weight bytes per second, median
  double read_rate;          // the plain read of the same bytes, median
  double ratio;              // median over samples of rate / read_rate
};

// Activations x [m, k] (0.01 each) and outputs y [m, n], with a call's
// arguments pointing at them (the weight still to be set).
struct Batch {
  Batch(int64_t m, int64_t n, int64_t k)
      : x(static_cast<size_t>(m * k), 0.01f), y(static_cast<size_t>(m * n)) {
    args.m = m;
    args.weight.out = n;
    args.weight.in = k;
    args.x = x.data();
    args.y = y.data();
  }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  std::vector<float> x, y;
  HostLinearArgs args;
};

// Each sample reads the layers' bytes with the plain XOR, then sweeps every
// layer through the kernel at batch m: both see the same bytes and the same
// moment's load on the machine, and their ratio is taken sample by sample.
Measurement measure(HostGemv& gemv, WorkerTeam& team, const PageBuffer& buffer, const LayerSet& set,
                    int64_t m, int64_t n, int64_t k, int samples) {
  Batch batch(m, n, k);
  HostLinearArgs& args = batch.args;
  const uint64_t swept = set.code_bytes * set.layers.size() / 128 * 128;
  std::vector<double> per_layer, rates, reads, ratios;
  for (int s = 0; s <= samples; ++s) {
    const double read = static_cast<double>(swept) / read_seconds(buffer, swept, team);
    const auto t0 = Clock::now();
    for (const quant::WeightView& w : set.layers) {
      args.weight = w;
      gemv.linear(args);
    }
    const double seconds =
        std::chrono::duration<double>(Clock::now() - t0).count() / set.layers.size();
    if (s == 0) continue;  // warm-up
    const double rate = static_cast<double>(set.bytes_per_layer) / seconds;
    per_layer.push_back(seconds);
    rates.push_back(rate);
    reads.push_back(read);
    ratios.push_back(rate / read);
  }
  return {median(per_layer), median(rates), median(reads), median(ratios)};
}

// The kernel's compute rate with the weight in the L2 cache: one layer of
// about 512 KiB of codes (n rows of k) through the kernel again and again.
// Against the read rate this says how much the decode leaves to spare.
double in_cache_rate(HostGemv& gemv, WorkerTeam& team, Layout layout, int64_t m, int64_t k,
                     int samples) {
  const uint64_t bytes_per_row = layout == Layout::kBF16 || layout == Layout::kF16
                                     ? 2 * k
                                     : (layout == Layout::kInt8 ? k : k / 2);
  const int64_t n = std::max<int64_t>(64, (512 << 10) / bytes_per_row / 64 * 64);
  PageBuffer buffer((n * bytes_per_row + 4095) / 4096 * 4096);
  fill(reinterpret_cast<uint64_t*>(buffer.data), buffer.size / 8,
       layout == Layout::kBF16 || layout == Layout::kF16, team);
  std::vector<float> state;
  std::vector<uint8_t> codes;
  const LayerSet set = make_layers(layout, n, k, buffer, state, codes);
  Batch batch(m, n, k);
  HostLinearArgs& args = batch.args;
  args.weight = set.layers[0];
  std::vector<double> rates;
  for (int s = 0; s <= samples; ++s) {
    int calls = 0;
    const auto t0 = Clock::now();
    double seconds = 0.0;
    do {
      gemv.linear(args);
      ++calls;
      seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (seconds < 0.05);
    if (s > 0) rates.push_back(static_cast<double>(set.bytes_per_layer) * calls / seconds);
  }
  return median(rates);
}

// Seconds a call takes at m = 1 for an nf4 layer of `rows` rows of k = 14336
// inputs with its weight in the cache: the fastest sample (other work on the
// machine only adds to a call's time).
double small_call_seconds(HostGemv& gemv, int64_t rows, int samples) {
  constexpr int64_t kInputs = 14336;
  std::vector<float> absmax(rows * kInputs / 64, 0.5f);
  std::vector<uint8_t> codes(rows * kInputs / 2, 0x5a);
  Batch batch(1, rows, kInputs);
  HostLinearArgs& args = batch.args;
  args.weight.format = quant::WeightFormat::kNf4;
  args.weight.data = codes.data();
  args.weight.absmax = absmax.data();
  std::vector<double> per_call;
  for (int s = 0; s <= samples; ++s) {
    constexpr int kCalls = 1000;
    const auto t0 = Clock::now();
    for (int c = 0; c < kCalls; ++c) gemv.linear(args);
    if (s > 0) {
      per_call.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / kCalls);
    }
  }
  return *std::min_element(per_call.begin(), per_call.end());
}

// The fixed cost of a call at m = 1 and k = 14336 (the checks, the job's
// setup, reordering x for the 4-bit decoder, the team's wake-up and join):
// a call on 16 rows less the extra time 16 more rows take.
double call_overhead_seconds(HostGemv& gemv, int samples) {
  const double t16 = small_call_seconds(gemv, 16, samples);
  const double t32 = small_call_seconds(gemv, 32, samples);
  return std::max(0.0, 2 * t16 - t32);
}

int run(const Options& options) {
  fmt::print("host_gemv_bench: {}, {} hardware threads, kernels {}, load average {}\n", cpu_model(),
             std::thread::hardware_concurrency(),
             host_isa_name(options.isa.value_or(best_host_isa())), load_average());
  fmt::print(
      "each sample: a streaming XOR over the layers' bytes, then every copy through the kernel "
      "(copies fill {:.1f} GiB); medians of {} samples, the ratio taken per sample; GB = 1e9 "
      "bytes\n",
      options.gib, options.samples);
  const uint64_t bytes = static_cast<uint64_t>(options.gib * (1ull << 30)) / 4096 * 4096;
  // The layers on huge pages, 4 KiB pages, or both side by side.
  std::vector<std::pair<std::string, std::unique_ptr<PageBuffer>>> buffers;
  for (const char* pages : {"huge", "4k"}) {
    if (options.pages == pages || options.pages == "both") {
      buffers.emplace_back(pages, std::make_unique<PageBuffer>(bytes, std::string(pages) == "huge"));
    }
  }
  if (buffers.empty()) {
    fmt::print(stderr, "host_gemv_bench: --pages takes huge, 4k or both, not '{}'\n", options.pages);
    return 2;
  }
  std::vector<float> state;
  std::vector<uint8_t> codes;
  struct Shape {
    int64_t n, k;
  };
  const Shape shapes[] = {{8192, 8192}, {4096, 14336}};
  auto report = [](const std::string& what, const Measurement& r) {
    fmt::print("  {}: {:8.1f} us/layer {:6.1f} GB/s, read {:6.1f} GB/s: {:.2f}x read rate\n", what,
               r.seconds_per_layer * 1e6, r.rate / 1e9, r.read_rate / 1e9, r.ratio);
  };
  for (int threads = options.first_threads; threads <= options.threads; ++threads) {
    WorkerTeam team(threads);
    HostGemv gemv(threads, options.isa);
    fmt::print("\nthreads {}:\n", threads);
    fmt::print("  fixed cost of a call at m=1, k=14336 (nf4, 16 and 32 rows in cache): {:.1f} us\n",
               call_overhead_seconds(gemv, options.samples) * 1e6);
    for (const Format& format : kFormats) {
      std::string line;
      for (int64_t m : {1, 2, 4, 8}) {
        line +=
            fmt::format(" m={} {:5.1f}", m,
                        in_cache_rate(gemv, team, format.layout, m, 14336, options.samples) / 1e9);
      }
      fmt::print("  in cache, k=14336 {:>6} GB/s of weight:{}\n", format.name, line);
    }
    if (options.in_cache) continue;
    for (const Shape& shape : shapes) {
      for (const Format& format : kFormats) {
        for (const auto& [pages, page_buffer] : buffers) {
          PageBuffer& buffer = *page_buffer;
          const bool sixteen = format.layout == Layout::kBF16 || format.layout == Layout::kF16;
          fill(reinterpret_cast<uint64_t*>(buffer.data), bytes / 8, sixteen, team);
          const LayerSet set = make_layers(format.layout, shape.n, shape.k, buffer, state, codes);
          report(fmt::format("m=1 {:>5}x{:<5} {:>6} ({:>2} copies, {:>4} pages)", shape.n,
                             shape.k, format.name, set.layers.size(), pages),
                 measure(gemv, team, buffer, set, 1, shape.n, shape.k, options.samples));
        }
      }
    }
    PageBuffer& buffer = *buffers.front().second;
    if (threads == options.threads) {
      // Small batches: the weight read once for all m rows.
      for (const Format& format : kFormats) {
        if (format.layout == Layout::kF16 || format.layout == Layout::kNf4Double) continue;
        fill(reinterpret_cast<uint64_t*>(buffer.data), bytes / 8, format.layout == Layout::kBF16,
             team);
        const LayerSet set = make_layers(format.layout, 8192, 8192, buffer, state, codes);
        for (int64_t m : {2, 4, 8}) {
          report(fmt::format("m={} 8192x8192  {:>6} ({:>2} copies)", m, format.name,
                             set.layers.size()),
                 measure(gemv, team, buffer, set, m, 8192, 8192, options.samples));
        }
      }
    }
  }
  fmt::print(
      "\nreproduce: bazel run //bench:host_gemv_bench -- --first-threads {} --threads {} "
      "--samples {} --gib {} --pages {}{}{}\n",
      options.first_threads, options.threads, options.samples, options.gib, options.pages,
      options.in_cache ? " --in-cache 1" : "",
      options.isa ? std::string(" --isa ") + (*options.isa == HostIsa::kAvx2     ? "avx2"
                                              : *options.isa == HostIsa::kScalar ? "scalar"
                                                                                 : "avx512")
                  : std::string());
  return 0;
}

}  // namespace
}  // namespace stowage::hostcompute

int main(int argc, char** argv) {
  stowage::hostcompute::Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") options.threads = std::stoi(argv[i + 1]);
    if (flag == "--first-threads") options.first_threads = std::stoi(argv[i + 1]);
    if (flag == "--samples") options.samples = std::stoi(argv[i + 1]);
    if (flag == "--gib") options.gib = std::stod(argv[i + 1]);
    if (flag == "--in-cache") options.in_cache = std::string(argv[i + 1]) == "1";
    if (flag == "--pages") options.pages = argv[i + 1];
    if (flag == "--isa") {
      const std::string isa = argv[i + 1];
      options.isa = isa == "scalar" ? stowage::hostcompute::HostIsa::kScalar
                                    : (isa == "avx2" ? stowage::hostcompute::HostIsa::kAvx2
                                                     : stowage::hostcompute::HostIsa::kAvx512);
    }
  }
  return stowage::hostcompute::run(options);
}
