#include <cblas.h>
#include <fmt/format.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <optional>
#include <vector>

#include "core/error.h"
#include "hostcompute/host_gemv.h"
#include "kernels/transformer_ops.h"
#include "models/linear.h"
#include "quant/weight_layout.h"

namespace stowage::models {

void LinearKernels::linear_group(StreamRef stream, const LinearWeights* const* w,
                                 const TensorView* y, int count, const TensorView& x) {
  for (int i = 0; i < count; ++i) linear(stream, *w[i], x, y[i], false);
}

void LinearKernels::swiglu_linear(StreamRef stream, const LinearWeights& gate,
                                  const LinearWeights& up, const TensorView& x,
                                  const TensorView& gate_out, const TensorView& up_out,
                                  const TensorView& act) {
  // gate and up as a group: kernels that run a group at once do so here too.
  const LinearWeights* w[2] = {&gate, &up};
  const TensorView y[2] = {gate_out, up_out};
  linear_group(stream, w, y, 2, x);
  const int64_t rows = x.shape()[0], cols = gate.out_features;
  kernels::swiglu({rows, cols, gate_out.data_as<float>(), cols, up_out.data_as<float>(), cols,
                   act.data_as<float>()},
                  stream);
}

namespace {
// kernels::rms_norm of x [batch, in] into normed.
void rms_norm_into(StreamRef stream, const LinearKernels::InputNorm& norm, const TensorView& x,
                   const TensorView& normed) {
  STOWAGE_EXPECTS(x.dtype() == DType::kF32 && x.shape().rank() == 2 &&
                      normed.dtype() == DType::kF32 && normed.shape() == x.shape() &&
                      normed.data() != x.data(),
                  InvalidInputError,
                  "input RMSNorm: expected float32 [batch, in] input and a separate output of "
                  "its shape, found {} {} and {} {}",
                  short_name(x.dtype()), x.shape().to_string(), short_name(normed.dtype()),
                  normed.shape().to_string());
  kernels::rms_norm({x.shape()[0], x.shape()[1], x.data_as<float>(), norm.weight, norm.dtype,
                     norm.eps, normed.data_as<float>()},
                    stream);
}
}  // namespace

void LinearKernels::norm_linear_group(StreamRef stream, const InputNorm& norm, const TensorView& x,
                                      const TensorView& normed, const LinearWeights* const* w,
                                      const TensorView* y, int count) {
  rms_norm_into(stream, norm, x, normed);
  linear_group(stream, w, y, count, normed);
}

void LinearKernels::norm_swiglu_linear(StreamRef stream, const InputNorm& norm,
                                       const TensorView& x, const TensorView& normed,
                                       const LinearWeights& gate, const LinearWeights& up,
                                       const TensorView& gate_out, const TensorView& up_out,
                                       const TensorView& act) {
  rms_norm_into(stream, norm, x, normed);
  swiglu_linear(stream, gate, up, normed, gate_out, up_out, act);
}

void LinearKernels::linear_add(StreamRef stream, const LinearWeights& w, const TensorView& x,
                               const TensorView& tmp, const TensorView& h) {
  linear(stream, w, x, tmp, false);
  kernels::add_in_place(h.data_as<float>(), tmp.data_as<float>(),
                        x.shape()[0] * w.out_features, stream);
}

quant::WeightView LinearWeights::view() const {
  quant::WeightView v;
  v.format = format;
  v.out = out_features;
  v.in = in_features;
  v.dtype = weight.dtype();
  v.data = weight.data();
  v.scb = scb.data_as<const float>();
  v.blocksize = blocksize;
  v.quant_map = quant_map.data_as<const float>();
  if (double_quant) {
    v.absmax_codes = absmax.data_as<const uint8_t>();
    v.nested_absmax = nested_absmax.data_as<const float>();
    v.nested_blocksize = nested_blocksize;
    v.nested_offset = nested_offset;
    v.nested_quant_map = nested_quant_map.data_as<const float>();
  } else {
    v.absmax = absmax.data_as<const float>();
  }
  return v;
}

void check_linear_arguments(const LinearWeights& w, const TensorView& x, const TensorView& y,
                            const std::string& where) {
  STOWAGE_EXPECTS(
      x.dtype() == DType::kF32 && x.shape().rank() == 2 && x.shape()[1] == w.in_features,
      InvalidInputError, "{}: expected input float32 [batch, {}], found {} {}", where,
      w.in_features, short_name(x.dtype()), x.shape().to_string());
  STOWAGE_EXPECTS(y.dtype() == DType::kF32 && y.shape().rank() == 2 &&
                      y.shape()[0] == x.shape()[0] && y.shape()[1] == w.out_features,
                  InvalidInputError, "{}: expected output float32 [{}, {}], found {} {}", where,
                  x.shape()[0], w.out_features, short_name(y.dtype()), y.shape().to_string());
  const quant::WeightView view = w.view();
  view.validate(where);
  const uint64_t n = static_cast<uint64_t>(view.numel());
  switch (w.format) {
    case quant::WeightFormat::kFloat:
      STOWAGE_EXPECTS(is_floating_point(w.weight.dtype()) && w.weight.numel() == n,
                      InvalidInputError, "{}: expected a float weight of {} elements, found {} {}",
                      where, n, short_name(w.weight.dtype()), w.weight.shape().to_string());
      break;
    case quant::WeightFormat::kInt8:
      STOWAGE_EXPECTS(w.weight.dtype() == DType::kI8 && w.weight.numel() == n, InvalidInputError,
                      "{}: expected an I8 weight of {} elements, found {} {}", where, n,
                      short_name(w.weight.dtype()), w.weight.shape().to_string());
      STOWAGE_EXPECTS(
          w.scb.dtype() == DType::kF32 && w.scb.numel() == static_cast<uint64_t>(w.out_features),
          InvalidInputError, "{}: expected SCB float32 [{}], found {} {}", where, w.out_features,
          short_name(w.scb.dtype()), w.scb.shape().to_string());
      break;
    case quant::WeightFormat::kNf4:
    case quant::WeightFormat::kFp4: {
      const uint64_t packed = static_cast<uint64_t>(quant::packed_code_bytes(n));
      STOWAGE_EXPECTS(w.weight.bytes() >= packed, InvalidInputError,
                      "{}: expected at least {} bytes of packed 4-bit codes, found {}", where,
                      packed, w.weight.bytes());
      const uint64_t blocks = static_cast<uint64_t>(view.block_count());
      STOWAGE_EXPECTS(w.absmax.numel() == blocks &&
                          w.absmax.dtype() == (w.double_quant ? DType::kU8 : DType::kF32),
                      InvalidInputError, "{}: expected absmax {} [{}], found {} {}", where,
                      w.double_quant ? "U8" : "F32", blocks, short_name(w.absmax.dtype()),
                      w.absmax.shape().to_string());
      STOWAGE_EXPECTS(w.quant_map.dtype() == DType::kF32 && w.quant_map.numel() == 16,
                      InvalidInputError, "{}: expected quant_map float32 [16], found {} {}", where,
                      short_name(w.quant_map.dtype()), w.quant_map.shape().to_string());
      if (w.double_quant) {
        const uint64_t nested = static_cast<uint64_t>(view.nested_block_count());
        STOWAGE_EXPECTS(w.nested_absmax.dtype() == DType::kF32 && w.nested_absmax.numel() == nested,
                        InvalidInputError, "{}: expected nested_absmax float32 [{}], found {} {}",
                        where, nested, short_name(w.nested_absmax.dtype()),
                        w.nested_absmax.shape().to_string());
        STOWAGE_EXPECTS(
            w.nested_quant_map.dtype() == DType::kF32 && w.nested_quant_map.numel() == 256,
            InvalidInputError, "{}: expected nested_quant_map float32 [256], found {} {}", where,
            short_name(w.nested_quant_map.dtype()), w.nested_quant_map.shape().to_string());
      }
      break;
    }
  }
  if (w.bias.data() != nullptr) {
    STOWAGE_EXPECTS(is_floating_point(w.bias.dtype()) &&
                        w.bias.numel() == static_cast<uint64_t>(w.out_features),
                    InvalidInputError, "{}: expected a float bias [{}], found {} {}", where,
                    w.out_features, short_name(w.bias.dtype()), w.bias.shape().to_string());
  }
}

namespace {

// Rows of a non-float32 weight widened or dequantized to float32 at a time,
// for one sgemm: about 256 KiB of scratch (it stays in the L2 cache between
// the conversion and the product), from 16 to 128 rows.
int64_t block_rows(int64_t in_features) {
  constexpr int64_t kScratchFloats = 64 * 1024;
  int64_t rows = kScratchFloats / std::max<int64_t>(in_features, 1);
  rows = std::min<int64_t>(128, std::max<int64_t>(16, rows / 16 * 16));
  return rows;
}

// IEEE binary16 -> float32, exact (normals, subnormals, infinities, NaN),
// branch-free so the loop vectorizes.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t magnitude = h & 0x7fffu;
  float f;
  const uint32_t shifted = magnitude << 13;
  std::memcpy(&f, &shifted, sizeof(f));
  f *= 0x1p112f;  // rebias the exponent; subnormal halves become exact normals
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if (magnitude >= 0x7c00u) bits = shifted | 0x7f800000u;  // infinity, NaN
  bits |= sign;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

#if defined(__x86_64__) && defined(__GNUC__)
// The F16C instruction (x86-64 CPUs since 2012), 8 at a time; exact as well.
__attribute__((target("avx,f16c"))) void widen_half_f16c(const uint16_t* src, int64_t count,
                                                         float* out) {
  int64_t e = 0;
  for (; e + 8 <= count; e += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + e));
    _mm256_storeu_ps(out + e, _mm256_cvtph_ps(v));
  }
  for (; e < count; ++e) out[e] = half_to_float(src[e]);
}
#endif

// out[e] = binary16 src[e] as float32: F16C where the CPU has it, else
// half_to_float's steps on SSE2 lanes.
void widen_half(const uint16_t* src, int64_t count, float* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("f16c")) {
    widen_half_f16c(src, count, out);
    return;
  }
#endif
  int64_t e = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  const __m128i sign_mask = _mm_set1_epi32(0x8000);
  const __m128i magnitude_mask = _mm_set1_epi32(0x7fff);
  const __m128i exponent_all_ones = _mm_set1_epi32(0x7f800000);
  const __m128i largest_finite = _mm_set1_epi32(0x7bff);
  const __m128 rebias = _mm_set1_ps(0x1p112f);
  auto four = [&](__m128i h, float* dst) {
    const __m128i sign = _mm_slli_epi32(_mm_and_si128(h, sign_mask), 16);
    const __m128i magnitude = _mm_and_si128(h, magnitude_mask);
    const __m128i shifted = _mm_slli_epi32(magnitude, 13);
    const __m128i scaled = _mm_castps_si128(_mm_mul_ps(_mm_castsi128_ps(shifted), rebias));
    const __m128i special = _mm_cmpgt_epi32(magnitude, largest_finite);
    const __m128i bits =
        _mm_or_si128(_mm_andnot_si128(special, scaled),
                     _mm_and_si128(special, _mm_or_si128(shifted, exponent_all_ones)));
    _mm_storeu_ps(dst, _mm_castsi128_ps(_mm_or_si128(bits, sign)));
  };
  for (; e + 8 <= count; e += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + e));
    four(_mm_unpacklo_epi16(v, zero), out + e);
    four(_mm_unpackhi_epi16(v, zero), out + e + 4);
  }
#endif
  for (; e < count; ++e) out[e] = half_to_float(src[e]);
}

// out[e] = bfloat16 src[e] as float32 (the bits shifted up: exact). SSE2
// (every x86-64) 8 at a time: -O2 does not vectorize the plain loop.
void widen_bfloat16(const uint16_t* src, int64_t count, float* out) {
  int64_t e = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (; e + 8 <= count; e += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + e));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + e), _mm_unpacklo_epi16(zero, v));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + e + 4), _mm_unpackhi_epi16(zero, v));
  }
#endif
  for (; e < count; ++e) {
    const uint32_t bits = static_cast<uint32_t>(src[e]) << 16;
    std::memcpy(&out[e], &bits, sizeof(float));
  }
}

// Rows [r0, r0 + rows) of the weight as float32 into `out` (rows x in).
void dequantize_rows(const LinearWeights& w, int64_t r0, int64_t rows, float* out) {
  const int64_t in = w.in_features;
  const int64_t count = rows * in;
  const int64_t first = r0 * in;
  switch (w.format) {
    case quant::WeightFormat::kFloat: {
      const DType dtype = w.weight.dtype();
      if (dtype == DType::kBF16) {
        widen_bfloat16(w.weight.data_as<uint16_t>() + first, count, out);
      } else if (dtype == DType::kF16) {
        widen_half(w.weight.data_as<uint16_t>() + first, count, out);
      } else {
        for (int64_t e = 0; e < count; ++e) {
          out[e] = load_as_float(w.weight.data(), dtype, static_cast<size_t>(first + e));
        }
      }
      return;
    }
    case quant::WeightFormat::kInt8:
      for (int64_t r = 0; r < rows; ++r) {
        const int8_t* cb = w.weight.data_as<int8_t>() + (r0 + r) * in;
        const float scale = w.scb.data_as<float>()[r0 + r] / 127.0f;
        float* row = out + r * in;
        for (int64_t c = 0; c < in; ++c) row[c] = static_cast<float>(cb[c]) * scale;
      }
      return;
    case quant::WeightFormat::kNf4:
    case quant::WeightFormat::kFp4: {
      // code[q] * absmax of the element's block, one absmax per run of
      // elements sharing a block.
      const quant::WeightView view = w.view();
      const uint8_t* codes = view.codes();
      const float* map = w.quant_map.data_as<float>();
      for (int64_t e = first; e < first + count;) {
        const int64_t block = e / w.blocksize;
        const int64_t stop = std::min(first + count, (block + 1) * w.blocksize);
        const float absmax = view.block_absmax(block, w.nested_quant_map.data_as<float>());
        for (; e < stop; ++e) out[e - first] = map[quant_rules::unpack_code(codes, e)] * absmax;
      }
      return;
    }
  }
}

// Held around every OpenBLAS call. Debian's serial OpenBLAS 0.3.21 (@openblas)
// is not safe to call from several threads at once, though it is built with
// locking: blas_memory_alloc, which sgemm (always, for its packing buffers) and
// sgemv (once its vectors outgrow its stack buffer) call, takes its lock only
// to set up its buffer table, then claims a free buffer (reads `used`, then
// sets it) without it. Two threads in a product at once can be handed the same
// buffer and each compute from the other's data: garbage, not rounding. The
// tensor-parallel ranks on sim did that (each rank's stream thread in its
// prefill GEMMs at the same time), so parallel/tensor_parallel_test chose
// other tokens at 4 ranks now and then. The buffer table is one per process,
// so the lock is too: process-wide state, guarding the library's own.
std::mutex& openblas_mutex() {
  static std::mutex mutex;
  return mutex;
}

// y[i, r] (row stride ldy) = sum_c x[i, c] * w[r, c] for i < batch, r < n:
// one GEMV at batch 1 (no packing of the weight, which at one row costs more
// than the product), else one GEMM. Safe from several threads at once (one at
// a time inside OpenBLAS: openblas_mutex).
void product(const float* x, const float* w, float* y, int64_t batch, int64_t n, int64_t in,
             int64_t ldy) {
  std::lock_guard<std::mutex> lock(openblas_mutex());
  if (batch == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(in), 1.0f, w,
                static_cast<int>(in), x, 1, 0.0f, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(batch), static_cast<int>(n),
              static_cast<int>(in), 1.0f, x, static_cast<int>(in), w, static_cast<int>(in), 0.0f, y,
              static_cast<int>(ldy));
}

// y[batch, out] = x[batch, in] @ W^T (+ bias, ReLU), W float32 weights read
// through sgemm: float32 weights in place, any other format a block of rows
// at a time through per-call scratch. OpenBLAS's serial library sums each
// output in an order set by the shapes alone (it splits k by fixed block
// sizes and never across threads), so a call's result is the same bits every
// time on a given CPU.
void host_linear(const LinearWeights& w, const float* x, float* y, int64_t batch, bool relu) {
  const int64_t in = w.in_features;
  const int64_t out = w.out_features;
  if (batch == 0 || out == 0) return;
  if (in == 0) {
    std::fill(y, y + batch * out, 0.0f);
  } else if (w.format == quant::WeightFormat::kFloat && w.weight.dtype() == DType::kF32) {
    product(x, w.weight.data_as<float>(), y, batch, out, in, out);
  } else {
    const int64_t rows = std::min(block_rows(in), out);
    std::vector<float> scratch(static_cast<size_t>(rows * in));
    for (int64_t r0 = 0; r0 < out; r0 += rows) {
      const int64_t n = std::min(rows, out - r0);
      dequantize_rows(w, r0, n, scratch.data());
      product(x, scratch.data(), y + r0, batch, n, in, out);
    }
  }
  const bool bias = w.bias.data() != nullptr;
  if (!bias && !relu) return;
  for (int64_t i = 0; i < batch; ++i) {
    float* yi = y + i * out;
    for (int64_t r = 0; r < out; ++r) {
      float acc = yi[r];
      if (bias) acc += load_as_float(w.bias.data(), w.bias.dtype(), static_cast<size_t>(r));
      yi[r] = relu && acc < 0.0f ? 0.0f : acc;
    }
  }
}

class HostLinearKernels final : public LinearKernels {
 public:
  void linear(StreamRef stream, const LinearWeights& w, const TensorView& x, const TensorView& y,
              bool relu) override {
    check_linear_arguments(w, x, y, "linear layer");
    STOWAGE_EXPECTS(w.in_features <= std::numeric_limits<int>::max() &&
                        w.out_features <= std::numeric_limits<int>::max() &&
                        x.shape()[0] <= std::numeric_limits<int>::max(),
                    InvalidInputError,
                    "linear layer: the host kernels take sizes below 2^31 (BLAS int), found "
                    "batch {} in {} out {}",
                    x.shape()[0], w.in_features, w.out_features);
    stream.host_task([w, x, y, relu] {
      host_linear(w, x.data_as<float>(), y.data_as<float>(), x.shape()[0], relu);
    });
  }
  const char* name() const override { return "host reference"; }
  // Runs on the host through host_task: no accelerator memory.
  uint64_t working_bytes(const std::vector<LinearSpec>&, int64_t) const override { return 0; }
};

}  // namespace

std::unique_ptr<LinearKernels> make_host_linear_kernels() {
  return std::make_unique<HostLinearKernels>();
}

namespace {

// hostcompute::HostGemv behind LinearKernels, the reference for what it
// does not take.
class HostComputeLinearKernels final : public LinearKernels {
 public:
  explicit HostComputeLinearKernels(int threads)
      : gemv_(threads > 0 ? threads : default_host_compute_threads()) {}

  void linear(StreamRef stream, const LinearWeights& w, const TensorView& x, const TensorView& y,
              bool relu) override {
    std::optional<hostcompute::HostLinearArgs> args = host_args(w, x, y);
    if (!args) {
      reference_.linear(stream, w, x, y, relu);
      return;
    }
    args->relu = relu;
    stream.host_task([this, a = *args] { gemv_.linear(a); });
  }
  // q, k and v (and gate and up, through the base swiglu_linear) in one pass
  // of the team: one start and one wait instead of one per projection, the
  // same bits (HostGemv::linear_batch).
  void linear_group(StreamRef stream, const LinearWeights* const* w, const TensorView* y,
                    int count, const TensorView& x) override {
    std::vector<hostcompute::HostLinearArgs> batch;
    for (int i = 0; i < count; ++i) {
      std::optional<hostcompute::HostLinearArgs> a = host_args(*w[i], x, y[i]);
      if (!a) {
        LinearKernels::linear_group(stream, w, y, count, x);
        return;
      }
      batch.push_back(*a);
    }
    stream.host_task([this, batch = std::move(batch)] {
      gemv_.linear_batch(batch.data(), static_cast<int>(batch.size()));
    });
  }
  const char* name() const override { return "hostcompute (multithreaded SIMD)"; }
  uint64_t working_bytes(const std::vector<LinearSpec>&, int64_t) const override { return 0; }

 private:
  static std::optional<hostcompute::HostLinearArgs> host_args(const LinearWeights& w,
                                                               const TensorView& x,
                                                               const TensorView& y) {
    check_linear_arguments(w, x, y, "linear layer");
    hostcompute::HostLinearArgs a;
    a.m = x.shape()[0];
    a.x = x.data_as<float>();
    a.y = y.data_as<float>();
    a.weight = w.view();
    if (w.bias.data() != nullptr) {
      a.bias = w.bias.data();
      a.bias_dtype = w.bias.dtype();
      if (a.bias_dtype != DType::kF32 && a.bias_dtype != DType::kF16 &&
          a.bias_dtype != DType::kBF16) {
        return std::nullopt;
      }
    }
    // Float32 weights: the reference (OpenBLAS). int8 is dequantized in full,
    // as the reference does (no outlier split).
    if (w.format == quant::WeightFormat::kFloat && w.weight.dtype() != DType::kBF16 &&
        w.weight.dtype() != DType::kF16) {
      return std::nullopt;
    }
    return a;
  }

  hostcompute::HostGemv gemv_;
  HostLinearKernels reference_;
};

}  // namespace

int default_host_compute_threads() {
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 1);
}

std::unique_ptr<LinearKernels> make_host_compute_linear_kernels(int threads) {
  return std::make_unique<HostComputeLinearKernels>(threads);
}

double measure_host_linear_rate(DType weight_dtype, int64_t out, int64_t in, int64_t rows,
                                int repeats, int threads) {
  STOWAGE_EXPECTS((weight_dtype == DType::kF32 || weight_dtype == DType::kF16 ||
                   weight_dtype == DType::kBF16) &&
                      out >= 1 && in >= 1 && rows >= 1 && repeats >= 1,
                  InvalidInputError,
                  "measure_host_linear_rate: expected a float weight dtype and sizes >= 1, found "
                  "{} [{}, {}] at {} rows",
                  short_name(weight_dtype), out, in, rows);
  const size_t weight_bytes = static_cast<size_t>(out * in) * dtype_size(weight_dtype);
  // Copies rotated so each timed read is of bytes long out of every cache: the
  // copies are written in order, then read in that order, so the last ones
  // written (which the 300 MiB last-level cache of the H100 hosts' Xeons
  // still holds) are read last, if at all. With 512 MiB of copies one H100
  // host read 217 GB/s, twice its memory's rate.
  constexpr size_t kColdBytes = size_t{2} << 30;
  const size_t copies = std::min<size_t>(32, (kColdBytes + weight_bytes - 1) / weight_bytes);
  // Left uninitialized (not a 2 GiB zero fill first): every byte is written below.
  const std::unique_ptr<uint8_t[]> weight_bytes_all(new uint8_t[weight_bytes * copies]);
  uint8_t* const weight = weight_bytes_all.get();
  // Normal numbers of either sign, about 0.5 to 2 in magnitude, as a model's weights are: a
  // subnormal weight costs an x86 core a microcode assist per vector, and 1 in 128 of them made
  // the measured rate a third of the kernels' real one on the H100 host's Xeon.
  const size_t value_bytes = dtype_size(weight_dtype);
  const uint8_t high_byte = weight_dtype == DType::kF16 ? 0x3b : 0x3f;  // exponent about 2^-1..2^0
  for (size_t i = 0; i < weight_bytes; ++i) {
    const size_t value = i / value_bytes;
    weight[i] = (i % value_bytes == value_bytes - 1)
                    ? static_cast<uint8_t>(high_byte | ((value & 1) << 7))
                    : static_cast<uint8_t>(i * 131 + 7);
  }
  for (size_t c = 1; c < copies; ++c) {
    std::memcpy(weight + c * weight_bytes, weight, weight_bytes);
  }
  std::vector<float> x(static_cast<size_t>(rows * in), 0.5f), y(static_cast<size_t>(rows * out));
  LinearWeights w;
  w.out_features = out;
  w.in_features = in;
  w.weight = TensorView(weight, weight_dtype, Shape{out, in}, Tier::pageable_host());
  const TensorView xv(x.data(), DType::kF32, Shape{rows, in}, Tier::pageable_host());
  const TensorView yv(y.data(), DType::kF32, Shape{rows, out}, Tier::pageable_host());
  HostComputeLinearKernels kernels(threads);
  std::vector<double> rates;
  for (int i = 0; i <= repeats; ++i) {
    w.weight = TensorView(weight + (static_cast<size_t>(i) % copies) * weight_bytes,
                          weight_dtype, Shape{out, in}, Tier::pageable_host());
    const auto start = std::chrono::steady_clock::now();
    kernels.linear(StreamRef(), w, xv, yv, false);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) rates.push_back(static_cast<double>(weight_bytes) / std::max(s, 1e-9));
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform, MemoryResource& scratch) {
  if (platform.backend() == Backend::kSim) return make_host_linear_kernels();
  return make_accelerator_linear_kernels(scratch);
}

std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform) {
  return make_linear_kernels(platform, platform.accelerator(0).memory());
}

}  // namespace stowage::models
