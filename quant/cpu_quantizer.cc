#include "quant/cpu_quantizer.h"

#include <fmt/format.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <exception>
#include <thread>

#include "core/error.h"
#include "quant/quant_rules.h"

namespace stowage::quant {
namespace {

namespace rules = ::stowage::quant_rules;

void check_readable(const Tensor& t, std::string_view name) {
  STOWAGE_EXPECTS(t.defined(), InvalidInputError, "tensor '{}' is empty (undefined)", name);
  STOWAGE_EXPECTS(host_addressable(t.tier()), InvalidInputError,
                  "tensor '{}' lives on {}; the CPU quantizer needs host-addressable memory", name,
                  t.tier().to_string());
}

void check_float_input(const Tensor& t, std::string_view name) {
  check_readable(t, name);
  STOWAGE_EXPECTS(t.dtype() == DType::kF16 || t.dtype() == DType::kBF16 || t.dtype() == DType::kF32,
                  InvalidInputError,
                  "tensor '{}': expected a F16, BF16 or F32 weight to quantize, found {}", name,
                  safetensors_name(t.dtype()));
}

void check_output_resource(MemoryResource& resource) {
  STOWAGE_EXPECTS(host_addressable(resource.tier()), InvalidInputError,
                  "the CPU quantizer writes into host-addressable memory; resource '{}' is on {}",
                  resource.name(), resource.tier().to_string());
}

// Element i of an array of T that may be misaligned: tensors read from a
// safetensors file sit at whatever offset the file gives them (a U8 part of
// odd length shifts every later tensor).
template <typename T>
T load_unaligned(const void* base, uint64_t i) {
  T value;
  std::memcpy(&value, static_cast<const char*>(base) + i * sizeof(T), sizeof(T));
  return value;
}

// Calls body(load) with load(i) -> float for the tensor's dtype, so the dtype
// switch happens once per tensor, not per element.
template <typename Body>
void with_loader(const Tensor& t, Body&& body) {
  switch (t.dtype()) {
    case DType::kF32: {
      const void* p = t.data();
      body([p](uint64_t i) { return load_unaligned<float>(p, i); });
      return;
    }
    case DType::kF16: {
      const void* p = t.data();
      body([p](uint64_t i) { return half_bits_to_float(load_unaligned<uint16_t>(p, i)); });
      return;
    }
    case DType::kBF16: {
      const void* p = t.data();
      body([p](uint64_t i) { return bfloat16_bits_to_float(load_unaligned<uint16_t>(p, i)); });
      return;
    }
    default:
      throw InternalError(fmt::format("no float loader for {}", safetensors_name(t.dtype())));
  }
}

[[noreturn]] void throw_non_finite(std::string_view name, uint64_t index, float value,
                                   const char* extra) {
  throw InvalidInputError(
      fmt::format("tensor '{}': element {} is {}{}; only finite weights can be quantized", name,
                  index, value, extra));
}

// Writes the float32 values `value(i)` for i < n into a new tensor of `dtype`.
template <typename Value>
Tensor store_floats(MemoryResource& resource, DType dtype, const Shape& shape, uint64_t n,
                    Value&& value) {
  STOWAGE_EXPECTS(
      dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kF32, InvalidInputError,
      "dequantize: output dtype should be F16, BF16 or F32, found {}", safetensors_name(dtype));
  Tensor out = Tensor::empty(resource, dtype, shape);
  void* data = out.data();
  switch (dtype) {
    case DType::kF32: {
      float* p = static_cast<float*>(data);
      for (uint64_t i = 0; i < n; ++i) p[i] = value(i);
      break;
    }
    case DType::kF16: {
      uint16_t* p = static_cast<uint16_t*>(data);
      for (uint64_t i = 0; i < n; ++i) p[i] = float_to_half_bits(value(i));
      break;
    }
    default: {
      uint16_t* p = static_cast<uint16_t*>(data);
      for (uint64_t i = 0; i < n; ++i) p[i] = float_to_bfloat16_bits(value(i));
      break;
    }
  }
  return out;
}

// max |x| over [begin, end), rejecting non-finite values.
template <typename Load>
float finite_absmax(const Load& load, uint64_t begin, uint64_t end, std::string_view name) {
  float m = 0.0f;
  for (uint64_t i = begin; i < end; ++i) {
    const float x = load(i);
    if (!std::isfinite(x)) throw_non_finite(name, i, x, "");
    m = std::fmax(m, std::fabs(x));
  }
  return m;
}

// Runs body(begin, end) over [0, count) in contiguous chunks of at least
// `min_chunk`, on up to hardware_concurrency() threads (the caller's among
// them). Chunks are independent, so the result does not depend on the thread
// count. Rethrows the exception of the lowest chunk that failed, so the error
// names the first bad element, as a serial run would.
template <typename Body>
void parallel_chunks(uint64_t count, uint64_t min_chunk, const Body& body) {
  const uint64_t hw = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t chunks = std::min<uint64_t>(
      hw, (count + std::max<uint64_t>(min_chunk, 1) - 1) / std::max<uint64_t>(min_chunk, 1));
  if (chunks <= 1) {
    body(uint64_t{0}, count);
    return;
  }
  const uint64_t per = (count + chunks - 1) / chunks;
  std::vector<std::exception_ptr> errors(chunks);
  auto run = [&](uint64_t c) {
    try {
      body(c * per, std::min(count, (c + 1) * per));
    } catch (...) {
      errors[c] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (uint64_t c = 1; c < chunks; ++c) threads.emplace_back(run, c);
  run(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// About this many elements per thread before splitting is worth a thread.
constexpr uint64_t kMinElementsPerThread = uint64_t{1} << 20;

Tensor make_weight_format(MemoryResource& resource) {
  Tensor t = Tensor::empty(resource, DType::kU8, Shape{});
  *t.data_as<uint8_t>() = 0;  // row-major, the only format bitsandbytes still writes
  return t;
}

Tensor make_f32_tensor(MemoryResource& resource, const std::vector<float>& values) {
  Tensor t = Tensor::empty(resource, DType::kF32, Shape{static_cast<int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

}  // namespace

void check_options(const FourBitOptions& options) {
  STOWAGE_EXPECTS(
      options.quant_type == WeightFormat::kNf4 || options.quant_type == WeightFormat::kFp4,
      InvalidInputError, "4-bit quantization type should be nf4 or fp4, found {}",
      weight_format_name(options.quant_type));
  STOWAGE_EXPECTS(is_valid_blocksize(options.blocksize), InvalidInputError,
                  "blocksize should be a power of two in [{}, {}], found {}", kMinBlocksize,
                  kMaxBlocksize, options.blocksize);
  STOWAGE_EXPECTS(is_valid_storage_dtype(options.storage), InvalidInputError,
                  "4-bit storage dtype should be uint8, float16, bfloat16 or float32, found {}",
                  torch_name(options.storage));
}

Int8Weight quantize_int8_cpu(const Tensor& weight, MemoryResource& resource, std::string_view name,
                             float threshold) {
  check_float_input(weight, name);
  check_output_resource(resource);
  STOWAGE_EXPECTS(weight.shape().rank() == 2, InvalidInputError,
                  "tensor '{}': int8 quantization needs a 2-D weight [out, in], found shape {}",
                  name, weight.shape().to_string());
  STOWAGE_EXPECTS(std::isfinite(threshold) && threshold >= 0.0f, InvalidInputError,
                  "int8 outlier threshold should be a finite number >= 0, found {}", threshold);
  const int64_t rows = weight.shape()[0];
  const int64_t cols = weight.shape()[1];
  Int8Weight out;
  out.threshold = threshold;
  out.cb = Tensor::empty(resource, DType::kI8, weight.shape());
  out.scb = Tensor::empty(resource, DType::kF32, Shape{rows});
  out.weight_format = make_weight_format(resource);
  int8_t* cb = out.cb.data_as<int8_t>();
  float* scb = out.scb.data_as<float>();
  const uint64_t min_rows =
      std::max<uint64_t>(1, kMinElementsPerThread / std::max<int64_t>(cols, 1));
  with_loader(weight, [&](auto load) {
    parallel_chunks(static_cast<uint64_t>(rows), min_rows, [&](uint64_t r0, uint64_t r1) {
      std::vector<float> row(static_cast<size_t>(cols));
      for (uint64_t r = r0; r < r1; ++r) {
        float absmax = 0.0f;
        for (int64_t c = 0; c < cols; ++c) {
          const uint64_t i = r * static_cast<uint64_t>(cols) + c;
          const float x = load(i);
          // bitsandbytes quantizes int8 weights from float16 (Int8Params._quantize).
          const float h = half_bits_to_float(float_to_half_bits(x));
          if (!std::isfinite(h)) {
            throw_non_finite(name, i, x, std::isfinite(x) ? " (beyond float16's range)" : "");
          }
          row[c] = h;
          absmax = std::fmax(absmax, std::fabs(h));
        }
        scb[r] = absmax;
        for (int64_t c = 0; c < cols; ++c) {
          cb[r * cols + c] = rules::int8_rowwise_code(row[c], absmax);
        }
      }
    });
  });
  return out;
}

FourBitWeight quantize_4bit_cpu(const Tensor& weight, const FourBitOptions& options,
                                MemoryResource& resource, std::string_view name) {
  check_options(options);
  check_float_input(weight, name);
  check_output_resource(resource);
  const WeightFormat type = options.quant_type;
  const uint64_t n = weight.numel();
  const uint64_t bs = static_cast<uint64_t>(options.blocksize);
  const uint64_t blocks =
      static_cast<uint64_t>(block_count(static_cast<int64_t>(n), options.blocksize));

  FourBitWeight out;
  out.quant_type = options.quant_type;
  out.blocksize = options.blocksize;
  out.dtype = weight.dtype();
  out.shape = weight.shape();
  out.packed = Tensor::empty(resource, options.storage, packed_shape(n, options.storage));
  uint8_t* packed = out.packed.data_as<uint8_t>();
  std::memset(packed, 0, out.packed.bytes());  // padding bytes of a wider storage dtype

  std::vector<float> absmax(static_cast<size_t>(blocks));
  with_loader(weight, [&](auto load) {
    parallel_chunks(blocks, kMinElementsPerThread / bs, [&](uint64_t b0, uint64_t b1) {
      for (uint64_t b = b0; b < b1; ++b) {
        const uint64_t begin = b * bs;
        const uint64_t end = std::min(begin + bs, n);
        const float m = finite_absmax(load, begin, end, name);
        absmax[b] = m;
        const float scale = rules::block_scale(m);
        // Blocks start at even indices (bs is even), so codes pair up per byte.
        for (uint64_t i = begin; i < end; i += 2) {
          const uint8_t hi = rules::quantize_four_bit_value(type, load(i) * scale);
          // An odd count's last byte pairs the final element with a 0 (as the
          // CUDA kernel's zero-filled load does).
          const float second = i + 1 < end ? load(i + 1) : 0.0f;
          const uint8_t lo = rules::quantize_four_bit_value(type, second * scale);
          packed[i / 2] = rules::pack_codes(hi, lo);
        }
      }
    });
  });

  out.quant_map = Tensor::empty(resource, DType::kF32, Shape{16});
  for (int i = 0; i < 16; ++i) {
    out.quant_map.data_as<float>()[i] = stored_quant_map_value(options.quant_type, i);
  }

  if (!options.double_quant) {
    out.absmax = make_f32_tensor(resource, absmax);
  } else {
    const float offset = rules::double_quant_offset(absmax.data(), static_cast<int64_t>(blocks));
    const uint64_t nested_blocks =
        static_cast<uint64_t>(nested_block_count(static_cast<int64_t>(blocks)));
    std::vector<float> map(256);
    for (int i = 0; i < 256; ++i) map[i] = rules::dynamic_map_value(i);
    std::vector<float> nested(static_cast<size_t>(nested_blocks));
    out.absmax = Tensor::empty(resource, DType::kU8, Shape{static_cast<int64_t>(blocks)});
    uint8_t* codes = out.absmax.data_as<uint8_t>();
    for (uint64_t j = 0; j < nested_blocks; ++j) {
      const uint64_t begin = j * kNestedBlocksize;
      const uint64_t end = std::min<uint64_t>(begin + kNestedBlocksize, blocks);
      float m = 0.0f;
      for (uint64_t b = begin; b < end; ++b) m = std::fmax(m, std::fabs(absmax[b] - offset));
      nested[j] = m;
      const float scale = rules::block_scale(m);
      for (uint64_t b = begin; b < end; ++b) {
        codes[b] = rules::quantize_dynamic_value(map.data(), (absmax[b] - offset) * scale);
      }
    }
    out.nested_absmax = make_f32_tensor(resource, nested);
    out.nested_quant_map = make_f32_tensor(resource, map);
    out.nested_offset = offset;
    out.nested_blocksize = kNestedBlocksize;
  }
  out.quant_state = make_state_tensor(out.layout().state_json(out.nested_offset), resource);
  return out;
}

QuantizedWeight quantize_cpu(const Tensor& weight, const WeightLayout& target,
                             MemoryResource& resource, std::string_view name) {
  if (target.format == WeightFormat::kInt8) {
    STOWAGE_EXPECTS(target.dtype == DType::kF16, InvalidInputError,
                    "quantizing '{}' to int8 on the CPU: the codes are computed from F16 (as "
                    "bitsandbytes), found a target from {}",
                    name, safetensors_name(target.dtype));
    return quantize_int8_cpu(weight, resource, name);
  }
  FourBitOptions options;
  options.quant_type = target.format;
  options.blocksize = target.blocksize;
  options.double_quant = target.double_quant;
  options.storage = target.storage;
  return quantize_4bit_cpu(weight, options, resource, name);
}

void check_finite_cpu(const Tensor& weight, std::string_view name) {
  check_float_input(weight, name);
  with_loader(weight, [&](auto load) { finite_absmax(load, 0, weight.numel(), name); });
}

float double_quant_offset_cpu(const Tensor& weight, int64_t blocksize, std::string_view name) {
  check_float_input(weight, name);
  STOWAGE_EXPECTS(is_valid_blocksize(blocksize), InvalidInputError,
                  "blocksize should be a power of two in [{}, {}], found {}", kMinBlocksize,
                  kMaxBlocksize, blocksize);
  const uint64_t n = weight.numel();
  const uint64_t bs = static_cast<uint64_t>(blocksize);
  std::vector<float> absmax(static_cast<size_t>(block_count(static_cast<int64_t>(n), blocksize)));
  with_loader(weight, [&](auto load) {
    for (uint64_t b = 0; b < absmax.size(); ++b) {
      absmax[b] = finite_absmax(load, b * bs, std::min(b * bs + bs, n), name);
    }
  });
  return rules::double_quant_offset(absmax.data(), static_cast<int64_t>(absmax.size()));
}

std::vector<float> block_absmax_cpu(const FourBitWeight& w) {
  validate(w, "4-bit weight");
  check_readable(w.absmax, kAbsmaxSuffix);
  const uint64_t blocks = w.layout().blocks();
  std::vector<float> out(static_cast<size_t>(blocks));
  if (!w.double_quant()) {
    std::memcpy(out.data(), w.absmax.data(), blocks * sizeof(float));
    return out;
  }
  check_readable(w.nested_absmax, kNestedAbsmaxSuffix);
  check_readable(w.nested_quant_map, kNestedQuantMapSuffix);
  const uint8_t* codes = w.absmax.data_as<const uint8_t>();
  const void* nested = w.nested_absmax.data();
  const void* map = w.nested_quant_map.data();
  for (uint64_t b = 0; b < blocks; ++b) {
    out[b] = rules::dequantize_nested_absmax(load_unaligned<float>(map, codes[b]),
                                             load_unaligned<float>(nested, b / w.nested_blocksize),
                                             w.nested_offset);
  }
  return out;
}

int four_bit_code_at(const FourBitWeight& w, uint64_t i) {
  return rules::unpack_code(w.packed.data_as<const uint8_t>(), static_cast<int64_t>(i));
}

Tensor dequantize_cpu(const Int8Weight& w, DType dtype, MemoryResource& resource) {
  validate(w, "int8 weight");
  check_readable(w.cb, kWeightSuffix);
  check_readable(w.scb, kScbSuffix);
  check_output_resource(resource);
  const int64_t cols = w.cb.shape()[1];
  const int8_t* cb = w.cb.data_as<const int8_t>();
  const void* scb = w.scb.data();
  return store_floats(resource, dtype, w.cb.shape(), w.cb.numel(), [&](uint64_t i) {
    return rules::int8_rowwise_value(cb[i],
                                     load_unaligned<float>(scb, i / static_cast<uint64_t>(cols)));
  });
}

Tensor dequantize_cpu(const FourBitWeight& w, DType dtype, MemoryResource& resource) {
  const std::vector<float> absmax = block_absmax_cpu(w);  // validates
  check_readable(w.packed, kWeightSuffix);
  check_output_resource(resource);
  const WeightFormat type = w.quant_type;
  const uint8_t* packed = w.packed.data_as<const uint8_t>();
  const uint64_t bs = static_cast<uint64_t>(w.blocksize);
  return store_floats(resource, dtype, w.shape, w.numel(), [&](uint64_t i) {
    const int q = rules::unpack_code(packed, static_cast<int64_t>(i));
    return rules::four_bit_code_value(type, q) * absmax[i / bs];
  });
}

Tensor dequantize_cpu(const QuantizedWeight& w, DType dtype, MemoryResource& resource) {
  return std::visit([&](const auto& x) { return dequantize_cpu(x, dtype, resource); }, w);
}

}  // namespace stowage::quant
