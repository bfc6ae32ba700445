// Specification of asynchronous staged reads: FileHandle::pread delivers
// exactly the file's bytes (split into tasks, many requests at once) and
// turns EIO and short reads into an IoError on that request; StagingRing
// moves disk -> pinned slots with a small ring under concurrency.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/platform.h"
#include "mmap_store/file_handle.h"
#include "mmap_store/staging_ring.h"
#include "mmap_store/testing/test_files.h"

namespace stowage::mmap_store {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using Fault = FaultInjectingFile::Fault;

class StagedReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    contents_.resize(1 << 20 | 12345);  // not a multiple of anything useful
    std::mt19937 rng(7);
    for (auto& c : contents_) c = static_cast<char>(rng());
    path_ = dir_.file("data.bin");
    testing::write_file(path_, contents_);
  }
  IoOptions small_tasks() {
    IoOptions o;
    o.task_bytes = 4096 + 17;  // odd task size: many tasks per request
    return o;
  }
  std::unique_ptr<RandomAccessFile> faulty(FaultInjectingFile::FaultPredicate p) {
    return std::make_unique<FaultInjectingFile>(open_random_access_file(path_), std::move(p));
  }
  std::string expect_io_error(std::future<size_t> f) {
    try {
      f.get();
    } catch (const IoError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no IoError";
    return "";
  }
  testing::TempDir dir_;
  std::string path_;
  std::string contents_;
  IoThreadPool pool_{3};
};

TEST_F(StagedReadTest, PreadDeliversExactlyTheFilesBytesForManyConcurrentRequests) {
  FileHandle file(path_, pool_, small_tasks());
  std::mt19937 rng(1);
  struct Req {
    uint64_t offset;
    std::string out;
    std::future<size_t> done;
  };
  std::vector<Req> reqs(200);
  for (auto& r : reqs) {
    r.offset = rng() % contents_.size();
    r.out.resize(rng() % (contents_.size() - r.offset + 1));
    r.done = file.pread(r.out.data(), r.out.size(), r.offset);
  }
  for (auto& r : reqs) {
    EXPECT_EQ(r.done.get(), r.out.size());
    EXPECT_EQ(r.out, contents_.substr(r.offset, r.out.size()));
  }
}

TEST_F(StagedReadTest, PreadOfTheWholeFileWithTheDefaultTaskSize) {
  FileHandle file(path_, pool_);
  std::string out(contents_.size(), '\0');
  EXPECT_EQ(file.pread(out.data(), out.size(), 0).get(), contents_.size());
  EXPECT_EQ(out, contents_);
}

TEST_F(StagedReadTest, PartialReadsFromTheKernelAreRetriedNotReturnedAsData) {
  FileHandle file(faulty([](uint64_t, size_t) { return Fault::kPartialRead; }), pool_,
                  small_tasks());
  std::string out(100000, '\0');
  file.pread(out.data(), out.size(), 777).get();
  EXPECT_EQ(out, contents_.substr(777, out.size()));
}

TEST_F(StagedReadTest, InjectedEioFailsThatRequestNamingFileOffsetAndBytes) {
  const uint64_t bad = 200000;
  FileHandle file(faulty([&](uint64_t o, size_t b) {
                    return o <= bad && bad < o + b ? Fault::kEio : Fault::kNone;
                  }),
                  pool_, small_tasks());
  std::string a(50000, '\0'), b(50000, '\0');
  auto failing = file.pread(a.data(), a.size(), 180000);
  auto fine = file.pread(b.data(), b.size(), 0);
  EXPECT_THAT(expect_io_error(std::move(failing)),
              AllOf(HasSubstr(path_), HasSubstr("50000 bytes at offset 180000"),
                    HasSubstr("Input/output error")));
  EXPECT_EQ(fine.get(), 50000u);
  EXPECT_EQ(b, contents_.substr(0, 50000));
}

TEST_F(StagedReadTest, InjectedShortReadIsAnErrorNotWrongBytes) {
  FileHandle file(
      faulty([](uint64_t o, size_t) { return o >= 300000 ? Fault::kShortRead : Fault::kNone; }),
      pool_, small_tasks());
  std::string out(200000, '\0');
  EXPECT_THAT(expect_io_error(file.pread(out.data(), out.size(), 250000)),
              AllOf(HasSubstr("short read"), HasSubstr("200000 bytes at offset 250000")));
}

TEST_F(StagedReadTest, RangePastTheEndOfTheFileIsAShortRead) {
  FileHandle file(path_, pool_);
  std::string out(10, '\0');
  EXPECT_THAT(expect_io_error(file.pread(out.data(), 10, contents_.size() - 5)),
              HasSubstr("short read"));
}

TEST_F(StagedReadTest, DirectIoReadsTheSameBytes) {
  HostMemoryResource aligned;
  FileHandle file(path_, pool_, IoOptions{}, /*direct=*/true);
  const size_t bytes = 1 << 20;
  void* buf = aligned.allocate(bytes);
  file.pread(buf, bytes, 0).get();  // aligned: O_DIRECT where the file system allows it
  EXPECT_EQ(std::memcmp(buf, contents_.data(), bytes), 0);
  file.pread(buf, 5000, 4097).get();  // unaligned: through the page cache
  EXPECT_EQ(std::memcmp(buf, contents_.data() + 4097, 5000), 0);
  aligned.deallocate(buf, bytes);
}

TEST_F(StagedReadTest, OpeningAMissingFileIsAnIoErrorNamingIt) {
  try {
    FileHandle file(dir_.file("absent.bin"), pool_);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("absent.bin"));
  }
}

TEST(IoOptionsTest, EnvironmentOverridesTheDefaults) {
  ::setenv("STOWAGE_IO_TASK_SIZE", "2MiB", 1);
  ::setenv("STOWAGE_IO_THREADS", "7", 1);
  ::setenv("STOWAGE_IO_READAHEAD", "32MiB", 1);
  IoOptions o = IoOptions::from_environment();
  EXPECT_EQ(o.task_bytes, size_t{2} << 20);
  EXPECT_EQ(o.threads, 7u);
  EXPECT_EQ(o.readahead_bytes, size_t{32} << 20);
  ::setenv("STOWAGE_IO_THREADS", "lots", 1);
  EXPECT_THROW(IoOptions::from_environment(), InvalidInputError);
  ::unsetenv("STOWAGE_IO_TASK_SIZE");
  ::unsetenv("STOWAGE_IO_THREADS");
  ::unsetenv("STOWAGE_IO_READAHEAD");
  EXPECT_EQ(IoOptions::from_environment().task_bytes, IoOptions{}.task_bytes);
  EXPECT_EQ(IoOptions::from_environment().readahead_bytes, IoOptions{}.readahead_bytes);
}

// More threads than cores only made warm reads slower (4 threads on 2 cores:
// 0.7x of a plain read()); a 16-core host gets 16 reads in flight.
TEST(IoOptionsTest, DefaultThreadsFollowTheHardwareWithinTwoToSixteen) {
  const unsigned hardware = std::thread::hardware_concurrency();
  const unsigned expected = std::clamp(hardware == 0 ? 2u : hardware, 2u, 16u);
  EXPECT_EQ(IoOptions{}.threads, expected);
  EXPECT_EQ(IoOptions::default_threads(), expected);
  EXPECT_EQ(IoOptions{}.task_bytes, expected >= 8 ? size_t{4} << 20 : size_t{1} << 20);
  EXPECT_EQ(IoOptions::default_task_bytes(2), size_t{1} << 20);
  EXPECT_EQ(IoOptions::default_task_bytes(16), size_t{4} << 20);
}

TEST(StagingRingShapeTest, DefaultShapeHoldsTwoTasksPerThreadInFourMiBSlots) {
  IoOptions io;
  io.task_bytes = size_t{1} << 20;
  io.threads = 2;
  StagingRingShape two = default_staging_ring_shape(io);
  EXPECT_EQ(two.slot_bytes, kDefaultStagingSlotBytes);
  EXPECT_EQ(two.slot_count, 2u);  // 4 tasks fit one slot; still double-buffered
  io.threads = 16;
  EXPECT_EQ(default_staging_ring_shape(io).slot_count, 8u);  // 32 tasks of 1 MiB
  io.task_bytes = size_t{4} << 20;  // the default from 8 threads on
  StagingRingShape sixteen = default_staging_ring_shape(io);
  EXPECT_EQ(sixteen.slot_bytes, size_t{16} << 20);  // 4 tasks per slot
  EXPECT_EQ(sixteen.slot_count, 8u);                // 32 tasks of 4 MiB
}

// ---- StagingRing ----

TEST_F(StagedReadTest, RingOfTwoSlotsDeliversEveryChunkExactlyUnderConcurrency) {
  FileHandle file(path_, pool_, small_tasks());
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  StagingRing ring(pinned, 64 * 1024, 2);
  std::string out(contents_.size(), '\0');
  std::atomic<int> held{0}, max_held{0}, delivered{0};
  const size_t chunk = 50000;
  std::vector<std::thread> producers;
  for (int t = 0; t < 3; ++t) {  // several threads queue requests at once
    producers.emplace_back([&, t] {
      for (uint64_t off = t * chunk; off < contents_.size(); off += 3 * chunk) {
        size_t n = std::min<size_t>(chunk, contents_.size() - off);
        ring.read(file, off, n, [&](const StagedRead& r) {
          ASSERT_FALSE(r.error);
          int h = ++held;
          int m = max_held.load();
          while (h > m && !max_held.compare_exchange_weak(m, h)) {
          }
          std::memcpy(&out[r.offset], r.data, r.bytes);  // the "device copy"
          --held;
          ++delivered;
          ring.release(r.slot);
        });
      }
    });
  }
  for (auto& p : producers) p.join();
  const int chunks = static_cast<int>((contents_.size() + chunk - 1) / chunk);
  while (delivered.load() < chunks) std::this_thread::yield();
  EXPECT_EQ(out, contents_);
  EXPECT_LE(max_held.load(), 2);
  EXPECT_EQ(ring.free_slots(), 2u);
}

// The disk -> pinned -> device path, the same specification on the sim
// backend and on a real GPU (skipped where none is visible): slots from the
// platform's pinned memory (cudaHostAlloc on CUDA), device copies on a
// stream, slots given back by release_after once the copy has run.
class StagedReadOnBackendTest : public StagedReadTest,
                                public ::testing::WithParamInterface<DeviceChoice> {};

TEST_P(StagedReadOnBackendTest, DiskToPinnedToDeviceDeliversTheFileExactly) {
  if (GetParam() == DeviceChoice::kCuda && !cuda_device_available()) {
    GTEST_SKIP() << "no CUDA device visible";
  }
  auto platform = Platform::create(GetParam());
  Accelerator& acc = platform->accelerator(0);
  Stream stream = acc.create_stream();
  FileHandle file(path_, pool_, small_tasks());
  StagingRing ring(platform->pinned_host_memory(), 32 * 1024, 3);
  const size_t bytes = contents_.size();
  void* device = acc.memory().allocate(bytes, stream);
  std::atomic<size_t> done{0};
  for (uint64_t off = 0; off < bytes; off += 32 * 1024) {
    size_t n = std::min<size_t>(32 * 1024, bytes - off);
    ring.read(file, off, n, [&, off](const StagedRead& r) {
      ASSERT_FALSE(r.error);
      acc.make_current();  // consumers run on I/O threads
      stream.ref().copy(static_cast<char*>(device) + off, r.data, r.bytes);
      ring.release_after(stream, r.slot);
      done += r.bytes;
    });
  }
  while (done.load() < bytes) std::this_thread::yield();
  stream.synchronize();
  std::string back(bytes, '\0');
  stream.ref().copy(back.data(), device, bytes);
  stream.synchronize();
  EXPECT_TRUE(back == contents_);
  EXPECT_EQ(ring.free_slots(), 3u);
  acc.memory().deallocate(device, bytes, stream);
  stream.synchronize();
}

INSTANTIATE_TEST_SUITE_P(Backends, StagedReadOnBackendTest,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         [](const ::testing::TestParamInfo<DeviceChoice>& info) {
                           return info.param == DeviceChoice::kSim ? "Sim" : "Cuda";
                         });

TEST_F(StagedReadTest, RingReportsAnInjectedEioOnThatRequestAndKeepsGoing) {
  FileHandle file(faulty([](uint64_t o, size_t) {
                    return o >= 100000 && o < 150000 ? Fault::kEio : Fault::kNone;
                  }),
                  pool_, small_tasks());
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  StagingRing ring(pinned, 50000, 2);
  std::mutex m;
  std::vector<std::string> errors;
  std::atomic<int> finished{0};
  for (uint64_t off = 0; off < 500000; off += 50000) {
    ring.read(file, off, 50000, [&](const StagedRead& r) {
      if (r.error) {
        try {
          std::rethrow_exception(r.error);
        } catch (const IoError& e) {
          std::lock_guard<std::mutex> lock(m);
          errors.push_back(e.what());
        }
        EXPECT_EQ(r.slot, -1);
      } else {
        EXPECT_EQ(std::memcmp(r.data, contents_.data() + r.offset, r.bytes), 0);
        ring.release(r.slot);
      }
      ++finished;
    });
  }
  while (finished.load() < 10) std::this_thread::yield();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], HasSubstr("50000 bytes at offset 100000"));
  EXPECT_EQ(ring.free_slots(), 2u);
}

TEST_F(StagedReadTest, RingRefusesAReadLargerThanASlot) {
  FileHandle file(path_, pool_);
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  StagingRing ring(pinned, 1024, 2);
  EXPECT_THROW(ring.read(file, 0, 1025, [](const StagedRead&) {}), InvalidInputError);
}

TEST_F(StagedReadTest, RingDestroyedWithQueuedRequestsFailsThemInsteadOfHanging) {
  FileHandle file(path_, pool_);
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  std::atomic<int> cancelled{0};
  int held_slot = -1;
  {
    StagingRing ring(pinned, 1024, 1);
    std::promise<int> first;
    ring.read(file, 0, 1024, [&](const StagedRead& r) { first.set_value(r.slot); });
    held_slot = first.get_future().get();
    ring.read(file, 1024, 1024, [&](const StagedRead& r) {
      if (r.error) ++cancelled;
    });
    ring.release(held_slot);  // lets the queued one run or be cancelled; either way no hang
  }
  EXPECT_LE(cancelled.load(), 1);
}

// The readahead hints given to a file, kept after the file is gone.
struct HintLog {
  std::mutex mutex;
  std::vector<std::pair<uint64_t, size_t>> hints;
  std::vector<std::pair<uint64_t, size_t>> get() {
    std::lock_guard<std::mutex> lock(mutex);
    return hints;
  }
};

// Records the hints given to a file in a HintLog; says whether the page
// cache holds a range by forwarding read_cached_at to the real file or not.
class HintRecordingFile final : public RandomAccessFile {
 public:
  HintRecordingFile(std::unique_ptr<RandomAccessFile> base, bool knows_cache,
                    std::shared_ptr<HintLog> log)
      : base_(std::move(base)), knows_cache_(knows_cache), log_(std::move(log)) {}
  const std::string& path() const override { return base_->path(); }
  uint64_t size() const override { return base_->size(); }
  int64_t read_at(void* dst, size_t bytes, uint64_t offset) override {
    return base_->read_at(dst, bytes, offset);
  }
  int64_t read_cached_at(void* dst, size_t bytes, uint64_t offset) override {
    return knows_cache_ ? base_->read_cached_at(dst, bytes, offset) : 0;
  }
  void advise_willneed(uint64_t offset, size_t bytes) override {
    std::lock_guard<std::mutex> lock(log_->mutex);
    log_->hints.emplace_back(offset, bytes);
  }

 private:
  std::unique_ptr<RandomAccessFile> base_;
  bool knows_cache_;
  std::shared_ptr<HintLog> log_;
};

// Reads `count` chunks of `chunk` bytes through a one-slot ring whose first
// read holds the slot until the rest are queued; returns the bytes read.
std::string read_through_one_slot(FileHandle& file, size_t chunk, int count) {
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  StagingRing ring(pinned, chunk, 1);
  std::string out(chunk * count, '\0');
  std::atomic<int> finished{0};
  std::promise<int> first;
  auto consume = [&](const StagedRead& r) {
    ASSERT_FALSE(r.error);
    std::memcpy(&out[r.offset], r.data, r.bytes);
    if (r.offset == 0) {
      first.set_value(r.slot);  // held until the others are queued
    } else {
      ring.release(r.slot);
    }
    ++finished;
  };
  ring.read(file, 0, chunk, consume);
  const int held = first.get_future().get();
  for (int i = 1; i < count; ++i) ring.read(file, uint64_t(i) * chunk, chunk, consume);
  ring.release(held);
  while (finished.load() < count) std::this_thread::yield();
  return out;
}

TEST_F(StagedReadTest, RingHintsQueuedRequestsInOrderWithinTheWindowWhileReadingFromDisk) {
  auto log = std::make_shared<HintLog>();
  auto recording = std::make_unique<HintRecordingFile>(open_random_access_file(path_), false, log);
  IoOptions io;
  const size_t chunk = 64 * 1024;
  io.readahead_bytes = 3 * chunk;
  IoThreadPool one_thread(1);  // hints and reads in the order they were posted
  {
    FileHandle file(std::move(recording), one_thread, io);
    EXPECT_EQ(read_through_one_slot(file, chunk, 8), contents_.substr(0, 8 * chunk));
    EXPECT_TRUE(file.reading_from_device());
  }
  // Every queued request once, in file order (requests queued together may
  // share a hint); the first read started in the free slot and needed none.
  const auto got = log->get();
  uint64_t next = chunk;
  for (const auto& [offset, bytes] : got) {
    EXPECT_EQ(offset, next);
    EXPECT_GT(bytes, 0u);
    next = offset + bytes;
  }
  EXPECT_EQ(next, 8 * chunk);
}

TEST_F(StagedReadTest, RingGivesNoHintsWhileTheFileIsInThePageCache) {
  auto log = std::make_shared<HintLog>();
  auto recording = std::make_unique<HintRecordingFile>(open_random_access_file(path_), true, log);
  std::string probe(4096, '\0');
  if (recording->read_cached_at(probe.data(), probe.size(), 0) <= 0) {
    GTEST_SKIP() << "this file system does not say what its page cache holds (RWF_NOWAIT)";
  }
  IoOptions io;
  io.readahead_bytes = size_t{1} << 20;
  IoThreadPool one_thread(1);
  {
    FileHandle file(std::move(recording), one_thread, io);
    EXPECT_EQ(read_through_one_slot(file, 64 * 1024, 8), contents_.substr(0, 8 * 64 * 1024));
    EXPECT_FALSE(file.reading_from_device());
  }
  EXPECT_TRUE(log->get().empty());
}

TEST_F(StagedReadTest, RingGivesNoHintsWithTheDefaultOptions) {
  auto log = std::make_shared<HintLog>();
  auto recording = std::make_unique<HintRecordingFile>(open_random_access_file(path_), false, log);
  {
    FileHandle file(std::move(recording), pool_);
    EXPECT_EQ(read_through_one_slot(file, 64 * 1024, 8), contents_.substr(0, 8 * 64 * 1024));
  }
  EXPECT_TRUE(log->get().empty());
}

TEST_F(StagedReadTest, AdviseWillneedSplitsALargeHintIntoPiecesTheKernelHonoursWhole) {
  auto log = std::make_shared<HintLog>();
  auto recording = std::make_unique<HintRecordingFile>(open_random_access_file(path_), false, log);
  {
    IoThreadPool one_thread(1);
    FileHandle file(std::move(recording), one_thread);
    file.advise_willneed(1000, 300 * 1024);
  }  // the pool ran the hint before joining
  const auto got = log->get();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], std::make_pair(uint64_t{1000}, size_t{128 * 1024}));
  EXPECT_EQ(got[1], std::make_pair(uint64_t{1000 + 128 * 1024}, size_t{128 * 1024}));
  EXPECT_EQ(got[2], std::make_pair(uint64_t{1000 + 256 * 1024}, size_t{44 * 1024}));
}

}  // namespace
}  // namespace stowage::mmap_store
