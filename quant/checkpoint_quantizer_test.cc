#include "quant/checkpoint_quantizer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "core/error.h"

namespace stowage::quant {
namespace {

class CheckpointQuantizerTest : public ::testing::Test {
 protected:
  HostMemoryResource host_;
  std::vector<TensorDecl> decls_;
  std::map<std::string, Tensor> tensors_;

  void add(const std::string& name, DType dtype, Shape shape) {
    Tensor t = Tensor::empty(host_, dtype, shape);
    std::mt19937 gen(static_cast<uint32_t>(decls_.size()) + 1);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    if (is_floating_point(dtype)) {
      for (uint64_t i = 0; i < t.numel(); ++i) store_from_float(t.data(), dtype, i, dist(gen));
    } else {
      std::memset(t.data(), 1, t.bytes());
    }
    decls_.push_back({name, dtype, shape});
    tensors_[name] = t;
  }
  std::function<Tensor(const std::string&)> reader() {
    return [this](const std::string& name) { return tensors_.at(name); };
  }
  void add_small_model() {
    add("embed.weight", DType::kF16, Shape{10, 8});
    add("layers.0.weight", DType::kF16, Shape{16, 8});
    add("layers.0.bias", DType::kF16, Shape{16});
    add("norm.weight", DType::kF32, Shape{16});       // 1-D: copied
    add("conv.weight", DType::kF16, Shape{4, 2, 3});  // 3-D: copied
    add("ids.weight", DType::kI64, Shape{2, 2});      // not a float: copied
    add("lm_head.weight", DType::kBF16, Shape{10, 16});
  }
  static std::vector<std::string> names(const std::vector<OutputTensor>& plan) {
    std::vector<std::string> out;
    for (const auto& o : plan) out.push_back(o.decl.name);
    return out;
  }
};

TEST_F(CheckpointQuantizerTest, QuantizesEvery2DFloatWeightAndCopiesTheRestInPlace) {
  add_small_model();
  CheckpointQuantizeOptions opt;
  opt.method = WeightFormat::kInt8;
  opt.skip_regex = "^embed\\.";
  CheckpointQuantizer q(opt, decls_, reader());
  EXPECT_EQ(names(q.plan()),
            (std::vector<std::string>{"embed.weight", "layers.0.weight", "layers.0.SCB",
                                      "layers.0.weight_format", "layers.0.bias", "norm.weight",
                                      "conv.weight", "ids.weight", "lm_head.weight", "lm_head.SCB",
                                      "lm_head.weight_format"}));
  EXPECT_EQ(q.quantized_count(), 2u);
  EXPECT_EQ(q.copied_count(), 5u);
}

TEST_F(CheckpointQuantizerTest, SkipRegexIsSearchedAnywhereInTheName) {
  add_small_model();
  CheckpointQuantizeOptions opt;
  opt.skip_regex = "lm_head|embed";
  CheckpointQuantizer q(opt, decls_, reader());
  EXPECT_TRUE(q.is_target(decls_[1]));
  EXPECT_FALSE(q.is_target(decls_[0]));
  EXPECT_FALSE(q.is_target(decls_.back()));
  EXPECT_EQ(q.plan().size(), 7u + 3u);  // layers.0.weight -> 4 nf4 tensors
}

TEST_F(CheckpointQuantizerTest, RunEmitsExactlyThePlanWithCopiesUntouched) {
  add_small_model();
  for (WeightFormat method : {WeightFormat::kInt8, WeightFormat::kNf4, WeightFormat::kFp4}) {
    for (bool nested : {false, true}) {
      CheckpointQuantizeOptions opt;
      opt.method = method;
      opt.four_bit.double_quant = nested;
      opt.four_bit.storage = DType::kF16;
      opt.four_bit.blocksize = 32;
      CheckpointQuantizer q(opt, decls_, reader());
      const std::vector<OutputTensor> plan = q.plan();
      size_t i = 0;
      uint64_t last_progress = 0;
      q.run(
          host_, cpu_weight_quantizer(),
          [&](const OutputTensor& out, const Tensor& t) {
            ASSERT_LT(i, plan.size());
            EXPECT_EQ(out.decl.name, plan[i].decl.name);
            EXPECT_EQ(t.dtype(), plan[i].decl.dtype) << out.decl.name;
            EXPECT_EQ(t.shape(), plan[i].decl.shape) << out.decl.name;
            if (!out.quantized) {
              EXPECT_EQ(t.data(), tensors_.at(out.source).data());
            }
            ++i;
          },
          [&](uint64_t done) { last_progress = done; });
      EXPECT_EQ(i, plan.size());
      EXPECT_EQ(last_progress, q.input_bytes());
    }
  }
}

TEST_F(CheckpointQuantizerTest, GivesTheSameBytesAsQuantizingEachWeight) {
  add("a.weight", DType::kBF16, Shape{12, 40});
  CheckpointQuantizeOptions opt;
  opt.method = WeightFormat::kFp4;
  opt.four_bit.double_quant = true;
  CheckpointQuantizer q(opt, decls_, reader());
  FourBitOptions four;
  four.quant_type = WeightFormat::kFp4;
  four.double_quant = true;
  const FourBitWeight direct = quantize_4bit_cpu(tensors_["a.weight"], four, host_, "a.weight");
  std::map<std::string, std::vector<uint8_t>> got;
  q.run(host_, cpu_weight_quantizer(), [&](const OutputTensor& out, const Tensor& t) {
    got[out.decl.name].assign(t.data_as<uint8_t>(), t.data_as<uint8_t>() + t.bytes());
  });
  for (const auto& [name, t] : to_state_dict("a", direct)) {
    EXPECT_EQ(got.at(name),
              std::vector<uint8_t>(t.data_as<uint8_t>(), t.data_as<uint8_t>() + t.bytes()))
        << name;
  }
}

// Streaming (the transformers 4-bit loading leak, DESIGN.md lesson 4): the
// quantized parts of one weight are freed before the next is made, so the
// peak is one weight's parts, not the model's.
TEST_F(CheckpointQuantizerTest, PeakMemoryIsAboutTheLargestTensorNotTheModel) {
  for (int i = 0; i < 8; ++i) add(fmt::format("layers.{}.weight", i), DType::kF16, Shape{256, 256});
  add("big.weight", DType::kF16, Shape{512, 256});
  for (WeightFormat method : {WeightFormat::kInt8, WeightFormat::kNf4}) {
    StatisticsAdaptor stats(host_);
    CheckpointQuantizeOptions opt;
    opt.method = method;
    opt.four_bit.double_quant = true;
    CheckpointQuantizer q(opt, decls_, reader());
    uint64_t total_out = 0;
    uint64_t largest_out = 0;
    std::string current;
    uint64_t current_bytes = 0;
    q.run(stats, cpu_weight_quantizer(), [&](const OutputTensor& out, const Tensor& t) {
      if (out.source != current) current_bytes = 0;
      current = out.source;
      current_bytes += t.bytes();
      largest_out = std::max(largest_out, current_bytes);
      total_out += t.bytes();
    });
    EXPECT_EQ(stats.bytes_in_use(), 0u);
    EXPECT_LE(stats.peak_bytes(), largest_out + 4096)
        << weight_format_name(method);  // + scratch slack
    EXPECT_LE(stats.peak_bytes(), uint64_t{512} * 256 * 2) << "the largest input tensor";
    EXPECT_LT(stats.peak_bytes(), total_out / 3) << weight_format_name(method);
  }
}

TEST_F(CheckpointQuantizerTest, RefusesAnAlreadyQuantizedInput) {
  add("a.weight", DType::kI8, Shape{2, 4});
  add("a.SCB", DType::kF32, Shape{2});
  EXPECT_THROW(CheckpointQuantizer({}, decls_, reader()), InvalidInputError);
}

TEST_F(CheckpointQuantizerTest, RefusesAHalfPresentStateInTheInput) {
  add("a.weight", DType::kU8, Shape{4, 1});
  add("a.weight.absmax", DType::kF32, Shape{1});
  try {
    CheckpointQuantizer q({}, decls_, reader());
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("a.weight.quant_map"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointQuantizerTest, RefusesBadOptions) {
  add("a.weight", DType::kF16, Shape{2, 64});
  CheckpointQuantizeOptions bad_block;
  bad_block.four_bit.blocksize = 100;
  EXPECT_THROW(CheckpointQuantizer(bad_block, decls_, reader()), InvalidInputError);
  CheckpointQuantizeOptions bad_regex;
  bad_regex.skip_regex = "(";
  EXPECT_THROW(CheckpointQuantizer(bad_regex, decls_, reader()), InvalidInputError);
  CheckpointQuantizeOptions bad_threshold;
  bad_threshold.method = WeightFormat::kInt8;
  bad_threshold.threshold = -1.0f;
  EXPECT_THROW(CheckpointQuantizer(bad_threshold, decls_, reader()), InvalidInputError);
}

}  // namespace
}  // namespace stowage::quant
