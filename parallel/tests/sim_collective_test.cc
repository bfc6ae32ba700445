// The in-process collective over simulated accelerators: what every rank
// holds after an all-reduce, and that a failing or mismatched rank ends
// every rank with an error instead of leaving them waiting.
#include "parallel/sim_collective.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "parallel/collective.h"
#include "parallel/rank_threads.h"

namespace stowage::parallel {
namespace {

struct SimRanks {
  explicit SimRanks(int n) : platform(Platform::create(DeviceChoice::kSim, SimOptions{n})) {
    for (int r = 0; r < n; ++r) {
      streams.push_back(platform->accelerator(r).create_stream());
      names.push_back(platform->accelerator(r).tier().to_string());
    }
  }
  std::unique_ptr<Platform> platform;
  std::vector<Stream> streams;
  std::vector<std::string> names;
};

TEST(SimCollective, AllReduceGivesEveryRankTheSumInRankOrder) {
  constexpr int kRanks = 4;
  SimRanks ranks(kRanks);
  SimCollectiveGroup group(kRanks);
  std::vector<std::vector<float>> data(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    // Values whose float sum depends on the order: 1e8 + 1 - 1e8 ...
    data[r] = {r == 0 ? 1e8f : 1.0f, static_cast<float>(r), -0.5f * r};
  }
  run_on_ranks(ranks.names, &group, [&](int r) {
    group.rank(r).all_reduce_sum(ranks.streams[r].ref(), data[r].data(), data[r].size());
    ranks.streams[r].synchronize();
  });
  const float first = ((1e8f + 1.0f) + 1.0f) + 1.0f;  // rank 0 + 1 + 2 + 3, in that order
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(data[r][0], first) << "rank " << r;
    EXPECT_EQ(data[r][1], 6.0f);
    EXPECT_EQ(data[r][2], -3.0f);
  }
  EXPECT_EQ(group.completed_calls(), 1u);
}

TEST(SimCollective, RanksThatReduceDifferentCountsAllFailNamingBoth) {
  SimRanks ranks(2);
  SimCollectiveGroup group(2);
  std::vector<float> a(4, 1.0f), b(3, 1.0f);
  try {
    run_on_ranks(ranks.names, &group, [&](int r) {
      group.rank(r).all_reduce_sum(ranks.streams[r].ref(), r == 0 ? a.data() : b.data(),
                                   r == 0 ? a.size() : b.size());
      ranks.streams[r].synchronize();
    });
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 0 reduces 4 floats, rank 1 reduces 3 floats"), std::string::npos)
        << what;
    EXPECT_NE(what.find("the ranks' calls differ"), std::string::npos) << what;
    EXPECT_NE(what.find("every rank stopped"), std::string::npos) << what;
  }
  EXPECT_TRUE(group.aborted());
}

TEST(SimCollective, AnInjectedFaultOnOneRankEndsEveryRankWithItsMessage) {
  constexpr int kRanks = 3;
  SimRanks ranks(kRanks);
  SimCollectiveOptions options;
  options.fail = [](int rank, uint64_t call) { return rank == 2 && call == 1; };
  SimCollectiveGroup group(kRanks, options);
  std::vector<std::vector<float>> data(kRanks, std::vector<float>(8, 1.0f));
  try {
    run_on_ranks(ranks.names, &group, [&](int r) {
      for (int call = 0; call < 5; ++call) {
        group.rank(r).all_reduce_sum(ranks.streams[r].ref(), data[r].data(), data[r].size());
      }
      ranks.streams[r].synchronize();
    });
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    // The cause first, then what each other rank saw.
    EXPECT_EQ(what.rfind("tensor-parallel rank 2 of 3 (sim:2) failed: rank 2: all-reduce 1", 0), 0u)
        << what;
    EXPECT_NE(what.find("injected collective fault"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 0: "), std::string::npos) << what;
    EXPECT_NE(what.find("rank 1: "), std::string::npos) << what;
  }
  EXPECT_EQ(group.completed_calls(), 1u);
}

TEST(SimCollective, AbortWakesARankWaitingForPeersThatNeverCome) {
  SimRanks ranks(2);
  SimCollectiveGroup group(2);
  std::vector<float> data(2, 1.0f);
  group.rank(0).all_reduce_sum(ranks.streams[0].ref(), data.data(), data.size());
  std::thread aborter([&] { group.abort("rank 1 ran out of memory"); });
  try {
    ranks.streams[0].synchronize();
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 ran out of memory"), std::string::npos);
  }
  aborter.join();
  // Later calls fail at once.
  group.rank(0).all_reduce_sum(ranks.streams[0].ref(), data.data(), data.size());
  EXPECT_THROW(ranks.streams[0].synchronize(), DeviceError);
  EXPECT_EQ(data[0], 1.0f);
}

TEST(SimCollective, RanksRunConcurrentlyOnThreadsOfTheirOwn) {
  // A rendezvous of 4 ranks completes only when the 4 run at once.
  constexpr int kRanks = 4;
  SimRanks ranks(kRanks);
  SimCollectiveGroup group(kRanks);
  std::vector<std::vector<float>> data(kRanks, std::vector<float>(1024, 0.25f));
  run_on_ranks(ranks.names, &group, [&](int r) {
    for (int i = 0; i < 50; ++i) {
      group.rank(r).all_reduce_sum(ranks.streams[r].ref(), data[r].data(), data[r].size());
    }
    ranks.streams[r].synchronize();
  });
  EXPECT_EQ(group.completed_calls(), 50u);
  // 0.25 x 4^50 overflows float: the values only need to agree.
  for (int r = 1; r < kRanks; ++r) EXPECT_EQ(data[r], data[0]);
}

TEST(CollectiveGroup, OnSimTheGroupIsInProcessAndChecksItsAccelerators) {
  auto platform = Platform::create(DeviceChoice::kSim, SimOptions{2});
  EXPECT_EQ(make_collective_group(*platform, {0, 1})->description(), "in-process (sim)");
  EXPECT_THROW(make_collective_group(*platform, {0, 0}), InvalidInputError);
  EXPECT_THROW(make_collective_group(*platform, {0, 2}), InvalidInputError);
  EXPECT_THROW(make_collective_group(*platform, {}), InvalidInputError);
}

}  // namespace
}  // namespace stowage::parallel
