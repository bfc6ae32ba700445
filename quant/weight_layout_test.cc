// WeightLayout answers what every reader, writer and quantizer asks of a
// weight's format: the parts the quantizers write, their bytes, the block
// counts, the state JSON both ways, and which part of a set is wrong.
#include "quant/weight_layout.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/memory_resource.h"
#include "quant/cpu_quantizer.h"
#include "quant/testing/random_tensors.h"

namespace stowage::quant {
namespace {

// The layout's parts are the quantizer's, suffix, dtype and shape in order.
void expect_parts_of(const WeightLayout& layout, const QuantizedWeight& weight,
                     uint64_t json_bytes) {
  const std::vector<QuantPart> have = parts(weight);
  const std::vector<PartLayout> want = layout.parts(json_bytes);
  ASSERT_EQ(have.size(), want.size());
  uint64_t bytes = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(have[i].suffix, want[i].suffix);
    EXPECT_EQ(have[i].tensor.dtype(), want[i].dtype) << want[i].suffix;
    EXPECT_EQ(have[i].tensor.shape(), want[i].shape) << want[i].suffix;
    bytes += have[i].tensor.bytes();
  }
  EXPECT_EQ(layout.total_bytes(json_bytes), bytes);
  EXPECT_EQ(total_bytes(weight), bytes);
}

TEST(WeightLayout, FourBitPartsAreWhatTheQuantizerWrites) {
  HostMemoryResource host;
  const Tensor source = testing::normal_tensor(host, Shape{40, 70}, DType::kF16, 3);
  for (const bool nested : {false, true}) {
    for (const DType storage : {DType::kU8, DType::kBF16, DType::kF32}) {
      const WeightLayout layout = WeightLayout::four_bit(WeightFormat::kFp4, Shape{40, 70},
                                                         DType::kF16, 64, nested, storage);
      const QuantizedWeight w = quantize_cpu(source, layout, host);
      const auto& four = std::get<FourBitWeight>(w);
      expect_parts_of(layout, w, four.quant_state.numel());
      EXPECT_EQ(layout.blocks(), 44u);  // ceil(2800 / 64)
      EXPECT_EQ(layout.nested_blocks(), nested ? 1u : 0u);
    }
  }
}

TEST(WeightLayout, Int8PartsAreWhatTheQuantizerWrites) {
  HostMemoryResource host;
  const Tensor source = testing::normal_tensor(host, Shape{6, 32}, DType::kBF16, 4);
  const WeightLayout layout = WeightLayout::int8(Shape{6, 32});
  expect_parts_of(layout, quantize_cpu(source, layout, host), 0);
  EXPECT_EQ(layout.total_bytes(), 6u * 32 + 6 * 4 + 1);
}

TEST(WeightLayout, BlockCountsRoundUp) {
  EXPECT_EQ(block_count(100, 64), 2);
  EXPECT_EQ(block_count(128, 64), 2);
  EXPECT_EQ(nested_block_count(257), 2);
  EXPECT_EQ(packed_code_bytes(7), 4);
  // A packed weight viewed as float32 rounds up to whole elements.
  EXPECT_EQ(packed_shape(7, DType::kF32), (Shape{1, 1}));
  EXPECT_EQ(packed_shape(20, DType::kF16), (Shape{5, 1}));
}

TEST(WeightLayout, StateJsonParsesBackToTheSameLayout) {
  const WeightLayout layout = WeightLayout::four_bit(WeightFormat::kNf4, Shape{96, 50},
                                                     DType::kBF16, 128, true, DType::kU8);
  const ParsedQuantState parsed =
      parse_quant_state_json(layout.state_json(5.669297218322754f), "w");
  EXPECT_EQ(parsed.layout.format, layout.format);
  EXPECT_EQ(parsed.layout.shape, layout.shape);
  EXPECT_EQ(parsed.layout.dtype, layout.dtype);
  EXPECT_EQ(parsed.layout.blocksize, layout.blocksize);
  EXPECT_TRUE(parsed.layout.double_quant);
  EXPECT_EQ(parsed.nested_offset, 5.669297218322754f);
}

TEST(WeightLayout, ValidatePartsNamesTheWrongPartAndWhatItShouldBe) {
  const WeightLayout layout =
      WeightLayout::four_bit(WeightFormat::kNf4, Shape{2, 64}, DType::kF16, 64, false, DType::kU8);
  auto lookup = [&](std::string_view suffix) -> std::optional<std::pair<DType, Shape>> {
    if (suffix == kAbsmaxSuffix) return std::make_pair(DType::kU8, Shape{2});  // wrong dtype
    for (const PartLayout& p : layout.parts()) {
      if (p.suffix == suffix) return std::make_pair(p.dtype, p.shape);
    }
    return std::nullopt;
  };
  try {
    layout.validate_parts(lookup, "layers.0");
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("layers.0"), std::string::npos) << what;
    EXPECT_NE(what.find("'weight.absmax' should be F32 [2], found U8 [2]"), std::string::npos)
        << what;
  }
  auto missing_map = [&](std::string_view suffix) -> std::optional<std::pair<DType, Shape>> {
    for (const PartLayout& p : layout.parts()) {
      if (p.suffix == suffix && suffix != kQuantMapSuffix) return std::make_pair(p.dtype, p.shape);
    }
    return std::nullopt;
  };
  EXPECT_THROW(layout.validate_parts(missing_map, "layers.0"), InvalidInputError);
}


// Rows of a Mixtral expert's gate [14336, 4096], NF4 with double quantization:
// 64 blocks a row and 256 blocks a nested absmax, so rows align in fours; the
// ranges of rows [4, 14336) start at row 4's codes, absmax codes and nested
// absmax and run to the ends of the parts. Unaligned bounds, and rows
// outside the weight, are refused; float and int8 rows align anywhere.
TEST(WeightLayout, RowRangesHoldTheRowsOwnBlocks) {
  const WeightLayout gate = WeightLayout::four_bit(WeightFormat::kNf4, Shape{14336, 4096},
                                                   DType::kBF16, 64, true, DType::kU8);
  EXPECT_EQ(gate.row_alignment(), 4);
  const auto ranges = gate.row_ranges(4, 14332);
  ASSERT_TRUE(ranges.has_value());
  ASSERT_EQ(ranges->size(), 3u);
  EXPECT_EQ((*ranges)[0].suffix, kWeightSuffix);
  EXPECT_EQ((*ranges)[0].offset, 4u * 4096 / 2);
  EXPECT_EQ((*ranges)[0].offset + (*ranges)[0].bytes, 14336u * 4096 / 2);
  EXPECT_EQ((*ranges)[1].suffix, kAbsmaxSuffix);
  EXPECT_EQ((*ranges)[1].offset, 4u * 64);
  EXPECT_EQ((*ranges)[1].offset + (*ranges)[1].bytes, gate.blocks());
  EXPECT_EQ((*ranges)[2].suffix, kNestedAbsmaxSuffix);
  EXPECT_EQ((*ranges)[2].offset, 4u);
  EXPECT_EQ((*ranges)[2].offset + (*ranges)[2].bytes, gate.nested_blocks() * 4);
  const auto head = gate.row_ranges(0, 8);
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ((*head)[0].bytes, 8u * 4096 / 2);
  EXPECT_EQ((*head)[2].bytes, 2u * 4);  // 512 blocks: two nested absmax
  EXPECT_FALSE(gate.row_ranges(2, 100).has_value());
  EXPECT_FALSE(gate.row_ranges(4, 6).has_value());
  EXPECT_TRUE(gate.row_ranges(12, 14336 - 12).has_value());  // ends at the last row
  EXPECT_THROW(gate.row_ranges(4, 14336), InvalidInputError);

  const WeightLayout plain = WeightLayout::four_bit(WeightFormat::kNf4, Shape{14336, 4096},
                                                    DType::kBF16, 64, false, DType::kU8);
  EXPECT_EQ(plain.row_alignment(), 1);
  EXPECT_EQ((*plain.row_ranges(3, 5))[1].offset, 3u * 64 * 4);

  const WeightLayout bf16 = WeightLayout::float_weight(DType::kBF16, Shape{10, 6});
  const auto rows = bf16.row_ranges(3, 2);
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ((*rows)[0].offset, 3u * 6 * 2);
  EXPECT_EQ((*rows)[0].bytes, 2u * 6 * 2);
  const auto int8 = WeightLayout::int8(Shape{10, 6}).row_ranges(3, 2);
  ASSERT_TRUE(int8.has_value());
  EXPECT_EQ((*int8)[1].suffix, kScbSuffix);
  EXPECT_EQ((*int8)[1].offset, 12u);
}

}  // namespace
}  // namespace stowage::quant
