// Where the modules homed off the accelerators compute in one phase of a
// run: fetched over the link to the accelerator, or on the host where their
// bytes are (OffloadManager::set_host_compute). Chosen from measured rates.
//
// Model. The copy engine moves the next streamed module while the host
// computes another, so the two paths run at once on different modules: at
// best a step spends two_path_seconds(streamed bytes, host bytes) on the
// off-accelerator modules (the resident work and the small activation copies
// aside), about max(streamed bytes / link rate, host bytes / host rate) where
// the two do not compete for host memory. But the copies run ahead of the
// compute by at most the fetch slots the offload manager holds
// (prefetch_depth + 1; FetchScheduler::prefetch_after): a host module longer
// than the copies queued before it leaves the link idle.
// pipeline_seconds plays a step through with that limit, and is what the
// split minimizes: starting from the balance of the totals (each module in
// execution order to the path whose running total it lengthens least, which
// interleaves the paths) and from streaming alone, it moves single modules
// between the paths while the played step gets shorter, and keeps the
// shorter of the two. A module that cannot compute on the host is streamed.
//
// The host rate is the rate the host kernels compute a layer's weights at
// the phase's batch (measure_host_linear_rate in models/), which falls as
// the batch grows; 0 means no host compute, and then everything streams, as
// it does when the host path would not be faster than streaming alone.
//
// Thread safety: a pure function.
#pragma once

#include <algorithm>
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
  // else the rate alone; never above the rate alone (two noisy measurements,
  // or a calibration that rescaled one of them, can say otherwise, and a
  // path cannot gain from the other's load).
  double link_while_shared() const {
    return link_bytes_per_s_shared > 0 ? std::min(link_bytes_per_s_shared, link_bytes_per_s)
                                       : link_bytes_per_s;
  }
  double host_while_shared() const {
    return host_bytes_per_s_shared > 0 ? std::min(host_bytes_per_s_shared, host_bytes_per_s)
                                       : host_bytes_per_s;
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
  double estimated_seconds = 0;     // per step, both paths at once (pipeline_seconds)
  double all_streamed_seconds = 0;  // per step, streaming alone (on_host ones beside it)
  // two_path_seconds of the chosen bytes: the step were the copies never
  // held back by the fetch slots (at most estimated_seconds but for how the
  // two apportion host_extra_seconds beside the link).
  double two_path_limit_seconds = 0;
};

// Seconds one decode step of `candidates` (execution order) takes in the
// steady state of consecutive steps (the mean of two steps after the copies'
// lead over the compute has settled), with candidate i computed on the host
// where `on_host[i]`, else fetched over the link. The copy engine fetches the
// streamed modules in order, each as soon as it is among the next
// `prefetch_depth` streamed modules after a streamed module computing, or
// the next prefetch_depth + 1 after a host module (which holds no slot; the
// next step's first ones at the end of a step), or when its own forward asks
// for it (prefetch_depth 0: no prefetching); a host module computes in order after the module before it, a streamed
// one once its bytes arrived (its accelerator time not counted). Both paths
// at their shared rates while both are busy, at their rates alone
// otherwise; a host module's host_extra_seconds come first and take the
// same time either way. `on_host` has one entry per candidate.
double pipeline_seconds(const std::vector<SplitCandidate>& candidates,
                        const std::vector<bool>& on_host, const ComputeRates& rates,
                        int prefetch_depth);

// `candidates`: the off-accelerator modules in execution order;
// `prefetch_depth`: the streamed modules the copies may run ahead (the
// offload manager's MemoryBudget::prefetch_depth). Throws InvalidInputError
// for a link rate <= 0, a negative host rate or a negative prefetch depth.
ComputeSplit choose_compute_split(const std::vector<SplitCandidate>& candidates,
                                  const ComputeRates& rates, int prefetch_depth);

}  // namespace stowage
