// SharedWeightCache across real processes (fork) on the simulated
// accelerator: build then attach with identical records, quantized records
// replayed exactly, a builder SIGKILLed mid-fill rebuilt by the next process,
// concurrent builders of one segment not both building, bad segments (foreign,
// another version, a corrupt header, a changed checkpoint), the last process
// out removing the segment, the host-wide budget, disk-homed records.
#include "hostcache/shared_weight_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "core/error.h"
#include "hostcache/cache_key.h"
#include "hostcache/catalog.h"
#include "hostcache/detail/segment_layout.h"
#include "hostcache/segment.h"
#include "mmap_store/checkpoint.h"
#include "models/testing/mlp_checkpoints.h"
#include "offload/disk_io.h"
#include "offload/loader.h"
#include "offload/planner.h"

namespace stowage::hostcache {
namespace {

namespace fs = std::filesystem;
using models::testing::TestFormat;

class SharedWeightCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Unique across runs: in Bazel's sandbox every run may have the same pid.
    prefix_ = "hcut" + std::to_string(std::random_device()()) + "x" + std::to_string(::getpid());
    dir_ = fs::path(::testing::TempDir()) / prefix_;
    fs::create_directories(dir_);
    model_ = (dir_ / "m.safetensors").string();
    write_model(1);
    platform_ = Platform::create(DeviceChoice::kSim);
  }
  void TearDown() override {
    for (const auto& entry : fs::directory_iterator("/dev/shm")) {
      if (entry.path().filename().string().rfind(prefix_, 0) == 0) fs::remove(entry.path());
    }
    fs::remove_all(dir_);
  }
  void write_model(uint32_t seed, const std::vector<int64_t>& widths = {64, 96, 80, 48}) {
    models::testing::write_safetensors(model_,
                                       models::testing::make_mlp(widths, TestFormat::kF32, seed));
  }
  SharedWeightCacheOptions options(bool keep = false) {
    SharedWeightCacheOptions o;
    o.prefix = prefix_;
    o.keep = keep;
    return o;
  }

  struct Loaded {
    std::unique_ptr<mmap_store::Checkpoint> checkpoint;
    std::unique_ptr<OffloadManager> manager;
    LoadedCheckpoint loaded;
  };
  // Everything on the pinned host tier (or, with `cpu_budget`, what fits
  // there and the rest on disk).
  Loaded load(HostTierStore* store, std::optional<LoadQuantization> q = std::nullopt,
              std::optional<uint64_t> cpu_budget = std::nullopt) {
    Loaded l;
    l.checkpoint = mmap_store::open_checkpoint(model_);
    OffloadOptions o;
    if (cpu_budget) o.disk_store = make_folder_disk_store((dir_ / "offload").string());
    l.manager = std::make_unique<OffloadManager>(*platform_, o);
    LoadOptions load;
    load.cpu = TierCapacity{Tier::pinned_host(), cpu_budget};
    if (cpu_budget) load.disk = TierCapacity{Tier::disk()};
    load.quantize = q;
    load.host_store = store;
    l.loaded = load_checkpoint(*l.checkpoint, *l.manager, load);
    return l;
  }
  // Every record of `a` has the same name, dtype, shape and bytes in `b`.
  static void expect_same_records(OffloadManager& a, OffloadManager& b) {
    ASSERT_EQ(a.table().size(), b.table().size());
    for (const std::string& module : a.table().modules()) {
      for (RecordId id : a.table().records_of(module)) {
        const TensorRecord r = a.table().get(id);
        const auto other = b.table().find(module, r.name);
        ASSERT_TRUE(other.has_value()) << module << "." << r.name;
        const TensorRecord s = b.table().get(*other);
        EXPECT_EQ(r.dtype, s.dtype);
        EXPECT_EQ(r.shape, s.shape);
        EXPECT_EQ(r.role, s.role);
        EXPECT_EQ(r.quant_parts.size(), s.quant_parts.size());
        Tensor x = a.read_to_host(module, r.name), y = b.read_to_host(module, r.name);
        ASSERT_EQ(x.bytes(), y.bytes());
        EXPECT_EQ(0, std::memcmp(x.data(), y.data(), x.bytes())) << module << "." << r.name;
      }
    }
  }
  std::string segment_name() {
    auto checkpoint = mmap_store::open_checkpoint(model_);
    return prefix_ + "-" + make_cache_key(*checkpoint, recipe_of("mlp", std::nullopt)).id;
  }
  SegmentListing only_segment() {
    auto list = list_segments(prefix_);
    EXPECT_EQ(list.size(), 1u);
    return list.empty() ? SegmentListing{} : list[0];
  }
  // Runs `body` in a child process; returns its wait status.
  static int in_child(const std::function<void()>& body) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      try {
        body();
      } catch (...) {
        ::_exit(3);
      }
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  }

  std::string prefix_;
  fs::path dir_;
  std::string model_;
  std::unique_ptr<Platform> platform_;
};

TEST_F(SharedWeightCacheTest, ASecondLoadAttachesToTheFirstsSegmentWithTheSameRecords) {
  SharedWeightCache first(*platform_, options()), second(*platform_, options());
  Loaded a = load(&first);
  EXPECT_EQ(first.last_load().action, "built");
  Loaded b = load(&second);
  EXPECT_EQ(second.last_load().action, "attached");
  EXPECT_EQ(second.last_load().segment, segment_name());
  expect_same_records(*a.manager, *b.manager);
  Loaded plain = load(nullptr);
  expect_same_records(*plain.manager, *b.manager);
  // The host records are the segment's bytes, not the manager's pinned memory.
  EXPECT_EQ(b.manager->usage(Tier::pinned_host()).bytes_in_use, 0u);
  EXPECT_GT(plain.manager->usage(Tier::pinned_host()).bytes_in_use, 0u);
  const SegmentListing s = only_segment();
  EXPECT_EQ(s.state, "ready");
  const uint64_t host = b.manager->table().bytes_on(Tier::pinned_host());
  EXPECT_GE(s.bytes, host);  // records at 256-byte alignment
  EXPECT_LT(s.bytes, host + 256 * b.manager->table().size());
  EXPECT_EQ(s.attached.size(), 2u);  // this process, twice (two caches)
}

TEST_F(SharedWeightCacheTest, QuantizedRecordsAreStoredOnceAndReplayedExactly) {
  LoadQuantization q;
  q.method = quant::WeightFormat::kNf4;
  q.double_quant = true;
  q.on_host = true;
  SharedWeightCache first(*platform_, options()), second(*platform_, options());
  Loaded a = load(&first, q);
  Loaded b = load(&second, q);
  EXPECT_EQ(second.last_load().action, "attached");
  expect_same_records(*a.manager, *b.manager);
  EXPECT_EQ(a.loaded.bytes, b.loaded.bytes);
  // Another recipe is another segment.
  SharedWeightCache third(*platform_, options());
  Loaded c = load(&third);
  EXPECT_EQ(third.last_load().action, "built");
  EXPECT_EQ(list_segments(prefix_).size(), 2u);
}

TEST_F(SharedWeightCacheTest, ABuilderKilledMidFillIsNeverAttachedAndTheNextProcessRebuilds) {
  const int status = in_child([&] {
    auto platform = Platform::create(DeviceChoice::kSim);
    SharedWeightCache cache(*platform, options());
    auto checkpoint = mmap_store::open_checkpoint(model_);
    std::vector<std::string> order;
    std::vector<PlanModule> modules = plan_modules(*checkpoint, &order);
    LoadOptions load;
    auto build = cache.begin_load(*checkpoint, load, modules);
    const std::string first = checkpoint->names()[0];
    build->keep({"layers.0", "weight", TensorRole::kWeight, "", ""}, checkpoint->tensor(first));
    ::kill(::getpid(), SIGKILL);  // mid-fill: one record of many written
  });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  EXPECT_EQ(only_segment().state, "abandoned");
  EXPECT_TRUE(only_segment().stale);
  SharedWeightCache cache(*platform_, options());
  Loaded b = load(&cache);
  EXPECT_EQ(cache.last_load().action, "built");
  Loaded plain = load(nullptr);
  expect_same_records(*plain.manager, *b.manager);
  EXPECT_EQ(only_segment().state, "ready");
}

TEST_F(SharedWeightCacheTest, ConcurrentBuildersOfOneSegmentDoNotBothBuild) {
  int results[2], release[2];
  ASSERT_EQ(::pipe(results), 0);
  ASSERT_EQ(::pipe(release), 0);
  std::vector<pid_t> children;
  for (int i = 0; i < 2; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      {
        auto platform = Platform::create(DeviceChoice::kSim);
        SharedWeightCache cache(*platform, options());
        Loaded l;
        l.checkpoint = mmap_store::open_checkpoint(model_);
        l.manager = std::make_unique<OffloadManager>(*platform, OffloadOptions{});
        LoadOptions load;
        load.cpu = TierCapacity{Tier::pinned_host()};
        load.host_store = &cache;
        load_checkpoint(*l.checkpoint, *l.manager, load);
        const char action = cache.last_load().action[0];  // 'b' or 'a'
        (void)!::write(results[1], &action, 1);
        char go;
        (void)!::read(release[0], &go, 1);  // stay attached until both reported
      }  // leaves the segment
      ::_exit(0);
    }
    children.push_back(pid);
  }
  std::string actions(2, ' ');
  ASSERT_EQ(::read(results[0], &actions[0], 1), 1);
  ASSERT_EQ(::read(results[0], &actions[1], 1), 1);
  std::sort(actions.begin(), actions.end());
  EXPECT_EQ(actions, "ab");  // one built, the other waited and attached
  EXPECT_EQ(only_segment().attached.size(), 2u);
  (void)!::write(release[1], "gg", 2);
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_TRUE(segment_names(prefix_).empty());  // the last one out removed it
  EXPECT_FALSE(fs::exists(Segment::lock_path_of(segment_name())));
}

TEST_F(SharedWeightCacheTest, AForeignObjectOfTheSameNameIsAnErrorAndLeftAlone) {
  const std::string path = Segment::path_of(segment_name());
  { std::ofstream(path) << std::string(100000, 'z'); }
  SharedWeightCache cache(*platform_, options());
  try {
    load(&cache);
    FAIL() << "attached to a foreign segment";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("not a Stowage weight segment"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(only_segment().state, "foreign");
}

TEST_F(SharedWeightCacheTest, ASegmentOfAnotherLayoutVersionIsAnError) {
  {
    SharedWeightCache keep(*platform_, options(true));
    load(&keep);
  }
  const std::string path = Segment::path_of(segment_name());
  const int fd = ::open(path.c_str(), O_RDWR);
  const uint32_t version = detail::kLayoutVersion + 1;
  ASSERT_EQ(::pwrite(fd, &version, 4, offsetof(detail::SegmentHeader, version)), 4);
  ::close(fd);
  SharedWeightCache cache(*platform_, options());
  try {
    load(&cache);
    FAIL() << "attached to a segment of another version";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("layout version"), std::string::npos) << e.what();
  }
  EXPECT_EQ(only_segment().state, "other-version");
}

TEST_F(SharedWeightCacheTest, ACorruptHeaderOrDirectoryIsRebuiltNeverAttached) {
  for (size_t offset : {offsetof(detail::SegmentHeader, key) + 3,
                        offsetof(detail::SegmentHeader, data_bytes),
                        size_t{detail::kHeaderBytes} + 20}) {  // the directory
    {
      SharedWeightCache keep(*platform_, options(true));
      load(&keep);
    }
    const int fd = ::open(Segment::path_of(segment_name()).c_str(), O_RDWR);
    char byte = 0;
    ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
    byte ^= 0x5a;
    ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
    EXPECT_EQ(only_segment().state, "corrupt") << offset;
    SharedWeightCache cache(*platform_, options());
    Loaded b = load(&cache);
    EXPECT_EQ(cache.last_load().action, "built") << offset;
    Loaded plain = load(nullptr);
    expect_same_records(*plain.manager, *b.manager);
  }
}

TEST_F(SharedWeightCacheTest, AChangedCheckpointNeverMeetsItsOldSegment) {
  {
    SharedWeightCache keep(*platform_, options(true));
    load(&keep);
  }
  const std::string old_name = segment_name();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_model(2);  // other weights, same names and shapes
  SharedWeightCache cache(*platform_, options());
  Loaded b = load(&cache);
  EXPECT_EQ(cache.last_load().action, "built");
  EXPECT_NE(cache.last_load().segment, old_name);
  Loaded plain = load(nullptr);
  expect_same_records(*plain.manager, *b.manager);
  // The old one is stale (its file changed, nobody attached): --stale drops it only.
  EXPECT_EQ(drop_segments(prefix_, DropSelection::kStale), std::vector<std::string>{old_name});
  EXPECT_EQ(only_segment().name, segment_name());
}

TEST_F(SharedWeightCacheTest, TheLastProcessOutRemovesTheSegmentUnlessKept) {
  {
    SharedWeightCache cache(*platform_, options());
    Loaded a = load(&cache);
    EXPECT_EQ(segment_names(prefix_).size(), 1u);
  }
  EXPECT_TRUE(segment_names(prefix_).empty());
  EXPECT_FALSE(fs::exists(Segment::lock_path_of(segment_name())));
  {
    SharedWeightCache cache(*platform_, options(true));
    Loaded a = load(&cache);
  }
  EXPECT_EQ(only_segment().state, "ready");
  EXPECT_TRUE(only_segment().keep);
  EXPECT_TRUE(only_segment().attached.empty());
  EXPECT_FALSE(only_segment().stale);  // kept, and its checkpoint is unchanged
}

TEST_F(SharedWeightCacheTest, TheHostWideBudgetRefusesASegmentThatDoesNotFit) {
  SharedWeightCacheOptions o = options();
  o.pinned_budget_bytes = 1024;
  SharedWeightCache cache(*platform_, o);
  EXPECT_THROW(load(&cache), OutOfBudgetError);
  EXPECT_TRUE(segment_names(prefix_).empty());
  EXPECT_FALSE(fs::exists(Segment::lock_path_of(segment_name())));
  EXPECT_FALSE(fs::exists(Segment::path_of(prefix_ + ".budget.lock")));
}

TEST_F(SharedWeightCacheTest, DiskHomedRecordsStayOnDiskAndOutOfTheSegment) {
  SharedWeightCache first(*platform_, options()), second(*platform_, options());
  write_model(3, {1024, 1024, 1024, 1024});  // 4 MiB a layer
  // The disk staging buffer and layer 0 only.
  const uint64_t room = kDefaultDiskStagingBytes + 1024 * 1024 * 4 + 1024 * 4 + 1024;
  Loaded a = load(&first, std::nullopt, room);
  Loaded b = load(&second, std::nullopt, room);
  EXPECT_EQ(second.last_load().action, "attached");
  EXPECT_GT(b.manager->table().bytes_on(Tier::disk()), 0u);
  const uint64_t host = b.manager->table().bytes_on(Tier::pinned_host());
  EXPECT_GT(host, 0u);
  EXPECT_GE(only_segment().bytes, host);
  EXPECT_LT(only_segment().bytes, host + 256 * 4);
  Loaded plain = load(nullptr);
  expect_same_records(*plain.manager, *b.manager);
}

}  // namespace
}  // namespace stowage::hostcache
