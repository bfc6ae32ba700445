// Reference rates measured in the same run as a benchmark, so its figures
// can be given as ratios: the pinned host-to-device copy rate of an
// accelerator, and the sequential read rate of a file with a cold page cache.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/platform.h"

namespace stowage::cli {

// Bytes per second of host-to-device copies of `bytes` from pinned memory on
// one stream (median of `repeats`, after one warm-up copy).
double measure_pinned_h2d_rate(Platform& platform, int accelerator, uint64_t bytes,
                               int repeats = 5);

// Bytes per second of pinned host-to-device copies of `bytes`, back to back
// on their own thread, while `beside` runs on the calling thread: the link's
// rate while the host does other work (host compute reads the same memory).
// Rethrows what `beside` throws, after stopping the copies.
double measure_pinned_h2d_rate_beside(Platform& platform, int accelerator, uint64_t bytes,
                                      const std::function<void()>& beside);

// Bytes per second the accelerator reads its own memory at
// (kernels::read_checksum over `bytes`; median of `repeats`, after a
// warm-up): the bound of a step that reads every resident weight once.
double measure_device_read_rate(Platform& platform, int accelerator, uint64_t bytes,
                                int repeats = 5);

// Bytes per second of a plain sequential read() of `path` (in 8 MiB chunks)
// after dropping its pages from the page cache (posix_fadvise DONTNEED).
// Throws IoError naming the file when it cannot be read.
double measure_cold_sequential_read_rate(const std::string& path);

// Drops `path`'s pages from the page cache (best effort; the kernel may keep
// dirty pages until they are written back, so the file is fsync'd first).
void drop_page_cache(const std::string& path);

}  // namespace stowage::cli
