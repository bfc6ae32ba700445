// Runs one function per rank of a tensor-parallel group, each on its own
// host thread, and ends the whole group when one rank fails: the failing
// rank aborts the collective group (so no rank waits for it in an
// all-reduce), every thread is joined, and the caller gets one error that
// names the rank that failed first, its accelerator and its message, with
// what each other rank saw.
//
// Thread safety: run_on_ranks may be called from any thread; `fn` runs on N
// threads at once (each with its own rank).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "parallel/collective.h"

namespace stowage::parallel {

// Calls fn(r) for r in 0 .. names.size() - 1 on a thread each (`names[r]`:
// rank r's accelerator, "sim:1", for messages). When fn throws on a rank,
// `group` (may be nullptr) is aborted with that rank's message. Returns
// when every rank returned; throws, once all have ended, an error of the
// first failure's kind (core/error.h; InternalError for an exception that
// is not a stowage::Error): "tensor-parallel rank R of N (ACC) failed: WHAT;
// every rank stopped (rank Q: WHAT, ...)".
void run_on_ranks(const std::vector<std::string>& names, CollectiveGroup* group,
                  const std::function<void(int rank)>& fn);

}  // namespace stowage::parallel
