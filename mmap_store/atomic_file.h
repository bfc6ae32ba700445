// The one way Stowage writes a file: under a temporary name in the target's
// folder, renamed into place when complete, so the final name only ever holds
// nothing or a complete file. Every writer of the project goes through it
// (safetensors, offload folders, the disk tier, traces and reports).
//
// Guarantees:
//  - Only a regular file or nothing is ever replaced: an existing target that
//    is anything else (a folder, a symbolic link, a FIFO, a device) is refused
//    before the temporary file is created and again just before the rename.
//    With Replace::kNever an existing target of any kind is refused, and the
//    rename itself cannot replace one (RENAME_NOREPLACE, or link + unlink
//    where the file system lacks it).
//  - The temporary file is removed on every failure path: a failed write,
//    fsync or rename, and a writer destroyed without commit().
//  - A caller that must remove temporary files at a time the writer cannot
//    (an interrupt handler) passes a TemporaryFileRegistry: the writer adds
//    its temporary path when it creates the file and forgets it once renamed
//    or removed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace stowage::mmap_store {

// The temporary files a process has in flight, owned by the caller (e.g. the
// command's interrupt cleanup), outliving every writer that uses it.
//
// Thread safety: implementations must allow calls from any thread.
class TemporaryFileRegistry {
 public:
  virtual ~TemporaryFileRegistry() = default;
  // Held by a writer from just before it creates its temporary file until
  // that file is added, so a cleanup that takes the same lock cannot run in
  // between and miss it.
  virtual std::unique_lock<std::mutex> hold() = 0;
  // `path` now exists and is to be removed if the process is interrupted.
  virtual void add(const std::string& path) = 0;
  // `path` was renamed into place or removed by its writer.
  virtual void forget(const std::string& path) = 0;
};

struct AtomicFileOptions {
  enum class Replace {
    kRegularFile,  // an existing regular file is replaced (rename(2))
    kNever,        // an existing target of any kind is an error
  };
  Replace replace = Replace::kRegularFile;
  // fsync the file before the rename and the folder after it, so a complete
  // file survives a crash. Off for scratch files (the disk tier), whose
  // content does not outlive the process.
  bool durable = true;
  // Optional; must outlive the writer.
  TemporaryFileRegistry* registry = nullptr;
};

// One file being written. Thread safety: none (one writer, one thread).
class AtomicFile {
 public:
  // Creates ".NAME.tmp-XXXXXX" (mode 0644) beside `path`. Throws IoError
  // naming `path` when the target is refused (see above) or the folder is not
  // writable.
  explicit AtomicFile(std::string path, AtomicFileOptions options = {});
  ~AtomicFile();  // abandon() unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Writes all of [data, data + bytes) or throws IoError naming the file.
  // REQUIRES: not committed or abandoned.
  void write(const void* data, size_t bytes);
  // (fsync,) rename to the final name, (fsync the folder). Throws IoError
  // naming both names; the temporary file is then already removed.
  void commit();
  // Removes the temporary file; nothing appears at path(). Idempotent.
  void abandon() noexcept;

  const std::string& path() const { return path_; }
  // Empty once committed or abandoned.
  const std::string& temp_path() const { return temp_; }
  uint64_t bytes_written() const { return written_; }

 private:
  // Closes the file, removes the temporary (unless `remove` is false: it was
  // renamed into place) and forgets it in the registry.
  void drop_temp(bool remove) noexcept;

  std::string path_;
  AtomicFileOptions options_;
  std::string temp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// Writes `bytes` to `path` through an AtomicFile. Throws IoError.
void write_file_atomically(const std::string& path, std::string_view bytes,
                           AtomicFileOptions options = {});

}  // namespace stowage::mmap_store
