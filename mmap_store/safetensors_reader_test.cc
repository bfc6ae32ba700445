// Specification of the safetensors reader: every FORMATS.md rule refuses a
// malformed file with an InvalidInputError naming the file, the tensor and the
// rule; a valid file gives zero-copy tensors on the disk tier.
#include "mmap_store/safetensors_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::safetensors_image;
using testing::TempDir;
using testing::write_file;

class SafetensorsReaderTest : public ::testing::Test {
 protected:
  // Writes `bytes` to a file and returns the message of the error opening it
  // raised (fails the test when it opens).
  std::string open_error(const std::string& bytes) {
    path_ = dir_.file("model.safetensors");
    write_file(path_, bytes);
    try {
      SafetensorsFile::open(path_);
    } catch (const InvalidInputError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path_));
      return e.what();
    }
    ADD_FAILURE() << "opened a malformed file";
    return "";
  }
  std::string open_error(const std::string& header, const std::string& data) {
    return open_error(safetensors_image(header, data));
  }
  TempDir dir_;
  std::string path_;
};

const char kTwo[] =
    R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
    R"("b":{"dtype":"I32","shape":[],"data_offsets":[8,12]}})";

TEST_F(SafetensorsReaderTest, ValidFileListsTensorsInHeaderOrderWithInfoAndMetadata) {
  std::string data = "ABCDEFGH\x01\x02\x03\x04";
  write_file(dir_.file("m.safetensors"), safetensors_image(kTwo, data));
  auto file = SafetensorsFile::open(dir_.file("m.safetensors"));
  EXPECT_EQ(file->names(), (std::vector<std::string>{"w", "b"}));
  const TensorInfo& w = file->info("w");
  EXPECT_EQ(w.dtype, DType::kF16);
  EXPECT_EQ(w.shape, (Shape{2, 2}));
  EXPECT_EQ(w.offset, 0u);
  EXPECT_EQ(w.bytes, 8u);
  EXPECT_EQ(file->info("b").shape, Shape{});
  EXPECT_EQ(file->info("b").offset, 8u);
  ASSERT_EQ(file->metadata().size(), 1u);
  EXPECT_EQ(file->metadata()[0].first, "format");
  EXPECT_EQ(file->metadata()[0].second, "pt");
  EXPECT_EQ(file->total_bytes(), 12u);
  EXPECT_EQ(file->data_start(), 8 + std::strlen(kTwo));
  EXPECT_EQ(file->info("b").file_offset, file->data_start() + 8);
}

TEST_F(SafetensorsReaderTest, TensorsAreZeroCopyViewsOfTheMappingOnTheDiskTier) {
  write_file(dir_.file("m.safetensors"), safetensors_image(kTwo, "ABCDEFGH\x01\x02\x03\x04"));
  auto file = SafetensorsFile::open(dir_.file("m.safetensors"));
  Tensor w = file->tensor("w");
  Tensor b = file->tensor("b");
  EXPECT_EQ(w.tier(), Tier::disk());
  EXPECT_EQ(std::memcmp(w.data(), "ABCDEFGH", 8), 0);
  EXPECT_EQ(*b.data_as<int32_t>(), 0x04030201);
  // Both tensors view one mapping: b's bytes follow w's.
  EXPECT_EQ(static_cast<char*>(b.data()), static_cast<char*>(w.data()) + 8);
}

TEST_F(SafetensorsReaderTest, TensorOutlivesTheFileObject) {
  write_file(dir_.file("m.safetensors"), safetensors_image(kTwo, "ABCDEFGH\x01\x02\x03\x04"));
  Tensor w = SafetensorsFile::open(dir_.file("m.safetensors"))->tensor("w");
  EXPECT_EQ(std::memcmp(w.data(), "ABCDEFGH", 8), 0);
}

TEST_F(SafetensorsReaderTest, MissingTensorNamesTheTensorAndTheFile) {
  write_file(dir_.file("m.safetensors"), safetensors_image(kTwo, "ABCDEFGH\x01\x02\x03\x04"));
  auto file = SafetensorsFile::open(dir_.file("m.safetensors"));
  try {
    file->tensor("nope");
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("nope"), HasSubstr("m.safetensors")));
  }
}

TEST_F(SafetensorsReaderTest, ZeroSizeTensorsAreAllowed) {
  write_file(dir_.file("z.safetensors"),
             safetensors_image(R"({"z":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                               R"("u":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                               "xy"));
  auto file = SafetensorsFile::open(dir_.file("z.safetensors"));
  EXPECT_EQ(file->info("z").bytes, 0u);
  EXPECT_EQ(file->tensor("z").numel(), 0u);
  EXPECT_EQ(file->info("u").bytes, 2u);
}

TEST_F(SafetensorsReaderTest, HeaderPaddedWithSpacesIsAccepted) {
  write_file(
      dir_.file("p.safetensors"),
      safetensors_image(R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}     )", "q"));
  EXPECT_EQ(SafetensorsFile::open(dir_.file("p.safetensors"))->names().size(), 1u);
}

TEST_F(SafetensorsReaderTest, EmptyHeaderObjectWithNoDataIsAValidEmptyCheckpoint) {
  write_file(dir_.file("e.safetensors"), safetensors_image("{}", ""));
  EXPECT_TRUE(SafetensorsFile::open(dir_.file("e.safetensors"))->names().empty());
}

TEST_F(SafetensorsReaderTest, MissingFileIsAnIoErrorNamingIt) {
  try {
    SafetensorsFile::open(dir_.file("absent.safetensors"));
    FAIL();
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("absent.safetensors"));
  }
}

// --- One test per malformed-file rule. ---

TEST_F(SafetensorsReaderTest, RejectsEmptyFile) {
  EXPECT_THAT(open_error(std::string()), HasSubstr("empty (0 bytes)"));
}

TEST_F(SafetensorsReaderTest, RejectsFileShorterThanTheLengthField) {
  EXPECT_THAT(open_error(std::string("\x05\x00\x00", 3)),
              AllOf(HasSubstr("header length"), HasSubstr("3 bytes, expected at least 8")));
}

TEST_F(SafetensorsReaderTest, RejectsHeaderLengthPastTheEndOfTheFile) {
  std::string image = safetensors_image("{}", "");
  image[0] = 100;
  EXPECT_THAT(open_error(image), AllOf(HasSubstr("header length 100 runs past the end"),
                                       HasSubstr("the file has 10 bytes")));
}

TEST_F(SafetensorsReaderTest, RejectsHeaderLengthOverOneHundredMegabytes) {
  std::string image(16, '\0');
  uint64_t n = 100'000'001;
  std::memcpy(&image[0], &n, 8);
  EXPECT_THAT(open_error(image), AllOf(HasSubstr("header length 100000001 exceeds the limit"),
                                       HasSubstr("100000000")));
}

TEST_F(SafetensorsReaderTest, RejectsHeaderNotStartingWithABrace) {
  EXPECT_THAT(open_error(" {}", ""), HasSubstr("start with '{'"));
}

TEST_F(SafetensorsReaderTest, RejectsInvalidJson) {
  EXPECT_THAT(open_error(R"({"a": {"dtype": "F32",)", ""), HasSubstr("header JSON"));
}

TEST_F(SafetensorsReaderTest, RejectsInvalidUtf8) {
  EXPECT_THAT(open_error("{\"\xff\xfe\":1}", ""), HasSubstr("expected UTF-8 JSON"));
}

TEST_F(SafetensorsReaderTest, RejectsTrailingGarbageAfterTheJsonObject) {
  EXPECT_THAT(open_error("{} x", ""), HasSubstr("header JSON"));
}

TEST_F(SafetensorsReaderTest, RejectsHeaderThatIsNotAnObjectOfEntries) {
  EXPECT_THAT(open_error(R"({"a":[1,2]})", ""),
              AllOf(HasSubstr("tensor 'a'"), HasSubstr("expected an object")));
}

TEST_F(SafetensorsReaderTest, RejectsMetadataThatIsNotStringToString) {
  EXPECT_THAT(open_error(R"({"__metadata__":{"epoch":3}})", ""),
              AllOf(HasSubstr("__metadata__"), HasSubstr("'epoch'"), HasSubstr("found 3")));
  EXPECT_THAT(open_error(R"({"__metadata__":"pt"})", ""), HasSubstr("__metadata__"));
}

TEST_F(SafetensorsReaderTest, RejectsMissingEntryKey) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[1]}})", "x"),
              AllOf(HasSubstr("tensor 'a'"), HasSubstr("missing key \"data_offsets\"")));
}

TEST_F(SafetensorsReaderTest, RejectsUnknownDtypeNamingIt) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})", "x"),
              AllOf(HasSubstr("unknown dtype"), HasSubstr("\"F4\""), HasSubstr("tensor 'a'")));
}

TEST_F(SafetensorsReaderTest, RejectsNegativeExtent) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", ""),
              AllOf(HasSubstr("shape"), HasSubstr("found -1")));
}

TEST_F(SafetensorsReaderTest, RejectsNonIntegerExtent) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,0]}})", ""),
              HasSubstr("non-negative integer extents"));
}

TEST_F(SafetensorsReaderTest, RejectsShapeWhoseByteSizeOverflows) {
  EXPECT_THAT(
      open_error(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})",
                 ""),
      AllOf(HasSubstr("byte size overflow"), HasSubstr("[4294967296, 4294967296]")));
  // numel fits 2^63 but numel * 8 does not.
  EXPECT_THAT(
      open_error(R"({"a":{"dtype":"F64","shape":[2305843009213693952,2],"data_offsets":[0,0]}})",
                 ""),
      HasSubstr("byte size overflow"));
}

TEST_F(SafetensorsReaderTest, RejectsMalformedDataOffsets) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x"),
              AllOf(HasSubstr("data_offsets"), HasSubstr("two non-negative integers")));
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}})", "x"),
              HasSubstr("end before they begin"));
}

TEST_F(SafetensorsReaderTest, RejectsOffsetsPastTheEndOfTheData) {
  EXPECT_THAT(
      open_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "xy"),
      AllOf(HasSubstr("offsets inside the data"), HasSubstr("[0, 4]"), HasSubstr("2 bytes")));
}

TEST_F(SafetensorsReaderTest, RejectsSpanThatDiffersFromTheShapesByteSize) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
              AllOf(HasSubstr("span 4 bytes, expected 8"), HasSubstr("tensor 'a'")));
}

TEST_F(SafetensorsReaderTest, RejectsHoleBetweenTensors) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
                         "abc"),
              AllOf(HasSubstr("no holes"), HasSubstr("tensor 'b' begins at data byte 2")));
}

TEST_F(SafetensorsReaderTest, RejectsTrailingBytesNoTensorHolds) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "abc"),
              AllOf(HasSubstr("no holes"), HasSubstr("2 trailing bytes")));
}

TEST_F(SafetensorsReaderTest, RejectsOverlappingTensors) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},)"
                         R"("b":{"dtype":"U16","shape":[1],"data_offsets":[1,3]}})",
                         "abc"),
              AllOf(HasSubstr("no overlaps"), HasSubstr("'b'"), HasSubstr("'a'")));
}

TEST_F(SafetensorsReaderTest, RejectsDuplicateTensorNames) {
  EXPECT_THAT(open_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                         "ab"),
              AllOf(HasSubstr("duplicate tensor name"), HasSubstr("'a' twice")));
}

TEST_F(SafetensorsReaderTest, RejectsDuplicateKeysInsideAnEntry) {
  EXPECT_THAT(
      open_error(R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "a"),
      AllOf(HasSubstr("duplicate key"), HasSubstr("'dtype'")));
}

TEST_F(SafetensorsReaderTest, TensorsOutOfOffsetOrderInTheHeaderStillTileTheData) {
  write_file(dir_.file("o.safetensors"),
             safetensors_image(R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
                               R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                               "AB"));
  auto file = SafetensorsFile::open(dir_.file("o.safetensors"));
  EXPECT_EQ(*file->tensor("b").data_as<char>(), 'B');
}

}  // namespace
}  // namespace stowage::mmap_store
