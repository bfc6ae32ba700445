// Test helpers: a temporary folder removed at the end, and raw safetensors
// images crafted byte by byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stowage::mmap_store::testing {

// A fresh folder under $TEST_TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// 8-byte little-endian length + header (unpadded) + data.
std::string safetensors_image(const std::string& header_json, const std::string& data);
void write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

}  // namespace stowage::mmap_store::testing
