#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/huge_page_memory.h"
#include "core/memory_resource.h"
#include "core/platform.h"
#include "core/tensor.h"
#include "core/tests/accelerator_spec.h"

namespace stowage {
namespace {

TEST(BufferTest, OwnsBytesAndFreesOnDestruction) {
  HostMemoryResource host;
  StatisticsAdaptor stats(host);
  {
    Buffer buffer(stats, 1000);
    EXPECT_NE(buffer.data(), nullptr);
    EXPECT_EQ(buffer.size(), 1000u);
    EXPECT_EQ(buffer.tier(), Tier::pageable_host());
    EXPECT_EQ(stats.bytes_in_use(), 1000u);
  }
  EXPECT_EQ(stats.bytes_in_use(), 0u);
  EXPECT_EQ(stats.peak_bytes(), 1000u);
}

TEST(BufferTest, MoveTransfersOwnershipOnce) {
  HostMemoryResource host;
  StatisticsAdaptor stats(host);
  Buffer a(stats, 64);
  void* p = a.data();
  Buffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT: checking the moved-from state
  EXPECT_EQ(a.size(), 0u);
  Buffer c(stats, 32);
  c = std::move(b);  // frees c's old 32 bytes
  EXPECT_EQ(stats.bytes_in_use(), 64u);
  c.reset();
  EXPECT_EQ(stats.bytes_in_use(), 0u);
}

TEST(BufferTest, AdoptedMemoryRunsItsRelease) {
  int released = 0;
  char storage[16];
  {
    Buffer b = Buffer::adopt(storage, sizeof(storage), Tier::disk(), [&] { ++released; });
    EXPECT_EQ(b.tier(), Tier::disk());
    Buffer moved(std::move(b));
  }
  EXPECT_EQ(released, 1);
}

TEST(BudgetTest, AllocationPastBudgetNamesResourceAskedBudgetAndInUse) {
  HostMemoryResource host;
  BudgetAdaptor budget(host, 1000, "sim:0 budget");
  Buffer a(budget, 600);
  try {
    Buffer b(budget, 500);
    FAIL() << "expected OutOfBudgetError";
  } catch (const OutOfBudgetError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("sim:0 budget"), std::string::npos) << message;
    EXPECT_NE(message.find("500 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("budget of 1000"), std::string::npos) << message;
    EXPECT_NE(message.find("600 bytes in use"), std::string::npos) << message;
    EXPECT_EQ(e.kind(), ErrorKind::kOutOfBudget);
  }
  EXPECT_EQ(budget.bytes_in_use(), 600u);
  Buffer c(budget, 400);  // exactly fills the budget
  EXPECT_EQ(budget.bytes_available(), 0u);
}

TEST(BudgetTest, AdaptorsCompose) {
  HostMemoryResource host;
  StatisticsAdaptor stats(host);
  BudgetAdaptor budget(stats, 100);
  StatisticsAdaptor outer(budget);
  { Buffer a(outer, 100); }
  EXPECT_THROW(Buffer(outer, 101), OutOfBudgetError);
  EXPECT_EQ(stats.peak_bytes(), 100u);
  EXPECT_EQ(outer.bytes_in_use(), 0u);
}

// Eight threads each allocate 128-byte buffers, holding them, until the
// budget refuses one, then release all and start again: every round drives
// the budget to its limit, so refusals happen and the peak is exactly the
// budget, never above it, however the threads interleave.
TEST(BudgetTest, ConcurrentAllocationsNeverExceedBudget) {
  HostMemoryResource host;
  BudgetAdaptor budget(host, 10 * 128);
  StatisticsAdaptor stats(budget);
  std::vector<std::thread> threads;
  std::atomic<int> refused{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {
        std::vector<Buffer> held;
        try {
          for (;;) {
            held.emplace_back(stats, 128);
            std::memset(held.back().data(), 1, 128);
          }
        } catch (const OutOfBudgetError&) {
          ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(refused.load(), 8 * 200);
  EXPECT_EQ(stats.peak_bytes(), 10u * 128);
  EXPECT_EQ(budget.bytes_in_use(), 0u);
}

TEST(FaultInjectionTest, FailsChosenAllocationsAsOutOfMemory) {
  HostMemoryResource host;
  FaultInjectionAdaptor faulty(host, [](uint64_t ordinal, size_t) { return ordinal == 1; });
  Buffer a(faulty, 10);
  EXPECT_THROW(Buffer(faulty, 10), OutOfMemoryError);
  Buffer c(faulty, 10);
  EXPECT_EQ(faulty.injected_failures(), 1u);
}

// The device's own view of its memory (what tests check the managers'
// accounting against), on sim and, where a GPU is visible, on CUDA.
class DevicePoolTest : public testing_support::AcceleratorSpec {};

TEST_P(DevicePoolTest, PoolUsageCountsAllocationsAndTheirHighWatermark) {
  Accelerator& device = accelerator();
  device.release_cached_memory();
  const DevicePoolUsage before = device.pool_usage();
  device.reset_pool_high_watermarks();
  const uint64_t bytes = uint64_t{48} << 20;
  {
    Buffer a(device.memory(), bytes);
    const DevicePoolUsage during = device.pool_usage();
    EXPECT_GE(during.used_bytes, before.used_bytes + bytes);
    EXPECT_GE(during.reserved_bytes, during.used_bytes);
  }
  device.release_cached_memory();
  const DevicePoolUsage after = device.pool_usage();
  EXPECT_EQ(after.used_bytes, before.used_bytes) << "the buffer went back to the pool";
  EXPECT_GE(after.used_high_bytes, before.used_bytes + bytes) << "the watermark remembers it";
  device.reset_pool_high_watermarks();
  EXPECT_LT(device.pool_usage().used_high_bytes, before.used_bytes + bytes);
}

// cudaMallocAsync's pool keeps freed memory for reuse, so cudaMemGetInfo
// does not rise on a free; after release_cached_memory it does.
TEST_P(DevicePoolTest, ReleasingCachedMemoryGivesFreedBytesBackToTheDevice) {
  Accelerator& device = accelerator();
  device.release_cached_memory();
  const uint64_t baseline = device.free_bytes();
  const uint64_t bytes = uint64_t{64} << 20;
  {
    Buffer a(device.memory(), bytes);
    EXPECT_LE(device.free_bytes() + bytes, baseline + 2 * kDevicePoolPageBytes);
  }
  device.release_cached_memory();
  EXPECT_GE(device.free_bytes() + 2 * kDevicePoolPageBytes, baseline);
}

INSTANTIATE_TEST_SUITE_P(Backends, DevicePoolTest, testing_support::kAllBackends,
                         testing_support::backend_name);

// A huge-page mapping: the bytes asked for rounded up to 2 MiB, aligned to
// 2 MiB, zero-filled and writable; advised where the kernel has transparent
// huge pages at all (the sysfs switch present and not "[never]").
TEST(HugePageMappingTest, MapsAlignedZeroedMemoryAndAdvisesHugePages) {
  const size_t bytes = (size_t{9} << 20) + 123;
  HugePageMapping m(bytes);
  ASSERT_NE(m.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.data()) % HugePageMapping::kHugePageBytes, 0u);
  EXPECT_EQ(m.bytes(), size_t{10} << 20);
  auto* p = static_cast<unsigned char*>(m.data());
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[bytes - 1], 0);
  p[0] = 7;
  p[m.bytes() - 1] = 9;
  EXPECT_EQ(p[0] + p[m.bytes() - 1], 16);
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (thp && std::getline(thp, modes) && modes.find("[never]") == std::string::npos) {
    EXPECT_TRUE(m.advised()) << modes;
  }
  HugePageMapping moved = std::move(m);
  EXPECT_EQ(m.data(), nullptr);
  EXPECT_EQ(static_cast<unsigned char*>(moved.data())[0], 7);
  EXPECT_THROW(HugePageMapping(0), InvalidInputError);
}

// Pinned host memory on every backend: large allocations are huge-page
// mappings (2 MiB aligned; on CUDA registered with the driver, falling back
// to cudaHostAlloc where it refuses), small ones are not, and copies between
// it and the accelerator move the bytes both ways.
class PinnedHostMemoryTest : public testing_support::AcceleratorSpec {};

TEST_P(PinnedHostMemoryTest, LargeAllocationsAreHugePageAlignedAndCopyBothWays) {
  MemoryResource& pinned = platform_->pinned_host_memory();
  const size_t bytes = kHugePageMinBytes + 4096;
  Buffer host(pinned, bytes);
  if (GetParam() == DeviceChoice::kSim) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(host.data()) % HugePageMapping::kHugePageBytes, 0u);
  }
  auto* h = static_cast<unsigned char*>(host.data());
  for (size_t i = 0; i < bytes; i += 4093) h[i] = static_cast<unsigned char>(i * 31 + 5);
  Buffer device(accelerator().memory(), bytes);
  Buffer back(pinned, bytes);
  Stream stream = accelerator().create_stream();
  stream.ref().copy(device.data(), host.data(), bytes);
  stream.ref().copy(back.data(), device.data(), bytes);
  stream.ref().synchronize();
  EXPECT_EQ(std::memcmp(back.data(), host.data(), bytes), 0);
  Buffer small(pinned, 1000);
  EXPECT_NE(small.data(), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Backends, PinnedHostMemoryTest, testing_support::kAllBackends,
                         testing_support::backend_name);

TEST(TensorTest, ViewsShareStorageAndCheckBounds) {
  HostMemoryResource host;
  Tensor t = Tensor::empty(host, DType::kF16, Shape{3, 5});
  EXPECT_EQ(t.bytes(), 30u);
  EXPECT_EQ(t.numel(), 15u);
  Tensor second = Tensor::from_storage(t.storage(), 10, DType::kF16, Shape{5});
  EXPECT_EQ(second.data_as<char>(), t.data_as<char>() + 10);
  EXPECT_THROW(Tensor::from_storage(t.storage(), 22, DType::kF16, Shape{5}), InvalidInputError);
  EXPECT_THROW(Tensor::empty(host, DType::kF32, Shape{-1}), InvalidInputError);
  Tensor packed = Tensor::empty(host, DType::kPacked4, Shape{7});
  EXPECT_EQ(packed.bytes(), 4u);
}

TEST(ShapeTest, CheckedNumelRejectsNegativeAndOverflow) {
  EXPECT_EQ(Shape{}.checked_numel(), 1u);
  EXPECT_EQ((Shape{2, 0, 5}.checked_numel()), 0u);
  EXPECT_FALSE((Shape{-1, 2}.checked_numel()).has_value());
  EXPECT_FALSE((Shape{int64_t{1} << 32, int64_t{1} << 32}.checked_numel()).has_value());
  EXPECT_EQ((Shape{4096, 4096}.to_string()), "[4096, 4096]");
}

// Issue #15 item 1: an activation size of 1 x 2^62 x 4 bytes wrapped to 0
// and `run` wrote through the null buffer it got; sizes from untrusted
// extents are computed by these and fail instead.
TEST(ShapeTest, CheckedProductAndSumFailInsteadOfWrapping) {
  EXPECT_EQ(checked_product({3, 5, 7}), 105u);
  EXPECT_EQ(checked_product({uint64_t{1} << 62, 0, 4}), 0u);  // a zero extent sizes nothing
  EXPECT_EQ(checked_product({uint64_t{1} << 60, 4}), kMaxCheckedSize);
  EXPECT_FALSE(checked_product({1, uint64_t{1} << 62, 4}).has_value());
  EXPECT_FALSE(checked_product({uint64_t{1} << 32, uint64_t{1} << 32}).has_value());
  EXPECT_EQ(checked_sum({1, 2, 3}), 6u);
  EXPECT_EQ(checked_sum({kMaxCheckedSize - 1, 1}), kMaxCheckedSize);
  EXPECT_FALSE(checked_sum({kMaxCheckedSize, 1}).has_value());
  EXPECT_FALSE(checked_sum({UINT64_MAX, 1}).has_value());
}

TEST(SizeTest, ParsesCliSizes) {
  EXPECT_EQ(parse_byte_size("123"), 123u);
  EXPECT_EQ(parse_byte_size("64KiB"), 64u * 1024);
  EXPECT_EQ(parse_byte_size("512mib"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("1.5GB"), 1500000000ull);
  EXPECT_EQ(parse_byte_size("500MB"), 500000000ull);
  EXPECT_THROW(parse_byte_size("12XB"), InvalidInputError);
  EXPECT_THROW(parse_byte_size(""), InvalidInputError);
  EXPECT_THROW(parse_byte_size("-5"), InvalidInputError);
  EXPECT_THROW(parse_byte_size("1.5"), InvalidInputError);
}

TEST(TierTest, ParsesAndPrints) {
  for (const char* text : {"cuda:0", "sim:3", "cpu", "host", "disk"}) {
    auto tier = Tier::parse(text);
    ASSERT_TRUE(tier.has_value()) << text;
    EXPECT_EQ(tier->to_string(), text);
  }
  EXPECT_FALSE(Tier::parse("cuda:x").has_value());
  EXPECT_FALSE(Tier::parse("gpu").has_value());
  EXPECT_NE(Tier::accelerator(Backend::kSim, 0), Tier::accelerator(Backend::kCuda, 0));
}

}  // namespace
}  // namespace stowage
