// Specification of `stowage inspect` (CLI.md): the library behind it
// (cli/inspect.h) and the //:stowage binary's output and exit codes.
#include "cli/inspect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "mmap_store/offload_folder.h"
#include "mmap_store/safetensors_writer.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::cli {
namespace {

using mmap_store::SafetensorsWriter;
using mmap_store::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Part {
  std::string name;
  DType dtype;
  Shape shape;
  std::string bytes;  // empty: zeros of the right size
};

void write_parts(const std::string& path, const std::vector<Part>& parts) {
  SafetensorsWriter w(path);
  for (const auto& p : parts) w.declare(p.name, p.dtype, p.shape);
  for (const auto& p : parts) {
    std::string b = p.bytes;
    if (b.empty()) b.assign(dtype_bytes_for(p.dtype, p.shape.numel()), '\0');
    w.write(p.name, b.data(), b.size());
  }
  w.commit();
}

TEST(InspectTest, ListsEveryTensorWithDtypeShapeBytesOffsetAndTotals) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_parts(path, {{"layers.0.weight", DType::kF16, Shape{4, 3}, ""},
                     {"layers.0.bias", DType::kBF16, Shape{4}, ""},
                     {"step", DType::kI64, Shape{}, ""}});
  InspectReport r = inspect_path(path);
  ASSERT_EQ(r.tensors.size(), 3u);
  EXPECT_EQ(r.tensors[1].name, "layers.0.bias");
  EXPECT_EQ(r.tensors[1].dtype, DType::kBF16);
  EXPECT_EQ(r.tensors[1].bytes, 8u);
  EXPECT_EQ(r.tensors[1].offset, 24u);
  EXPECT_EQ(r.tensors[2].offset, 32u);
  EXPECT_FALSE(r.tensors[0].quant);
  EXPECT_EQ(r.total_bytes, 40u);
  const std::string text = format_inspect_text(r);
  EXPECT_THAT(text, AllOf(HasSubstr("layers.0.bias"), HasSubstr("BF16"), HasSubstr("[4, 3]"),
                          HasSubstr("total: 3 tensors, 40 bytes")));
}

TEST(InspectTest, JsonHasExactlyTheKeysOfTheContract) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_parts(path, {{"a", DType::kF32, Shape{2}, ""}, {"b", DType::kU8, Shape{0, 3}, ""}});
  EXPECT_EQ(format_inspect_json(inspect_path(path)),
            R"({"path":")" + path +
                R"(","tensors":[{"name":"a","dtype":"F32","shape":[2],"bytes":8,"offset":0,)"
                R"("quant":null},{"name":"b","dtype":"U8","shape":[0,3],"bytes":0,"offset":8,)"
                R"("quant":null}],"total_bytes":8})"
                "\n");
}

TEST(InspectTest, RecognizesBitsandbytesNf4WithDoubleQuantAndStorageDtype) {
  TempDir dir;
  const std::string path = dir.file("q.safetensors");
  // [96, 50] = 4800 values, blocksize 64 -> 75 blocks, 2400 packed bytes
  // stored as F16 (quant_storage=float16): 1200 elements of shape [1200, 1].
  const std::string state =
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [96, 50], )"
      R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.5})";
  write_parts(path, {{"l.weight", DType::kF16, Shape{1200, 1}, ""},
                     {"l.weight.absmax", DType::kU8, Shape{75}, ""},
                     {"l.weight.quant_map", DType::kF32, Shape{16}, ""},
                     {"l.weight.nested_absmax", DType::kF32, Shape{1}, ""},
                     {"l.weight.nested_quant_map", DType::kF32, Shape{256}, ""},
                     {"l.weight.quant_state.bitsandbytes__nf4", DType::kU8,
                      Shape{int64_t(state.size())}, state},
                     {"l.bias", DType::kF16, Shape{96}, ""}});
  InspectReport r = inspect_path(path);
  ASSERT_TRUE(r.tensors[0].quant.has_value());
  const InspectQuant& q = *r.tensors[0].quant;
  EXPECT_EQ(q.method, "nf4");
  EXPECT_EQ(q.blocksize, 64);
  EXPECT_TRUE(q.double_quant);
  EXPECT_EQ(q.storage_dtype, DType::kF16);
  EXPECT_EQ(q.shape, (Shape{96, 50}));
  EXPECT_FALSE(r.tensors[6].quant);  // the bias is plain
  EXPECT_THAT(format_inspect_json(r),
              HasSubstr(R"("quant":{"method":"nf4","blocksize":64,"double_quant":true,)"
                        R"("storage_dtype":"F16","shape":[96,50]})"));
}

TEST(InspectTest, RecognizesBitsandbytesInt8) {
  TempDir dir;
  const std::string path = dir.file("q.safetensors");
  write_parts(path, {{"l.weight", DType::kI8, Shape{4, 3}, ""},
                     {"l.SCB", DType::kF32, Shape{4}, ""},
                     {"l.weight_format", DType::kU8, Shape{}, ""}});
  InspectReport r = inspect_path(path);
  ASSERT_TRUE(r.tensors[0].quant.has_value());
  EXPECT_EQ(r.tensors[0].quant->method, "int8");
  EXPECT_FALSE(r.tensors[0].quant->blocksize);
  EXPECT_EQ(r.tensors[0].quant->shape, (Shape{4, 3}));
  EXPECT_THAT(format_inspect_json(r), HasSubstr(R"("method":"int8","blocksize":null)"));
}

TEST(InspectTest, ReadsAnOffloadFolder) {
  TempDir dir;
  {
    mmap_store::OffloadFolderWriter w(dir.path());
    const uint16_t v[2] = {1, 2};
    w.write("w", DType::kBF16, Shape{2}, v, sizeof v);
    w.finish();
  }
  InspectReport r = inspect_path(dir.path());
  EXPECT_EQ(r.kind, "offload folder");
  ASSERT_EQ(r.tensors.size(), 1u);
  EXPECT_EQ(r.tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(r.total_bytes, 4u);
}

TEST(InspectTest, MalformedFileIsAnInvalidInputErrorNamingFileAndRule) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  mmap_store::testing::write_file(
      path, mmap_store::testing::safetensors_image(
                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"));
  try {
    inspect_path(path);
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("byte size")));
  }
}

}  // namespace
}  // namespace stowage::cli
