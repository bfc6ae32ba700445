#include "quant/cpu_quantizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "quant/quant_rules.h"

namespace stowage::quant {
namespace {

class CpuQuantizerTest : public ::testing::Test {
 protected:
  HostMemoryResource host_;

  Tensor make(const std::vector<float>& values, Shape shape, DType dtype = DType::kF32) {
    Tensor t = Tensor::empty(host_, dtype, std::move(shape));
    for (size_t i = 0; i < values.size(); ++i) store_from_float(t.data(), dtype, i, values[i]);
    return t;
  }
  Tensor normal(Shape shape, DType dtype, uint32_t seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(shape.numel());
    for (auto& x : v) x = dist(gen);
    return make(v, std::move(shape), dtype);
  }
  static std::vector<int> codes(const FourBitWeight& w) {
    std::vector<int> out;
    for (uint64_t i = 0; i < w.numel(); ++i) out.push_back(four_bit_code_at(w, i));
    return out;
  }
  static std::vector<float> floats(const Tensor& t) {
    std::vector<float> out;
    for (uint64_t i = 0; i < t.numel(); ++i) out.push_back(load_as_float(t.data(), t.dtype(), i));
    return out;
  }
  static std::vector<uint8_t> bytes(const Tensor& t) {
    const auto* p = t.data_as<const uint8_t>();
    return std::vector<uint8_t>(p, p + t.bytes());
  }
};

// ---- int8 ----------------------------------------------------------------

TEST_F(CpuQuantizerTest, Int8ScbIsTheRowAbsmaxAndCodesRoundHalfToEven) {
  // SCB 254 gives scale 127 * (1 / 254) = 0.5 exactly: 5 -> 2.5 -> 2 and
  // 7 -> 3.5 -> 4 (half to even), -5 -> -2, 1 -> 0.5 -> 0.
  Int8Weight w =
      quantize_int8_cpu(make({254, 5, 7, -5, 1, -254, 0, 3, 2, -1}, Shape{2, 5}), host_, "w");
  EXPECT_EQ(floats(w.scb), (std::vector<float>{254, 254}));
  std::vector<int> cb(w.cb.data_as<int8_t>(), w.cb.data_as<int8_t>() + 10);
  EXPECT_EQ(cb, (std::vector<int>{127, 2, 4, -2, 0, -127, 0, 2, 1, 0}));
  EXPECT_EQ(*w.weight_format.data_as<uint8_t>(), 0);
  EXPECT_EQ(w.weight_format.shape(), Shape{});
  EXPECT_EQ(w.threshold, 6.0f);
}

TEST_F(CpuQuantizerTest, Int8TakesTheReciprocalFirst) {
  // x * (127 * (1 / scb)) = 63.499996 -> 63, where x * 127 / scb = 63.5 -> 64
  // (FORMATS.md: the reciprocal-first order is what bitsandbytes' bytes hold).
  Int8Weight w = quantize_int8_cpu(make({0.6787109375f, 0.33935546875f}, Shape{1, 2}, DType::kF16),
                                   host_, "w");
  EXPECT_EQ(w.cb.data_as<int8_t>()[0], 127);
  EXPECT_EQ(w.cb.data_as<int8_t>()[1], 63);
}

TEST_F(CpuQuantizerTest, Int8QuantizesFromFloat16LikeBitsandbytes) {
  // 1 + 2^-12 is not a float16; bitsandbytes casts to float16 first, so the
  // SCB is 1.0, not 1.000244.
  Int8Weight w = quantize_int8_cpu(make({1.0f + 1.0f / 4096, 0.5f}, Shape{1, 2}), host_, "w");
  EXPECT_EQ(w.scb.data_as<float>()[0], 1.0f);
}

TEST_F(CpuQuantizerTest, Int8ZeroRowGivesScbZeroAndCodesZero) {
  Int8Weight w = quantize_int8_cpu(make({0, 0, 0, 1, -1, 0.5}, Shape{2, 3}), host_, "w");
  EXPECT_EQ(w.scb.data_as<float>()[0], 0.0f);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(w.cb.data_as<int8_t>()[i], 0);
  Tensor back = dequantize_cpu(w, DType::kF32, host_);
  EXPECT_EQ(floats(back)[0], 0.0f);
}

TEST_F(CpuQuantizerTest, Int8DequantizeIsCodeTimesScbOver127) {
  Int8Weight w = quantize_int8_cpu(make({254, 5, 7, -5}, Shape{1, 4}), host_, "w");
  Tensor back = dequantize_cpu(w, DType::kF32, host_);
  const float step = 254.0f * (1.0f / 127.0f);
  EXPECT_EQ(floats(back), (std::vector<float>{127 * step, 2 * step, 4 * step, -2 * step}));
}

TEST_F(CpuQuantizerTest, Int8RejectsNon2DWeightsAndNonFiniteValues) {
  EXPECT_THROW(quantize_int8_cpu(make({1, 2, 3}, Shape{3}), host_, "w"), InvalidInputError);
  EXPECT_THROW(quantize_int8_cpu(make({1, NAN}, Shape{1, 2}), host_, "w"), InvalidInputError);
  // 1e6 is finite in float32 but not in float16, which bitsandbytes quantizes from.
  EXPECT_THROW(quantize_int8_cpu(make({1, 1e6f}, Shape{1, 2}), host_, "w"), InvalidInputError);
  EXPECT_THROW(quantize_int8_cpu(Tensor::empty(host_, DType::kI32, Shape{1, 2}), host_, "w"),
               InvalidInputError);
}

// ---- 4-bit code selection --------------------------------------------------

// The NF4 decision thresholds (bitsandbytes' dQuantizeNF4): code i+1 above
// kNf4Thresholds[i], code i on it.
constexpr float kNf4Thresholds[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};

TEST_F(CpuQuantizerTest, Nf4PicksTheNearestCodeAndAMidpointGoesToTheLowerCode) {
  // absmax 1.0 (the first element), so x * (1 / absmax) = x exactly.
  std::vector<float> v = {1.0f};
  std::vector<int> expected = {15};
  for (int i = 0; i < 15; ++i) {
    v.push_back(kNf4Thresholds[i]);  // on the midpoint: the lower code
    expected.push_back(i);
    v.push_back(std::nextafter(kNf4Thresholds[i], 2.0f));  // just above: the upper code
    expected.push_back(i + 1);
  }
  for (int i = 0; i < 16; ++i) {  // every code value maps to itself
    v.push_back(quant_rules::nf4_code_value(i));
    expected.push_back(i);
  }
  v.push_back(-1.0f);
  expected.push_back(0);
  v.push_back(0.0f);
  expected.push_back(7);
  FourBitOptions opt;
  opt.blocksize = 128;
  FourBitWeight w = quantize_4bit_cpu(make(v, Shape{static_cast<int64_t>(v.size())}), opt, host_);
  EXPECT_EQ(codes(w), expected);
  EXPECT_EQ(floats(w.absmax), std::vector<float>{1.0f});
}

TEST_F(CpuQuantizerTest, Fp4UsesBitsandbytesThresholdsAndTheSignBit) {
  // Magnitude thresholds of dQuantizeFP4 and the codes below/above each.
  struct Case {
    float t;
    int below, above;
  };
  const Case cases[] = {{0.00260417f, 0, 1}, {0.0859375f, 1, 6}, {0.20833333f, 6, 7},
                        {0.29166667f, 7, 4}, {0.4166667f, 4, 5}, {0.583333f, 5, 2},
                        {0.8333333f, 2, 3}};
  std::vector<float> v = {1.0f};
  std::vector<int> expected = {3};
  for (const Case& c : cases) {
    for (float sign : {1.0f, -1.0f}) {
      const int s = sign < 0 ? 8 : 0;
      v.push_back(sign * c.t);  // on the threshold: the smaller magnitude
      expected.push_back(c.below + s);
      v.push_back(sign * std::nextafter(c.t, 2.0f));
      expected.push_back(c.above + s);
    }
  }
  v.push_back(0.0f);
  expected.push_back(0);
  v.push_back(-0.0f);  // -0.0 < 0 is false: no sign bit
  expected.push_back(0);
  v.push_back(-0.001f);  // a tiny negative value keeps its sign: code 8 (-0)
  expected.push_back(8);
  FourBitOptions opt;
  opt.quant_type = WeightFormat::kFp4;
  FourBitWeight w = quantize_4bit_cpu(make(v, Shape{static_cast<int64_t>(v.size())}), opt, host_);
  EXPECT_EQ(codes(w), expected);
}

TEST_F(CpuQuantizerTest, PacksTheFirstElementIntoTheHighNibble) {
  // NF4 codes 15, 0, 7(0.0), 8: bytes 0xF0, 0x78.
  FourBitWeight w = quantize_4bit_cpu(make({1.0f, -1.0f, 0.0f, 0.08f}, Shape{2, 2}), {}, host_);
  EXPECT_EQ(bytes(w.packed), (std::vector<uint8_t>{0xF0, 0x78}));
  EXPECT_EQ(w.packed.shape(), (Shape{2, 1}));
}

TEST_F(CpuQuantizerTest, AnOddCountPairsTheLastElementWithTheCodeOfZero) {
  // NF4: 1.0 -> 15, -1.0 -> 0, 0.5 -> 12, then the pad (0.0 -> code 7).
  FourBitWeight w = quantize_4bit_cpu(make({1.0f, -1.0f, 0.5f}, Shape{3}), {}, host_);
  EXPECT_EQ(bytes(w.packed), (std::vector<uint8_t>{0xF0, 0xC7}));
  EXPECT_EQ(w.packed.shape(), (Shape{2, 1}));
  EXPECT_EQ(codes(w), (std::vector<int>{15, 0, 12}));
}

TEST_F(CpuQuantizerTest, AnAllZeroBlockStoresAbsmaxZeroAndDequantizesToZero) {
  // bitsandbytes: 1 / 0 = inf, 0 * inf = NaN, which the NF4 tree sends to code 0.
  std::vector<float> v(64, 0.0f);
  v.push_back(2.0f);
  FourBitWeight w = quantize_4bit_cpu(make(v, Shape{65}), {}, host_);
  EXPECT_EQ(floats(w.absmax), (std::vector<float>{0.0f, 2.0f}));
  EXPECT_EQ(four_bit_code_at(w, 0), 0);
  std::vector<float> back = floats(dequantize_cpu(w, DType::kF32, host_));
  for (int i = 0; i < 64; ++i) EXPECT_EQ(back[i], 0.0f);
  EXPECT_EQ(back[64], 2.0f);
}

// ---- blocks ----------------------------------------------------------------

TEST_F(CpuQuantizerTest, TheLastBlockMayBeShorter) {
  // 100 elements, blocksize 64: blocks [0, 64) and [64, 100).
  std::vector<float> v(100);
  for (int i = 0; i < 100; ++i) v[i] = (i < 64 ? 0.01f : 0.1f) * static_cast<float>(i % 7);
  v[10] = -3.0f;
  v[99] = 5.0f;
  FourBitWeight w = quantize_4bit_cpu(make(v, Shape{10, 10}), {}, host_);
  EXPECT_EQ(w.layout().blocks(), 2u);
  EXPECT_EQ(floats(w.absmax), (std::vector<float>{3.0f, 5.0f}));
  EXPECT_EQ(four_bit_code_at(w, 10), 0);   // -3 / 3 = -1
  EXPECT_EQ(four_bit_code_at(w, 99), 15);  // 5 / 5 = 1
}

TEST_F(CpuQuantizerTest, EveryValidBlocksizeGivesOneAbsmaxPerBlock) {
  Tensor x = normal(Shape{37, 129}, DType::kF16, 7);  // 4773 elements: odd, no block multiple
  for (int64_t bs = 32; bs <= 4096; bs *= 2) {
    FourBitOptions opt;
    opt.blocksize = bs;
    FourBitWeight w = quantize_4bit_cpu(x, opt, host_);
    const uint64_t blocks = (4773 + bs - 1) / bs;
    EXPECT_EQ(w.absmax.shape(), (Shape{static_cast<int64_t>(blocks)})) << bs;
    std::vector<float> in = floats(x);
    std::vector<float> am = floats(w.absmax);
    for (uint64_t b = 0; b < blocks; ++b) {
      float m = 0;
      for (uint64_t i = b * bs; i < std::min<uint64_t>(4773, (b + 1) * bs); ++i) {
        m = std::max(m, std::fabs(in[i]));
      }
      ASSERT_EQ(am[b], m) << "blocksize " << bs << " block " << b;
    }
  }
}

TEST_F(CpuQuantizerTest, RejectsInvalidBlocksizesStorageAndInputs) {
  Tensor x = normal(Shape{4, 64}, DType::kF32, 1);
  for (int64_t bs : {0, 16, 48, 100, 8192, -64}) {
    FourBitOptions opt;
    opt.blocksize = bs;
    EXPECT_THROW(quantize_4bit_cpu(x, opt, host_), InvalidInputError) << bs;
  }
  FourBitOptions storage;
  storage.storage = DType::kI32;
  EXPECT_THROW(quantize_4bit_cpu(x, storage, host_), InvalidInputError);
  FourBitOptions int8_type;
  int8_type.quant_type = WeightFormat::kInt8;
  EXPECT_THROW(quantize_4bit_cpu(x, int8_type, host_), InvalidInputError);
  EXPECT_THROW(quantize_4bit_cpu(make({1, INFINITY}, Shape{2}), {}, host_), InvalidInputError);
  EXPECT_THROW(quantize_4bit_cpu(Tensor::empty(host_, DType::kI8, Shape{64}), {}, host_),
               InvalidInputError);
}

TEST_F(CpuQuantizerTest, ErrorsNameTheTensorAndTheElement) {
  try {
    quantize_4bit_cpu(make({1, 2, NAN}, Shape{3}), {}, host_, "layers.3.weight");
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.3.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("element 2"), std::string::npos) << e.what();
  }
}

// Large tensors are split over threads by block (rows for int8); the bytes
// must not depend on that split.
TEST_F(CpuQuantizerTest, LargeTensorsGiveTheSameBytesAsTheirPiecesQuantizedAlone) {
  const int64_t piece = int64_t{1} << 20;  // below the per-thread minimum: one thread
  Tensor x = normal(Shape{3 * piece}, DType::kF16, 21);
  FourBitWeight whole = quantize_4bit_cpu(x, {}, host_);
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
  for (int p = 0; p < 3; ++p) {
    Tensor part = Tensor::from_storage(x.storage(), static_cast<size_t>(p * piece * 2), DType::kF16,
                                       Shape{piece});
    FourBitWeight w = quantize_4bit_cpu(part, {}, host_);
    auto b = bytes(w.packed);
    packed.insert(packed.end(), b.begin(), b.end());
    auto a = floats(w.absmax);
    absmax.insert(absmax.end(), a.begin(), a.end());
  }
  EXPECT_EQ(bytes(whole.packed), packed);
  EXPECT_EQ(floats(whole.absmax), absmax);

  Tensor rows = normal(Shape{3 * 1024, 1024}, DType::kBF16, 22);
  Int8Weight w8 = quantize_int8_cpu(rows, host_);
  Tensor last = Tensor::from_storage(rows.storage(), size_t{2} * 1024 * 1024 * 2, DType::kBF16,
                                     Shape{1024, 1024});
  Int8Weight w8_last = quantize_int8_cpu(last, host_);
  const std::vector<uint8_t> all = bytes(w8.cb);
  EXPECT_EQ(std::vector<uint8_t>(all.end() - 1024 * 1024, all.end()), bytes(w8_last.cb));
}

TEST_F(CpuQuantizerTest, TheFirstBadElementIsReportedWhateverTheThreads) {
  Tensor x = normal(Shape{int64_t{4} << 20}, DType::kF32, 23);
  x.data_as<float>()[(3 << 20) + 5] = INFINITY;
  x.data_as<float>()[(1 << 20) + 7] = NAN;
  try {
    quantize_4bit_cpu(x, {}, host_, "big");
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("element {}", (1 << 20) + 7)),
              std::string::npos)
        << e.what();
  }
}

// ---- storage dtypes --------------------------------------------------------

TEST_F(CpuQuantizerTest, StorageDtypesHoldTheSameBytes) {
  Tensor x = normal(Shape{16, 64}, DType::kBF16, 3);
  FourBitWeight u8 = quantize_4bit_cpu(x, {}, host_);
  for (DType storage : {DType::kF16, DType::kBF16, DType::kF32}) {
    FourBitOptions opt;
    opt.storage = storage;
    FourBitWeight w = quantize_4bit_cpu(x, opt, host_);
    EXPECT_EQ(w.packed.dtype(), storage);
    EXPECT_EQ(w.packed.shape(), (Shape{static_cast<int64_t>(512 / dtype_size(storage)), 1}));
    EXPECT_EQ(bytes(w.packed), bytes(u8.packed)) << safetensors_name(storage);
    EXPECT_EQ(bytes(dequantize_cpu(w, DType::kBF16, host_)),
              bytes(dequantize_cpu(u8, DType::kBF16, host_)));
  }
}

TEST_F(CpuQuantizerTest, AWiderStorageDtypeIsZeroPaddedRatherThanTruncated) {
  // 5 elements: 3 bytes of codes. bitsandbytes' (5 + 1) // 8 = 0 F32 elements
  // would drop them all; one zero-padded F32 element keeps them.
  FourBitOptions opt;
  opt.storage = DType::kF32;
  FourBitWeight w = quantize_4bit_cpu(make({1, -1, 0.5f, 0.25f, -0.5f}, Shape{5}), opt, host_);
  EXPECT_EQ(w.packed.shape(), (Shape{1, 1}));
  std::vector<uint8_t> b = bytes(w.packed);
  EXPECT_EQ(b[3], 0);
  EXPECT_EQ(codes(w)[4], quant_rules::quantize_nf4_value(-0.5f));
}

// ---- double quantization ---------------------------------------------------

TEST_F(CpuQuantizerTest, DoubleQuantStoresAbsmaxCodesAgainstTheirMean) {
  // 1000 blocks of 64: nested blocks of 256 -> 4 nested absmax values.
  Tensor x = normal(Shape{1000, 64}, DType::kF32, 11);
  FourBitOptions plain_opt;
  FourBitWeight plain = quantize_4bit_cpu(x, plain_opt, host_);
  FourBitOptions opt;
  opt.double_quant = true;
  FourBitWeight w = quantize_4bit_cpu(x, opt, host_);
  ASSERT_TRUE(w.double_quant());
  EXPECT_EQ(w.absmax.dtype(), DType::kU8);
  EXPECT_EQ(w.absmax.shape(), (Shape{1000}));
  EXPECT_EQ(w.nested_absmax.shape(), (Shape{4}));
  EXPECT_EQ(w.nested_quant_map.shape(), (Shape{256}));
  EXPECT_EQ(w.nested_blocksize, 256);
  EXPECT_EQ(bytes(w.packed), bytes(plain.packed));  // the 4-bit codes do not change

  const std::vector<float> true_absmax = floats(plain.absmax);
  double sum = 0;
  for (float a : true_absmax) sum += a;
  EXPECT_EQ(w.nested_offset, static_cast<float>(sum / 1000));
  for (int j = 0; j < 4; ++j) {
    float m = 0;
    for (int b = j * 256; b < std::min(1000, (j + 1) * 256); ++b) {
      m = std::max(m, std::fabs(true_absmax[b] - w.nested_offset));
    }
    EXPECT_EQ(w.nested_absmax.data_as<float>()[j], m) << j;
  }
  // The dynamic map is fine near 0 and about 1% coarse near +-1: the
  // reconstructed absmax is within 1% of each nested block's range.
  std::vector<float> approx = block_absmax_cpu(w);
  for (int b = 0; b < 1000; ++b) {
    const float range = w.nested_absmax.data_as<float>()[b / 256];
    EXPECT_NEAR(approx[b], true_absmax[b], 0.01f * range) << b;
  }
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(w.nested_quant_map.data_as<float>()[i], quant_rules::dynamic_map_value(i));
  }
}

TEST_F(CpuQuantizerTest, DoubleQuantJsonRecordsTheNestedState) {
  FourBitOptions opt;
  opt.double_quant = true;
  opt.quant_type = WeightFormat::kFp4;
  FourBitWeight w = quantize_4bit_cpu(normal(Shape{8, 64}, DType::kF16, 5), opt, host_);
  std::string json(w.quant_state.data_as<const char>(), w.quant_state.numel());
  EXPECT_EQ(json.rfind(R"({"quant_type": "fp4", "blocksize": 64, "dtype": "float16", )"
                       R"("shape": [8, 64], "nested_blocksize": 256, "nested_dtype": "float32", )"
                       R"("nested_offset": )",
                       0),
            0u)
      << json;
  EXPECT_EQ(w.layout().quant_state_suffix(), "weight.quant_state.bitsandbytes__fp4");
}

// ---- accuracy (bitsandbytes' own figures) ---------------------------------

// bitsandbytes tests/test_functional.py test_4bit_quant: mean absolute error
// and mean relative error of quantize -> dequantize on 1024x1024 N(0, 1),
// (mean, std) over 200 samples; it asserts below mean + 7 std.
struct ErrorFigure {
  int64_t blocksize;
  double err_mean, err_std, rel_mean, rel_std;
};
constexpr ErrorFigure kNf4Figures[] = {
    {32, 0.067746, 0.000069, 0.189726, 0.000304},   {64, 0.072798, 0.000074, 0.203339, 0.000340},
    {128, 0.076831, 0.000091, 0.215237, 0.000391},  {256, 0.080337, 0.000102, 0.226105, 0.000398},
    {1024, 0.086610, 0.000187, 0.245370, 0.000600}, {4096, 0.092547, 0.000360, 0.262473, 0.000999}};
constexpr ErrorFigure kFp4Figures[] = {
    {32, 0.088925, 0.000091, 0.242443, 0.000330},   {64, 0.096543, 0.000111, 0.260125, 0.000379},
    {128, 0.102969, 0.000134, 0.275817, 0.000433},  {256, 0.108684, 0.000182, 0.289831, 0.000497},
    {1024, 0.119333, 0.000320, 0.315000, 0.000757}, {4096, 0.129536, 0.000612, 0.337169, 0.001239}};

void check_error(CpuQuantizerTest* t, WeightFormat type, const ErrorFigure& f, const Tensor& x,
                 HostMemoryResource& host) {
  FourBitOptions opt;
  opt.quant_type = type;
  opt.blocksize = f.blocksize;
  FourBitWeight w = quantize_4bit_cpu(x, opt, host);
  Tensor back = dequantize_cpu(w, DType::kF32, host);
  const float* a = x.data_as<const float>();
  const float* b = back.data_as<const float>();
  double err = 0, rel = 0;
  const uint64_t n = x.numel();
  for (uint64_t i = 0; i < n; ++i) {
    const double e = std::fabs(static_cast<double>(a[i]) - b[i]);
    err += e;
    rel += e / (std::fabs(a[i]) + 1e-8);
  }
  err /= n;
  rel /= n;
  EXPECT_LT(err, f.err_mean + 7 * f.err_std)
      << weight_format_name(type) << " blocksize " << f.blocksize;
  EXPECT_LT(rel, f.rel_mean + 7 * f.rel_std)
      << weight_format_name(type) << " blocksize " << f.blocksize;
  // And not suspiciously better than bitsandbytes (a wrong rule can't be).
  EXPECT_GT(err, f.err_mean - 7 * f.err_std - 0.001)
      << weight_format_name(type) << " " << f.blocksize;
}

TEST_F(CpuQuantizerTest, Nf4AndFp4ReconstructionErrorIsWithinBitsandbytesFigures) {
  Tensor x = normal(Shape{1024, 1024}, DType::kF32, 2024);
  for (const auto& f : kNf4Figures) check_error(this, WeightFormat::kNf4, f, x, host_);
  for (const auto& f : kFp4Figures) check_error(this, WeightFormat::kFp4, f, x, host_);
}

TEST_F(CpuQuantizerTest, DequantizeRoundsOnceToTheOutputDtype) {
  Tensor x = normal(Shape{4, 64}, DType::kF16, 9);
  FourBitWeight w = quantize_4bit_cpu(x, {}, host_);
  std::vector<float> f32 = floats(dequantize_cpu(w, DType::kF32, host_));
  std::vector<float> f16 = floats(dequantize_cpu(w, DType::kF16, host_));
  std::vector<float> bf16 = floats(dequantize_cpu(w, DType::kBF16, host_));
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_EQ(f16[i], half_bits_to_float(float_to_half_bits(f32[i])));
    EXPECT_EQ(bf16[i], bfloat16_bits_to_float(float_to_bfloat16_bits(f32[i])));
  }
  EXPECT_THROW(dequantize_cpu(w, DType::kI8, host_), InvalidInputError);
}

}  // namespace
}  // namespace stowage::quant
