// Specification of the module tree and the hook registry: hooks run in order
// around the forward, are removable by handle, and always pair with the
// forward even when it throws.
#include "hooks/hook_registry.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage::hooks {
namespace {

Module& leaf_with_log(Module& root, const std::string& path, std::vector<std::string>& log) {
  Module& m = root.add_descendant(path);
  m.set_forward([&log](ForwardContext& ctx) { log.push_back("forward " + ctx.path()); });
  return m;
}

TEST(ModuleTree, PathsJoinNamesWithDots) {
  Module root;
  Module& layer = root.add_descendant("layers.3");
  EXPECT_EQ(layer.path(), "layers.3");
  EXPECT_EQ(layer.name(), "3");
  EXPECT_EQ(layer.parent()->path(), "layers");
  EXPECT_EQ(root.find("layers.3"), &layer);
  EXPECT_EQ(root.find("layers.4"), nullptr);
  EXPECT_EQ(root.find(""), &root);
}

TEST(ModuleTree, RefusesDuplicateChildAndTensorNames) {
  Module root;
  root.add_child("a");
  EXPECT_THROW(root.add_child("a"), InvalidInputError);
  EXPECT_THROW(root.add_child("a.b"), InvalidInputError);
  Module& a = *root.find("a");
  a.add_tensor("weight");
  EXPECT_THROW(a.add_tensor("weight"), InvalidInputError);
}

TEST(ModuleTree, ForEachVisitsParentsBeforeChildrenInInsertionOrder) {
  Module root;
  root.add_descendant("layers.0");
  root.add_descendant("layers.1");
  root.add_descendant("head");
  std::vector<std::string> paths;
  root.for_each([&](Module& m) { paths.push_back(m.path()); });
  EXPECT_EQ(paths, (std::vector<std::string>{"", "layers", "layers.0", "layers.1", "head"}));
}

TEST(ForwardContext, GivesTheModulesResidentTensorsAsViews) {
  HostMemoryResource host;
  Module root;
  Module& m = root.add_child("lin");
  Tensor w = Tensor::empty(host, DType::kF32, Shape{2, 3});
  m.add_tensor("weight", w);
  m.add_tensor("bias");  // no bytes here: a hook must provide them
  HookRegistry registry;
  bool ran = false;
  m.set_forward([&](ForwardContext& ctx) {
    EXPECT_EQ(ctx.tensor("weight").data(), w.data());
    EXPECT_EQ(ctx.tensor("weight").shape(), (Shape{2, 3}));
    EXPECT_THROW(ctx.tensor("bias"), InvalidInputError);
    EXPECT_THROW(ctx.tensor("missing"), InvalidInputError);
    ran = true;
  });
  registry.run_forward(m, {});
  EXPECT_TRUE(ran);
}

TEST(HookRegistry, RunsPreHooksThenForwardThenPostHooksInRegistrationOrder) {
  std::vector<std::string> log;
  Module root;
  Module& m = leaf_with_log(root, "layers.0", log);
  HookRegistry registry;
  registry.add_pre_forward(m, [&](ForwardContext&) { log.push_back("pre 1"); });
  registry.add_pre_forward(m, [&](ForwardContext&) { log.push_back("pre 2"); });
  registry.add_post_forward(m, [&](ForwardContext&) { log.push_back("post 1"); });
  registry.add_post_forward(m, [&](ForwardContext&) { log.push_back("post 2"); });
  registry.run_forward(m, {});
  EXPECT_EQ(log,
            (std::vector<std::string>{"pre 1", "pre 2", "forward layers.0", "post 1", "post 2"}));
}

TEST(HookRegistry, LowerOrderRunsFirstAndGlobalHooksInterleaveByOrder) {
  std::vector<std::string> log;
  Module root;
  Module& m = leaf_with_log(root, "a", log);
  HookRegistry registry;
  registry.add_pre_forward(
      m, [&](ForwardContext&) { log.push_back("module 5"); }, 5);
  registry.add_global(
      HookPhase::kPreForward, [&](ForwardContext&) { log.push_back("global 1"); }, 1);
  registry.add_pre_forward(
      m, [&](ForwardContext&) { log.push_back("module -3"); }, -3);
  registry.run_forward(m, {});
  EXPECT_EQ(log, (std::vector<std::string>{"module -3", "global 1", "module 5", "forward a"}));
}

TEST(HookRegistry, HooksForOneModuleDoNotRunForAnother) {
  std::vector<std::string> log;
  Module root;
  Module& a = leaf_with_log(root, "a", log);
  Module& b = leaf_with_log(root, "b", log);
  HookRegistry registry;
  registry.add_pre_forward(a, [&](ForwardContext& ctx) { log.push_back("pre " + ctx.path()); });
  registry.run_forward(b, {});
  registry.run_forward(a, {});
  EXPECT_EQ(log, (std::vector<std::string>{"forward b", "pre a", "forward a"}));
}

TEST(HookRegistry, RemovedHookNoLongerRunsAndRemovingTwiceIsRefused) {
  std::vector<std::string> log;
  Module root;
  Module& m = leaf_with_log(root, "a", log);
  HookRegistry registry;
  HookHandle first = registry.add_pre_forward(m, [&](ForwardContext&) { log.push_back("pre 1"); });
  registry.add_pre_forward(m, [&](ForwardContext&) { log.push_back("pre 2"); });
  EXPECT_EQ(registry.count(m, HookPhase::kPreForward), 2u);
  EXPECT_TRUE(registry.remove(first));
  EXPECT_FALSE(registry.remove(first));
  EXPECT_FALSE(registry.remove(HookHandle{}));
  EXPECT_EQ(registry.count(m, HookPhase::kPreForward), 1u);
  registry.run_forward(m, {});
  EXPECT_EQ(log, (std::vector<std::string>{"pre 2", "forward a"}));
}

TEST(HookRegistry, AHookMayRemoveItselfWhileRunning) {
  std::vector<std::string> log;
  Module root;
  Module& m = leaf_with_log(root, "a", log);
  HookRegistry registry;
  HookHandle handle;
  handle = registry.add_pre_forward(m, [&](ForwardContext&) {
    log.push_back("once");
    registry.remove(handle);
  });
  registry.run_forward(m, {});
  registry.run_forward(m, {});
  EXPECT_EQ(log, (std::vector<std::string>{"once", "forward a", "forward a"}));
}

TEST(HookRegistry, PostHooksRunMarkedFailedWhenTheForwardThrowsAndTheErrorPropagates) {
  Module root;
  Module& m = root.add_child("bad");
  m.set_forward([](ForwardContext&) { throw InvalidInputError("boom"); });
  HookRegistry registry;
  int post_runs = 0;
  bool saw_failed = false;
  registry.add_post_forward(m, [&](ForwardContext& ctx) {
    ++post_runs;
    saw_failed = ctx.failed();
    throw InternalError("a post hook's own error is swallowed on the failure path");
  });
  EXPECT_THROW(registry.run_forward(m, {}), InvalidInputError);
  EXPECT_EQ(post_runs, 1);
  EXPECT_TRUE(saw_failed);
}

TEST(HookRegistry, APreHookCanReplaceATensorViewForTheForward) {
  HostMemoryResource host;
  Module root;
  Module& m = root.add_child("lin");
  size_t index = m.add_tensor("weight");
  Tensor fetched = Tensor::empty(host, DType::kF16, Shape{4});
  HookRegistry registry;
  registry.add_pre_forward(m, [&](ForwardContext& ctx) { ctx.set_view(index, fetched.view()); });
  const void* seen = nullptr;
  m.set_forward([&](ForwardContext& ctx) { seen = ctx.tensor("weight").data(); });
  registry.run_forward(m, {});
  EXPECT_EQ(seen, fetched.data());
}

TEST(HookRegistry, ModuleWithoutForwardIsAnError) {
  Module root;
  Module& m = root.add_child("empty");
  HookRegistry registry;
  EXPECT_THROW(registry.run_forward(m, {}), InvalidInputError);
}

TEST(HookRegistry, ConcurrentRegistrationAndForwardsFromSeveralThreads) {
  Module root;
  Module& m = root.add_child("a");
  std::atomic<int> forwards{0};
  m.set_forward([&](ForwardContext&) { forwards.fetch_add(1); });
  HookRegistry registry;
  std::atomic<int> pre_calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        HookHandle h = registry.add_pre_forward(m, [&](ForwardContext&) { pre_calls++; });
        registry.run_forward(m, {});
        EXPECT_TRUE(registry.remove(h));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(forwards.load(), 800);
  EXPECT_GE(pre_calls.load(), 800);  // each forward sees at least its own hook
  EXPECT_EQ(registry.count(m, HookPhase::kPreForward), 0u);
}

}  // namespace
}  // namespace stowage::hooks
