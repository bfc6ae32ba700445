#include "core/tensor.h"

#include "core/error.h"

namespace stowage {

Tensor Tensor::empty(MemoryResource& resource, DType dtype, Shape shape, StreamRef stream) {
  auto numel = shape.checked_numel();
  STOWAGE_EXPECTS(numel.has_value(), InvalidInputError, "invalid tensor shape {}",
                  shape.to_string());
  const uint64_t bytes = dtype_bytes_for(dtype, *numel);
  return from_storage(std::make_shared<Buffer>(resource, bytes, stream), 0, dtype,
                      std::move(shape));
}

Tensor Tensor::from_storage(std::shared_ptr<Buffer> storage, size_t offset, DType dtype,
                            Shape shape) {
  STOWAGE_EXPECTS(storage != nullptr, InvalidInputError, "tensor storage is null");
  auto numel = shape.checked_numel();
  STOWAGE_EXPECTS(numel.has_value(), InvalidInputError, "invalid tensor shape {}",
                  shape.to_string());
  const uint64_t bytes = dtype_bytes_for(dtype, *numel);
  STOWAGE_EXPECTS(offset <= storage->size() && bytes <= storage->size() - offset, InvalidInputError,
                  "tensor of {} {} needs bytes [{}, {}) but its storage holds {} bytes",
                  short_name(dtype), shape.to_string(), offset, offset + bytes, storage->size());
  Tensor t;
  t.storage_ = std::move(storage);
  t.offset_ = offset;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace stowage
