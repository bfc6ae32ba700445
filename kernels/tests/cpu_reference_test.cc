// The CPU counterparts against float64 references, and the public calls'
// argument checks and dispatch on null and sim streams.
#include "kernels/cpu_reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/platform.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/nf4_matmul.h"
#include "kernels/quantize.h"
#include "kernels/tests/test_util.h"

namespace stowage::kernels {
namespace {

using test_util::from_floats;
using test_util::random_values;
using test_util::reference_matmul;
using test_util::relative_error;
using test_util::to_floats;

TEST(CpuGemmTest, MatchesFloat64ReferenceForEveryDtype) {
  const int64_t m = 7, n = 13, k = 300;
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    for (DType out : {DType::kF32, dtype}) {
      for (bool relu : {false, true}) {
        const auto x = random_values(dtype, m * k, 1);
        const auto w = random_values(dtype, n * k, 2);
        const auto bias = random_values(out, n, 3);
        std::vector<uint8_t> y(m * n * dtype_size(out));
        GemmArgs a;
        a.m = m;
        a.n = n;
        a.k = k;
        a.dtype = dtype;
        a.out_dtype = out;
        a.x = x.data();
        a.w = w.data();
        a.bias = bias.data();
        a.relu = relu;
        a.y = y.data();
        cpu::gemm(a);
        const std::vector<float> bias_f = to_floats(bias.data(), out, n);
        const auto ref =
            reference_matmul(to_floats(x.data(), dtype, m * k), to_floats(w.data(), dtype, n * k),
                             &bias_f, m, n, k, relu);
        const double tol = out == DType::kF32 ? 1e-5 : out == DType::kF16 ? 1e-3 : 8e-3;
        EXPECT_LT(relative_error(to_floats(y.data(), out, m * n), ref), tol)
            << short_name(dtype) << " -> " << short_name(out) << " relu " << relu;
      }
    }
  }
}

// W [n, k] as float, quantized row-wise; returns the dequantized weight.
std::vector<float> int8_weight(int64_t n, int64_t k, std::vector<int8_t>* cb,
                               std::vector<float>* scb) {
  const auto w = random_values(DType::kF32, n * k, 42, 0.05f);
  cb->resize(n * k);
  scb->resize(n);
  cpu::quantize_int8_rowwise(w.data(), DType::kF32, n, k, cb->data(), scb->data());
  std::vector<float> deq(n * k);
  cpu::dequantize_int8_rowwise(cb->data(), scb->data(), n, k, deq.data(), DType::kF32);
  return deq;
}

TEST(CpuInt8MatmulTest, WithoutOutliersMatchesTheDequantizedProduct) {
  const int64_t m = 9, n = 24, k = 256;
  std::vector<int8_t> cb;
  std::vector<float> scb;
  const std::vector<float> w = int8_weight(n, k, &cb, &scb);
  const auto x = random_values(DType::kF32, m * k, 5);
  std::vector<float> y(m * n);
  Int8MatmulArgs a;
  a.m = m;
  a.n = n;
  a.k = k;
  a.dtype = DType::kF32;
  a.x = x.data();
  a.cb = cb.data();
  a.scb = scb.data();
  a.threshold = 0.0f;
  a.y = y.data();
  cpu::int8_matmul(a);
  const auto ref = reference_matmul(to_floats(x.data(), DType::kF32, m * k), w, nullptr, m, n, k);
  EXPECT_LT(relative_error(y, ref), 2e-2);  // int8 activations: ~1% error
}

TEST(CpuInt8MatmulTest, AnOutlierColumnKeepsFloatAccuracyInsteadOfBeingQuantized) {
  // Seed lesson (LLM.int8): one large activation column must not destroy the
  // int8 precision of the rest, nor be clipped.
  const int64_t m = 8, n = 32, k = 512;
  std::vector<int8_t> cb;
  std::vector<float> scb;
  const std::vector<float> w = int8_weight(n, k, &cb, &scb);
  std::vector<float> xf =
      to_floats(random_values(DType::kF32, m * k, 6).data(), DType::kF32, m * k);
  for (int64_t r = 0; r < m; ++r) xf[r * k + 17] = 60.0f + r;  // column 17 is an outlier
  const auto x = from_floats(xf, DType::kF16);
  const std::vector<float> xr = to_floats(x.data(), DType::kF16, m * k);
  const auto ref = reference_matmul(xr, w, nullptr, m, n, k);

  auto run = [&](float threshold) {
    std::vector<uint8_t> y(m * n * 2);
    Int8MatmulArgs a;
    a.m = m;
    a.n = n;
    a.k = k;
    a.dtype = DType::kF16;
    a.x = x.data();
    a.cb = cb.data();
    a.scb = scb.data();
    a.threshold = threshold;
    a.y = y.data();
    cpu::int8_matmul(a);
    return relative_error(to_floats(y.data(), DType::kF16, m * n), ref);
  };
  const double with_outliers = run(6.0f);
  const double plain_int8 = run(0.0f);
  EXPECT_LT(with_outliers, 1e-2);
  EXPECT_GT(plain_int8, 3 * with_outliers);
}

TEST(CpuFourBitMatmulTest, MatchesDequantizeThenFloat64Product) {
  const int64_t n = 20, k = 192;
  for (quant::WeightFormat type : {quant::WeightFormat::kNf4, quant::WeightFormat::kFp4}) {
    for (bool nested : {false, true}) {
      for (int64_t m : {1, 3, 6}) {
        const int64_t numel = n * k, bs = 64, blocks = numel / bs;
        const auto wsrc = random_values(DType::kF32, numel, 8);
        std::vector<uint8_t> packed(numel / 2);
        std::vector<float> absmax(blocks);
        cpu::quantize_4bit(wsrc.data(), DType::kF32, numel, bs, type, packed.data(), absmax.data());
        std::vector<uint8_t> codes(blocks);
        std::vector<float> nested_absmax(1);
        float offset = 0;
        cpu::double_quantize_absmax(absmax.data(), blocks, &offset, codes.data(),
                                    nested_absmax.data());
        std::vector<float> used_absmax = absmax;
        if (nested) {
          cpu::dequantize_absmax(codes.data(), nested_absmax.data(), offset, blocks,
                                 used_absmax.data());
        }
        std::vector<float> w(numel);
        cpu::dequantize_4bit(packed.data(), used_absmax.data(), numel, bs, type, w.data(),
                             DType::kF32);
        const auto x = random_values(DType::kF32, m * k, 9);
        const auto bias = random_values(DType::kF32, n, 10);
        std::vector<float> y(m * n);
        FourBitMatmulArgs a;
        a.m = m;
        a.weight.out = n;
        a.weight.in = k;
        a.dtype = DType::kF32;
        a.x = x.data();
        a.bias = bias.data();
        a.y = y.data();
        a.weight.data = packed.data();
        a.weight.format = type;
        a.weight.blocksize = bs;
        a.weight.absmax = nested ? nullptr : absmax.data();
        a.weight.absmax_codes = nested ? codes.data() : nullptr;
        a.weight.nested_absmax = nested ? nested_absmax.data() : nullptr;
        a.weight.nested_offset = offset;
        cpu::four_bit_matmul(a);
        const std::vector<float> bias_f = to_floats(bias.data(), DType::kF32, n);
        const auto ref =
            reference_matmul(to_floats(x.data(), DType::kF32, m * k), w, &bias_f, m, n, k);
        EXPECT_LT(relative_error(y, ref), 1e-5);
      }
    }
  }
}

TEST(CpuQuantizeTest, Nf4RoundTripErrorIsBoundedByHalfTheLargestCodeGap) {
  const int64_t numel = 4096, bs = 64;
  const auto x = random_values(DType::kF32, numel, 11);
  std::vector<uint8_t> packed(numel / 2);
  std::vector<float> absmax(numel / bs), back(numel);
  cpu::quantize_4bit(x.data(), DType::kF32, numel, bs, quant::WeightFormat::kNf4, packed.data(),
                     absmax.data());
  cpu::dequantize_4bit(packed.data(), absmax.data(), numel, bs, quant::WeightFormat::kNf4,
                       back.data(), DType::kF32);
  const std::vector<float> xf = to_floats(x.data(), DType::kF32, numel);
  for (int64_t i = 0; i < numel; ++i) {
    // The largest gap between adjacent NF4 codes is -0.6961928 - (-1) =
    // 0.3038, so the error is at most 0.1519 * absmax.
    EXPECT_LE(std::fabs(back[i] - xf[i]), 0.152f * absmax[i / bs] + 1e-6f) << i;
  }
}

TEST(CpuQuantizeTest, AnOddCountPadsTheLastLowNibbleWithTheCodeOfZero) {
  const std::vector<float> x = {0.5f, -1.0f, 0.25f};
  std::vector<uint8_t> packed(2);
  float absmax = 0;
  cpu::quantize_4bit(x.data(), DType::kF32, 3, 32, quant::WeightFormat::kNf4, packed.data(),
                     &absmax);
  EXPECT_EQ(absmax, 1.0f);
  EXPECT_EQ(packed[1] >> 4, quant_rules::quantize_nf4_value(0.25f));
  EXPECT_EQ(packed[1] & 15, 7);  // NF4's 0.0, as bitsandbytes' zero-padded load gives
}

TEST(CpuQuantizeTest, DoubleQuantizedAbsmaxDequantizesClose) {
  const int64_t count = 1000;
  std::vector<float> absmax(count);
  for (int64_t i = 0; i < count; ++i) absmax[i] = 0.5f + 0.001f * static_cast<float>(i % 97);
  std::vector<uint8_t> codes(count);
  std::vector<float> nested(quant_rules::nested_block_count(count)), back(count);
  float offset = 0;
  cpu::double_quantize_absmax(absmax.data(), count, &offset, codes.data(), nested.data());
  cpu::dequantize_absmax(codes.data(), nested.data(), offset, count, back.data());
  for (int64_t i = 0; i < count; ++i) EXPECT_NEAR(back[i], absmax[i], 2e-3) << i;
}

TEST(KernelsApiTest, BadArgumentsAreInvalidInputErrorsNamingWhatWasExpected) {
  float f[4] = {0, 0, 0, 0};
  uint8_t p[4] = {0, 0, 0, 0};
  try {
    quantize_4bit(f, DType::kF32, 4, 48, quant::WeightFormat::kNf4, p, f, StreamRef());
    FAIL() << "blocksize 48 accepted";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("power of two in 32..4096, found 48"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(quantize_4bit(f, DType::kI8, 4, 64, quant::WeightFormat::kNf4, p, f, StreamRef()),
               InvalidInputError);
  EXPECT_THROW(quantize_int8_rowwise(f, DType::kF32, -1, 4, nullptr, f, StreamRef()),
               InvalidInputError);
  CublasLtContext context;
  GemmArgs g;
  g.m = g.n = g.k = 1;
  g.dtype = DType::kF16;
  g.out_dtype = DType::kBF16;
  g.x = g.w = g.y = f;
  try {
    gemm(context, g, StreamRef());
    FAIL() << "f16 -> bf16 accepted";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("found bf16"), std::string::npos) << e.what();
  }
  g.out_dtype = DType::kF16;
  g.w = nullptr;
  EXPECT_THROW(gemm(context, g, StreamRef()), InvalidInputError);
  FourBitMatmulArgs fb;
  fb.m = fb.weight.out = fb.weight.in = 2;
  fb.weight.format = quant::WeightFormat::kNf4;
  fb.x = fb.y = f;
  fb.weight.data = p;
  EXPECT_THROW(four_bit_matmul(context, fb, StreamRef()), InvalidInputError);  // no absmax
  Int8MatmulArgs i8;
  i8.threshold = -1.0f;
  EXPECT_THROW(int8_matmul(context, i8, StreamRef()), InvalidInputError);
}

TEST(KernelsApiTest, SimStreamRunsTheCpuCounterpartInStreamOrder) {
  auto platform = Platform::create(DeviceChoice::kSim);
  Stream stream = platform->accelerator(0).create_stream();
  const int64_t numel = 1000;
  const auto x = random_values(DType::kBF16, numel, 12);
  std::vector<uint8_t> want(numel / 2), got(numel / 2);
  std::vector<float> want_absmax(16), got_absmax(16);
  cpu::quantize_4bit(x.data(), DType::kBF16, numel, 64, quant::WeightFormat::kFp4, want.data(),
                     want_absmax.data());
  quantize_4bit(x.data(), DType::kBF16, numel, 64, quant::WeightFormat::kFp4, got.data(),
                got_absmax.data(), stream);
  stream.synchronize();
  EXPECT_EQ(got, want);
  EXPECT_EQ(got_absmax, want_absmax);
  EXPECT_EQ(quant_rules::packed_code_bytes(numel), 500);
  EXPECT_EQ(quant_rules::block_count(numel, 64), 16);
}

TEST(KernelsApiTest, ANullStreamRunsNowOnTheCallingThread) {
  const std::vector<float> w = {1.0f, -2.0f, 0.5f, 0.0f};
  std::vector<int8_t> cb(4);
  std::vector<float> scb(2);
  quantize_int8_rowwise(w.data(), DType::kF32, 2, 2, cb.data(), scb.data(), StreamRef());
  EXPECT_EQ(scb, (std::vector<float>{2.0f, 0.5f}));
  EXPECT_EQ(cb, (std::vector<int8_t>{64, -127, 127, 0}));
}

}  // namespace
}  // namespace stowage::kernels
