// The planner: a device map under per-tier budgets in the manner of
// accelerate's infer_auto_device_map (seed lesson 5).
#include "offload/planner.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace stowage {
namespace {

const Tier kAcc0 = Tier::accelerator(Backend::kSim, 0);
const Tier kAcc1 = Tier::accelerator(Backend::kSim, 1);
const Tier kCpu = Tier::pinned_host();
const Tier kDisk = Tier::disk();

// `n` layers "layers.i" of one weight of `bytes` each.
std::vector<PlanModule> layers(int n, uint64_t bytes) {
  std::vector<PlanModule> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(PlanModule{"layers." + std::to_string(i), {{"weight", bytes}}});
  }
  return out;
}

TierCapacity cap(Tier tier, std::optional<uint64_t> budget) {
  TierCapacity c;
  c.tier = tier;
  c.budget = budget;
  return c;
}

PlanRequest request(std::vector<PlanModule> modules, std::vector<TierCapacity> accelerators,
                    std::optional<uint64_t> cpu, std::optional<uint64_t> disk, int depth = 1) {
  PlanRequest r;
  r.modules = std::move(modules);
  r.accelerators = std::move(accelerators);
  if (cpu) r.cpu = cap(kCpu, *cpu);
  if (disk) r.disk = cap(kDisk, *disk);
  r.prefetch_depth = depth;
  r.disk_staging_bytes = 0;
  return r;
}

// The message of the OutOfBudgetError planning `r` throws ("" and a test
// failure when it throws none).
std::string out_of_budget_message(const PlanRequest& r) {
  try {
    plan_device_map(r);
  } catch (const OutOfBudgetError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected OutOfBudgetError";
  return "";
}

TEST(Planner, EverythingFitsOnTheAcceleratorWithNoReserve) {
  const Plan plan = plan_device_map(request(layers(4, 100), {cap(kAcc0, 400)}, 1000, {}));
  for (const auto& [module, tier] : plan.device_map) EXPECT_EQ(tier, kAcc0) << module;
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0), 400u);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 0u) << "nothing streams: no reserve";
  EXPECT_EQ(plan.largest_streamed_unit, 0u);
}

TEST(Planner, SpillsToCpuAndReservesSlotsForTheLargestStreamedModule) {
  // 1100 bytes of layers, 1000 of accelerator, depth 1: once anything
  // streams, 2 slots x 100 are kept, leaving 800 for 8 resident layers.
  const Plan plan = plan_device_map(request(layers(11, 100), {cap(kAcc0, 1000)}, 10000, {}));
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 8u);
  EXPECT_EQ(plan.modules_on(kCpu), (std::vector<std::string>{"layers.8", "layers.9", "layers.10"}));
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 200u);
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0) + plan.reserve_per_accelerator.at(kAcc0), 1000u);
  EXPECT_TRUE(plan.streamed("layers.9"));
  EXPECT_FALSE(plan.streamed("layers.0"));
}

TEST(Planner, ReserveFollowsWhatEndsUpStreamed) {
  // Without a reserve layers 0-3 fit and layer 4 (500) streams; then 2 slots
  // x 500 must be kept, which pushes layers 2 and 3 off too: the iteration
  // accelerate does.
  std::vector<PlanModule> modules = layers(3, 100);
  modules.push_back(PlanModule{"layers.3", {{"weight", 500}}});
  modules.push_back(PlanModule{"layers.4", {{"weight", 500}}});
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 1200)}, 10000, {}));
  EXPECT_EQ(plan.largest_streamed_unit, 500u);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 1000u);
  EXPECT_EQ(plan.modules_on(kAcc0), (std::vector<std::string>{"layers.0", "layers.1"}));
  EXPECT_EQ(plan.modules_on(kCpu), (std::vector<std::string>{"layers.2", "layers.3", "layers.4"}));
}

TEST(Planner, KeepsALargeLateUnitResidentWhenItsSlotsWouldCostMore) {
  // Four layers of 100 and a head of 300 under 650 bytes. In execution order
  // the head streams, its 2 slots of 300 leave 50 bytes, and nothing stays
  // resident. Keeping the head resident instead (step 7) shrinks the slots to
  // 2 x 100 and leaves room for layer 0 beside it.
  std::vector<PlanModule> modules = layers(4, 100);
  modules.push_back(PlanModule{"head", {{"weight", 300}}});
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 650)}, 10000, {}));
  EXPECT_EQ(plan.modules_on(kAcc0), (std::vector<std::string>{"layers.0", "head"}));
  EXPECT_EQ(plan.modules_on(kCpu), (std::vector<std::string>{"layers.1", "layers.2", "layers.3"}));
  EXPECT_EQ(plan.largest_streamed_unit, 100u);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 200u);
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0), 400u);
}

TEST(Planner, KeepsAnOutlierResidentOnlyWhereThatHoldsMore) {
  // Ten layers of 100 and a head of 150 under 1000 bytes: in order, 7
  // layers stay resident beside 2 slots of 150 (700 bytes). Keeping the head
  // resident leaves 2 slots of 100 and 6 layers beside it (750 bytes): more,
  // so it is kept.
  std::vector<PlanModule> modules = layers(10, 100);
  modules.push_back(PlanModule{"head", {{"weight", 150}}});
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 1000)}, 10000, {}));
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0), 750u);
  EXPECT_FALSE(plan.streamed("head"));
  // A head of 900 leaves no room for the slots of the layers it would push
  // off: it stays streamed.
  std::vector<PlanModule> big = layers(10, 100);
  big.push_back(PlanModule{"head", {{"weight", 900}}});
  const Plan streamed = plan_device_map(request(big, {cap(kAcc0, 1000)}, 10000, {}));
  EXPECT_TRUE(streamed.streamed("head"));
  EXPECT_EQ(streamed.largest_streamed_unit, 900u);
}

TEST(Planner, AModuleReadInPlaceTakesNoFetchSlot) {
  // An embedding table read where it is (its rows) never enters a slot: off
  // the accelerator it reserves nothing, and the layers beside it stay.
  std::vector<PlanModule> modules = layers(4, 100);
  modules.push_back(PlanModule{"embed", {{"weight", 300}}});
  modules.back().read_in_place = true;
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 450)}, 10000, {}));
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 4u);
  EXPECT_EQ(plan.modules_on(kCpu), (std::vector<std::string>{"embed"}));
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 0u);
  EXPECT_EQ(plan.largest_streamed_unit, 0u);
  // Not read in place, the same table sizes two slots of 300 and pushes
  // every layer off.
  modules.back().read_in_place = false;
  const Plan fetched = plan_device_map(request(modules, {cap(kAcc0, 450)}, 10000, {}));
  EXPECT_EQ(fetched.largest_streamed_unit, 300u);
}

TEST(Planner, ReserveIsPrefetchDepthPlusOneSlots) {
  const Plan plan = plan_device_map(request(layers(20, 100), {cap(kAcc0, 1000)}, 10000, {}, 3));
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 400u);
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 6u);
}

// Step 8: 12 layers of 100 bytes and a 50-byte head under 700 bytes with
// two slots: 5 layers stay resident (500 + 200 of slots). In execution order
// they are the first five; spread, the same five are at evenly spaced
// positions among the layers, and the head (another size) stays where it was.
TEST(Planner, SpreadsResidentLayersEvenlyAmongTheStreamedOnes) {
  std::vector<PlanModule> modules = layers(12, 100);
  modules.push_back(PlanModule{"head", {{"weight", 50}}});
  PlanRequest r = request(modules, {cap(kAcc0, 700)}, 10000, {});
  const Plan in_order = plan_device_map(r);
  r.spread_resident = true;
  const Plan spread = plan_device_map(r);
  std::string pattern_in_order, pattern_spread;
  for (int i = 0; i < 12; ++i) {
    const std::string m = "layers." + std::to_string(i);
    pattern_in_order += in_order.tier_of(m) == kAcc0 ? 'r' : 's';
    pattern_spread += spread.tier_of(m) == kAcc0 ? 'r' : 's';
  }
  EXPECT_EQ(pattern_in_order, "rrrrrsssssss");
  EXPECT_EQ(pattern_spread, "srsrssrsrsrs");  // positions (2i + 1) * 12 / 10
  EXPECT_EQ(spread.tier_of("head"), in_order.tier_of("head"));
  EXPECT_EQ(spread.bytes_per_tier, in_order.bytes_per_tier);
  EXPECT_EQ(spread.reserve_per_accelerator, in_order.reserve_per_accelerator);
  EXPECT_EQ(spread.largest_streamed_unit, in_order.largest_streamed_unit);
  // A layer with a tensor placed apart (step 6), or of another size, keeps
  // its place; the others spread around it.
  r.modules[1].tensors[0].tier = kCpu;
  const Plan with_override = plan_device_map(r);
  std::string pattern_override;
  for (int i = 0; i < 12; ++i) {
    pattern_override += with_override.tier_of("layers." + std::to_string(i)) == kAcc0 ? 'r' : 's';
  }
  // The other 11 layers, 5 resident at (2i + 1) * 11 / 10 among them.
  EXPECT_EQ(pattern_override, "ssrsrsrsrsrs");
}

TEST(Planner, SpillsToDiskWhenCpuIsFull) {
  const Plan plan = plan_device_map(request(layers(6, 100), {cap(kAcc0, 400)}, 200, 10000));
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 2u);
  EXPECT_EQ(plan.modules_on(kCpu).size(), 2u);
  EXPECT_EQ(plan.modules_on(kDisk), (std::vector<std::string>{"layers.4", "layers.5"}));
  EXPECT_EQ(plan.bytes_per_tier.at(kDisk), 200u);
}

TEST(Planner, KeepsDiskStagingOnCpuOnlyWhenSomethingGoesToDisk) {
  PlanRequest r = request(layers(6, 100), {cap(kAcc0, 400)}, 250, 10000);
  r.disk_staging_bytes = 100;
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.cpu_reserve, 100u);
  EXPECT_EQ(plan.modules_on(kCpu).size(), 1u) << "250 - 100 staging leaves room for one layer";
  EXPECT_EQ(plan.modules_on(kDisk).size(), 3u);
  PlanRequest no_disk = request(layers(3, 100), {cap(kAcc0, 400)}, 250, 10000);
  no_disk.disk_staging_bytes = 100;
  EXPECT_EQ(plan_device_map(no_disk).cpu_reserve, 0u);
}

// Issue #15 item 4 (plan fails whenever run would): the offload manager
// stages disk reads through a pinned buffer of the staging size capped at the
// largest tensor on disk, from the cpu budget. The plan reserved the whole
// staging size (8 MiB by default) and passed when the cpu budget could not
// hold it, and the run then failed at dispatch.
TEST(Planner, ACpuBudgetBelowTheDiskStagingBufferFailsNamingTheTensorAndBytes) {
  std::vector<PlanModule> modules = layers(8, 100);
  // A unit that streams, its slot (676 bytes) within the accelerator's 700:
  // keeping it resident would leave no room for the others' slots (step 7).
  modules[6].tensors.push_back({"bias", 420});
  PlanRequest r = request(modules, {cap(kAcc0, 700)}, 100, 10000);
  r.disk_staging_bytes = uint64_t{8} << 20;
  const std::string message = out_of_budget_message(r);
  EXPECT_NE(message.find("pinned buffer disk reads are staged through: 420 bytes"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("layers.6.bias"), std::string::npos) << message;
  EXPECT_NE(message.find("cpu=100"), std::string::npos) << message;

  r.cpu = cap(kCpu, 420);
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.cpu_reserve, 420u) << "the largest tensor on disk, not the 8 MiB staging size";
  EXPECT_EQ(plan.modules_on(kCpu).size(), 0u);
  r.disk_staging_bytes = 120;
  EXPECT_EQ(plan_device_map(r).cpu_reserve, 120u) << "the staging size when it is smaller";
}

TEST(Planner, FillsSeveralAcceleratorsInOrderBeforeTheHost) {
  // Budgets as transformers' int8 guide gives them: {0: 1x, 1: 2x}.
  const Plan plan =
      plan_device_map(request(layers(10, 100), {cap(kAcc0, 300), cap(kAcc1, 600)}, 10000, {}));
  EXPECT_EQ(plan.modules_on(kAcc0), (std::vector<std::string>{"layers.0"}));
  EXPECT_EQ(plan.modules_on(kAcc1),
            (std::vector<std::string>{"layers.1", "layers.2", "layers.3", "layers.4"}));
  EXPECT_EQ(plan.modules_on(kCpu).size(), 5u);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 200u);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc1), 200u);
}

TEST(Planner, AcceleratorWithoutBudgetIsLimitedByItsPhysicalSize) {
  PlanRequest r = request(layers(5, 100), {cap(kAcc0, std::nullopt)}, 10000, {});
  r.accelerators[0].physical_bytes = 250;
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 0u) << "250 - 2 x 100 reserve leaves 50";
  r.accelerators[0].physical_bytes = 400;
  EXPECT_EQ(plan_device_map(r).modules_on(kAcc0).size(), 2u);
}

TEST(Planner, TiedTensorsArePlacedOnceAndCountedOnce) {
  std::vector<PlanModule> modules = {
      {"embed", {{"weight", 300}}},
      {"layers.0", {{"weight", 100}}},
      {"head", {{"weight", 300}}},
  };
  PlanRequest r = request(modules, {cap(kAcc0, 700)}, 10000, {});
  r.tied = {{"embed.weight", "head.weight"}};
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0), 400u) << "the shared storage counts once";
  EXPECT_EQ(plan.tier_of("head"), kAcc0);
  EXPECT_EQ(plan.tied_to.at("head.weight"), "embed.weight");
  r.tied = {{"embed.weight", "nowhere.weight"}};
  EXPECT_THROW(plan_device_map(r), InvalidInputError);
}

TEST(Planner, NoSplitPatternKeepsAGroupOfModulesOnOneTier) {
  std::vector<PlanModule> modules;
  for (int block = 0; block < 2; ++block) {
    for (const char* part : {"a", "b", "c"}) {
      modules.push_back(
          PlanModule{"block." + std::to_string(block) + "." + part, {{"weight", 200}}});
    }
  }
  PlanRequest r = request(modules, {cap(kAcc0, 1000)}, 10000, {}, 0);
  const Plan split = plan_device_map(r);
  EXPECT_NE(split.tier_of("block.1.a"), split.tier_of("block.1.c"))
      << "without the pattern, block.1 is split across tiers";
  r.no_split = {R"(block\.\d+)"};
  const Plan whole = plan_device_map(r);
  for (int block = 0; block < 2; ++block) {
    const std::string b = "block." + std::to_string(block);
    EXPECT_EQ(whole.tier_of(b + ".a"), whole.tier_of(b + ".b")) << b;
    EXPECT_EQ(whole.tier_of(b + ".a"), whole.tier_of(b + ".c")) << b;
  }
  EXPECT_EQ(whole.largest_streamed_unit, 600u) << "the unit streamed is the whole block";
}

TEST(Planner, NoSplitOnALeafLayerChangesNothingForTheMlpFamily) {
  PlanRequest r = request(layers(10, 100), {cap(kAcc0, 1000)}, 10000, {});
  const Plan before = plan_device_map(r);
  r.no_split = {R"(layers\.\d+)"};
  EXPECT_EQ(plan_device_map(r).device_map, before.device_map);
}

TEST(Planner, NothingFitsNamesTheModuleItsBytesAndTheBudgets) {
  std::vector<PlanModule> modules = layers(2, 100);
  modules.push_back(PlanModule{"layers.2", {{"weight", 5000}}});
  try {
    plan_device_map(request(modules, {cap(kAcc0, 1000)}, 2000, {}));
    FAIL() << "expected OutOfBudgetError";
  } catch (const OutOfBudgetError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("layers.2"), std::string::npos) << message;
    EXPECT_NE(message.find("5000 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("sim:0="), std::string::npos) << message;
    EXPECT_NE(message.find("cpu="), std::string::npos) << message;
    EXPECT_NE(message.find("disk=not used"), std::string::npos) << message;
  }
}

TEST(Planner, RejectsBadInput) {
  PlanRequest dup = request(layers(2, 1), {cap(kAcc0, 10)}, 10, {});
  dup.modules[1].path = dup.modules[0].path;
  EXPECT_THROW(plan_device_map(dup), InvalidInputError);
  PlanRequest bad_regex = request(layers(2, 1), {cap(kAcc0, 10)}, 10, {});
  bad_regex.no_split = {"("};
  EXPECT_THROW(plan_device_map(bad_regex), InvalidInputError);
  EXPECT_THROW(plan_device_map(request(layers(2, 1), {cap(kCpu, 10)}, 10, {})), InvalidInputError);
}

TEST(Planner, PrintsTheMapBytesPerTierAndReserves) {
  const PlanRequest r = request(layers(3, 100), {cap(kAcc0, 300)}, 10000, {});
  const std::string text = plan_device_map(r).to_string(r);
  EXPECT_NE(text.find("layers.0"), std::string::npos) << text;
  EXPECT_NE(text.find("sim:0"), std::string::npos) << text;
  EXPECT_NE(text.find("reserve"), std::string::npos) << text;
}

// Working memory (activations, kernel scratch) is kept before placement:
// without it, a tight budget filled with modules leaves the forwards no room
// and prefetching falls back to synchronous fetches.
TEST(Planner, KeepsTheWorkingReserveBeforePlacingAndPrintsIt) {
  // 1100 bytes of layers, 1000 of accelerator, depth 1, 150 working bytes:
  // 2 slots x 100 + 150 kept, leaving 650 for 6 resident layers.
  PlanRequest r = request(layers(11, 100), {cap(kAcc0, 1000)}, 10000, {});
  r.working_reserve[kAcc0] = 150;
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 6u);
  EXPECT_EQ(plan.working_reserve_per_accelerator.at(kAcc0), 150u);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 200u);
  EXPECT_LE(plan.bytes_per_tier.at(kAcc0) + plan.reserve_per_accelerator.at(kAcc0) +
                plan.working_reserve_per_accelerator.at(kAcc0),
            1000u);
  const std::string text = plan.to_string(r);
  EXPECT_NE(text.find("working-memory reserve (activations and kernel scratch)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("150"), std::string::npos) << text;
}

// Issue #15 item 4: the plan accepted budgets whose fetch slots and working
// reserve did not fit, and the run then failed at its first forward ("no
// fetch slot could be allocated"). One slot of the largest streamed unit
// beside the working reserve is the least the offload manager runs with
// (fetches then wait for it); prefetch depth d wants d + 1.
TEST(Planner, ABudgetBelowOneFetchSlotAndTheWorkingReserveFailsNamingTheBytes) {
  std::vector<PlanModule> modules = layers(3, 100);
  modules.push_back(PlanModule{"layers.3", {{"weight", 300}}});
  PlanRequest r = request(modules, {cap(kAcc0, 349)}, 10000, {});
  r.working_reserve[kAcc0] = 50;
  const std::string message = out_of_budget_message(r);
  EXPECT_NE(message.find("sim:0 cannot hold one fetch slot for the streamed module layers.3 (300 "
                         "bytes"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("working-memory reserve of 50 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("needs at least 350 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("sim:0=349 B (349 bytes)"), std::string::npos) << message;
  r.accelerators[0].budget = 350;  // exactly one slot beside the working reserve
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.fetch_slots, 1);
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 300u);
  EXPECT_EQ(plan.modules_on(kCpu).size(), 4u);
}

TEST(Planner, KeepsTheSlotsThatFitWhenFewerThanPrefetchWantsAndSaysSo) {
  PlanRequest r = request(layers(4, 100), {cap(kAcc0, 249)}, 10000, {}, 1);
  r.working_reserve[kAcc0] = 50;
  const Plan one = plan_device_map(r);
  EXPECT_EQ(one.fetch_slots, 1) << "2 slots + 50 need 250 bytes";
  EXPECT_EQ(one.reserve_per_accelerator.at(kAcc0), 100u);
  EXPECT_NE(one.to_string(r).find("1 of its 2 slots of 100 bytes fit"), std::string::npos)
      << one.to_string(r);
  r.accelerators[0].budget = 250;
  const Plan two = plan_device_map(r);
  EXPECT_EQ(two.fetch_slots, 2);
  EXPECT_EQ(two.reserve_per_accelerator.at(kAcc0), 200u);
  EXPECT_EQ(two.to_string(r).find("fit;"), std::string::npos) << two.to_string(r);
}

TEST(Planner, WorkingReserveIsKeptOnlyWhereGiven) {
  PlanRequest r = request(layers(4, 100), {cap(kAcc0, 300), cap(kAcc1, 300)}, 10000, {});
  r.working_reserve[kAcc0] = 100;
  const Plan plan = plan_device_map(r);
  EXPECT_EQ(plan.working_reserve_per_accelerator.at(kAcc1), 0u);
  EXPECT_EQ(plan.modules_on(kAcc0).size(), 2u);
  EXPECT_EQ(plan.modules_on(kAcc1).size(), 2u);
  const std::string plain = plan_device_map(request(layers(3, 100), {cap(kAcc0, 300)}, 10000, {}))
                                .to_string(request(layers(3, 100), {cap(kAcc0, 300)}, 10000, {}));
  EXPECT_EQ(plain.find("working-memory"), std::string::npos) << "no line when none is kept";
}

TEST(Planner, AWorkingReserveLargerThanTheBudgetIsAClearError) {
  PlanRequest r = request(layers(2, 100), {cap(kAcc0, 1000)}, 10000, {});
  r.working_reserve[kAcc0] = 4096;
  const std::string message = out_of_budget_message(r);
  EXPECT_NE(message.find("sim:0 cannot hold its working-memory reserve"), std::string::npos)
      << message;
  EXPECT_NE(message.find("4096 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("sim:0=1000 B (1000 bytes)"), std::string::npos) << message;
  PlanRequest stray = request(layers(2, 100), {cap(kAcc0, 1000)}, 10000, {});
  stray.working_reserve[kAcc1] = 1;
  EXPECT_THROW(plan_device_map(stray), InvalidInputError);
}

TEST(Planner, NothingFitsNamesTheWorkingReserveToo) {
  PlanRequest r = request(layers(3, 100), {cap(kAcc0, 300)}, 100, {});
  r.working_reserve[kAcc0] = 250;
  const std::string message = out_of_budget_message(r);
  EXPECT_NE(message.find("layers.1"), std::string::npos) << message;
  EXPECT_NE(message.find("working-memory reserve (activations and kernel scratch) sim:0=250 bytes"),
            std::string::npos)
      << message;
}

// One capacity builder (memory_budget_for): every accelerator with its
// physical size, a budget only where given; the manager enforces budget_of.
TEST(Planner, MemoryBudgetForAPlatformHoldsEveryAcceleratorAndItsBudget) {
  SimOptions sim;
  sim.accelerator_count = 2;
  auto platform = Platform::create(DeviceChoice::kSim, sim);
  MemoryBudget b = memory_budget_for(*platform, {{1, 500}}, 300, 1000);
  ASSERT_EQ(b.accelerators.size(), 2u);
  EXPECT_FALSE(b.accelerators[0].budget.has_value());
  EXPECT_EQ(b.accelerators[0].limit(), platform->accelerator(0).total_bytes());
  EXPECT_EQ(b.accelerators[1].limit(), 500u);
  EXPECT_EQ(b.cpu->limit(), 300u);
  EXPECT_FALSE(b.disk.has_value());
  EXPECT_EQ(b.budget_of(kAcc1), 500u);
  EXPECT_FALSE(b.budget_of(Tier::pageable_host()).has_value());
  b.set_budget(kDisk, 7);
  EXPECT_EQ(b.budget_of(kDisk), 7u);
  EXPECT_THROW(memory_budget_for(*platform, {{2, 1}}), InvalidInputError);
}

// --- Tensors placed apart from their module (--override-tensor, step 6).

// `n` layers "layers.i" of an attention weight of `attn` bytes and an mlp
// weight of `mlp` bytes.
std::vector<PlanModule> two_part_layers(int n, uint64_t attn, uint64_t mlp) {
  std::vector<PlanModule> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(PlanModule{"layers." + std::to_string(i), {{"attn", attn}, {"mlp", mlp}}});
  }
  return out;
}

TEST(PlannerOverrides, AnOverriddenTensorIsPlacedOnItsTierAndTheRestOfItsModuleStays) {
  // llama.cpp's -ot "mlp=CPU": every layer's attention on the accelerator,
  // its mlp weight in host RAM.
  std::vector<PlanModule> modules = two_part_layers(4, 100, 300);
  for (PlanModule& m : modules) m.tensors[1].tier = kCpu;
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 1000)}, 10000, {}));
  for (int i = 0; i < 4; ++i) {
    const std::string m = "layers." + std::to_string(i);
    EXPECT_EQ(plan.tier_of(m), kAcc0) << m;
    EXPECT_EQ(plan.tier_of_tensor(m, "attn"), kAcc0) << m;
    EXPECT_EQ(plan.tier_of_tensor(m, "mlp"), kCpu) << m;
    EXPECT_TRUE(plan.on_several_tiers(m)) << m;
    EXPECT_TRUE(plan.streamed(m)) << m << ": its mlp weight is fetched for every forward";
  }
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0), 400u);
  EXPECT_EQ(plan.bytes_per_tier.at(kCpu), 1200u);
  EXPECT_EQ(plan.largest_streamed_unit, 300u) << "a slot holds the mlp weight only";
  EXPECT_EQ(plan.reserve_per_accelerator.at(kAcc0), 600u);
}

TEST(PlannerOverrides, OverridesToTheAcceleratorAreTakenBeforeAnyModuleIsPlaced) {
  // The four mlp weights forced onto a 1000-byte accelerator leave 200 - the
  // slot reserve for the rest: every other tensor streams.
  std::vector<PlanModule> modules = two_part_layers(4, 100, 200);
  for (PlanModule& m : modules) m.tensors[1].tier = kAcc0;
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 1000)}, 10000, {}));
  EXPECT_EQ(plan.bytes_per_tier.at(kAcc0), 800u);
  for (int i = 0; i < 4; ++i) {
    const std::string m = "layers." + std::to_string(i);
    EXPECT_EQ(plan.tier_of_tensor(m, "mlp"), kAcc0) << m;
    EXPECT_EQ(plan.tier_of_tensor(m, "attn"), kCpu) << m;
  }
  EXPECT_EQ(plan.largest_streamed_unit, 100u) << "the slot holds the attention weight only";
}

TEST(PlannerOverrides, AnOverrideThatDoesNotFitNamesTheTensorTheTierBytesAndBudget) {
  std::vector<PlanModule> modules = two_part_layers(3, 100, 300);
  for (PlanModule& m : modules) m.tensors[1].tier = kCpu;
  const std::string message =
      out_of_budget_message(request(modules, {cap(kAcc0, 10000)}, 700, {}));
  EXPECT_NE(message.find("layers.2.mlp"), std::string::npos) << message;
  EXPECT_NE(message.find("(300 bytes)"), std::string::npos) << message;
  EXPECT_NE(message.find("overridden to cpu"), std::string::npos) << message;
  EXPECT_NE(message.find("holds 700 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("before it take 600"), std::string::npos) << message;
}

TEST(PlannerOverrides, AnOverrideToTheAcceleratorCountsItsWorkingReserve) {
  std::vector<PlanModule> modules = two_part_layers(1, 100, 300);
  modules[0].tensors[1].tier = kAcc0;
  PlanRequest r = request(modules, {cap(kAcc0, 350)}, 10000, {});
  r.working_reserve[kAcc0] = 100;
  const std::string message = out_of_budget_message(r);
  EXPECT_NE(message.find("working-memory reserve 100"), std::string::npos) << message;
}

TEST(PlannerOverrides, AnOverrideToATierThePlanDoesNotFillIsRefused) {
  std::vector<PlanModule> modules = two_part_layers(1, 100, 300);
  modules[0].tensors[1].tier = kDisk;
  EXPECT_THROW(plan_device_map(request(modules, {cap(kAcc0, 10000)}, 10000, {})),
               InvalidInputError);
  modules[0].tensors[1].tier = kAcc1;
  EXPECT_THROW(plan_device_map(request(modules, {cap(kAcc0, 10000)}, 10000, {})),
               InvalidInputError);
}

TEST(PlannerOverrides, AModuleWhollyOverriddenOffTheAcceleratorIsStreamedFromThere) {
  std::vector<PlanModule> modules = two_part_layers(2, 100, 300);
  modules[1].tensors[0].tier = kDisk;
  modules[1].tensors[1].tier = kDisk;
  const Plan plan = plan_device_map(request(modules, {cap(kAcc0, 10000)}, 10000, 10000));
  EXPECT_EQ(plan.tier_of("layers.0"), kAcc0);
  EXPECT_FALSE(plan.streamed("layers.0"));
  EXPECT_EQ(plan.tier_of("layers.1"), kDisk);
  EXPECT_FALSE(plan.on_several_tiers("layers.1"));
  EXPECT_TRUE(plan.streamed("layers.1"));
  EXPECT_EQ(plan.bytes_per_tier.at(kDisk), 400u);
  EXPECT_EQ(plan.largest_streamed_unit, 556u) << "100 bytes, then 300 at offset 256";
}

}  // namespace
}  // namespace stowage
