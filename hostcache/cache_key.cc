#include "hostcache/cache_key.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/error.h"

namespace stowage::hostcache {
namespace {

constexpr const char* kFilePrefix = "file=";

std::string file_identity(const std::string& path) {
  STOWAGE_EXPECTS(path.find('\n') == std::string::npos, InvalidInputError,
                  "host cache: cannot key a checkpoint file whose path holds a newline");
  char* real = ::realpath(path.c_str(), nullptr);
  STOWAGE_EXPECTS(real != nullptr, IoError, "host cache: cannot resolve {}: {}", path,
                  std::strerror(errno));
  const std::string resolved(real);
  std::free(real);
  struct stat st {};
  STOWAGE_EXPECTS(::stat(resolved.c_str(), &st) == 0, IoError, "host cache: cannot stat {}: {}",
                  resolved, std::strerror(errno));
  const uint64_t mtime_ns =
      static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull + st.st_mtim.tv_nsec;
  return fmt::format("{}:{}:{}:{}:{}", static_cast<uint64_t>(st.st_dev),
                     static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size), mtime_ns,
                     resolved);
}

}  // namespace

uint64_t fnv1a(const void* data, size_t bytes, uint64_t seed) {
  uint64_t h = seed;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string recipe_of(const std::string& family, const std::optional<LoadQuantization>& q) {
  if (!q) return fmt::format("family={};quant=none", family);
  return fmt::format("family={};quant={};blocksize={};double_quant={};storage={}", family,
                     quant::weight_format_name(q->method), q->blocksize, q->double_quant ? 1 : 0,
                     safetensors_name(q->storage));
}

CacheKey make_cache_key(const mmap_store::Checkpoint& checkpoint, const std::string& recipe) {
  std::set<std::string> files = {checkpoint.path()};
  for (const std::string& name : checkpoint.names()) files.insert(checkpoint.info(name).file);
  CacheKey key;
  key.model = std::filesystem::absolute(checkpoint.path()).lexically_normal().string();
  key.text = "stowage host cache\nrecipe=" + recipe + "\n";
  for (const std::string& f : files) key.text += kFilePrefix + file_identity(f) + "\n";
  key.id = fmt::format("{:016x}", fnv1a(key.text.data(), key.text.size()));
  return key;
}

bool files_unchanged(const std::string& key_text) {
  std::istringstream lines(key_text);
  std::string line;
  bool any = false;
  while (std::getline(lines, line)) {
    if (line.rfind(kFilePrefix, 0) != 0) continue;
    any = true;
    // dev:ino:size:mtime:path; the path may hold ':'.
    size_t colon = 0;
    for (int i = 0; i < 4 && colon != std::string::npos; ++i) colon = line.find(':', colon + 1);
    if (colon == std::string::npos) return false;
    try {
      if (kFilePrefix + file_identity(line.substr(colon + 1)) != line) return false;
    } catch (const Error&) {
      return false;
    }
  }
  return any;
}

}  // namespace stowage::hostcache
