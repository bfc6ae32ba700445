// One specification of the public kernels calls, run over every backend
// present: the simulated accelerator always, CUDA where a GPU is visible
// (those cases skip otherwise). Each case runs a call on the backend's stream
// and compares with the CPU counterpart: quantizers byte for byte, matmuls
// within a tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "kernels/cpu_reference.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/memory_read.h"
#include "kernels/nf4_matmul.h"
#include "kernels/quantize.h"
#include "kernels/tests/test_util.h"
#include "kernels/transformer_ops.h"
#include "quant/weight_layout.h"

namespace stowage::kernels {
namespace {

using test_util::from_floats;
using test_util::random_values;
using test_util::relative_error;
using test_util::to_floats;

class KernelsOnBackend : public ::testing::TestWithParam<DeviceChoice> {
 protected:
  void SetUp() override {
    if (GetParam() == DeviceChoice::kCuda && !cuda_device_available()) {
      GTEST_SKIP() << "no CUDA GPU visible";
    }
    platform_ = Platform::create(GetParam());
    stream_.emplace(platform_->accelerator(0).create_stream());
  }

  // Device (or sim) memory holding `bytes`, filled from host memory if given.
  Buffer upload(const void* host, size_t bytes) {
    Buffer buffer(platform_->accelerator(0).memory(), std::max<size_t>(bytes, 1), stream_->ref());
    if (host != nullptr && bytes > 0) stream_->ref().copy(buffer.data(), host, bytes);
    return buffer;
  }
  template <typename T>
  Buffer upload(const std::vector<T>& host) {
    return upload(host.data(), host.size() * sizeof(T));
  }
  Buffer allocate(size_t bytes) { return upload(nullptr, bytes); }

  std::vector<uint8_t> download(const Buffer& buffer, size_t bytes) {
    std::vector<uint8_t> host(bytes);
    if (bytes > 0) stream_->ref().copy(host.data(), buffer.data(), bytes);
    stream_->synchronize();
    return host;
  }
  std::vector<float> download_floats(const Buffer& buffer, DType dtype, int64_t count) {
    const std::vector<uint8_t> bytes = download(buffer, count * dtype_size(dtype));
    return to_floats(bytes.data(), dtype, count);
  }

  StreamRef stream() { return stream_->ref(); }

  // A weight quantized to 4 bits on the CPU, with its double quantization,
  // on the host and uploaded (the upload has ended when this returns).
  struct QuantizedFourBit {
    std::vector<uint8_t> packed, codes;
    std::vector<float> absmax, nested_absmax;
    float offset = 0.0f;
    Buffer device_packed, device_absmax, device_codes, device_nested;
    // Points a's weight at the host or the device copies; nested: double
    // quantization (absmax null).
    void point(FourBitMatmulArgs* a, bool nested, bool device) const {
      a->weight.nested_offset = offset;
      a->weight.data = device ? device_packed.data() : packed.data();
      a->weight.absmax = nested   ? nullptr
                         : device ? static_cast<const float*>(device_absmax.data())
                                  : absmax.data();
      a->weight.absmax_codes = !nested  ? nullptr
                               : device ? static_cast<const uint8_t*>(device_codes.data())
                                        : codes.data();
      a->weight.nested_absmax = !nested  ? nullptr
                                : device ? static_cast<const float*>(device_nested.data())
                                         : nested_absmax.data();
    }
  };
  QuantizedFourBit quantize_weight(const void* w, DType dtype, int64_t numel, int64_t blocksize,
                                   quant::WeightFormat type) {
    QuantizedFourBit q;
    const int64_t blocks = quant_rules::block_count(numel, blocksize);
    q.packed.resize(quant_rules::packed_code_bytes(numel));
    q.absmax.resize(blocks);
    cpu::quantize_4bit(w, dtype, numel, blocksize, type, q.packed.data(), q.absmax.data());
    q.codes.resize(blocks);
    q.nested_absmax.resize(quant_rules::nested_block_count(blocks));
    cpu::double_quantize_absmax(q.absmax.data(), blocks, &q.offset, q.codes.data(),
                                q.nested_absmax.data());
    q.device_packed = upload(q.packed);
    q.device_absmax = upload(q.absmax);
    q.device_codes = upload(q.codes);
    q.device_nested = upload(q.nested_absmax);
    stream_->synchronize();
    return q;
  }

  std::unique_ptr<Platform> platform_;
  std::optional<Stream> stream_;
  CublasLtContext context_;
};

const DType kFloatTypes[] = {DType::kF16, DType::kBF16, DType::kF32};
const quant::WeightFormat kFourBitTypes[] = {quant::WeightFormat::kNf4, quant::WeightFormat::kFp4};

// Inputs with the corner cases of the rules: a block of zeros, values exactly
// on code values and on NF4 thresholds, and random normals.
std::vector<float> tricky_values(int64_t count, uint32_t seed) {
  std::vector<float> v =
      to_floats(random_values(DType::kF32, count, seed).data(), DType::kF32, count);
  for (int64_t i = 0; i < std::min<int64_t>(count, 64); ++i) v[i] = 0.0f;  // a zero block
  const float specials[] = {
      0.03979014977812767f, -0.33967943489551544f, 0.5f, -0.25f, 0.0859375f, 1.0f, -1.0f,
      0.6961928009986877f};
  for (int64_t i = 64; i < std::min<int64_t>(count, 64 + 64); ++i) v[i] = specials[i % 8];
  return v;
}

TEST_P(KernelsOnBackend, Quantize4bitMatchesCpuByteForByte) {
  // numel % 8 == 0 with blocksize <= 256 takes the 8-elements-per-thread
  // kernel on CUDA (8200: a partial last block; 65536: many thread blocks).
  const int64_t numels[] = {1, 2, 7, 31, 33, 64, 127, 1000, 4095, 4097, 12289, 8200, 65536};
  for (DType dtype : kFloatTypes) {
    for (quant::WeightFormat type : kFourBitTypes) {
      for (int64_t bs = 32; bs <= 4096; bs *= 2) {
        for (int64_t numel : numels) {
          SCOPED_TRACE(::testing::Message()
                       << "dtype " << short_name(dtype) << " type " << static_cast<int>(type)
                       << " bs " << bs << " numel " << numel);
          const std::vector<uint8_t> input =
              from_floats(tricky_values(numel, static_cast<uint32_t>(numel + bs)), dtype);
          const int64_t bytes = quant_rules::packed_code_bytes(numel);
          const int64_t blocks = quant_rules::block_count(numel, bs);
          std::vector<uint8_t> want_packed(bytes);
          std::vector<float> want_absmax(blocks);
          cpu::quantize_4bit(input.data(), dtype, numel, bs, type, want_packed.data(),
                             want_absmax.data());

          Buffer in = upload(input);
          Buffer packed = allocate(bytes);
          Buffer absmax = allocate(blocks * sizeof(float));
          quantize_4bit(in.data(), dtype, numel, bs, type, static_cast<uint8_t*>(packed.data()),
                        static_cast<float*>(absmax.data()), stream());
          ASSERT_EQ(download(packed, bytes), want_packed);
          const std::vector<uint8_t> got_absmax = download(absmax, blocks * sizeof(float));
          ASSERT_EQ(std::memcmp(got_absmax.data(), want_absmax.data(), blocks * sizeof(float)), 0);

          // Dequantize, every output dtype, bit for bit.
          for (DType out : kFloatTypes) {
            std::vector<uint8_t> want(numel * dtype_size(out));
            cpu::dequantize_4bit(want_packed.data(), want_absmax.data(), numel, bs, type,
                                 want.data(), out);
            Buffer got = allocate(want.size());
            dequantize_4bit(static_cast<const uint8_t*>(packed.data()),
                            static_cast<const float*>(absmax.data()), numel, bs, type, got.data(),
                            out, stream());
            ASSERT_EQ(download(got, want.size()), want) << "dequantize to " << short_name(out);
          }
        }
      }
    }
  }
}

TEST_P(KernelsOnBackend, DoubleQuantizationMatchesCpuByteForByte) {
  for (int64_t count : {1, 2, 255, 256, 257, 1000, 65536 + 3}) {
    SCOPED_TRACE(::testing::Message() << "count " << count);
    std::vector<float> absmax =
        to_floats(random_values(DType::kF32, count, 7 + count).data(), DType::kF32, count);
    for (float& a : absmax) a = std::fabs(a) + 0.01f;
    if (count > 300) std::fill(absmax.begin() + 256, absmax.begin() + 300, 0.0f);
    const int64_t nested = quant_rules::nested_block_count(count);
    float want_offset = 0.0f;
    std::vector<uint8_t> want_codes(count);
    std::vector<float> want_nested(nested);
    cpu::double_quantize_absmax(absmax.data(), count, &want_offset, want_codes.data(),
                                want_nested.data());

    Buffer in = upload(absmax);
    Buffer offset = allocate(sizeof(float));
    Buffer codes = allocate(count);
    Buffer nested_absmax = allocate(nested * sizeof(float));
    Buffer scratch = allocate(nested * sizeof(double));
    double_quantize_absmax(static_cast<const float*>(in.data()), count,
                           static_cast<float*>(offset.data()), static_cast<uint8_t*>(codes.data()),
                           static_cast<float*>(nested_absmax.data()),
                           static_cast<double*>(scratch.data()), stream());
    const std::vector<uint8_t> got_offset = download(offset, sizeof(float));
    EXPECT_EQ(std::memcmp(got_offset.data(), &want_offset, sizeof(float)), 0);
    EXPECT_EQ(download(codes, count), want_codes);
    const std::vector<uint8_t> got_nested = download(nested_absmax, nested * sizeof(float));
    EXPECT_EQ(std::memcmp(got_nested.data(), want_nested.data(), nested * sizeof(float)), 0);

    std::vector<float> want_absmax(count);
    cpu::dequantize_absmax(want_codes.data(), want_nested.data(), want_offset, count,
                           want_absmax.data());
    Buffer got_absmax = allocate(count * sizeof(float));
    dequantize_absmax(static_cast<const uint8_t*>(codes.data()),
                      static_cast<const float*>(nested_absmax.data()), want_offset, count,
                      static_cast<float*>(got_absmax.data()), stream());
    const std::vector<uint8_t> got = download(got_absmax, count * sizeof(float));
    EXPECT_EQ(std::memcmp(got.data(), want_absmax.data(), count * sizeof(float)), 0);
  }
}

TEST_P(KernelsOnBackend, Int8RowwiseMatchesCpuByteForByte) {
  const int64_t shapes[][2] = {{1, 1}, {3, 5}, {17, 1000}, {64, 4096}, {2, 12345}};
  for (DType dtype : kFloatTypes) {
    for (const auto& shape : shapes) {
      const int64_t rows = shape[0], cols = shape[1];
      SCOPED_TRACE(::testing::Message() << short_name(dtype) << " " << rows << "x" << cols);
      std::vector<float> values = to_floats(
          random_values(DType::kF32, rows * cols, 3 + cols).data(), DType::kF32, rows * cols);
      if (rows > 1) std::fill(values.begin(), values.begin() + cols, 0.0f);  // a zero row
      const std::vector<uint8_t> input = from_floats(values, dtype);
      std::vector<int8_t> want_cb(rows * cols);
      std::vector<float> want_scb(rows);
      cpu::quantize_int8_rowwise(input.data(), dtype, rows, cols, want_cb.data(), want_scb.data());
      Buffer in = upload(input);
      Buffer cb = allocate(rows * cols);
      Buffer scb = allocate(rows * sizeof(float));
      quantize_int8_rowwise(in.data(), dtype, rows, cols, static_cast<int8_t*>(cb.data()),
                            static_cast<float*>(scb.data()), stream());
      const std::vector<uint8_t> got_cb = download(cb, rows * cols);
      ASSERT_EQ(std::memcmp(got_cb.data(), want_cb.data(), rows * cols), 0);
      const std::vector<uint8_t> got_scb = download(scb, rows * sizeof(float));
      ASSERT_EQ(std::memcmp(got_scb.data(), want_scb.data(), rows * sizeof(float)), 0);
      for (DType out : kFloatTypes) {
        std::vector<uint8_t> want(rows * cols * dtype_size(out));
        cpu::dequantize_int8_rowwise(want_cb.data(), want_scb.data(), rows, cols, want.data(), out);
        Buffer got = allocate(want.size());
        dequantize_int8_rowwise(static_cast<const int8_t*>(cb.data()),
                                static_cast<const float*>(scb.data()), rows, cols, got.data(), out,
                                stream());
        ASSERT_EQ(download(got, want.size()), want) << "dequantize to " << short_name(out);
      }
    }
  }
}

double tolerance_for(DType dtype) {
  return dtype == DType::kF32 ? 1e-4 : dtype == DType::kF16 ? 4e-3 : 2e-2;
}

TEST_P(KernelsOnBackend, GemmMatchesCpu) {
  const int64_t shapes[][3] = {{1, 64, 128}, {17, 40, 72}, {64, 96, 256}, {5, 8, 1024}};
  for (DType dtype : kFloatTypes) {
    for (DType out : {DType::kF32, dtype}) {
      for (int variant = 0; variant < 3; ++variant) {  // plain, bias, bias + relu
        for (const auto& s : shapes) {
          const int64_t m = s[0], n = s[1], k = s[2];
          SCOPED_TRACE(::testing::Message()
                       << short_name(dtype) << "->" << short_name(out) << " variant " << variant
                       << " " << m << "x" << n << "x" << k);
          const auto x = random_values(dtype, m * k, 11);
          const auto w = random_values(dtype, n * k, 12);
          const auto bias = random_values(out, n, 13);
          GemmArgs a;
          a.m = m;
          a.n = n;
          a.k = k;
          a.dtype = dtype;
          a.out_dtype = out;
          a.relu = variant == 2;
          std::vector<uint8_t> want(m * n * dtype_size(out));
          a.x = x.data();
          a.w = w.data();
          a.bias = variant > 0 ? bias.data() : nullptr;
          a.y = want.data();
          cpu::gemm(a);
          Buffer dx = upload(x), dw = upload(w), db = upload(bias), dy = allocate(want.size());
          a.x = dx.data();
          a.w = dw.data();
          a.bias = variant > 0 ? db.data() : nullptr;
          a.y = dy.data();
          gemm(context_, a, stream());
          const std::vector<float> got = download_floats(dy, out, m * n);
          const std::vector<float> ref = to_floats(want.data(), out, m * n);
          const std::vector<double> ref_d(ref.begin(), ref.end());
          EXPECT_LT(relative_error(got, ref_d), tolerance_for(out == DType::kF32 ? dtype : out));
        }
      }
    }
  }
}

// float64 reference of dense_gemv over the same 16-bit weights.
std::vector<double> reference_dense_gemv(const DenseGemvArgs& a, const std::vector<float>& x,
                                         const std::vector<float>& w,
                                         const std::vector<float>& bias) {
  std::vector<double> y(a.m * a.n);
  for (int64_t r = 0; r < a.m; ++r) {
    for (int64_t c = 0; c < a.n; ++c) {
      double acc = bias.empty() ? 0.0 : bias[c];
      for (int64_t i = 0; i < a.k; ++i) acc += double{x[r * a.k + i]} * w[c * a.k + i];
      y[r * a.n + c] = a.relu ? std::max(acc, 0.0) : acc;
    }
  }
  return y;
}

TEST_P(KernelsOnBackend, DenseGemvMatchesFloat64AndGivesTheSameBitsEachCall) {
  // k % 8 == 0 (16-byte chunks on CUDA) and not (element-wise loads); every
  // batch size from 1 to the maximum; bias absent, float32 and 16-bit.
  const int64_t shapes[][2] = {{72, 4096}, {33, 264}, {40, 100}, {9, 14336}};
  for (DType wt : {DType::kF16, DType::kBF16}) {
    for (int64_t m = 1; m <= kDenseGemvMaxRows; m += (m < 3 ? 1 : 3)) {
      for (int variant = 0; variant < 3; ++variant) {  // none, f32 bias + relu, 16-bit bias
        for (const auto& s : shapes) {
          const int64_t n = s[0], k = s[1];
          SCOPED_TRACE(::testing::Message() << short_name(wt) << " m " << m << " n " << n << " k "
                                            << k << " variant " << variant);
          const auto xb = random_values(DType::kF32, m * k, 21);
          const auto wb = random_values(wt, n * k, 22);
          const DType bias_dtype = variant == 2 ? wt : DType::kF32;
          const auto bb = random_values(bias_dtype, n, 23);
          DenseGemvArgs a;
          a.m = m;
          a.n = n;
          a.k = k;
          a.weight_dtype = wt;
          a.bias_dtype = bias_dtype;
          a.relu = variant == 1;
          Buffer dx = upload(xb), dw = upload(wb), db = upload(bb);
          Buffer dy = allocate(m * n * sizeof(float));
          a.x = static_cast<const float*>(dx.data());
          a.w = dw.data();
          a.bias = variant > 0 ? db.data() : nullptr;
          a.y = static_cast<float*>(dy.data());
          dense_gemv(a, stream());
          const std::vector<float> got = download_floats(dy, DType::kF32, m * n);
          dense_gemv(a, stream());
          const std::vector<float> again = download_floats(dy, DType::kF32, m * n);
          ASSERT_EQ(0, std::memcmp(got.data(), again.data(), got.size() * sizeof(float)));
          const std::vector<float> bias =
              variant > 0 ? to_floats(bb.data(), bias_dtype, n) : std::vector<float>();
          const std::vector<double> want =
              reference_dense_gemv(a, to_floats(xb.data(), DType::kF32, m * k),
                                   to_floats(wb.data(), wt, n * k), bias);
          EXPECT_LT(relative_error(got, want), 1e-5);
        }
      }
    }
  }
  DenseGemvArgs bad;
  bad.m = kDenseGemvMaxRows + 1;
  bad.n = 1;
  bad.k = 1;
  EXPECT_THROW(dense_gemv(bad, stream()), InvalidInputError);
  bad.m = 1;
  bad.weight_dtype = DType::kF32;
  EXPECT_THROW(dense_gemv(bad, stream()), InvalidInputError);
}

// The fused forms give the bits of the separate calls: a group of GEMVs over
// one x (q, k, v), the SwiGLU pair with its activation, and a GEMV added into
// y (a residual). Shapes with whole 16-byte chunks (fused on CUDA) and not
// (the fallback), every batch size class.
TEST_P(KernelsOnBackend, DenseGemvGroupSwigluAndAccumulateGiveTheSeparateCallsBits) {
  const int64_t shapes[][3] = {{64, 16, 256}, {40, 8, 100}, {2048, 512, 4096}};
  for (DType wt : {DType::kF16, DType::kBF16}) {
    for (int64_t m : {int64_t{1}, int64_t{3}, kDenseGemvMaxRows}) {
      for (const auto& s : shapes) {
        const int64_t n0 = s[0], n1 = s[1], k = s[2];
        SCOPED_TRACE(::testing::Message()
                     << short_name(wt) << " m " << m << " n " << n0 << "/" << n1 << " k " << k);
        const auto xb = random_values(DType::kF32, m * k, 31);
        const auto w0b = random_values(wt, n0 * k, 32), w1b = random_values(wt, n1 * k, 33);
        const auto w2b = random_values(wt, n0 * k, 34), bias = random_values(DType::kF32, n1, 35);
        const auto residual = random_values(DType::kF32, m * n0, 36);
        Buffer dx = upload(xb), dw0 = upload(w0b), dw1 = upload(w1b), dw2 = upload(w2b),
               db = upload(bias);
        auto args = [&](const Buffer& w, int64_t n, Buffer& y) {
          DenseGemvArgs a;
          a.m = m;
          a.n = n;
          a.k = k;
          a.weight_dtype = wt;
          a.x = static_cast<const float*>(dx.data());
          a.w = w.data();
          a.y = static_cast<float*>(y.data());
          return a;
        };
        const size_t f = sizeof(float);
        Buffer y0 = allocate(m * n0 * f), y1 = allocate(m * n1 * f), y2 = allocate(m * n0 * f);
        Buffer act = allocate(m * n0 * f);
        // Separately: three GEMVs (the second with a bias and ReLU), swiglu, a GEMV then add.
        DenseGemvArgs a0 = args(dw0, n0, y0), a1 = args(dw1, n1, y1), a2 = args(dw2, n0, y2);
        a1.bias = db.data();
        a1.relu = true;
        dense_gemv(a0, stream());
        dense_gemv(a1, stream());
        dense_gemv(a2, stream());
        swiglu({m, n0, a0.y, n0, a2.y, n0, static_cast<float*>(act.data())}, stream());
        const std::vector<uint8_t> want0 = download(y0, m * n0 * f), want1 = download(y1, m * n1 * f),
                                   want2 = download(y2, m * n0 * f),
                                   want_act = download(act, m * n0 * f);
        Buffer sum = upload(residual);
        add_in_place(static_cast<float*>(sum.data()), a0.y, m * n0, stream());
        const std::vector<uint8_t> want_sum = download(sum, m * n0 * f);

        // Fused.
        Buffer g0 = allocate(m * n0 * f), g1 = allocate(m * n1 * f), g2 = allocate(m * n0 * f);
        DenseGemvArgs group[3] = {args(dw0, n0, g0), args(dw1, n1, g1), args(dw2, n0, g2)};
        group[1].bias = db.data();
        group[1].relu = true;
        dense_gemv_group(group, 3, stream());
        EXPECT_EQ(download(g0, m * n0 * f), want0);
        EXPECT_EQ(download(g1, m * n1 * f), want1);
        EXPECT_EQ(download(g2, m * n0 * f), want2);
        Buffer fused_act = allocate(m * n0 * f);
        Buffer s0 = allocate(m * n0 * f), s2 = allocate(m * n0 * f);
        dense_gemv_swiglu(args(dw0, n0, s0), args(dw2, n0, s2),
                          static_cast<float*>(fused_act.data()), stream());
        EXPECT_EQ(download(fused_act, m * n0 * f), want_act);
        Buffer fused_sum = upload(residual);
        DenseGemvArgs add = args(dw0, n0, fused_sum);
        add.accumulate = true;
        dense_gemv(add, stream());
        EXPECT_EQ(download(fused_sum, m * n0 * f), want_sum);
      }
    }
  }
  DenseGemvArgs mismatched[2];
  mismatched[0].m = mismatched[1].m = 1;
  mismatched[0].n = mismatched[1].n = 1;
  mismatched[0].k = 1;
  mismatched[1].k = 2;
  float x[2] = {}, y[2] = {};
  uint16_t w[2] = {};
  for (DenseGemvArgs& a : mismatched) {
    a.x = x;
    a.w = w;
    a.y = y;
  }
  EXPECT_THROW(dense_gemv_group(mismatched, 2, stream()), InvalidInputError);
  EXPECT_THROW(dense_gemv_group(mismatched, kDenseGemvMaxGroup + 1, stream()), InvalidInputError);
  EXPECT_THROW(dense_gemv_swiglu(mismatched[0], mismatched[1], y, stream()), InvalidInputError);
}

TEST_P(KernelsOnBackend, ReadChecksumIsTheXorOfTheWordsAndRefusesMisalignment) {
  const uint64_t bytes = (uint64_t{3} << 20) + 48;  // not a multiple of the CUDA grid's stride
  std::vector<uint8_t> host(bytes);
  std::mt19937_64 rng(5);
  for (auto& b : host) b = static_cast<uint8_t>(rng());
  uint64_t want = 0;
  for (uint64_t i = 0; i < bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, host.data() + i, 8);
    want ^= w;
  }
  Buffer data = upload(host), sum = allocate(sizeof(uint64_t));
  read_checksum(data.data(), bytes, static_cast<uint64_t*>(sum.data()), stream());
  const std::vector<uint8_t> got = download(sum, sizeof(uint64_t));
  uint64_t value;
  std::memcpy(&value, got.data(), sizeof(value));
  EXPECT_EQ(value, want);
  EXPECT_THROW(read_checksum(data.data(), 20, static_cast<uint64_t*>(sum.data()), stream()),
               InvalidInputError);
}

TEST_P(KernelsOnBackend, UploadFromPinnedCopiesEveryByteAtAnyAlignmentAndSize) {
  const size_t capacity = (size_t{1} << 20) + 64;
  Buffer pinned(platform_->pinned_host_memory(), capacity);
  auto* p = static_cast<uint8_t*>(pinned.data());
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < capacity; ++i) p[i] = static_cast<uint8_t>(rng());
  std::vector<uint8_t> pageable(p, p + capacity);
  Buffer device = allocate(capacity);
  auto* d = static_cast<uint8_t*>(device.data());
  // Offsets that give 16-, 4- and 1-byte alignment; sizes with a tail.
  const size_t cases[][3] = {{0, 0, 16384},    {0, 0, (size_t{1} << 20) + 16},
                             {4, 8, 4100},      {1, 3, 4097},
                             {16, 0, 7},        {0, 0, 1}};
  for (const auto& c : cases) {
    const size_t src_off = c[0], dst_off = c[1], bytes = c[2];
    SCOPED_TRACE(::testing::Message() << "src+" << src_off << " dst+" << dst_off << " " << bytes);
    stream().fill_zero(d, capacity);
    upload_from_pinned(d + dst_off, p + src_off, bytes, stream());
    std::vector<uint8_t> got = download(device, capacity);
    EXPECT_EQ(0, std::memcmp(got.data() + dst_off, p + src_off, bytes));
    EXPECT_EQ(std::count(got.begin(), got.begin() + dst_off, 0), static_cast<long>(dst_off))
        << "wrote before dst";
    EXPECT_EQ(std::count(got.begin() + dst_off + bytes, got.end(), 0),
              static_cast<long>(capacity - dst_off - bytes))
        << "wrote past dst + bytes";
    // Pageable memory, which the accelerator cannot load from, goes through a copy.
    stream().fill_zero(d, capacity);
    upload_from_pinned(d + dst_off, pageable.data() + src_off, bytes, stream());
    got = download(device, capacity);
    EXPECT_EQ(0, std::memcmp(got.data() + dst_off, pageable.data() + src_off, bytes));
  }
  upload_from_pinned(d, p, 0, stream());  // nothing to do
  EXPECT_THROW(upload_from_pinned(nullptr, p, 4, stream()), InvalidInputError);
}

// The reason for upload_from_pinned: a small upload issued after a large copy
// already queued on another stream does not wait for that copy to end.
TEST_P(KernelsOnBackend, UploadFromPinnedDoesNotQueueBehindACopyOnTheCopyEngine) {
  if (GetParam() != DeviceChoice::kCuda) GTEST_SKIP() << "a property of CUDA's copy engines";
  const size_t big = size_t{1} << 30;  // ~20 ms over a PCIe 5 link
  Buffer big_host(platform_->pinned_host_memory(), big);
  std::memset(big_host.data(), 1, big);
  Buffer big_device = allocate(big);
  Buffer small_host(platform_->pinned_host_memory(), 16384);
  std::memset(small_host.data(), 2, 16384);
  Buffer small_device = allocate(16384);
  stream().synchronize();
  Stream copy_stream = platform_->accelerator(0).create_stream();
  Event big_done = platform_->accelerator(0).create_event();
  Event small_done = platform_->accelerator(0).create_event();
  copy_stream.ref().copy(big_device.data(), big_host.data(), big);
  copy_stream.ref().record(big_done);
  upload_from_pinned(small_device.data(), small_host.data(), 16384, stream());
  stream().record(small_done);
  small_done.synchronize();
  EXPECT_FALSE(big_done.ready()) << "the 1 GiB copy ended before the 16 KiB upload";
  const std::vector<uint8_t> got = download(small_device, 16384);
  EXPECT_EQ(std::count(got.begin(), got.end(), 2), 16384);
  copy_stream.synchronize();
}

TEST_P(KernelsOnBackend, Int8MatmulMatchesCpuWithAndWithoutOutliers) {
  const int64_t shapes[][3] = {{1, 64, 128}, {5, 96, 256}, {64, 128, 512}};
  for (DType dtype : kFloatTypes) {
    for (float threshold : {0.0f, 6.0f}) {
      for (const auto& s : shapes) {
        const int64_t m = s[0], n = s[1], k = s[2];
        SCOPED_TRACE(::testing::Message() << short_name(dtype) << " t=" << threshold << " " << m
                                          << "x" << n << "x" << k);
        std::vector<float> xf =
            to_floats(random_values(DType::kF32, m * k, 21).data(), DType::kF32, m * k);
        xf[3] = 40.0f;                     // outlier column 3
        xf[(m - 1) * k + k - 2] = -25.0f;  // outlier column k - 2
        const auto x = from_floats(xf, dtype);
        const auto wsrc = random_values(DType::kF32, n * k, 22);
        std::vector<int8_t> cb(n * k);
        std::vector<float> scb(n);
        cpu::quantize_int8_rowwise(wsrc.data(), DType::kF32, n, k, cb.data(), scb.data());
        const auto bias = random_values(dtype, n, 23);
        Int8MatmulArgs a;
        a.m = m;
        a.n = n;
        a.k = k;
        a.dtype = dtype;
        a.threshold = threshold;
        std::vector<uint8_t> want(m * n * dtype_size(dtype));
        a.x = x.data();
        a.cb = cb.data();
        a.scb = scb.data();
        a.bias = bias.data();
        a.y = want.data();
        cpu::int8_matmul(a);
        Buffer dx = upload(x), dcb = upload(cb), dscb = upload(scb), db = upload(bias),
               dy = allocate(want.size());
        a.x = dx.data();
        a.cb = static_cast<const int8_t*>(dcb.data());
        a.scb = static_cast<const float*>(dscb.data());
        a.bias = db.data();
        a.y = dy.data();
        int8_matmul(context_, a, stream());
        const std::vector<float> got = download_floats(dy, dtype, m * n);
        const std::vector<float> ref = to_floats(want.data(), dtype, m * n);
        EXPECT_LT(relative_error(got, std::vector<double>(ref.begin(), ref.end())),
                  dtype == DType::kF32 ? 1e-5 : tolerance_for(dtype));
      }
    }
  }
}

TEST_P(KernelsOnBackend, FourBitMatmulMatchesCpu) {
  struct Case {
    int64_t m, n, k, blocksize;
  };
  // Batch 1 on sm_90 takes the ring kernel (one block per SM, tiles from a
  // counter) where each row holds whole blocks with absmax bytes in 16-byte
  // units, else the classic kernel: 4228 rows wrap each block's ring several
  // times and end in a partial 8-row tile (the classic kernel for double
  // quantization at k=256), 5 rows are one partial tile (fewer tiles than
  // blocks), blocksize 4096 takes the classic kernel, and at k=10240 the
  // preferred tiles do not fit in shared memory, so 1100 rows go in smaller
  // ones, the last one partial; at k=28672 only 2-row tiles fit (warps then
  // take 2 rows at a time, not 4).
  const Case cases[] = {{1, 96, 1024, 64},    {2, 64, 4096, 128}, {3, 40, 1056, 32},
                        {4, 33, 2048, 4096},  {1, 128, 8192, 64}, {5, 48, 512, 64},
                        {16, 64, 256, 256},   {1, 24, 100, 32},   {1, 4228, 1024, 64},
                        {1, 4228, 256, 64},   {1, 5, 2048, 64},   {1, 70, 4096, 4096},
                        {1, 1100, 10240, 64}, {1, 20, 28672, 64}};
  for (DType dtype : kFloatTypes) {
    for (quant::WeightFormat type : kFourBitTypes) {
      for (bool nested : {false, true}) {
        for (const Case& c : cases) {
          SCOPED_TRACE(::testing::Message()
                       << short_name(dtype) << " type " << static_cast<int>(type) << " nested "
                       << nested << " m=" << c.m << " n=" << c.n << " k=" << c.k
                       << " bs=" << c.blocksize);
          const int64_t numel = c.n * c.k;
          const QuantizedFourBit w = quantize_weight(random_values(DType::kF32, numel, 31).data(),
                                                     DType::kF32, numel, c.blocksize, type);
          const auto x = random_values(dtype, c.m * c.k, 32);
          const auto bias = random_values(dtype, c.n, 33);

          FourBitMatmulArgs a;
          a.m = c.m;
          a.weight.out = c.n;
          a.weight.in = c.k;
          a.dtype = dtype;
          a.weight.format = type;
          a.weight.blocksize = c.blocksize;
          std::vector<uint8_t> want(c.m * c.n * dtype_size(dtype));
          a.x = x.data();
          a.bias = bias.data();
          a.y = want.data();
          w.point(&a, nested, /*device=*/false);
          cpu::four_bit_matmul(a);

          Buffer dx = upload(x), db = upload(bias), dy = allocate(want.size());
          a.x = dx.data();
          a.bias = db.data();
          a.y = dy.data();
          w.point(&a, nested, /*device=*/true);
          four_bit_matmul(context_, a, stream());
          const std::vector<float> got = download_floats(dy, dtype, c.m * c.n);
          const std::vector<float> ref = to_floats(want.data(), dtype, c.m * c.n);
          EXPECT_LT(relative_error(got, std::vector<double>(ref.begin(), ref.end())),
                    dtype == DType::kF32 ? 1e-4 : tolerance_for(dtype));
        }
      }
    }
  }
}

// quant::WeightLayout::row_ranges: rows [first, first + count) of a 4-bit
// weight, their parts' byte ranges copied alone into buffers of their own,
// computed as a [count, k] weight give those rows of the whole weight's
// product (the split of an expert between the host and a partial copy,
// models/transformer_moe.cc). NF4 with and without double quantization,
// float32 and f16 activations; the rows on both sides of the bound.
TEST_P(KernelsOnBackend, FourBitRowRangesComputeTheirRowsAlone) {
  const int64_t n = 96, k = 1024, blocksize = 64, numel = n * k;
  const QuantizedFourBit w = quantize_weight(random_values(DType::kF32, numel, 51).data(),
                                             DType::kF32, numel, blocksize,
                                             quant::WeightFormat::kNf4);
  for (bool nested : {false, true}) {
    const quant::WeightLayout layout = quant::WeightLayout::four_bit(
        quant::WeightFormat::kNf4, Shape{n, k}, DType::kF32, blocksize, nested, DType::kU8);
    const int64_t bound = layout.row_alignment() * 2;  // 16 rows a unit with nesting, 1 without
    EXPECT_FALSE(nested && layout.row_ranges(bound - 1, n - bound + 1).has_value());
    for (DType dtype : {DType::kF32, DType::kF16}) {
      SCOPED_TRACE(::testing::Message() << short_name(dtype) << " nested " << nested);
      const auto x = random_values(dtype, k, 52);
      FourBitMatmulArgs a;
      a.m = 1;
      a.dtype = dtype;
      a.weight.format = quant::WeightFormat::kNf4;
      a.weight.out = n;
      a.weight.in = k;
      a.weight.blocksize = blocksize;
      Buffer dx = upload(x), dy = allocate(n * dtype_size(dtype));
      a.x = dx.data();
      a.y = dy.data();
      w.point(&a, nested, /*device=*/true);
      four_bit_matmul(context_, a, stream());
      const std::vector<float> whole = download_floats(dy, dtype, n);
      for (const auto& [first, count] : {std::pair<int64_t, int64_t>{0, bound},
                                         std::pair<int64_t, int64_t>{bound, n - bound}}) {
        const auto ranges = layout.row_ranges(first, count);
        ASSERT_TRUE(ranges.has_value());
        std::vector<Buffer> parts;
        FourBitMatmulArgs p = a;
        p.weight.out = count;
        Buffer py = allocate(count * dtype_size(dtype));
        p.y = py.data();
        for (const quant::PartRange& r : *ranges) {
          const uint8_t* host = r.suffix == quant::kWeightSuffix ? w.packed.data()
                                : r.suffix == quant::kNestedAbsmaxSuffix
                                    ? reinterpret_cast<const uint8_t*>(w.nested_absmax.data())
                                : nested ? w.codes.data()
                                         : reinterpret_cast<const uint8_t*>(w.absmax.data());
          parts.push_back(upload(host + r.offset, r.bytes));
          const void* d = parts.back().data();
          if (r.suffix == quant::kWeightSuffix) p.weight.data = d;
          if (r.suffix == quant::kNestedAbsmaxSuffix) p.weight.nested_absmax = static_cast<const float*>(d);
          if (r.suffix == quant::kAbsmaxSuffix) {
            if (nested) {
              p.weight.absmax_codes = static_cast<const uint8_t*>(d);
            } else {
              p.weight.absmax = static_cast<const float*>(d);
            }
          }
        }
        stream_->synchronize();
        four_bit_matmul(context_, p, stream());
        const std::vector<float> got = download_floats(py, dtype, count);
        for (int64_t r = 0; r < count; ++r) {
          EXPECT_NEAR(got[r], whole[first + r], 1e-5 * (1 + std::fabs(whole[first + r])))
              << "row " << first + r;
        }
      }
    }
  }
}

// Arrays at offsets from their allocations take the other paths: x 2 bytes
// off (the GEMV kernels' element-wise x loads), absmax 4 bytes off (batch 1
// leaves the ring kernel for the classic one), packed 4 bytes off (dequantize
// + GEMM); every path agrees with the CPU.
TEST_P(KernelsOnBackend, FourBitMatmulWithOffsetArraysMatchesCpu) {
  struct Offsets {
    size_t x, packed, absmax;
  };
  const Offsets offsets[] = {{2, 0, 0}, {0, 0, 4}, {0, 4, 0}, {2, 4, 4}};
  const int64_t n = 300, k = 1024, blocksize = 64;
  const int64_t numel = n * k;
  const auto wsrc = random_values(DType::kF32, numel, 41);
  std::vector<uint8_t> packed(quant_rules::packed_code_bytes(numel));
  std::vector<float> absmax(quant_rules::block_count(numel, blocksize));
  cpu::quantize_4bit(wsrc.data(), DType::kF32, numel, blocksize, quant::WeightFormat::kNf4,
                     packed.data(), absmax.data());
  // Device copies `offset` bytes into their buffers (the copy has ended when
  // this returns: the padded host copy goes away).
  auto upload_at = [&](const void* host, size_t bytes, size_t offset, Buffer* keep) {
    std::vector<uint8_t> padded(offset + bytes);
    std::memcpy(padded.data() + offset, host, bytes);
    *keep = upload(padded);
    stream_->synchronize();
    return static_cast<uint8_t*>(keep->data()) + offset;
  };
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    for (int64_t m : {1, 2}) {
      for (const Offsets& o : offsets) {
        SCOPED_TRACE(::testing::Message() << short_name(dtype) << " m=" << m << " offsets x " << o.x
                                          << " packed " << o.packed << " absmax " << o.absmax);
        const auto x = random_values(dtype, m * k, 42);
        FourBitMatmulArgs a;
        a.m = m;
        a.weight.format = quant::WeightFormat::kNf4;
        a.weight.out = n;
        a.weight.in = k;
        a.dtype = dtype;
        a.weight.blocksize = blocksize;
        std::vector<uint8_t> want(m * n * dtype_size(dtype));
        a.x = x.data();
        a.y = want.data();
        a.weight.data = packed.data();
        a.weight.absmax = absmax.data();
        cpu::four_bit_matmul(a);

        Buffer dx, dp, da;
        a.x = upload_at(x.data(), x.size(), o.x, &dx);
        a.weight.data = upload_at(packed.data(), packed.size(), o.packed, &dp);
        a.weight.absmax = reinterpret_cast<const float*>(
            upload_at(absmax.data(), absmax.size() * sizeof(float), o.absmax, &da));
        Buffer dy = allocate(want.size());
        a.y = dy.data();
        four_bit_matmul(context_, a, stream());
        const std::vector<float> got = download_floats(dy, dtype, m * n);
        const std::vector<float> ref = to_floats(want.data(), dtype, m * n);
        EXPECT_LT(relative_error(got, std::vector<double>(ref.begin(), ref.end())),
                  tolerance_for(dtype));
      }
    }
  }
}

// Batch-1 GEMVs queued back to back on one stream, as a decode loop runs
// them (on sm_90 each ring launch may start while the one before it ends and
// takes its tiles from a counter the one before it reset): every output
// matches the CPU, and the same weight gives the same bytes every time.
TEST_P(KernelsOnBackend, FourBitGemvBackToBackIsCorrectAndRepeatable) {
  struct Case {
    int64_t n, k;
  };
  // 8200 rows: more tiles than the blocks' first rounds (8-row tiles, 3 per
  // block; 16-row tiles, 2 per block, with double quantization), so most come
  // from the counter; 700 rows at k=8192: fewer tiles than blocks.
  const Case cases[] = {{8200, 1024}, {700, 8192}};
  const int kWeights = 2, kCalls = 8;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    for (bool nested : {false, true}) {
      for (const Case& c : cases) {
        SCOPED_TRACE(::testing::Message()
                     << short_name(dtype) << " nested " << nested << " n=" << c.n << " k=" << c.k);
        const int64_t numel = c.n * c.k, blocksize = 64;
        const auto x = random_values(dtype, c.k, 52);
        Buffer dx = upload(x);
        std::vector<std::vector<uint8_t>> want(kWeights);
        std::vector<QuantizedFourBit> weights;
        weights.reserve(kWeights);
        std::vector<FourBitMatmulArgs> args(kWeights);
        for (int w = 0; w < kWeights; ++w) {
          weights.push_back(quantize_weight(random_values(DType::kF32, numel, 60 + w).data(),
                                            DType::kF32, numel, blocksize,
                                            quant::WeightFormat::kNf4));
          FourBitMatmulArgs& a = args[w];
          a.m = 1;
          a.weight.format = quant::WeightFormat::kNf4;
          a.weight.out = c.n;
          a.weight.in = c.k;
          a.dtype = dtype;
          a.weight.blocksize = blocksize;
          want[w].resize(c.n * dtype_size(dtype));
          a.x = x.data();
          a.y = want[w].data();
          weights[w].point(&a, nested, /*device=*/false);
          cpu::four_bit_matmul(a);
          a.x = dx.data();
          weights[w].point(&a, nested, /*device=*/true);
        }
        std::vector<Buffer> dy;
        for (int call = 0; call < kCalls; ++call) {
          dy.push_back(allocate(c.n * dtype_size(dtype)));
          FourBitMatmulArgs a = args[call % kWeights];
          a.y = dy.back().data();
          four_bit_matmul(context_, a, stream());
        }
        for (int call = 0; call < kCalls; ++call) {
          const int w = call % kWeights;
          const std::vector<uint8_t> got = download(dy[call], c.n * dtype_size(dtype));
          const std::vector<float> ref = to_floats(want[w].data(), dtype, c.n);
          EXPECT_LT(relative_error(to_floats(got.data(), dtype, c.n),
                                   std::vector<double>(ref.begin(), ref.end())),
                    tolerance_for(dtype))
              << "call " << call;
          if (call >= kWeights) {
            EXPECT_EQ(got, download(dy[w], c.n * dtype_size(dtype)))
                << "call " << call << " differs from call " << w << " with the same weight";
          }
        }
      }
    }
  }
}

// A chain of batch-1 GEMVs, each one's output the next one's input, queued
// with no synchronization: on sm_90 each ring launch may start while the one
// before it ends, so one that read x before that kernel had written it would
// see the stale buffer (zeros here). Each step must match the CPU applied to
// the GPU's own input for that step.
TEST_P(KernelsOnBackend, FourBitGemvChainReadsEachInputAfterItIsWritten) {
  // Many steps on CUDA: a premature read sees the stale buffer only where
  // it races the end of the kernel before, so this catches such a bug by
  // chance (a build reading x before the wait failed 2 runs in 5 on an
  // H100); the simulation needs few steps.
  const int64_t n = 4096, k = 4096, blocksize = 64;
  const int kSteps = GetParam() == DeviceChoice::kCuda ? 40 : 3;
  const int64_t numel = n * k;
  // Weights scaled by 1/sqrt(k) keep the activations' size from step to step.
  std::vector<float> wsrc =
      to_floats(random_values(DType::kF32, numel, 70).data(), DType::kF32, numel);
  for (float& v : wsrc) v /= 64.0f;
  const QuantizedFourBit w =
      quantize_weight(wsrc.data(), DType::kF32, numel, blocksize, quant::WeightFormat::kNf4);
  for (bool nested : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "nested " << nested);
    FourBitMatmulArgs a;
    a.m = 1;
    a.weight.format = quant::WeightFormat::kNf4;
    a.weight.out = n;
    a.weight.in = k;
    a.dtype = DType::kF16;
    a.weight.blocksize = blocksize;
    w.point(&a, nested, /*device=*/false);

    const auto x0 = random_values(DType::kF16, k, 71);
    const std::vector<uint8_t> zeros(n * 2, 0);
    std::vector<Buffer> act;  // act[0] = x0, act[i] = step i's output
    act.push_back(upload(x0));
    for (int i = 1; i <= kSteps; ++i) act.push_back(upload(zeros));
    stream_->synchronize();
    FourBitMatmulArgs d = a;
    w.point(&d, nested, /*device=*/true);
    for (int i = 1; i <= kSteps; ++i) {
      d.x = act[i - 1].data();
      d.y = act[i].data();
      four_bit_matmul(context_, d, stream());
    }
    std::vector<uint8_t> input = download(act[0], k * 2);
    for (int i = 1; i <= kSteps; ++i) {
      const std::vector<uint8_t> got = download(act[i], n * 2);
      std::vector<uint8_t> want(n * 2);
      a.x = input.data();
      a.y = want.data();
      cpu::four_bit_matmul(a);
      const std::vector<float> ref = to_floats(want.data(), DType::kF16, n);
      EXPECT_LT(relative_error(to_floats(got.data(), DType::kF16, n),
                               std::vector<double>(ref.begin(), ref.end())),
                tolerance_for(DType::kF16))
          << "step " << i;
      input = got;
    }
  }
}

// A batch-1 GEMV whose output is written over the first rows of the next
// GEMV's packed weight (its first tile), alternating two inputs so those
// bytes alternate, all queued with no synchronization. On sm_90 the second is
// a programmatic dependent launch that asks the L2 for its first tile before
// it waits for the first GEMV; each output must still equal, byte for byte,
// the one computed with the stream drained between the two. (On an H100 a
// build whose producer skipped the wait altogether passed 1000 such steps:
// the dependent's first copy never overtook the last write there, so this
// checks the result, and the prefetch's safety rests on the L2's coherence.)
TEST_P(KernelsOnBackend, FourBitGemvReadsTheWeightTheKernelBeforeWrote) {
  const int64_t n1 = 8192, k1 = 1024, n2 = 4096, k2 = 4096, blocksize = 64;
  const int kSteps = GetParam() == DeviceChoice::kCuda ? 24 : 2;
  const QuantizedFourBit w1 =
      quantize_weight(random_values(DType::kF32, n1 * k1, 90).data(), DType::kF32, n1 * k1,
                      blocksize, quant::WeightFormat::kNf4);
  QuantizedFourBit w2 = quantize_weight(random_values(DType::kF32, n2 * k2, 91).data(), DType::kF32,
                                        n2 * k2, blocksize, quant::WeightFormat::kNf4);
  const std::vector<uint8_t> x1[2] = {random_values(DType::kF16, k1, 92),
                                      random_values(DType::kF16, k1, 93)};
  const auto x2 = random_values(DType::kF16, k2, 94);
  Buffer dx1[2] = {upload(x1[0]), upload(x1[1])};
  Buffer dx2 = upload(x2);
  stream_->synchronize();
  auto batch_one = [&](int64_t n, int64_t k, const QuantizedFourBit& w) {
    FourBitMatmulArgs a;
    a.m = 1;
    a.weight.format = quant::WeightFormat::kNf4;
    a.weight.out = n;
    a.weight.in = k;
    a.weight.blocksize = blocksize;
    w.point(&a, /*nested=*/false, /*device=*/true);
    return a;
  };
  // The first GEMV writes its output over w2's first n1 * 2 = 16 KiB of packed
  // codes: rows 0-7 of w2, its first 8-row tile.
  FourBitMatmulArgs first = batch_one(n1, k1, w1);
  first.y = w2.device_packed.data();
  FourBitMatmulArgs second = batch_one(n2, k2, w2);
  second.x = dx2.data();
  std::vector<uint8_t> want[2];
  for (int input = 0; input < 2; ++input) {
    first.x = dx1[input].data();
    four_bit_matmul(context_, first, stream());
    stream_->synchronize();
    Buffer y = allocate(n2 * 2);
    second.y = y.data();
    four_bit_matmul(context_, second, stream());
    want[input] = download(y, n2 * 2);
  }
  ASSERT_NE(want[0], want[1]);
  std::vector<Buffer> ys;
  for (int step = 0; step < kSteps; ++step) {
    first.x = dx1[step % 2].data();
    four_bit_matmul(context_, first, stream());
    ys.push_back(allocate(n2 * 2));
    second.y = ys.back().data();
    four_bit_matmul(context_, second, stream());
  }
  for (int step = 0; step < kSteps; ++step) {
    EXPECT_EQ(download(ys[step], n2 * 2), want[step % 2]) << "step " << step;
  }
}

TEST_P(KernelsOnBackend, MatmulPlansAreCachedPerShape) {
  if (GetParam() != DeviceChoice::kCuda) GTEST_SKIP() << "plans exist on CUDA only";
  const int64_t m = 8, n = 32, k = 64;
  const auto x = random_values(DType::kF16, m * k, 1);
  const auto w = random_values(DType::kF16, n * k, 2);
  Buffer dx = upload(x), dw = upload(w), dy = allocate(m * n * 2);
  GemmArgs a;
  a.m = m;
  a.n = n;
  a.k = k;
  a.x = dx.data();
  a.w = dw.data();
  a.y = dy.data();
  gemm(context_, a, stream());
  const size_t after_first = context_.cached_plan_count();
  for (int i = 0; i < 5; ++i) gemm(context_, a, stream());
  stream_->synchronize();
  EXPECT_EQ(context_.cached_plan_count(), after_first);
  EXPECT_GE(after_first, 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelsOnBackend,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         [](const auto& info) {
                           return info.param == DeviceChoice::kSim ? "Sim" : "Cuda";
                         });

}  // namespace
}  // namespace stowage::kernels
