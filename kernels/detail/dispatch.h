// How a public kernels call runs its work on a stream: the CPU counterpart
// now (null stream) or in stream order (sim stream, through host_task), or
// the CUDA implementation with the stream's native handle. Internal to
// kernels/ (api.cc, transformer_ops.cc).
#pragma once

#include <utility>

#include "core/stream.h"

namespace stowage::kernels::detail {

template <typename Cpu, typename Cuda>
void dispatch(StreamRef stream, Cpu&& cpu, Cuda&& cuda) {
  if (stream.is_null()) {
    cpu();
  } else if (stream.backend() == Backend::kSim) {
    stream.host_task(std::forward<Cpu>(cpu));
  } else {
    cuda(stream.native_handle());
  }
}

}  // namespace stowage::kernels::detail
