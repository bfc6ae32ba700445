// The quantization rules of quant/quant_rules.h, each as bitsandbytes
// defines it (FORMATS.md; csrc/kernels.cu and functional.py upstream).
#include "quant/quant_rules.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace stowage::quant_rules {
namespace {

TEST(QuantRulesTest, BlocksizesArePowersOfTwoFrom32To4096) {
  for (int64_t bs = 32; bs <= 4096; bs *= 2) EXPECT_TRUE(is_valid_blocksize(bs)) << bs;
  for (int64_t bs : {0, 1, 16, 48, 96, 8192, -64}) EXPECT_FALSE(is_valid_blocksize(bs)) << bs;
}

TEST(QuantRulesTest, Nf4CodeValuesQuantizeToThemselves) {
  for (int i = 0; i < 16; ++i) EXPECT_EQ(quantize_nf4_value(nf4_code_value(i)), i);
}

TEST(QuantRulesTest, Nf4PicksTheNearestCodeAndTheLowerOneOnAMidpoint) {
  // bitsandbytes' dQuantizeNF4 thresholds: the midpoints of adjacent codes
  // computed in double and written as float literals (so a float midpoint of
  // the float codes may differ from them by one ulp).
  const float thresholds[15] = {
      -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
      -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
      0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
      0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};
  for (int i = 0; i < 15; ++i) {
    const double mid =
        (static_cast<double>(nf4_code_value(i)) + static_cast<double>(nf4_code_value(i + 1))) / 2;
    EXPECT_NEAR(thresholds[i], mid, 1e-7) << i;
    EXPECT_EQ(quantize_nf4_value(thresholds[i]), i) << "on threshold " << i;
    EXPECT_EQ(quantize_nf4_value(std::nextafter(thresholds[i], 2.0f)), i + 1)
        << "above threshold " << i;
  }
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int t = 0; t < 100000; ++t) {
    const float x = u(gen);
    int best = 0;
    for (int i = 1; i < 16; ++i) {
      if (std::fabs(x - nf4_code_value(i)) < std::fabs(x - nf4_code_value(best))) best = i;
    }
    const int got = quantize_nf4_value(x);
    if (got != best) {  // only within float rounding of a midpoint
      EXPECT_NEAR(std::fabs(x - nf4_code_value(got)), std::fabs(x - nf4_code_value(best)), 1e-6)
          << x;
    }
  }
}

TEST(QuantRulesTest, Fp4CodesAndTiesGoToTheSmallerMagnitude) {
  for (int i = 0; i < 16; ++i) {
    if (i == 8) continue;  // -0.0 is not < 0: it maps to code 0
    EXPECT_EQ(quantize_fp4_value(fp4_code_value(i)), i) << i;
  }
  EXPECT_EQ(quantize_fp4_value(-0.0f), 0);
  EXPECT_EQ(quantize_fp4_value(0.29166667f), 7);    // between 0.25 (7) and 0.333 (4)
  EXPECT_EQ(quantize_fp4_value(-0.29166667f), 15);  // -0.25, the smaller magnitude
  EXPECT_EQ(quantize_fp4_value(0.0859375f), 1);
  EXPECT_EQ(quantize_fp4_value(0.9f), 3);
  EXPECT_EQ(quantize_fp4_value(-0.7f), 10);
  EXPECT_FLOAT_EQ(fp4_code_value(11), -1.0f);
  EXPECT_TRUE(std::signbit(fp4_code_value(8)));
}

TEST(QuantRulesTest, AZeroBlockStoresCodeZeroAsBitsandbytes) {
  // absmax 0: scale = inf, 0 * inf = NaN, which every comparison rejects.
  const float x = 0.0f * block_scale(0.0f);
  EXPECT_TRUE(std::isnan(x));
  EXPECT_EQ(quantize_nf4_value(x), 0);
  EXPECT_EQ(quantize_fp4_value(x), 0);
  EXPECT_EQ(nf4_code_value(0) * 0.0f, 0.0f);  // dequantizes to (-)0
}

TEST(QuantRulesTest, PackingPutsTheFirstElementInTheHighNibble) {
  const uint8_t packed[2] = {pack_codes(0xA, 0x3), pack_codes(0xF, 0x0)};
  EXPECT_EQ(packed[0], 0xA3);
  EXPECT_EQ(unpack_code(packed, 0), 0xA);
  EXPECT_EQ(unpack_code(packed, 1), 0x3);
  EXPECT_EQ(unpack_code(packed, 2), 0xF);
  EXPECT_EQ(unpack_code(packed, 3), 0x0);
}

TEST(QuantRulesTest, Int8CodeTakesTheReciprocalFirstAndRoundsHalfToEven) {
  EXPECT_EQ(int8_rowwise_code(3.0f, 3.0f), 127);
  EXPECT_EQ(int8_rowwise_code(-3.0f, 3.0f), -127);
  EXPECT_EQ(int8_rowwise_code(1.0f, 0.0f), 0);  // an all-zero row
  // scb = 127: the scale is 127 * (1 / 127), which rounds to exactly 1.
  ASSERT_EQ(127.0f * (1.0f / 127.0f), 1.0f);
  EXPECT_EQ(int8_rowwise_code(2.5f, 127.0f), 2);
  EXPECT_EQ(int8_rowwise_code(3.5f, 127.0f), 4);
  EXPECT_EQ(int8_rowwise_code(-2.5f, 127.0f), -2);
  // A value where w * 127 / scb and w * (127 * (1 / scb)) round differently
  // would differ from bitsandbytes; check the formula literally.
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int t = 0; t < 10000; ++t) {
    const float scb = std::fabs(u(gen)) + 0.5f;
    const float w = u(gen) * 0.5f;
    EXPECT_EQ(int8_rowwise_code(w, scb),
              static_cast<int8_t>(std::rint(w * (127.0f * (1.0f / scb)))));
  }
}

TEST(QuantRulesTest, DynamicMapIsBitsandbytesSignedMap) {
  std::vector<float> map(256);
  for (int i = 0; i < 256; ++i) map[i] = dynamic_map_value(i);
  for (int i = 0; i < 255; ++i) EXPECT_LT(map[i], map[i + 1]) << i;
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_EQ(map[255], 1.0f);
  // Values printed by torch 2.11 running create_dynamic_map(signed=True).
  EXPECT_EQ(map[0], -0.992968738079071f);
  EXPECT_EQ(map[128], 5.500000384017767e-07f);
  EXPECT_EQ(map[137], 0.0003812500217463821f);
  EXPECT_EQ(map[254], 0.992968738079071f);
  for (int i = 1; i < 127; ++i) EXPECT_EQ(map[127 - i], -map[127 + i]) << i;
}

TEST(QuantRulesTest, DynamicQuantizationFindsTheNearestMapEntry) {
  std::vector<float> map(256);
  for (int i = 0; i < 256; ++i) map[i] = dynamic_map_value(i);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(quantize_dynamic_value(map.data(), map[i]), i) << i;
  std::mt19937 gen(9);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int t = 0; t < 100000; ++t) {
    const float x = u(gen);
    const int got = quantize_dynamic_value(map.data(), x);
    int best = 0;
    for (int i = 1; i < 256; ++i) {
      if (std::fabs(x - map[i]) < std::fabs(x - map[best])) best = i;
    }
    EXPECT_LE(std::fabs(x - map[got]), std::fabs(x - map[best]) + 1e-7f) << x;
  }
  EXPECT_EQ(quantize_dynamic_value(map.data(), std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(QuantRulesTest, NestedOffsetIsTheMeanSummedInDoubleInRuns) {
  EXPECT_EQ(double_quant_offset(nullptr, 0), 0.0f);
  std::vector<float> v(1000);
  double sum = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = 0.001f * static_cast<float>(i) + 0.5f;
    sum += v[i];
  }
  EXPECT_NEAR(double_quant_offset(v.data(), 1000), sum / 1000, 1e-6);
  const float three[] = {1.0f, 2.0f, 4.0f};
  EXPECT_EQ(double_quant_offset(three, 3), static_cast<float>(7.0 / 3.0));
}

TEST(QuantRulesTest, NestedAbsmaxDequantizesWithoutFusedMultiplyAdd) {
  const float map_value = 0.3f, nested = 1.7f, offset = 0.11f;
  const float product = map_value * nested;
  EXPECT_EQ(dequantize_nested_absmax(map_value, nested, offset), product + offset);
}

}  // namespace
}  // namespace stowage::quant_rules
