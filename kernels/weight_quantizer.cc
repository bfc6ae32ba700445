#include "kernels/weight_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/quantize.h"
#include "quant/cpu_quantizer.h"
#include "quant/quant_rules.h"

namespace stowage::kernels {
namespace {

// `source` as float16 in host memory (bitsandbytes' int8 input); `source`
// itself when it is float16 already. Throws InvalidInputError for a value
// that float16 cannot hold, as quant::quantize_int8_cpu does.
Tensor float16_on_host(const Tensor& source, MemoryResource& host, std::string_view name) {
  if (source.dtype() == DType::kF16) return source;
  Tensor f16 = Tensor::empty(host, DType::kF16, source.shape());
  // Through an aligned copy: a tensor in a file may sit at any offset.
  Tensor aligned = Tensor::empty(host, source.dtype(), source.shape());
  std::memcpy(aligned.data(), source.data(), source.bytes());
  for (size_t i = 0; i < source.numel(); ++i) {
    const float x = load_as_float(aligned.data(), aligned.dtype(), i);
    store_from_float(f16.data(), DType::kF16, i, x);
    STOWAGE_EXPECTS(std::isfinite(load_as_float(f16.data(), DType::kF16, i)), InvalidInputError,
                    "tensor '{}': element {} is {}{}; only finite weights can be quantized", name,
                    i, x, std::isfinite(x) ? " (beyond float16's range)" : "");
  }
  return f16;
}

// A host tensor of `count` F32 values from `value(i)`.
template <typename F>
Tensor host_table(MemoryResource& host, int64_t count, F value) {
  Tensor t = Tensor::empty(host, DType::kF32, Shape{count});
  for (int64_t i = 0; i < count; ++i) t.data_as<float>()[i] = value(static_cast<int>(i));
  return t;
}

quant::Int8Weight quantize_int8(const Tensor& source, MemoryResource& device, MemoryResource& host,
                                StreamRef stream, DType from, std::string_view name) {
  const Tensor input = from == DType::kF16 ? float16_on_host(source, host, name) : source;
  const int64_t rows = source.shape()[0];
  const int64_t cols = source.shape()[1];
  Tensor staged = Tensor::empty(device, input.dtype(), source.shape(), stream);
  stream.copy(staged.data(), input.data(), input.bytes());
  quant::Int8Weight w;
  w.cb = Tensor::empty(device, DType::kI8, source.shape(), stream);
  w.scb = Tensor::empty(device, DType::kF32, Shape{rows}, stream);
  quantize_int8_rowwise(staged.data(), input.dtype(), rows, cols, w.cb.data_as<int8_t>(),
                        w.scb.data_as<float>(), stream);
  w.weight_format = Tensor::empty(host, DType::kU8, Shape{});
  *w.weight_format.data_as<uint8_t>() = 0;  // row-major
  stream.synchronize();                     // `input` and `staged` go out of scope
  return w;
}

quant::FourBitWeight quantize_four_bit(const Tensor& source, const quant::WeightLayout& target,
                                       MemoryResource& device, MemoryResource& host,
                                       StreamRef stream) {
  const int64_t n = static_cast<int64_t>(source.numel());
  const int64_t blocks = static_cast<int64_t>(target.blocks());
  Tensor staged = Tensor::empty(device, source.dtype(), source.shape(), stream);
  stream.copy(staged.data(), source.data(), source.bytes());
  quant::FourBitWeight w;
  w.quant_type = target.format;
  w.blocksize = target.blocksize;
  w.dtype = source.dtype();
  w.shape = source.shape();
  // Zero-filled: packed_shape rounds up to whole storage elements.
  w.packed = Tensor::empty(device, target.storage, quant::packed_shape(n, target.storage), stream);
  stream.fill_zero(w.packed.data(), w.packed.bytes());
  Tensor absmax = Tensor::empty(device, DType::kF32, Shape{blocks}, stream);
  quantize_4bit(staged.data(), source.dtype(), n, target.blocksize, target.format,
                w.packed.data_as<uint8_t>(), absmax.data_as<float>(), stream);
  w.quant_map =
      host_table(host, 16, [&](int i) { return quant::stored_quant_map_value(target.format, i); });
  if (target.double_quant) {
    const int64_t nested = static_cast<int64_t>(target.nested_blocks());
    w.absmax = Tensor::empty(device, DType::kU8, Shape{blocks}, stream);
    w.nested_absmax = Tensor::empty(device, DType::kF32, Shape{nested}, stream);
    Tensor offset = Tensor::empty(device, DType::kF32, Shape{1}, stream);
    Tensor scratch;  // the CUDA kernel's partial sums; the CPU counterpart needs none
    if (stream.backend() == Backend::kCuda) {
      scratch = Tensor::empty(device, DType::kF64, Shape{nested}, stream);
    }
    double_quantize_absmax(absmax.data_as<float>(), blocks, offset.data_as<float>(),
                           w.absmax.data_as<uint8_t>(), w.nested_absmax.data_as<float>(),
                           scratch.defined() ? scratch.data_as<double>() : nullptr, stream);
    stream.copy(&w.nested_offset, offset.data(), sizeof(float));
    w.nested_quant_map = host_table(host, 256, quant_rules::dynamic_map_value);
  } else {
    w.absmax = absmax;
  }
  stream.synchronize();  // `staged` goes out of scope; nested_offset is read next
  w.quant_state = quant::make_state_tensor(w.layout().state_json(w.nested_offset), host);
  return w;
}

}  // namespace

quant::QuantizedWeight quantize_on_accelerator(const Tensor& source,
                                               const quant::WeightLayout& target,
                                               MemoryResource& device, MemoryResource& host,
                                               StreamRef stream, std::string_view name) {
  STOWAGE_EXPECTS(source.defined() &&
                      (source.dtype() == DType::kF16 || source.dtype() == DType::kBF16 ||
                       source.dtype() == DType::kF32) &&
                      source.shape() == target.shape,
                  InvalidInputError,
                  "quantizing '{}': expected an F16, BF16 or F32 tensor of shape {}, found {} {}",
                  name, target.shape.to_string(),
                  source.defined() ? safetensors_name(source.dtype()) : "nothing",
                  source.shape().to_string());
  target.validate(name);
  if (target.format == quant::WeightFormat::kInt8) {
    STOWAGE_EXPECTS(source.shape().rank() == 2, InvalidInputError,
                    "quantizing '{}' to int8: expected a 2-D weight [out, in], found {}", name,
                    source.shape().to_string());
    STOWAGE_EXPECTS(target.dtype == DType::kF16 || target.dtype == source.dtype(),
                    InvalidInputError,
                    "quantizing '{}' to int8: expected the codes from F16 or from the source's "
                    "{}, found {}",
                    name, safetensors_name(source.dtype()), safetensors_name(target.dtype));
    return quantize_int8(source, device, host, stream, target.dtype, name);
  }
  STOWAGE_EXPECTS(quant::is_four_bit(target.format), InvalidInputError,
                  "quantizing '{}': expected int8, nf4 or fp4, found {}", name,
                  quant::weight_format_name(target.format));
  return quantize_four_bit(source, target, device, host, stream);
}

quant::WeightQuantizer accelerator_weight_quantizer(MemoryResource& device, StreamRef stream,
                                                    bool parts_on_host) {
  return [&device, stream, parts_on_host](const Tensor& weight, const quant::WeightLayout& target,
                                          MemoryResource& host, std::string_view name) {
    if (parts_on_host) quant::check_finite_cpu(weight, name);
    quant::QuantizedWeight w = quantize_on_accelerator(weight, target, device, host, stream, name);
    if (!parts_on_host) return w;
    for (const quant::QuantPart& part : quant::parts(w)) {
      if (quant::host_addressable(part.tensor.tier())) continue;
      Tensor copy = Tensor::empty(host, part.tensor.dtype(), part.tensor.shape());
      stream.copy(copy.data(), part.tensor.data(), part.tensor.bytes());
      stream.synchronize();
      quant::replace_part(w, part.suffix, std::move(copy));
    }
    return w;
  };
}

}  // namespace stowage::kernels
