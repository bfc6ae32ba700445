#include "offload/disk_io.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>

#include "core/error.h"
#include "mmap_store/atomic_file.h"
#include "mmap_store/checkpoint.h"

namespace stowage {
namespace {

std::string errno_text() { return std::strerror(errno); }

class FolderDiskStore final : public DiskStore {
 public:
  explicit FolderDiskStore(std::string folder)
      : folder_(std::move(folder)), token_(unique_token()) {
    if (::mkdir(folder_.c_str(), 0755) != 0 && errno != EEXIST) {
      throw IoError(
          fmt::format("disk tier: cannot create offload folder '{}': {}", folder_, errno_text()));
    }
  }

  std::string location() const override { return folder_; }

  Tensor write(const std::string& key, const Tensor& host_tensor) override {
    STOWAGE_EXPECTS(host_tensor.defined() &&
                        (host_tensor.tier().is_host() || host_tensor.tier() == Tier::disk()),
                    InvalidInputError,
                    "disk tier: tensor '{}' must be host-readable to be written; found {}", key,
                    host_tensor.defined() ? host_tensor.tier().to_string() : "undefined");
    std::string file = key;
    for (char& c : file) {
      if (c == '/' || c == '\\') c = '_';
    }
    // A unique suffix: the same key may be written again while an older
    // mapping of it is still alive, and other stores (in this process or
    // another) may share the folder; neither the temporary nor the final name
    // ever replaces an existing file (AtomicFile's Replace::kNever).
    const std::string path =
        fmt::format("{}/{}.{}-{}.bin", folder_, file, token_, serial_.fetch_add(1));
    const size_t bytes = host_tensor.bytes();
    {
      // Scratch: not fsync'd (the file does not outlive the process).
      mmap_store::AtomicFile out(
          path, {mmap_store::AtomicFileOptions::Replace::kNever, /*durable=*/false});
      out.write(host_tensor.data(), bytes);
      out.commit();
    }
    void* data = nullptr;
    FileOrigin origin{path, 0, 0, 0};
    if (bytes > 0) {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      STOWAGE_EXPECTS(fd >= 0, IoError, "disk tier: cannot open '{}': {}", path, errno_text());
      struct stat st;
      if (::fstat(fd, &st) == 0) {
        origin.device = static_cast<uint64_t>(st.st_dev);
        origin.inode = static_cast<uint64_t>(st.st_ino);
      }
      data = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
      ::close(fd);
      if (data == MAP_FAILED) {
        ::unlink(path.c_str());
        throw IoError(fmt::format("disk tier: mmap of '{}' ({} bytes) failed: {}", path, bytes,
                                  errno_text()));
      }
    }
    auto storage = std::make_shared<Buffer>(Buffer::adopt(
        data, bytes, Tier::disk(),
        [=] {
          if (data != nullptr) ::munmap(data, bytes);
          ::unlink(path.c_str());
        },
        std::move(origin)));
    return Tensor::from_storage(std::move(storage), 0, host_tensor.dtype(), host_tensor.shape());
  }

 private:
  // This store's part of its file names: the process id and 64 random bits.
  static std::string unique_token() {
    std::random_device random;
    const uint64_t bits = (static_cast<uint64_t>(random()) << 32) | random();
    return fmt::format("{:x}-{:016x}", static_cast<long>(::getpid()), bits);
  }

  std::string folder_;
  std::string token_;
  std::atomic<uint64_t> serial_{0};
};

class MemcpyDiskStager final : public DiskStager {
 public:
  void enqueue_read(StreamRef stream, const Tensor& disk_tensor, uint64_t offset, uint64_t bytes,
                    void* dst) override {
    STOWAGE_EXPECTS(offset + bytes <= disk_tensor.bytes(), InvalidInputError,
                    "disk stager: read of bytes [{}, {}) is outside the tensor's {} bytes", offset,
                    offset + bytes, disk_tensor.bytes());
    Tensor keep = disk_tensor;
    // Start the kernel's readahead of the whole range now, on the calling
    // thread, so the disk reads it while earlier work on the stream (and the
    // modules before this one) runs; the memcpy then mostly finds the pages
    // in memory instead of faulting them in 128 KiB at a time.
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = reinterpret_cast<uintptr_t>(keep.data_as<const char>() + offset);
    const uintptr_t aligned = begin / page * page;
    if (bytes > 0) {
      ::madvise(reinterpret_cast<void*>(aligned), begin - aligned + bytes, MADV_WILLNEED);
    }
    stream.host_task([keep, offset, bytes, dst] {
      const char* src = static_cast<const char*>(keep.data()) + offset;
      std::memcpy(dst, src, bytes);
      // A file shrunk under its mapping read as zeros: the stream's error.
      mmap_store::check_mapped_read(src, bytes, "a disk-tier tensor");
    });
  }
};

class FileReadDiskStager final : public DiskStager {
 public:
  explicit FileReadDiskStager(FileReadStagerOptions options)
      : options_(std::move(options)),
        pool_(options_.io.threads),
        mapped_copy_(make_memcpy_disk_stager()) {}

  void enqueue_read(StreamRef stream, const Tensor& disk_tensor, uint64_t offset, uint64_t bytes,
                    void* dst) override {
    STOWAGE_EXPECTS(offset + bytes <= disk_tensor.bytes(), InvalidInputError,
                    "disk stager: read of bytes [{}, {}) is outside the tensor's {} bytes", offset,
                    offset + bytes, disk_tensor.bytes());
    std::shared_ptr<mmap_store::FileHandle> file = open_origin(disk_tensor);
    if (file == nullptr || bytes == 0) {
      mapped_copy_->enqueue_read(stream, disk_tensor, offset, bytes, dst);
      return;
    }
    const uint64_t at =
        disk_tensor.storage()->file_origin()->offset + disk_tensor.storage_offset() + offset;
    stream.host_task([file, keep = disk_tensor, dst, bytes, at] {
      // An IoError thrown here is the stream's error. A read of one task
      // (quant-state parts, biases) runs here: a hand-off to the pool and
      // back would cost more than the read. Larger ones run as tasks on
      // the pool; this waits for all of them.
      if (bytes <= file->options().task_bytes) {
        file->read(dst, static_cast<size_t>(bytes), at);
      } else {
        file->pread(dst, static_cast<size_t>(bytes), at).get();
      }
    });
  }

 private:
  // A handle on the file the tensor's bytes were mapped from; null when
  // there is none, it cannot be opened, or the path now names another file.
  std::shared_ptr<mmap_store::FileHandle> open_origin(const Tensor& tensor) {
    const FileOrigin* origin = tensor.storage()->file_origin();
    if (origin == nullptr || origin->inode == 0) return nullptr;
    std::unique_ptr<mmap_store::RandomAccessFile> file;
    try {
      file = options_.open_file ? options_.open_file(origin->path)
                                : mmap_store::open_random_access_file(origin->path);
    } catch (const IoError&) {
      return nullptr;  // e.g. no longer there: the mapping still holds the bytes
    }
    if (file == nullptr || file->identity() != std::make_pair(origin->device, origin->inode)) {
      return nullptr;
    }
    return std::make_shared<mmap_store::FileHandle>(std::move(file), pool_, options_.io);
  }

  FileReadStagerOptions options_;
  mmap_store::IoThreadPool pool_;  // joined before the options it reads go
  std::unique_ptr<DiskStager> mapped_copy_;
};

}  // namespace

std::unique_ptr<DiskStore> make_folder_disk_store(const std::string& folder) {
  return std::make_unique<FolderDiskStore>(folder);
}

std::unique_ptr<DiskStager> make_memcpy_disk_stager() {
  return std::make_unique<MemcpyDiskStager>();
}

std::unique_ptr<DiskStager> make_file_read_disk_stager(FileReadStagerOptions options) {
  return std::make_unique<FileReadDiskStager>(std::move(options));
}

std::unique_ptr<DiskStager> make_disk_stager(DiskStagerKind kind) {
  switch (kind) {
    case DiskStagerKind::kFileRead:
      return make_file_read_disk_stager();
    case DiskStagerKind::kMemcpy:
      break;
  }
  return make_memcpy_disk_stager();
}

}  // namespace stowage
