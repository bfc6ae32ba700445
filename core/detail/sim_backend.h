// The host-simulated accelerator: memory is host memory with a capacity,
// each stream is a worker thread running its queue in order, events mark
// queue positions, copies are memcpy optionally throttled to a byte rate.
#pragma once

#include <memory>

#include "core/platform.h"

namespace stowage::detail {

std::unique_ptr<Accelerator> make_sim_accelerator(int index, const SimOptions& options);

}  // namespace stowage::detail
