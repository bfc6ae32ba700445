// Specification of mmap_store/output_path.h: an output never replaces an
// input (by name, symbolic or hard link, or a name an input folder's readers
// use) and is never a folder, FIFO or device; an output folder is never an
// input's folder; TemporaryFiles removes what is in flight (issue #15).
#include "mmap_store/output_path.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <functional>

#include "core/error.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TempDir;

std::string refusal(const std::function<void()>& check) {
  try {
    check();
  } catch (const InvalidInputError& e) {
    return e.what();
  }
  return "";
}

TEST(OutputPathTest, ANewNameOrAnUnrelatedRegularFileIsAccepted) {
  TempDir dir;
  testing::write_file(dir.file("in"), "input");
  testing::write_file(dir.file("old_out"), "previous output");
  EXPECT_NO_THROW(check_output_file(dir.file("new_out"), {dir.file("in")}, "OUT"));
  EXPECT_NO_THROW(check_output_file(dir.file("old_out"), {dir.file("in")}, "OUT"));
}

TEST(OutputPathTest, TheInputByNameSymbolicLinkOrHardLinkIsRefusedNamingBoth) {
  TempDir dir;
  const std::string in = dir.file("in.safetensors");
  testing::write_file(in, "input");
  std::filesystem::create_symlink(in, dir.file("sym"));
  std::filesystem::create_hard_link(in, dir.file("hard"));
  for (const std::string& out :
       {in, dir.file("./in.safetensors"), dir.file("sym"), dir.file("hard")}) {
    EXPECT_THAT(refusal([&] { check_output_file(out, {in}, "--output"); }),
                AllOf(HasSubstr("--output"), HasSubstr(out), HasSubstr("is the input file"),
                      HasSubstr("in.safetensors")))
        << out;
  }
}

TEST(OutputPathTest, AFolderFifoOrDeviceIsRefusedSayingWhatItIs) {
  TempDir dir;
  std::filesystem::create_directory(dir.file("folder"));
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0600), 0);
  EXPECT_THAT(refusal([&] { check_output_file(dir.file("folder"), {}, "OUT"); }),
              HasSubstr("found a directory"));
  EXPECT_THAT(refusal([&] { check_output_file(dir.file("fifo"), {}, "OUT"); }),
              HasSubstr("found a FIFO"));
  EXPECT_THAT(refusal([&] { check_output_file("/dev/null", {}, "OUT"); }),
              HasSubstr("found a character device"));
}

TEST(OutputPathTest, AFileOfAnInputFolderOrANameItsReadersUseIsRefused) {
  TempDir dir;
  const std::string model = dir.file("model");
  std::filesystem::create_directory(model);
  testing::write_file(model + "/model.safetensors", "weights");
  testing::write_file(model + "/extra.bin", "other");
  std::filesystem::create_symlink(model + "/extra.bin", dir.file("link"));
  for (const std::string name : {"model.safetensors", "config.json", "tokenizer.json",
                                 "generation_config.json", "index.json", "w.dat"}) {
    EXPECT_THAT(refusal([&] { check_output_file(model + "/" + name, {model}, "--dump-logits"); }),
                HasSubstr("--dump-logits"))
        << name;
  }
  EXPECT_THAT(refusal([&] { check_output_file(dir.file("link"), {model}, "--dump-logits"); }),
              HasSubstr("is the input file"));
  EXPECT_NO_THROW(check_output_file(model + "/logits.safetensors", {model}, "--dump-logits"));
}

TEST(OutputPathTest, AnOutputFolderIsNotAFileNorTheInputsFolder) {
  TempDir dir;
  const std::string model = dir.file("model");
  std::filesystem::create_directory(model);
  testing::write_file(dir.file("in.safetensors"), "input");
  EXPECT_THAT(
      refusal([&] { check_output_folder(dir.file("in.safetensors"), {}, "--offload-dir"); }),
      AllOf(HasSubstr("--offload-dir"), HasSubstr("found a regular file")));
  EXPECT_THAT(refusal([&] { check_output_folder(model, {model}, "--offload-dir"); }),
              HasSubstr("is the input"));
  EXPECT_THAT(refusal([&] { check_output_folder(dir.path(), {dir.file("in.safetensors")}, "D"); }),
              HasSubstr("holds the input"));
  EXPECT_NO_THROW(check_output_folder(dir.file("new_folder"), {model}, "--offload-dir"));
  EXPECT_NO_THROW(check_output_folder(model, {dir.file("in.safetensors")}, "--offload-dir"));
}

TEST(TemporaryFilesTest, RemoveAllRemovesWhatIsRecordedAndNotWhatWasForgotten) {
  TempDir dir;
  testing::write_file(dir.file("a.tmp"), "a");
  testing::write_file(dir.file("b.tmp"), "b");
  std::filesystem::create_directories(dir.file("scratch/inner"));
  testing::write_file(dir.file("scratch/inner/x"), "x");
  TemporaryFiles files;
  files.add(dir.file("a.tmp"));
  files.add(dir.file("b.tmp"));
  files.add(dir.file("scratch"));
  files.forget(dir.file("b.tmp"));  // committed: must survive
  EXPECT_EQ(files.remove_all(), 2u);
  EXPECT_FALSE(std::filesystem::exists(dir.file("a.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("scratch")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("b.tmp")));
  EXPECT_EQ(files.remove_all(), 0u);  // forgotten once removed
}

}  // namespace
}  // namespace stowage::mmap_store
