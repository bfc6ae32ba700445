// What bitsandbytes saves, we load; and for the same weights we write the same
// bytes. testdata/bnb_reference.safetensors holds layers quantized by
// bitsandbytes 0.50.2's own nn modules on an H100 (Linear4bit: nf4/fp4, with
// and without double quantization, quant_storage uint8/bfloat16/float32;
// Linear8bitLt), saved from their state_dict as transformers saves them, with
// the unquantized weights beside them as "source.<layer>.weight"
// (tests/python/bnb_make_reference.py made it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "mmap_store/safetensors_reader.h"
#include "quant/bnb_format.h"
#include "quant/cpu_quantizer.h"

namespace stowage::quant {
namespace {

constexpr const char* kPath = "quant/testdata/bnb_reference.safetensors";

class BnbReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override { file_ = mmap_store::SafetensorsFile::open(kPath); }
  TensorLookup lookup() const {
    return [this](const std::string& name) -> std::optional<Tensor> {
      if (!file_->contains(name)) return std::nullopt;
      return file_->tensor(name);
    };
  }
  static std::vector<uint8_t> bytes(const Tensor& t) {
    const auto* p = t.data_as<const uint8_t>();
    return std::vector<uint8_t>(p, p + t.bytes());
  }
  HostMemoryResource host_;
  std::unique_ptr<mmap_store::SafetensorsFile> file_;
};

TEST_F(BnbReferenceTest, DetectFindsEveryBitsandbytesLayerWithItsFormat) {
  const auto infos = detect_quantized_weights(file_->names(), lookup());
  std::map<std::string, QuantizedWeightInfo> by_prefix;
  for (const auto& i : infos) by_prefix[i.prefix] = i;
  ASSERT_EQ(by_prefix.size(), 5u);
  const auto& l0 = by_prefix.at("layers.0");
  EXPECT_EQ(l0.layout.format, WeightFormat::kNf4);
  EXPECT_EQ(l0.layout.blocksize, 64);
  EXPECT_TRUE(l0.layout.double_quant);
  EXPECT_EQ(l0.layout.storage, DType::kBF16);  // seed lesson 2: from the weight's dtype
  EXPECT_EQ(l0.layout.shape, (Shape{96, 50}));
  EXPECT_EQ(by_prefix.at("layers.1").layout.blocksize, 128);
  EXPECT_FALSE(by_prefix.at("layers.1").layout.double_quant);
  EXPECT_EQ(by_prefix.at("layers.2").layout.format, WeightFormat::kFp4);
  EXPECT_EQ(by_prefix.at("layers.3").layout.storage, DType::kF32);
  EXPECT_EQ(by_prefix.at("layers.4").layout.format, WeightFormat::kInt8);
  EXPECT_EQ(by_prefix.at("layers.4").layout.shape, (Shape{16, 64}));
}

struct FourBitCase {
  const char* prefix;
  WeightFormat type;
  int64_t blocksize;
  bool double_quant;
  DType storage;
};

TEST_F(BnbReferenceTest, OurFourBitQuantizerWritesBitsandbytesBytes) {
  const FourBitCase cases[] = {{"layers.0", WeightFormat::kNf4, 64, true, DType::kBF16},
                               {"layers.1", WeightFormat::kNf4, 128, false, DType::kU8},
                               {"layers.2", WeightFormat::kFp4, 64, true, DType::kU8},
                               {"layers.3", WeightFormat::kFp4, 32, false, DType::kF32}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.prefix);
    FourBitOptions opt;
    opt.quant_type = c.type;
    opt.blocksize = c.blocksize;
    opt.double_quant = c.double_quant;
    opt.storage = c.storage;
    const Tensor source = file_->tensor(std::string("source.") + c.prefix + ".weight");
    const FourBitWeight ours = quantize_4bit_cpu(source, opt, host_, c.prefix);
    for (const auto& [name, tensor] : to_state_dict(c.prefix, ours)) {
      ASSERT_TRUE(file_->contains(name)) << name << " is not in bitsandbytes' state dict";
      const Tensor theirs = file_->tensor(name);
      EXPECT_EQ(tensor.dtype(), theirs.dtype()) << name;
      EXPECT_EQ(tensor.shape(), theirs.shape()) << name;
      EXPECT_EQ(bytes(tensor), bytes(theirs)) << name;
    }
  }
}

TEST_F(BnbReferenceTest, OurInt8QuantizerWritesBitsandbytesBytes) {
  const Int8Weight ours = quantize_int8_cpu(file_->tensor("source.layers.4.weight"), host_);
  for (const auto& [name, tensor] : to_state_dict("layers.4", ours)) {
    const Tensor theirs = file_->tensor(name);
    EXPECT_EQ(tensor.dtype(), theirs.dtype()) << name;
    EXPECT_EQ(tensor.shape(), theirs.shape()) << name;
    EXPECT_EQ(bytes(tensor), bytes(theirs)) << name;
  }
}

TEST_F(BnbReferenceTest, WhatBitsandbytesSavesLoadsAndDequantizesCloseToTheSource) {
  for (const char* prefix : {"layers.0", "layers.1", "layers.2", "layers.3", "layers.4"}) {
    SCOPED_TRACE(prefix);
    std::optional<QuantizedWeight> w = load_quantized_weight(prefix, lookup());
    ASSERT_TRUE(w.has_value());
    const Tensor mapped = file_->tensor(std::string("source.") + prefix + ".weight");
    // An aligned copy: a tensor in a file may sit at any offset.
    const Tensor source = Tensor::empty(host_, mapped.dtype(), mapped.shape());
    std::memcpy(source.data(), mapped.data(), mapped.bytes());
    const Tensor back = dequantize_cpu(*w, DType::kF32, host_);
    ASSERT_EQ(back.shape(), source.shape());
    double err = 0;
    for (uint64_t i = 0; i < source.numel(); ++i) {
      err += std::fabs(load_as_float(source.data(), source.dtype(), i) - back.data_as<float>()[i]);
    }
    err /= static_cast<double>(source.numel());
    // N(0, 1) weights: NF4 ~0.07-0.08, FP4 ~0.09-0.1, int8 ~0.01.
    EXPECT_LT(err, format_of(*w) == WeightFormat::kInt8 ? 0.02 : 0.11) << err;
  }
}

}  // namespace
}  // namespace stowage::quant
