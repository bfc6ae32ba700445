// Specification of cli/interrupt_cleanup.h (issue #15): SIGINT and SIGTERM
// remove the temporary files in flight and end the process by the same
// signal; SIGPIPE does not end it. Each case runs in a forked child, since
// the object changes the process's signal handling.
#include "cli/interrupt_cleanup.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

namespace stowage::cli {
namespace {

// Runs `child` in a forked process; returns its wait status.
int run_in_child(const std::function<void()>& child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    child();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

class InterruptCleanupTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("interrupt_cleanup_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_P(InterruptCleanupTest, TheSignalRemovesTheTemporaryFilesAndEndsTheProcessByIt) {
  const int signo = GetParam();
  const int status = run_in_child([&] {
    InterruptCleanup interrupts;
    std::ofstream(file(".out.tmp-abc")) << "half written";
    std::filesystem::create_directories(file("scratch/inner"));
    interrupts.temporaries().add(file(".out.tmp-abc"));
    interrupts.temporaries().add(file("scratch"));
    std::ofstream(file("committed")) << "complete";
    ::kill(::getpid(), signo);
    ::sleep(30);  // the handling thread ends the process first
    ::_exit(0);
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), signo);
  EXPECT_FALSE(std::filesystem::exists(file(".out.tmp-abc")));
  EXPECT_FALSE(std::filesystem::exists(file("scratch")));
  EXPECT_TRUE(std::filesystem::exists(file("committed")));
}

INSTANTIATE_TEST_SUITE_P(IntAndTerm, InterruptCleanupTest, ::testing::Values(SIGINT, SIGTERM));

TEST(InterruptCleanupPipeTest, AWriteToAClosedPipeFailsWithEpipeInsteadOfEndingTheProcess) {
  const int status = run_in_child([] {
    InterruptCleanup interrupts;
    int fds[2];
    if (::pipe(fds) != 0) ::_exit(3);
    ::close(fds[0]);
    const ssize_t n = ::write(fds[1], "x", 1);
    ::_exit(n < 0 && errno == EPIPE ? 0 : 4);
  });
  ASSERT_TRUE(WIFEXITED(status)) << "ended by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(InterruptCleanupPipeTest, WithoutASignalNothingIsRemovedAndTheMaskIsRestored) {
  const int status = run_in_child([] {
    const std::string path =
        std::filesystem::temp_directory_path() / ("interrupt_keep_" + std::to_string(::getpid()));
    {
      InterruptCleanup interrupts;
      std::ofstream(path) << "x";
      interrupts.temporaries().add(path);
    }
    sigset_t blocked;
    ::pthread_sigmask(SIG_BLOCK, nullptr, &blocked);
    const bool kept = std::filesystem::exists(path);
    std::filesystem::remove(path);
    ::_exit(kept && !sigismember(&blocked, SIGINT) && !sigismember(&blocked, SIGTERM) ? 0 : 5);
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace stowage::cli
