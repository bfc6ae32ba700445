// The bytes of a shared weight segment. Not part of the public API.
//
//   [0, kHeaderBytes)                       SegmentHeader (mapped read-write)
//   [directory_offset, + directory_capacity) the records' directory
//   [data_offset, + data_capacity)           the records' bytes, 256-aligned
// Everything after the header is mapped read-only once the segment is ready.
//
// The builder writes every field but `state` first, then the directory and
// the data, then the checksums, and `state = kReady` last (a release store):
// a reader that sees kReady (an acquire load) sees a complete segment. A
// builder that dies leaves kBuilding, which no process attaches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "hostcache/process_liveness.h"
#include "offload/host_tier_store.h"

namespace stowage::hostcache::detail {

constexpr char kMagic[8] = {'S', 'T', 'O', 'W', 'H', 'C', 'S', 'G'};
constexpr uint32_t kLayoutVersion = 1;
constexpr uint64_t kHeaderBytes = uint64_t{64} << 10;
constexpr size_t kMaxKeyBytes = 24 << 10;
constexpr size_t kMaxModelBytes = 4 << 10;
constexpr int kAttachSlots = 128;
constexpr uint64_t kRecordAlignment = 256;

enum SegmentState : uint32_t { kUnset = 0, kBuilding = 1, kReady = 2 };

struct SegmentHeader {
  char magic[8];
  uint32_t version;
  uint32_t state;       // SegmentState; atomic, written last
  uint64_t generation;  // random: tells this build from a later one of the same name
  uint64_t segment_bytes;
  uint64_t directory_offset;
  uint64_t directory_capacity;
  uint64_t directory_bytes;
  uint64_t directory_checksum;
  uint64_t data_offset;
  uint64_t data_capacity;
  uint64_t data_bytes;  // end of the last record
  uint64_t record_count;
  uint32_t key_length;
  uint32_t model_length;
  char key[kMaxKeyBytes];
  char model[kMaxModelBytes];
  ProcessId builder;
  uint64_t header_checksum;  // of every byte above, with `state` read as 0
  // Mutable under the segment's lock file:
  uint32_t keep;  // 1: stays when its last process leaves
  uint32_t reserved;
  ProcessId attached[kAttachSlots];
};
static_assert(sizeof(SegmentHeader) <= kHeaderBytes, "the header must fit its region");

uint64_t header_checksum(const SegmentHeader& header);

struct DirectoryEntry {
  StoredRecordInfo info;
  DType dtype = DType::kU8;
  Shape shape;
  uint64_t offset = 0;  // from data_offset
  uint64_t bytes = 0;
};

std::string encode_directory(const std::vector<DirectoryEntry>& entries);
// Throws InvalidInputError naming `segment` for bytes that do not decode, or
// records that fall outside `data_capacity` or whose bytes disagree with
// their dtype and shape.
std::vector<DirectoryEntry> decode_directory(const char* bytes, size_t size,
                                             uint64_t data_capacity, const std::string& segment);

}  // namespace stowage::hostcache::detail
