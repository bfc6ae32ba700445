// The atomic writer's contract (mmap_store/atomic_file.h): the final name
// only ever holds nothing or a complete file, only a regular file is ever
// replaced, and no failure leaves the temporary file behind.
#include "mmap_store/atomic_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

using testing::read_file;
using testing::TempDir;
using testing::write_file;

// Every name in `folder`, sorted.
std::vector<std::string> entries(const std::string& folder) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(folder)) {
    names.insert(e.path().filename().string());
  }
  return {names.begin(), names.end()};
}

// Records what a writer tells its registry, and whether the temporary file
// existed when it was added.
class RecordingRegistry final : public TemporaryFileRegistry {
 public:
  std::unique_lock<std::mutex> hold() override {
    ++holds;
    return std::unique_lock<std::mutex>(mutex_);
  }
  void add(const std::string& path) override {
    EXPECT_FALSE(mutex_.try_lock()) << "add() outside hold()";
    added.push_back(path);
    existed_when_added.push_back(::access(path.c_str(), F_OK) == 0);
    live.insert(path);
  }
  void forget(const std::string& path) override {
    forgotten.push_back(path);
    live.erase(path);
  }

  int holds = 0;
  std::vector<std::string> added, forgotten;
  std::vector<bool> existed_when_added;
  std::set<std::string> live;

 private:
  std::mutex mutex_;
};

TEST(AtomicFileTest, CommitPublishesTheWholeFileAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  {
    AtomicFile file(path);
    file.write("hello ", 6);
    // Not visible under its name until committed.
    EXPECT_FALSE(std::filesystem::exists(path));
    file.write("world", 5);
    EXPECT_EQ(file.bytes_written(), 11u);
    file.commit();
    EXPECT_TRUE(file.temp_path().empty());
  }
  EXPECT_EQ(read_file(path), "hello world");
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFileTest, DestroyedWithoutCommitLeavesNothing) {
  TempDir dir;
  {
    AtomicFile file(dir.file("out.bin"));
    file.write("partial", 7);
    EXPECT_TRUE(std::filesystem::exists(file.temp_path()));
  }
  EXPECT_TRUE(entries(dir.path()).empty());
}

TEST(AtomicFileTest, ReplacesAnExistingRegularFile) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  write_file(path, "old contents");
  write_file_atomically(path, "new");
  EXPECT_EQ(read_file(path), "new");
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFileTest, RefusesToReplaceAFolderALinkOrAFifo) {
  TempDir dir;
  std::filesystem::create_directory(dir.file("folder"));
  write_file(dir.file("target"), "keep me");
  std::filesystem::create_symlink(dir.file("target"), dir.file("link"));
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0644), 0);
  for (const char* name : {"folder", "link", "fifo"}) {
    try {
      AtomicFile file(dir.file(name));
      ADD_FAILURE() << name << " was accepted";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("only a regular file or nothing is replaced"),
                std::string::npos)
          << e.what();
    }
  }
  // Nothing was created, and the link still points at the untouched target.
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"fifo", "folder", "link", "target"}));
  EXPECT_TRUE(std::filesystem::is_symlink(dir.file("link")));
  EXPECT_EQ(read_file(dir.file("target")), "keep me");
}

TEST(AtomicFileTest, ATargetThatBecomesAFolderBeforeCommitIsRefusedAndTheTemporaryRemoved) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  AtomicFile file(path);
  file.write("data", 4);
  std::filesystem::create_directory(path);
  EXPECT_THROW(file.commit(), IoError);
  EXPECT_TRUE(std::filesystem::is_directory(path));
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFileTest, ReplaceNeverRefusesAnExistingFileBeforeWritingAndAtCommit) {
  TempDir dir;
  const AtomicFileOptions never{AtomicFileOptions::Replace::kNever};
  write_file(dir.file("there"), "first");
  EXPECT_THROW(AtomicFile(dir.file("there"), never), IoError);

  // A file that appears while the writer writes is not replaced either.
  AtomicFile late(dir.file("late"), never);
  late.write("second", 6);
  write_file(dir.file("late"), "first");
  EXPECT_THROW(late.commit(), IoError);
  EXPECT_EQ(read_file(dir.file("late")), "first");
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"late", "there"}));
}

TEST(AtomicFileTest, AFailedWriteRemovesTheTemporaryAtOnce) {
  TempDir dir;
  // A file size limit makes write(2) fail with EFBIG (SIGXFSZ ignored).
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string temp;
  bool threw = false;
  {
    AtomicFile file(dir.file("big.bin"));
    temp = file.temp_path();
    const std::string chunk(8192, 'x');
    try {
      file.write(chunk.data(), chunk.size());
    } catch (const IoError& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find("big.bin"), std::string::npos) << e.what();
      // Removed before the writer goes away.
      EXPECT_FALSE(std::filesystem::exists(temp));
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    ::signal(SIGXFSZ, old_handler);
    EXPECT_THROW(file.commit(), IoError);
  }
  EXPECT_TRUE(threw);
  EXPECT_TRUE(entries(dir.path()).empty());
}

TEST(AtomicFileTest, TheRegistryHoldsTheTemporaryExactlyWhileItExists) {
  TempDir dir;
  RecordingRegistry registry;
  AtomicFileOptions options;
  options.registry = &registry;
  {
    AtomicFile committed(dir.file("a"), options);
    ASSERT_EQ(registry.added, std::vector<std::string>{committed.temp_path()});
    EXPECT_TRUE(registry.existed_when_added[0]);
    committed.write("a", 1);
    committed.commit();
  }
  {
    AtomicFile abandoned(dir.file("b"), options);
    abandoned.write("b", 1);
  }
  EXPECT_EQ(registry.holds, 2);
  EXPECT_EQ(registry.added.size(), 2u);
  EXPECT_EQ(registry.forgotten, registry.added);  // each once
  EXPECT_TRUE(registry.live.empty());
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"a"});
}

TEST(AtomicFileTest, ARefusedTargetNeverReachesTheRegistry) {
  TempDir dir;
  std::filesystem::create_directory(dir.file("folder"));
  RecordingRegistry registry;
  AtomicFileOptions options;
  options.registry = &registry;
  EXPECT_THROW(AtomicFile(dir.file("folder"), options), IoError);
  EXPECT_TRUE(registry.added.empty());
}

}  // namespace
}  // namespace stowage::mmap_store
