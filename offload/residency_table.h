// The residency table: one record per tensor a module owns (weights, biases,
// buffers, and each part of a quantization state as its own record linked to
// its weight), saying where the tensor's bytes live and how often they moved.
//
// Seed lesson 1 (bitsandbytes Linear8bitLt): a module's quantization state was
// not tracked, so a move left it behind. Here every tensor is a row; moving a
// module moves every row of it, quant-state parts included.
//
// Thread safety: every member may be called from several threads at once
// (one internal mutex). Queries return snapshots (copies), never references
// into the table.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "core/tensor.h"
#include "core/tier.h"

namespace stowage {

enum class TensorRole { kWeight, kBias, kBuffer, kQuantState };

// Index of a record in its table; stable for the table's life.
using RecordId = uint32_t;

// What a caller declares when adding a record.
struct TensorSpec {
  std::string module;  // module path, e.g. "layers.3"
  std::string name;    // name inside the module, e.g. "weight", "weight.absmax"
  TensorRole role = TensorRole::kWeight;
  // For kQuantState: the part's name suffix as quant/ gives it ("SCB",
  // "absmax", "quant_map", ...); empty otherwise.
  std::string quant_part;
  DType dtype = DType::kF32;
  Shape shape;
  Tier home = Tier::pinned_host();  // where the plan keeps the tensor
};

// A snapshot of one record.
struct TensorRecord {
  RecordId id = 0;
  std::string module;
  std::string name;
  TensorRole role = TensorRole::kWeight;
  std::string quant_part;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t bytes = 0;  // dtype_bytes_for(dtype, numel)
  Tier home = Tier::pinned_host();
  // The copies that hold the tensor's current bytes, by tier. Transient
  // copies in a fetch slot are not listed (see OffloadManager).
  std::map<Tier, Tensor> copies;
  // For a quant-state part: its weight. For a weight: its state parts.
  std::optional<RecordId> quant_state_of;
  std::vector<RecordId> quant_parts;
  int pin_count = 0;         // > 0 while a forward uses the tensor
  uint64_t copies_made = 0;  // byte copies of this tensor (moves, fetches)
  uint64_t bytes_moved = 0;  // bytes those copies moved

  // "weight", "bias", "buffer" or "quant_state:<suffix>".
  std::string role_name() const;
  bool on(Tier tier) const { return copies.count(tier) != 0; }
};

// Per-module totals for the report.
struct ModuleResidency {
  std::string module;
  Tier home = Tier::pinned_host();  // of its first record
  // Bytes by home tier: more than one entry for a module on several tiers
  // (tensor overrides).
  std::map<Tier, uint64_t> bytes_by_home;
  uint64_t bytes = 0;
  uint64_t copies_made = 0;
  uint64_t bytes_moved = 0;
  size_t records = 0;
};

class ResidencyTable {
 public:
  ResidencyTable() = default;
  ResidencyTable(const ResidencyTable&) = delete;
  ResidencyTable& operator=(const ResidencyTable&) = delete;

  // Adds a record. Throws InvalidInputError when (module, name) already
  // exists, the shape is invalid, or a kQuantState spec comes without a
  // weight (use add_quant_part for those).
  RecordId add(const TensorSpec& spec);
  // Adds a quant-state part of weight record `weight`: same module and home
  // as the weight, role kQuantState, name "<weight name>.<suffix>" unless
  // `name` is given, linked both ways. Throws InvalidInputError for an
  // unknown weight or a duplicate name.
  RecordId add_quant_part(RecordId weight, const std::string& suffix, DType dtype,
                          const Shape& shape, const std::string& name = "");

  size_t size() const;
  // Throws InvalidInputError for an unknown id.
  TensorRecord get(RecordId id) const;
  std::optional<RecordId> find(const std::string& module, const std::string& name) const;

  // Module paths in the order their first record was added.
  std::vector<std::string> modules() const;
  // Records of a module in the order added (empty for an unknown module).
  std::vector<RecordId> records_of(const std::string& module) const;
  // Records holding a valid copy on `tier`.
  std::vector<RecordId> records_on(Tier tier) const;

  // Totals of record bytes: of a module; with a copy on a tier; of a module
  // with a copy on a tier; of all records.
  uint64_t module_bytes(const std::string& module) const;
  uint64_t bytes_on(Tier tier) const;
  uint64_t module_bytes_on(const std::string& module, Tier tier) const;
  uint64_t total_bytes() const;

  // --- Copies. A copy must match the record's dtype and byte size; its tier
  // is tensor.tier(). Setting a copy on a tier replaces the one there.
  void set_copy(RecordId id, Tensor tensor);
  // Removes and returns the copy on `tier` (an undefined Tensor if none); the
  // caller decides when its bytes are freed.
  Tensor take_copy(RecordId id, Tier tier);
  // The copy on `tier`, or an undefined Tensor.
  Tensor copy_on(RecordId id, Tier tier) const;
  std::vector<Tier> tiers_of(RecordId id) const;
  void set_home(RecordId id, Tier home);

  // --- Pins and counters.
  void pin(RecordId id);
  // Throws InternalError when the pin count would go below zero.
  void unpin(RecordId id);
  // Counts one byte copy of `bytes` bytes of record `id`.
  void note_copy(RecordId id, uint64_t bytes);

  // Per-module residency, modules in insertion order.
  std::vector<ModuleResidency> module_report() const;
  // A printable table: per module its home tier, bytes, copies made and
  // bytes moved, then totals per tier.
  std::string report() const;

 private:
  struct Row {
    TensorRecord record;
  };
  const Row& row(RecordId id) const;  // REQUIRES: mutex_ held
  Row& row(RecordId id);              // REQUIRES: mutex_ held

  mutable std::mutex mutex_;
  std::vector<Row> rows_;
  std::vector<std::string> module_order_;
  std::unordered_map<std::string, std::vector<RecordId>> by_module_;
  // bytes_on(tier), kept as copies come and go: the manager asks it at every
  // placement, and summing every row there made loading quadratic in the
  // number of tensors (issue #15 item 6).
  std::map<Tier, uint64_t> bytes_on_;
};

}  // namespace stowage
