// Specification of the file-read disk stager (make_file_read_disk_stager):
// disk-tier tensors streamed to the accelerator through the offload manager
// arrive byte for byte, read from their files with mmap_store's FileHandle
// (folder DiskStore tensors and checkpoint tensors used in place); an
// injected EIO or short read is an IoError naming the file, never bytes
// taken as read; tensors with no file, or whose path now names another
// file, are read from their mapping instead.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <vector>

#include "core/error.h"
#include "mmap_store/checkpoint.h"
#include "mmap_store/file_handle.h"
#include "mmap_store/safetensors_writer.h"
#include "offload/disk_io.h"
#include "offload/offload_manager.h"
#include "offload/tests/test_support.h"

namespace stowage {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace testing_support;
using Fault = mmap_store::FaultInjectingFile::Fault;

class DiskStagerTest : public BackendTest {
 protected:
  // A stager whose files go through a FaultInjectingFile consulting
  // `fault`; counts the files it opens and the reads they serve.
  std::shared_ptr<DiskStager> stager(mmap_store::FaultInjectingFile::FaultPredicate fault = {}) {
    FileReadStagerOptions o;
    o.io.threads = 3;
    o.io.task_bytes = 1000 + 7;  // odd: several tasks per staging chunk
    auto opens = opens_;
    auto reads = reads_;
    o.open_file = [opens, reads, fault](const std::string& path) {
      ++*opens;
      return std::make_unique<mmap_store::FaultInjectingFile>(
          mmap_store::open_random_access_file(path), [reads, fault](uint64_t offset, size_t n) {
            ++*reads;
            return fault ? fault(offset, n) : Fault::kNone;
          });
    };
    return make_file_read_disk_stager(std::move(o));
  }

  OffloadOptions disk_options(const std::string& folder, std::shared_ptr<DiskStager> s) {
    OffloadOptions options;
    options.disk_store = make_folder_disk_store(temp_folder(folder));
    options.disk_stager = std::move(s);
    options.disk_staging_bytes = 4096;  // more bytes per module than staging space
    options.prefetch_depth = 2;
    return options;
  }

  std::string expect_io_error(OffloadManager& manager) {
    try {
      manager.synchronize();
    } catch (const IoError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no IoError";
    return "";
  }

  // Writes `m`'s tensors to a safetensors file at `path`; returns `path`.
  static std::string write_checkpoint(const Model& m, const std::string& path) {
    mmap_store::SafetensorsWriter writer(path);
    for (const auto& [name, t] : m.tensors) writer.declare(name, t.dtype(), t.shape());
    for (const auto& [name, t] : m.tensors) writer.write(name, t.view());
    writer.commit();
    return path;
  }
  // Places `m`'s modules on disk as the checkpoint's own mappings (in place).
  static void place_in_place(OffloadManager& manager, const Model& m,
                             const mmap_store::Checkpoint& checkpoint) {
    for (const std::string& module : m.modules) {
      for (const char* name : {"weight", "bias"}) {
        manager.place(module, name,
                      std::string(name) == "weight" ? TensorRole::kWeight : TensorRole::kBias,
                      checkpoint.tensor(module + "." + name), Tier::disk());
      }
    }
  }

  std::shared_ptr<std::atomic<int>> opens_ = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> reads_ = std::make_shared<std::atomic<int>>(0);
};

TEST_P(DiskStagerTest, StreamsFolderStoreTensorsByteExactFromTheirFiles) {
  const Model m = make_model(*platform_, "layers", 5, 40000);
  OffloadManager manager(*platform_, disk_options("file_read", stager()));
  place_model(manager, m, all_on(m, Tier::disk()));
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  // 10 staging chunks per weight, each several tasks: read from the files.
  EXPECT_GE(reads_->load(), 2 * 5 * 10 * 4);
  EXPECT_GT(opens_->load(), 0);
  EXPECT_GE(manager.counters().bytes_disk_read, 2 * m.bytes);
}

TEST_P(DiskStagerTest, ReadsCheckpointTensorsUsedInPlaceAtTheirOffsetInTheFile) {
  const Model m = make_model(*platform_, "layers", 3, 9000);
  const std::string path = write_checkpoint(m, temp_folder("checkpoint") + "/model.safetensors");
  auto checkpoint = mmap_store::open_checkpoint(path);
  OffloadManager manager(*platform_, disk_options("checkpoint_store", stager()));
  place_in_place(manager, m, *checkpoint);
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  EXPECT_EQ(manager.counters().bytes_disk_written, 0u) << "used in place";
  EXPECT_GT(reads_->load(), 0);
}

// Issue #15 item 5: a checkpoint truncated while a run streams from its
// mapping ended the process by SIGBUS. Both stagers now fail the forward with
// an IoError naming the file (the memcpy one: the page read zeros and the
// mapping was marked; the file reads: a short read).
TEST_P(DiskStagerTest, ACheckpointTruncatedUnderItsMappingIsAnIoErrorNotASignal) {
  for (const bool memcpy_stager : {true, false}) {
    SCOPED_TRACE(memcpy_stager ? "memcpy stager" : "file-read stager");
    const Model m = make_model(*platform_, "layers", 3, 9000);
    const std::string path = write_checkpoint(
        m, temp_folder(memcpy_stager ? "shrunk_memcpy" : "shrunk_read") + "/model.safetensors");
    auto checkpoint = mmap_store::open_checkpoint(path);
    OffloadManager manager(*platform_,
                           disk_options(memcpy_stager ? "shrunk_store_m" : "shrunk_store_r",
                                        memcpy_stager ? make_memcpy_disk_stager() : stager()));
    place_in_place(manager, m, *checkpoint);
    manager.declare_execution_order(m.modules);
    EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
    manager.synchronize();
    ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
    std::string message;
    try {
      stream_forward(manager, *platform_, m);
      manager.synchronize();
    } catch (const IoError& e) {
      message = e.what();
    }
    EXPECT_THAT(message, HasSubstr(path));
  }
}

// The manager's own synchronous reads of a disk-tier record (read_to_host,
// a move off the disk) check the mapping too.
TEST_P(DiskStagerTest, AReadToHostOfATruncatedMappingIsAnIoErrorNamingTheFile) {
  const Model m = make_model(*platform_, "layers", 3, 9000);
  const std::string path = write_checkpoint(m, temp_folder("shrunk_host_read") + "/model.safetensors");
  auto checkpoint = mmap_store::open_checkpoint(path);
  OffloadManager manager(*platform_, disk_options("shrunk_host_read_store", stager()));
  place_in_place(manager, m, *checkpoint);
  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
  std::string message;
  try {
    manager.read_to_host(m.modules.back(), "weight");
  } catch (const IoError& e) {
    message = e.what();
  }
  EXPECT_THAT(message, HasSubstr(path));
}

TEST_P(DiskStagerTest, InjectedEioIsAnIoErrorNamingTheFileNotWrongBytes) {
  const Model m = make_model(*platform_, "layers", 3, 40000);
  auto eio = [](uint64_t offset, size_t n) {
    return offset <= 20000 && 20000 < offset + n ? Fault::kEio : Fault::kNone;
  };
  OffloadManager manager(*platform_, disk_options("eio", stager(eio)));
  place_model(manager, m, all_on(m, Tier::disk()));
  manager.declare_execution_order(m.modules);
  stream_forward(manager, *platform_, m);
  EXPECT_THAT(expect_io_error(manager),
              AllOf(HasSubstr("layers.0.weight"), HasSubstr("Input/output error"),
                    HasSubstr("4096 bytes at offset 16384")));
}

TEST_P(DiskStagerTest, InjectedShortReadIsAnIoErrorNotWrongBytes) {
  const Model m = make_model(*platform_, "layers", 3, 40000);
  auto short_read = [](uint64_t offset, size_t) {
    return offset >= 30000 ? Fault::kShortRead : Fault::kNone;
  };
  OffloadManager manager(*platform_, disk_options("short", stager(short_read)));
  place_model(manager, m, all_on(m, Tier::disk()));
  manager.declare_execution_order(m.modules);
  stream_forward(manager, *platform_, m);
  EXPECT_THAT(expect_io_error(manager), AllOf(HasSubstr("short read"), HasSubstr(".weight")));
}

TEST_P(DiskStagerTest, AFailedSmallReadIsAnIoErrorToo) {
  // Biases (64 bytes) are read on the stream's thread, not as pool tasks.
  const Model m = make_model(*platform_, "layers", 2, 10000);
  auto eio_on_bias = [](uint64_t, size_t n) { return n == 64 ? Fault::kEio : Fault::kNone; };
  OffloadManager manager(*platform_, disk_options("small_eio", stager(eio_on_bias)));
  place_model(manager, m, all_on(m, Tier::disk()));
  manager.declare_execution_order(m.modules);
  stream_forward(manager, *platform_, m);
  EXPECT_THAT(expect_io_error(manager), AllOf(HasSubstr(".bias"), HasSubstr("64 bytes at offset 0"),
                                              HasSubstr("Input/output error")));
}

TEST_P(DiskStagerTest, ATensorWithNoFileIsReadFromItsMapping) {
  // A disk-tier buffer adopted with no FileOrigin (e.g. another store's
  // mapping): nothing to open, so the stager copies from the mapping.
  const Model m = make_model(*platform_, "layers", 2, 10000);
  OffloadManager manager(*platform_, disk_options("no_file", stager()));
  for (const std::string& module : m.modules) {
    for (const char* name : {"weight", "bias"}) {
      const Tensor& host = m.tensors.at(module + "." + name);
      auto storage = std::make_shared<Buffer>(
          Buffer::adopt(host.data(), host.bytes(), Tier::disk(), [keep = host] {}));
      manager.place(module, name, TensorRole::kWeight,
                    Tensor::from_storage(storage, 0, host.dtype(), host.shape()), Tier::disk());
    }
  }
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  EXPECT_EQ(opens_->load(), 0);
}

TEST_P(DiskStagerTest, AFileReplacedAtItsPathIsNotReadTheMappingIs) {
  const Model m = make_model(*platform_, "layers", 2, 10000);
  OffloadManager manager(*platform_, disk_options("replaced", stager()));
  place_model(manager, m, all_on(m, Tier::disk()));
  // Another file takes each tensor file's path (a second store writing the
  // same name); the mappings still hold the placed bytes.
  for (RecordId id = 0; id < manager.table().size(); ++id) {
    const FileOrigin* origin = manager.table().copy_on(id, Tier::disk()).storage()->file_origin();
    ASSERT_NE(origin, nullptr);
    const std::string other = origin->path + ".other";
    std::ofstream(other, std::ios::binary) << std::string(20000, 'x');
    ASSERT_EQ(::rename(other.c_str(), origin->path.c_str()), 0);
  }
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  EXPECT_EQ(reads_->load(), 0) << "no read from a file that is not the one mapped";
}

TEST_P(DiskStagerTest, MemcpyIsTheDefaultAndFileReadsAreSelectable) {
  EXPECT_EQ(OffloadOptions{}.disk_stager_kind, DiskStagerKind::kMemcpy);
  const Model m = make_model(*platform_, "layers", 3, 20000);
  for (DiskStagerKind kind : {DiskStagerKind::kFileRead, DiskStagerKind::kMemcpy}) {
    OffloadOptions options = disk_options("by_kind", nullptr);
    options.disk_stager_kind = kind;
    OffloadManager manager(*platform_, options);
    place_model(manager, m, all_on(m, Tier::disk()));
    manager.declare_execution_order(m.modules);
    EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
    EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  }
}

// DiskStager's contract: concurrent calls. Threads with their own streams
// share one stager; every read lands exactly where it was asked.
TEST_P(DiskStagerTest, ThreadsSharingOneStagerEachGetTheirBytes) {
  auto store = make_folder_disk_store(temp_folder("threads"));
  std::shared_ptr<DiskStager> shared = stager();
  constexpr int kThreads = 4;
  std::vector<Tensor> sources, on_disk;
  for (int t = 0; t < kThreads; ++t) {
    sources.push_back(host_tensor(*platform_, DType::kU8, Shape{50000}, 100 + t));
    on_disk.push_back(store->write("t" + std::to_string(t), sources.back()));
  }
  std::vector<std::vector<unsigned char>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Stream stream = platform_->accelerator(0).create_stream();
      Buffer dst(platform_->pinned_host_memory(), 50000);
      for (uint64_t offset = 0; offset < 50000; offset += 7000) {  // several reads, odd sizes
        const uint64_t n = std::min<uint64_t>(7000, 50000 - offset);
        shared->enqueue_read(stream, on_disk[t], offset, n,
                             static_cast<char*>(dst.data()) + offset);
      }
      stream.synchronize();
      const auto* p = static_cast<const unsigned char*>(dst.data());
      got[t].assign(p, p + 50000);
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(got[t], bytes_of(sources[t])) << "thread " << t;
  EXPECT_EQ(opens_->load(), kThreads * 8);
}

// Two folder stores on one folder (two managers, or two processes, sharing an
// offload directory) never write, replace or remove each other's files.
TEST_P(DiskStagerTest, StoresSharingAFolderKeepTheirOwnFiles) {
  const std::string folder = temp_folder("shared_folder");
  auto first = make_folder_disk_store(folder);
  auto second = make_folder_disk_store(folder);
  const Tensor a = host_tensor(*platform_, DType::kU8, Shape{3000}, 1);
  const Tensor b = host_tensor(*platform_, DType::kU8, Shape{3000}, 2);
  Tensor on_disk_a = first->write("layers.0.weight", a);
  const Tensor on_disk_b = second->write("layers.0.weight", b);
  const FileOrigin* origin_a = on_disk_a.storage()->file_origin();
  const FileOrigin* origin_b = on_disk_b.storage()->file_origin();
  ASSERT_NE(origin_a, nullptr);
  ASSERT_NE(origin_b, nullptr);
  EXPECT_NE(origin_a->path, origin_b->path);
  const std::string path_b = origin_b->path;
  on_disk_a = Tensor();  // removes the first store's file only
  struct stat st;
  ASSERT_EQ(::stat(path_b.c_str(), &st), 0) << path_b;
  EXPECT_EQ(static_cast<uint64_t>(st.st_ino), origin_b->inode);
  // The file-read stager still reads the second store's tensor from its file.
  Stream stream = platform_->accelerator(0).create_stream();
  Buffer dst(platform_->pinned_host_memory(), 3000);
  std::shared_ptr<DiskStager> reader = stager();  // outlives the read
  reader->enqueue_read(stream, on_disk_b, dst.data());
  stream.synchronize();
  const auto* p = static_cast<const unsigned char*>(dst.data());
  EXPECT_EQ(std::vector<unsigned char>(p, p + 3000), bytes_of(b));
  EXPECT_GT(reads_->load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, DiskStagerTest,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda), backend_name);

}  // namespace
}  // namespace stowage
