// `stowage quantize` as CLI.md specifies it: the bitsandbytes key layout in
// OUT, copies of everything it does not quantize, exit codes 0 / 1 / 2, and
// no OUT at all when it fails. Runs on the CPU reference (--device sim), so
// it needs no GPU; files are written and read through mmap_store.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "mmap_store/safetensors_reader.h"
#include "mmap_store/safetensors_writer.h"
#include "quant/bnb_format.h"
#include "quant/cpu_quantizer.h"
#include "quant/testing/random_tensors.h"

namespace stowage::cli {
namespace {

using quant::QuantizedWeight;

class QuantizeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("stowage_quantize_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  Tensor normal(Shape shape, DType dtype, uint32_t seed) {
    return quant::testing::normal_tensor(host_, std::move(shape), dtype, seed);
  }
  void write(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
    mmap_store::SafetensorsWriter writer(path);
    for (const auto& [name, t] : tensors) writer.declare(name, t.dtype(), t.shape());
    for (const auto& [name, t] : tensors) writer.write(name, t.view());
    writer.commit();
  }
  // A small model: two linear layers (odd counts, not block multiples), a
  // norm, a 3-D conv weight and an lm_head.
  void write_model() {
    model_ = {{"layers.0.weight", normal(Shape{33, 77}, DType::kBF16, 1)},
              {"layers.0.bias", normal(Shape{33}, DType::kBF16, 2)},
              {"layers.1.weight", normal(Shape{40, 33}, DType::kF16, 3)},
              {"norm.weight", normal(Shape{40}, DType::kF32, 4)},
              {"conv.weight", normal(Shape{4, 2, 3}, DType::kF16, 5)},
              {"lm_head.weight", normal(Shape{10, 40}, DType::kF32, 6)}};
    write(file("in.safetensors"), model_);
  }
  int quantize(std::vector<std::string> args, std::string* err = nullptr) {
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const int rc = run_guarded("quantize", run_quantize, args);
    ::testing::internal::GetCapturedStdout();
    const std::string e = ::testing::internal::GetCapturedStderr();
    if (err) *err = e;
    return rc;
  }
  static std::vector<uint8_t> bytes(const Tensor& t) {
    const auto* p = t.data_as<const uint8_t>();
    return std::vector<uint8_t>(p, p + t.bytes());
  }
  static quant::TensorLookup lookup(const mmap_store::SafetensorsFile& f) {
    return [&f](const std::string& name) -> std::optional<Tensor> {
      if (!f.contains(name)) return std::nullopt;
      return f.tensor(name);
    };
  }
  size_t files_in_dir() const {
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir_),
                                             std::filesystem::directory_iterator()));
  }

  HostMemoryResource host_;
  std::filesystem::path dir_;
  std::vector<std::pair<std::string, Tensor>> model_;
};

// Round trip through real files (seed lesson 2): quantize -> save -> load ->
// dequantize equals quantize -> dequantize, for every storage dtype, with and
// without double quantization; the copies are untouched.
TEST_F(QuantizeCommandTest, FourBitFilesRoundTripBitExactlyForEveryStorageAndNesting) {
  write_model();
  for (const char* method : {"nf4", "fp4"}) {
    for (const char* storage : {"uint8", "float16", "bfloat16", "float32"}) {
      for (bool nested : {false, true}) {
        SCOPED_TRACE(fmt::format("{} {} nested={}", method, storage, nested));
        std::vector<std::string> args = {"--method",
                                         method,
                                         "--quant-storage",
                                         storage,
                                         "--blocksize",
                                         "32",
                                         "--device",
                                         "sim",
                                         "--skip",
                                         "lm_head",
                                         file("in.safetensors"),
                                         file("out.safetensors")};
        if (nested) args.insert(args.begin(), "--double-quant");
        ASSERT_EQ(quantize(args), 0);
        auto out = mmap_store::SafetensorsFile::open(file("out.safetensors"));
        quant::FourBitOptions opt;
        opt.quant_type = *quant::quantized_format_from_name(method);
        opt.blocksize = 32;
        opt.double_quant = nested;
        opt.storage = *dtype_from_torch_name(storage);
        for (const auto& [name, source] : model_) {
          const bool target = (name == "layers.0.weight" || name == "layers.1.weight");
          if (!target) {
            EXPECT_EQ(bytes(out->tensor(name)), bytes(source)) << name << " is copied unchanged";
            continue;
          }
          const std::string prefix = name.substr(0, name.size() - 7);
          std::optional<QuantizedWeight> loaded =
              quant::load_quantized_weight(prefix, lookup(*out));
          ASSERT_TRUE(loaded.has_value()) << name;
          EXPECT_EQ(std::get<quant::FourBitWeight>(*loaded).storage_dtype(), opt.storage);
          const auto direct = quant::quantize_4bit_cpu(source, opt, host_, name);
          for (DType d : {DType::kF32, DType::kF16}) {
            EXPECT_EQ(bytes(quant::dequantize_cpu(*loaded, d, host_)),
                      bytes(quant::dequantize_cpu(direct, d, host_)))
                << name;
          }
        }
      }
    }
  }
}

TEST_F(QuantizeCommandTest, Int8WritesWeightScbAndWeightFormat) {
  write_model();
  ASSERT_EQ(quantize({"--method", "int8", "--device", "sim", file("in.safetensors"),
                      file("out.safetensors")}),
            0);
  auto out = mmap_store::SafetensorsFile::open(file("out.safetensors"));
  EXPECT_EQ(out->info("layers.1.weight").dtype, DType::kI8);
  EXPECT_EQ(out->info("layers.1.SCB").shape, (Shape{40}));
  EXPECT_EQ(out->info("layers.1.weight_format").shape, Shape{});
  EXPECT_EQ(out->info("lm_head.weight").dtype, DType::kI8);  // no --skip: quantized too
  EXPECT_EQ(out->info("conv.weight").dtype, DType::kF16);    // 3-D: copied through
  EXPECT_EQ(out->info("norm.weight").dtype, DType::kF32);
  const auto infos = quant::detect_quantized_weights(out->names(), lookup(*out));
  EXPECT_EQ(infos.size(), 3u);
}

TEST_F(QuantizeCommandTest, BadUsageExitsTwo) {
  write_model();
  const std::string in = file("in.safetensors");
  const std::string out = file("out.safetensors");
  EXPECT_EQ(quantize({in, out}), 2);                                     // no --method
  EXPECT_EQ(quantize({"--method", "nf4", in}), 2);                       // no OUT
  EXPECT_EQ(quantize({"--method", "nf4", "--bogus", "1", in, out}), 2);  // unknown flag
  EXPECT_EQ(quantize({"--method", "nf4", "--blocksize", "abc", in, out}), 2);
  EXPECT_EQ(quantize({"--method", "int8", "--double-quant", in, out}), 2);   // 4-bit only
  EXPECT_EQ(quantize({"--method", "nf4", "--threshold", "6", in, out}), 2);  // int8 only
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Issue #15: a bad flag value is bad usage (exit 2) in every command, with a
// message naming the flag and the value.
TEST_F(QuantizeCommandTest, BadFlagValuesExitTwoNamingTheFlag) {
  write_model();
  const std::string in = file("in.safetensors");
  const std::string out = file("out.safetensors");
  std::string err;
  EXPECT_EQ(quantize({"--method", "int4", in, out}, &err), 2);
  EXPECT_NE(err.find("unknown quantization method 'int4'"), std::string::npos) << err;
  for (const char* bs : {"48", "16", "8192", "0", "-64"}) {
    EXPECT_EQ(quantize({"--method", "nf4", "--blocksize", bs, in, out}, &err), 2) << bs;
    EXPECT_NE(err.find("power of two in [32, 4096]"), std::string::npos) << err;
  }
  EXPECT_EQ(quantize({"--method", "nf4", "--quant-storage", "int8", in, out}, &err), 2);
  EXPECT_NE(err.find("--quant-storage"), std::string::npos) << err;
  EXPECT_EQ(quantize({"--method", "nf4", "--skip", "(", in, out}, &err), 2);
  EXPECT_NE(err.find("--skip: '(' is not a valid regular expression"), std::string::npos) << err;
  for (const char* t : {"nan", "inf", "-1"}) {
    EXPECT_EQ(quantize({"--method", "int8", "--threshold", t, in, out}, &err), 2) << t;
    EXPECT_NE(err.find("--threshold"), std::string::npos) << err;
  }
  EXPECT_EQ(quantize({"--method", "nf4", "--device", "tpu", in, out}, &err), 2);
  EXPECT_NE(err.find("--device expects auto, cuda or sim, found 'tpu'"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Issue #15: --skip is RE2 (linear time): a pattern that makes a backtracking
// engine take exponential time or overflow its stack on a long name finishes.
TEST_F(QuantizeCommandTest, APathologicalSkipPatternFinishesOnALongName) {
  const std::string long_name = std::string(20000, 'a') + ".weight";
  Tensor w = Tensor::empty(host_, DType::kF32, Shape{4, 64});
  std::fill_n(w.data_as<float>(), w.numel(), 0.5f);
  write(file("in.safetensors"), {{long_name, w}});
  EXPECT_EQ(quantize({"--method", "nf4", "--device", "sim", "--skip", "^(a|aa)*b$",
                      file("in.safetensors"), file("out.safetensors")}),
            0);
  EXPECT_EQ(quantize({"--method", "nf4", "--device", "sim", "--skip", "(a*)*\\.weight",
                      file("in.safetensors"), file("out2.safetensors")}),
            0);
  auto kept = mmap_store::SafetensorsFile::open(file("out2.safetensors"));
  EXPECT_EQ(kept->info(long_name).dtype, DType::kF32);  // skipped: copied through
}

// Issue #15: OUT never replaces IN: not by a symbolic link, not by a hard
// link; and OUT that is a folder or a FIFO is refused before any work.
TEST_F(QuantizeCommandTest, OutThatIsTheInputThroughALinkOrNotARegularFileExitsOne) {
  write_model();
  const std::string in = file("in.safetensors");
  const auto before = std::filesystem::file_size(in);
  std::filesystem::create_symlink(in, file("sym.safetensors"));
  std::filesystem::create_hard_link(in, file("hard.safetensors"));
  std::filesystem::create_directory(file("folder"));
  std::string err;
  for (const char* out : {"sym.safetensors", "hard.safetensors"}) {
    EXPECT_EQ(quantize({"--method", "nf4", in, file(out)}, &err), 1) << out;
    EXPECT_NE(err.find("is the input file"), std::string::npos) << err;
  }
  EXPECT_EQ(quantize({"--method", "nf4", in, file("folder")}, &err), 1);
  EXPECT_NE(err.find("expected a regular file to write"), std::string::npos) << err;
  EXPECT_NE(err.find("found a directory"), std::string::npos) << err;
  EXPECT_EQ(std::filesystem::file_size(in), before);
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }
}

TEST_F(QuantizeCommandTest, BadInputExitsOneWithAClearMessage) {
  write_model();
  const std::string in = file("in.safetensors");
  const std::string out = file("out.safetensors");
  std::string err;
  EXPECT_EQ(quantize({"--method", "nf4", file("missing.safetensors"), out}, &err), 1);
  EXPECT_EQ(quantize({"--method", "nf4", in, in}, &err), 1);  // OUT is IN
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(QuantizeCommandTest, AHalfPresentStateInTheInputExitsOneNamingTheTensor) {
  write(file("in.safetensors"),
        {{"fc.weight", Tensor::empty(host_, DType::kU8, Shape{8, 1})},
         {"fc.weight.absmax", Tensor::empty(host_, DType::kF32, Shape{1})}});
  std::string err;
  EXPECT_EQ(quantize({"--method", "nf4", file("in.safetensors"), file("out.safetensors")}, &err),
            1);
  EXPECT_NE(err.find("fc.weight.quant_map"), std::string::npos) << err;
  EXPECT_NE(err.find("missing"), std::string::npos) << err;
}

TEST_F(QuantizeCommandTest, AnAlreadyQuantizedInputExitsOne) {
  write_model();
  ASSERT_EQ(quantize({"--method", "nf4", "--device", "sim", file("in.safetensors"),
                      file("q.safetensors")}),
            0);
  std::string err;
  EXPECT_EQ(quantize({"--method", "int8", file("q.safetensors"), file("out.safetensors")}, &err),
            1);
  EXPECT_NE(err.find("already holds quantized weights"), std::string::npos) << err;
}

// OUT appears only when complete: a failure half way (a NaN in the last
// weight) leaves neither OUT nor a temporary file behind.
TEST_F(QuantizeCommandTest, AFailureHalfWayLeavesNoOutput) {
  Tensor bad = normal(Shape{8, 64}, DType::kF32, 9);
  bad.data_as<float>()[100] = NAN;
  write(file("in.safetensors"),
        {{"a.weight", normal(Shape{64, 64}, DType::kF16, 8)}, {"b.weight", bad}});
  std::string err;
  EXPECT_EQ(quantize({"--method", "nf4", "--device", "sim", file("in.safetensors"),
                      file("out.safetensors")},
                     &err),
            1);
  EXPECT_NE(err.find("b.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("element 100"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(file("out.safetensors")));
  EXPECT_EQ(files_in_dir(), 1u) << "only the input is left";
}

}  // namespace
}  // namespace stowage::cli
