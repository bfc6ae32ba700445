// Specification of the streaming writer: what it writes reads back
// byte-exact for every dtype; the final name only ever holds a whole file.
#include "mmap_store/safetensors_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "mmap_store/safetensors_reader.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

std::string pattern(size_t bytes, int seed) {
  std::string s(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) s[i] = static_cast<char>((i * 131 + seed * 17 + 7) & 0xff);
  return s;
}

size_t files_in(const std::string& folder) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(folder)) ++n;
  return n;
}

const DType kAllDtypes[] = {DType::kBool, DType::kU8,     DType::kI8,    DType::kI16,
                            DType::kU16,  DType::kF16,    DType::kBF16,  DType::kI32,
                            DType::kU32,  DType::kF32,    DType::kF64,   DType::kI64,
                            DType::kU64,  DType::kF8E4M3, DType::kF8E5M2};

TEST(SafetensorsWriterTest, RoundTripsEveryDtypeByteExactIncludingScalarAndZeroSize) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  struct Case {
    std::string name;
    DType dtype;
    Shape shape;
    std::string bytes;
  };
  std::vector<Case> cases;
  int seed = 0;
  for (DType d : kAllDtypes) {
    std::string n(short_name(d));
    cases.push_back({n + ".matrix", d, Shape{3, 5}, pattern(15 * dtype_size(d), ++seed)});
    cases.push_back({n + ".scalar", d, Shape{}, pattern(dtype_size(d), ++seed)});
    cases.push_back({n + ".empty", d, Shape{4, 0}, ""});
  }
  {
    SafetensorsWriter w(path);
    w.set_metadata({{"format", "pt"}, {"note", "ünïcode \"quoted\""}});
    for (const auto& c : cases) w.declare(c.name, c.dtype, c.shape);
    for (const auto& c : cases) w.write(c.name, c.bytes.data(), c.bytes.size());
    w.commit();
  }
  auto file = SafetensorsFile::open(path);
  ASSERT_EQ(file->names().size(), cases.size());
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    EXPECT_EQ(file->names()[i], c.name);  // declaration order
    const TensorInfo& info = file->info(c.name);
    EXPECT_EQ(info.dtype, c.dtype) << c.name;
    EXPECT_EQ(info.shape, c.shape) << c.name;
    EXPECT_EQ(info.offset, expected_offset) << c.name;  // ascending, in declared order
    expected_offset += c.bytes.size();
    Tensor t = file->tensor(c.name);
    ASSERT_EQ(t.bytes(), c.bytes.size());
    EXPECT_EQ(std::memcmp(t.data(), c.bytes.data(), c.bytes.size()), 0) << c.name;
  }
  EXPECT_EQ(file->metadata()[1].second, "ünïcode \"quoted\"");
  EXPECT_EQ(file->data_start() % 8, 0u);  // header padded with spaces
  EXPECT_EQ(testing::read_file(path)[file->data_start() - 1], ' ');
}

TEST(SafetensorsWriterTest, StreamsATensorInChunks) {
  TempDir dir;
  std::string data = pattern(1000, 3);
  SafetensorsWriter w(dir.file("c.safetensors"));
  w.declare("a", DType::kF32, Shape{250});
  w.declare("z", DType::kF32, Shape{0});
  for (size_t i = 0; i < data.size(); i += 300)
    w.append(&data[i], std::min<size_t>(300, data.size() - i));
  w.commit();
  Tensor t = SafetensorsFile::open(dir.file("c.safetensors"))->tensor("a");
  EXPECT_EQ(std::string(static_cast<char*>(t.data()), 1000), data);
}

TEST(SafetensorsWriterTest, NothingAppearsAtTheFinalNameBeforeCommit) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  SafetensorsWriter w(path);
  w.declare("a", DType::kU8, Shape{4});
  w.write("a", "abcd", 4);
  EXPECT_FALSE(std::filesystem::exists(path));
  w.commit();
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(files_in(dir.path()), 1u);  // the temporary name is gone
}

TEST(SafetensorsWriterTest, AbandonedWriterRemovesItsTemporaryFileAndLeavesTheOldFile) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  testing::write_file(path, "previous contents");
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::kU8, Shape{4});
    w.append("ab", 2);  // "crash" mid-write
  }
  EXPECT_EQ(files_in(dir.path()), 1u);
  EXPECT_EQ(testing::read_file(path), "previous contents");
}

TEST(SafetensorsWriterTest, CommitRefusesAnIncompleteTensorNamingIt) {
  TempDir dir;
  SafetensorsWriter w(dir.file("m.safetensors"));
  w.declare("a", DType::kU8, Shape{2});
  w.declare("b", DType::kU8, Shape{3});
  w.write("a", "ab", 2);
  try {
    w.commit();
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'b' is incomplete: 0 of 3 bytes"));
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.safetensors")));
}

TEST(SafetensorsWriterTest, RefusesWrongByteCountAndOutOfOrderTensors) {
  TempDir dir;
  SafetensorsWriter w(dir.file("m.safetensors"));
  w.declare("a", DType::kF16, Shape{2});
  w.declare("b", DType::kU8, Shape{1});
  EXPECT_THROW(w.write("b", "x", 1), InvalidInputError);
  try {
    w.write("a", "abc", 3);
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'a' was declared with 4 bytes, 3 were given"));
  }
  EXPECT_THROW(w.append("abcde", 5), InvalidInputError);  // crosses into 'b'
}

TEST(SafetensorsWriterTest, RefusesDuplicateReservedAndLateDeclarations) {
  TempDir dir;
  SafetensorsWriter w(dir.file("m.safetensors"));
  w.declare("a", DType::kU8, Shape{1});
  EXPECT_THROW(w.declare("a", DType::kU8, Shape{1}), InvalidInputError);
  EXPECT_THROW(w.declare("__metadata__", DType::kU8, Shape{1}), InvalidInputError);
  EXPECT_THROW(w.declare("n", DType::kU8, Shape{-1}), InvalidInputError);
  w.write("a", "x", 1);
  EXPECT_THROW(w.declare("late", DType::kU8, Shape{1}), InvalidInputError);
}

TEST(SafetensorsWriterTest, WritesAValidEmptyCheckpoint) {
  TempDir dir;
  SafetensorsWriter w(dir.file("e.safetensors"));
  w.commit();
  EXPECT_TRUE(SafetensorsFile::open(dir.file("e.safetensors"))->names().empty());
  EXPECT_EQ(testing::read_file(dir.file("e.safetensors")).size(), 16u);  // 8 + "{}      "
}

// Issue #15, item 6: the cost of a write does not grow with the number of
// tensors declared (each write used to scan every declaration twice, so
// 100000 small tensors took minutes). Generous bound: linear takes ~0.1 s.
TEST(SafetensorsWriterTest, OneHundredThousandSmallTensorsWriteInLinearTime) {
  TempDir dir;
  const std::string path = dir.file("many.safetensors");
  const int n = 100000;
  const auto start = std::chrono::steady_clock::now();
  SafetensorsWriter w(path);
  for (int i = 0; i < n; ++i) w.declare("t." + std::to_string(i), DType::kF32, Shape{1});
  const float value = 1.5f;
  for (int i = 0; i < n; ++i) w.write("t." + std::to_string(i), &value, sizeof(value));
  w.commit();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0);
  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->names().size(), static_cast<size_t>(n));
  EXPECT_EQ(*file->tensor("t.99999").data_as<const float>(), 1.5f);
}

}  // namespace
}  // namespace stowage::mmap_store
