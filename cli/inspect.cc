// `stowage inspect PATH [--json]`.
#include "cli/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/memory_resource.h"
#include "mmap_store/checkpoint.h"
#include "mmap_store/offload_folder.h"
#include "mmap_store/sharded_checkpoint.h"
#include "models/transformer_runner.h"
#include "quant/bnb_format.h"

namespace stowage::cli {

namespace json = boost::json;

InspectReport inspect_path(const std::string& path) {
  const bool model_folder = std::filesystem::is_directory(path) &&
                            std::filesystem::exists(std::filesystem::path(path) / "config.json");
  std::unique_ptr<mmap_store::Checkpoint> ckpt =
      mmap_store::open_checkpoint(model_folder ? models::model_checkpoint_path(path) : path);
  InspectReport report;
  report.path = path;
  report.kind = dynamic_cast<mmap_store::OffloadFolder*>(ckpt.get())       ? "offload folder"
                : dynamic_cast<mmap_store::ShardedCheckpoint*>(ckpt.get()) ? "sharded safetensors"
                                                                           : "safetensors";
  if (model_folder) {
    const models::TransformerSpec spec = models::describe_model_folder(path, *ckpt);
    const models::TransformerConfig& c = spec.config;
    InspectModel m;
    m.architecture = models::architecture_name(c.architecture);
    m.layers = c.num_layers;
    m.hidden_size = c.hidden_size;
    m.intermediate_size = c.intermediate_size;
    m.heads = c.num_heads;
    m.kv_heads = c.num_kv_heads;
    m.head_dim = c.head_dim;
    m.vocab_size = c.vocab_size;
    m.tied_embeddings = c.tie_word_embeddings;
    std::map<std::string, uint64_t> bytes;
    for (const std::string& name : ckpt->names()) {
      bytes[models::transformer_module_of(name).first] += ckpt->info(name).bytes;
    }
    for (const std::string& module : models::transformer_plan_order(spec)) {
      m.modules.emplace_back(module, bytes[module]);
    }
    report.kind = fmt::format("model folder, {} {}", m.architecture, report.kind);
    report.model = std::move(m);
  }
  auto lookup = [&](const std::string& name) -> std::optional<Tensor> {
    if (!ckpt->contains(name)) return std::nullopt;
    return ckpt->tensor(name);
  };
  std::map<std::string, InspectQuant> quant_by_weight;
  for (const auto& q : quant::detect_quantized_weights(ckpt->names(), lookup)) {
    InspectQuant iq;
    iq.method = quant::weight_format_name(q.layout.format);
    if (quant::is_four_bit(q.layout.format)) iq.blocksize = q.layout.blocksize;
    iq.double_quant = q.layout.double_quant;
    iq.storage_dtype = q.layout.storage;
    iq.shape = q.layout.shape;
    quant_by_weight.emplace(q.weight_name, std::move(iq));
  }
  for (const auto& name : ckpt->names()) {
    const mmap_store::TensorInfo& info = ckpt->info(name);
    InspectTensor t;
    t.name = name;
    t.dtype = info.dtype;
    t.shape = info.shape;
    t.bytes = info.bytes;
    t.offset = info.offset;
    if (auto it = quant_by_weight.find(name); it != quant_by_weight.end()) t.quant = it->second;
    report.total_bytes += t.bytes;
    report.tensors.push_back(std::move(t));
  }
  return report;
}

namespace {

std::string describe_quant(const InspectQuant& q) {
  std::string s = q.method;
  if (q.blocksize) s += fmt::format(" blocksize={}", *q.blocksize);
  if (q.method != "int8") s += fmt::format(" double_quant={}", q.double_quant ? "yes" : "no");
  s += fmt::format(" storage={} shape={}", safetensors_name(q.storage_dtype), q.shape.to_string());
  return s;
}

json::array shape_json(const Shape& shape) {
  json::array a;
  for (int64_t d : shape.dims()) a.emplace_back(d);
  return a;
}

}  // namespace

std::string format_inspect_text(const InspectReport& r) {
  std::vector<std::array<std::string, 6>> rows;
  rows.push_back({"NAME", "DTYPE", "SHAPE", "BYTES", "OFFSET", "QUANT"});
  size_t quantized = 0;
  for (const auto& t : r.tensors) {
    if (t.quant) ++quantized;
    rows.push_back({escape_control(t.name), std::string(safetensors_name(t.dtype)),
                    t.shape.to_string(), std::to_string(t.bytes), std::to_string(t.offset),
                    t.quant ? describe_quant(*t.quant) : "-"});
  }
  std::array<size_t, 6> width{};
  for (const auto& row : rows) {
    for (size_t c = 0; c < 6; ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out = fmt::format("{} ({})\n", escape_control(r.path), r.kind);
  for (const auto& row : rows) {
    std::string line =
        fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>{}}  {:>{}}  {}", row[0], width[0], row[1],
                    width[1], row[2], width[2], row[3], width[3], row[4], width[4], row[5]);
    out += line + "\n";
  }
  out += fmt::format("total: {} tensors, {} bytes ({}){}\n", r.tensors.size(), r.total_bytes,
                     format_bytes(r.total_bytes),
                     quantized ? fmt::format(", {} quantized weights", quantized) : "");
  if (r.model) {
    const InspectModel& m = *r.model;
    out += fmt::format(
        "{}: {} layers, hidden {}, intermediate {}, {} heads ({} key/value) of {}, vocabulary "
        "{}{}\nmodules (execution order):\n",
        m.architecture, m.layers, m.hidden_size, m.intermediate_size, m.heads, m.kv_heads,
        m.head_dim, m.vocab_size, m.tied_embeddings ? ", tied embeddings" : "");
    for (const auto& [module, bytes] : m.modules) {
      out += fmt::format("  {:<24} {:>14}  ({})\n", escape_control(module), bytes,
                         format_bytes(bytes));
    }
  }
  return out;
}

std::string format_inspect_json(const InspectReport& r) {
  json::object root;
  root["path"] = r.path;
  json::array tensors;
  for (const auto& t : r.tensors) {
    json::object o;
    o["name"] = t.name;
    o["dtype"] = std::string(safetensors_name(t.dtype));
    o["shape"] = shape_json(t.shape);
    o["bytes"] = t.bytes;
    o["offset"] = t.offset;
    if (t.quant) {
      json::object q;
      q["method"] = t.quant->method;
      q["blocksize"] = t.quant->blocksize ? json::value(*t.quant->blocksize) : json::value(nullptr);
      q["double_quant"] = t.quant->double_quant;
      q["storage_dtype"] = std::string(safetensors_name(t.quant->storage_dtype));
      q["shape"] = shape_json(t.quant->shape);
      o["quant"] = std::move(q);
    } else {
      o["quant"] = nullptr;
    }
    tensors.emplace_back(std::move(o));
  }
  root["tensors"] = std::move(tensors);
  root["total_bytes"] = r.total_bytes;
  if (r.model) {
    const InspectModel& m = *r.model;
    json::object model;
    model["architecture"] = m.architecture;
    model["layers"] = m.layers;
    model["hidden_size"] = m.hidden_size;
    model["intermediate_size"] = m.intermediate_size;
    model["heads"] = m.heads;
    model["kv_heads"] = m.kv_heads;
    model["head_dim"] = m.head_dim;
    model["vocab_size"] = m.vocab_size;
    model["tied_embeddings"] = m.tied_embeddings;
    json::array modules;
    for (const auto& [module, bytes] : m.modules) {
      json::object o;
      o["module"] = module;
      o["bytes"] = bytes;
      modules.emplace_back(std::move(o));
    }
    model["modules"] = std::move(modules);
    root["model"] = std::move(model);
  }
  return json::serialize(root) + "\n";
}

int run_inspect(const std::vector<std::string>& args) {
  ArgParser parser("inspect", {}, {"json"});
  parser.parse(args);
  parser.expect_positional(1, "PATH");
  InspectReport report = inspect_path(parser.positional()[0]);
  const std::string out =
      parser.has("json") ? format_inspect_json(report) : format_inspect_text(report);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace stowage::cli
