#include "cli/interrupt_cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstring>

#include "core/error.h"

namespace stowage::cli {
namespace {

sigset_t interrupt_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

InterruptCleanup::InterruptCleanup() {
  ::signal(SIGPIPE, SIG_IGN);
  const sigset_t set = interrupt_signals();
  STOWAGE_EXPECTS(::pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0, InternalError,
                  "cannot block SIGINT and SIGTERM: {}", std::strerror(errno));
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC);
  STOWAGE_EXPECTS(signal_fd_ >= 0, InternalError, "signalfd for SIGINT and SIGTERM failed: {}",
                  std::strerror(errno));
  STOWAGE_EXPECTS(::pipe2(stop_pipe_, O_CLOEXEC) == 0, InternalError, "pipe failed: {}",
                  std::strerror(errno));
  thread_ = std::thread([this] { wait_for_signal(); });
}

InterruptCleanup::~InterruptCleanup() {
  const char stop = 0;
  while (::write(stop_pipe_[1], &stop, 1) < 0 && errno == EINTR) {
  }
  thread_.join();
  ::close(stop_pipe_[0]);
  ::close(stop_pipe_[1]);
  ::close(signal_fd_);
  const sigset_t set = interrupt_signals();
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void InterruptCleanup::wait_for_signal() {
  pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // the process is ending normally
    if (fds[0].revents == 0) continue;
    signalfd_siginfo info{};
    if (::read(signal_fd_, &info, sizeof(info)) != static_cast<ssize_t>(sizeof(info))) continue;
    const int signo = static_cast<int>(info.ssi_signo);
    temporaries_.remove_all();
    // End the process by the same signal: default action, unblocked here.
    ::signal(signo, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    ::raise(signo);
    ::_exit(128 + signo);  // not reached: the default action ends the process
  }
}

}  // namespace stowage::cli
