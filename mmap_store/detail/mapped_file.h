// Read-only whole-file memory maps as core Buffers on Tier::disk().
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/buffer.h"

namespace stowage::mmap_store::detail {

// Maps `path` read-only. The Buffer owns the mapping (it is unmapped when the
// last shared_ptr goes). A 0-byte file gives an empty Buffer (Boost cannot map
// 0 bytes). Throws IoError naming the file when it cannot be opened or mapped.
std::shared_ptr<Buffer> map_file_read_only(const std::string& path);

// The file's size; throws IoError naming it when it cannot be read.
uint64_t file_size_or_throw(const std::string& path);

}  // namespace stowage::mmap_store::detail
