// Tensor shapes: a list of non-negative extents, row-major.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace stowage {

// Sizes computed from untrusted extents (file shapes, config values, flag
// values): products and sums that report overflow instead of wrapping. A
// result is at most kMaxCheckedSize (2^62), so it fits int64_t and size_t and
// a few of them can be added without wrapping either; nullopt past it.
constexpr uint64_t kMaxCheckedSize = uint64_t{1} << 62;
std::optional<uint64_t> checked_product(std::initializer_list<uint64_t> factors);
std::optional<uint64_t> checked_sum(std::initializer_list<uint64_t> terms);

class Shape {
 public:
  Shape() = default;  // 0-d (a scalar: one element)
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}

  size_t rank() const { return dims_.size(); }
  int64_t operator[](size_t i) const { return dims_[i]; }
  const std::vector<int64_t>& dims() const { return dims_; }

  // Product of the extents (1 for a 0-d shape). REQUIRES: valid().
  uint64_t numel() const;
  // Product of the extents, or nullopt when an extent is negative or the
  // product overflows 2^63 (used to validate untrusted headers).
  std::optional<uint64_t> checked_numel() const;

  std::string to_string() const;  // "[4096, 4096]"
  bool operator==(const Shape& other) const { return dims_ == other.dims_; }
  bool operator!=(const Shape& other) const { return dims_ != other.dims_; }

 private:
  std::vector<int64_t> dims_;
};

}  // namespace stowage
