// Passes over memory by the accelerator's own loads: a read of device memory
// that does nothing else (the device's read rate, the bound of a decode step
// that reads every resident weight; benchmarks measure it beside the kernels
// they compare), and the upload of a small host buffer that bypasses the
// copy engine.
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

// Copies `bytes` bytes from host memory `src` to the stream's accelerator
// memory `dst`, in the stream's order, as StreamRef::copy does; on CUDA, for
// pinned host memory, by a kernel that loads from the mapped pages rather
// than by the copy engine. A copy engine runs its copies in the order they
// were issued, so a small copy issued behind a large one already queued
// (a weight fetch on the copy stream) waits for it to end; a kernel's loads
// share the link with the fetch instead. For activations and step inputs
// (kilobytes), not weights: a kernel moves bulk data slower than the copy
// engine. Host memory that is not mapped pinned memory goes through the
// copy engine; on sim and a null stream it is a plain copy.
void upload_from_pinned(void* dst, const void* src, uint64_t bytes, StreamRef stream);

}  // namespace stowage::kernels
