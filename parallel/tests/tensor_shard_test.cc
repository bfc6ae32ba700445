// The Megatron-style split of the dense transformer family: which heads and
// columns each rank holds, the configs that cannot split, and each rank's
// part of a checkpoint against the whole model's bytes.
#include "parallel/tensor_shard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "mmap_store/checkpoint.h"
#include "models/transformer_config.h"
#include "models/transformer_runner.h"

namespace stowage::parallel {
namespace {

const std::string kTestdata = "models/testdata/";

models::TransformerConfig config_of(int64_t heads, int64_t kv_heads, int64_t intermediate) {
  models::TransformerConfig c;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = 16;
  c.hidden_size = heads * 16;
  c.intermediate_size = intermediate;
  c.source = "test";
  return c;
}

TEST(TensorParallelShare, EachRankTakesItsHeadsAndIntermediateColumns) {
  const models::TransformerConfig c = config_of(8, 4, 160);
  const TensorParallelShare s = tensor_parallel_share(c, 2, 1);
  EXPECT_EQ(s.q_head_begin, 4);
  EXPECT_EQ(s.q_heads, 4);
  EXPECT_EQ(s.kv_head_begin, 2);
  EXPECT_EQ(s.kv_heads, 2);
  EXPECT_EQ(s.intermediate_begin, 80);
  EXPECT_EQ(s.intermediate, 80);
}

TEST(TensorParallelShare, FewerKvHeadsThanRanksReplicatesTheHeadTheRanksQueriesRead) {
  // 4 query heads, 2 KV heads (query heads 0-1 read KV head 0, 2-3 head 1).
  const models::TransformerConfig c = config_of(4, 2, 160);
  const int64_t expected_kv[] = {0, 0, 1, 1};
  for (int r = 0; r < 4; ++r) {
    const TensorParallelShare s = tensor_parallel_share(c, 4, r);
    EXPECT_EQ(s.q_head_begin, r);
    EXPECT_EQ(s.kv_heads, 1);
    EXPECT_EQ(s.kv_head_begin, expected_kv[r]) << "rank " << r;
  }
}

TEST(TensorParallelShare, ConfigsThatCannotSplitAreRefusedNamingTheSizes) {
  try {
    check_tensor_parallel(config_of(4, 2, 160), 3);
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("3 ranks must divide the 4 attention heads"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(check_tensor_parallel(config_of(4, 2, 162), 4), InvalidInputError);
  // 6 KV heads and 4 ranks divide neither way.
  EXPECT_THROW(check_tensor_parallel(config_of(12, 6, 160), 4), InvalidInputError);
  EXPECT_THROW(check_tensor_parallel(config_of(4, 2, 160), 0), InvalidInputError);
  models::TransformerConfig moe = config_of(4, 2, 160);
  moe.moe = models::MoeConfig{};
  try {
    check_tensor_parallel(moe, 2);
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("mixture-of-experts"), std::string::npos);
  }
  EXPECT_NO_THROW(check_tensor_parallel(config_of(4, 2, 160), 1));
}

// Rank r's part of tensor `name`, row-major bytes.
std::vector<char> bytes_of(const mmap_store::Checkpoint& c, const std::string& name) {
  Tensor t = c.tensor(name);
  const char* p = static_cast<const char*>(t.data());
  return std::vector<char>(p, p + t.bytes());
}

TEST(ShardCheckpoint, TheRanksRowAndColumnSlicesMakeUpTheWholeTensors) {
  const std::string folder = kTestdata + "qwen2_f16";  // q/k/v biases
  const models::TransformerConfig config = models::read_transformer_config(folder);
  std::shared_ptr<const mmap_store::Checkpoint> base =
      mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
  constexpr int kRanks = 2;
  std::vector<std::unique_ptr<ShardCheckpoint>> parts;
  for (int r = 0; r < kRanks; ++r) {
    parts.push_back(
        std::make_unique<ShardCheckpoint>(base, config, tensor_parallel_share(config, kRanks, r)));
  }
  const std::string layer = "model.layers.1.";
  const size_t elem = 2;  // f16
  // Output rows: the parts one after another.
  for (const char* rows : {"self_attn.q_proj.weight", "self_attn.k_proj.bias",
                           "mlp.gate_proj.weight", "mlp.up_proj.weight"}) {
    std::vector<char> joined;
    for (const auto& p : parts) {
      const std::vector<char> b = bytes_of(*p, layer + rows);
      joined.insert(joined.end(), b.begin(), b.end());
      EXPECT_EQ(p->info(layer + rows).bytes, b.size());
    }
    EXPECT_EQ(joined, bytes_of(*base, layer + rows)) << rows;
    // A view of the file, not a copy.
    EXPECT_EQ(parts[1]->tensor(layer + rows).tier(), Tier::disk()) << rows;
  }
  // Input columns: each row of the whole is the parts' rows side by side.
  for (const char* cols : {"self_attn.o_proj.weight", "mlp.down_proj.weight"}) {
    const std::vector<char> whole = bytes_of(*base, layer + cols);
    const Shape shape = base->info(layer + cols).shape;
    const size_t part_cols = static_cast<size_t>(shape[1]) / kRanks;
    for (int r = 0; r < kRanks; ++r) {
      const std::vector<char> b = bytes_of(*parts[r], layer + cols);
      ASSERT_EQ(parts[r]->info(layer + cols).shape, (Shape{shape[0], shape[1] / kRanks}));
      for (int64_t row = 0; row < shape[0]; ++row) {
        ASSERT_EQ(
            std::memcmp(b.data() + row * part_cols * elem,
                        whole.data() + (row * shape[1] + r * part_cols) * elem, part_cols * elem),
            0)
            << cols << " rank " << r << " row " << row;
      }
    }
  }
  // Replicated: norms, embeddings.
  for (const char* whole : {"model.layers.1.input_layernorm.weight", "model.embed_tokens.weight",
                            "model.norm.weight"}) {
    EXPECT_EQ(bytes_of(*parts[1], whole), bytes_of(*base, whole)) << whole;
  }
  EXPECT_NE(parts[1]->path().find("rank 1 of 2"), std::string::npos);
}

TEST(ShardCheckpoint, AQuantizedCheckpointIsRefusedNamingTheTensor) {
  const std::string folder = kTestdata + "llama_bnb_nf4_saved";
  const models::TransformerConfig config = models::read_transformer_config(folder);
  std::shared_ptr<const mmap_store::Checkpoint> base =
      mmap_store::open_checkpoint(models::model_checkpoint_path(folder));
  try {
    ShardCheckpoint part(base, config, tensor_parallel_share(config, 2, 0));
    FAIL() << "expected InvalidInputError";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("splits float projections only"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace stowage::parallel
