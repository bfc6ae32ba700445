// Tensors: a dtype and a shape over contiguous bytes. Tensor shares ownership
// of its Buffer (several tensors may view one buffer, e.g. a mapped file);
// TensorView is a non-owning view.
#pragma once

#include <cstddef>
#include <memory>

#include "core/buffer.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace stowage {

class TensorView {
 public:
  TensorView() = default;
  TensorView(void* data, DType dtype, Shape shape, Tier tier)
      : data_(data), dtype_(dtype), shape_(std::move(shape)), tier_(tier) {}

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  Tier tier() const { return tier_; }
  uint64_t numel() const { return shape_.numel(); }
  uint64_t bytes() const { return dtype_bytes_for(dtype_, shape_.numel()); }

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
  Tier tier_ = Tier::pageable_host();
};

class Tensor {
 public:
  Tensor() = default;
  // A new tensor of uninitialized bytes from `resource`.
  static Tensor empty(MemoryResource& resource, DType dtype, Shape shape, StreamRef stream = {});
  // A tensor over bytes [offset, offset + bytes) of `storage`; throws
  // InvalidInputError when they fall outside it.
  static Tensor from_storage(std::shared_ptr<Buffer> storage, size_t offset, DType dtype,
                             Shape shape);

  bool defined() const { return storage_ != nullptr; }
  void* data() const { return static_cast<char*>(storage_->data()) + offset_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data());
  }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  Tier tier() const { return storage_->tier(); }
  uint64_t numel() const { return shape_.numel(); }
  uint64_t bytes() const { return dtype_bytes_for(dtype_, shape_.numel()); }
  TensorView view() const { return TensorView(data(), dtype_, shape_, tier()); }
  const std::shared_ptr<Buffer>& storage() const { return storage_; }
  size_t storage_offset() const { return offset_; }

 private:
  std::shared_ptr<Buffer> storage_;
  size_t offset_ = 0;
  DType dtype_ = DType::kF32;
  Shape shape_;
};

}  // namespace stowage
