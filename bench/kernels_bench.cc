// Benchmarks of kernels/ on a CUDA GPU (H100 targets in the comments):
//   1. NF4 GEMV (batch 1) vs fp16 cuBLASLt of the same shape, 8192x8192 and
//      28672x8192 (target: >= 3x; the weights are 4.5 bits/element vs 16),
//      timed per call and back to back (calls queued as a decode loop does).
//   2. LLM.int8 at m=4096, k=n=8192 vs fp16 cuBLASLt (target >= 1.6x): the
//      int8 tensor-core product alone, and the whole call (activation
//      quantization + product + dequantization epilogue, +outliers).
//   3. Quantize throughput (GB/s of input read + output written): NF4, int8.
//   4. NF4 GEMV (batch 1) with float32 activations, as decode steps run it, at
//      Mixtral-expert and Llama-8B shapes, against the read-only floor.
// Each case: warmup, then the median of >= 20 timed runs (cudaEvents around
// each run), rotating through enough copies of the inputs that the 50 MB L2
// cannot serve them.
//
// Reproduce: bazel build //bench:kernels_bench && ./bazel-bin/bench/kernels_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/platform.h"

#ifdef STOWAGE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "bench/read_floor.h"
#include "core/cuda_check.h"
#include "kernels/cpu_reference.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/nf4_matmul.h"
#include "kernels/quantize.h"
#endif

namespace stowage::kernels {
namespace {

#ifdef STOWAGE_WITH_CUDA

constexpr int kWarmup = 5;
constexpr int kIterations = 30;
constexpr size_t kRotateBytes = size_t{256} << 20;  // > 5x the H100's 50 MB L2

// Device memory; move-only.
class DeviceArray {
 public:
  explicit DeviceArray(size_t bytes) : bytes_(bytes) {
    STOWAGE_CUDA_TRY(cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)));
  }
  DeviceArray(DeviceArray&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// How many copies of `bytes` make the rotation defeat the L2.
int copies_for(size_t bytes) {
  return static_cast<int>(std::max<size_t>(2, (kRotateBytes + bytes - 1) / bytes));
}

// Fills device memory with pseudo-random f16 values in about [-1, 1].
void fill_f16(void* dst, size_t count, uint32_t seed) {
  std::vector<uint16_t> host(count);
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < count; ++i) {
    s = s * 1664525u + 1013904223u;
    const float v = (static_cast<float>(s >> 8) / 16777216.0f) * 2.0f - 1.0f;
    host[i] = float_to_half_bits(v);
  }
  STOWAGE_CUDA_TRY(cudaMemcpy(dst, host.data(), count * 2, cudaMemcpyHostToDevice));
}

void CUDART_CB hold_stream(void*) { std::this_thread::sleep_for(std::chrono::milliseconds(50)); }

// Median milliseconds a call of run(i), on the GPU between events, after
// kWarmup calls. Per call (calls_per_sample 1): kIterations samples of one
// call each. Back to back (calls_per_sample > 1): kBackToBackRepeats samples
// of that many calls queued between two events, as a decode loop issues them:
// the launch gap between kernels counts, and a kernel may overlap the next
// one's start where it allows that (the ring GEMV is launched as a
// programmatic dependent). A host function holding the stream for 50 ms lets
// the host enqueue every call first, so host-side call overhead stays out of
// the times (it is reported separately in *host_us when given).
constexpr int kBackToBackCalls = 24;
constexpr int kBackToBackRepeats = 15;
double median_ms(cudaStream_t stream, const std::function<void(int)>& run,
                 double* host_us = nullptr, int calls_per_sample = 1) {
  const int samples = calls_per_sample == 1 ? kIterations : kBackToBackRepeats;
  for (int i = 0; i < kWarmup; ++i) run(i);
  STOWAGE_CUDA_TRY(cudaStreamSynchronize(stream));
  std::vector<cudaEvent_t> events(2 * samples);
  for (cudaEvent_t& e : events) STOWAGE_CUDA_TRY(cudaEventCreate(&e));
  STOWAGE_CUDA_TRY(cudaLaunchHostFunc(stream, hold_stream, nullptr));
  int call = kWarmup;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < samples; ++i) {
    STOWAGE_CUDA_TRY(cudaEventRecord(events[2 * i], stream));
    for (int c = 0; c < calls_per_sample; ++c) run(call++);
    STOWAGE_CUDA_TRY(cudaEventRecord(events[2 * i + 1], stream));
  }
  const auto t1 = std::chrono::steady_clock::now();
  STOWAGE_CUDA_TRY(cudaStreamSynchronize(stream));
  if (host_us != nullptr) {
    *host_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / (call - kWarmup);
  }
  std::vector<double> times;
  for (int i = 0; i < samples; ++i) {
    float ms = 0;
    STOWAGE_CUDA_TRY(cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]));
    times.push_back(ms / calls_per_sample);
  }
  for (cudaEvent_t& e : events) cudaEventDestroy(e);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}
double back_to_back_ms(cudaStream_t stream, const std::function<void(int)>& run) {
  return median_ms(stream, run, nullptr, kBackToBackCalls);
}

// `copies` NF4 weights [n, k] (blocksize 64), with double quantization
// where `nested` (codes and nested absmax instead of absmax).
struct FourBitWeights {
  int64_t n = 0, k = 0;
  bool nested = false;
  std::vector<DeviceArray> packed, absmax, codes, nested_absmax;
  float offset = 0;

  int copies() const { return static_cast<int>(packed.size()); }
  // The bytes a GEMV reads: codes and absmax (or absmax codes).
  static size_t bytes_of(int64_t n, int64_t k, bool nested) {
    return n * k / 2 + (n * k / 64) * (nested ? 1 : 4);
  }
  size_t bytes() const { return bytes_of(n, k, nested); }
  // A batch-1 matmul over copy 0 in `dtype`, x and y as given.
  FourBitMatmulArgs args(DType dtype, void* x, void* y) const {
    FourBitMatmulArgs a;
    a.m = 1;
    a.dtype = dtype;
    a.weight.format = quant::WeightFormat::kNf4;
    a.weight.out = n;
    a.weight.in = k;
    a.weight.blocksize = 64;
    a.weight.nested_offset = offset;
    a.x = x;
    a.y = y;
    point(a, 0);
    return a;
  }
  // Points a's weight at copy c.
  void point(FourBitMatmulArgs& a, int c) const {
    a.weight.data = packed[c].get<uint8_t>();
    a.weight.absmax = nested ? nullptr : absmax[c].get<float>();
    a.weight.absmax_codes = nested ? codes[c].get<uint8_t>() : nullptr;
    a.weight.nested_absmax = nested ? nested_absmax[c].get<float>() : nullptr;
  }
  // What the read-only floor of copy c reads: the same arrays, no arithmetic.
  bench::ReadFloorArrays floor_arrays(int c) const {
    bench::ReadFloorArrays arrays;
    arrays.ptr[0] = packed[c].get();
    arrays.bytes[0] = n * k / 2;
    arrays.ptr[1] = nested ? codes[c].get() : absmax[c].get();
    arrays.bytes[1] = n * k / 64 * (nested ? 1 : 4);
    if (nested) {
      arrays.ptr[2] = nested_absmax[c].get();
      arrays.bytes[2] = (n * k / 64 + 255) / 256 * 4;
    }
    return arrays;
  }
};

// Quantizes `copies` different random weights [n, k] on the GPU.
FourBitWeights make_four_bit(int64_t n, int64_t k, int copies, int64_t blocksize, bool nested,
                             StreamRef stream, cudaStream_t cs) {
  FourBitWeights w;
  w.n = n;
  w.k = k;
  w.nested = nested;
  const int64_t numel = n * k;
  const int64_t blocks = quant_rules::block_count(numel, blocksize);
  DeviceArray source(numel * 2);
  DeviceArray scratch(quant_rules::nested_block_count(blocks) * sizeof(double));
  DeviceArray offset(sizeof(float));
  for (int c = 0; c < copies; ++c) {
    fill_f16(source.get(), numel, 100 + c);
    w.packed.emplace_back(quant_rules::packed_code_bytes(numel));
    w.absmax.emplace_back(blocks * sizeof(float));
    quantize_4bit(source.get(), DType::kF16, numel, blocksize, quant::WeightFormat::kNf4,
                  w.packed.back().get<uint8_t>(), w.absmax.back().get<float>(), stream);
    if (nested) {
      w.codes.emplace_back(blocks);
      w.nested_absmax.emplace_back(quant_rules::nested_block_count(blocks) * sizeof(float));
      double_quantize_absmax(w.absmax.back().get<float>(), blocks, offset.get<float>(),
                             w.codes.back().get<uint8_t>(), w.nested_absmax.back().get<float>(),
                             scratch.get<double>(), stream);
    }
  }
  STOWAGE_CUDA_TRY(
      cudaMemcpyAsync(&w.offset, offset.get(), sizeof(float), cudaMemcpyDeviceToHost, cs));
  STOWAGE_CUDA_TRY(cudaStreamSynchronize(cs));
  return w;
}

void bench_gemv(CublasLtContext& ctx, StreamRef stream, cudaStream_t cs) {
  std::printf("\n== 4-bit GEMV, batch 1, f16 activations (blocksize 64) vs fp16 cuBLASLt ==\n");
  std::printf(
      "per call: events around each call; back to back: %d calls between two events, as a decode\n"
      "loop runs them (the launch gap counts, the GEMV's start overlaps the kernel before it).\n"
      "read-only floor: a kernel that only streams the same bytes, launched plainly.\n",
      kBackToBackCalls);
  int device = 0, sms = 0;
  STOWAGE_CUDA_TRY(cudaGetDevice(&device));
  STOWAGE_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  std::printf("%-12s %-16s %9s %9s %8s | %9s %9s %8s | %7s\n", "shape NxK", "kernel", "call us",
              "fp16 us", "speedup", "b2b us", "fp16 us", "speedup", "host us");
  const int64_t shapes[][2] = {{8192, 8192}, {28672, 8192}, {8192, 28672}};
  for (const auto& s : shapes) {
    const int64_t n = s[0], k = s[1];
    const size_t f16_bytes = n * k * 2;
    const int fp16_copies = copies_for(f16_bytes);
    std::vector<DeviceArray> w16;
    for (int c = 0; c < fp16_copies; ++c) {
      w16.emplace_back(f16_bytes);
      fill_f16(w16.back().get(), n * k, c);
    }
    DeviceArray x(k * 2), y(n * 2);
    fill_f16(x.get(), k, 7);
    GemmArgs g;
    g.m = 1;
    g.n = n;
    g.k = k;
    g.x = x.get();
    g.y = y.get();
    const auto fp16_run = [&](int i) {
      g.w = w16[i % fp16_copies].get();
      gemm(ctx, g, stream);
    };
    const double fp16_ms = median_ms(cs, fp16_run);
    const double fp16_b2b_ms = back_to_back_ms(cs, fp16_run);
    w16.clear();
    char shape[32];
    std::snprintf(shape, sizeof(shape), "%ldx%ld", static_cast<long>(n), static_cast<long>(k));
    const auto row = [&](const char* name, const char* kernel, double ms, double b2b_ms,
                         double host_us) {
      std::printf("%-12s %-16s %9.1f %9.1f %7.2fx | %9.1f %9.1f %7.2fx |", name, kernel, ms * 1e3,
                  fp16_ms * 1e3, fp16_ms / ms, b2b_ms * 1e3, fp16_b2b_ms * 1e3,
                  fp16_b2b_ms / b2b_ms);
      if (host_us > 0) std::printf(" %7.1f", host_us);
      std::printf("\n");
    };

    for (bool nested : {false, true}) {
      const size_t q_bytes = FourBitWeights::bytes_of(n, k, nested);
      const int copies = copies_for(q_bytes);
      const FourBitWeights w = make_four_bit(n, k, copies, 64, nested, stream, cs);
      FourBitMatmulArgs a = w.args(DType::kF16, x.get(), y.get());
      const bool fused = detail::cuda_four_bit_uses_gemv(ctx, a);
      const auto run = [&](int i) {
        w.point(a, i % copies);
        four_bit_matmul(ctx, a, stream);
      };
      double host_us = 0;
      const double ms = median_ms(cs, run, &host_us);
      const double b2b_ms = back_to_back_ms(cs, run);
      row(shape,
          nested ? (fused ? "nf4+dq fused" : "nf4+dq deq+gemm")
                 : (fused ? "nf4 fused" : "nf4 deq+gemm"),
          ms, b2b_ms, host_us);
      DeviceArray sink(16);
      const auto floor_run = [&](int i) {
        STOWAGE_CUDA_TRY(
            bench::launch_read_floor(w.floor_arrays(i % copies), sink.get<unsigned>(), sms, cs));
      };
      const double floor_ms = median_ms(cs, floor_run);
      const double floor_b2b_ms = back_to_back_ms(cs, floor_run);
      row("", "  read-only floor", floor_ms, floor_b2b_ms, 0);
      std::printf("%-12s %-16s %9.0f%% of the floor per call, %.0f%% back to back; %.0f GB/s\n", "",
                  "  GEMV at", 100.0 * floor_ms / ms, 100.0 * floor_b2b_ms / b2b_ms,
                  q_bytes / (b2b_ms * 1e-3) / 1e9);
    }
    std::printf("%-12s %-16s %9.1f %9s %8s | %9.1f   (%.0f GB/s back to back)\n", "",
                "fp16 cuBLASLt", fp16_ms * 1e3, "", "", fp16_b2b_ms * 1e3,
                f16_bytes / (fp16_b2b_ms * 1e-3) / 1e9);
  }
}

// 4. The 4-bit GEMV with float32 activations (what a transformer's decode
// step runs: its activations are float32), NF4 with and without double
// quantization, at a Mixtral-8x7B expert's shapes (gate/up 14336x4096, down
// 4096x14336) and Llama-3.1-8B's (q/o 4096x4096, gate/up 14336x4096), each
// against the read-only floor of the same bytes.
void bench_gemv_f32(CublasLtContext& ctx, StreamRef stream, cudaStream_t cs) {
  std::printf("\n== 4-bit GEMV, batch 1, float32 activations (blocksize 64) vs the read floor ==\n");
  int device = 0, sms = 0;
  STOWAGE_CUDA_TRY(cudaGetDevice(&device));
  STOWAGE_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  std::printf("%-12s %-8s %9s %9s %9s %9s %8s %8s\n", "shape NxK", "kernel", "call us", "floor us",
              "b2b us", "floor us", "GB/s", "of floor");
  const int64_t shapes[][2] = {{14336, 4096}, {4096, 14336}, {4096, 4096}};
  for (const auto& s : shapes) {
    const int64_t n = s[0], k = s[1];
    std::vector<float> host_x(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) host_x[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
    DeviceArray x(k * 4), y(n * 4);
    STOWAGE_CUDA_TRY(cudaMemcpy(x.get(), host_x.data(), k * 4, cudaMemcpyHostToDevice));
    for (bool nested : {false, true}) {
      const int copies = copies_for(FourBitWeights::bytes_of(n, k, nested));
      const FourBitWeights w = make_four_bit(n, k, copies, 64, nested, stream, cs);
      FourBitMatmulArgs a = w.args(DType::kF32, x.get(), y.get());
      const auto run = [&](int i) {
        w.point(a, i % copies);
        four_bit_matmul(ctx, a, stream);
      };
      const double ms = median_ms(cs, run);
      const double b2b_ms = back_to_back_ms(cs, run);
      DeviceArray sink(16);
      const auto floor_run = [&](int i) {
        STOWAGE_CUDA_TRY(
            bench::launch_read_floor(w.floor_arrays(i % copies), sink.get<unsigned>(), sms, cs));
      };
      const double floor_ms = median_ms(cs, floor_run);
      const double floor_b2b_ms = back_to_back_ms(cs, floor_run);
      char shape[32];
      std::snprintf(shape, sizeof(shape), "%ldx%ld", static_cast<long>(n), static_cast<long>(k));
      std::printf("%-12s %-8s %9.1f %9.1f %9.1f %9.1f %8.0f %7.0f%%\n", shape,
                  nested ? "nf4+dq" : "nf4", ms * 1e3, floor_ms * 1e3, b2b_ms * 1e3,
                  floor_b2b_ms * 1e3, w.bytes() / (b2b_ms * 1e-3) / 1e9,
                  100.0 * floor_b2b_ms / b2b_ms);
    }
  }
}

void bench_int8(CublasLtContext& ctx, StreamRef stream, cudaStream_t cs) {
  const int64_t m = 4096, n = 8192, k = 8192;
  std::printf("\n== LLM.int8 m=%ld k=%ld n=%ld (f16 in/out) vs fp16 cuBLASLt ==\n",
              static_cast<long>(m), static_cast<long>(k), static_cast<long>(n));
  std::printf("%-44s %10s %10s %8s\n", "case", "median us", "TOPS", "speedup");
  const int copies = 2;
  std::vector<DeviceArray> x16, w16, cb, scb;
  for (int c = 0; c < copies; ++c) {
    x16.emplace_back(m * k * 2);
    fill_f16(x16.back().get(), m * k, 300 + c);
    w16.emplace_back(n * k * 2);
    fill_f16(w16.back().get(), n * k, 400 + c);
    cb.emplace_back(n * k);
    scb.emplace_back(n * 4);
    quantize_int8_rowwise(w16.back().get(), DType::kF16, n, k, cb.back().get<int8_t>(),
                          scb.back().get<float>(), stream);
  }
  DeviceArray y(m * n * 4), xq(m * k), acc(m * n * 4);
  const double flops = 2.0 * m * n * k;

  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.y = y.get();
  const double fp16_ms = median_ms(cs, [&](int i) {
    g.x = x16[i % copies].get();
    g.w = w16[i % copies].get();
    gemm(ctx, g, stream);
  });
  std::printf("%-44s %10.1f %10.1f %8s\n", "fp16 cuBLASLt (fp32 accumulate)", fp16_ms * 1e3,
              flops / (fp16_ms * 1e-3) / 1e12, "1.00x");

  const double s32_ms = median_ms(cs, [&](int i) {
    detail::cuda_int8_gemm_s32(ctx, xq.get<int8_t>(), cb[i % copies].get<int8_t>(),
                               acc.get<int32_t>(), m, n, k, cs);
  });
  std::printf("%-44s %10.1f %10.1f %7.2fx\n", "int8 x int8 -> int32 cuBLASLt only", s32_ms * 1e3,
              flops / (s32_ms * 1e-3) / 1e12, fp16_ms / s32_ms);

  for (float threshold : {0.0f, 6.0f}) {
    Int8MatmulArgs a;
    a.m = m;
    a.n = n;
    a.k = k;
    a.y = y.get();
    a.threshold = threshold;
    // Values are in [-1, 1]; with t = 6 give the input 4 outlier columns.
    if (threshold > 0) {
      for (int c = 0; c < copies; ++c) {
        std::vector<uint16_t> big(m, float_to_half_bits(8.0f));
        for (int64_t col : {5, 700, 4000, 8000}) {
          STOWAGE_CUDA_TRY(cudaMemcpy2D(x16[c].get<char>() + col * 2, k * 2, big.data(), 2, 2, m,
                                        cudaMemcpyHostToDevice));
        }
      }
    }
    const double ms = median_ms(cs, [&](int i) {
      a.x = x16[i % copies].get();
      a.cb = cb[i % copies].get<int8_t>();
      a.scb = scb[i % copies].get<float>();
      int8_matmul(ctx, a, stream);
    });
    std::printf("%-44s %10.1f %10.1f %7.2fx\n",
                threshold > 0 ? "int8_matmul total, t=6 (4 outlier columns)"
                              : "int8_matmul total, t=0 (quant+int8+epilogue)",
                ms * 1e3, flops / (ms * 1e-3) / 1e12, fp16_ms / ms);
    if (threshold == 0.0f) {
      // The same in row chunks of 512 (int32 accumulators kept in L2).
      setenv("STOWAGE_INT8_ROW_CHUNK", "512", 1);
      CublasLtContext unchunked;
      const double ms1 = median_ms(cs, [&](int i) {
        a.x = x16[i % copies].get();
        a.cb = cb[i % copies].get<int8_t>();
        a.scb = scb[i % copies].get<float>();
        int8_matmul(unchunked, a, stream);
      });
      unsetenv("STOWAGE_INT8_ROW_CHUNK");
      std::printf("%-44s %10.1f %10.1f %7.2fx\n", "  same, in 512-row chunks (L2-resident acc)",
                  ms1 * 1e3, flops / (ms1 * 1e-3) / 1e12, fp16_ms / ms1);
    }
  }
}

void bench_quantize(StreamRef stream, cudaStream_t cs) {
  const int64_t rows = 8192, cols = 8192, numel = rows * cols;
  std::printf("\n== Quantize throughput, %ldx%ld f16 input ==\n", static_cast<long>(rows),
              static_cast<long>(cols));
  std::printf("%-32s %10s %10s\n", "case", "median us", "GB/s");
  const int copies = copies_for(numel * 2);
  std::vector<DeviceArray> in;
  for (int c = 0; c < copies; ++c) {
    in.emplace_back(numel * 2);
    fill_f16(in.back().get(), numel, 500 + c);
  }
  DeviceArray packed(numel / 2), absmax(numel / 64 * 4), cb(numel), scb(rows * 4);
  const double nf4_ms = median_ms(cs, [&](int i) {
    quantize_4bit(in[i % copies].get(), DType::kF16, numel, 64, quant::WeightFormat::kNf4,
                  packed.get<uint8_t>(), absmax.get<float>(), stream);
  });
  const double nf4_bytes = numel * 2.0 + numel / 2.0 + numel / 64 * 4.0;
  std::printf("%-32s %10.1f %10.0f\n", "NF4 blocksize 64", nf4_ms * 1e3,
              nf4_bytes / (nf4_ms * 1e-3) / 1e9);
  const double i8_ms = median_ms(cs, [&](int i) {
    quantize_int8_rowwise(in[i % copies].get(), DType::kF16, rows, cols, cb.get<int8_t>(),
                          scb.get<float>(), stream);
  });
  const double i8_bytes = numel * 2.0 + numel + rows * 4.0;
  std::printf("%-32s %10.1f %10.0f\n", "int8 row-wise", i8_ms * 1e3,
              i8_bytes / (i8_ms * 1e-3) / 1e9);
}

#endif  // STOWAGE_WITH_CUDA

int run(const std::string& only) {
#ifndef STOWAGE_WITH_CUDA
  (void)only;
  std::printf("kernels_bench: built without CUDA; nothing to measure\n");
  return 0;
#else
  if (!cuda_device_available()) {
    std::printf("kernels_bench: no CUDA GPU visible; nothing to measure\n");
    return 0;
  }
  auto platform = Platform::create(DeviceChoice::kCuda);
  Accelerator& gpu = platform->accelerator(0);
  gpu.make_current();
  Stream stream = gpu.create_stream();
  const cudaStream_t cs = static_cast<cudaStream_t>(stream.ref().native_handle());
  std::printf(
      "kernels_bench on %s; median of %d runs after %d warmup, inputs rotated over >= %zu "
      "MiB\n",
      gpu.description().c_str(), kIterations, kWarmup, kRotateBytes >> 20);
  CublasLtContext ctx;
  if (only.empty() || only == "gemv") bench_gemv(ctx, stream.ref(), cs);
  if (only.empty() || only == "gemv32") bench_gemv_f32(ctx, stream.ref(), cs);
  if (only.empty() || only == "int8") bench_int8(ctx, stream.ref(), cs);
  if (only.empty() || only == "quantize") bench_quantize(stream.ref(), cs);
  std::printf(
      "\nreproduce: bazel build //bench:kernels_bench && ./bazel-bin/bench/kernels_bench\n");
  return 0;
#endif
}

}  // namespace
}  // namespace stowage::kernels

// Usage: kernels_bench [gemv|gemv32|int8|quantize]  (default: all)
int main(int argc, char** argv) {
  // Line-buffered, so a run stopped by a time limit keeps what it measured.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return stowage::kernels::run(argc > 1 ? argv[1] : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernels_bench: %s\n", e.what());
    return 1;
  }
}
