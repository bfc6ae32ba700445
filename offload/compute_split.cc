#include "offload/compute_split.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"

namespace stowage {

double two_path_seconds(double streamed_bytes, double host_bytes, double host_extra_seconds,
                        const ComputeRates& rates) {
  const double link_alone = streamed_bytes / rates.link_bytes_per_s;
  if (host_bytes <= 0 && host_extra_seconds <= 0) return link_alone;
  if (rates.host_bytes_per_s <= 0) return link_alone;
  const double host_alone = host_bytes / rates.host_bytes_per_s + host_extra_seconds;
  if (streamed_bytes <= 0) return host_alone;
  const double link_shared = streamed_bytes / rates.link_while_shared();
  const double host_shared = host_bytes / rates.host_while_shared() + host_extra_seconds;
  // Both at their shared rates until the shorter ends; the rest of the
  // longer at its rate alone.
  if (link_shared <= host_shared) {
    return link_shared + (1.0 - link_shared / host_shared) * host_alone;
  }
  return host_shared + (1.0 - host_shared / link_shared) * link_alone;
}

double pipeline_seconds(const std::vector<SplitCandidate>& candidates,
                        const std::vector<bool>& on_host, const ComputeRates& rates,
                        int prefetch_depth) {
  STOWAGE_EXPECTS(on_host.size() == candidates.size() && prefetch_depth >= 0 &&
                      rates.link_bytes_per_s > 0,
                  InvalidInputError,
                  "compute split: expected one placement per module ({}), a prefetch depth >= 0 "
                  "and a link rate > 0, found {} placements, depth {}, link {} bytes/s",
                  candidates.size(), on_host.size(), prefetch_depth, rates.link_bytes_per_s);
  const size_t n = candidates.size();
  if (n == 0) return 0;
  // Steps back to back. The copies can run ahead by up to prefetch_depth
  // streamed modules, into later steps: warm-up steps let that lead settle,
  // and the steady state is the mean of the steps after them.
  size_t streamed_per_step = 0;
  for (size_t i = 0; i < n; ++i) streamed_per_step += on_host[i] ? 0 : 1;
  // The lead is at most the slots (prefetch_depth + 1 streamed modules):
  // lead_steps steps hold it.
  const size_t lead_steps =
      static_cast<size_t>(prefetch_depth + 1) / std::max<size_t>(1, streamed_per_step) + 1;
  const size_t warm_steps = std::min<size_t>(64, lead_steps);
  constexpr size_t kMeasuredSteps = 2;
  const size_t total = (warm_steps + kMeasuredSteps) * n;
  // Positions of the streamed modules, in order, with the later steps whose
  // copies run during the measured ones (the whole lead, so the link never
  // runs out of copies before the measured steps end).
  std::vector<size_t> streamed;
  for (size_t i = 0; i < total + lead_steps * n; ++i) {
    if (!on_host[i % n]) streamed.push_back(i);
  }
  const double host_rate = rates.host_bytes_per_s;
  // A host module's work: its extra seconds (as two_path_seconds, the same
  // beside the link), then its weight bytes, in seconds at the host's rate
  // alone, at the shared rate while the link runs.
  const double host_speed_shared = host_rate > 0 ? rates.host_while_shared() / host_rate : 1.0;
  double now = 0, warm_end = 0;
  size_t position = 0;   // the module computing (or waiting for its bytes)
  size_t done = 0;       // streamed modules computed
  size_t next = 0;       // the next streamed module to fetch
  bool fetching = false;
  double fetch_left = 0;  // bytes
  double host_left = -1;   // weight seconds at the rate alone; < 0: not started
  double extra_left = 0;   // extra seconds
  auto advance = [&] {
    ++position;
    if (position == warm_steps * n) warm_end = now;
  };
  while (position < total) {
    const bool current_streamed = !on_host[position % n];
    // The copies run ahead by prefetch_depth streamed modules after the one
    // computing, which holds a slot; while a host module computes, by
    // prefetch_depth + 1 (every slot; FetchScheduler::prefetch_after). With
    // no prefetching only the current streamed module itself is fetched.
    const auto reach = static_cast<int64_t>(done) + prefetch_depth -
                       (current_streamed || prefetch_depth > 0 ? 0 : 1);
    if (!fetching && next < streamed.size() && static_cast<int64_t>(next) <= reach) {
      fetching = true;
      fetch_left = static_cast<double>(candidates[streamed[next] % n].bytes);
    }
    if (current_streamed) {
      if (next > done) {  // its bytes are there
        ++done;
        advance();
        continue;
      }
    } else {
      if (host_left < 0) {
        const SplitCandidate& c = candidates[position % n];
        host_left = host_rate > 0 ? static_cast<double>(c.bytes) / host_rate : 0.0;
        extra_left = host_rate > 0 ? c.host_extra_seconds : 0.0;
      }
      if (host_left <= 0 && extra_left <= 0) {
        host_left = -1;
        advance();
        continue;
      }
    }
    const bool host_busy = !current_streamed;
    const double link = host_busy ? rates.link_while_shared() : rates.link_bytes_per_s;
    const bool in_extra = extra_left > 0;
    const double host_speed = fetching && !in_extra ? host_speed_shared : 1.0;
    const double fetch_seconds = fetching ? fetch_left / link : -1;
    const double host_seconds = !host_busy ? -1 : in_extra ? extra_left : host_left / host_speed;
    double dt = fetch_seconds >= 0 ? fetch_seconds : host_seconds;
    if (host_seconds >= 0 && host_seconds < dt) dt = host_seconds;
    STOWAGE_EXPECTS(dt >= 0, InvalidInputError,
                    "compute split: the played step stalled at module {} of {}", position, total);
    now += dt;
    if (fetching) {
      if (fetch_seconds <= dt) {
        fetching = false;
        ++next;
      } else {
        fetch_left -= dt * link;
      }
    }
    if (host_busy && in_extra) {
      extra_left = host_seconds <= dt ? 0 : extra_left - dt;
    } else if (host_busy) {
      host_left = host_seconds <= dt ? 0 : host_left - dt * host_speed;
    }
  }
  return (now - warm_end) / kMeasuredSteps;
}

ComputeSplit choose_compute_split(const std::vector<SplitCandidate>& candidates,
                                  const ComputeRates& rates, int prefetch_depth) {
  STOWAGE_EXPECTS(rates.link_bytes_per_s > 0 && rates.host_bytes_per_s >= 0 &&
                      rates.link_bytes_per_s_shared >= 0 && rates.host_bytes_per_s_shared >= 0 &&
                      prefetch_depth >= 0,
                  InvalidInputError,
                  "compute split: expected a link rate > 0, host and shared rates >= 0 and a "
                  "prefetch depth >= 0, found link {}, host {}, shared {} and {} bytes/s, "
                  "depth {}",
                  rates.link_bytes_per_s, rates.host_bytes_per_s, rates.link_bytes_per_s_shared,
                  rates.host_bytes_per_s_shared, prefetch_depth);
  for (const SplitCandidate& c : candidates) {
    STOWAGE_EXPECTS(c.host_extra_seconds >= 0, InvalidInputError,
                    "compute split: expected {}'s extra host seconds >= 0, found {}", c.module,
                    c.host_extra_seconds);
  }
  const bool host_compute = rates.host_bytes_per_s > 0;
  const size_t n = candidates.size();
  auto movable = [&](size_t i) {
    return host_compute && candidates[i].host_capable && !candidates[i].on_host;
  };
  // Streaming alone: only the forced modules on the host.
  std::vector<bool> alone(n);
  for (size_t i = 0; i < n; ++i) alone[i] = candidates[i].on_host;
  // The balance of the totals: each module to the path whose running total
  // it lengthens least; what only the link can carry counted from the start.
  std::vector<bool> balanced = alone;
  double link_b = 0, host_b = 0, host_x = 0;
  for (size_t i = 0; i < n; ++i) {
    const SplitCandidate& c = candidates[i];
    if (c.on_host) {
      host_b += static_cast<double>(c.bytes);
      host_x += c.host_extra_seconds;
    } else if (!movable(i)) {
      link_b += static_cast<double>(c.bytes);
    }
  }
  if (!host_compute) host_b = host_x = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!movable(i)) continue;
    const SplitCandidate& c = candidates[i];
    const auto bytes = static_cast<double>(c.bytes);
    balanced[i] = two_path_seconds(link_b, host_b + bytes, host_x + c.host_extra_seconds, rates) <
                  two_path_seconds(link_b + bytes, host_b, host_x, rates);
    if (balanced[i]) {
      host_b += bytes;
      host_x += c.host_extra_seconds;
    } else {
      link_b += bytes;
    }
  }
  // Starts: the balance, streaming alone, and k movable modules spread
  // evenly for each k; the best of them played, then improved by single
  // moves between the paths and by swapping neighbours' paths while the
  // played step gets shorter.
  std::vector<size_t> movable_at;
  for (size_t i = 0; i < n; ++i) {
    if (movable(i)) movable_at.push_back(i);
  }
  std::vector<bool> chosen = balanced;
  double best = pipeline_seconds(candidates, balanced, rates, prefetch_depth);
  auto take_if_shorter = [&](const std::vector<bool>& placement, double t) {
    if (t < best * (1 - 1e-9)) {
      best = t;
      chosen = placement;
    }
  };
  auto consider = [&](const std::vector<bool>& placement) {
    take_if_shorter(placement, pipeline_seconds(candidates, placement, rates, prefetch_depth));
  };
  const double all_streamed = pipeline_seconds(candidates, alone, rates, prefetch_depth);
  take_if_shorter(alone, all_streamed);
  const size_t m = movable_at.size();
  for (size_t k = 1; k <= m; ++k) {
    std::vector<bool> spread = alone;
    for (size_t j = 0; j < k; ++j) spread[movable_at[(2 * j + 1) * m / (2 * k)]] = true;
    consider(spread);
  }
  for (int pass = 0; pass < 16; ++pass) {
    const double before = best;
    for (size_t j = 0; j < m; ++j) {
      std::vector<bool> flipped = chosen;
      flipped[movable_at[j]] = !flipped[movable_at[j]];
      consider(flipped);
      if (j + 1 < m && chosen[movable_at[j]] != chosen[movable_at[j + 1]]) {
        std::vector<bool> swapped = chosen;
        swapped[movable_at[j]] = chosen[movable_at[j + 1]];
        swapped[movable_at[j + 1]] = chosen[movable_at[j]];
        consider(swapped);
      }
    }
    if (!(best < before)) break;
  }

  ComputeSplit split;
  double chosen_link = 0, chosen_host = 0, chosen_extra = 0;
  for (size_t i = 0; i < n; ++i) {
    const SplitCandidate& c = candidates[i];
    if (chosen[i]) {
      split.host_modules.push_back(c.module);
      split.host_bytes += c.bytes;
      if (host_compute) {
        chosen_host += static_cast<double>(c.bytes);
        chosen_extra += c.host_extra_seconds;
      }
    } else {
      split.streamed_bytes += c.bytes;
      chosen_link += static_cast<double>(c.bytes);
    }
  }
  split.estimated_seconds = best;
  split.all_streamed_seconds = all_streamed;
  split.two_path_limit_seconds = two_path_seconds(chosen_link, chosen_host, chosen_extra, rates);
  return split;
}

}  // namespace stowage
