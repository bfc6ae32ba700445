#include "offload/planner.h"

#include <fmt/format.h>
#include <re2/re2.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage {
namespace {

// A unit of placement: one module, or the modules of a no-split group.
struct Unit {
  std::string name;             // the module path, or the group's matching path
  std::vector<size_t> modules;  // indices into request.modules, execution order
  uint64_t bytes = 0;  // of the tensors no override places (step 6)
};

// A module's bytes in a fetch slot when its tensors that no override places
// are on `tier`: each tensor not on the first accelerator (`compute`) at a
// 256-byte aligned offset (OffloadManager's slot layout); 0 when every tensor
// is on one accelerator (resident there) or the module is read in place.
uint64_t slot_bytes_on(const PlanModule& module, Tier tier, std::optional<Tier> compute) {
  if (module.read_in_place) return 0;
  bool one_accelerator = true;
  for (const auto& t : module.tensors) {
    const Tier at = t.tier.value_or(tier);
    if (!at.is_accelerator() || at != module.tensors.front().tier.value_or(tier)) {
      one_accelerator = false;
    }
  }
  if (one_accelerator) return 0;
  uint64_t offset = 0;
  for (const auto& t : module.tensors) {
    if (compute && t.tier.value_or(tier) == *compute) continue;
    offset = slot_append(offset, t.bytes);
  }
  return offset;
}

std::optional<Tier> compute_accelerator(const PlanRequest& request) {
  if (request.accelerators.empty()) return std::nullopt;
  return request.accelerators.front().tier;
}

bool any_tensor_on(const PlanModule& module, Tier tier, Tier at) {
  return std::any_of(module.tensors.begin(), module.tensors.end(),
                     [&](const PlanTensor& t) { return t.tier.value_or(tier) == at; });
}

// ", working-memory reserve (activations and kernel scratch) cuda:0=N bytes"
// or nothing when no accelerator keeps one.
std::string describe_working_reserve(const PlanRequest& request) {
  std::vector<std::string> parts;
  for (const auto& c : request.accelerators) {
    const uint64_t bytes = request.working_reserve_of(c.tier);
    if (bytes > 0) parts.push_back(fmt::format("{}={} bytes", c.tier.to_string(), bytes));
  }
  if (parts.empty()) return "";
  return fmt::format(", working-memory reserve (activations and kernel scratch) {}",
                     fmt::join(parts, ", "));
}

// Every working reserve names an accelerator of the request and fits in its
// limit: the forwards need that memory whatever is placed.
void check_working_reserve(const PlanRequest& request) {
  for (const auto& [tier, bytes] : request.working_reserve) {
    auto c = std::find_if(request.accelerators.begin(), request.accelerators.end(),
                          [&](const TierCapacity& a) { return a.tier == tier; });
    STOWAGE_EXPECTS(c != request.accelerators.end(), InvalidInputError,
                    "planner: a working-memory reserve names {}, which is not one of the "
                    "request's accelerators",
                    tier.to_string());
    if (bytes > c->limit()) {
      throw OutOfBudgetError(fmt::format(
          "planner: {} cannot hold its working-memory reserve (activations and kernel scratch) "
          "of {} ({} bytes) before any module is placed; budgets: {}",
          tier.to_string(), format_bytes(bytes), bytes, request.describe()));
    }
  }
}

// Parent paths of "a.b.c", shortest first, then the path itself.
std::vector<std::string> path_prefixes(const std::string& path) {
  std::vector<std::string> out;
  for (size_t pos = path.find('.'); pos != std::string::npos; pos = path.find('.', pos + 1)) {
    out.push_back(path.substr(0, pos));
  }
  out.push_back(path);
  return out;
}

std::vector<Unit> make_units(const PlanRequest& request, const std::vector<uint64_t>& bytes) {
  std::vector<std::unique_ptr<re2::RE2>> patterns;
  re2::RE2::Options quiet;
  quiet.set_log_errors(false);
  for (const std::string& p : request.no_split) {
    patterns.push_back(std::make_unique<re2::RE2>(p, quiet));
    STOWAGE_EXPECTS(patterns.back()->ok(), InvalidInputError,
                    "planner: no-split pattern '{}' is not a valid regex: {}", p,
                    patterns.back()->error());
  }
  std::vector<Unit> units;
  std::unordered_map<std::string, size_t> group_unit;
  for (size_t i = 0; i < request.modules.size(); ++i) {
    const std::string& path = request.modules[i].path;
    std::string group;
    if (!patterns.empty()) {
      for (const std::string& prefix : path_prefixes(path)) {
        const bool match = std::any_of(
            patterns.begin(), patterns.end(),
            [&](const std::unique_ptr<re2::RE2>& r) { return re2::RE2::FullMatch(prefix, *r); });
        if (match) {
          group = prefix;
          break;
        }
      }
    }
    if (!group.empty()) {
      auto [it, inserted] = group_unit.emplace(group, units.size());
      if (inserted) units.push_back(Unit{group, {}, 0});
      Unit& unit = units[it->second];
      unit.modules.push_back(i);
      unit.bytes += bytes[i];
    } else {
      units.push_back(Unit{path, {i}, bytes[i]});
    }
  }
  return units;
}

struct Placement {
  std::vector<std::optional<Tier>> unit_tier;
  uint64_t largest_streamed = 0;
  size_t largest_streamed_unit = 0;  // the index of the unit of largest_streamed
  bool any_on_disk = false;
  // Whether every unit kept resident (step 7) fit on the first accelerator.
  bool kept_fit = true;
};

// The largest tensor a placement reads from disk: of a unit placed there and
// not overridden elsewhere (step 6). {"", 0} when none.
struct DiskTensor {
  std::string name;
  uint64_t bytes = 0;
};
DiskTensor largest_tensor_on_disk(const PlanRequest& request, const std::vector<Unit>& units,
                                  const Placement& placement) {
  DiskTensor largest;
  for (size_t u = 0; u < units.size(); ++u) {
    if (placement.unit_tier[u] != Tier::disk()) continue;
    for (size_t i : units[u].modules) {
      const PlanModule& m = request.modules[i];
      for (const PlanTensor& t : m.tensors) {
        if (!t.tier && t.bytes > largest.bytes) largest = {m.path + "." + t.name, t.bytes};
      }
    }
  }
  return largest;
}

// The bytes of the tensors overridden to each tier (step 6).
using ForcedBytes = std::map<Tier, uint64_t>;

uint64_t forced_on(const ForcedBytes& forced, Tier tier) {
  auto it = forced.find(tier);
  return it == forced.end() ? 0 : it->second;
}

// Places units with `reserve` kept on every accelerator and the `forced`
// bytes taken first, then the units marked in `kept` on the first
// accelerator (step 7; kept_fit false when they do not fit there), then the
// rest in execution order. Throws when a unit fits nowhere.
Placement place(const PlanRequest& request, const std::vector<Unit>& units, uint64_t reserve,
                uint64_t cpu_reserve, const ForcedBytes& forced, const std::vector<bool>& kept) {
  Placement result;
  result.unit_tier.resize(units.size());
  result.any_on_disk = forced_on(forced, Tier::disk()) > 0;
  const auto less = [](uint64_t limit, uint64_t kept) { return limit > kept ? limit - kept : 0; };
  std::vector<uint64_t> acc_free;
  for (const auto& c : request.accelerators) {
    const uint64_t kept = reserve + request.working_reserve_of(c.tier);
    acc_free.push_back(less(less(c.limit(), kept), forced_on(forced, c.tier)));
  }
  uint64_t cpu_free = request.cpu ? request.cpu->limit() : 0;
  cpu_free = less(less(cpu_free, cpu_reserve), forced_on(forced, Tier::pinned_host()));
  uint64_t disk_free =
      less(request.disk ? request.disk->limit() : 0, forced_on(forced, Tier::disk()));
  const std::optional<Tier> compute = compute_accelerator(request);
  // A unit's fetch-slot bytes (its modules', as make_units sums them) on `tier`.
  auto note_streamed = [&](size_t u, Tier tier) {
    uint64_t slot = 0;
    for (size_t i : units[u].modules) {
      slot += slot_bytes_on(request.modules[i], tier, compute);
      if (any_tensor_on(request.modules[i], tier, Tier::disk())) result.any_on_disk = true;
    }
    if (slot > result.largest_streamed) {
      result.largest_streamed = slot;
      result.largest_streamed_unit = u;
    }
  };
  for (size_t u = 0; u < units.size(); ++u) {
    if (!kept[u]) continue;
    if (acc_free.empty() || acc_free[0] < units[u].bytes) {
      result.kept_fit = false;
      return result;
    }
    acc_free[0] -= units[u].bytes;
    result.unit_tier[u] = request.accelerators[0].tier;
  }
  size_t acc = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const uint64_t need = units[u].bytes;
    if (kept[u]) {
      note_streamed(u, request.accelerators[0].tier);
      continue;
    }
    while (acc < acc_free.size() && acc_free[acc] < need) ++acc;
    if (acc < acc_free.size()) {
      acc_free[acc] -= need;
      result.unit_tier[u] = request.accelerators[acc].tier;
      note_streamed(u, request.accelerators[acc].tier);
      continue;
    }
    if (request.cpu && cpu_free >= need) {
      cpu_free -= need;
      result.unit_tier[u] = Tier::pinned_host();
    } else if (request.disk && disk_free >= need) {
      disk_free -= need;
      result.unit_tier[u] = Tier::disk();
      result.any_on_disk = true;
    } else {
      std::string what = units[u].modules.size() == 1
                             ? fmt::format("module {}", units[u].name)
                             : fmt::format("no-split group {} ({} modules)", units[u].name,
                                           units[u].modules.size());
      throw OutOfBudgetError(fmt::format(
          "planner: {} needs {} ({} bytes) and fits on no tier; budgets: {}; accelerator "
          "reserve for streaming {} bytes each (prefetch depth {}){}, cpu reserve for disk "
          "staging {} bytes",
          what, format_bytes(need), need, request.describe(), reserve,
          request.prefetch_depth, describe_working_reserve(request), cpu_reserve));
    }
    note_streamed(u, *result.unit_tier[u]);
  }
  return result;
}

// The bytes of the overridden tensors (PlanTensor::tier) per tier, checked
// against each tier's room in execution order (step 6). `counted[i][t]` is
// false for a tied tensor counted at another name.
ForcedBytes forced_bytes(const PlanRequest& request,
                         const std::vector<std::vector<bool>>& counted) {
  ForcedBytes forced;
  for (size_t i = 0; i < request.modules.size(); ++i) {
    const PlanModule& m = request.modules[i];
    for (size_t t = 0; t < m.tensors.size(); ++t) {
      if (!m.tensors[t].tier) continue;
      const Tier tier = *m.tensors[t].tier;
      const std::string name = m.path.empty() ? m.tensors[t].name : m.path + "." + m.tensors[t].name;
      const std::optional<TierCapacity> capacity = request.capacity_of(tier);
      STOWAGE_EXPECTS(capacity.has_value(), InvalidInputError,
                      "planner: tensor '{}' is overridden to {}, a tier this plan does not fill "
                      "(its tiers: {})",
                      name, tier.to_string(), request.describe());
      const uint64_t bytes = counted[i][t] ? m.tensors[t].bytes : 0;
      const uint64_t working = request.working_reserve_of(tier);
      const uint64_t before = forced[tier];
      const uint64_t room = capacity->limit() > working ? capacity->limit() - working : 0;
      if (before + bytes > room) {
        throw OutOfBudgetError(fmt::format(
            "planner: tensor '{}' ({} bytes) is overridden to {}, which does not fit it: {} "
            "holds {} bytes, of which the tensors overridden there before it take {} and the "
            "working-memory reserve {}, leaving {}; budgets: {}",
            name, bytes, tier.to_string(), tier.to_string(), capacity->limit(), before, working,
            room > before ? room - before : 0, request.describe()));
      }
      forced[tier] = before + bytes;
    }
  }
  return forced;
}

// How many fetch slots of `slot_bytes` the streaming accelerator `c` holds
// beside its working reserve and the `resident` bytes placed on it, at most
// slot_count(prefetch_depth) (step 5). Throws OutOfBudgetError when not even
// one fits: the offload manager could allocate no slot and the first forward
// would fail.
int fetch_slots_that_fit(const PlanRequest& request, const TierCapacity& c, uint64_t resident,
                         uint64_t slot_bytes, const std::string& unit) {
  const int wanted = slot_count(request.prefetch_depth);
  const uint64_t working = request.working_reserve_of(c.tier);
  const uint64_t limit = c.limit();
  const uint64_t kept =
      working + resident;  // both at most the limit (place, check_working_reserve)
  const uint64_t free = limit > kept ? limit - kept : 0;
  const uint64_t fit = free / slot_bytes;
  if (fit == 0) {
    throw OutOfBudgetError(fmt::format(
        "planner: {} cannot hold one fetch slot for the streamed module {} ({} bytes as a slot "
        "holds "
        "it) beside its working-memory reserve of {} bytes{}: a run needs at least {} bytes "
        "there ({} bytes for the {} slots of prefetch depth {}); budgets: {}",
        c.tier.to_string(), unit, slot_bytes, working,
        resident > 0 ? fmt::format(" and {} resident bytes", resident) : "",
        working + resident + slot_bytes,
        working + resident + streaming_reserve_bytes(request.prefetch_depth, slot_bytes), wanted,
        request.prefetch_depth, request.describe()));
  }
  return static_cast<int>(std::min<uint64_t>(fit, static_cast<uint64_t>(wanted)));
}

// Step 8: the units interchangeable with the largest streamed one keep their
// count on the first accelerator, at evenly spaced positions among them.
void spread_resident(const PlanRequest& request, const std::vector<Unit>& units,
                     Placement& placement) {
  if (request.accelerators.empty() || placement.largest_streamed == 0) return;
  const Tier first = request.accelerators.front().tier;
  // Interchangeable: the first streamed candidate's bytes, and a slot of
  // the largest streamed unit's size on cpu.
  auto candidate = [&](size_t u) {
    if (units[u].modules.size() != 1) return false;
    const PlanModule& m = request.modules[units[u].modules.front()];
    const bool apart = std::any_of(m.tensors.begin(), m.tensors.end(),
                                   [](const PlanTensor& t) { return t.tier.has_value(); });
    const Tier at = *placement.unit_tier[u];
    return !m.read_in_place && !apart && (at == first || at == Tier::pinned_host()) &&
           slot_bytes_on(m, Tier::pinned_host(), first) == placement.largest_streamed;
  };
  std::optional<uint64_t> unit_bytes;
  for (size_t u = 0; u < units.size() && !unit_bytes; ++u) {
    if (candidate(u) && placement.unit_tier[u] == Tier::pinned_host()) unit_bytes = units[u].bytes;
  }
  if (!unit_bytes) return;
  std::vector<size_t> group;
  size_t resident = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    if (units[u].bytes != *unit_bytes || !candidate(u)) continue;
    group.push_back(u);
    if (placement.unit_tier[u] == first) ++resident;
  }
  if (resident == 0 || resident == group.size()) return;
  const size_t n = group.size();
  for (size_t u : group) placement.unit_tier[u] = Tier::pinned_host();
  for (size_t i = 0; i < resident; ++i) {
    placement.unit_tier[group[(2 * i + 1) * n / (2 * resident)]] = first;
  }
  if (placement.unit_tier[placement.largest_streamed_unit] == first) {
    for (size_t u : group) {
      if (placement.unit_tier[u] == Tier::pinned_host()) {
        placement.largest_streamed_unit = u;  // the same slot bytes
        break;
      }
    }
  }
}

}  // namespace

uint64_t PlanModule::bytes() const {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.bytes;
  return total;
}

Tier Plan::tier_of(const std::string& module) const {
  if (module_position.size() == device_map.size()) {
    auto it = module_position.find(module);
    if (it != module_position.end() && device_map[it->second].first == module) {
      return device_map[it->second].second;
    }
  }
  for (const auto& [path, tier] : device_map) {
    if (path == module) return tier;
  }
  throw InvalidInputError(fmt::format("plan: no module '{}' in the device map", module));
}

Tier Plan::tier_of_tensor(const std::string& module, const std::string& name) const {
  auto it = tensor_tiers.find(module);
  if (it != tensor_tiers.end()) {
    for (const auto& [tensor, tier] : it->second) {
      if (tensor == name) return tier;
    }
  }
  return tier_of(module);
}

bool Plan::on_several_tiers(const std::string& module) const {
  auto it = tensor_tiers.find(module);
  if (it == tensor_tiers.end()) return false;
  const Tier tier = tier_of(module);
  return std::any_of(it->second.begin(), it->second.end(),
                     [&](const auto& entry) { return entry.second != tier; });
}

std::vector<std::string> Plan::modules_on(Tier tier) const {
  std::vector<std::string> out;
  for (const auto& [path, t] : device_map) {
    if (t == tier) out.push_back(path);
  }
  return out;
}

std::string Plan::to_string(const PlanRequest& request) const {
  size_t width = 6;
  for (const auto& [path, tier] : device_map) width = std::max(width, path.size());
  std::map<std::string, uint64_t> module_bytes;
  for (const auto& m : request.modules) module_bytes[m.path] = m.bytes();
  std::string out = fmt::format("{:<{}}  {:<8}  {:>14}\n", "module", width, "tier", "bytes");
  for (const auto& [path, tier] : device_map) {
    // A module on several tiers: its module tier, then the others ("sim:0+cpu").
    std::string tiers = tier.to_string();
    auto overridden = tensor_tiers.find(path);
    if (overridden != tensor_tiers.end()) {
      for (const auto& entry : overridden->second) {
        const std::string t = entry.second.to_string();
        if (("+" + tiers + "+").find("+" + t + "+") == std::string::npos) tiers += "+" + t;
      }
    }
    out += fmt::format("{:<{}}  {:<8}  {:>14}\n", path, width, tiers, module_bytes[path]);
  }
  if (!tensor_tiers.empty()) {
    out += "tensors placed apart from their module (override; a module on several tiers is "
           "fetched whole, its tensors on the accelerator used in place):\n";
    for (const auto& m : request.modules) {
      auto it = tensor_tiers.find(m.path);
      if (it == tensor_tiers.end()) continue;
      for (const auto& [name, tier] : it->second) {
        uint64_t bytes = 0;
        for (const auto& t : m.tensors) {
          if (t.name == name) bytes = t.bytes;
        }
        out += fmt::format("  {}  {}  {}\n", m.path.empty() ? name : m.path + "." + name,
                           tier.to_string(), bytes);
      }
    }
  }
  out += "bytes per tier:\n";
  for (const auto& [tier, bytes] : bytes_per_tier) {
    out += fmt::format("  {:<8} {:>14}  ({})\n", tier.to_string(), bytes, format_bytes(bytes));
  }
  if (largest_streamed_unit > 0 && fetch_slots < slot_count(prefetch_depth)) {
    out += fmt::format(
        "streaming reserve (prefetch depth {}: {} of its {} slots of {} bytes fit; a module "
        "whose slot is not free yet is fetched synchronously):\n",
        prefetch_depth, fetch_slots, slot_count(prefetch_depth), largest_streamed_unit);
  } else {
    out += fmt::format("streaming reserve (prefetch depth {}, {} slots of {} bytes):\n",
                       prefetch_depth, slot_count(prefetch_depth), largest_streamed_unit);
  }
  for (const auto& [tier, bytes] : reserve_per_accelerator) {
    out += fmt::format("  {:<8} {:>14}  ({})\n", tier.to_string(), bytes, format_bytes(bytes));
  }
  const bool any_working =
      std::any_of(working_reserve_per_accelerator.begin(), working_reserve_per_accelerator.end(),
                  [](const auto& entry) { return entry.second > 0; });
  if (any_working) {
    out += "working-memory reserve (activations and kernel scratch):\n";
    for (const auto& [tier, bytes] : working_reserve_per_accelerator) {
      out += fmt::format("  {:<8} {:>14}  ({})\n", tier.to_string(), bytes, format_bytes(bytes));
    }
  }
  if (cpu_reserve > 0) {
    out += fmt::format("disk staging reserve on cpu: {} ({})\n", cpu_reserve,
                       format_bytes(cpu_reserve));
  }
  return out;
}

// A placement at its fixed point (step 3): the fetch-slot reserve and the
// disk staging kept, each grown until it covers what the placement streams.
struct Settled {
  Placement placement;
  uint64_t reserve = 0;
  uint64_t cpu_reserve = 0;
};

// nullopt when the units in `kept` do not fit on the first accelerator.
std::optional<Settled> settle(const PlanRequest& request, const std::vector<Unit>& units,
                              const ForcedBytes& forced, const std::vector<bool>& kept) {
  Settled s;
  s.placement = place(request, units, s.reserve, s.cpu_reserve, forced, kept);
  // The reserve only grows: a larger reserve can only push more units off
  // the accelerators.
  for (;;) {
    if (!s.placement.kept_fit) return std::nullopt;
    bool grew = false;
    const uint64_t slots =
        streaming_reserve_bytes(request.prefetch_depth, s.placement.largest_streamed);
    if (slots > s.reserve) {
      s.reserve = slots;
      grew = true;
    }
    const uint64_t staging =
        s.placement.any_on_disk
            ? disk_staging_buffer_bytes(request.disk_staging_bytes,
                                        largest_tensor_on_disk(request, units, s.placement).bytes)
            : 0;
    if (staging > s.cpu_reserve) {
      s.cpu_reserve = staging;
      grew = true;
    }
    if (!grew) return s;
    s.placement = place(request, units, s.reserve, s.cpu_reserve, forced, kept);
  }
}

// The unit bytes a placement puts on tiers that `where` accepts.
template <typename Where>
uint64_t bytes_placed(const std::vector<Unit>& units, const Placement& placement, Where where) {
  uint64_t total = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    if (placement.unit_tier[u] && where(*placement.unit_tier[u])) total += units[u].bytes;
  }
  return total;
}

// Whether `candidate` holds more on the accelerators than `current` and no
// more on disk (step 7).
bool holds_more(const std::vector<Unit>& units, const Placement& candidate,
                const Placement& current) {
  const auto on_accelerator = [](Tier t) { return t.is_accelerator(); };
  const auto on_disk = [](Tier t) { return t == Tier::disk(); };
  return bytes_placed(units, candidate, on_accelerator) >
             bytes_placed(units, current, on_accelerator) &&
         bytes_placed(units, candidate, on_disk) <= bytes_placed(units, current, on_disk);
}

Plan plan_device_map(const PlanRequest& request) {
  STOWAGE_EXPECTS(request.prefetch_depth >= 0, InvalidInputError,
                  "planner: prefetch depth must be >= 0, found {}", request.prefetch_depth);
  for (const auto& c : request.accelerators) {
    STOWAGE_EXPECTS(c.tier.is_accelerator(), InvalidInputError,
                    "planner: accelerator list holds {}, which is not an accelerator",
                    c.tier.to_string());
  }
  check_working_reserve(request);
  // Module bytes with tied tensors counted once, at their first user.
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < request.modules.size(); ++i) {
    STOWAGE_EXPECTS(index.emplace(request.modules[i].path, i).second, InvalidInputError,
                    "planner: module path '{}' appears twice", request.modules[i].path);
  }
  std::unordered_map<std::string, std::pair<size_t, size_t>> tensor_at;  // full name -> (m, t)
  for (size_t i = 0; i < request.modules.size(); ++i) {
    const auto& m = request.modules[i];
    for (size_t t = 0; t < m.tensors.size(); ++t) {
      tensor_at[m.path.empty() ? m.tensors[t].name : m.path + "." + m.tensors[t].name] = {i, t};
    }
  }
  Plan plan;
  plan.prefetch_depth = request.prefetch_depth;
  std::vector<uint64_t> bytes(request.modules.size());
  for (size_t i = 0; i < request.modules.size(); ++i) bytes[i] = request.modules[i].bytes();
  std::vector<std::vector<bool>> counted(request.modules.size());
  for (size_t i = 0; i < request.modules.size(); ++i) {
    counted[i].assign(request.modules[i].tensors.size(), true);
  }
  for (const auto& group : request.tied) {
    const std::string* first = nullptr;
    std::pair<size_t, size_t> first_at{SIZE_MAX, SIZE_MAX};
    for (const std::string& name : group) {
      auto it = tensor_at.find(name);
      STOWAGE_EXPECTS(it != tensor_at.end(), InvalidInputError,
                      "planner: tied tensor '{}' belongs to no module of the request", name);
      if (first == nullptr || it->second < first_at) {
        first = &name;
        first_at = it->second;
      }
    }
    for (const std::string& name : group) {
      if (name == *first) continue;
      const auto at = tensor_at[name];
      bytes[at.first] -= request.modules[at.first].tensors[at.second].bytes;
      counted[at.first][at.second] = false;
      plan.tied_to[name] = *first;
    }
  }
  // Overridden tensors (step 6) leave their module's unit.
  const ForcedBytes forced = forced_bytes(request, counted);
  std::vector<uint64_t> forced_of_module(request.modules.size(), 0);
  for (size_t i = 0; i < request.modules.size(); ++i) {
    const PlanModule& m = request.modules[i];
    for (size_t t = 0; t < m.tensors.size(); ++t) {
      if (!m.tensors[t].tier) continue;
      if (counted[i][t]) forced_of_module[i] += m.tensors[t].bytes;
      plan.tensor_tiers[m.path].emplace_back(m.tensors[t].name, *m.tensors[t].tier);
    }
    bytes[i] -= forced_of_module[i];
  }

  const std::vector<Unit> units = make_units(request, bytes);
  // With nothing kept, every unit is placed or place() throws.
  Settled settled = *settle(request, units, forced, std::vector<bool>(units.size(), false));
  // Step 7: a streamed unit larger than the rest sizes every fetch slot;
  // keeping it resident instead can leave more bytes on the accelerators.
  if (!request.accelerators.empty()) {
    std::vector<bool> kept(units.size(), false);
    while (settled.placement.largest_streamed > 0) {
      const size_t u = settled.placement.largest_streamed_unit;
      if (kept[u]) break;
      kept[u] = true;
      std::optional<Settled> candidate = settle(request, units, forced, kept);
      if (!candidate || !holds_more(units, candidate->placement, settled.placement)) break;
      settled = std::move(*candidate);
    }
  }
  Placement& placement = settled.placement;
  if (request.spread_resident) spread_resident(request, units, placement);
  uint64_t reserve = settled.reserve;
  const uint64_t cpu_reserve = settled.cpu_reserve;
  if (placement.largest_streamed == 0) reserve = 0;
  plan.cpu_reserve = placement.any_on_disk ? cpu_reserve : 0;
  if (plan.cpu_reserve > 0 && request.cpu) {
    const uint64_t beside = forced_on(forced, Tier::pinned_host());
    if (request.cpu->limit() < plan.cpu_reserve ||
        request.cpu->limit() - plan.cpu_reserve < beside) {
      const DiskTensor largest = largest_tensor_on_disk(request, units, placement);
      throw OutOfBudgetError(fmt::format(
          "planner: cpu cannot hold the pinned buffer disk reads are staged through: {} bytes "
          "(the largest tensor on disk, {}, is {} bytes; the staging size {} bytes){}; budgets: "
          "{}",
          plan.cpu_reserve, largest.name, largest.bytes, request.disk_staging_bytes,
          beside > 0 ? fmt::format(", beside {} bytes of tensors overridden onto cpu", beside)
                     : std::string(),
          request.describe()));
    }
  }

  for (const auto& c : request.accelerators) {
    plan.bytes_per_tier[c.tier] = 0;
    plan.reserve_per_accelerator[c.tier] = reserve;
    plan.working_reserve_per_accelerator[c.tier] = request.working_reserve_of(c.tier);
  }
  plan.fetch_slots = slot_count(request.prefetch_depth);
  if (placement.largest_streamed > 0 && !request.accelerators.empty()) {
    const TierCapacity& streaming = request.accelerators.front();
    uint64_t resident = forced_on(forced, streaming.tier);
    for (size_t u = 0; u < units.size(); ++u) {
      if (*placement.unit_tier[u] == streaming.tier) resident += units[u].bytes;
    }
    plan.fetch_slots = fetch_slots_that_fit(
        request, streaming, resident, placement.largest_streamed, units[placement.largest_streamed_unit].name);
    plan.reserve_per_accelerator[streaming.tier] =
        static_cast<uint64_t>(plan.fetch_slots) * placement.largest_streamed;
  }
  if (request.cpu) plan.bytes_per_tier[Tier::pinned_host()] = 0;
  if (request.disk) plan.bytes_per_tier[Tier::disk()] = 0;
  for (const auto& [tier, forced_bytes] : forced) plan.bytes_per_tier[tier] += forced_bytes;
  std::vector<Tier> module_tier(request.modules.size(), Tier::pinned_host());
  for (size_t u = 0; u < units.size(); ++u) {
    for (size_t i : units[u].modules) {
      const PlanModule& m = request.modules[i];
      const bool all_overridden =
          !m.tensors.empty() && std::all_of(m.tensors.begin(), m.tensors.end(),
                                            [](const PlanTensor& t) { return t.tier.has_value(); });
      module_tier[i] = all_overridden ? *m.tensors.front().tier : *placement.unit_tier[u];
      plan.bytes_per_tier[module_tier[i]] += bytes[i];
    }
  }
  for (size_t i = 0; i < request.modules.size(); ++i) {
    plan.device_map.emplace_back(request.modules[i].path, module_tier[i]);
    plan.module_position.emplace(request.modules[i].path, i);
  }
  plan.largest_streamed_unit = placement.largest_streamed;
  return plan;
}

}  // namespace stowage
