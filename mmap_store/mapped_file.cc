#include "mmap_store/detail/mapped_file.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace stowage::mmap_store::detail {

namespace bip = boost::interprocess;

uint64_t file_size_or_throw(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw IoError(
        fmt::format("{}: cannot open: {}", path, ec ? ec.message() : std::string("no such file")));
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw IoError(fmt::format("{}: expected a regular file", path));
  }
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw IoError(fmt::format("{}: cannot read its size: {}", path, ec.message()));
  return size;
}

std::shared_ptr<Buffer> map_file_read_only(const std::string& path) {
  const uint64_t size = file_size_or_throw(path);
  if (size == 0) {
    return std::make_shared<Buffer>(Buffer::adopt(nullptr, 0, Tier::disk(), {}));
  }
  try {
    bip::file_mapping mapping(path.c_str(), bip::read_only);
    auto region = std::make_shared<bip::mapped_region>(mapping, bip::read_only, 0, size);
    void* data = region->get_address();
    // The file that was mapped: a path renamed over later names another.
    FileOrigin origin{path, 0, 0, 0};
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      origin.device = static_cast<uint64_t>(st.st_dev);
      origin.inode = static_cast<uint64_t>(st.st_ino);
    }
    return std::make_shared<Buffer>(Buffer::adopt(
        data, region->get_size(), Tier::disk(), [region]() mutable { region.reset(); },
        std::move(origin)));
  } catch (const bip::interprocess_exception& e) {
    throw IoError(fmt::format("{}: cannot map {} bytes read-only: {}", path, size, e.what()));
  }
}

}  // namespace stowage::mmap_store::detail
