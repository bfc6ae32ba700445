// Specification of the `stowage inspect` command's exit codes and output
// (CLI.md), run as a child process: the //:stowage binary from the test's
// runfiles ($TEST_SRCDIR/stowage/stowage).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "mmap_store/safetensors_writer.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::cli {
namespace {

using mmap_store::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

void write_f32(const std::string& path, const std::string& name, int64_t n) {
  mmap_store::SafetensorsWriter w(path);
  w.declare(name, DType::kF32, Shape{n});
  std::string zeros(4 * n, '\0');
  w.write(name, zeros.data(), zeros.size());
  w.commit();
}

// ---- the //:stowage binary ----

struct CommandResult {
  int exit_code = -1;
  bool signaled = false;
  std::string out, err;
};

CommandResult run_stowage(const TempDir& dir, const std::string& args) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const std::string bin = std::string(srcdir ? srcdir : ".") + "/stowage/stowage";
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  int status = std::system((bin + " " + args + " >" + out + " 2>" + err).c_str());
  CommandResult r;
  // The shell reports a child killed by a signal as 128 + signal.
  r.signaled = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) >= 128);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = mmap_store::testing::read_file(out);
  r.err = mmap_store::testing::read_file(err);
  return r;
}

TEST(InspectCommandTest, MalformedFileExitsOneNamingFileAndRuleWithoutASignal) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  mmap_store::testing::write_file(path,
                                  mmap_store::testing::safetensors_image(
                                      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                      "ab"));
  CommandResult r = run_stowage(dir, "inspect " + path);
  EXPECT_FALSE(r.signaled);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, AllOf(HasSubstr("stowage inspect"), HasSubstr(path),
                           HasSubstr("duplicate tensor name")));
}

TEST(InspectCommandTest, TruncatedAndEmptyFilesExitOne) {
  TempDir dir;
  const std::string empty = dir.file("empty.safetensors");
  mmap_store::testing::write_file(empty, "");
  CommandResult r = run_stowage(dir, "inspect " + empty);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("empty"));
  const std::string cut = dir.file("cut.safetensors");
  mmap_store::testing::write_file(cut, std::string("\xff\x00\x00\x00\x00\x00\x00\x00{", 9));
  r = run_stowage(dir, "inspect " + cut);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("runs past the end of the file"));
}

TEST(InspectCommandTest, JsonGoesToStdoutAndExitsZero) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_f32(path, "a", 2);
  CommandResult r = run_stowage(dir, "inspect --json " + path);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr(R"("name":"a")"), HasSubstr(R"("total_bytes":8})")));
}

TEST(InspectCommandTest, MissingPathIsUsageExitTwo) {
  TempDir dir;
  EXPECT_EQ(run_stowage(dir, "inspect").exit_code, 2);
  EXPECT_EQ(run_stowage(dir, "inspect --bogus x").exit_code, 2);
}

}  // namespace
}  // namespace stowage::cli
