// What a shared weight segment is keyed by: the identity of every file of
// the checkpoint (its real path, device and inode, size and modification
// time in nanoseconds) and the recipe that turned the checkpoint's bytes
// into the stored records (the model family's layout, the dtype as stored,
// the quantization method and its options). Any change to a file gives
// another key, so a segment built from an older file is never attached.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "mmap_store/checkpoint.h"
#include "offload/loader.h"

namespace stowage::hostcache {

struct CacheKey {
  std::string text;   // the full identity (stored in the segment, compared on attach)
  std::string id;     // 16 hex digits of the text's hash: the segment's name
  std::string model;  // the checkpoint's path, for listings
};

// "family=mlp;quant=none" or "family=transformer;quant=nf4;blocksize=64;
// double_quant=1;storage=U8".
std::string recipe_of(const std::string& family, const std::optional<LoadQuantization>& quantize);

// Stats every file the checkpoint reads (its path and each tensor's file).
// Throws IoError naming a file that cannot be stat'ed, InvalidInputError for
// a path holding a newline.
CacheKey make_cache_key(const mmap_store::Checkpoint& checkpoint, const std::string& recipe);

// Whether every file named in `key_text` still has the identity recorded
// there (false: the checkpoint changed or is gone; the segment is stale).
bool files_unchanged(const std::string& key_text);

// FNV-1a, 64-bit (segment names, header and directory checksums).
uint64_t fnv1a(const void* data, size_t bytes, uint64_t seed = 14695981039346656037ull);

}  // namespace stowage::hostcache
