#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace stowage {
namespace {

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Reference: round a float to binary16 via double arithmetic, ties to even.
uint16_t reference_half(float value) {
  if (std::isnan(value)) return 0x7e00;
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  double a = std::fabs(static_cast<double>(value));
  if (a >= 65520.0) return sign | 0x7c00;
  // Quantum: 2^-24 below 2^-14, else 2^(e-10).
  int e = a == 0 ? -30 : static_cast<int>(std::floor(std::log2(a)));
  if (e < -14) e = -14;
  const double quantum = std::ldexp(1.0, e - 10);
  double q = a / quantum;
  double r = std::nearbyint(q);  // default rounding mode: ties to even
  double rounded = r * quantum;
  // Encode exactly.
  if (rounded == 0) return sign;
  int re = static_cast<int>(std::floor(std::log2(rounded)));
  if (re < -14) return sign | static_cast<uint16_t>(rounded / std::ldexp(1.0, -24));
  const uint16_t mant = static_cast<uint16_t>(rounded / std::ldexp(1.0, re - 10) - 1024);
  return sign | static_cast<uint16_t>((re + 15) << 10) | mant;
}

TEST(DTypeTest, SizesAndSafetensorsNamesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                  DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64, DType::kBool, DType::kF8E4M3,
                  DType::kF8E5M2}) {
    auto parsed = dtype_from_safetensors_name(safetensors_name(d));
    ASSERT_TRUE(parsed.has_value()) << safetensors_name(d);
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF64), 8u);
  EXPECT_EQ(dtype_bytes_for(DType::kPacked4, 7), 4u);
  EXPECT_EQ(dtype_bytes_for(DType::kPacked4, 8), 4u);
  EXPECT_FALSE(dtype_from_safetensors_name("F4").has_value());
  EXPECT_EQ(dtype_from_torch_name("bfloat16"), DType::kBF16);
  EXPECT_EQ(dtype_from_torch_name("torch.float16"), DType::kF16);
}

TEST(DTypeTest, HalfKnownValues) {
  EXPECT_EQ(float_to_half_bits(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half_bits(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half_bits(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half_bits(65519.99f), 0x7bff);
  EXPECT_EQ(float_to_half_bits(65520.0f), 0x7c00);  // midpoint to max: ties to even -> inf
  EXPECT_EQ(float_to_half_bits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(float_to_half_bits(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (zero)
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_half_bits(-0.0f), 0x8000);
  const uint16_t nan = float_to_half_bits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_TRUE(std::isnan(half_bits_to_float(0x7e00)));
  EXPECT_EQ(half_bits_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_bits_to_float(0x3555), 0.333251953125f);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even -> 1.
  EXPECT_EQ(float_to_half_bits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(float_to_half_bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(DTypeTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = half_bits_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half_bits(f), b) << std::hex << b;
  }
}

TEST(DTypeTest, HalfRoundingMatchesReferenceOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0xffffffffu);
  for (int i = 0; i < 200000; ++i) {
    // Bias toward the half range: exponents 100..145.
    uint32_t b = bits(rng);
    b = (b & 0x807fffffu) | ((100 + (b >> 23) % 46) << 23);
    const float f = bits_to_float(b);
    ASSERT_EQ(float_to_half_bits(f), reference_half(f)) << f;
  }
}

TEST(DTypeTest, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bfloat16_bits(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bfloat16_bits(bits_to_float(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(float_to_bfloat16_bits(bits_to_float(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(float_to_bfloat16_bits(bits_to_float(0x3f808001u)), 0x3f81);
  EXPECT_EQ(float_to_bfloat16_bits(bits_to_float(0x7f7fffffu)), 0x7f80);  // max float -> inf
  EXPECT_EQ(float_to_bfloat16_bits(bits_to_float(0x00000001u)), 0x0000);  // subnormal rounds
  EXPECT_EQ(float_to_bfloat16_bits(bits_to_float(0x00018000u)), 0x0002);
  EXPECT_TRUE(std::isnan(bfloat16_bits_to_float(float_to_bfloat16_bits(std::nanf("")))));
  // A signaling-looking NaN whose payload sits in the low bits stays NaN.
  EXPECT_TRUE(std::isnan(bfloat16_bits_to_float(float_to_bfloat16_bits(bits_to_float(0x7f800001u)))));
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bfloat16_bits_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bfloat16_bits(f), b);
  }
}

TEST(DTypeTest, LoadAndStoreAsFloat) {
  uint16_t h[2];
  store_from_float(h, DType::kF16, 1, 0.5f);
  EXPECT_EQ(h[1], 0x3800);
  EXPECT_EQ(load_as_float(h, DType::kF16, 1), 0.5f);
  uint16_t bf[1];
  store_from_float(bf, DType::kBF16, 0, -3.0f);
  EXPECT_EQ(load_as_float(bf, DType::kBF16, 0), -3.0f);
  int8_t i8[1] = {0};
  EXPECT_THROW(load_as_float(i8, DType::kI8, 0), std::exception);
}

}  // namespace
}  // namespace stowage
