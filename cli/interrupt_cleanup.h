// What the `stowage` process does about signals, set up once in main()
// before any thread starts:
//  - SIGINT and SIGTERM are blocked in every thread and taken by one thread
//    of this object (through a signalfd): it removes the temporary files in
//    temporaries() and then ends the process by the same signal, so the
//    caller sees the signal's status (a shell prints 130 for SIGINT), and
//    no half-written ".NAME.tmp-XXXXXX" is left behind.
//  - SIGPIPE is ignored: a write to a closed pipe fails with EPIPE and the
//    command exits 1 (run_guarded checks standard output), not by a signal.
//
// No global state: the handling thread and the registry belong to this
// object; it is meant to live for the whole of main().
//
// Thread safety: temporaries() may be used from any thread.
#pragma once

#include <thread>

#include "mmap_store/output_path.h"

namespace stowage::cli {

class InterruptCleanup {
 public:
  // REQUIRES: called before any other thread of the process is started
  // (threads inherit the blocked signals). Throws stowage::Error when the
  // signalfd or the stop pipe cannot be made.
  InterruptCleanup();
  // Stops the handling thread and restores the signal mask.
  ~InterruptCleanup();
  InterruptCleanup(const InterruptCleanup&) = delete;
  InterruptCleanup& operator=(const InterruptCleanup&) = delete;

  mmap_store::TemporaryFiles& temporaries() { return temporaries_; }

 private:
  void wait_for_signal();

  mmap_store::TemporaryFiles temporaries_;
  int signal_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace stowage::cli
