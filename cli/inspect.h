// The library behind `stowage inspect PATH [--json]` (CLI.md): what a
// .safetensors file, a sharded index or an offload folder holds, with
// bitsandbytes quantized weights recognized (quant/bnb_format.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"

namespace stowage::cli {

struct InspectQuant {
  std::string method;                // "int8", "nf4", "fp4"
  std::optional<int64_t> blocksize;  // 4-bit only
  bool double_quant = false;
  DType storage_dtype = DType::kU8;  // the stored weight's dtype
  Shape shape;                       // the logical (unquantized) shape
};

struct InspectTensor {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t bytes = 0;
  uint64_t offset = 0;                // relative to the start of the data (0 in an offload .dat)
  std::optional<InspectQuant> quant;  // on a quantized layer's P.weight
};

// A Hugging Face model folder of the transformer family: its configuration
// and the modules the runtime streams (decoder layers, norm, head, embedding).
struct InspectModel {
  std::string architecture;  // "LlamaForCausalLM", ...
  int64_t layers = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  bool tied_embeddings = false;
  std::vector<std::pair<std::string, uint64_t>> modules;  // path, bytes; execution order
};

struct InspectReport {
  std::string path;
  // "safetensors", "sharded safetensors", "offload folder", or "model folder (...)"
  std::string kind;
  std::optional<InspectModel> model;   // for a model folder
  std::vector<InspectTensor> tensors;  // file order
  uint64_t total_bytes = 0;
};

// Opens and validates PATH fully (a model folder: its config and every tensor
// against the transformer family too). Throws InvalidInputError (malformed, naming
// the file and the rule) or IoError (unreadable).
InspectReport inspect_path(const std::string& path);

// The human-readable listing: one row per tensor, then totals.
std::string format_inspect_text(const InspectReport& report);
// One JSON object: {"path", "tensors": [{"name", "dtype", "shape", "bytes",
// "offset", "quant": null | {"method", "blocksize", "double_quant",
// "storage_dtype", "shape"}}], "total_bytes"}, newline-terminated; a model
// folder adds "model": {"architecture", "layers", "hidden_size",
// "intermediate_size", "heads", "kv_heads", "head_dim", "vocab_size",
// "tied_embeddings", "modules": [{"module", "bytes"}]}.
std::string format_inspect_json(const InspectReport& report);

}  // namespace stowage::cli
