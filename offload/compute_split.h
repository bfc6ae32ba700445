// Where the modules homed off the accelerators compute in one phase of a
// run: fetched over the link to the accelerator, or on the host where their
// bytes are (OffloadManager::set_host_compute). Chosen from measured rates.
//
// Model. The copy engine moves the next streamed module while the host
// computes another, so the two paths run at once on different modules: a
// step spends two_path_seconds(streamed bytes, host bytes) on the
// off-accelerator modules (the resident work and the small activation copies
// aside), about max(streamed bytes / link rate, host bytes / host rate) where
// the two do not compete for host memory. Each module in execution order goes to the path
// whose running total it lengthens least (ties to the link; what only the
// link can carry counted on it from the start), which balances
// the totals and interleaves the paths (every streamed module then has host
// work before it to hide its copy behind; with a couple of fetch slots, a
// long run of streamed modules could not prefetch past the slots). A module
// that cannot compute on the host is streamed.
//
// The host rate is the rate the host kernels compute a layer's weights at
// the phase's batch (measure_host_linear_rate in models/), which falls as
// the batch grows; 0 means no host compute, and then everything streams, as
// it does when the host path would not be faster than streaming alone.
//
// Thread safety: a pure function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stowage {

struct ComputeRates {
  double link_bytes_per_s = 0;  // pinned host -> accelerator
  double host_bytes_per_s = 0;  // weight bytes the host computes per second
  // Each path's rate while the other runs too: both read host memory, so on a
  // host whose memory bandwidth is not far above either path's alone, each
  // slows the other. 0: not measured, taken as the rate alone.
  double link_bytes_per_s_shared = 0;
  double host_bytes_per_s_shared = 0;
  // Each path's rate while the other runs: the shared rate where measured,
  // else the rate alone.
  double link_while_shared() const {
    return link_bytes_per_s_shared > 0 ? link_bytes_per_s_shared : link_bytes_per_s;
  }
  double host_while_shared() const {
    return host_bytes_per_s_shared > 0 ? host_bytes_per_s_shared : host_bytes_per_s;
  }
};

// Seconds the off-accelerator work of a step takes with `streamed_bytes` over
// the link and `host_bytes` computed on the host (plus `host_extra_seconds`
// of host work that reads no weights) at once: both paths run at their
// shared rates until the shorter ends, then the other goes on alone. With no
// shared rates it is max(link seconds, host seconds).
double two_path_seconds(double streamed_bytes, double host_bytes, double host_extra_seconds,
                        const ComputeRates& rates);

struct SplitCandidate {
  std::string module;
  uint64_t bytes = 0;
  bool host_capable = true;
  // Computed on the host whatever the rates say (--run-on-host): counted on
  // the host path (at the host rate; nothing when it is 0) and listed in
  // host_modules.
  bool on_host = false;
  // Seconds per step the module spends on the host beyond its weight bytes
  // at the host rate (a decoder layer's attention over its host KV cache,
  // which grows with batch and context).
  double host_extra_seconds = 0;
};

struct ComputeSplit {
  std::vector<std::string> host_modules;  // in execution order
  uint64_t streamed_bytes = 0;
  uint64_t host_bytes = 0;
  double estimated_seconds = 0;     // per step, both paths at once
  double all_streamed_seconds = 0;  // per step, streaming alone (on_host ones beside it)
};

// `candidates`: the off-accelerator modules in execution order. Throws
// InvalidInputError for a link rate <= 0 or a negative host rate.
ComputeSplit choose_compute_split(const std::vector<SplitCandidate>& candidates,
                                  const ComputeRates& rates);

}  // namespace stowage
