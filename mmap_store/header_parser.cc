#include "mmap_store/detail/header_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <cstring>
#include <set>
#include <string_view>

#include "core/error.h"

namespace stowage::mmap_store::detail {
namespace {

namespace json = boost::json;

[[noreturn]] void fail(const std::string& file, const std::string& rule, const std::string& what) {
  throw InvalidInputError(
      fmt::format("{}: not a valid safetensors file ({}): {}", file, rule, what));
}

// SAX handler for a first pass over the header: Boost.JSON's DOM keeps only
// the last of duplicate keys, so duplicates are caught here, in every object
// (a repeated tensor name, or a repeated "dtype" inside one entry).
class DuplicateKeyFinder {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  std::string duplicate;  // the first duplicate key found
  size_t duplicate_depth = 0;

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    keys_.emplace_back();
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    keys_.pop_back();
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t, json::error_code&) { return true; }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code& ec) {
    key_.append(s.data(), s.size());
    if (!keys_.back().insert(key_).second) {
      duplicate = key_;
      duplicate_depth = keys_.size();
      ec = json::make_error_code(json::error::syntax);
      return false;
    }
    key_.clear();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  std::vector<std::set<std::string>> keys_;
  std::string key_;
};

void check_duplicates_and_syntax(std::string_view text, const std::string& file) {
  json::basic_parser<DuplicateKeyFinder> parser{json::parse_options{}};
  json::error_code ec;
  size_t used = parser.write_some(false, text.data(), text.size(), ec);
  DuplicateKeyFinder& h = parser.handler();
  if (!h.duplicate.empty() || (ec && h.duplicate_depth > 0)) {
    if (h.duplicate_depth == 1) {
      fail(file, "duplicate tensor name",
           fmt::format("the header names '{}' twice; each name must appear once", h.duplicate));
    }
    fail(file, "duplicate key",
         fmt::format("key '{}' appears twice in one JSON object of the header", h.duplicate));
  }
  if (ec) {
    fail(file, "header JSON",
         fmt::format("expected UTF-8 JSON, found an error at header byte {}: {}", used,
                     ec.message()));
  }
}

std::string describe(const json::value& v) {
  std::string s = json::serialize(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> as_count(const json::value& v) {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64() && v.get_int64() >= 0) return static_cast<uint64_t>(v.get_int64());
  return std::nullopt;
}

HeaderEntry parse_entry(const std::string& file, const std::string& name, const json::value& v,
                        uint64_t data_bytes) {
  const std::string where = fmt::format("tensor '{}'", name);
  if (!v.is_object()) {
    fail(file, "tensor entry",
         fmt::format("{}: expected an object with dtype, shape and data_offsets, found {}", where,
                     describe(v)));
  }
  const json::object& o = v.get_object();
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!o.contains(key)) {
      fail(file, "tensor entry", fmt::format("{}: missing key \"{}\"", where, key));
    }
  }
  HeaderEntry e;
  e.name = name;

  const json::value& dtype = o.at("dtype");
  if (!dtype.is_string()) {
    fail(file, "dtype",
         fmt::format("{}: expected a dtype string, found {}", where, describe(dtype)));
  }
  std::string_view dtype_name(dtype.get_string().data(), dtype.get_string().size());
  auto parsed = dtype_from_safetensors_name(dtype_name);
  if (!parsed) {
    fail(file, "unknown dtype",
         fmt::format("{}: dtype \"{}\" is not one of BOOL, U8, I8, I16, U16, F16, BF16, I32, "
                     "U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2",
                     where, dtype_name));
  }
  e.dtype = *parsed;

  const json::value& shape = o.at("shape");
  if (!shape.is_array()) {
    fail(file, "shape",
         fmt::format("{}: expected shape as a list of non-negative integers, "
                     "found {}",
                     where, describe(shape)));
  }
  std::vector<int64_t> dims;
  for (const json::value& d : shape.get_array()) {
    auto n = as_count(d);
    if (!n || *n > static_cast<uint64_t>(INT64_MAX)) {
      fail(file, "shape",
           fmt::format("{}: expected non-negative integer extents, found {} in shape {}", where,
                       describe(d), describe(shape)));
    }
    dims.push_back(static_cast<int64_t>(*n));
  }
  e.shape = Shape(std::move(dims));
  auto numel = e.shape.checked_numel();
  const uint64_t elem = dtype_size(e.dtype);
  if (!numel || (elem != 0 && *numel > UINT64_MAX / elem)) {
    fail(file, "byte size overflow",
         fmt::format("{}: shape {} of {} has a byte size beyond 2^64", where, e.shape.to_string(),
                     dtype_name));
  }
  const uint64_t bytes = *numel * elem;

  const json::value& offsets = o.at("data_offsets");
  if (!offsets.is_array() || offsets.get_array().size() != 2 || !as_count(offsets.get_array()[0]) ||
      !as_count(offsets.get_array()[1])) {
    fail(file, "data_offsets",
         fmt::format("{}: expected data_offsets as two non-negative integers [BEGIN, END], "
                     "found {}",
                     where, describe(offsets)));
  }
  e.begin = *as_count(offsets.get_array()[0]);
  e.end = *as_count(offsets.get_array()[1]);
  if (e.begin > e.end) {
    fail(file, "data_offsets",
         fmt::format("{}: data_offsets [{}, {}] end before they begin", where, e.begin, e.end));
  }
  if (e.end > data_bytes) {
    fail(file, "offsets inside the data",
         fmt::format("{}: data_offsets [{}, {}] run past the end of the data ({} bytes after "
                     "the header)",
                     where, e.begin, e.end, data_bytes));
  }
  if (e.end - e.begin != bytes) {
    fail(file, "byte size",
         fmt::format("{}: data_offsets [{}, {}] span {} bytes, expected {} (shape {} of {}, {} "
                     "bytes each)",
                     where, e.begin, e.end, e.end - e.begin, bytes, e.shape.to_string(), dtype_name,
                     elem));
  }
  return e;
}

}  // namespace

void check_no_duplicate_keys(std::string_view text, const std::string& file) {
  json::basic_parser<DuplicateKeyFinder> parser{json::parse_options{}};
  json::error_code ec;
  parser.write_some(false, text.data(), text.size(), ec);
  const DuplicateKeyFinder& h = parser.handler();
  if (h.duplicate_depth > 0) {
    throw InvalidInputError(fmt::format(
        "{}: key '{}' appears twice in one JSON object (at depth {}); expected each key once", file,
        h.duplicate, h.duplicate_depth));
  }
}

ParsedHeader parse_safetensors_header(const unsigned char* bytes, uint64_t available,
                                      uint64_t file_size, const std::string& file) {
  if (file_size == 0) {
    fail(file, "header length",
         "the file is empty (0 bytes); expected an 8-byte header length, a JSON header and data");
  }
  if (file_size < 8 || available < 8) {
    fail(file, "header length",
         fmt::format("the file is {} bytes, expected at least 8 (the header length)", file_size));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  if (n > kMaxHeaderBytes) {
    fail(file, "header length",
         fmt::format("header length {} exceeds the limit of {} bytes", n, kMaxHeaderBytes));
  }
  if (n > file_size - 8) {
    fail(file, "header length",
         fmt::format("header length {} runs past the end of the file: the header would end at "
                     "byte {}, the file has {} bytes",
                     n, 8 + n, file_size));
  }
  if (available < 8 + n) {
    fail(file, "header length",
         fmt::format("only {} bytes of the {}-byte header are available", available - 8, n));
  }
  ParsedHeader out;
  out.data_start = 8 + n;
  out.data_bytes = file_size - out.data_start;
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  if (n == 0 || text[0] != '{') {
    fail(file, "header JSON",
         n == 0 ? std::string("the header is empty, expected a JSON object starting with '{'")
                : fmt::format("expected the header to start with '{{', found byte 0x{:02x}",
                              static_cast<unsigned char>(text[0])));
  }
  check_duplicates_and_syntax(text, file);
  // The error_code's message, not a system_error's what(): that one carries
  // Boost's source location ("[boost.json:25 at ...]"), no help to a user.
  boost::system::error_code ec;
  json::value root = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) fail(file, "header JSON", fmt::format("expected UTF-8 JSON, found: {}", ec.message()));
  if (!root.is_object()) {
    fail(file, "header JSON", fmt::format("expected a JSON object, found {}", describe(root)));
  }
  for (const auto& kv : root.get_object()) {
    std::string key(kv.key().data(), kv.key().size());
    if (key == "__metadata__") {
      if (!kv.value().is_object()) {
        fail(file, "__metadata__",
             fmt::format("expected an object of string to string, found {}", describe(kv.value())));
      }
      for (const auto& m : kv.value().get_object()) {
        std::string mkey(m.key().data(), m.key().size());
        if (!m.value().is_string()) {
          fail(file, "__metadata__",
               fmt::format("expected a string value for key '{}', found {}", mkey,
                           describe(m.value())));
        }
        const json::string& s = m.value().get_string();
        out.metadata.emplace_back(std::move(mkey), std::string(s.data(), s.size()));
      }
      continue;
    }
    out.tensors.push_back(parse_entry(file, key, kv.value(), out.data_bytes));
  }

  // The data must be tiled exactly: sorted by offset, each tensor begins where
  // the previous one ended, and the last ends at the end of the file.
  std::vector<const HeaderEntry*> order;
  order.reserve(out.tensors.size());
  for (const auto& t : out.tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const HeaderEntry* previous = nullptr;
  for (const HeaderEntry* t : order) {
    if (t->begin > cursor) {
      fail(file, "no holes",
           fmt::format("tensor '{}' begins at data byte {}, expected {} (bytes {}..{} belong to "
                       "no tensor)",
                       t->name, t->begin, cursor, cursor, t->begin));
    }
    if (t->begin < cursor) {
      fail(file, "no overlaps",
           fmt::format("tensor '{}' data_offsets [{}, {}] overlap tensor '{}' which ends at {}",
                       t->name, t->begin, t->end, previous->name, cursor));
    }
    cursor = t->end;
    previous = t;
  }
  if (cursor != out.data_bytes) {
    fail(file, "no holes",
         fmt::format("the tensors cover {} bytes of data, expected the whole {} bytes after the "
                     "header (the file has {} trailing bytes no tensor holds)",
                     cursor, out.data_bytes, out.data_bytes - cursor));
  }
  return out;
}

}  // namespace stowage::mmap_store::detail
