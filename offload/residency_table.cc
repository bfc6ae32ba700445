#include "offload/residency_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage {

std::string TensorRecord::role_name() const {
  switch (role) {
    case TensorRole::kWeight:
      return "weight";
    case TensorRole::kBias:
      return "bias";
    case TensorRole::kBuffer:
      return "buffer";
    case TensorRole::kQuantState:
      return "quant_state:" + quant_part;
  }
  return "unknown";
}

const ResidencyTable::Row& ResidencyTable::row(RecordId id) const {
  STOWAGE_EXPECTS(id < rows_.size(), InvalidInputError,
                  "residency table: no record with id {} (the table has {} records)", id,
                  rows_.size());
  return rows_[id];
}

ResidencyTable::Row& ResidencyTable::row(RecordId id) {
  return const_cast<Row&>(static_cast<const ResidencyTable*>(this)->row(id));
}

RecordId ResidencyTable::add(const TensorSpec& spec) {
  STOWAGE_EXPECTS(spec.role != TensorRole::kQuantState, InvalidInputError,
                  "residency table: quant-state part {}.{} must be added with add_quant_part "
                  "(it needs its weight)",
                  spec.module, spec.name);
  STOWAGE_EXPECTS(!spec.name.empty(), InvalidInputError,
                  "residency table: a tensor of module '{}' has an empty name", spec.module);
  const auto numel = spec.shape.checked_numel();
  STOWAGE_EXPECTS(numel.has_value(), InvalidInputError,
                  "residency table: tensor {}.{} has an invalid shape {}", spec.module, spec.name,
                  spec.shape.to_string());
  std::lock_guard<std::mutex> lock(mutex_);
  auto& ids = by_module_[spec.module];
  for (RecordId other : ids) {
    STOWAGE_EXPECTS(rows_[other].record.name != spec.name, InvalidInputError,
                    "residency table: tensor {}.{} is already registered", spec.module, spec.name);
  }
  if (ids.empty()) module_order_.push_back(spec.module);
  TensorRecord r;
  r.id = static_cast<RecordId>(rows_.size());
  r.module = spec.module;
  r.name = spec.name;
  r.role = spec.role;
  r.quant_part = spec.quant_part;
  r.dtype = spec.dtype;
  r.shape = spec.shape;
  r.bytes = dtype_bytes_for(spec.dtype, *numel);
  r.home = spec.home;
  rows_.push_back(Row{std::move(r)});
  ids.push_back(rows_.back().record.id);
  return rows_.back().record.id;
}

RecordId ResidencyTable::add_quant_part(RecordId weight, const std::string& suffix, DType dtype,
                                        const Shape& shape, const std::string& name) {
  STOWAGE_EXPECTS(!suffix.empty(), InvalidInputError,
                  "residency table: a quant-state part needs a name suffix");
  const auto numel = shape.checked_numel();
  std::lock_guard<std::mutex> lock(mutex_);
  const TensorRecord& w = row(weight).record;
  STOWAGE_EXPECTS(w.role != TensorRole::kQuantState, InvalidInputError,
                  "residency table: {}.{} is itself a quant-state part; parts link to a weight",
                  w.module, w.name);
  const std::string part_name = name.empty() ? w.name + "." + suffix : name;
  STOWAGE_EXPECTS(numel.has_value(), InvalidInputError,
                  "residency table: quant-state part {}.{} has an invalid shape {}", w.module,
                  part_name, shape.to_string());
  auto& ids = by_module_[w.module];
  for (RecordId other : ids) {
    STOWAGE_EXPECTS(rows_[other].record.name != part_name, InvalidInputError,
                    "residency table: tensor {}.{} is already registered", w.module, part_name);
  }
  TensorRecord r;
  r.id = static_cast<RecordId>(rows_.size());
  r.module = w.module;
  r.name = part_name;
  r.role = TensorRole::kQuantState;
  r.quant_part = suffix;
  r.dtype = dtype;
  r.shape = shape;
  r.bytes = dtype_bytes_for(dtype, *numel);
  r.home = w.home;
  r.quant_state_of = weight;
  const RecordId id = r.id;
  rows_.push_back(Row{std::move(r)});
  rows_[weight].record.quant_parts.push_back(id);
  ids.push_back(id);
  return id;
}

size_t ResidencyTable::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rows_.size();
}

TensorRecord ResidencyTable::get(RecordId id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return row(id).record;
}

std::optional<RecordId> ResidencyTable::find(const std::string& module,
                                             const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = by_module_.find(module);
  if (it == by_module_.end()) return std::nullopt;
  for (RecordId id : it->second) {
    if (rows_[id].record.name == name) return id;
  }
  return std::nullopt;
}

std::vector<std::string> ResidencyTable::modules() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return module_order_;
}

std::vector<RecordId> ResidencyTable::records_of(const std::string& module) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = by_module_.find(module);
  return it == by_module_.end() ? std::vector<RecordId>{} : it->second;
}

std::vector<RecordId> ResidencyTable::records_on(Tier tier) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<RecordId> out;
  for (const Row& r : rows_) {
    if (r.record.on(tier)) out.push_back(r.record.id);
  }
  return out;
}

uint64_t ResidencyTable::module_bytes(const std::string& module) const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t total = 0;
  auto it = by_module_.find(module);
  if (it == by_module_.end()) return 0;
  for (RecordId id : it->second) total += rows_[id].record.bytes;
  return total;
}

uint64_t ResidencyTable::bytes_on(Tier tier) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = bytes_on_.find(tier);
  return it == bytes_on_.end() ? 0 : it->second;
}

uint64_t ResidencyTable::module_bytes_on(const std::string& module, Tier tier) const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t total = 0;
  auto it = by_module_.find(module);
  if (it == by_module_.end()) return 0;
  for (RecordId id : it->second) {
    if (rows_[id].record.on(tier)) total += rows_[id].record.bytes;
  }
  return total;
}

uint64_t ResidencyTable::total_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t total = 0;
  for (const Row& r : rows_) total += r.record.bytes;
  return total;
}

void ResidencyTable::set_copy(RecordId id, Tensor tensor) {
  STOWAGE_EXPECTS(tensor.defined(), InvalidInputError,
                  "residency table: set_copy of record {} was given an undefined tensor", id);
  std::lock_guard<std::mutex> lock(mutex_);
  TensorRecord& r = row(id).record;
  STOWAGE_EXPECTS(tensor.dtype() == r.dtype && tensor.bytes() == r.bytes, InvalidInputError,
                  "residency table: copy of {}.{} on {} must be {} with {} bytes; found {} with "
                  "{} bytes",
                  r.module, r.name, tensor.tier().to_string(), short_name(r.dtype), r.bytes,
                  short_name(tensor.dtype()), tensor.bytes());
  const Tier tier = tensor.tier();
  if (!r.on(tier)) bytes_on_[tier] += r.bytes;
  r.copies[tier] = std::move(tensor);
}

Tensor ResidencyTable::take_copy(RecordId id, Tier tier) {
  std::lock_guard<std::mutex> lock(mutex_);
  TensorRecord& r = row(id).record;
  auto it = r.copies.find(tier);
  if (it == r.copies.end()) return Tensor();
  Tensor out = std::move(it->second);
  r.copies.erase(it);
  bytes_on_[tier] -= r.bytes;
  return out;
}

Tensor ResidencyTable::copy_on(RecordId id, Tier tier) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const TensorRecord& r = row(id).record;
  auto it = r.copies.find(tier);
  return it == r.copies.end() ? Tensor() : it->second;
}

std::vector<Tier> ResidencyTable::tiers_of(RecordId id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Tier> out;
  for (const auto& [tier, tensor] : row(id).record.copies) out.push_back(tier);
  return out;
}

void ResidencyTable::set_home(RecordId id, Tier home) {
  std::lock_guard<std::mutex> lock(mutex_);
  row(id).record.home = home;
}

void ResidencyTable::pin(RecordId id) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++row(id).record.pin_count;
}

void ResidencyTable::unpin(RecordId id) {
  std::lock_guard<std::mutex> lock(mutex_);
  TensorRecord& r = row(id).record;
  STOWAGE_EXPECTS(r.pin_count > 0, InternalError,
                  "residency table: unpin of {}.{} whose pin count is already 0", r.module, r.name);
  --r.pin_count;
}

void ResidencyTable::note_copy(RecordId id, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  TensorRecord& r = row(id).record;
  ++r.copies_made;
  r.bytes_moved += bytes;
}

std::vector<ModuleResidency> ResidencyTable::module_report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ModuleResidency> out;
  for (const std::string& module : module_order_) {
    ModuleResidency m;
    m.module = module;
    const auto& ids = by_module_.at(module);
    m.home = rows_[ids.front()].record.home;
    for (RecordId id : ids) {
      const TensorRecord& r = rows_[id].record;
      m.bytes += r.bytes;
      m.bytes_by_home[r.home] += r.bytes;
      m.copies_made += r.copies_made;
      m.bytes_moved += r.bytes_moved;
      ++m.records;
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::string ResidencyTable::report() const {
  const auto modules = module_report();
  size_t width = 6;
  for (const auto& m : modules) width = std::max(width, m.module.size());
  std::string out = fmt::format("{:<{}}  {:<8}  {:>12}  {:>7}  {:>12}\n", "module", width, "tier",
                                "bytes", "copies", "bytes moved");
  std::map<Tier, uint64_t> per_tier;
  uint64_t total = 0, copies = 0, moved = 0;
  for (const auto& m : modules) {
    // A module on several tiers: its first record's home, then the others ("sim:0+cpu").
    std::string tiers = m.home.to_string();
    for (const auto& [tier, bytes] : m.bytes_by_home) {
      if (tier != m.home) tiers += "+" + tier.to_string();
      per_tier[tier] += bytes;
    }
    out += fmt::format("{:<{}}  {:<8}  {:>12}  {:>7}  {:>12}\n", m.module, width, tiers, m.bytes,
                       m.copies_made, m.bytes_moved);
    total += m.bytes;
    copies += m.copies_made;
    moved += m.bytes_moved;
  }
  out += fmt::format("{:<{}}  {:<8}  {:>12}  {:>7}  {:>12}\n", "total", width, "", total, copies,
                     moved);
  for (const auto& [tier, bytes] : per_tier) {
    out += fmt::format("  {}: {} ({} bytes)\n", tier.to_string(), format_bytes(bytes), bytes);
  }
  return out;
}

}  // namespace stowage
