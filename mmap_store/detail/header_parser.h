// Validation of a safetensors header (FORMATS.md), kept apart from the file
// mapping so the fuzzer and the tests can drive it with plain bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"

namespace stowage::mmap_store::detail {

// One tensor entry of a validated header. Offsets are relative to the start
// of the data (the first byte after the header).
struct HeaderEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin;
  uint64_t end;
};

struct ParsedHeader {
  std::vector<HeaderEntry> tensors;                           // in header (JSON) order
  std::vector<std::pair<std::string, std::string>> metadata;  // in header order
  uint64_t data_start = 0;                                    // 8 + header length
  uint64_t data_bytes = 0;                                    // file size - data_start
};

// The reference implementation's limit on the header length.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Validates a whole safetensors file image: `bytes` points at the first
// `available` bytes of a file of `file_size` bytes (available >= min(file_size,
// 8 + header length) is enough; the data itself is never read). Throws
// InvalidInputError naming `file_label`, the tensor and the broken rule with
// what was expected and what was found. Never reads outside [bytes,
// bytes + available).
ParsedHeader parse_safetensors_header(const unsigned char* bytes, uint64_t available,
                                      uint64_t file_size, const std::string& file_label);

// Throws InvalidInputError naming `file` when an object in the JSON `text`
// repeats a key (Boost.JSON's DOM would silently keep the last one). Used
// for the JSON index files (sharded checkpoints, offload folders).
void check_no_duplicate_keys(std::string_view text, const std::string& file);

}  // namespace stowage::mmap_store::detail
