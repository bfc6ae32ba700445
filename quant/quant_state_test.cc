#include "quant/quant_state.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "quant/quant_rules.h"

namespace stowage::quant {
namespace {

TEST(WeightFormat, NamesRoundTrip) {
  for (WeightFormat m : {WeightFormat::kInt8, WeightFormat::kNf4, WeightFormat::kFp4}) {
    EXPECT_EQ(quantized_format_from_name(weight_format_name(m)), m);
  }
  EXPECT_FALSE(quantized_format_from_name("int4").has_value());
  EXPECT_FALSE(quantized_format_from_name("NF4").has_value());
}

TEST(Blocksize, OnlyPowersOfTwoFrom32To4096AreValid) {
  for (int64_t b = 32; b <= 4096; b *= 2) EXPECT_TRUE(is_valid_blocksize(b)) << b;
  for (int64_t b : {0, -64, 1, 16, 48, 96, 100, 8192}) EXPECT_FALSE(is_valid_blocksize(b)) << b;
}

TEST(PackedShape, IsTheSameBytesViewedAsTheStorageDtype) {
  EXPECT_EQ(packed_shape(8, DType::kU8), (Shape{4, 1}));
  EXPECT_EQ(packed_shape(5, DType::kU8), (Shape{3, 1}));  // odd count: one byte holds the last
  EXPECT_EQ(packed_shape(8, DType::kF16), (Shape{2, 1}));
  EXPECT_EQ(packed_shape(8, DType::kBF16), (Shape{2, 1}));
  EXPECT_EQ(packed_shape(16, DType::kF32), (Shape{2, 1}));
  // (numel + 1) // (2 * itemsize) in bitsandbytes; rounded up here so the
  // last codes are never dropped.
  EXPECT_EQ(packed_shape(5, DType::kF32), (Shape{1, 1}));
  EXPECT_EQ(packed_shape(10, DType::kF32), (Shape{2, 1}));
  EXPECT_THROW(packed_shape(8, DType::kI8), InvalidInputError);
}

TEST(PythonFloatRepr, MatchesPythonsReprOfAFloat32WidenedToDouble) {
  EXPECT_EQ(python_float_repr(static_cast<double>(5.6692972f)), "5.669297218322754");
  EXPECT_EQ(python_float_repr(static_cast<double>(0.1f)), "0.10000000149011612");
  EXPECT_EQ(python_float_repr(0.5), "0.5");
  EXPECT_EQ(python_float_repr(5.0), "5.0");
  EXPECT_EQ(python_float_repr(-2.0), "-2.0");
  EXPECT_EQ(python_float_repr(0.0), "0.0");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(1e-05), "1e-05");
  EXPECT_EQ(python_float_repr(-2.5e-07), "-2.5e-07");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(python_float_repr(123.25), "123.25");
}

FourBitWeight example_state(MemoryResource& resource, bool nested) {
  FourBitWeight w;
  w.quant_type = WeightFormat::kNf4;
  w.blocksize = 64;
  w.dtype = DType::kF16;
  w.shape = Shape{96, 50};
  if (nested) {
    // Only double_quant() (nested_absmax.defined()) matters for the JSON.
    w.nested_absmax = Tensor::empty(resource, DType::kF32, Shape{1});
    w.nested_offset = 5.6692972f;
  }
  return w;
}

TEST(FourBitStateJson, IsWhatBitsandbytesJsonDumpsWrites) {
  HostMemoryResource host;
  const FourBitWeight plain = example_state(host, false);
  const FourBitWeight nested = example_state(host, true);
  EXPECT_EQ(plain.layout().state_json(plain.nested_offset),
            R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 50]})");
  EXPECT_EQ(
      nested.layout().state_json(nested.nested_offset),
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 50], )"
      R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 5.669297218322754})");
}

TEST(StoredQuantMap, HoldsTheRulesCodeValuesWithBitsandbytesPositiveZero) {
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(stored_quant_map_value(WeightFormat::kNf4, i), quant_rules::nf4_code_value(i)) << i;
    EXPECT_EQ(stored_quant_map_value(WeightFormat::kFp4, i), quant_rules::fp4_code_value(i)) << i;
  }
  // get_4bit_type("fp4") builds its table from the Python integer -0, so the
  // stored map has +0.0 at index 8 (bit pattern 0x00000000).
  float fp4_8 = stored_quant_map_value(WeightFormat::kFp4, 8);
  uint32_t bits;
  std::memcpy(&bits, &fp4_8, 4);
  EXPECT_EQ(bits, 0u);
  EXPECT_EQ(stored_quant_map_value(WeightFormat::kFp4, 1), 0.0625f / 12.0f);
  EXPECT_EQ(stored_quant_map_value(WeightFormat::kFp4, 2), 8.0f / 12.0f);
}

class PartsTest : public ::testing::Test {
 protected:
  HostMemoryResource host_;
  Int8Weight int8() {
    Int8Weight w;
    w.cb = Tensor::empty(host_, DType::kI8, Shape{3, 4});
    w.scb = Tensor::empty(host_, DType::kF32, Shape{3});
    w.weight_format = Tensor::empty(host_, DType::kU8, Shape{});
    return w;
  }
};

// Seed lesson 1: every tensor a quantized layer owns is a named part.
TEST_F(PartsTest, Int8PartsAreWeightScbAndWeightFormat) {
  QuantizedWeight w = int8();
  auto p = parts(w);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].suffix, "weight");
  EXPECT_EQ(p[1].suffix, "SCB");
  EXPECT_EQ(p[2].suffix, "weight_format");
  EXPECT_EQ(total_bytes(w), 12u + 12u + 1u);
  EXPECT_EQ(format_of(w), WeightFormat::kInt8);
  EXPECT_EQ(logical_shape(w), (Shape{3, 4}));
}

TEST_F(PartsTest, ReplacePartSwapsBytesOfTheSameDtypeAndShape) {
  QuantizedWeight w = int8();
  Tensor moved = Tensor::empty(host_, DType::kF32, Shape{3});
  replace_part(w, "SCB", moved);
  EXPECT_EQ(std::get<Int8Weight>(w).scb.data(), moved.data());
}

TEST_F(PartsTest, ReplacePartRefusesAnotherShapeDtypeOrUnknownName) {
  QuantizedWeight w = int8();
  EXPECT_THROW(replace_part(w, "SCB", Tensor::empty(host_, DType::kF32, Shape{4})),
               InvalidInputError);
  EXPECT_THROW(replace_part(w, "SCB", Tensor::empty(host_, DType::kF16, Shape{3})),
               InvalidInputError);
  EXPECT_THROW(replace_part(w, "weight.absmax", Tensor::empty(host_, DType::kF32, Shape{3})),
               InvalidInputError);
}

TEST_F(PartsTest, ValidateNamesTheWeightAndTheWrongTensor) {
  Int8Weight w = int8();
  w.scb = Tensor::empty(host_, DType::kF32, Shape{5});
  try {
    validate(w, "layers.0");
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("SCB"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace stowage::quant
