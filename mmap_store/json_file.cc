#include "mmap_store/detail/json_file.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "mmap_store/detail/header_parser.h"
#include "mmap_store/detail/mapped_file.h"

namespace stowage::mmap_store::detail {

boost::json::value read_json_file(const std::string& path) {
  file_size_or_throw(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading", path));
  std::ostringstream text;
  text << in.rdbuf();
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(text.str(), ec);
  if (ec) {
    throw InvalidInputError(fmt::format("{}: expected JSON, found: {}", path, ec.message()));
  }
  check_no_duplicate_keys(text.str(), path);
  return v;
}

std::string folder_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace stowage::mmap_store::detail
