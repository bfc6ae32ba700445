// kernels::quantize_on_accelerator is the accelerator's implementation of the
// quantizer that `stowage quantize` and the streaming loader both call: on a
// sim stream (the CPU counterparts of the CUDA kernels) it gives every part
// of quant::quantize_cpu bit for bit, int8 from a bfloat16 source included
// (both quantize from float16, as bitsandbytes does: the two device paths
// once disagreed there).
#include "kernels/weight_quantizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/platform.h"
#include "quant/cpu_quantizer.h"
#include "quant/testing/random_tensors.h"

namespace stowage::kernels {
namespace {

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

void expect_same_parts(const quant::QuantizedWeight& got, const quant::QuantizedWeight& want) {
  const auto got_parts = quant::parts(got);
  const auto want_parts = quant::parts(want);
  ASSERT_EQ(got_parts.size(), want_parts.size());
  for (size_t i = 0; i < got_parts.size(); ++i) {
    EXPECT_EQ(got_parts[i].suffix, want_parts[i].suffix);
    EXPECT_TRUE(same_bytes(got_parts[i].tensor, want_parts[i].tensor)) << got_parts[i].suffix;
  }
}

class WeightQuantizerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Platform> platform_ = Platform::create(DeviceChoice::kSim);
  Stream stream_ = platform_->accelerator(0).create_stream();
  MemoryResource& device_ = platform_->accelerator(0).memory();
  MemoryResource& host_ = platform_->pageable_host_memory();
};

TEST_F(WeightQuantizerTest, GivesTheCpuQuantizersBytesForEveryFormat) {
  const Tensor bf16 = quant::testing::normal_tensor(host_, Shape{24, 80}, DType::kBF16, 5);
  const Tensor f32 = quant::testing::normal_tensor(host_, Shape{24, 80}, DType::kF32, 6);
  const std::vector<quant::WeightLayout> targets = {
      quant::WeightLayout::int8(Shape{24, 80}),
      quant::WeightLayout::four_bit(quant::WeightFormat::kNf4, Shape{24, 80}, DType::kBF16, 64,
                                    false, DType::kU8),
      quant::WeightLayout::four_bit(quant::WeightFormat::kNf4, Shape{24, 80}, DType::kBF16, 32,
                                    true, DType::kBF16),
      quant::WeightLayout::four_bit(quant::WeightFormat::kFp4, Shape{24, 80}, DType::kBF16, 128,
                                    true, DType::kF32),
  };
  for (const Tensor* source : {&bf16, &f32}) {
    for (quant::WeightLayout target : targets) {
      if (quant::is_four_bit(target.format)) target.dtype = source->dtype();
      SCOPED_TRACE(std::string(quant::weight_format_name(target.format)) + " from " +
                   std::string(safetensors_name(source->dtype())));
      const quant::QuantizedWeight want = quant::quantize_cpu(*source, target, host_, "w");
      const quant::QuantizedWeight got =
          quantize_on_accelerator(*source, target, device_, host_, stream_.ref(), "w");
      expect_same_parts(got, want);
      if (const auto* w = std::get_if<quant::FourBitWeight>(&got)) {
        EXPECT_EQ(w->nested_offset, std::get<quant::FourBitWeight>(want).nested_offset);
      }
    }
  }
}

// `stowage quantize`'s case: the factory's quantizer hands a writer every
// part in host memory, with the CPU quantizer's bytes and its error for a
// value that is not finite.
TEST_F(WeightQuantizerTest, ForAWriterGivesEveryPartOnTheHostAsTheCpuQuantizer) {
  const quant::WeightQuantizer cpu = quant::cpu_weight_quantizer();
  const quant::WeightQuantizer accelerator =
      accelerator_weight_quantizer(device_, stream_.ref(), /*parts_on_host=*/true);
  Tensor source = quant::testing::normal_tensor(host_, Shape{24, 80}, DType::kBF16, 7);
  const Shape shape = source.shape();
  const quant::WeightLayout nf4 = quant::WeightLayout::four_bit(quant::WeightFormat::kNf4, shape,
                                                                DType::kBF16, 64, true, DType::kU8);
  for (const quant::WeightLayout& target : {quant::WeightLayout::int8(shape), nf4}) {
    const quant::QuantizedWeight got = accelerator(source, target, host_, "w");
    for (const quant::QuantPart& part : quant::parts(got)) {
      EXPECT_TRUE(quant::host_addressable(part.tensor.tier())) << part.suffix;
    }
    expect_same_parts(got, cpu(source, target, host_, "w"));
  }
  store_from_float(source.data(), DType::kBF16, 3, std::nanf(""));
  EXPECT_THROW(accelerator(source, nf4, host_, "w"), InvalidInputError);
}

TEST_F(WeightQuantizerTest, Int8RefusesAValueBeyondFloat16LikeTheCpuQuantizer) {
  Tensor source = quant::testing::normal_tensor(host_, Shape{2, 32}, DType::kF32, 2);
  source.data_as<float>()[5] = 1e6f;  // finite in float32, inf in float16
  const quant::WeightLayout target = quant::WeightLayout::int8(Shape{2, 32});
  EXPECT_THROW(quant::quantize_cpu(source, target, host_, "w"), InvalidInputError);
  try {
    quantize_on_accelerator(source, target, device_, host_, stream_.ref(), "w");
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("beyond float16's range"), std::string::npos) << e.what();
  }
}

TEST_F(WeightQuantizerTest, RejectsASourceOfAnotherShapeNamingTheTensor) {
  const Tensor source = quant::testing::normal_tensor(host_, Shape{4, 64}, DType::kF32, 1);
  try {
    quantize_on_accelerator(source, quant::WeightLayout::int8(Shape{8, 64}), device_, host_,
                            stream_.ref(), "layers.0.weight");
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[8, 64]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace stowage::kernels
