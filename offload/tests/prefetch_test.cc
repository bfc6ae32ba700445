// Prefetch on the simulated accelerator, where copies can be throttled to
// model a PCIe link and out-of-memory can be injected: overlap of copies with
// compute (seen in the trace), prefetch hits, and the fallback when a fetch
// slot cannot be allocated.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <thread>

#include "core/error.h"
#include "offload/offload_manager.h"
#include "offload/tests/test_support.h"
#include "offload/trace.h"

namespace stowage {
namespace {

using testing_support::all_on;
using testing_support::expected_forward;
using testing_support::make_model;
using testing_support::Model;
using testing_support::place_model;
using testing_support::stream_forward;

using Clock = std::chrono::steady_clock;

bool overlaps(const TraceSpan& a, const TraceSpan& b) {
  return a.ts_us < b.end_us() && b.ts_us < a.end_us();
}

// Runs one forward over `m` whose compute is a `compute_ms` sleep on the
// compute stream; returns the wall time in microseconds.
double sleepy_forward(OffloadManager& manager, const Model& m, int compute_ms) {
  const auto start = Clock::now();
  for (const std::string& module : m.modules) {
    ModuleForward fwd = manager.begin_forward(module);
    fwd.compute_stream.host_task(
        [compute_ms] { std::this_thread::sleep_for(std::chrono::milliseconds(compute_ms)); });
    manager.end_forward(module);
  }
  manager.synchronize();
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

TEST(Prefetch, DepthTwoOverlapsThrottledCopiesWithComputeInTheTrace) {
  SimOptions sim;
  sim.copy_bytes_per_second = 100e6;  // 1 MB takes 10 ms
  auto platform = Platform::create(DeviceChoice::kSim, sim);
  const Model m = make_model(*platform, "layers", 8, 1000000);
  TraceRecorder trace;
  OffloadOptions options;
  options.prefetch_depth = 2;
  options.wrap_around = false;
  options.trace = &trace;
  OffloadManager manager(*platform, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  manager.dispatch();
  const double wall_us = sleepy_forward(manager, m, 10);

  const std::vector<TraceSpan> spans = trace.spans();
  double copy_us = 0, compute_us = 0;
  std::vector<TraceSpan> copies, computes;
  for (const TraceSpan& s : spans) {
    if (s.category == "copy") {
      copy_us += s.dur_us;
      copies.push_back(s);
    } else if (s.category == "compute") {
      compute_us += s.dur_us;
      computes.push_back(s);
    }
  }
  ASSERT_EQ(copies.size(), 8u);
  ASSERT_EQ(computes.size(), 8u);
  int overlapping = 0;
  for (const TraceSpan& c : copies) {
    for (const TraceSpan& k : computes) overlapping += overlaps(c, k) ? 1 : 0;
  }
  EXPECT_GE(overlapping, 5) << "copies of layers k+1, k+2 run while layer k computes";
  EXPECT_LT(wall_us, copy_us + compute_us) << "overlapped run: wall " << wall_us << " us, copies "
                                           << copy_us << " us, compute " << compute_us << " us";
  const OffloadCounters c = manager.counters();
  EXPECT_EQ(c.fetches, 8u);
  EXPECT_EQ(c.sync_fallbacks, 1u) << "only the first layer is fetched on demand";
  // The first copy (10 ms at the throttled rate) is waited for; how much of
  // it the compute stream still sees depends on the host's load (it once
  // reached it 5.5 ms late under a parallel test run), so only that it waited.
  EXPECT_GE(c.prefetch_misses, 1u) << "compute waited for the first copy";
  EXPECT_GT(c.stall_ms, 0.0) << "compute waited for the first copy";
}

// fetch_ms is the copy stream's busy time on the fetches: at least the
// throttled link's time for their bytes, at most the run's wall time; the
// share of the wall time (link_busy_share) is higher where the copies are
// the longer path than where compute is.
TEST(Prefetch, FetchTimeIsTheCopyStreamsBusyTime) {
  SimOptions sim;
  sim.copy_bytes_per_second = 100e6;  // 1 MB takes 10 ms
  auto platform = Platform::create(DeviceChoice::kSim, sim);
  const Model m = make_model(*platform, "layers", 6, 1000000);
  auto busy = [&](int compute_ms, OffloadCounters* out) {
    OffloadOptions options;
    options.prefetch_depth = 2;
    options.wrap_around = false;
    OffloadManager manager(*platform, options);
    place_model(manager, m, all_on(m, Tier::pinned_host()));
    manager.declare_execution_order(m.modules);
    manager.dispatch();
    const double wall_s = 1e-6 * sleepy_forward(manager, m, compute_ms);
    *out = manager.counters();
    EXPECT_EQ(out->fetches, 6u);
    EXPECT_GE(out->fetch_ms, 0.95 * 6 * 10) << "six 10 ms copies";
    EXPECT_LE(out->fetch_ms, 1e3 * wall_s * 1.01);
    return link_busy_share(*out, wall_s);
  };
  OffloadCounters link_bound, compute_bound;
  const double fed = busy(2, &link_bound);
  const double waiting = busy(40, &compute_bound);
  EXPECT_GT(fed, 0.5) << "copies back to back while compute is short";
  EXPECT_LT(waiting, fed) << "the link waits for 40 ms layers";
  EXPECT_EQ(link_busy_share(link_bound, 0), 0.0);
}

TEST(Prefetch, PrefetchedFetchesAreHitsWhenComputeIsSlowerThanCopies) {
  auto platform = Platform::create(DeviceChoice::kSim);
  const Model m = make_model(*platform, "layers", 6, 10000);
  OffloadOptions options;
  options.prefetch_depth = 2;
  OffloadManager manager(*platform, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  sleepy_forward(manager, m, 3);
  sleepy_forward(manager, m, 3);
  const OffloadCounters c = manager.counters();
  EXPECT_EQ(c.prefetch_hits + c.prefetch_misses, 12u);
  EXPECT_GE(c.prefetch_hits, 10u) << "all but the first fetches were ready in time";
}

TEST(Prefetch, InjectedOutOfMemoryWhilePrefetchingFallsBackToOnDemandFetches) {
  // The first slot allocation succeeds; every later one fails as a full
  // device would. Prefetching stops, each module is fetched into the freed
  // slot, and the output is right.
  auto platform = Platform::create(DeviceChoice::kSim);
  const Tier acc = platform->accelerator(0).tier();
  FaultInjectionAdaptor faulty(platform->accelerator(0).memory(),
                               [](uint64_t ordinal, size_t) { return ordinal >= 1; });
  const Model m = make_model(*platform, "layers", 4, 5000);
  OffloadOptions options;
  options.prefetch_depth = 2;
  options.lazy_slots = true;
  options.memory_overrides[acc] = &faulty;
  OffloadManager manager(*platform, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform, m), expected_forward(m));
  EXPECT_EQ(stream_forward(manager, *platform, m), expected_forward(m));
  manager.synchronize();
  const OffloadCounters c = manager.counters();
  EXPECT_EQ(faulty.injected_failures(), 1u) << "the pool stops asking after a failure";
  EXPECT_EQ(c.slot_allocation_failures, 1u);
  EXPECT_EQ(c.sync_fallbacks, 8u);
}

TEST(Prefetch, OutOfMemoryForTheOnlySlotIsAClearError) {
  auto platform = Platform::create(DeviceChoice::kSim);
  const Tier acc = platform->accelerator(0).tier();
  FaultInjectionAdaptor faulty(platform->accelerator(0).memory(),
                               [](uint64_t, size_t) { return true; });
  const Model m = make_model(*platform, "layers", 2, 5000);
  OffloadOptions options;
  options.memory_overrides[acc] = &faulty;
  OffloadManager manager(*platform, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  try {
    manager.begin_forward("layers.0");
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("layers."), std::string::npos) << e.what();
  }
}

TEST(Trace, WritesChromeTraceEventJson) {
  SimOptions sim;
  // 100000 bytes take 20 ms: far longer than the host needs to reach the
  // first forward's wait, even under ASan (at 1e9 B/s the 100 us copy was
  // over before compute reached it there, and no stall was recorded).
  sim.copy_bytes_per_second = 5e6;
  auto platform = Platform::create(DeviceChoice::kSim, sim);
  const Model m = make_model(*platform, "layers", 3, 100000);
  TraceRecorder trace;
  OffloadOptions options;
  options.trace = &trace;
  OffloadManager manager(*platform, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  sleepy_forward(manager, m, 1);
  const boost::json::value doc = boost::json::parse(trace.to_json());
  const boost::json::array& events = doc.at("traceEvents").as_array();
  int spans = 0, named = 0;
  for (const boost::json::value& v : events) {
    const boost::json::object& e = v.as_object();
    const std::string ph(e.at("ph").as_string());
    if (ph == "X") {
      ++spans;
      EXPECT_TRUE(e.at("name").is_string());
      EXPECT_GE(e.at("ts").to_number<double>(), 0.0);
      EXPECT_GE(e.at("dur").to_number<double>(), 0.0);
      EXPECT_TRUE(e.at("pid").is_int64());
      EXPECT_TRUE(e.at("tid").is_int64());
    } else if (ph == "M") {
      ++named;
    }
  }
  EXPECT_GE(spans, 6) << "3 fetches and 3 forwards";
  EXPECT_GE(named, 3) << "the accelerator and its compute and copy tracks are named";
  // The first module's fetch starts at its own begin_forward, so compute
  // waits for its 20 ms copy: a stall span on the compute track (issue #15
  // item 9: no test looked for one).
  bool first_stall = false;
  for (const TraceSpan& span : trace.spans()) {
    if (span.category != "stall") continue;
    EXPECT_EQ(span.name.rfind("stall: wait for layers.", 0), 0u) << span.name;
    if (span.name == "stall: wait for layers.0") {
      first_stall = true;
      EXPECT_GE(span.dur_us, 1000.0) << "100000 bytes at 5e6 B/s: 20 ms";
    }
  }
  EXPECT_TRUE(first_stall) << trace.to_json();
  EXPECT_NE(trace.to_json().find("stall: wait for layers.0"), std::string::npos);
  const std::string path = ::testing::TempDir() + "/trace.json";
  trace.write(path);
  EXPECT_THROW(trace.write("/nonexistent-dir/trace.json"), IoError);
}

TEST(Trace, SpansOnATimelineNeverOpenedAreAnError) {
  auto platform = Platform::create(DeviceChoice::kSim);
  Accelerator& a = platform->accelerator(0);
  Stream s = a.create_stream();
  Event start = a.create_event(), end = a.create_event();
  s.ref().record(start);
  s.ref().record(end);
  TraceRecorder trace;
  trace.add_span(5, 1, "x", "compute", std::move(start), std::move(end));
  EXPECT_THROW(trace.spans(), InvalidInputError);
}

}  // namespace
}  // namespace stowage
