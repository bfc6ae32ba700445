#include "parallel/tensor_shard.h"

#include <fmt/format.h>

#include <cstring>

#include "core/error.h"
#include "models/transformer.h"

namespace stowage::parallel {
namespace {

using Cut = ShardCheckpoint::Cut;

bool is_float(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

// The projections a rank splits: the part of the layer's tensors after the
// prefix, and which of the rank's ranges it takes.
enum class Range { kQuery, kKeyValue, kIntermediate };
struct SplitProjection {
  const char* prefix;
  Range range;
  bool by_rows;  // output rows (else input columns, a partial sum)
};
const SplitProjection kSplit[] = {
    {"self_attn.q_proj.", Range::kQuery, true},      {"self_attn.k_proj.", Range::kKeyValue, true},
    {"self_attn.v_proj.", Range::kKeyValue, true},   {"self_attn.o_proj.", Range::kQuery, false},
    {"mlp.gate_proj.", Range::kIntermediate, true},  {"mlp.up_proj.", Range::kIntermediate, true},
    {"mlp.down_proj.", Range::kIntermediate, false},
};

Cut cut_of(const mmap_store::TensorInfo& info, const models::TransformerConfig& config,
           const TensorParallelShare& share, const std::string& source) {
  const auto [module, local] = models::transformer_module_of(info.name);
  if (module.rfind("model.layers.", 0) != 0) return {};
  for (const SplitProjection& p : kSplit) {
    if (local.rfind(p.prefix, 0) != 0) continue;
    const std::string part = local.substr(std::strlen(p.prefix));
    STOWAGE_EXPECTS(
        (part == "weight" || part == "bias") && is_float(info.dtype), InvalidInputError,
        "{}: tensor '{}' ({}): tensor parallelism splits float projections only (a checkpoint "
        "already quantized cannot be split; quantize each rank's part while loading instead)",
        source, info.name, safetensors_name(info.dtype));
    int64_t begin = 0, count = 0;
    switch (p.range) {
      case Range::kQuery:
        begin = share.q_head_begin * config.head_dim;
        count = share.q_heads * config.head_dim;
        break;
      case Range::kKeyValue:
        begin = share.kv_head_begin * config.head_dim;
        count = share.kv_heads * config.head_dim;
        break;
      case Range::kIntermediate:
        begin = share.intermediate_begin;
        count = share.intermediate;
        break;
    }
    Cut cut;
    if (part == "bias" && !p.by_rows) {
      // A partial sum's bias: added once, by rank 0.
      cut.kind = share.rank == 0 ? Cut::Kind::kWhole : Cut::Kind::kZeros;
      return cut;
    }
    const int64_t extent = p.by_rows ? info.shape[0] : info.shape[info.shape.rank() - 1];
    STOWAGE_EXPECTS(begin + count <= extent, InvalidInputError,
                    "{}: tensor '{}' has {} {}, but rank {} of {} takes {} .. {}", source,
                    info.name, extent, p.by_rows ? "rows" : "columns", share.rank, share.ranks,
                    begin, begin + count);
    cut.kind = p.by_rows ? Cut::Kind::kRows : Cut::Kind::kColumns;
    cut.begin = begin;
    cut.count = count;
    return cut;
  }
  return {};
}

}  // namespace

void check_tensor_parallel(const models::TransformerConfig& c, int ranks) {
  STOWAGE_EXPECTS(ranks >= 1, InvalidInputError,
                  "tensor parallelism needs at least 1 rank, found {}", ranks);
  STOWAGE_EXPECTS(!c.moe, InvalidInputError,
                  "{}: {} is a mixture-of-experts model; tensor parallelism splits the dense "
                  "Llama family (Llama, Qwen2, Mistral) only so far",
                  c.source, models::architecture_name(c.architecture));
  STOWAGE_EXPECTS(c.num_heads % ranks == 0 && c.intermediate_size % ranks == 0, InvalidInputError,
                  "{}: {} ranks must divide the {} attention heads and the intermediate size {}",
                  c.source, ranks, c.num_heads, c.intermediate_size);
  STOWAGE_EXPECTS(c.num_kv_heads % ranks == 0 || ranks % c.num_kv_heads == 0, InvalidInputError,
                  "{}: {} ranks and the {} key/value heads must divide one another (each rank "
                  "holds its share of them, or one replicated)",
                  c.source, ranks, c.num_kv_heads);
}

TensorParallelShare tensor_parallel_share(const models::TransformerConfig& c, int ranks, int rank) {
  check_tensor_parallel(c, ranks);
  STOWAGE_EXPECTS(rank >= 0 && rank < ranks, InvalidInputError, "rank {} of {} ranks", rank, ranks);
  TensorParallelShare s;
  s.rank = rank;
  s.ranks = ranks;
  s.q_heads = c.num_heads / ranks;
  s.q_head_begin = rank * s.q_heads;
  if (c.num_kv_heads % ranks == 0) {
    s.kv_heads = c.num_kv_heads / ranks;
    s.kv_head_begin = rank * s.kv_heads;
  } else {
    s.kv_heads = 1;
    s.kv_head_begin = rank / (ranks / c.num_kv_heads);
  }
  s.intermediate = c.intermediate_size / ranks;
  s.intermediate_begin = rank * s.intermediate;
  return s;
}

models::TransformerConfig shard_config(const models::TransformerConfig& config,
                                       const TensorParallelShare& share) {
  models::TransformerConfig c = config;
  c.num_heads = share.q_heads;
  c.num_kv_heads = share.kv_heads;
  c.intermediate_size = share.intermediate;
  return c;
}

ShardCheckpoint::ShardCheckpoint(std::shared_ptr<const mmap_store::Checkpoint> base,
                                 const models::TransformerConfig& config,
                                 const TensorParallelShare& share)
    : base_(std::move(base)),
      path_(fmt::format("{} (rank {} of {})", base_->path(), share.rank, share.ranks)),
      index_(path_, "the tensor-parallel split"),
      host_(Tier::pageable_host(), "tensor-parallel slices") {
  for (const std::string& name : base_->names()) {
    mmap_store::TensorInfo info = base_->info(name);
    const Cut cut = cut_of(info, config, share, base_->path());
    const uint64_t elem = dtype_bytes_for(info.dtype, 1);
    switch (cut.kind) {
      case Cut::Kind::kWhole:
      case Cut::Kind::kZeros:
        break;
      case Cut::Kind::kRows: {
        // Contiguous: a view of the base's bytes, still in its file.
        const uint64_t row = info.shape.rank() == 1 ? 1 : static_cast<uint64_t>(info.shape[1]);
        const uint64_t skip = static_cast<uint64_t>(cut.begin) * row * elem;
        info.offset += skip;
        info.file_offset += skip;
        info.shape = info.shape.rank() == 1 ? Shape{cut.count} : Shape{cut.count, info.shape[1]};
        break;
      }
      case Cut::Kind::kColumns:
        info.shape = Shape{info.shape[0], cut.count};
        info.file.clear();  // copied: no longer one range of the file
        info.offset = info.file_offset = 0;
        break;
    }
    if (cut.kind == Cut::Kind::kZeros) {
      info.file.clear();
      info.offset = info.file_offset = 0;
    }
    info.bytes = dtype_bytes_for(info.dtype, info.shape.numel());
    index_.add(std::move(info));
    cuts_.push_back(cut);
  }
}

Tensor ShardCheckpoint::tensor(const std::string& name) const {
  const ptrdiff_t position = index_.find(name);
  STOWAGE_EXPECTS(position >= 0, InvalidInputError, "{}: no tensor '{}'", path_, name);
  const Cut& cut = cuts_[static_cast<size_t>(position)];
  const mmap_store::TensorInfo& info = index_.at(static_cast<size_t>(position));
  Tensor whole = base_->tensor(name);
  const uint64_t elem = dtype_bytes_for(info.dtype, 1);
  switch (cut.kind) {
    case Cut::Kind::kWhole:
      return whole;
    case Cut::Kind::kRows: {
      const uint64_t row = info.shape.rank() == 1 ? 1 : static_cast<uint64_t>(info.shape[1]);
      return Tensor::from_storage(whole.storage(), whole.storage_offset() + cut.begin * row * elem,
                                  info.dtype, info.shape);
    }
    case Cut::Kind::kZeros: {
      Tensor zeros = Tensor::empty(host_, info.dtype, info.shape);
      std::memset(zeros.data(), 0, zeros.bytes());
      return zeros;
    }
    case Cut::Kind::kColumns: {
      Tensor part = Tensor::empty(host_, info.dtype, info.shape);
      const uint64_t rows = static_cast<uint64_t>(info.shape[0]);
      const uint64_t in_row = static_cast<uint64_t>(whole.shape()[1]) * elem;
      const uint64_t out_row = static_cast<uint64_t>(cut.count) * elem;
      const auto* src = static_cast<const char*>(whole.data()) + cut.begin * elem;
      auto* dst = static_cast<char*>(part.data());
      for (uint64_t r = 0; r < rows; ++r) std::memcpy(dst + r * out_row, src + r * in_row, out_row);
      mmap_store::check_mapped_read(whole, name);
      return part;
    }
  }
  return whole;
}

}  // namespace stowage::parallel
