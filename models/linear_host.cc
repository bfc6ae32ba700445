#include <fmt/format.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/linear.h"

namespace stowage::models {

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kFloat:
      return "float";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kNf4:
      return "nf4";
    case WeightFormat::kFp4:
      return "fp4";
  }
  return "?";
}

void check_linear_arguments(const LinearWeights& w, const TensorView& x, const TensorView& y,
                            const std::string& where) {
  STOWAGE_EXPECTS(
      x.dtype() == DType::kF32 && x.shape().rank() == 2 && x.shape()[1] == w.in_features,
      InvalidInputError, "{}: expected input float32 [batch, {}], found {} {}", where,
      w.in_features, short_name(x.dtype()), x.shape().to_string());
  STOWAGE_EXPECTS(y.dtype() == DType::kF32 && y.shape().rank() == 2 &&
                      y.shape()[0] == x.shape()[0] && y.shape()[1] == w.out_features,
                  InvalidInputError, "{}: expected output float32 [{}, {}], found {} {}", where,
                  x.shape()[0], w.out_features, short_name(y.dtype()), y.shape().to_string());
  const uint64_t n = static_cast<uint64_t>(w.out_features) * static_cast<uint64_t>(w.in_features);
  STOWAGE_EXPECTS(w.weight.data() != nullptr || n == 0, InvalidInputError,
                  "{}: the weight has no bytes", where);
  switch (w.format) {
    case WeightFormat::kFloat:
      STOWAGE_EXPECTS(is_floating_point(w.weight.dtype()) && w.weight.numel() == n,
                      InvalidInputError, "{}: expected a float weight of {} elements, found {} {}",
                      where, n, short_name(w.weight.dtype()), w.weight.shape().to_string());
      break;
    case WeightFormat::kInt8:
      STOWAGE_EXPECTS(w.weight.dtype() == DType::kI8 && w.weight.numel() == n, InvalidInputError,
                      "{}: expected an I8 weight of {} elements, found {} {}", where, n,
                      short_name(w.weight.dtype()), w.weight.shape().to_string());
      STOWAGE_EXPECTS(
          w.scb.dtype() == DType::kF32 && w.scb.numel() == static_cast<uint64_t>(w.out_features),
          InvalidInputError, "{}: expected SCB float32 [{}], found {} {}", where, w.out_features,
          short_name(w.scb.dtype()), w.scb.shape().to_string());
      break;
    case WeightFormat::kNf4:
    case WeightFormat::kFp4: {
      STOWAGE_EXPECTS(w.blocksize > 0, InvalidInputError, "{}: blocksize {} is not positive", where,
                      w.blocksize);
      STOWAGE_EXPECTS(w.weight.bytes() >= (n + 1) / 2, InvalidInputError,
                      "{}: expected at least {} bytes of packed 4-bit codes, found {}", where,
                      (n + 1) / 2, w.weight.bytes());
      const uint64_t blocks = (n + w.blocksize - 1) / w.blocksize;
      STOWAGE_EXPECTS(w.absmax.numel() == blocks &&
                          w.absmax.dtype() == (w.double_quant ? DType::kU8 : DType::kF32),
                      InvalidInputError, "{}: expected absmax {} [{}], found {} {}", where,
                      w.double_quant ? "U8" : "F32", blocks, short_name(w.absmax.dtype()),
                      w.absmax.shape().to_string());
      STOWAGE_EXPECTS(w.quant_map.dtype() == DType::kF32 && w.quant_map.numel() == 16,
                      InvalidInputError, "{}: expected quant_map float32 [16], found {} {}", where,
                      short_name(w.quant_map.dtype()), w.quant_map.shape().to_string());
      if (w.double_quant) {
        STOWAGE_EXPECTS(w.nested_blocksize > 0, InvalidInputError,
                        "{}: nested blocksize {} is not positive", where, w.nested_blocksize);
        const uint64_t nested = (blocks + w.nested_blocksize - 1) / w.nested_blocksize;
        STOWAGE_EXPECTS(w.nested_absmax.dtype() == DType::kF32 && w.nested_absmax.numel() == nested,
                        InvalidInputError, "{}: expected nested_absmax float32 [{}], found {} {}",
                        where, nested, short_name(w.nested_absmax.dtype()),
                        w.nested_absmax.shape().to_string());
        STOWAGE_EXPECTS(
            w.nested_quant_map.dtype() == DType::kF32 && w.nested_quant_map.numel() == 256,
            InvalidInputError, "{}: expected nested_quant_map float32 [256], found {} {}", where,
            short_name(w.nested_quant_map.dtype()), w.nested_quant_map.shape().to_string());
      }
      break;
    }
  }
  if (w.bias.data() != nullptr) {
    STOWAGE_EXPECTS(is_floating_point(w.bias.dtype()) &&
                        w.bias.numel() == static_cast<uint64_t>(w.out_features),
                    InvalidInputError, "{}: expected a float bias [{}], found {} {}", where,
                    w.out_features, short_name(w.bias.dtype()), w.bias.shape().to_string());
  }
}

namespace {

// Dequantizes row `r` of the weight into `row` (float32).
void dequantize_row(const LinearWeights& w, int64_t r, float* row) {
  const int64_t in = w.in_features;
  switch (w.format) {
    case WeightFormat::kFloat:
      for (int64_t c = 0; c < in; ++c) {
        row[c] = load_as_float(w.weight.data(), w.weight.dtype(), static_cast<size_t>(r * in + c));
      }
      return;
    case WeightFormat::kInt8: {
      const int8_t* cb = w.weight.data_as<int8_t>() + r * in;
      const float scale = w.scb.data_as<float>()[r] / 127.0f;
      for (int64_t c = 0; c < in; ++c) row[c] = static_cast<float>(cb[c]) * scale;
      return;
    }
    case WeightFormat::kNf4:
    case WeightFormat::kFp4: {
      const uint8_t* codes = static_cast<const uint8_t*>(w.weight.data());
      const float* map = w.quant_map.data_as<float>();
      for (int64_t c = 0; c < in; ++c) {
        const int64_t e = r * in + c;
        const uint8_t byte = codes[e / 2];
        const int q = (e % 2 == 0) ? (byte >> 4) : (byte & 0x0F);
        const int64_t block = e / w.blocksize;
        float absmax;
        if (w.double_quant) {
          const uint8_t code = static_cast<const uint8_t*>(w.absmax.data())[block];
          absmax = w.nested_quant_map.data_as<float>()[code] *
                       w.nested_absmax.data_as<float>()[block / w.nested_blocksize] +
                   w.nested_offset;
        } else {
          absmax = w.absmax.data_as<float>()[block];
        }
        row[c] = map[q] * absmax;
      }
      return;
    }
  }
}

class HostLinearKernels final : public LinearKernels {
 public:
  void linear(StreamRef stream, const LinearWeights& w, const TensorView& x, const TensorView& y,
              bool relu) override {
    check_linear_arguments(w, x, y, "linear layer");
    stream.host_task([w, x, y, relu] {
      const int64_t batch = x.shape()[0];
      const int64_t in = w.in_features;
      const int64_t out = w.out_features;
      const float* xs = x.data_as<float>();
      float* ys = y.data_as<float>();
      std::vector<float> row(static_cast<size_t>(in));
      for (int64_t r = 0; r < out; ++r) {
        dequantize_row(w, r, row.data());
        const float b = w.bias.data() != nullptr
                            ? load_as_float(w.bias.data(), w.bias.dtype(), static_cast<size_t>(r))
                            : 0.0f;
        for (int64_t i = 0; i < batch; ++i) {
          const float* xi = xs + i * in;
          float acc = 0.0f;
          for (int64_t c = 0; c < in; ++c) acc += xi[c] * row[c];
          acc += b;
          ys[i * out + r] = relu && acc < 0.0f ? 0.0f : acc;
        }
      }
    });
  }
  const char* name() const override { return "host reference"; }
  // Runs on the host through host_task: no accelerator memory.
  uint64_t working_bytes(const std::vector<LinearShape>&, int64_t) const override { return 0; }
};

}  // namespace

std::unique_ptr<LinearKernels> make_host_linear_kernels() {
  return std::make_unique<HostLinearKernels>();
}

std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform, MemoryResource& scratch) {
  if (platform.backend() == Backend::kSim) return make_host_linear_kernels();
  return make_accelerator_linear_kernels(scratch);
}

std::unique_ptr<LinearKernels> make_linear_kernels(Platform& platform) {
  return make_linear_kernels(platform, platform.accelerator(0).memory());
}

}  // namespace stowage::models
