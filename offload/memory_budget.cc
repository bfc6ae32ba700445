#include "offload/memory_budget.h"

#include <fmt/format.h>
#include <unistd.h>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage {

uint64_t host_physical_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                               : UINT64_MAX;
}

std::optional<TierCapacity> MemoryBudget::capacity_of(Tier tier) const {
  if (tier == Tier::pinned_host()) return cpu;
  if (tier == Tier::disk()) return disk;
  for (const TierCapacity& c : accelerators) {
    if (c.tier == tier) return c;
  }
  return std::nullopt;
}

std::optional<uint64_t> MemoryBudget::budget_of(Tier tier) const {
  const std::optional<TierCapacity> c = capacity_of(tier);
  return c ? c->budget : std::nullopt;
}

void MemoryBudget::set_budget(Tier tier, uint64_t bytes) {
  std::optional<TierCapacity>* host = tier == Tier::pinned_host() ? &cpu
                                      : tier == Tier::disk()      ? &disk
                                                                  : nullptr;
  if (host != nullptr) {
    if (!*host) *host = TierCapacity{tier};
    (*host)->budget = bytes;
    return;
  }
  STOWAGE_EXPECTS(tier.is_accelerator(), InvalidInputError,
                  "a memory budget for {}: only accelerators, cpu and disk take one",
                  tier.to_string());
  for (TierCapacity& c : accelerators) {
    if (c.tier == tier) c.budget = bytes;
    if (c.tier == tier) return;
  }
  accelerators.push_back(TierCapacity{tier, bytes});
}

uint64_t MemoryBudget::working_reserve_of(Tier tier) const {
  auto it = working_reserve.find(tier);
  return it == working_reserve.end() ? 0 : it->second;
}

std::string MemoryBudget::describe() const {
  auto one = [](const TierCapacity& c) {
    std::string text = c.tier.to_string() + "=";
    if (c.budget) return text + fmt::format("{} ({} bytes)", format_bytes(*c.budget), *c.budget);
    if (c.physical_bytes == UINT64_MAX) return text + "unlimited";
    return text + fmt::format("no budget, {} physical", format_bytes(c.physical_bytes));
  };
  std::vector<std::string> parts;
  for (const auto& c : accelerators) parts.push_back(one(c));
  parts.push_back(cpu ? one(*cpu) : "cpu=not used");
  parts.push_back(disk ? one(*disk) : "disk=not used (no offload folder)");
  return fmt::format("{}", fmt::join(parts, ", "));
}

MemoryBudget memory_budget_for(Platform& platform, const std::map<int, uint64_t>& accelerator_budgets,
                               std::optional<uint64_t> cpu, uint64_t cpu_physical, bool with_disk,
                               std::optional<uint64_t> disk) {
  MemoryBudget budget;
  for (const auto& [index, bytes] : accelerator_budgets) {
    STOWAGE_EXPECTS(index >= 0 && index < platform.accelerator_count(), InvalidInputError,
                    "a memory budget names accelerator {}, but this platform has {} "
                    "accelerator(s)",
                    index, platform.accelerator_count());
  }
  for (int i = 0; i < platform.accelerator_count(); ++i) {
    auto it = accelerator_budgets.find(i);
    budget.accelerators.push_back(
        TierCapacity{platform.accelerator(i).tier(),
                     it == accelerator_budgets.end() ? std::nullopt : std::optional(it->second),
                     platform.accelerator(i).total_bytes()});
  }
  budget.cpu = TierCapacity{Tier::pinned_host(), cpu, cpu_physical};
  if (with_disk) budget.disk = TierCapacity{Tier::disk(), disk};
  return budget;
}

}  // namespace stowage
