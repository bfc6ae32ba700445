#include "quant/bnb_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "core/error.h"
#include "quant/cpu_quantizer.h"
#include "quant/testing/random_tensors.h"

namespace stowage::quant {
namespace {

using StateDict = std::map<std::string, Tensor>;

class BnbFormatTest : public ::testing::Test {
 protected:
  HostMemoryResource host_;

  Tensor normal(Shape shape, DType dtype, uint32_t seed) {
    return quant::testing::normal_tensor(host_, std::move(shape), dtype, seed);
  }
  Tensor bytes_tensor(const std::string& s, DType dtype = DType::kU8) {
    Tensor t = Tensor::empty(host_, dtype, Shape{static_cast<int64_t>(s.size())});
    std::memcpy(t.data(), s.data(), s.size());
    return t;
  }
  // What a save followed by a load gives: each tensor's bytes copied into a
  // fresh buffer with the dtype and shape recorded beside them.
  StateDict save_and_load(const std::vector<std::pair<std::string, Tensor>>& tensors) {
    StateDict out;
    for (const auto& [name, t] : tensors) {
      Tensor copy = Tensor::empty(host_, t.dtype(), t.shape());
      if (t.bytes() > 0) std::memcpy(copy.data(), t.data(), t.bytes());
      EXPECT_TRUE(out.emplace(name, copy).second) << "duplicate " << name;
    }
    return out;
  }
  static TensorLookup lookup(const StateDict& sd) {
    return [&sd](const std::string& name) -> std::optional<Tensor> {
      auto it = sd.find(name);
      if (it == sd.end()) return std::nullopt;
      return it->second;
    };
  }
  static std::vector<uint8_t> bytes(const Tensor& t) {
    const auto* p = t.data_as<const uint8_t>();
    return std::vector<uint8_t>(p, p + t.bytes());
  }
  StateDict four_bit_dict(bool nested, WeightFormat type = WeightFormat::kNf4,
                          DType storage = DType::kU8) {
    FourBitOptions opt;
    opt.quant_type = type;
    opt.double_quant = nested;
    opt.storage = storage;
    return save_and_load(to_state_dict(
        "model.up", quantize_4bit_cpu(normal(Shape{96, 50}, DType::kF16, 1), opt, host_)));
  }
  static void expect_error(const StateDict& sd, const std::string& prefix,
                           const std::vector<std::string>& fragments) {
    try {
      load_quantized_weight(prefix, lookup(sd));
      ADD_FAILURE() << "expected InvalidInputError";
    } catch (const InvalidInputError& e) {
      for (const auto& f : fragments) {
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
            << "'" << f << "' not in: " << e.what();
      }
    }
  }
};

TEST_F(BnbFormatTest, FourBitKeysAreBitsandbytesStateDictKeys) {
  FourBitOptions opt;
  opt.double_quant = true;
  auto sd = to_state_dict("model.layers.0.mlp.up_proj",
                          quantize_4bit_cpu(normal(Shape{96, 50}, DType::kF16, 1), opt, host_));
  std::vector<std::string> names;
  for (const auto& kv : sd) names.push_back(kv.first);
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight.absmax",
                "model.layers.0.mlp.up_proj.weight.quant_map",
                "model.layers.0.mlp.up_proj.weight.nested_absmax",
                "model.layers.0.mlp.up_proj.weight.nested_quant_map",
                "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"}));
  EXPECT_EQ(sd[0].second.shape(), (Shape{2400, 1}));  // (96 * 50 + 1) // 2
  EXPECT_EQ(sd[1].second.shape(), (Shape{75}));       // 4800 / 64 blocks, U8
  EXPECT_EQ(sd[3].second.shape(), (Shape{1}));        // ceil(75 / 256)
}

TEST_F(BnbFormatTest, Int8KeysAreWeightScbAndAZeroDWeightFormat) {
  auto sd = to_state_dict("fc", quantize_int8_cpu(normal(Shape{3, 8}, DType::kF16, 2), host_));
  ASSERT_EQ(sd.size(), 3u);
  EXPECT_EQ(sd[0].first, "fc.weight");
  EXPECT_EQ(sd[0].second.dtype(), DType::kI8);
  EXPECT_EQ(sd[1].first, "fc.SCB");
  EXPECT_EQ(sd[1].second.shape(), (Shape{3}));
  EXPECT_EQ(sd[2].first, "fc.weight_format");
  EXPECT_EQ(sd[2].second.shape(), Shape{});
}

TEST_F(BnbFormatTest, AnEmptyPrefixGivesBareSuffixes) {
  EXPECT_EQ(part_name("", "weight.absmax"), "weight.absmax");
  EXPECT_EQ(part_name("a.b", "SCB"), "a.b.SCB");
}

// Seed lesson 2: quant_storage and the state survive a save/load bit for bit,
// the storage dtype read back from P.weight's dtype.
TEST_F(BnbFormatTest, QuantizeSaveLoadDequantizeIsBitExactForEveryStorageAndNesting) {
  Tensor x = normal(Shape{33, 77}, DType::kBF16, 3);  // 2541 elements: odd, not a block multiple
  for (WeightFormat type : {WeightFormat::kNf4, WeightFormat::kFp4}) {
    for (DType storage : {DType::kU8, DType::kF16, DType::kBF16, DType::kF32}) {
      for (bool nested : {false, true}) {
        SCOPED_TRACE(fmt::format("{} {} nested={}", weight_format_name(type),
                                 safetensors_name(storage), nested));
        FourBitOptions opt;
        opt.quant_type = type;
        opt.storage = storage;
        opt.double_quant = nested;
        opt.blocksize = 128;
        const FourBitWeight w = quantize_4bit_cpu(x, opt, host_);
        const StateDict sd = save_and_load(to_state_dict("layer", w));
        std::optional<QuantizedWeight> loaded = load_quantized_weight("layer", lookup(sd));
        ASSERT_TRUE(loaded.has_value());
        const auto& back = std::get<FourBitWeight>(*loaded);
        EXPECT_EQ(back.storage_dtype(), storage);
        EXPECT_EQ(back.quant_type, type);
        EXPECT_EQ(back.blocksize, 128);
        EXPECT_EQ(back.dtype, DType::kBF16);
        EXPECT_EQ(back.shape, (Shape{33, 77}));
        EXPECT_EQ(back.double_quant(), nested);
        EXPECT_EQ(back.nested_offset, w.nested_offset);  // through the JSON repr
        for (DType out : {DType::kF32, DType::kBF16}) {
          EXPECT_EQ(bytes(dequantize_cpu(*loaded, out, host_)),
                    bytes(dequantize_cpu(w, out, host_)));
        }
        // And saving the loaded weight again writes the same bytes.
        const StateDict again = save_and_load(to_state_dict("layer", *loaded));
        for (const auto& [name, t] : sd) EXPECT_EQ(bytes(again.at(name)), bytes(t)) << name;
      }
    }
  }
}

TEST_F(BnbFormatTest, Int8SaveLoadDequantizeIsBitExact) {
  const Int8Weight w = quantize_int8_cpu(normal(Shape{16, 24}, DType::kF32, 4), host_);
  const StateDict sd = save_and_load(to_state_dict("fc", w));
  auto loaded = load_quantized_weight("fc", lookup(sd));
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(format_of(*loaded), WeightFormat::kInt8);
  EXPECT_EQ(bytes(dequantize_cpu(*loaded, DType::kF16, host_)),
            bytes(dequantize_cpu(w, DType::kF16, host_)));
}

TEST_F(BnbFormatTest, Int8WithoutWeightFormatLoadsAsRowMajor) {
  StateDict sd = save_and_load(
      to_state_dict("fc", quantize_int8_cpu(normal(Shape{2, 4}, DType::kF16, 5), host_)));
  sd.erase("fc.weight_format");  // bitsandbytes' default is "row"
  auto loaded = load_quantized_weight("fc", lookup(sd));
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(*std::get<Int8Weight>(*loaded).weight_format.data_as<uint8_t>(), 0);
}

TEST_F(BnbFormatTest, APlainWeightHasNoQuantizedState) {
  StateDict sd;
  sd["fc.weight"] = normal(Shape{2, 4}, DType::kF16, 6);
  sd["fc.bias"] = normal(Shape{2}, DType::kF16, 6);
  EXPECT_FALSE(load_quantized_weight("fc", lookup(sd)).has_value());
  EXPECT_FALSE(load_quantized_weight("nothing", lookup(sd)).has_value());
}

// ---- half-present and malformed states ---------------------------------------

TEST_F(BnbFormatTest, AbsmaxWithoutQuantMapNamesTheMissingTensor) {
  StateDict sd = four_bit_dict(false);
  sd.erase("model.up.weight.quant_map");
  expect_error(sd, "model.up", {"model.up.weight.absmax", "model.up.weight.quant_map", "missing"});
}

TEST_F(BnbFormatTest, AStateWithoutItsJsonIsRejected) {
  StateDict sd = four_bit_dict(false);
  sd.erase("model.up.weight.quant_state.bitsandbytes__nf4");
  expect_error(sd, "model.up", {"quant_state.bitsandbytes__nf4", "missing"});
}

TEST_F(BnbFormatTest, AStateWithoutItsPackedWeightIsRejected) {
  StateDict sd = four_bit_dict(false);
  sd.erase("model.up.weight");
  expect_error(sd, "model.up", {"'model.up.weight'", "missing"});
}

TEST_F(BnbFormatTest, NestedAbsmaxWithoutNestedQuantMapIsRejected) {
  StateDict sd = four_bit_dict(true);
  sd.erase("model.up.weight.nested_quant_map");
  expect_error(sd, "model.up", {"model.up.weight.nested_quant_map", "missing"});
}

TEST_F(BnbFormatTest, JsonWithNestedKeysButNoNestedTensorsIsRejected) {
  StateDict sd = four_bit_dict(true);
  sd.erase("model.up.weight.nested_quant_map");
  sd.erase("model.up.weight.nested_absmax");
  expect_error(sd, "model.up", {"nested", "missing"});
}

TEST_F(BnbFormatTest, MalformedJsonIsRejected) {
  const std::string key = "model.up.weight.quant_state.bitsandbytes__nf4";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"quant_type": "nf4", "blocksize": 64)", "not valid JSON"},
      {R"([1, 2])", "should be an object"},
      {R"({"quant_type": "nf4", "dtype": "float16", "shape": [96, 50]})", "blocksize"},
      {R"({"quant_type": "nf4", "blocksize": 48, "dtype": "float16", "shape": [96, 50]})",
       "power of two"},
      {R"({"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [96, 50]})", "float16"},
      {R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, -50]})",
       "non-negative"},
      {R"({"quant_type": "fp4", "blocksize": 64, "dtype": "float16", "shape": [96, 50]})",
       "quant_type"},
      {R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 50], "x": 1})",
       "unknown"},
      {R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 50], )"
       R"("nested_offset": 1.0})",
       "nested"},
  };
  for (const auto& [json, fragment] : cases) {
    StateDict sd = four_bit_dict(false);
    sd[key] = bytes_tensor(json);
    SCOPED_TRACE(json);
    expect_error(sd, "model.up", {key, fragment});
  }
}

TEST_F(BnbFormatTest, ShapesThatDisagreeWithTheJsonAreRejected) {
  StateDict sd = four_bit_dict(false);
  sd["model.up.weight.quant_state.bitsandbytes__nf4"] = bytes_tensor(
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 51]})");
  expect_error(sd, "model.up", {"model.up", "weight"});

  StateDict wrong_absmax = four_bit_dict(false);
  wrong_absmax["model.up.weight.absmax"] = Tensor::empty(host_, DType::kF32, Shape{74});
  expect_error(wrong_absmax, "model.up", {"weight.absmax", "[75]", "[74]"});

  StateDict u8_without_nesting = four_bit_dict(false);
  u8_without_nesting["model.up.weight.absmax"] = Tensor::empty(host_, DType::kU8, Shape{75});
  expect_error(u8_without_nesting, "model.up", {"weight.absmax", "F32"});
}

TEST_F(BnbFormatTest, ScbWithoutAnInt8WeightIsRejected) {
  StateDict sd;
  sd["fc.SCB"] = Tensor::empty(host_, DType::kF32, Shape{3});
  expect_error(sd, "fc", {"fc.SCB", "fc.weight", "missing"});
  sd["fc.weight"] = normal(Shape{3, 4}, DType::kF16, 1);
  expect_error(sd, "fc", {"fc.weight", "I8"});
}

TEST_F(BnbFormatTest, AColumnMajorWeightFormatIsRejected) {
  StateDict sd = save_and_load(
      to_state_dict("fc", quantize_int8_cpu(normal(Shape{2, 4}, DType::kF16, 5), host_)));
  *sd["fc.weight_format"].data_as<uint8_t>() = 2;  // col_turing
  expect_error(sd, "fc", {"fc.weight_format", "2", "row-major"});
}

// ---- detection for `stowage inspect` ----------------------------------------

TEST_F(BnbFormatTest, DetectGroupsTensorsIntoQuantizedWeights) {
  StateDict sd;
  std::vector<std::string> names = {"embed.weight"};
  sd["embed.weight"] = normal(Shape{4, 4}, DType::kF16, 1);
  FourBitOptions opt;
  opt.double_quant = true;
  opt.storage = DType::kBF16;
  opt.blocksize = 32;
  for (auto& [n, t] : to_state_dict(
           "layers.0", quantize_4bit_cpu(normal(Shape{8, 16}, DType::kF32, 2), opt, host_))) {
    names.push_back(n);
    sd[n] = t;
  }
  for (auto& [n, t] :
       to_state_dict("layers.1", quantize_int8_cpu(normal(Shape{6, 8}, DType::kF16, 3), host_))) {
    names.push_back(n);
    sd[n] = t;
  }
  names.push_back("layers.1.bias");
  sd["layers.1.bias"] = normal(Shape{6}, DType::kF16, 4);

  auto infos = detect_quantized_weights(names, lookup(sd));
  ASSERT_EQ(infos.size(), 2u);
  EXPECT_EQ(infos[0].prefix, "layers.0");
  EXPECT_EQ(infos[0].weight_name, "layers.0.weight");
  EXPECT_EQ(infos[0].layout.format, WeightFormat::kNf4);
  EXPECT_EQ(infos[0].layout.blocksize, 32);
  EXPECT_TRUE(infos[0].layout.double_quant);
  EXPECT_EQ(infos[0].layout.storage, DType::kBF16);
  EXPECT_EQ(infos[0].layout.dtype, DType::kF32);
  EXPECT_EQ(infos[0].layout.shape, (Shape{8, 16}));
  EXPECT_EQ(infos[0].part_names.size(), 6u);
  EXPECT_EQ(infos[1].prefix, "layers.1");
  EXPECT_EQ(infos[1].layout.format, WeightFormat::kInt8);
  EXPECT_EQ(infos[1].layout.storage, DType::kI8);
  EXPECT_FALSE(infos[1].layout.double_quant);
  EXPECT_EQ(infos[1].layout.shape, (Shape{6, 8}));
  EXPECT_EQ(infos[1].part_names, (std::vector<std::string>{"layers.1.weight", "layers.1.SCB",
                                                           "layers.1.weight_format"}));
}

TEST_F(BnbFormatTest, DetectRejectsAHalfPresentState) {
  StateDict sd = four_bit_dict(false);
  sd.erase("model.up.weight.quant_map");
  std::vector<std::string> names;
  for (const auto& kv : sd) names.push_back(kv.first);
  EXPECT_THROW(detect_quantized_weights(names, lookup(sd)), InvalidInputError);
}

}  // namespace
}  // namespace stowage::quant
