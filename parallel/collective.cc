#include "parallel/collective.h"

#include <fmt/format.h>

#include <set>

#include "core/error.h"
#include "parallel/sim_collective.h"
#ifdef STOWAGE_WITH_NCCL
#include "parallel/nccl_collective.h"
#endif

namespace stowage::parallel {

bool nccl_available() {
#ifdef STOWAGE_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<CollectiveGroup> make_collective_group(Platform& platform,
                                                       const std::vector<int>& accelerators) {
  STOWAGE_EXPECTS(!accelerators.empty(), InvalidInputError,
                  "a collective group needs at least one accelerator");
  std::set<int> seen;
  for (int a : accelerators) {
    STOWAGE_EXPECTS(a >= 0 && a < platform.accelerator_count(), InvalidInputError,
                    "a collective group names accelerator {}, but the platform has {}", a,
                    platform.accelerator_count());
    STOWAGE_EXPECTS(seen.insert(a).second, InvalidInputError,
                    "a collective group names accelerator {} twice: each rank needs its own", a);
  }
  if (platform.backend() == Backend::kSim) {
    return std::make_unique<SimCollectiveGroup>(static_cast<int>(accelerators.size()));
  }
#ifdef STOWAGE_WITH_NCCL
  return make_nccl_collective_group(accelerators);
#else
  throw DeviceError(fmt::format(
      "tensor parallelism over {} CUDA devices needs NCCL, and this build has none: run "
      "tools/install_deps.sh (it unpacks NVIDIA's nvidia-nccl-cu<major> wheel into /opt/nccl) "
      "or set NCCL_PATH, then rebuild",
      accelerators.size()));
#endif
}

}  // namespace stowage::parallel
