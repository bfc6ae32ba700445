// The residency table: one record per tensor, quant-state parts as records
// linked to their weight (seed lesson 1), queries, report, thread safety.
#include "offload/residency_table.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage {
namespace {

TensorSpec spec(const std::string& module, const std::string& name, DType dtype, Shape shape,
                Tier home = Tier::pinned_host(), TensorRole role = TensorRole::kWeight) {
  TensorSpec s;
  s.module = module;
  s.name = name;
  s.role = role;
  s.dtype = dtype;
  s.shape = std::move(shape);
  s.home = home;
  return s;
}

TEST(ResidencyTable, RecordKeepsWhatWasDeclaredAndComputesBytes) {
  ResidencyTable table;
  const RecordId id = table.add(spec("layers.0", "weight", DType::kF16, Shape{4, 8}));
  const TensorRecord r = table.get(id);
  EXPECT_EQ(r.module, "layers.0");
  EXPECT_EQ(r.name, "weight");
  EXPECT_EQ(r.role_name(), "weight");
  EXPECT_EQ(r.dtype, DType::kF16);
  EXPECT_EQ(r.shape, (Shape{4, 8}));
  EXPECT_EQ(r.bytes, 64u);
  EXPECT_EQ(r.home, Tier::pinned_host());
  EXPECT_TRUE(r.copies.empty());
  EXPECT_EQ(r.pin_count, 0);
}

TEST(ResidencyTable, QuantStatePartsAreRecordsLinkedToTheirWeight) {
  // Seed lesson 1: the state of an int8 / 4-bit weight is tracked, not hidden.
  ResidencyTable table;
  const Tier acc = Tier::accelerator(Backend::kSim, 0);
  const RecordId w = table.add(spec("layers.0", "weight", DType::kPacked4, Shape{64, 1}, acc));
  const RecordId absmax = table.add_quant_part(w, "absmax", DType::kF32, Shape{1});
  const RecordId scb = table.add_quant_part(w, "SCB", DType::kF32, Shape{8}, "SCB");
  const TensorRecord wr = table.get(w);
  EXPECT_EQ(wr.quant_parts, (std::vector<RecordId>{absmax, scb}));
  const TensorRecord ar = table.get(absmax);
  EXPECT_EQ(ar.name, "weight.absmax");
  EXPECT_EQ(ar.role_name(), "quant_state:absmax");
  EXPECT_EQ(ar.quant_state_of, w);
  EXPECT_EQ(ar.home, acc) << "a part lives where its weight lives";
  EXPECT_EQ(table.get(scb).name, "SCB");
  EXPECT_EQ(table.records_of("layers.0").size(), 3u);
  EXPECT_EQ(table.module_bytes("layers.0"), 32u + 4u + 32u);
}

TEST(ResidencyTable, RejectsDuplicatesUnknownIdsAndPartsWithoutWeight) {
  ResidencyTable table;
  table.add(spec("m", "weight", DType::kF32, Shape{2}));
  EXPECT_THROW(table.add(spec("m", "weight", DType::kF32, Shape{2})), InvalidInputError);
  EXPECT_THROW(table.get(7), InvalidInputError);
  EXPECT_THROW(table.add(spec("m", "x", DType::kF32, Shape{2}, Tier::pinned_host(),
                              TensorRole::kQuantState)),
               InvalidInputError);
  EXPECT_THROW(table.add(spec("m", "bad", DType::kF32, Shape{-1})), InvalidInputError);
  EXPECT_THROW(table.add_quant_part(42, "absmax", DType::kF32, Shape{1}), InvalidInputError);
}

TEST(ResidencyTable, CopiesAnswerQueriesByTierAndModule) {
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  ResidencyTable table;
  const RecordId a = table.add(spec("a", "weight", DType::kF32, Shape{4}));
  const RecordId b = table.add(spec("b", "weight", DType::kF32, Shape{8}));
  table.set_copy(a, Tensor::empty(pinned, DType::kF32, Shape{4}));
  table.set_copy(b, Tensor::empty(pinned, DType::kF32, Shape{8}));
  EXPECT_EQ(table.bytes_on(Tier::pinned_host()), 48u);
  EXPECT_EQ(table.module_bytes_on("b", Tier::pinned_host()), 32u);
  EXPECT_EQ(table.records_on(Tier::pinned_host()), (std::vector<RecordId>{a, b}));
  EXPECT_EQ(table.tiers_of(a), (std::vector<Tier>{Tier::pinned_host()}));
  Tensor taken = table.take_copy(a, Tier::pinned_host());
  EXPECT_TRUE(taken.defined());
  EXPECT_FALSE(table.copy_on(a, Tier::pinned_host()).defined());
  EXPECT_EQ(table.bytes_on(Tier::pinned_host()), 32u);
  EXPECT_EQ(table.total_bytes(), 48u);
  EXPECT_EQ(table.modules(), (std::vector<std::string>{"a", "b"}));
}

TEST(ResidencyTable, RejectsACopyOfAnotherSizeOrDtype) {
  HostMemoryResource pinned(Tier::pinned_host(), "pinned");
  ResidencyTable table;
  const RecordId a = table.add(spec("a", "weight", DType::kF32, Shape{4}));
  EXPECT_THROW(table.set_copy(a, Tensor::empty(pinned, DType::kF32, Shape{5})), InvalidInputError);
  EXPECT_THROW(table.set_copy(a, Tensor::empty(pinned, DType::kI32, Shape{4})), InvalidInputError);
}

TEST(ResidencyTable, PinsAndCountersAccumulate) {
  ResidencyTable table;
  const RecordId a = table.add(spec("a", "weight", DType::kF32, Shape{4}));
  table.pin(a);
  table.pin(a);
  table.unpin(a);
  EXPECT_EQ(table.get(a).pin_count, 1);
  table.unpin(a);
  EXPECT_THROW(table.unpin(a), InternalError);
  table.note_copy(a, 16);
  table.note_copy(a, 16);
  EXPECT_EQ(table.get(a).copies_made, 2u);
  EXPECT_EQ(table.get(a).bytes_moved, 32u);
}

TEST(ResidencyTable, ReportListsEachModuleWithTierBytesAndMoves) {
  ResidencyTable table;
  const RecordId a = table.add(spec("layers.0", "weight", DType::kF32, Shape{4}));
  table.add(
      spec("layers.0", "bias", DType::kF32, Shape{2}, Tier::pinned_host(), TensorRole::kBias));
  table.add(spec("layers.1", "weight", DType::kF16, Shape{4}, Tier::disk()));
  table.note_copy(a, 16);
  const auto modules = table.module_report();
  ASSERT_EQ(modules.size(), 2u);
  EXPECT_EQ(modules[0].bytes, 24u);
  EXPECT_EQ(modules[0].copies_made, 1u);
  EXPECT_EQ(modules[0].bytes_moved, 16u);
  EXPECT_EQ(modules[1].home, Tier::disk());
  const std::string report = table.report();
  EXPECT_NE(report.find("layers.0"), std::string::npos) << report;
  EXPECT_NE(report.find("layers.1"), std::string::npos) << report;
  EXPECT_NE(report.find("disk"), std::string::npos) << report;
  EXPECT_NE(report.find("total"), std::string::npos) << report;
}

// A module on several tiers (--override-tensor) shows them all, and the
// totals per tier count each record on its own home.
TEST(ResidencyTable, ReportOfAModuleOnSeveralTiersCountsEachRecordOnItsHome) {
  const Tier acc = Tier::accelerator(Backend::kSim, 0);
  ResidencyTable table;
  table.add(spec("layers.0", "weight", DType::kF32, Shape{4}, Tier::pinned_host()));
  table.add(spec("layers.0", "bias", DType::kF32, Shape{2}, acc, TensorRole::kBias));
  const auto modules = table.module_report();
  ASSERT_EQ(modules.size(), 1u);
  EXPECT_EQ(modules[0].bytes_by_home.at(Tier::pinned_host()), 16u);
  EXPECT_EQ(modules[0].bytes_by_home.at(acc), 8u);
  const std::string report = table.report();
  EXPECT_NE(report.find("layers.0  cpu+sim:0"), std::string::npos) << report;
  EXPECT_NE(report.find("cpu: 16 B (16 bytes)"), std::string::npos) << report;
  EXPECT_NE(report.find("sim:0: 8 B (8 bytes)"), std::string::npos) << report;
}

TEST(ResidencyTable, ConcurrentAddsPinsAndQueriesStayConsistent) {
  ResidencyTable table;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&table, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const RecordId id = table.add(
            spec("m" + std::to_string(t), "w" + std::to_string(i), DType::kF32, Shape{1}));
        table.pin(id);
        table.note_copy(id, 4);
        table.unpin(id);
        (void)table.total_bytes();
        (void)table.report();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(table.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(table.total_bytes(), static_cast<uint64_t>(kThreads * kPerThread * 4));
  for (RecordId id = 0; id < table.size(); ++id) {
    EXPECT_EQ(table.get(id).pin_count, 0);
    EXPECT_EQ(table.get(id).copies_made, 1u);
  }
}

}  // namespace
}  // namespace stowage
