// `stowage plan` and `stowage run` as CLI.md specifies them: exit codes 0 / 1
// / 2, the device map in text and JSON, and y written to OUT. Checkpoints are
// written with the mmap_store writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mlp_common.h"
#include "cli/mlp_session.h"
#include "core/error.h"
#include "core/platform.h"
#include "mmap_store/checkpoint.h"
#include "mmap_store/safetensors_writer.h"
#include "models/testing/mlp_checkpoints.h"
#include "offload/offload_manager.h"

namespace stowage::cli {
namespace {

using models::testing::RawTensor;
using models::testing::TestFormat;

class PlanRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("stowage_cli_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  void write(const std::string& path, const std::vector<RawTensor>& tensors) {
    mmap_store::SafetensorsWriter writer(path);
    for (const auto& t : tensors) writer.declare(t.name, t.dtype, t.shape);
    for (const auto& t : tensors) writer.write(t.name, t.bytes.data(), t.bytes.size());
    writer.commit();
  }
  // A model of 8 layers of 64 (f16) and an input x [2, 64].
  void write_model(TestFormat format = TestFormat::kF16) {
    model_ = models::testing::make_mlp(std::vector<int64_t>(9, 64), format, 3);
    write(file("model.safetensors"), model_);
    write(file("in.safetensors"), {models::testing::make_input(2, 64, 4)});
  }
  uint64_t model_bytes() const {
    uint64_t n = 0;
    for (const auto& t : model_) n += t.bytes.size();
    return n;
  }
  std::vector<float> read_y(const std::string& path) {
    auto out = mmap_store::open_checkpoint(path);
    Tensor y = out->tensor("y");
    EXPECT_EQ(y.dtype(), DType::kF32);
    return std::vector<float>(y.data_as<float>(), y.data_as<float>() + y.numel());
  }
  int plan(std::vector<std::string> args, std::string* out = nullptr) {
    ::testing::internal::CaptureStdout();
    int rc = run_guarded("plan", run_plan, args);
    std::string text = ::testing::internal::GetCapturedStdout();
    if (out) *out = text;
    return rc;
  }
  int run(std::vector<std::string> args, std::string* out = nullptr) {
    ::testing::internal::CaptureStdout();
    int rc = run_guarded("run", run_run, args);
    std::string text = ::testing::internal::GetCapturedStdout();
    if (out) *out = text;
    return rc;
  }

  std::filesystem::path dir_;
  std::vector<RawTensor> model_;
};

TEST_F(PlanRunTest, PlanPrintsEachModuleWithItsTierAndTheReserve) {
  write_model();
  std::string out;
  ASSERT_EQ(plan({"--model", file("model.safetensors"), "--max-memory",
                  "0=" + std::to_string(model_bytes() / 2), "--device", "sim"},
                 &out),
            0);
  EXPECT_NE(out.find("layers.0"), std::string::npos) << out;
  EXPECT_NE(out.find("layers.7"), std::string::npos) << out;
  EXPECT_NE(out.find("sim:0"), std::string::npos) << out;
  EXPECT_NE(out.find("cpu"), std::string::npos) << out;
}

TEST_F(PlanRunTest, PlanJsonListsModulesInExecutionOrder) {
  write_model();
  std::string out;
  ASSERT_EQ(plan({"--model", file("model.safetensors"), "--max-memory", "0=1GiB", "--json",
                  "--device", "sim"},
                 &out),
            0);
  boost::json::value v = boost::json::parse(out);
  const auto& modules = v.at("modules").as_array();
  ASSERT_EQ(modules.size(), 8u);
  EXPECT_EQ(modules[0].at("module").as_string(), "layers.0");
  EXPECT_EQ(modules[7].at("module").as_string(), "layers.7");
  EXPECT_EQ(modules[0].at("tier").as_string(), "sim:0");
}

TEST_F(PlanRunTest, PlanThatCannotFitExitsOneNamingTheModule) {
  write_model();
  ::testing::internal::CaptureStderr();
  int rc = plan(
      {"--model", file("model.safetensors"), "--max-memory", "0=1KiB,cpu=1KiB", "--device", "sim"});
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("layers."), std::string::npos) << err;
}

// The plan keeps the working memory a forward of --batch rows needs on
// accelerator 0 (x, y and two activation buffers of float32; the host
// reference kernels of sim take no scratch): 4 x (64 + 64) x 4 + 2 x 4 x 64 x 4.
TEST_F(PlanRunTest, PlanKeepsAndPrintsTheWorkingReserveForTheBatch) {
  write_model();
  std::string out;
  ASSERT_EQ(plan({"--model", file("model.safetensors"), "--max-memory", "0=1GiB", "--batch", "4",
                  "--device", "sim"},
                 &out),
            0);
  EXPECT_NE(out.find("working-memory reserve (activations and kernel scratch):"), std::string::npos)
      << out;
  EXPECT_NE(out.find("4096"), std::string::npos) << out;
  ASSERT_EQ(plan({"--model", file("model.safetensors"), "--max-memory", "0=1GiB", "--batch", "4",
                  "--json", "--device", "sim"},
                 &out),
            0);
  boost::json::value v = boost::json::parse(out);
  EXPECT_EQ(v.at("working_reserve_per_accelerator").at("sim:0").as_int64(), 4096);
  EXPECT_EQ(v.at("batch").as_int64(), 4);
}

TEST_F(PlanRunTest, PlanWhoseWorkingReserveDoesNotFitExitsOneNamingIt) {
  write_model();
  ::testing::internal::CaptureStderr();
  const int rc = plan({"--model", file("model.safetensors"), "--max-memory", "0=2KiB", "--batch",
                       "4", "--device", "sim"});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("sim:0 cannot hold its working-memory reserve"), std::string::npos) << err;
  EXPECT_NE(err.find("4096 bytes"), std::string::npos) << err;
  EXPECT_NE(err.find("sim:0=2.00 KiB (2048 bytes)"), std::string::npos) << err;
}

// Issue #15 item 4: plan accepted budgets that could not hold a fetch slot
// beside the working reserve, and run then loaded everything and failed at
// its first forward ("no fetch slot could be allocated"). Now both refuse the
// same budgets through the planner, before loading, and the least budget
// the plan accepts runs (with one slot: fetches wait for it).
TEST_F(PlanRunTest, PlanAndRunAgreeOnTheLeastBudgetThatRuns) {
  write_model();
  const std::vector<std::string> model = {"--model", file("model.safetensors"), "--device", "sim"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.begin(), model.begin(), model.end());
    return args;
  };
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(plan(with({"--max-memory", "0=3KiB", "--batch", "2"})),
            1);  // above the working reserve
  std::string err = ::testing::internal::GetCapturedStderr();
  const std::string key = "a run needs at least ";
  const size_t at = err.find(key);
  ASSERT_NE(at, std::string::npos) << err;
  EXPECT_NE(err.find("sim:0 cannot hold one fetch slot for the streamed module layers."),
            std::string::npos)
      << err;
  const uint64_t least = std::stoull(err.substr(at + key.size()));
  const std::string enough = "0=" + std::to_string(least);
  const std::string short_one = "0=" + std::to_string(least - 1);

  ::testing::internal::CaptureStderr();
  EXPECT_EQ(plan(with({"--max-memory", short_one, "--batch", "2"})), 1);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("cannot hold one fetch slot"),
            std::string::npos);
  std::string text;
  ASSERT_EQ(plan(with({"--max-memory", enough, "--batch", "2"}), &text), 0);
  EXPECT_NE(text.find("1 of its 2 slots"), std::string::npos) << text;

  ASSERT_EQ(
      run(with({"--input", file("in.safetensors"), "--output", file("resident.safetensors")})), 0);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run(with({"--input", file("in.safetensors"), "--output", file("short.safetensors"),
                      "--max-memory", short_one, "--prefetch", "1"})),
            1);
  err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot hold one fetch slot"), std::string::npos) << err;
  EXPECT_NE(err.find("needs at least " + std::to_string(least) + " bytes"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("no fetch slot could be allocated"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(file("short.safetensors")));

  std::string report;
  ASSERT_EQ(run(with({"--input", file("in.safetensors"), "--output", file("least.safetensors"),
                      "--max-memory", enough, "--prefetch", "1", "--report"}),
                &report),
            0);
  EXPECT_NE(report.find("synchronous fallbacks"), std::string::npos) << report;
  std::vector<float> a = read_y(file("resident.safetensors"));
  std::vector<float> b = read_y(file("least.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

// Issue #15 item 9: --max-memory's disk= budget was only a planning hint (the
// session never gave it to the offload manager, so nothing limited what the
// disk tier wrote), and no test set a pinned-host or disk budget at all.
TEST_F(PlanRunTest, ThePinnedAndDiskBudgetsReachTheOffloadManager) {
  const MemoryBudgets budgets = parse_max_memory("0=1MiB,cpu=3KiB,disk=5000");
  auto platform = make_platform("sim", budgets);
  const SessionConfig config = session_config_for(*platform, budgets, file("offload"), 2);
  const OffloadOptions options = offload_options(config);
  EXPECT_EQ(options.budget_of(Tier::pinned_host()), 3072u);
  EXPECT_EQ(options.budget_of(Tier::disk()), 5000u);
  OffloadManager manager(*platform, options);
  auto bytes = [&](int64_t n) {
    Tensor t = Tensor::empty(platform->pageable_host_memory(), DType::kU8, Shape{n});
    std::memset(t.data(), 1, t.bytes());
    return t;
  };
  EXPECT_THROW(manager.place("a", "weight", TensorRole::kWeight, bytes(4096), Tier::pinned_host()),
               OutOfBudgetError);
  manager.place("b", "weight", TensorRole::kWeight, bytes(3000), Tier::pinned_host());
  EXPECT_THROW(manager.place("c", "weight", TensorRole::kWeight, bytes(100), Tier::pinned_host()),
               OutOfBudgetError);
  manager.place("d", "weight", TensorRole::kWeight, bytes(4000), Tier::disk());
  EXPECT_THROW(manager.place("e", "weight", TensorRole::kWeight, bytes(1001), Tier::disk()),
               OutOfBudgetError);
  manager.place("f", "weight", TensorRole::kWeight, bytes(1000), Tier::disk());
  EXPECT_EQ(manager.usage(Tier::pinned_host()).peak_bytes, 3000u);
  EXPECT_EQ(manager.disk_bytes(), 5000u);
}

TEST_F(PlanRunTest, BadUsageExitsTwo) {
  write_model();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(plan({"--model", file("model.safetensors")}), 2);  // no --max-memory
  EXPECT_EQ(plan({"--bogus"}), 2);
  EXPECT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors")}), 2);
  EXPECT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                 "--output", file("y.safetensors"), "--max-memory", "disk=1GiB"}),
            2);  // disk without --offload-dir
  ::testing::internal::GetCapturedStderr();
}

// --override-tensor (issue #19): the weights of every other layer in host
// RAM, their biases and the other layers on the accelerator (int8: the
// weights' SCB goes with them). run writes the all-resident output bit for
// bit, and plan shows each overridden tensor on its tier.
TEST_F(PlanRunTest, OverrideTensorPlacesTheMatchingTensorsAndRunGivesTheResidentOutput) {
  for (TestFormat format : {TestFormat::kF16, TestFormat::kInt8}) {
    write_model(format);
    ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                   "--output", file("resident.safetensors"), "--device", "sim"}),
              0);
    const std::string pattern = "layers\\.[1357]\\.weight=cpu";
    ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                   "--output", file("overridden.safetensors"), "--device", "sim",
                   "--override-tensor", pattern}),
              0);
    EXPECT_EQ(read_y(file("overridden.safetensors")), read_y(file("resident.safetensors")));
    std::string out;
    ASSERT_EQ(plan({"--model", file("model.safetensors"), "--max-memory", "0=1GiB", "--json",
                    "--device", "sim", "--override-tensor", pattern},
                   &out),
              0);
    const boost::json::value plan_json = boost::json::parse(out);
    const boost::json::array& modules = plan_json.at("modules").as_array();
    ASSERT_EQ(modules.size(), 8u);
    for (size_t i = 0; i < modules.size(); ++i) {
      const bool overridden = i % 2 == 1;
      EXPECT_EQ(modules[i].at("streamed").as_bool(), overridden) << i;
      if (!overridden) continue;
      const boost::json::array& tensors = modules[i].at("tensor_tiers").as_array();
      std::vector<std::string> names;
      for (const auto& t : tensors) {
        names.push_back(std::string(t.at("tensor").as_string()));
        EXPECT_EQ(t.at("tier").as_string(), "cpu");
      }
      EXPECT_EQ(std::count(names.begin(), names.end(), "weight"), 1);
      EXPECT_EQ(std::count(names.begin(), names.end(), "bias"), 0) << "the bias stays";
      // int8: SCB (and weight_format) go with the weight.
      EXPECT_EQ(std::count(names.begin(), names.end(), "SCB"),
                format == TestFormat::kInt8 ? 1 : 0);
    }
  }
}

TEST_F(PlanRunTest, BadOverrideTensorExitsTwoNamingWhatWasExpected) {
  write_model();
  const std::vector<std::string> base = {"--model", file("model.safetensors"), "--input",
                                         file("in.safetensors"), "--output",
                                         file("y.safetensors"), "--device", "sim"};
  for (const auto& [value, message] : std::vector<std::pair<std::string, std::string>>{
           {"layers", "expected REGEX=TIER"},
           {"layers\\..*=tape", "found 'tape'"},
           {"layers\\..*=disk", "needs --offload-dir"},
           {"(=cpu", "--override-tensor"}}) {
    std::vector<std::string> args = base;
    args.insert(args.end(), {"--override-tensor", value});
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(run(args), 2) << value;
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find(message), std::string::npos) << value << ": " << err;
  }
  ::testing::internal::CaptureStderr();
  std::vector<std::string> args = base;
  args.insert(args.end(), {"--override-tensor", "nothing=cpu"});
  EXPECT_EQ(run(args), 1);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("matches no tensor"), std::string::npos) << err;
}

TEST_F(PlanRunTest, RunWithAQuarterBudgetWritesTheAllResidentOutput) {
  for (TestFormat format : {TestFormat::kF16, TestFormat::kInt8, TestFormat::kNf4}) {
    write_model(format);
    ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                   "--output", file("resident.safetensors"), "--device", "sim"}),
              0);
    std::string report;
    ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                   "--output", file("streamed.safetensors"), "--device", "sim", "--max-memory",
                   "0=" + std::to_string(model_bytes() / 4), "--prefetch", "1", "--report",
                   "--trace", file("trace.json")},
                  &report),
              0);
    std::vector<float> a = read_y(file("resident.safetensors"));
    std::vector<float> b = read_y(file("streamed.safetensors"));
    ASSERT_EQ(a.size(), 2u * 64u);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    EXPECT_NE(report.find("cpu"), std::string::npos) << report;  // some layers streamed
    EXPECT_TRUE(std::filesystem::exists(file("trace.json")));
  }
}

TEST_F(PlanRunTest, RunWithTheDiskTierGivesTheSameOutput) {
  write_model();
  ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                 "--output", file("resident.safetensors"), "--device", "sim"}),
            0);
  std::string report;
  ASSERT_EQ(
      run({"--model", file("model.safetensors"), "--input", file("in.safetensors"), "--output",
           file("disk.safetensors"), "--device", "sim", "--max-memory",
           "0=" + std::to_string(model_bytes() / 4) + ",cpu=" + std::to_string(model_bytes() / 4),
           "--offload-dir", file("offload"), "--report"},
          &report),
      0);
  // Modules really went to disk and were read back (issue #15 item 9).
  EXPECT_NE(report.find(" disk "), std::string::npos) << report;
  const std::string key = "read from disk: ";
  const size_t at = report.find(key);
  ASSERT_NE(at, std::string::npos) << report;
  EXPECT_NE(report.compare(at + key.size(), 3, "0 B"), 0) << report;
  std::vector<float> a = read_y(file("resident.safetensors"));
  std::vector<float> b = read_y(file("disk.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST_F(PlanRunTest, RunOnCudaAgreesWithSim) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device visible";
  write_model();
  ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                 "--output", file("sim.safetensors"), "--device", "sim"}),
            0);
  // A quarter of the model for weights, plus the working reserve `plan`
  // reports for x's batch (the cuBLASLt workspace, activations, scratch).
  std::string json;
  ASSERT_EQ(plan({"--model", file("model.safetensors"), "--max-memory", "0=1GiB", "--batch", "2",
                  "--json", "--device", "cuda"},
                 &json),
            0);
  const uint64_t working = boost::json::parse(json)
                               .at("working_reserve_per_accelerator")
                               .at("cuda:0")
                               .to_number<uint64_t>();
  ASSERT_EQ(run({"--model", file("model.safetensors"), "--input", file("in.safetensors"),
                 "--output", file("cuda.safetensors"), "--device", "cuda", "--max-memory",
                 "0=" + std::to_string(model_bytes() / 4 + working), "--report"},
                &json),
            0);
  EXPECT_NE(json.find("cpu"), std::string::npos) << "streams from pinned host: " << json;
  std::vector<float> a = read_y(file("sim.safetensors"));
  std::vector<float> b = read_y(file("cuda.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  // CUDA rounds the activations to float16 for float16 weights.
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-2 * (1 + std::fabs(a[i])));
}

TEST_F(PlanRunTest, RunRefusesAnInputWithoutXAndACheckpointThatIsNotAnMlp) {
  write_model();
  write(file("bad_in.safetensors"), {{"z", DType::kF32, Shape{1, 64}, std::vector<uint8_t>(256)}});
  write(file("not_mlp.safetensors"),
        {{"embed.weight", DType::kF32, Shape{4, 4}, std::vector<uint8_t>(64)}});
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run({"--model", file("model.safetensors"), "--input", file("bad_in.safetensors"),
                 "--output", file("y.safetensors"), "--device", "sim"}),
            1);
  EXPECT_EQ(run({"--model", file("not_mlp.safetensors"), "--input", file("in.safetensors"),
                 "--output", file("y.safetensors"), "--device", "sim"}),
            1);
  EXPECT_EQ(run({"--model", file("missing.safetensors"), "--input", file("in.safetensors"),
                 "--output", file("y.safetensors"), "--device", "sim"}),
            1);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("'x'"), std::string::npos) << err;
  EXPECT_NE(err.find("embed.weight"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(file("y.safetensors")));
}

}  // namespace
}  // namespace stowage::cli
