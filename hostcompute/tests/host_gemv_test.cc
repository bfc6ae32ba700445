// HostGemv's specification: every weight format on every instruction set
// this CPU runs, against a float64 reference over the same dequantized
// weights; the same bits for any thread count, any batch and every call;
// argument errors that say what was expected and what was found.
#include "hostcompute/host_gemv.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/quant_rules.h"

namespace stowage::hostcompute {
namespace {

// A weight in one format plus its dequantized float32 values (what the
// kernels must multiply), owning every array the weight view points to.
struct TestWeight {
  quant::WeightView weight;
  std::vector<float> dequantized;  // [n, k]
  std::vector<uint16_t> halves;
  std::vector<int8_t> codes8;
  std::vector<float> scb;
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
  std::vector<uint8_t> absmax_codes;
  std::vector<float> nested_absmax;
};

enum class Case { kBF16, kF16, kInt8, kNf4, kFp4, kNf4Double, kFp4Double };

const char* case_name(Case c) {
  switch (c) {
    case Case::kBF16:
      return "bf16";
    case Case::kF16:
      return "f16";
    case Case::kInt8:
      return "int8";
    case Case::kNf4:
      return "nf4";
    case Case::kFp4:
      return "fp4";
    case Case::kNf4Double:
      return "nf4_double_quant";
    case Case::kFp4Double:
      return "fp4_double_quant";
  }
  return "?";
}

TestWeight make_weight(Case c, int64_t n, int64_t k, uint32_t seed, int64_t blocksize = 64) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  TestWeight t;
  t.weight.out = n;
  t.weight.in = k;
  const int64_t count = n * k;
  t.dequantized.resize(static_cast<size_t>(count));
  switch (c) {
    case Case::kBF16:
    case Case::kF16: {
      const bool bf16 = c == Case::kBF16;
      t.weight.format = quant::WeightFormat::kFloat;
      t.weight.dtype = bf16 ? DType::kBF16 : DType::kF16;
      t.halves.resize(static_cast<size_t>(count));
      for (int64_t e = 0; e < count; ++e) {
        const float v = value(rng);
        t.halves[e] = bf16 ? float_to_bfloat16_bits(v) : float_to_half_bits(v);
        t.dequantized[e] =
            bf16 ? bfloat16_bits_to_float(t.halves[e]) : half_bits_to_float(t.halves[e]);
      }
      t.weight.data = t.halves.data();
      break;
    }
    case Case::kInt8: {
      t.weight.format = quant::WeightFormat::kInt8;
      t.weight.dtype = DType::kI8;
      t.codes8.resize(static_cast<size_t>(count));
      t.scb.resize(static_cast<size_t>(n));
      std::uniform_int_distribution<int> code(-127, 127);
      for (int64_t r = 0; r < n; ++r) t.scb[r] = 0.05f + std::abs(value(rng)) * 3.0f;
      for (int64_t e = 0; e < count; ++e) {
        t.codes8[e] = static_cast<int8_t>(code(rng));
        // models/linear_host.cc's dequantization.
        t.dequantized[e] = static_cast<float>(t.codes8[e]) * (t.scb[e / k] / 127.0f);
      }
      t.weight.data = t.codes8.data();
      t.weight.scb = t.scb.data();
      break;
    }
    default: {
      const bool fp4 = c == Case::kFp4 || c == Case::kFp4Double;
      const bool double_quant = c == Case::kNf4Double || c == Case::kFp4Double;
      const auto type = fp4 ? quant::WeightFormat::kFp4 : quant::WeightFormat::kNf4;
      t.weight.format = type;
      t.weight.dtype = DType::kU8;
      t.weight.blocksize = blocksize;
      t.packed.resize(static_cast<size_t>((count + 1) / 2));
      std::uniform_int_distribution<int> byte(0, 255);
      for (uint8_t& b : t.packed) b = static_cast<uint8_t>(byte(rng));
      const int64_t blocks = (count + blocksize - 1) / blocksize;
      std::vector<float> block_absmax(static_cast<size_t>(blocks));
      if (double_quant) {
        const int64_t nested = (blocks + 255) / 256;
        t.absmax_codes.resize(static_cast<size_t>(blocks));
        t.nested_absmax.resize(static_cast<size_t>(nested));
        for (uint8_t& b : t.absmax_codes) b = static_cast<uint8_t>(byte(rng));
        for (float& a : t.nested_absmax) a = 0.5f + std::abs(value(rng));
        t.weight.absmax_codes = t.absmax_codes.data();
        t.weight.nested_absmax = t.nested_absmax.data();
        t.weight.nested_offset = 1.25f;
        for (int64_t b = 0; b < blocks; ++b) {
          block_absmax[b] = quant_rules::dequantize_nested_absmax(
              quant_rules::dynamic_map_value(t.absmax_codes[b]), t.nested_absmax[b / 256], 1.25f);
        }
      } else {
        t.absmax.resize(static_cast<size_t>(blocks));
        for (float& a : t.absmax) a = 0.01f + std::abs(value(rng)) * 2.0f;
        t.weight.absmax = t.absmax.data();
        block_absmax = t.absmax;
      }
      for (int64_t e = 0; e < count; ++e) {
        t.dequantized[e] =
            quant_rules::four_bit_code_value(type, quant_rules::unpack_code(t.packed.data(), e)) *
            block_absmax[e / blocksize];
      }
      t.weight.data = t.packed.data();
      break;
    }
  }
  return t;
}

std::vector<float> random_floats(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& f : v) f = value(rng);
  return v;
}

std::vector<HostIsa> isas_of_this_cpu() {
  std::vector<HostIsa> isas{HostIsa::kScalar};
  if (best_host_isa() >= HostIsa::kAvx2) isas.push_back(HostIsa::kAvx2);
  if (best_host_isa() >= HostIsa::kAvx512) isas.push_back(HostIsa::kAvx512);
  return isas;
}

HostLinearArgs make_args(const TestWeight& w, const float* x, int64_t m, int64_t n, int64_t k,
                         float* y) {
  HostLinearArgs args;
  args.m = m;
  args.x = x;
  args.weight = w.weight;
  args.weight.out = n;
  args.weight.in = k;
  args.y = y;
  return args;
}

std::vector<float> run(HostGemv& gemv, const TestWeight& w, const std::vector<float>& x, int64_t m,
                       int64_t n, int64_t k, const float* bias) {
  std::vector<float> y(static_cast<size_t>(m * n), std::numeric_limits<float>::quiet_NaN());
  HostLinearArgs args = make_args(w, x.data(), m, n, k, y.data());
  args.bias = bias;
  gemv.linear(args);
  return y;
}

// The tolerance: a float32 sum of k products split over 4 accumulators per
// vector lane, then reduced, is a recursive sum of at most k / 4 + 8 terms, so
// its error is within (k / 4 + 8) * 2^-24 * sum |w x| (plus half an ulp of the bias).
void expect_near_reference(const std::vector<float>& y, const TestWeight& w,
                           const std::vector<float>& x, int64_t m, int64_t n, int64_t k,
                           const float* bias, const std::string& what) {
  const double unit = std::ldexp(1.0, -24);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double exact = bias != nullptr ? bias[r] : 0.0;
      double magnitude = bias != nullptr ? std::abs(bias[r]) : 0.0;
      for (int64_t c = 0; c < k; ++c) {
        const double p = static_cast<double>(w.dequantized[r * k + c]) * x[i * k + c];
        exact += p;
        magnitude += std::abs(p);
      }
      const double tolerance = (static_cast<double>(k) / 4 + 8) * unit * magnitude + 1e-30;
      ASSERT_NEAR(y[i * n + r], exact, tolerance) << what << " row " << i << " output " << r;
    }
  }
}

const Case kAllCases[] = {Case::kBF16, Case::kF16,       Case::kInt8,     Case::kNf4,
                          Case::kFp4,  Case::kNf4Double, Case::kFp4Double};

// Row lengths that take every path of every instruction set. The fused path
// (weights decoded in registers) takes rows of whole groups of 4 vectors:
// 64 elements on AVX-512, 32 on AVX2; other rows take the segment path.
//   2112: fused on both (33 groups of 64: several segments and tiles at m >= 2,
//         4-bit rows of 33 blocks crossing nested blocks of 256);
//   2080: fused on AVX2, the segment path with a partial vector group on AVX-512;
//   200:  the segment path on both (4-bit blocks cross rows);
//   2053: odd, over two segments (4-bit rows start mid-byte).
const int64_t kRowLengths[] = {2112, 2080, 200, 2053};

// Every format on every instruction set, batches 1..8 and 19 (several passes
// of the fused path's 4 rows), with and without bias; n = 37 rows split
// unevenly between 2 threads and into the fused path's groups of rows.
TEST(HostGemvTest, EveryFormatMatchesFloat64ReferenceOnEveryInstructionSet) {
  const int64_t n = 37;
  for (int64_t k : kRowLengths) {
    for (Case c : kAllCases) {
      const TestWeight w = make_weight(c, n, k, static_cast<uint32_t>(k) * 7 + static_cast<int>(c));
      const std::vector<float> bias = random_floats(n, 99);
      for (HostIsa isa : isas_of_this_cpu()) {
        HostGemv gemv(2, isa);
        for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 19}) {
          const std::vector<float> x = random_floats(m * k, static_cast<uint32_t>(m));
          for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
            const std::string what = fmt::format("{} on {}, k {} m {} {}", case_name(c),
                                                 host_isa_name(isa), k, m, b ? "bias" : "no bias");
            expect_near_reference(run(gemv, w, x, m, n, k, b), w, x, m, n, k, b, what);
          }
        }
      }
    }
  }
}

// Every 4-bit blocksize bitsandbytes writes, with rows of whole vector groups
// (the fused path where the blocksize is a whole number of groups: 32 takes
// the segment path on AVX-512) and rows shorter than a block (4096: rows start
// mid-block).
TEST(HostGemvTest, FourBitBlocksizesMatchReference) {
  const int64_t n = 9;
  for (int64_t k : {256, 448}) {
    for (int64_t blocksize : {32, 64, 128, 256, 512, 1024, 2048, 4096}) {
      for (Case c : {Case::kNf4, Case::kFp4, Case::kNf4Double, Case::kFp4Double}) {
        const TestWeight w = make_weight(c, n, k, 5, blocksize);
        for (HostIsa isa : isas_of_this_cpu()) {
          HostGemv gemv(2, isa);
          for (int64_t m : {1, 3, 8}) {
            const std::vector<float> x = random_floats(m * k, 6);
            expect_near_reference(run(gemv, w, x, m, n, k, nullptr), w, x, m, n, k, nullptr,
                                  fmt::format("{} blocksize {} on {}, k {} m {}", case_name(c),
                                              blocksize, host_isa_name(isa), k, m));
          }
        }
      }
    }
  }
}

// Determinism: each output is summed by one thread in an order fixed by k,
// so 1, 2, 3 and 5 threads give the same bits (n = 37 splits unevenly, and
// the fused path's groups of rows fall differently in each share).
TEST(HostGemvTest, AnyThreadCountGivesIdenticalBits) {
  const int64_t n = 37, m = 5;
  for (int64_t k : {2112, 2053}) {
    for (Case c : kAllCases) {
      const TestWeight w = make_weight(c, n, k, 11);
      for (int64_t batch : {int64_t{1}, m}) {
        const std::vector<float> x = random_floats(batch * k, 12);
        for (HostIsa isa : isas_of_this_cpu()) {
          HostGemv one(1, isa);
          const std::vector<float> expected = run(one, w, x, batch, n, k, nullptr);
          for (int threads : {2, 3, 5}) {
            HostGemv many(threads, isa);
            const std::vector<float> y = run(many, w, x, batch, n, k, nullptr);
            EXPECT_EQ(0, std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)))
                << case_name(c) << " on " << host_isa_name(isa) << " k " << k << " m " << batch
                << " with " << threads << " threads";
          }
        }
      }
    }
  }
}

// A layer's projections in one pass of the team (linear_batch) give each
// output the bits of its own linear() call: the concatenated rows split
// across members at other places than each call's rows, with every format,
// batch sizes 1 and 3, an empty call among them, and 1, 3 and 4 threads.
TEST(HostGemvTest, OnePassOverSeveralLinearsGivesEachCallsBits) {
  const int64_t k = 2112;
  const std::vector<int64_t> rows = {37, 5, 64};
  for (Case c : kAllCases) {
    std::vector<TestWeight> weights;
    for (size_t i = 0; i < rows.size(); ++i) {
      weights.push_back(make_weight(c, rows[i], k, 21 + static_cast<int>(i)));
    }
    for (int64_t m : {int64_t{1}, int64_t{3}}) {
      const std::vector<float> x = random_floats(m * k, 22);
      for (int threads : {1, 3, 4}) {
        HostGemv gemv(threads);
        std::vector<std::vector<float>> alone, together;
        std::vector<HostLinearArgs> args;
        for (size_t i = 0; i < rows.size(); ++i) {
          alone.push_back(run(gemv, weights[i], x, m, rows[i], k, nullptr));
          together.emplace_back(static_cast<size_t>(m * rows[i]),
                                std::numeric_limits<float>::quiet_NaN());
        }
        for (size_t i = 0; i < rows.size(); ++i) {
          args.push_back(make_args(weights[i], x.data(), m, rows[i], k, together[i].data()));
        }
        HostLinearArgs empty = args[0];
        empty.weight.out = 0;
        args.insert(args.begin() + 1, empty);
        gemv.linear_batch(args.data(), static_cast<int>(args.size()));
        for (size_t i = 0; i < rows.size(); ++i) {
          EXPECT_EQ(0, std::memcmp(together[i].data(), alone[i].data(),
                                   together[i].size() * sizeof(float)))
              << case_name(c) << " linear " << i << " m " << m << " with " << threads
              << " threads";
        }
      }
    }
  }
  HostGemv gemv(2);
  HostLinearArgs bad;
  bad.m = -1;
  try {
    gemv.linear_batch(&bad, 1);
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("non-negative sizes"), std::string::npos) << e.what();
  }
}

// The batch is cut into passes of rows, tiles and segments that share the
// weight; none of that may change a row's sum: row i of a batch of 11 equals
// row i computed alone, on both paths.
TEST(HostGemvTest, BatchRowEqualsTheRowComputedAlone) {
  const int64_t n = 13, m = 11;
  for (int64_t k : {448, 352}) {
    for (Case c : kAllCases) {
      const TestWeight w = make_weight(c, n, k, 21);
      const std::vector<float> x = random_floats(m * k, 22);
      for (HostIsa isa : isas_of_this_cpu()) {
        HostGemv gemv(2, isa);
        const std::vector<float> batch = run(gemv, w, x, m, n, k, nullptr);
        for (int64_t i = 0; i < m; ++i) {
          const std::vector<float> xi(x.begin() + i * k, x.begin() + (i + 1) * k);
          const std::vector<float> alone = run(gemv, w, xi, 1, n, k, nullptr);
          EXPECT_EQ(0, std::memcmp(alone.data(), batch.data() + i * n, n * sizeof(float)))
              << case_name(c) << " on " << host_isa_name(isa) << " k " << k << " row " << i;
        }
      }
    }
  }
}

TEST(HostGemvTest, RepeatedCallsGiveIdenticalBits) {
  const int64_t n = 64, k = 1000, m = 2;
  const TestWeight w = make_weight(Case::kF16, n, k, 31);
  const std::vector<float> x = random_floats(m * k, 32);
  HostGemv gemv(3);
  const std::vector<float> first = run(gemv, w, x, m, n, k, nullptr);
  for (int call = 0; call < 20; ++call) {
    EXPECT_EQ(0, std::memcmp(run(gemv, w, x, m, n, k, nullptr).data(), first.data(),
                             first.size() * sizeof(float)));
  }
}

// A file's quant_map and nested_quant_map hold the standard tables: passing
// them gives the same bits as leaving them null.
TEST(HostGemvTest, GivenStandardCodeTablesEqualTheDefaults) {
  const int64_t n = 8, k = 128, m = 1;
  TestWeight w = make_weight(Case::kNf4Double, n, k, 41);
  const std::vector<float> x = random_floats(m * k, 42);
  HostGemv gemv(1);
  const std::vector<float> by_default = run(gemv, w, x, m, n, k, nullptr);
  float code[16], nested[256];
  for (int q = 0; q < 16; ++q) code[q] = quant_rules::nf4_code_value(q);
  for (int q = 0; q < 256; ++q) nested[q] = quant_rules::dynamic_map_value(q);
  w.weight.quant_map = code;
  w.weight.nested_quant_map = nested;
  const std::vector<float> given = run(gemv, w, x, m, n, k, nullptr);
  EXPECT_EQ(0, std::memcmp(given.data(), by_default.data(), given.size() * sizeof(float)));
}

TEST(HostGemvTest, SixteenBitBiasIsWidened) {
  const int64_t n = 5, k = 64, m = 2;
  const TestWeight w = make_weight(Case::kBF16, n, k, 51);
  const std::vector<float> x = random_floats(m * k, 52);
  std::vector<uint16_t> bias16(n);
  std::vector<float> bias32(n);
  for (int64_t r = 0; r < n; ++r) {
    bias16[r] = float_to_half_bits(0.25f * static_cast<float>(r) - 0.5f);
    bias32[r] = half_bits_to_float(bias16[r]);
  }
  HostGemv gemv(2);
  std::vector<float> y(m * n);
  HostLinearArgs args = make_args(w, x.data(), m, n, k, y.data());
  args.bias = bias16.data();
  args.bias_dtype = DType::kF16;
  gemv.linear(args);
  EXPECT_EQ(y, run(gemv, w, x, m, n, k, bias32.data()));
}

TEST(HostGemvTest, ReluClampsNegativeOutputsToZero) {
  const int64_t n = 23, k = 96, m = 3;
  for (Case c : {Case::kF16, Case::kFp4}) {
    const TestWeight w = make_weight(c, n, k, 55);
    const std::vector<float> x = random_floats(m * k, 56);
    const std::vector<float> bias = random_floats(n, 57);
    HostGemv gemv(2);
    const std::vector<float> plain = run(gemv, w, x, m, n, k, bias.data());
    std::vector<float> y(m * n);
    HostLinearArgs args = make_args(w, x.data(), m, n, k, y.data());
    args.bias = bias.data();
    args.relu = true;
    gemv.linear(args);
    int negatives = 0;
    for (size_t e = 0; e < y.size(); ++e) {
      negatives += plain[e] < 0.0f;
      EXPECT_EQ(y[e], plain[e] < 0.0f ? 0.0f : plain[e]) << case_name(c) << " element " << e;
    }
    EXPECT_GT(negatives, 0);  // the case exercises the clamp
  }
}

TEST(HostGemvTest, EmptyInputGivesTheBias) {
  const float bias[3] = {1.0f, -2.0f, 3.5f};
  HostGemv gemv(2);
  HostLinearArgs args;
  args.m = 2;
  args.weight.out = 3;
  args.weight.in = 0;
  args.bias = bias;
  std::vector<float> y(6, -7.0f);
  args.y = y.data();
  gemv.linear(args);
  EXPECT_EQ(y, (std::vector<float>{1.0f, -2.0f, 3.5f, 1.0f, -2.0f, 3.5f}));
}

// Thread safety: calls from several threads on one object run one after
// another, each with its own correct result.
TEST(HostGemvTest, CallsFromSeveralThreadsEachGetTheirResult) {
  const int64_t n = 40, k = 300, m = 2;
  const TestWeight w = make_weight(Case::kInt8, n, k, 61);
  HostGemv gemv(2);
  std::vector<std::vector<float>> inputs, expected, results(4);
  for (int t = 0; t < 4; ++t) {
    inputs.push_back(random_floats(m * k, 70 + t));
    expected.push_back(run(gemv, w, inputs[t], m, n, k, nullptr));
  }
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int call = 0; call < 10; ++call) results[t] = run(gemv, w, inputs[t], m, n, k, nullptr);
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(results[t], expected[t]) << "caller " << t;
}

// Each bad argument is refused before anything is written, naming what was
// expected and what was found.
TEST(HostGemvTest, BadArgumentsThrowInvalidInputNamingExpectedAndFound) {
  const int64_t n = 4, k = 64, m = 1;
  TestWeight nf4 = make_weight(Case::kNf4, n, k, 81);
  TestWeight int8 = make_weight(Case::kInt8, n, k, 82);
  const std::vector<float> x = random_floats(m * k, 83);
  std::vector<float> y(n, 0.0f);
  HostGemv gemv(2);
  auto base = [&](const TestWeight& w) { return make_args(w, x.data(), m, n, k, y.data()); };
  auto expect_error = [&](const HostLinearArgs& a, const std::string& fragment) {
    try {
      gemv.linear(a);
      ADD_FAILURE() << "no error for: " << fragment;
    } catch (const InvalidInputError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("expected"), std::string::npos) << e.what();
    }
  };
  HostLinearArgs a = base(nf4);
  a.m = -1;
  expect_error(a, "found m -1");
  a = base(nf4);
  a.x = nullptr;
  expect_error(a, "input x of [1, 64] floats, found a null pointer");
  a = base(nf4);
  a.y = nullptr;
  expect_error(a, "output y of [1, 4] floats, found a null pointer");
  a = base(nf4);
  a.weight.data = nullptr;
  expect_error(a, "nf4 weight data for [4, 64], found a null pointer");
  a = base(int8);
  a.weight.scb = nullptr;
  expect_error(a, "row scales SCB of 4 floats, found a null pointer");
  a = base(nf4);
  a.weight.blocksize = 0;
  expect_error(a, "positive nf4 blocksize, found 0");
  a = base(nf4);
  a.weight.absmax = nullptr;
  expect_error(a, "absmax codes (4 blocks), found neither");
  a = base(nf4);
  const uint8_t codes[4] = {};
  a.weight.absmax_codes = codes;
  expect_error(a, "found both");
  a = base(nf4);
  a.weight.absmax = nullptr;
  a.weight.absmax_codes = codes;
  expect_error(a, "nested_absmax of 1 floats with double quantization, found a null pointer");
  a.weight.nested_absmax = nf4.absmax.data();
  a.weight.nested_blocksize = 0;
  expect_error(a, "positive nested blocksize, found 0");
  a = base(nf4);
  a.bias = x.data();
  a.bias_dtype = DType::kI8;
  expect_error(a, "bias dtype of f32, f16 or bf16, found i8");
  EXPECT_EQ(y, std::vector<float>(n, 0.0f));  // nothing written
  try {
    HostGemv none(0);
    ADD_FAILURE() << "no error for 0 threads";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("expected at least 1 thread, found 0"), std::string::npos)
        << e.what();
  }
}

TEST(HostGemvTest, WeightBytesCountTheQuantState) {
  quant::WeightView w;
  w.out = 4;
  w.in = 64;
  w.dtype = DType::kBF16;
  EXPECT_EQ(w.bytes(), 512u);
  w.format = quant::WeightFormat::kInt8;
  EXPECT_EQ(w.bytes(), 256u + 16u);
  w.format = quant::WeightFormat::kNf4;
  w.blocksize = 64;
  EXPECT_EQ(w.bytes(), 128u + 4u * 4u);
  const uint8_t codes[1] = {};
  w.absmax_codes = codes;
  EXPECT_EQ(w.bytes(), 128u + 4u + 4u);
}

}  // namespace
}  // namespace stowage::hostcompute
