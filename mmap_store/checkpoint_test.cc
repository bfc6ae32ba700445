// Specification of sharded checkpoints, the offload folder and
// open_checkpoint's dispatch.
#include "mmap_store/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "mmap_store/offload_folder.h"
#include "mmap_store/safetensors_writer.h"
#include "mmap_store/sharded_checkpoint.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::write_file;

void write_shard(const std::string& path,
                 const std::vector<std::pair<std::string, std::string>>& t) {
  SafetensorsWriter w(path);
  for (const auto& [name, bytes] : t) w.declare(name, DType::kU8, Shape{int64_t(bytes.size())});
  for (const auto& [name, bytes] : t) w.write(name, bytes.data(), bytes.size());
  w.commit();
}

std::string bytes_of(const Tensor& t) {
  return std::string(static_cast<const char*>(t.data()), t.bytes());
}

// Issue #15 item 5: reading a mapped tensor after its file was truncated
// ended the process by SIGBUS. The read now finds zeros and
// check_mapped_read says which file shrank; a mapping that was not hit, and a
// tensor of another file, pass.
TEST(MappedFileTest, ATruncatedFileReadsZerosAndCheckMappedReadNamesIt) {
  TempDir dir;
  const std::string path = dir.file("shrinks.safetensors");
  const std::string other = dir.file("other.safetensors");
  const std::string payload(3 * 65536, 'x');
  write_shard(path, {{"head", "HEAD"}, {"big", payload}});
  write_shard(other, {{"big", payload}});
  auto checkpoint = open_checkpoint(path);
  auto untouched = open_checkpoint(other);
  const Tensor big = checkpoint->tensor("big");
  EXPECT_NO_THROW(check_mapped_read(big, "big"));
  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
  std::string copy(big.bytes(), '?');
  std::memcpy(copy.data(), big.data(), big.bytes());  // SIGBUS before the guard
  EXPECT_EQ(copy.back(), '\0') << "past the new end: zeros";
  try {
    check_mapped_read(big, "tensor 'big'");
    ADD_FAILURE() << "no IoError";
  } catch (const IoError& e) {
    EXPECT_THAT(std::string(e.what()),
                AllOf(HasSubstr(path), HasSubstr("tensor 'big'"), HasSubstr("shrank")));
  }
  EXPECT_NO_THROW(check_mapped_read(untouched->tensor("big"), "big"));
  EXPECT_NO_THROW(check_mapped_read(bytes_of(big).data(), 16, "a host copy"));
}

// Opening measures the file it mapped: a file shorter than its header says
// is refused at open, before any tensor is read.
TEST(MappedFileTest, AFileTruncatedBeforeOpeningIsRefusedAtOpen) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  write_shard(path, {{"big", std::string(65536, 'x')}});
  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
  EXPECT_THROW(open_checkpoint(path), InvalidInputError);
}

class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_shard(dir_.file("model-00001-of-00002.safetensors"), {{"a", "AAAA"}, {"b", "BB"}});
    write_shard(dir_.file("model-00002-of-00002.safetensors"), {{"c", "CCC"}});
  }
  std::string index(const std::string& weight_map) {
    std::string path = dir_.file("model.safetensors.index.json");
    write_file(path, R"({"metadata": {"total_size": 9}, "weight_map": )" + weight_map + "}");
    return path;
  }
  std::string open_error(const std::string& weight_map) {
    try {
      ShardedCheckpoint::open(index(weight_map));
    } catch (const InvalidInputError& e) {
      return e.what();
    }
    ADD_FAILURE() << "opened";
    return "";
  }
  TempDir dir_;
};

TEST_F(ShardedCheckpointTest, OpensAsOneLogicalCheckpoint) {
  auto ckpt = open_checkpoint(index(R"({"a": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"})"));
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"a", "c", "b"}));
  EXPECT_EQ(bytes_of(ckpt->tensor("a")), "AAAA");
  EXPECT_EQ(bytes_of(ckpt->tensor("c")), "CCC");
  EXPECT_EQ(ckpt->tensor("c").tier(), Tier::disk());
  EXPECT_THAT(ckpt->info("c").file, HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_EQ(ckpt->total_bytes(), 9u);
  ASSERT_EQ(ckpt->metadata().size(), 1u);
  EXPECT_EQ(ckpt->metadata()[0].second, "9");
}

TEST_F(ShardedCheckpointTest, MissingShardIsAnErrorNamingShardAndTensor) {
  EXPECT_THAT(open_error(R"({"a": "model-00003-of-00002.safetensors"})"),
              AllOf(HasSubstr("model-00003-of-00002.safetensors"), HasSubstr("'a'"),
                    HasSubstr("index.json")));
}

TEST_F(ShardedCheckpointTest, TensorListedButAbsentFromItsShardIsAnError) {
  EXPECT_THAT(open_error(R"({"c": "model-00001-of-00002.safetensors"})"),
              AllOf(HasSubstr("tensor 'c'"), HasSubstr("model-00001-of-00002.safetensors"),
                    HasSubstr("no such tensor")));
}

TEST_F(ShardedCheckpointTest, MalformedIndexIsAnError) {
  write_file(dir_.file("x.index.json"), R"({"weights": {}})");
  EXPECT_THROW(ShardedCheckpoint::open(dir_.file("x.index.json")), InvalidInputError);
  write_file(dir_.file("y.index.json"), R"({"weight_map": )");
  EXPECT_THROW(ShardedCheckpoint::open(dir_.file("y.index.json")), InvalidInputError);
}

TEST_F(ShardedCheckpointTest, TensorListedTwiceInTheWeightMapIsAnError) {
  EXPECT_THAT(open_error(R"({"a": "model-00001-of-00002.safetensors",
      "a": "model-00002-of-00002.safetensors"})"),
              AllOf(HasSubstr("key 'a' appears twice"), HasSubstr("index.json")));
}

TEST_F(ShardedCheckpointTest, MissingTensorNamesTheTensor) {
  auto ckpt = ShardedCheckpoint::open(index(R"({"a": "model-00001-of-00002.safetensors"})"));
  EXPECT_THROW(ckpt->tensor("b"), InvalidInputError);
}

// ---- offload folder ----

TEST(OffloadFolderTest, RoundTripsInAcceleratesLayout) {
  TempDir dir;
  const std::string folder = dir.file("offload");
  const uint16_t bf16[3] = {0x3f80, 0xc000, 0x7fc0};
  const float f32[4] = {1.f, -2.f, 3.5f, 0.f};
  const int64_t scalar = -42;
  {
    OffloadFolderWriter w(folder);
    w.write("layers.0.weight", DType::kBF16, Shape{3}, bf16, sizeof bf16);
    w.write("layers.0.bias", DType::kF32, Shape{2, 2}, f32, sizeof f32);
    w.write("step", DType::kI64, Shape{}, &scalar, sizeof scalar);
    w.write("empty", DType::kF16, Shape{0, 8}, nullptr, 0);
    w.finish();
  }
  // The index as accelerate writes it: numpy/torch dtype names, 0-d as [].
  EXPECT_EQ(testing::read_file(folder + "/index.json"),
            R"({"layers.0.weight":{"dtype":"bfloat16","shape":[3]},)"
            R"("layers.0.bias":{"dtype":"float32","shape":[2,2]},)"
            R"("step":{"dtype":"int64","shape":[]},"empty":{"dtype":"float16","shape":[0,8]}})");
  EXPECT_EQ(testing::read_file(folder + "/step.dat").size(), 8u);  // one element
  auto ckpt = open_checkpoint(folder);
  EXPECT_EQ(ckpt->names().size(), 4u);
  Tensor w = ckpt->tensor("layers.0.weight");
  EXPECT_EQ(w.dtype(), DType::kBF16);
  EXPECT_EQ(w.tier(), Tier::disk());
  EXPECT_EQ(std::memcmp(w.data(), bf16, sizeof bf16), 0);
  EXPECT_EQ(std::memcmp(ckpt->tensor("layers.0.bias").data(), f32, sizeof f32), 0);
  Tensor s = ckpt->tensor("step");
  EXPECT_EQ(s.shape(), Shape{});
  EXPECT_EQ(*s.data_as<int64_t>(), -42);
  EXPECT_EQ(ckpt->tensor("empty").numel(), 0u);
}

TEST(OffloadFolderTest, WriterExtendsAnExistingIndex) {
  TempDir dir;
  const uint8_t x = 7;
  {
    OffloadFolderWriter w(dir.path());
    w.write("a", DType::kU8, Shape{1}, &x, 1);
    w.finish();
  }
  {
    OffloadFolderWriter w(dir.path());
    w.write("b", DType::kU8, Shape{1}, &x, 1);
    w.finish();
  }
  EXPECT_EQ(OffloadFolder::open(dir.path())->names(), (std::vector<std::string>{"a", "b"}));
}

TEST(OffloadFolderTest, DatFileOfTheWrongSizeIsAnErrorNamingIt) {
  TempDir dir;
  write_file(dir.file("index.json"), R"({"w": {"dtype": "float16", "shape": [4]}})");
  write_file(dir.file("w.dat"), "abc");
  try {
    OffloadFolder::open(dir.path());
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("'w'"), HasSubstr("needs 8 bytes"), HasSubstr("has 3")));
  }
}

TEST(OffloadFolderTest, TensorListedTwiceInTheIndexIsAnError) {
  TempDir dir;
  write_file(dir.file("index.json"), R"({"w": {"dtype": "uint8", "shape": [1]},
      "w": {"dtype": "uint8", "shape": [1]}})");
  write_file(dir.file("w.dat"), "a");
  EXPECT_THROW(OffloadFolder::open(dir.path()), InvalidInputError);
}

TEST(OffloadFolderTest, MissingDatFileAndUnknownDtypeAreErrors) {
  TempDir dir;
  write_file(dir.file("index.json"), R"({"w": {"dtype": "float16", "shape": [4]}})");
  EXPECT_THROW(OffloadFolder::open(dir.path()), InvalidInputError);
  write_file(dir.file("index.json"), R"({"w": {"dtype": "complex64", "shape": [4]}})");
  write_file(dir.file("w.dat"), "abcdefgh");
  EXPECT_THROW(OffloadFolder::open(dir.path()), InvalidInputError);
}

TEST(OffloadFolderTest, WriterRefusesNamesThatLeaveTheFolderAndWrongByteCounts) {
  TempDir dir;
  OffloadFolderWriter w(dir.path());
  EXPECT_THROW(w.write("../x", DType::kU8, Shape{1}, "x", 1), InvalidInputError);
  EXPECT_THROW(w.write("x", DType::kF32, Shape{1}, "x", 1), InvalidInputError);
}

// The three readers answer names, contains and info from one CheckpointIndex:
// the same tensors, in file order, and the same error for a missing name.
TEST(CheckpointIndexTest, EveryReaderAnswersFromItsIndex) {
  TempDir dir;
  write_shard(dir.file("one.safetensors"), {{"w", "WWWW"}, {"b", "B"}});
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"w": "one.safetensors", "b": "one.safetensors"}})");
  {
    OffloadFolderWriter folder(dir.file("offload"));
    folder.write("w", DType::kU8, Shape{4}, "WWWW", 4);
    folder.write("b", DType::kU8, Shape{1}, "B", 1);
    folder.finish();
  }
  for (const std::string& path : {dir.file("one.safetensors"),
                                  dir.file("model.safetensors.index.json"), dir.file("offload")}) {
    SCOPED_TRACE(path);
    auto ckpt = open_checkpoint(path);
    EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"w", "b"}));
    EXPECT_EQ(&ckpt->names(), &ckpt->index().names());
    EXPECT_TRUE(ckpt->contains("b"));
    EXPECT_FALSE(ckpt->contains("x"));
    EXPECT_EQ(ckpt->info("w").bytes, 4u);
    EXPECT_EQ(ckpt->index().at(1).name, "b");
    EXPECT_EQ(ckpt->total_bytes(), 5u);
    try {
      ckpt->info("x");
      ADD_FAILURE() << "found x";
    } catch (const InvalidInputError& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("no tensor named 'x'"),
                                  HasSubstr("(2 tensors)")));
    }
  }
}

TEST(CheckpointIndexTest, RefusesANameListedTwice) {
  CheckpointIndex index("f.safetensors", "the header");
  TensorInfo info;
  info.name = "a";
  EXPECT_EQ(index.add(info), 0u);
  try {
    index.add(info);
    ADD_FAILURE() << "added twice";
  } catch (const InvalidInputError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("f.safetensors"), HasSubstr("'a' listed twice"),
                                HasSubstr("the header")));
  }
  EXPECT_EQ(index.size(), 1u);
  EXPECT_EQ(index.find("a"), 0);
  EXPECT_EQ(index.find("b"), -1);
}

}  // namespace
}  // namespace stowage::mmap_store
