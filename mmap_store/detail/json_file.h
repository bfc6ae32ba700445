// Small JSON files (checkpoint indexes, offload indexes).
#pragma once

#include <boost/json/value.hpp>
#include <string>

namespace stowage::mmap_store::detail {

// Reads and parses `path`. Throws IoError when it cannot be read and
// InvalidInputError naming it when it is not valid JSON.
boost::json::value read_json_file(const std::string& path);

// "a/b/c.json" -> "a/b"; "c.json" -> ".".
std::string folder_of(const std::string& path);

}  // namespace stowage::mmap_store::detail
