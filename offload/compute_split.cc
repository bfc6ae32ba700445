#include "offload/compute_split.h"

#include <algorithm>

#include "core/error.h"

namespace stowage {

ComputeSplit choose_compute_split(const std::vector<SplitCandidate>& candidates,
                                  const ComputeRates& rates) {
  STOWAGE_EXPECTS(rates.link_bytes_per_s > 0 && rates.host_bytes_per_s >= 0, InvalidInputError,
                  "compute split: expected a link rate > 0 and a host rate >= 0, found {} and {} "
                  "bytes/s",
                  rates.link_bytes_per_s, rates.host_bytes_per_s);
  for (const SplitCandidate& c : candidates) {
    STOWAGE_EXPECTS(c.host_extra_seconds >= 0, InvalidInputError,
                    "compute split: expected {}'s extra host seconds >= 0, found {}", c.module,
                    c.host_extra_seconds);
  }
  ComputeSplit split;
  double link_s = 0, host_s = 0, all_s = 0, forced_s = 0;
  for (const SplitCandidate& c : candidates) {
    const double on_link = static_cast<double>(c.bytes) / rates.link_bytes_per_s;
    const double on_host =
        rates.host_bytes_per_s > 0
            ? static_cast<double>(c.bytes) / rates.host_bytes_per_s + c.host_extra_seconds
            : 0;
    if (c.on_host) {
      host_s += on_host;
      forced_s += on_host;  // streaming the others alone, these still compute on the host
      split.host_bytes += c.bytes;
      split.host_modules.push_back(c.module);
      continue;
    }
    all_s += on_link;
    const bool host = c.host_capable && rates.host_bytes_per_s > 0 &&
                      std::max(link_s, host_s + on_host) < std::max(link_s + on_link, host_s);
    if (host) {
      host_s += on_host;
      split.host_bytes += c.bytes;
      split.host_modules.push_back(c.module);
    } else {
      link_s += on_link;
      split.streamed_bytes += c.bytes;
    }
  }
  split.estimated_seconds = std::max(link_s, host_s);
  split.all_streamed_seconds = std::max(all_s, forced_s);
  return split;
}

}  // namespace stowage
