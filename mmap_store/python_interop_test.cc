// Interop with the official Python `safetensors` package (PyPI), through
// tests/python/safetensors_interop.py: files it writes (every dtype it
// supports, BF16, 0-d and zero-size tensors, __metadata__) read byte-exact
// here, and files written here load in it. Skips only when no python3 with
// `safetensors` and `numpy` is found (CI: pip install safetensors numpy
// ml_dtypes). STOWAGE_PYTHON picks the interpreter.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <cstring>
#include <set>

#include "mmap_store/safetensors_reader.h"
#include "mmap_store/safetensors_writer.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

namespace json = boost::json;
using testing::read_file;
using testing::TempDir;

int shell(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string python() {
  const char* chosen = std::getenv("STOWAGE_PYTHON");
  return chosen && *chosen ? chosen : "python3";
}

std::string script() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return std::string(srcdir ? srcdir : ".") + "/stowage/tests/python/safetensors_interop.py";
}

class PythonInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shell(python() + " -c 'import safetensors, numpy' >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << python() << " cannot import safetensors and numpy "
                   << "(pip install safetensors numpy ml_dtypes)";
    }
  }
  TempDir dir_;
};

TEST_F(PythonInteropTest, FilesWrittenByTheOfficialPackageReadByteExact) {
  ASSERT_EQ(shell(python() + " " + script() + " write " + dir_.path()), 0);
  auto file = SafetensorsFile::open(dir_.file("official.safetensors"));
  json::value manifest = json::parse(read_file(dir_.file("manifest.json")));
  std::set<std::string> dtypes_seen;
  bool saw_scalar = false, saw_empty = false;
  for (const json::value& t : manifest.at("tensors").as_array()) {
    const std::string name(t.at("name").as_string());
    SCOPED_TRACE(name);
    ASSERT_TRUE(file->contains(name));
    const TensorInfo& info = file->info(name);
    EXPECT_EQ(safetensors_name(info.dtype), std::string(t.at("dtype").as_string()));
    std::vector<int64_t> dims;
    for (const auto& d : t.at("shape").as_array()) dims.push_back(d.as_int64());
    EXPECT_EQ(info.shape, Shape(dims));
    const std::string expected = read_file(dir_.file(std::string(t.at("file").as_string())));
    Tensor tensor = file->tensor(name);
    ASSERT_EQ(tensor.bytes(), expected.size());
    EXPECT_EQ(std::memcmp(tensor.data(), expected.data(), expected.size()), 0);
    dtypes_seen.insert(std::string(t.at("dtype").as_string()));
    saw_scalar |= dims.empty();
    saw_empty |= info.bytes == 0;
  }
  EXPECT_EQ(file->names().size(), manifest.at("tensors").as_array().size());
  EXPECT_TRUE(dtypes_seen.count("BF16")) << "pip install ml_dtypes for BF16 files";
  EXPECT_TRUE(saw_scalar);
  EXPECT_TRUE(saw_empty);
  std::vector<std::pair<std::string, std::string>> metadata;
  for (const auto& kv : manifest.at("metadata").as_object()) {
    metadata.emplace_back(std::string(kv.key()), std::string(kv.value().as_string()));
  }
  auto sorted = [](auto v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(file->metadata()), sorted(metadata));
}

TEST_F(PythonInteropTest, FilesWrittenHereLoadInTheOfficialPackage) {
  const DType dtypes[] = {DType::kBool, DType::kU8,   DType::kI8,  DType::kI16,    DType::kU16,
                          DType::kF16,  DType::kBF16, DType::kI32, DType::kU32,    DType::kF32,
                          DType::kF64,  DType::kI64,  DType::kU64, DType::kF8E4M3, DType::kF8E5M2};
  struct Case {
    std::string name;
    DType dtype;
    Shape shape;
    std::string bytes;
  };
  std::vector<Case> cases;
  uint32_t x = 12345;
  for (DType d : dtypes) {
    for (const auto& [suffix, shape] : std::vector<std::pair<std::string, Shape>>{
             {"matrix", Shape{3, 5}}, {"scalar", Shape{}}, {"empty", Shape{4, 0}}}) {
      std::string bytes(dtype_bytes_for(d, shape.numel()), '\0');
      for (auto& c : bytes) {
        x = x * 1103515245u + 12345u;
        c = static_cast<char>(d == DType::kBool ? (x >> 16) & 1 : x >> 16);
      }
      cases.push_back({std::string(short_name(d)) + "." + suffix, d, shape, bytes});
    }
  }
  json::array manifest;
  SafetensorsWriter w(dir_.file("ours.safetensors"));
  w.set_metadata({{"format", "pt"}, {"by", "stowage"}});
  for (const auto& c : cases) w.declare(c.name, c.dtype, c.shape);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    w.write(c.name, c.bytes.data(), c.bytes.size());
    const std::string bin = std::to_string(i) + ".bin";
    testing::write_file(dir_.file(bin), c.bytes);
    json::array shape;
    for (int64_t d : c.shape.dims()) shape.emplace_back(d);
    manifest.push_back(json::object{{"name", c.name},
                                    {"dtype", std::string(safetensors_name(c.dtype))},
                                    {"shape", shape},
                                    {"file", bin}});
  }
  w.commit();
  testing::write_file(
      dir_.file("manifest.json"),
      json::serialize(json::object{
          {"tensors", manifest}, {"metadata", json::object{{"format", "pt"}, {"by", "stowage"}}}}));
  EXPECT_EQ(shell(python() + " " + script() + " check " + dir_.file("ours.safetensors") + " " +
                  dir_.path()),
            0);
}

}  // namespace
}  // namespace stowage::mmap_store
