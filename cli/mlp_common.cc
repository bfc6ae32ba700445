#include "cli/mlp_common.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <memory>

#include "core/error.h"
#include "models/linear.h"

namespace stowage::cli {

std::unique_ptr<Platform> make_platform(const std::string& device, const MemoryBudgets& budgets,
                                        int min_accelerators) {
  DeviceChoice choice;
  try {
    choice = parse_device_choice(device);
  } catch (const InvalidInputError& e) {
    throw UsageError(fmt::format("--device expects auto, cuda or sim, found '{}'", device));
  }
  // The simulated platform has as many accelerators as --max-memory names
  // (up to kMaxSimulatedAccelerators), checked before any is made.
  SimOptions sim;
  sim.accelerator_count = std::min(std::max(min_accelerators, 1), kMaxSimulatedAccelerators);
  const bool simulated =
      choice == DeviceChoice::kSim || (choice == DeviceChoice::kAuto && !cuda_device_available());
  for (const auto& [index, bytes] : budgets.accelerators) {
    if (simulated && index >= kMaxSimulatedAccelerators) {
      throw UsageError(fmt::format(
          "--max-memory names accelerator {}, but the simulated platform has at most {} "
          "accelerators (indices 0 to {})",
          index, kMaxSimulatedAccelerators, kMaxSimulatedAccelerators - 1));
    }
    sim.accelerator_count = std::max(sim.accelerator_count, index + 1);
  }
  auto platform = Platform::create(choice, sim);
  for (const auto& [index, bytes] : budgets.accelerators) {
    if (index >= platform->accelerator_count()) {
      throw UsageError(
          fmt::format("--max-memory names accelerator {}, but {} accelerator(s) are visible", index,
                      platform->accelerator_count()));
    }
  }
  return platform;
}

std::vector<TensorOverride> parse_tensor_overrides(const std::vector<std::string>& values,
                                                   Platform& platform,
                                                   const std::string& disk_needs) {
  std::vector<TensorOverride> out;
  for (const std::string& value : values) {
    const size_t eq = value.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
      throw UsageError(fmt::format(
          "--override-tensor: expected REGEX=TIER (e.g. 'model\\.layers\\..*\\.mlp\\..*=cpu'), "
          "found '{}'",
          value));
    }
    TensorOverride o;
    o.pattern = value.substr(0, eq);
    check_regex_flag("--override-tensor", o.pattern);
    std::string tier = value.substr(eq + 1);
    std::string lower = tier;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const bool digits = std::all_of(tier.begin(), tier.end(),
                                    [](unsigned char c) { return std::isdigit(c) != 0; });
    if (lower == "cpu") {
      o.tier = Tier::pinned_host();
    } else if (lower == "disk") {
      if (!disk_needs.empty()) {
        throw UsageError(fmt::format("--override-tensor '{}': the disk tier needs {}", value,
                                     disk_needs));
      }
      o.tier = Tier::disk();
    } else if (digits && tier.size() <= 4) {
      const int index = std::stoi(tier);
      if (index >= platform.accelerator_count()) {
        throw UsageError(fmt::format(
            "--override-tensor '{}': expected an accelerator index below {} (the accelerators "
            "present), found {}",
            value, platform.accelerator_count(), index));
      }
      o.tier = platform.accelerator(index).tier();
    } else {
      throw UsageError(fmt::format(
          "--override-tensor '{}': expected TIER to be an accelerator index (e.g. 0), cpu or "
          "disk, found '{}'",
          value, tier));
    }
    out.push_back(std::move(o));
  }
  return out;
}

uint64_t working_reserve_bytes(Platform& platform, const models::MlpSpec& spec, int64_t batch) {
  // The kernels over the device's own memory, only asked for their sizes
  // (the same on every accelerator of a platform).
  std::unique_ptr<models::LinearKernels> kernels =
      models::make_linear_kernels(platform, platform.accelerator(0).memory());
  return models::working_memory_bytes(spec, batch, *kernels);
}

}  // namespace stowage::cli
