#include "offload/compute_split.h"

#include <algorithm>

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

ComputeSplit choose_compute_split(const std::vector<SplitCandidate>& candidates,
                                  const ComputeRates& rates) {
  STOWAGE_EXPECTS(rates.link_bytes_per_s > 0 && rates.host_bytes_per_s >= 0 &&
                      rates.link_bytes_per_s_shared >= 0 && rates.host_bytes_per_s_shared >= 0,
                  InvalidInputError,
                  "compute split: expected a link rate > 0 and host and shared rates >= 0, "
                  "found link {}, host {}, shared {} and {} bytes/s",
                  rates.link_bytes_per_s, rates.host_bytes_per_s, rates.link_bytes_per_s_shared,
                  rates.host_bytes_per_s_shared);
  for (const SplitCandidate& c : candidates) {
    STOWAGE_EXPECTS(c.host_extra_seconds >= 0, InvalidInputError,
                    "compute split: expected {}'s extra host seconds >= 0, found {}", c.module,
                    c.host_extra_seconds);
  }
  const bool host_compute = rates.host_bytes_per_s > 0;
  ComputeSplit split;
  // Bytes on each path, and the host's extra seconds; the same for streaming
  // alone (the forced host modules beside it).
  double link_b = 0, host_b = 0, host_x = 0, all_b = 0, forced_b = 0, forced_x = 0;
  // What only the link can carry streams whatever the others do: counted
  // from the start, so the modules before it balance against it too.
  for (const SplitCandidate& c : candidates) {
    if (!c.on_host && !(c.host_capable && host_compute)) link_b += static_cast<double>(c.bytes);
  }
  for (const SplitCandidate& c : candidates) {
    const auto bytes = static_cast<double>(c.bytes);
    if (c.on_host) {
      if (host_compute) {
        host_b += bytes;
        host_x += c.host_extra_seconds;
        forced_b += bytes;
        forced_x += c.host_extra_seconds;
      }
      split.host_bytes += c.bytes;
      split.host_modules.push_back(c.module);
      continue;
    }
    all_b += bytes;
    if (!(c.host_capable && host_compute)) {  // counted on the link above
      split.streamed_bytes += c.bytes;
      continue;
    }
    const bool host =
        two_path_seconds(link_b, host_b + bytes, host_x + c.host_extra_seconds, rates) <
            two_path_seconds(link_b + bytes, host_b, host_x, rates);
    if (host) {
      host_b += bytes;
      host_x += c.host_extra_seconds;
      split.host_bytes += c.bytes;
      split.host_modules.push_back(c.module);
    } else {
      link_b += bytes;
      split.streamed_bytes += c.bytes;
    }
  }
  split.estimated_seconds = two_path_seconds(link_b, host_b, host_x, rates);
  split.all_streamed_seconds = two_path_seconds(all_b, forced_b, forced_x, rates);
  return split;
}

}  // namespace stowage
