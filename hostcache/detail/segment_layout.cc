#include <cstring>
#include <vector>

#include "core/error.h"
#include "hostcache/cache_key.h"
#include "hostcache/detail/segment_layout.h"

namespace stowage::hostcache::detail {
namespace {

void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
void put_string(std::string& out, const std::string& s) {
  put_u64(out, s.size());
  out += s;
}

class Reader {
 public:
  Reader(const char* p, size_t n, const std::string& segment) : p_(p), n_(n), segment_(segment) {}
  uint64_t u64() {
    need(8);
    uint64_t v;
    std::memcpy(&v, p_ + at_, 8);
    at_ += 8;
    return v;
  }
  std::string string() {
    const uint64_t len = u64();
    need(len);
    std::string s(p_ + at_, len);
    at_ += len;
    return s;
  }

 private:
  void need(uint64_t bytes) {
    STOWAGE_EXPECTS(bytes <= n_ - at_, InvalidInputError,
                    "host cache segment {}: its directory is corrupt (a field runs past its {} "
                    "bytes)",
                    segment_, n_);
  }
  const char* p_;
  size_t n_;
  size_t at_ = 0;
  const std::string& segment_;
};

}  // namespace

uint64_t header_checksum(const SegmentHeader& header) {
  const size_t covered = offsetof(SegmentHeader, header_checksum);
  std::vector<char> copy(covered);
  std::memcpy(copy.data(), &header, covered);
  const uint32_t unset = 0;
  std::memcpy(copy.data() + offsetof(SegmentHeader, state), &unset, sizeof(unset));
  return fnv1a(copy.data(), copy.size());
}

std::string encode_directory(const std::vector<DirectoryEntry>& entries) {
  std::string out;
  put_u64(out, entries.size());
  for (const DirectoryEntry& e : entries) {
    put_string(out, e.info.module);
    put_string(out, e.info.name);
    put_u64(out, static_cast<uint64_t>(e.info.role));
    put_string(out, e.info.weight);
    put_string(out, e.info.suffix);
    put_string(out, std::string(safetensors_name(e.dtype)));
    put_u64(out, e.shape.rank());
    for (int64_t d : e.shape.dims()) put_u64(out, static_cast<uint64_t>(d));
    put_u64(out, e.offset);
    put_u64(out, e.bytes);
  }
  return out;
}

std::vector<DirectoryEntry> decode_directory(const char* bytes, size_t size,
                                             uint64_t data_capacity, const std::string& segment) {
  Reader in(bytes, size, segment);
  const uint64_t count = in.u64();
  STOWAGE_EXPECTS(count <= size / 8, InvalidInputError,
                  "host cache segment {}: its directory is corrupt ({} records in {} bytes)",
                  segment, count, size);
  std::vector<DirectoryEntry> entries(count);
  for (DirectoryEntry& e : entries) {
    e.info.module = in.string();
    e.info.name = in.string();
    const uint64_t role = in.u64();
    STOWAGE_EXPECTS(role <= static_cast<uint64_t>(TensorRole::kQuantState), InvalidInputError,
                    "host cache segment {}: record {}.{} has an unknown role {}", segment,
                    e.info.module, e.info.name, role);
    e.info.role = static_cast<TensorRole>(role);
    e.info.weight = in.string();
    e.info.suffix = in.string();
    const std::string dtype = in.string();
    const auto parsed = dtype_from_safetensors_name(dtype);
    STOWAGE_EXPECTS(parsed.has_value(), InvalidInputError,
                    "host cache segment {}: record {}.{} has an unknown dtype '{}'", segment,
                    e.info.module, e.info.name, dtype);
    e.dtype = *parsed;
    const uint64_t rank = in.u64();
    STOWAGE_EXPECTS(rank <= 8, InvalidInputError,
                    "host cache segment {}: record {}.{} has rank {}", segment, e.info.module,
                    e.info.name, rank);
    std::vector<int64_t> dims(rank);
    for (int64_t& d : dims) d = static_cast<int64_t>(in.u64());
    e.shape = Shape(std::move(dims));
    e.offset = in.u64();
    e.bytes = in.u64();
    const auto numel = e.shape.checked_numel();
    STOWAGE_EXPECTS(numel && dtype_bytes_for(e.dtype, *numel) == e.bytes &&
                        e.offset % kRecordAlignment == 0 && e.offset <= data_capacity &&
                        e.bytes <= data_capacity - e.offset,
                    InvalidInputError,
                    "host cache segment {}: record {}.{} ({} {}, {} bytes at {}) does not fit "
                    "its {} data bytes or its dtype and shape",
                    segment, e.info.module, e.info.name, dtype, e.shape.to_string(), e.bytes,
                    e.offset, data_capacity);
  }
  return entries;
}

}  // namespace stowage::hostcache::detail
