#include "offload/replacement_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

namespace stowage {
namespace {

class LruPolicy final : public ReplacementPolicy {
 public:
  void touch(uint64_t key) override { last_use_[key] = ++clock_; }
  uint64_t victim(const std::vector<uint64_t>& resident) const override {
    return *std::min_element(resident.begin(), resident.end(), [&](uint64_t a, uint64_t b) {
      return last_use(a) < last_use(b);
    });
  }

 private:
  uint64_t last_use(uint64_t key) const {
    auto it = last_use_.find(key);
    return it == last_use_.end() ? 0 : it->second;
  }
  uint64_t clock_ = 0;
  std::unordered_map<uint64_t, uint64_t> last_use_;
};

class LfuAgingPolicy final : public ReplacementPolicy {
 public:
  explicit LfuAgingPolicy(uint64_t aging_period) : aging_period_(std::max<uint64_t>(aging_period, 1)) {}
  void touch(uint64_t key) override {
    Use& u = uses_[key];
    u.count += 1;
    u.last = ++clock_;
    if (clock_ % aging_period_ == 0) {
      for (auto& [k, use] : uses_) use.count /= 2;
    }
  }
  uint64_t victim(const std::vector<uint64_t>& resident) const override {
    return *std::min_element(resident.begin(), resident.end(), [&](uint64_t a, uint64_t b) {
      const Use ua = use(a), ub = use(b);
      return ua.count != ub.count ? ua.count < ub.count : ua.last < ub.last;
    });
  }

 private:
  struct Use {
    uint64_t count = 0;
    uint64_t last = 0;
  };
  Use use(uint64_t key) const {
    auto it = uses_.find(key);
    return it == uses_.end() ? Use{} : it->second;
  }
  uint64_t aging_period_;
  uint64_t clock_ = 0;
  std::unordered_map<uint64_t, Use> uses_;
};

}  // namespace

ReplacementPolicyKind parse_replacement_policy(const std::string& name) {
  if (name == "lru") return ReplacementPolicyKind::kLru;
  if (name == "lfu") return ReplacementPolicyKind::kLfuAging;
  throw InvalidInputError(
      fmt::format("expert cache policy: expected lru or lfu, found '{}'", name));
}

const char* replacement_policy_name(ReplacementPolicyKind kind) {
  return kind == ReplacementPolicyKind::kLru ? "lru" : "lfu";
}

std::unique_ptr<ReplacementPolicy> make_replacement_policy(ReplacementPolicyKind kind,
                                                           uint64_t aging_period) {
  if (kind == ReplacementPolicyKind::kLru) return std::make_unique<LruPolicy>();
  return std::make_unique<LfuAgingPolicy>(aging_period);
}

double replay_hit_rate(ReplacementPolicy& policy, size_t capacity,
                       const std::vector<uint64_t>& trace) {
  if (trace.empty()) return 0.0;
  std::unordered_set<uint64_t> cached;
  std::vector<uint64_t> resident;
  uint64_t hits = 0;
  for (uint64_t key : trace) {
    if (cached.count(key) != 0) {
      ++hits;
    } else if (capacity > 0) {
      if (resident.size() == capacity) {
        const uint64_t out = policy.victim(resident);
        cached.erase(out);
        resident.erase(std::find(resident.begin(), resident.end(), out));
      }
      cached.insert(key);
      resident.push_back(key);
    }
    policy.touch(key);
  }
  return static_cast<double>(hits) / static_cast<double>(trace.size());
}

}  // namespace stowage
