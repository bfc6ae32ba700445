// Where bytes live: an accelerator (a real CUDA device or a simulated one),
// pinned host RAM, pageable host RAM, or disk (an mmap'd file).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace stowage {

enum class Backend { kSim, kCuda };

enum class TierKind { kAccelerator, kPinnedHost, kPageableHost, kDisk };

class Tier {
 public:
  static Tier accelerator(Backend backend, int index) {
    return Tier(TierKind::kAccelerator, backend, index);
  }
  static Tier pinned_host() { return Tier(TierKind::kPinnedHost, Backend::kSim, 0); }
  static Tier pageable_host() { return Tier(TierKind::kPageableHost, Backend::kSim, 0); }
  static Tier disk() { return Tier(TierKind::kDisk, Backend::kSim, 0); }

  TierKind kind() const { return kind_; }
  bool is_accelerator() const { return kind_ == TierKind::kAccelerator; }
  bool is_host() const {
    return kind_ == TierKind::kPinnedHost || kind_ == TierKind::kPageableHost;
  }
  // Accelerator backend and index; meaningful only for accelerators.
  Backend backend() const { return backend_; }
  int index() const { return index_; }

  // "cuda:0", "sim:1", "cpu" (pinned host), "host" (pageable), "disk".
  std::string to_string() const;
  // Parses the spellings to_string() produces; nullopt otherwise.
  static std::optional<Tier> parse(std::string_view text);

  bool operator==(const Tier& o) const {
    return kind_ == o.kind_ &&
           (kind_ != TierKind::kAccelerator || (backend_ == o.backend_ && index_ == o.index_));
  }
  bool operator!=(const Tier& o) const { return !(*this == o); }
  bool operator<(const Tier& o) const;

 private:
  Tier(TierKind kind, Backend backend, int index) : kind_(kind), backend_(backend), index_(index) {}
  TierKind kind_;
  Backend backend_;
  int index_;
};

}  // namespace stowage

template <>
struct std::hash<stowage::Tier> {
  size_t operator()(const stowage::Tier& t) const {
    return std::hash<int>()(
        static_cast<int>(t.kind()) * 1024 +
        (t.is_accelerator() ? static_cast<int>(t.backend()) * 256 + t.index() : 0));
  }
};
