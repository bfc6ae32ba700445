// A file written under a temporary name in its target folder and renamed into
// place on commit (removed when abandoned).
#pragma once

#include <cstddef>
#include <string>

namespace stowage::mmap_store::detail {

class AtomicFile {
 public:
  // Creates ".NAME.tmp-XXXXXX" beside `path`. Throws IoError.
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Writes all of [data, data + bytes) or throws IoError naming the file.
  void write(const void* data, size_t bytes);
  // fsync, rename to the final name, fsync the folder. Throws IoError.
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes a whole small file atomically.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace stowage::mmap_store::detail
