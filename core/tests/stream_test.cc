// One specification of streams and events, run over every backend present:
// the simulated accelerator always, CUDA where a GPU is visible.
#include <gtest/gtest.h>

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "core/tests/accelerator_spec.h"

namespace stowage {
namespace {

class StreamSpec : public testing_support::AcceleratorSpec {};

TEST_P(StreamSpec, HostTasksRunInEnqueueOrder) {
  Stream stream = accelerator().create_stream();
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) stream.ref().host_task([&order, i] { order.push_back(i); });
  stream.synchronize();
  std::vector<int> expected(100);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(order, expected);
}

TEST_P(StreamSpec, CrossStreamWaitOrdersWorkUnderConcurrency) {
  Stream producer = accelerator().create_stream();
  Stream consumer = accelerator().create_stream();
  Event produced = accelerator().create_event();
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> value{0};
    std::atomic<int> seen{-1};
    producer.ref().host_task([&value, round] {
      if (round % 10 == 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
      value.store(round + 1);
    });
    producer.ref().record(produced);
    consumer.ref().wait(produced);
    consumer.ref().host_task([&value, &seen] { seen.store(value.load()); });
    consumer.synchronize();
    ASSERT_EQ(seen.load(), round + 1) << "round " << round;
  }
  producer.synchronize();
}

TEST_P(StreamSpec, WaitCapturesTheRecordAtCallTime) {
  Stream a = accelerator().create_stream();
  Stream b = accelerator().create_stream();
  Event e = accelerator().create_event();
  std::atomic<bool> release_first{false};
  std::atomic<int> stage{0};
  a.ref().host_task([&] {
    while (!release_first.load()) std::this_thread::yield();
    stage.store(1);
  });
  a.ref().record(e);
  b.ref().wait(e);
  std::atomic<int> seen{-1};
  b.ref().host_task([&] { seen.store(stage.load()); });
  EXPECT_FALSE(e.ready());
  release_first.store(true);
  b.synchronize();
  EXPECT_EQ(seen.load(), 1);
  EXPECT_TRUE(e.ready());
}

TEST_P(StreamSpec, UnrecordedEventIsReadyAndWaitingOnItIsANoOp) {
  Stream s = accelerator().create_stream();
  Event e = accelerator().create_event();
  EXPECT_TRUE(e.ready());
  s.ref().wait(e);
  s.synchronize();
}

TEST_P(StreamSpec, CopiesRoundTripHostDeviceHostByteExact) {
  Stream s = accelerator().create_stream();
  const size_t bytes = (1 << 20) + 13;
  Buffer host_in(platform_->pinned_host_memory(), bytes);
  Buffer device(accelerator().memory(), bytes, s);
  Buffer host_out(platform_->pinned_host_memory(), bytes);
  auto* in = static_cast<unsigned char*>(host_in.data());
  for (size_t i = 0; i < bytes; ++i) in[i] = static_cast<unsigned char>(i * 131 + 7);
  std::memset(host_out.data(), 0, bytes);
  s.ref().copy(device.data(), host_in.data(), bytes);
  s.ref().copy(host_out.data(), device.data(), bytes);
  s.synchronize();
  EXPECT_EQ(std::memcmp(host_in.data(), host_out.data(), bytes), 0);
  device.reset(s);
  s.synchronize();
}

TEST_P(StreamSpec, FillZeroClearsDeviceMemory) {
  Stream s = accelerator().create_stream();
  const size_t bytes = 4096;
  Buffer host(platform_->pinned_host_memory(), bytes);
  Buffer device(accelerator().memory(), bytes, s);
  std::memset(host.data(), 0xab, bytes);
  s.ref().copy(device.data(), host.data(), bytes);
  s.ref().fill_zero(device.data(), bytes);
  s.ref().copy(host.data(), device.data(), bytes);
  s.synchronize();
  std::vector<unsigned char> zeros(bytes, 0);
  EXPECT_EQ(std::memcmp(host.data(), zeros.data(), bytes), 0);
}

TEST_P(StreamSpec, TaskErrorSurfacesAtSynchronizeAndLaterWorkStillRuns) {
  Stream s = accelerator().create_stream();
  std::atomic<bool> later{false};
  s.ref().host_task([] { throw IoError("injected failure in a stream task"); });
  s.ref().host_task([&] { later.store(true); });
  try {
    s.synchronize();
    FAIL() << "expected the task's error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos);
  }
  EXPECT_TRUE(later.load());
  s.synchronize();  // the error was cleared
}

TEST_P(StreamSpec, StreamOrderedFreeReturnsDeviceBytes) {
  Stream s = accelerator().create_stream();
  StatisticsAdaptor stats(accelerator().memory());
  for (int i = 0; i < 100; ++i) {
    Buffer b(stats, 1 << 16, s);
    s.ref().fill_zero(b.data(), 1 << 16);
  }
  s.synchronize();
  EXPECT_EQ(stats.bytes_in_use(), 0u);
  EXPECT_EQ(stats.allocation_count(), 100u);
}

TEST_P(StreamSpec, EventsMeasureElapsedTime) {
  Stream s = accelerator().create_stream();
  Event start = accelerator().create_event();
  Event end = accelerator().create_event();
  s.ref().record(start);
  s.ref().host_task([] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); });
  s.ref().record(end);
  end.synchronize();
  EXPECT_GE(Event::elapsed_ms(start, end), 15.0f);
}

// Accelerator::set_host_wait(kSleep): waits still cover all the work and
// surface task errors, and the waiting thread sleeps instead of spinning
// (its own CPU time stays well under the wait), so host threads keep every
// core. Back to kSpin, the same streams and events still wait correctly.
TEST_P(StreamSpec, SleepingWaitsWaitForTheWorkWithoutSpinning) {
  Stream s = accelerator().create_stream();
  Event done = accelerator().create_event();
  auto thread_cpu_ms = [] {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return 1e3 * static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_nsec);
  };
  accelerator().set_host_wait(Accelerator::HostWait::kSleep);
  for (int round = 0; round < 2; ++round) {
    std::atomic<bool> ran{false};
    s.ref().host_task([&ran] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ran.store(true);
    });
    s.ref().record(done);
    const double cpu_before = thread_cpu_ms();
    const auto wall_before = std::chrono::steady_clock::now();
    if (round == 0) {
      done.synchronize();
    } else {
      s.synchronize();
    }
    const double wall_ms = std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - wall_before)
                               .count();
    EXPECT_TRUE(ran.load()) << "round " << round;
    EXPECT_GE(wall_ms, 50.0) << "round " << round;
    EXPECT_LT(thread_cpu_ms() - cpu_before, 0.5 * wall_ms)
        << "round " << round << ": the waiting thread spun";
  }
  s.ref().host_task([] { throw IoError("injected failure under a sleeping wait"); });
  EXPECT_THROW(s.synchronize(), IoError);
  accelerator().set_host_wait(Accelerator::HostWait::kSpin);
  std::atomic<bool> ran{false};
  s.ref().host_task([&ran] { ran.store(true); });
  s.ref().record(done);
  done.synchronize();
  EXPECT_TRUE(ran.load());
  s.synchronize();
}

TEST_P(StreamSpec, DeviceOutOfMemoryIsATypedError) {
  EXPECT_THROW(accelerator().memory().allocate(accelerator().total_bytes() * 2), OutOfMemoryError);
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamSpec, testing_support::kAllBackends,
                         testing_support::backend_name);

TEST(SimStreamTest, ThrottledCopyTakesBytesOverRate) {
  SimOptions options;
  options.copy_bytes_per_second = 100e6;  // 100 MB/s: 2 MB take >= 20 ms
  auto platform = Platform::create(DeviceChoice::kSim, options);
  Accelerator& sim = platform->accelerator(0);
  Stream s = sim.create_stream();
  Buffer host(platform->pinned_host_memory(), 2000000);
  Buffer device(sim.memory(), 2000000);
  const auto start = std::chrono::steady_clock::now();
  s.ref().copy(device.data(), host.data(), 2000000);
  s.synchronize();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(19));
}

TEST(SimStreamTest, CopiesOnTwoStreamsOverlap) {
  SimOptions options;
  options.copy_bytes_per_second = 100e6;
  auto platform = Platform::create(DeviceChoice::kSim, options);
  Accelerator& sim = platform->accelerator(0);
  Stream a = sim.create_stream();
  Stream b = sim.create_stream();
  Buffer host(platform->pinned_host_memory(), 3000000);
  Buffer device(sim.memory(), 6000000);
  const auto start = std::chrono::steady_clock::now();
  a.ref().copy(device.data(), host.data(), 3000000);                                // 30 ms
  b.ref().copy(static_cast<char*>(device.data()) + 3000000, host.data(), 3000000);  // 30 ms
  a.synchronize();
  b.synchronize();
  // Run in sequence they would take 60 ms; concurrent streams finish well before.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(55));
}

TEST(SimPlatformTest, SimAcceleratorEnforcesItsCapacity) {
  SimOptions options;
  options.memory_bytes = 1 << 20;
  options.accelerator_count = 2;
  auto platform = Platform::create(DeviceChoice::kSim, options);
  EXPECT_EQ(platform->accelerator_count(), 2);
  EXPECT_EQ(platform->accelerator(1).tier().to_string(), "sim:1");
  Buffer a(platform->accelerator(0).memory(), 1 << 19);
  EXPECT_EQ(platform->accelerator(0).free_bytes(), 1u << 19);
  try {
    Buffer b(platform->accelerator(0).memory(), 1 << 20);
    FAIL();
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("sim:0"), std::string::npos);
  }
  EXPECT_THROW(platform->accelerator(2), InvalidInputError);
}

TEST(PlatformTest, AutoPicksCudaExactlyWhenAGpuIsVisible) {
  auto platform = Platform::create(DeviceChoice::kAuto);
  EXPECT_EQ(platform->backend(), cuda_device_available() ? Backend::kCuda : Backend::kSim);
  if (!cuda_device_available()) {
    EXPECT_THROW(Platform::create(DeviceChoice::kCuda), DeviceError);
  }
  EXPECT_EQ(parse_device_choice("sim"), DeviceChoice::kSim);
  EXPECT_THROW(parse_device_choice("gpu"), InvalidInputError);
}

}  // namespace
}  // namespace stowage
