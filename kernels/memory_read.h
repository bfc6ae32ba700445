// A pass that reads device memory once and does nothing else: the device's
// read rate, the bound of a decode step that reads every resident weight
// (benchmarks measure it beside the kernels they compare).
#pragma once

#include <cstdint>

#include "core/stream.h"

namespace stowage::kernels {

// Reads the `bytes` bytes at `data` (bytes % 16 == 0, 16-byte aligned) and
// writes the XOR of their 16-byte words, folded to 64 bits, to *checksum
// (device memory of the stream's device). On a sim or null stream the CPU
// counterpart runs. Throws InvalidInputError for a misaligned size or
// pointer.
void read_checksum(const void* data, uint64_t bytes, uint64_t* checksum, StreamRef stream);

}  // namespace stowage::kernels
