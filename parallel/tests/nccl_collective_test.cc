// The collective between CUDA devices (NCCL): skips where the GPUs it needs
// are not visible (CI and the build host have none), or the build has no
// NCCL.
#include <gtest/gtest.h>

#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "parallel/collective.h"
#include "parallel/rank_threads.h"

namespace stowage::parallel {
namespace {

std::unique_ptr<Platform> two_gpus() {
  if (!cuda_device_available()) return nullptr;
  auto platform = Platform::create(DeviceChoice::kCuda);
  return platform->accelerator_count() >= 2 ? std::move(platform) : nullptr;
}

TEST(NcclCollective, AOneGpuGroupReducesToItself) {
  if (!cuda_device_available()) GTEST_SKIP() << "needs a CUDA GPU";
  if (!nccl_available()) GTEST_SKIP() << "this build has no NCCL";
  auto platform = Platform::create(DeviceChoice::kCuda);
  auto group = make_collective_group(*platform, {0});
  EXPECT_EQ(group->description().rfind("NCCL ", 0), 0u) << group->description();
  Accelerator& acc = platform->accelerator(0);
  Stream stream = acc.create_stream();
  const size_t n = 4096;
  Buffer device(acc.memory(), n * sizeof(float), stream.ref());
  std::vector<float> host(n, 1.5f), out(n);
  stream.ref().copy(device.data(), host.data(), n * sizeof(float));
  group->rank(0).all_reduce_sum(stream.ref(), static_cast<float*>(device.data()), n);
  stream.ref().copy(out.data(), device.data(), n * sizeof(float));
  stream.synchronize();
  EXPECT_EQ(out, host);
  group->abort("the test is done");
  EXPECT_THROW(group->rank(0).all_reduce_sum(stream.ref(), static_cast<float*>(device.data()), n),
               DeviceError);
}

TEST(NcclCollective, AllReduceGivesEveryGpuTheSum) {
  auto platform = two_gpus();
  if (!platform) GTEST_SKIP() << "needs 2 CUDA GPUs";
  if (!nccl_available()) GTEST_SKIP() << "this build has no NCCL";
  auto group = make_collective_group(*platform, {0, 1});
  const size_t n = 1 << 20;
  std::vector<std::vector<float>> out(2, std::vector<float>(n));
  run_on_ranks({"cuda:0", "cuda:1"}, group.get(), [&](int r) {
    Accelerator& acc = platform->accelerator(r);
    acc.make_current();
    Stream stream = acc.create_stream();
    Buffer device(acc.memory(), n * sizeof(float), stream.ref());
    std::vector<float> host(n, static_cast<float>(r + 1));
    stream.ref().copy(device.data(), host.data(), n * sizeof(float));
    group->rank(r).all_reduce_sum(stream.ref(), static_cast<float*>(device.data()), n);
    stream.ref().copy(out[r].data(), device.data(), n * sizeof(float));
    stream.synchronize();
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(out[r], std::vector<float>(n, 3.0f)) << "rank " << r;
}

TEST(NcclCollective, AbortEndsARankWaitingForItsPeer) {
  auto platform = two_gpus();
  if (!platform) GTEST_SKIP() << "needs 2 CUDA GPUs";
  if (!nccl_available()) GTEST_SKIP() << "this build has no NCCL";
  auto group = make_collective_group(*platform, {0, 1});
  EXPECT_THROW(run_on_ranks({"cuda:0", "cuda:1"}, group.get(),
                            [&](int r) {
                              Accelerator& acc = platform->accelerator(r);
                              acc.make_current();
                              if (r == 1) throw OutOfMemoryError("rank 1: injected");
                              Stream stream = acc.create_stream();
                              Buffer device(acc.memory(), 4096, stream.ref());
                              group->rank(0).all_reduce_sum(
                                  stream.ref(), static_cast<float*>(device.data()), 1024);
                              stream.synchronize();
                            }),
               OutOfMemoryError);
  EXPECT_TRUE(group->aborted());
}

}  // namespace
}  // namespace stowage::parallel
