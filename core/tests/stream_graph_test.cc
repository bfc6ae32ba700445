// Graph capture and replay (core/stream_graph.h) over every backend present,
// and the capture rules the simulated accelerator enforces as CUDA does.
#include "core/stream_graph.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "core/tests/accelerator_spec.h"

namespace stowage {
namespace {

class StreamGraphSpec : public testing_support::AcceleratorSpec {};

// A graph of copies over two streams: the origin copies pinned input to the
// device, a joined stream copies it on to a second device buffer, the origin
// copies that back to pinned output. Each launch reads the input as it is
// then, and nothing runs during the capture.
TEST_P(StreamGraphSpec, ReplaysCopiesAcrossJoinedStreamsWithTheInputOfEachLaunch) {
  constexpr size_t kBytes = 1 << 16;
  Stream origin = accelerator().create_stream();
  Stream side = accelerator().create_stream();
  MemoryResource& device = accelerator().memory();
  MemoryResource& pinned = platform_->pinned_host_memory();
  Buffer input(pinned, kBytes), output(pinned, kBytes);
  Buffer a(device, kBytes), b(device, kBytes);
  std::memset(input.data(), 1, kBytes);
  std::memset(output.data(), 0, kBytes);
  Event fork = accelerator().create_event(), join = accelerator().create_event();

  StreamGraph graph;
  {
    GraphCapture capture(origin);
    EXPECT_TRUE(origin.ref().capturing());
    EXPECT_FALSE(side.ref().capturing());
    origin.ref().copy(a.data(), input.data(), kBytes);
    origin.ref().record(fork);
    side.ref().wait(fork);
    EXPECT_TRUE(side.ref().capturing()) << "waiting on a captured event joins the capture";
    side.ref().copy(b.data(), a.data(), kBytes);
    side.ref().record(join);
    origin.ref().wait(join);
    origin.ref().copy(output.data(), b.data(), kBytes);
    graph = capture.finish();
  }
  EXPECT_FALSE(origin.ref().capturing());
  EXPECT_FALSE(side.ref().capturing());
  origin.synchronize();
  EXPECT_EQ(static_cast<unsigned char*>(output.data())[0], 0) << "the capture ran its work";

  for (int round = 2; round < 5; ++round) {
    std::memset(input.data(), round, kBytes);
    graph.launch(origin);
    origin.synchronize();
    const auto* out = static_cast<const unsigned char*>(output.data());
    EXPECT_EQ(out[0], round);
    EXPECT_EQ(out[kBytes - 1], round);
  }
}

TEST_P(StreamGraphSpec, AnAllocationDuringCaptureIsRefusedAndTheCaptureFails) {
  Stream origin = accelerator().create_stream();
  Buffer held(accelerator().memory(), 256);
  GraphCapture capture(origin);
  origin.ref().fill_zero(held.data(), 256);
  EXPECT_THROW(Buffer(accelerator().memory(), 1024, origin), InvalidInputError);
}

TEST_P(StreamGraphSpec, AStreamNotJoinedBackFailsTheCapture) {
  Stream origin = accelerator().create_stream();
  Stream side = accelerator().create_stream();
  Buffer a(accelerator().memory(), 256), b(accelerator().memory(), 256);
  Event fork = accelerator().create_event();
  GraphCapture capture(origin);
  origin.ref().record(fork);
  side.ref().wait(fork);
  side.ref().copy(b.data(), a.data(), 256);
  EXPECT_ANY_THROW(capture.finish());
  side.synchronize();
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamGraphSpec, testing_support::kAllBackends,
                         testing_support::backend_name);

// Host tasks replay on sim (on CUDA they cannot be captured); a captured
// closure keeps the arguments it was captured with, so a value that changes
// per launch must be read through memory.
TEST(SimStreamGraph, HostTasksReplayPerLaunchWithCapturedArguments) {
  auto platform = Platform::create(DeviceChoice::kSim);
  Stream stream = platform->accelerator(0).create_stream();
  std::atomic<int> runs{0};
  int frozen = 7, live = 7;
  std::vector<int> seen_frozen, seen_live;
  StreamGraph graph;
  {
    GraphCapture capture(stream);
    const int argument = frozen;
    const int* through_memory = &live;
    stream.ref().host_task([&, argument, through_memory] {
      ++runs;
      seen_frozen.push_back(argument);
      seen_live.push_back(*through_memory);
    });
    graph = capture.finish();
  }
  stream.synchronize();
  EXPECT_EQ(runs.load(), 0);
  for (int i = 0; i < 3; ++i) {
    live = 10 + i;
    graph.launch(stream);
    stream.synchronize();
  }
  EXPECT_EQ(runs.load(), 3);
  EXPECT_EQ(seen_frozen, (std::vector<int>{7, 7, 7}));
  EXPECT_EQ(seen_live, (std::vector<int>{10, 11, 12}));
}

TEST(SimStreamGraph, SynchronizingOrWaitingOutsideTheCaptureFailsIt) {
  auto platform = Platform::create(DeviceChoice::kSim);
  Accelerator& acc = platform->accelerator(0);
  Stream stream = acc.create_stream();
  Stream other = acc.create_stream();
  Event outside = acc.create_event();
  other.ref().record(outside);
  {
    GraphCapture capture(stream);
    EXPECT_THROW(stream.synchronize(), InvalidInputError);
    EXPECT_THROW(capture.finish(), InvalidInputError);
  }
  {
    GraphCapture capture(stream);
    EXPECT_THROW(stream.ref().wait(outside), InvalidInputError);
    EXPECT_THROW(capture.finish(), InvalidInputError);
  }
  {
    Event inside = acc.create_event();
    GraphCapture capture(stream);
    stream.ref().record(inside);
    EXPECT_THROW(inside.synchronize(), InvalidInputError);
    EXPECT_THROW(static_cast<void>(inside.ready()), InvalidInputError);
    capture.finish();
    EXPECT_TRUE(inside.ready()) << "after the capture the event is an ordinary one";
  }
  // The stream works normally afterwards.
  int ran = 0;
  stream.ref().host_task([&] { ++ran; });
  stream.synchronize();
  EXPECT_EQ(ran, 1);
}

}  // namespace
}  // namespace stowage
