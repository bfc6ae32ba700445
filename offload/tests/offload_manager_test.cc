// The offload manager's specification, run on the simulated accelerator and,
// where a GPU is visible, on CUDA.
#include "offload/offload_manager.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "offload/planner.h"
#include "offload/tests/test_support.h"
#include "offload/trace.h"

namespace stowage {
namespace {

using testing_support::all_on;
using testing_support::BackendTest;
using testing_support::bytes_of;
using testing_support::expected_forward;
using testing_support::host_tensor;
using testing_support::make_model;
using testing_support::Model;
using testing_support::place_model;
using testing_support::stream_forward;
using testing_support::temp_folder;

class OffloadManagerTest : public BackendTest {};

TEST_P(OffloadManagerTest, PlacedTensorsAreRealAndReadableOnEveryTier) {
  // Seed lesson 3: no placeholders; an offloaded tensor is readable from the
  // host at any time.
  OffloadOptions options;
  options.disk_store = make_folder_disk_store(temp_folder("place"));
  OffloadManager manager(*platform_, options);
  const std::vector<Tier> tiers = {acc(), Tier::pinned_host(), Tier::pageable_host(), Tier::disk()};
  for (size_t i = 0; i < tiers.size(); ++i) {
    const Tensor src = host_tensor(*platform_, DType::kBF16, Shape{33, 7}, 10 + i);
    const std::string module = "m" + std::to_string(i);
    const RecordId id = manager.place(module, "weight", TensorRole::kWeight, src, tiers[i]);
    const TensorRecord r = manager.table().get(id);
    EXPECT_EQ(r.home, tiers[i]);
    ASSERT_TRUE(r.on(tiers[i])) << tiers[i].to_string();
    EXPECT_EQ(r.copies.at(tiers[i]).tier(), tiers[i]);
    EXPECT_EQ(bytes_of(manager.read_to_host(module, "weight")), bytes_of(src))
        << tiers[i].to_string();
    if (tiers[i] != acc()) {
      EXPECT_EQ(bytes_of(r.copies.at(tiers[i])), bytes_of(src))
          << "the copy itself is host-addressable on " << tiers[i].to_string();
    }
  }
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, 33u * 7 * 2);
  EXPECT_EQ(manager.usage(Tier::pinned_host()).bytes_in_use, 33u * 7 * 2);
  EXPECT_EQ(manager.usage(Tier::disk()).bytes_in_use, 33u * 7 * 2);
}

TEST_P(OffloadManagerTest, AdoptsTensorsAlreadyInItsMemoryOrMappedFromDisk) {
  // The streaming loader's path: a tensor allocated from memory(tier), or a
  // disk mapping (mmap_store), is taken as is, not copied.
  auto store = std::shared_ptr<DiskStore>(make_folder_disk_store(temp_folder("adopt")));
  OffloadOptions options;
  options.disk_store = store;
  OffloadManager manager(*platform_, options);
  const Tensor src = host_tensor(*platform_, DType::kF32, Shape{64}, 5);
  Tensor pinned = Tensor::empty(manager.memory(Tier::pinned_host()), DType::kF32, Shape{64});
  std::memcpy(pinned.data(), src.data(), src.bytes());
  const Tensor mapped = store->write("external.weight", src);
  const RecordId a = manager.place("a", "weight", TensorRole::kWeight, pinned, Tier::pinned_host());
  const RecordId b = manager.place("b", "weight", TensorRole::kWeight, mapped, Tier::disk());
  EXPECT_EQ(manager.table().copy_on(a, Tier::pinned_host()).data(), pinned.data());
  EXPECT_EQ(manager.table().copy_on(b, Tier::disk()).data(), mapped.data());
  EXPECT_EQ(manager.counters().bytes_disk_written, 0u);
  EXPECT_EQ(manager.usage(Tier::pinned_host()).bytes_in_use, 256u) << "counted once";
  EXPECT_EQ(bytes_of(manager.read_to_host("b", "weight")), bytes_of(src));
}

TEST_P(OffloadManagerTest, EveryTierPairRoundTripsByteExact) {
  OffloadOptions options;
  options.disk_store = make_folder_disk_store(temp_folder("pairs"));
  OffloadManager manager(*platform_, options);
  const std::vector<Tier> tiers = {acc(), Tier::pinned_host(), Tier::pageable_host(), Tier::disk()};
  int n = 0;
  for (Tier from : tiers) {
    for (Tier to : tiers) {
      if (from == to) continue;
      const std::string module = "m" + std::to_string(n++);
      const Tensor w = host_tensor(*platform_, DType::kF16, Shape{100, 3}, n);
      const Tensor b = host_tensor(*platform_, DType::kF32, Shape{5}, 100 + n);
      manager.place(module, "weight", TensorRole::kWeight, w, from);
      manager.place(module, "bias", TensorRole::kBias, b, from);
      const uint64_t from_before = manager.usage(from).bytes_in_use;
      manager.move_module(module, to);
      EXPECT_EQ(manager.table().module_bytes_on(module, from), 0u);
      EXPECT_EQ(manager.table().module_bytes_on(module, to), 620u);
      EXPECT_EQ(manager.usage(from).bytes_in_use, from_before - 620)
          << from.to_string() << " -> " << to.to_string();
      EXPECT_EQ(bytes_of(manager.read_to_host(module, "weight")), bytes_of(w));
      manager.move_module(module, from);
      EXPECT_EQ(bytes_of(manager.read_to_host(module, "weight")), bytes_of(w))
          << from.to_string() << " -> " << to.to_string() << " -> " << from.to_string();
      EXPECT_EQ(bytes_of(manager.read_to_host(module, "bias")), bytes_of(b));
      EXPECT_EQ(manager.usage(from).bytes_in_use, from_before);
      EXPECT_EQ(manager.table().get(*manager.table().find(module, "weight")).copies_made, 2u);
    }
  }
}

// ---- the seed scenario of bitsandbytes' Linear8bitLt, at the manager level

constexpr int kOut = 2048;
constexpr int kIn = 4096;

// y = (x . W_int8[o]) * SCB[o] / 127, computed from what the forward's views
// hold (copied out on the compute stream).
std::vector<float> int8_forward(OffloadManager& manager, Platform& platform,
                                const std::vector<float>& x) {
  ModuleForward fwd = manager.begin_forward("layer");
  const TensorView* w = fwd.find("weight");
  const TensorView* scb = fwd.find("SCB");
  EXPECT_TRUE(w != nullptr && scb != nullptr);
  Buffer wb(platform.pinned_host_memory(), w->bytes());
  Buffer sb(platform.pinned_host_memory(), scb->bytes());
  fwd.compute_stream.copy(wb.data(), w->data(), w->bytes());
  fwd.compute_stream.copy(sb.data(), scb->data(), scb->bytes());
  manager.end_forward("layer");
  fwd.compute_stream.synchronize();
  const auto* wi = static_cast<const int8_t*>(wb.data());
  const auto* s = static_cast<const float*>(sb.data());
  std::vector<float> y(kOut);
  for (int o = 0; o < kOut; ++o) {
    float acc = 0;
    for (int i = 0; i < kIn; ++i) acc += x[i] * static_cast<float>(wi[o * kIn + i]);
    y[o] = acc * s[o] / 127.0f;
  }
  return y;
}

TEST_P(OffloadManagerTest, Int8ModuleMovedToHostLeavesNoAcceleratorBytesAndComesBackIdentical) {
  // Seed lesson 1: the int8 weight and its SCB state move together as byte
  // copies; nothing is re-quantized, so the output is identical bit for bit.
  OffloadManager manager(*platform_, OffloadOptions{});
  Accelerator& accelerator = platform_->accelerator(0);
  const uint64_t baseline = manager.usage(acc()).bytes_in_use;
  const Tensor w = host_tensor(*platform_, DType::kI8, Shape{kOut, kIn}, 7);
  Tensor scb = Tensor::empty(platform_->pageable_host_memory(), DType::kF32, Shape{kOut});
  for (int o = 0; o < kOut; ++o) scb.data_as<float>()[o] = 0.5f + 0.001f * o;
  const RecordId wid = manager.place("layer", "weight", TensorRole::kWeight, w, acc());
  manager.place_quant_part(wid, "SCB", scb, "SCB");
  std::vector<float> x(kIn);
  for (int i = 0; i < kIn; ++i) x[i] = std::sin(0.01f * i);

  const std::vector<float> first = int8_forward(manager, *platform_, x);
  // The device's own view, not the accounting: on CUDA the pool keeps freed
  // memory cached until it is trimmed, so both readings come after a trim.
  accelerator.release_cached_memory();
  const uint64_t free_while_resident = accelerator.free_bytes();
  const DevicePoolUsage pool_while_resident = accelerator.pool_usage();
  manager.move_module("layer", Tier::pinned_host());
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, baseline) << "accounting: 0 bytes left";
  EXPECT_EQ(manager.table().module_bytes_on("layer", acc()), 0u);
  EXPECT_EQ(manager.table().bytes_on(acc()), 0u) << "the SCB state moved too";
  accelerator.release_cached_memory();
  EXPECT_LE(accelerator.pool_usage().used_bytes + w.bytes() + scb.bytes(),
            pool_while_resident.used_bytes)
      << "the device's allocator got the weight and SCB back";
  EXPECT_GE(accelerator.free_bytes() + 2 * kDevicePoolPageBytes, free_while_resident + w.bytes())
      << "cudaMemGetInfo: the device itself got the bytes back";
  EXPECT_EQ(bytes_of(manager.table().copy_on(wid, Tier::pinned_host())), bytes_of(w));

  manager.move_module("layer", acc());
  const std::vector<float> second = int8_forward(manager, *platform_, x);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0)
      << "output must be identical bit for bit after a round trip";
  EXPECT_EQ(bytes_of(manager.read_to_host("layer", "weight")), bytes_of(w));
  EXPECT_EQ(bytes_of(manager.read_to_host("layer", "SCB")), bytes_of(scb));
}

TEST_P(OffloadManagerTest, FourBitStateKeepsEveryStorageDtypeThroughAllTiers) {
  // Seed lesson 2: a non-default quant_storage dtype and every state part
  // survive moves; bytes are identical after accelerator -> pinned -> disk ->
  // accelerator.
  OffloadOptions options;
  options.disk_store = make_folder_disk_store(temp_folder("fourbit"));
  OffloadManager manager(*platform_, options);
  const uint64_t baseline = manager.usage(acc()).bytes_in_use;
  const int64_t packed_bytes = 4096 * 4096 / 2 / 16;  // a 1024x1024 weight, 2 codes a byte
  int n = 0;
  for (DType storage : {DType::kU8, DType::kF16, DType::kBF16, DType::kF32}) {
    const std::string module = std::string("layer_") + std::string(short_name(storage));
    const int64_t elems = packed_bytes / static_cast<int64_t>(dtype_size(storage));
    std::vector<std::pair<std::string, Tensor>> parts = {
        {"absmax", host_tensor(*platform_, DType::kU8, Shape{packed_bytes * 2 / 64}, 20 + n)},
        {"quant_map", host_tensor(*platform_, DType::kF32, Shape{16}, 30 + n)},
        {"nested_absmax", host_tensor(*platform_, DType::kF32, Shape{64}, 40 + n)},
        {"nested_quant_map", host_tensor(*platform_, DType::kF32, Shape{256}, 50 + n)},
        {"quant_state.bitsandbytes__nf4", host_tensor(*platform_, DType::kU8, Shape{97}, 60 + n)},
    };
    const Tensor w = host_tensor(*platform_, storage, Shape{elems, 1}, 70 + n);
    const RecordId wid = manager.place(module, "weight", TensorRole::kWeight, w, acc());
    for (const auto& [suffix, t] : parts) manager.place_quant_part(wid, suffix, t);
    ++n;
    for (Tier t : {Tier::pinned_host(), Tier::disk(), acc()}) {
      manager.move_module(module, t);
      if (t != acc()) {
        EXPECT_EQ(manager.table().module_bytes_on(module, acc()), 0u) << t.to_string();
      }
    }
    const TensorRecord wr = manager.table().get(wid);
    EXPECT_EQ(wr.dtype, storage) << "quant_storage kept";
    EXPECT_EQ(wr.quant_parts.size(), parts.size());
    EXPECT_EQ(bytes_of(manager.read_to_host(module, "weight")), bytes_of(w));
    for (const auto& [suffix, t] : parts) {
      const auto id = manager.table().find(module, "weight." + suffix);
      ASSERT_TRUE(id.has_value()) << suffix;
      const TensorRecord r = manager.table().get(*id);
      EXPECT_EQ(r.role_name(), "quant_state:" + suffix);
      EXPECT_EQ(r.dtype, t.dtype()) << suffix;
      EXPECT_EQ(r.home, acc()) << suffix << " moved with its weight";
      EXPECT_EQ(r.copies_made, 3u) << suffix;
      EXPECT_EQ(bytes_of(manager.read_to_host(module, "weight." + suffix)), bytes_of(t)) << suffix;
    }
    manager.move_module(module, Tier::pinned_host());
  }
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, baseline);
}

// ---- streaming

TEST_P(OffloadManagerTest, StreamingAtAQuarterBudgetGivesTheResidentOutputWithinBudget) {
  const Model m = make_model(*platform_, "layers", 8, 64 << 10);
  std::vector<unsigned char> resident;
  {
    OffloadManager all(*platform_, OffloadOptions{});
    place_model(all, m, all_on(m, acc()));
    resident = stream_forward(all, *platform_, m);
  }
  ASSERT_EQ(resident, expected_forward(m));

  const uint64_t budget = m.bytes / 4;
  PlanRequest request;
  for (const auto& module : m.modules) {
    request.modules.push_back(PlanModule{module, {{"weight", 64 << 10}, {"bias", 64}}});
  }
  TierCapacity accelerator;
  accelerator.tier = acc();
  accelerator.budget = budget;
  request.accelerators = {accelerator};
  request.cpu = TierCapacity{Tier::pinned_host(), std::nullopt, UINT64_MAX};
  request.prefetch_depth = 1;
  const Plan plan = plan_device_map(request);
  std::map<std::string, Tier> where;
  for (const auto& [module, tier] : plan.device_map) where.insert_or_assign(module, tier);

  OffloadOptions options;
  options.set_budget(acc(), budget);
  options.prefetch_depth = 1;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, where);
  manager.declare_execution_order(m.modules);
  for (int run = 0; run < 3; ++run) {
    EXPECT_EQ(stream_forward(manager, *platform_, m), resident) << "run " << run;
  }
  manager.synchronize();
  EXPECT_LE(manager.usage(acc()).peak_bytes, budget);
  EXPECT_GT(manager.counters().fetches, 0u);
  EXPECT_GT(manager.counters().bytes_h2d, 0u);
}

TEST_P(OffloadManagerTest, StreamsFromDiskThroughPinnedStaging) {
  const Model m = make_model(*platform_, "layers", 4, 40000);
  OffloadOptions options;
  options.disk_store = make_folder_disk_store(temp_folder("stream_disk"));
  options.disk_staging_bytes = 4096;  // several chunks per weight
  options.prefetch_depth = 2;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::disk()));
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  EXPECT_GE(manager.counters().bytes_disk_read, 2 * m.bytes);
  EXPECT_EQ(manager.usage(Tier::pinned_host()).bytes_in_use, 4096u) << "only the staging buffer";
}

TEST_P(OffloadManagerTest, MixedResidentAndStreamedModulesGiveTheRightViews) {
  const Model m = make_model(*platform_, "layers", 6, 3000);
  std::map<std::string, Tier> where = all_on(m, Tier::pinned_host());
  where.insert_or_assign("layers.0", acc());
  where.insert_or_assign("layers.3", acc());
  OffloadManager manager(*platform_, OffloadOptions{});
  place_model(manager, m, where);
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  ModuleForward fwd = manager.begin_forward("layers.0");
  EXPECT_FALSE(fwd.streamed);
  manager.end_forward("layers.0");
  fwd = manager.begin_forward("layers.1");
  EXPECT_TRUE(fwd.streamed);
  EXPECT_EQ(fwd.accelerator, acc());
  manager.end_forward("layers.1");
}

TEST_P(OffloadManagerTest, AModuleOnTwoTiersFetchesOnlyItsTensorsOffTheAccelerator) {
  // --override-tensor (planner.h step 6): each layer's bias stays on the
  // accelerator and its weight in host RAM. The forward sees the bias where
  // it lives and the weight in a slot sized for the weight alone.
  const Model m = make_model(*platform_, "layers", 4, 3000);
  OffloadOptions options;
  options.wrap_around = false;
  OffloadManager manager(*platform_, options);
  for (const std::string& module : m.modules) {
    manager.place(module, "weight", TensorRole::kWeight, m.tensors.at(module + ".weight"),
                  Tier::pinned_host());
    manager.place(module, "bias", TensorRole::kBias, m.tensors.at(module + ".bias"), acc());
  }
  manager.declare_execution_order(m.modules);
  const uint64_t placed = manager.counters().bytes_h2d;
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  EXPECT_EQ(manager.counters().bytes_h2d - placed, 4u * 3000) << "only the weights crossed";
  ModuleForward fwd = manager.begin_forward("layers.2");
  EXPECT_TRUE(fwd.streamed);
  const RecordId bias = *manager.table().find("layers.2", "bias");
  EXPECT_EQ(fwd.find("bias")->data(), manager.table().copy_on(bias, acc()).data())
      << "the bias is used where it is";
  EXPECT_EQ(fwd.find("weight")->tier(), acc());
  manager.end_forward("layers.2");
  const uint64_t resident = 4u * 64;
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, resident + 2u * 3000)
      << "two slots (depth 1) of the weight only, beside the resident biases";
  EXPECT_THROW(manager.set_host_compute("layers.2", true), InvalidInputError)
      << "its bias has no host copy";
}

// The prefetch window (offload_manager.h): after a streamed module, the next
// prefetch_depth streamed ones (it holds a slot itself); after a module that
// holds none (computed on the host here), the next prefetch_depth + 1, so
// both slots of depth 1 take a copy while the host module runs.
TEST_P(OffloadManagerTest, AModuleHoldingNoSlotLeavesEverySlotToThePrefetches) {
  const Model m = make_model(*platform_, "layers", 5, 4096);
  OffloadOptions options;
  options.prefetch_depth = 1;
  options.wrap_around = false;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.set_host_compute("layers.0", true);
  manager.declare_execution_order(m.modules);
  ASSERT_EQ(manager.fetch_slots(acc()), 2);
  manager.begin_forward("layers.0");
  EXPECT_EQ(manager.counters().fetches, 2u) << "layers.1 and layers.2, one a slot";
  manager.end_forward("layers.0");
  for (const char* module : {"layers.1", "layers.2"}) {
    const uint64_t before = manager.counters().fetches;
    manager.begin_forward(module);
    // layers.1 running holds a slot; layers.2 is in the other: nothing to
    // fetch. layers.2 running: layers.1's slot is free for layers.3.
    EXPECT_EQ(manager.counters().fetches - before, std::string(module) == "layers.1" ? 0u : 1u)
        << module;
    manager.end_forward(module);
  }
  manager.synchronize();
  EXPECT_EQ(manager.counters().sync_fallbacks, 0u);
  EXPECT_EQ(manager.counters().fetches, 3u);
}

TEST_P(OffloadManagerTest, NoLeakOver1000FetchReleaseCycles) {
  const Model m = make_model(*platform_, "layers", 4, 4096);
  OffloadOptions options;
  options.prefetch_depth = 2;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  manager.dispatch();
  const TierUsage acc0 = manager.usage(acc());
  const TierUsage pinned0 = manager.usage(Tier::pinned_host());
  const TierUsage pageable0 = manager.usage(Tier::pageable_host());
  EXPECT_EQ(acc0.bytes_in_use, 3u * 4160) << "depth 2: 3 slots of weight + bias at 4096";
  for (int cycle = 0; cycle < 1000; ++cycle) {
    const std::string& module = m.modules[cycle % 4];
    ModuleForward fwd = manager.begin_forward(module);
    ASSERT_EQ(fwd.tensors.size(), 2u);
    manager.end_forward(module);
  }
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, acc0.bytes_in_use);
  EXPECT_EQ(manager.usage(acc()).peak_bytes, acc0.bytes_in_use) << "slots were allocated once";
  EXPECT_EQ(manager.usage(Tier::pinned_host()).bytes_in_use, pinned0.bytes_in_use);
  EXPECT_EQ(manager.usage(Tier::pageable_host()).bytes_in_use, pageable0.bytes_in_use);
  EXPECT_EQ(manager.counters().prefetch_hits + manager.counters().prefetch_misses, 1004u);
  EXPECT_EQ(manager.table().get(0).pin_count, 0);
}

TEST_P(OffloadManagerTest, NoLeakOver1000MoveOutMoveInCycles) {
  OffloadManager manager(*platform_, OffloadOptions{});
  const uint64_t acc0 = manager.usage(acc()).bytes_in_use;
  const uint64_t pinned0 = manager.usage(Tier::pinned_host()).bytes_in_use;
  const Tensor w = host_tensor(*platform_, DType::kI8, Shape{64, 64}, 3);
  const Tensor scb = host_tensor(*platform_, DType::kF32, Shape{64}, 4);
  const RecordId wid = manager.place("layer", "weight", TensorRole::kWeight, w, acc());
  manager.place_quant_part(wid, "SCB", scb, "SCB");
  const uint64_t resident = manager.usage(acc()).bytes_in_use;
  for (int cycle = 0; cycle < 1000; ++cycle) {
    manager.move_module("layer", Tier::pinned_host());
    ASSERT_EQ(manager.usage(acc()).bytes_in_use, acc0) << "cycle " << cycle;
    manager.move_module("layer", acc());
    ASSERT_EQ(manager.usage(Tier::pinned_host()).bytes_in_use, pinned0) << "cycle " << cycle;
  }
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, resident);
  EXPECT_EQ(bytes_of(manager.read_to_host("layer", "weight")), bytes_of(w));
  EXPECT_EQ(bytes_of(manager.read_to_host("layer", "SCB")), bytes_of(scb));
  EXPECT_EQ(manager.table().get(wid).copies_made, 2000u);
}

TEST_P(OffloadManagerTest, AllMemoryIsReturnedWhenTheManagerGoes) {
  Accelerator& accelerator = platform_->accelerator(0);
  accelerator.release_cached_memory();
  const uint64_t free_before = accelerator.free_bytes();
  {
    const Model m = make_model(*platform_, "layers", 4, 1 << 20);
    OffloadManager manager(*platform_, OffloadOptions{});
    place_model(manager, m, all_on(m, acc()));
    manager.move_module("layers.1", Tier::pinned_host());
    manager.declare_execution_order(m.modules);
    EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
    EXPECT_LT(accelerator.free_bytes(), free_before);
  }
  accelerator.release_cached_memory();
  EXPECT_GE(accelerator.free_bytes() + 2 * kDevicePoolPageBytes, free_before);
}

TEST_P(OffloadManagerTest, TightBudgetLeavesOneSlotAndStreamingStaysRight) {
  // An accelerator out of budget while the pool is made: the pool keeps
  // the one slot it could get, prefetching stops, each module is fetched on
  // demand into the freed slot, and the output is right.
  const Model m = make_model(*platform_, "layers", 5, 10000);
  OffloadOptions options;
  options.prefetch_depth = 2;
  options.set_budget(acc(), 15000);  // one slot of 10304 bytes fits, two do not
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  const OffloadCounters c = manager.counters();
  EXPECT_EQ(c.slot_allocation_failures, 1u);
  EXPECT_EQ(c.sync_fallbacks, 10u) << "every module fetched on demand";
  EXPECT_LE(manager.usage(acc()).peak_bytes, 15000u);
}

// The fetch slots leave the working-memory reserve (activations, kernel
// scratch) to the forwards: under a budget tighter than the plan, the pool
// shrinks (prefetching falls back to synchronous fetches) rather than take
// memory a kernel allocates later. Working memory already in use when the
// pool is made counts against the reserve.
TEST_P(OffloadManagerTest, SlotsLeaveTheWorkingReserveToTheForwards) {
  const Model m = make_model(*platform_, "layers", 5, 10000);
  constexpr uint64_t kSlot = 10304, kWorking = 6000, kActivations = 4000;
  for (const bool room_for_three : {true, false}) {
    OffloadOptions options;
    options.prefetch_depth = 2;
    options.set_budget(acc(), (room_for_three ? 3 * kSlot : 2 * kSlot + kSlot / 2) + kWorking);
    options.working_reserve[acc()] = kWorking;
    OffloadManager manager(*platform_, options);
    place_model(manager, m, all_on(m, Tier::pinned_host()));
    manager.declare_execution_order(m.modules);
    Buffer activations(manager.memory(acc()), kActivations);  // in use before the pool is made
    manager.dispatch();
    Buffer scratch(manager.memory(acc()), kWorking - kActivations);  // the rest still fits
    EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
    manager.synchronize();
    EXPECT_EQ(manager.counters().slot_allocation_failures, room_for_three ? 0u : 1u)
        << (room_for_three ? "three slots" : "two slots");
    EXPECT_LE(manager.usage(acc()).peak_bytes, *options.budget_of(acc()));
  }
}

TEST_P(OffloadManagerTest, NoSlotAtAllIsAClearError) {
  const Model m = make_model(*platform_, "layers", 2, 10000);
  OffloadOptions options;
  options.set_budget(acc(), 5000);
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  try {
    manager.begin_forward("layers.0");
    FAIL() << "expected OutOfBudgetError";
  } catch (const OutOfBudgetError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("layers."), std::string::npos) << message;
    EXPECT_NE(message.find("10304"), std::string::npos) << message;
    EXPECT_NE(message.find("5000"), std::string::npos) << message;
  }
}

TEST_P(OffloadManagerTest, OffloadedTensorsStayReadableDuringStreaming) {
  const Model m = make_model(*platform_, "layers", 4, 5000);
  OffloadOptions options;
  options.prefetch_depth = 2;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  ModuleForward fwd = manager.begin_forward("layers.0");  // layers.1, .2 prefetching
  for (const auto& module : m.modules) {
    EXPECT_EQ(bytes_of(manager.read_to_host(module, "weight")),
              bytes_of(m.tensors.at(module + ".weight")))
        << module;
    const auto id = manager.table().find(module, "weight");
    EXPECT_EQ(bytes_of(manager.table().copy_on(*id, Tier::pinned_host())),
              bytes_of(m.tensors.at(module + ".weight")));
  }
  EXPECT_EQ(manager.table().get(*manager.table().find("layers.0", "weight")).pin_count, 1);
  manager.end_forward("layers.0");
}

TEST_P(OffloadManagerTest, MovingAPrefetchedModuleDropsItsSlotCopy) {
  const Model m = make_model(*platform_, "layers", 4, 5000);
  OffloadOptions options;
  options.prefetch_depth = 3;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  manager.begin_forward("layers.0");
  manager.move_module("layers.2", acc());  // was prefetched into a slot
  manager.end_forward("layers.0");
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  EXPECT_FALSE(manager.begin_forward("layers.2").streamed);
  manager.end_forward("layers.2");
}

TEST_P(OffloadManagerTest, AModuleHandleResolvedOnceFollowsItsModuleThroughMovesAndPlacements) {
  // The offload hook resolves a handle when it attaches and runs every
  // forward through it: the handle must see later moves and new records.
  const Model m = make_model(*platform_, "layers", 3, 4000);
  OffloadManager manager(*platform_, OffloadOptions{});
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  EXPECT_THROW(manager.module_handle("layers.9"), InvalidInputError) << "no records";
  const ModuleHandle h = manager.module_handle("layers.1");
  EXPECT_EQ(manager.module_handle("layers.1").id, h.id) << "one handle per module";
  ModuleForward fwd = manager.begin_forward(h);
  EXPECT_EQ(fwd.module, "layers.1");
  EXPECT_TRUE(fwd.streamed);
  EXPECT_THROW(manager.begin_forward(h), InvalidInputError) << "already in a forward";
  manager.end_forward(h);
  EXPECT_THROW(manager.end_forward(h), InvalidInputError) << "no forward to end";
  manager.move_module("layers.1", acc());
  fwd = manager.begin_forward(h);
  EXPECT_FALSE(fwd.streamed) << "resident after the move";
  ASSERT_NE(fwd.find("weight"), nullptr);
  EXPECT_EQ(fwd.find("weight")->data(),
            manager.table().copy_on(*manager.table().find("layers.1", "weight"), acc()).data());
  manager.end_forward(h);
  const Tensor extra = host_tensor(*platform_, DType::kF32, Shape{8}, 77);
  manager.place("layers.1", "scale", TensorRole::kWeight, extra, acc());
  fwd = manager.begin_forward(h);
  EXPECT_NE(fwd.find("scale"), nullptr) << "a record placed later is in the next forward";
  manager.end_forward(h);
  EXPECT_THROW(manager.begin_forward(ModuleHandle{}), InvalidInputError);
  EXPECT_THROW(manager.begin_forward(ModuleHandle{1000}), InvalidInputError);
}

TEST_P(OffloadManagerTest, TwoThreadsStreamTheirOwnModulesThroughOneManager) {
  const Model a = make_model(*platform_, "a", 4, 6000, 1);
  const Model b = make_model(*platform_, "b", 4, 6000, 2);
  OffloadOptions options;
  options.prefetch_depth = 1;
  OffloadManager manager(*platform_, options);
  place_model(manager, a, all_on(a, Tier::pinned_host()));
  place_model(manager, b, all_on(b, Tier::pinned_host()));
  manager.declare_execution_order(a.modules);
  manager.declare_execution_order(b.modules);
  manager.dispatch();
  auto run = [&](const Model& m, int* failures) {
    Stream compute = platform_->accelerator(0).create_stream();
    const auto expected = expected_forward(m);
    for (int i = 0; i < 40; ++i) {
      if (stream_forward(manager, *platform_, m, compute) != expected) ++*failures;
    }
  };
  int fa = 0, fb = 0;
  std::thread ta(run, std::cref(a), &fa);
  std::thread tb(run, std::cref(b), &fb);
  ta.join();
  tb.join();
  EXPECT_EQ(fa, 0);
  EXPECT_EQ(fb, 0);
  manager.synchronize();
  EXPECT_EQ(manager.counters().prefetch_hits + manager.counters().prefetch_misses, 320u);
}

TEST_P(OffloadManagerTest, MisuseGivesClearErrors) {
  OffloadManager manager(*platform_, OffloadOptions{});
  const Tensor w = host_tensor(*platform_, DType::kF32, Shape{4}, 1);
  manager.place("m", "weight", TensorRole::kWeight, w, Tier::pinned_host());
  EXPECT_THROW(manager.place("m", "weight", TensorRole::kWeight, w, Tier::pinned_host()),
               InvalidInputError);
  EXPECT_THROW(manager.place("d", "weight", TensorRole::kWeight, w, Tier::disk()),
               InvalidInputError)
      << "no disk store";
  EXPECT_THROW(manager.move_module("nope", acc()), InvalidInputError);
  EXPECT_THROW(manager.begin_forward("nope"), InvalidInputError);
  EXPECT_THROW(manager.end_forward("m"), InvalidInputError);
  manager.begin_forward("m");
  EXPECT_THROW(manager.begin_forward("m"), InvalidInputError);
  EXPECT_THROW(manager.move_module("m", acc()), InvalidInputError);
  manager.end_forward("m");
  EXPECT_THROW(manager.declare_execution_order({"x", "x"}), InvalidInputError);
}

TEST_P(OffloadManagerTest, PlacementOverBudgetFailsAndRecordsNothing) {
  OffloadOptions options;
  options.set_budget(acc(), 1000);
  OffloadManager manager(*platform_, options);
  const Tensor w = host_tensor(*platform_, DType::kU8, Shape{2000}, 1);
  try {
    manager.place("big", "weight", TensorRole::kWeight, w, acc());
    FAIL() << "expected OutOfBudgetError";
  } catch (const OutOfBudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("2000"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(manager.table().find("big", "weight").has_value());
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, 0u);
  const Tensor small = host_tensor(*platform_, DType::kU8, Shape{600}, 2);
  manager.place("a", "weight", TensorRole::kWeight, small, Tier::pinned_host());
  manager.place("b", "weight", TensorRole::kWeight, small, acc());
  EXPECT_THROW(manager.move_module("a", acc()), OutOfBudgetError);
  EXPECT_EQ(manager.table().get(*manager.table().find("a", "weight")).home, Tier::pinned_host())
      << "a failed move leaves the module where it was";
  EXPECT_EQ(manager.usage(acc()).bytes_in_use, 600u);
}

TEST_P(OffloadManagerTest, TraceHasCopyComputeAndStallSpansOnTheTimeline) {
  const Model m = make_model(*platform_, "layers", 4, 1 << 20);
  TraceRecorder trace;
  OffloadOptions options;
  options.prefetch_depth = 1;
  options.trace = &trace;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  EXPECT_EQ(stream_forward(manager, *platform_, m), expected_forward(m));
  manager.synchronize();
  int copies = 0, computes = 0;
  for (const TraceSpan& s : trace.spans()) {
    EXPECT_GE(s.ts_us, 0.0) << s.name;
    EXPECT_GE(s.dur_us, 0.0) << s.name;
    EXPECT_EQ(s.pid, acc().index());
    if (s.category == "copy") ++copies;
    if (s.category == "compute") ++computes;
  }
  EXPECT_GE(copies, 4);
  EXPECT_EQ(computes, 4);
  EXPECT_NE(trace.to_json().find("\"traceEvents\""), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Backends, OffloadManagerTest,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         testing_support::backend_name);

// ---- several accelerators

class TwoAcceleratorTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped()) return;
    if (platform_->accelerator_count() < 2) GTEST_SKIP() << "needs two accelerators";
  }
  SimOptions sim_options() const override {
    SimOptions o;
    o.accelerator_count = 2;
    return o;
  }
};

TEST_P(TwoAcceleratorTest, ModulesMoveBetweenAcceleratorsByteExact) {
  OffloadManager manager(*platform_, OffloadOptions{});
  const Tensor w = host_tensor(*platform_, DType::kBF16, Shape{300, 5}, 9);
  const RecordId wid = manager.place("m", "weight", TensorRole::kWeight, w, acc(0));
  manager.place_quant_part(wid, "SCB", host_tensor(*platform_, DType::kF32, Shape{300}, 10), "SCB");
  manager.move_module("m", acc(1));
  EXPECT_EQ(manager.usage(acc(0)).bytes_in_use, 0u);
  EXPECT_EQ(manager.usage(acc(1)).bytes_in_use, 3000u + 1200u);
  EXPECT_EQ(bytes_of(manager.read_to_host("m", "weight")), bytes_of(w));
  ModuleForward fwd = manager.begin_forward("m");
  EXPECT_EQ(fwd.accelerator, acc(1)) << "a resident module runs where it lives";
  manager.end_forward("m");
  manager.move_module("m", acc(0));
  EXPECT_EQ(manager.usage(acc(1)).bytes_in_use, 0u);
  EXPECT_EQ(bytes_of(manager.read_to_host("m", "weight")), bytes_of(w));
  EXPECT_GT(manager.counters().bytes_d2d, 0u);
}

TEST_P(TwoAcceleratorTest, StreamedModulesRunOnTheAcceleratorTheyAreAssigned) {
  const Model m = make_model(*platform_, "layers", 4, 5000);
  OffloadOptions options;
  options.prefetch_depth = 1;
  OffloadManager manager(*platform_, options);
  place_model(manager, m, all_on(m, Tier::pinned_host()));
  manager.declare_execution_order(m.modules);
  manager.set_execution_accelerator("layers.2", acc(1));
  manager.set_execution_accelerator("layers.3", acc(1));
  for (int run = 0; run < 3; ++run) {
    uint64_t offset = 0;
    const auto expected = expected_forward(m);
    Buffer out(platform_->pinned_host_memory(), expected.size());
    std::vector<StreamRef> used;
    for (const std::string& module : m.modules) {
      ModuleForward fwd = manager.begin_forward(module);
      EXPECT_TRUE(fwd.streamed);
      EXPECT_EQ(fwd.accelerator, module < "layers.2" ? acc(0) : acc(1)) << module;
      for (const char* name : {"bias", "weight"}) {
        const TensorView* view = fwd.find(name);
        fwd.compute_stream.copy(static_cast<char*>(out.data()) + offset, view->data(),
                                view->bytes());
        offset += view->bytes();
      }
      used.push_back(fwd.compute_stream);
      manager.end_forward(module);
    }
    for (StreamRef s : used) s.synchronize();
    EXPECT_EQ(std::memcmp(out.data(), expected.data(), expected.size()), 0) << "run " << run;
  }
  EXPECT_EQ(manager.usage(acc(0)).bytes_in_use, 2u * 5184) << "2 slots of 5000 + bias at 5120";
  EXPECT_EQ(manager.usage(acc(1)).bytes_in_use, 2u * 5184);
  EXPECT_THROW(manager.set_execution_accelerator("layers.0", Tier::pinned_host()),
               InvalidInputError);
}

INSTANTIATE_TEST_SUITE_P(Backends, TwoAcceleratorTest,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         testing_support::backend_name);

}  // namespace
}  // namespace stowage
