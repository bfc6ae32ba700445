#include "kernels/cpu_reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace stowage::kernels::cpu {
namespace {

namespace qr = quant_rules;

std::vector<float> to_floats(const void* data, DType dtype, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) out[i] = load_as_float(data, dtype, static_cast<size_t>(i));
  return out;
}

// Dequantized absmax values of a 4-bit weight (plain or double-quantized).
std::vector<float> weight_absmax(const quant::WeightView& w) {
  const int64_t blocks = w.block_count();
  std::vector<float> absmax(static_cast<size_t>(blocks));
  if (w.absmax != nullptr) {
    std::copy(w.absmax, w.absmax + blocks, absmax.begin());
  } else {
    dequantize_absmax(w.absmax_codes, w.nested_absmax, w.nested_offset, blocks, absmax.data());
  }
  return absmax;
}

}  // namespace

void quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                   quant::WeightFormat type, uint8_t* packed, float* absmax) {
  const int64_t blocks = quant_rules::block_count(numel, blocksize);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t start = b * blocksize;
    const int64_t end = std::min(start + blocksize, numel);
    float m = 0.0f;
    for (int64_t i = start; i < end; ++i) {
      m = std::fmax(m, std::fabs(load_as_float(input, dtype, static_cast<size_t>(i))));
    }
    absmax[b] = m;
    const float scale = qr::block_scale(m);
    for (int64_t e0 = start; e0 < end; e0 += 2) {
      const float v0 = load_as_float(input, dtype, static_cast<size_t>(e0));
      const float v1 = e0 + 1 < numel ? load_as_float(input, dtype, static_cast<size_t>(e0 + 1))
                                      : 0.0f;  // padding, as bitsandbytes
      packed[e0 / 2] = qr::pack_codes(qr::quantize_four_bit_value(type, v0 * scale),
                                      qr::quantize_four_bit_value(type, v1 * scale));
    }
  }
}

void dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel, int64_t blocksize,
                     quant::WeightFormat type, void* output, DType out_dtype) {
  float codes[16];
  for (int i = 0; i < 16; ++i) codes[i] = qr::four_bit_code_value(type, i);
  for (int64_t i = 0; i < numel; ++i) {
    const float v = codes[qr::unpack_code(packed, i)] * absmax[i / blocksize];
    store_from_float(output, out_dtype, static_cast<size_t>(i), v);
  }
}

void double_quantize_absmax(const float* absmax, int64_t count, float* offset, uint8_t* codes,
                            float* nested_absmax) {
  const float off = qr::double_quant_offset(absmax, count);
  *offset = off;
  float map[256];
  for (int i = 0; i < 256; ++i) map[i] = qr::dynamic_map_value(i);
  std::vector<float> shifted(qr::kNestedBlocksize);
  for (int64_t start = 0; start < count; start += qr::kNestedBlocksize) {
    const int64_t end = std::min<int64_t>(start + qr::kNestedBlocksize, count);
    float m = 0.0f;
    for (int64_t i = start; i < end; ++i) {
      shifted[i - start] = absmax[i] - off;
      m = std::fmax(m, std::fabs(shifted[i - start]));
    }
    nested_absmax[start / qr::kNestedBlocksize] = m;
    const float scale = qr::block_scale(m);
    for (int64_t i = start; i < end; ++i) {
      codes[i] = qr::quantize_dynamic_value(map, shifted[i - start] * scale);
    }
  }
}

void dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                       int64_t count, float* absmax) {
  for (int64_t i = 0; i < count; ++i) {
    absmax[i] = qr::dequantize_nested_absmax(qr::dynamic_map_value(codes[i]),
                                             nested_absmax[i / qr::kNestedBlocksize], offset);
  }
}

void quantize_int8_rowwise(const void* input, DType dtype, int64_t rows, int64_t cols, int8_t* cb,
                           float* scb, const uint8_t* col_flags) {
  for (int64_t r = 0; r < rows; ++r) {
    float m = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      if (col_flags != nullptr && col_flags[c]) continue;
      m = std::fmax(m, std::fabs(load_as_float(input, dtype, static_cast<size_t>(r * cols + c))));
    }
    scb[r] = m;
    for (int64_t c = 0; c < cols; ++c) {
      const bool skip = col_flags != nullptr && col_flags[c];
      cb[r * cols + c] =
          skip ? int8_t{0}
               : qr::int8_rowwise_code(
                     load_as_float(input, dtype, static_cast<size_t>(r * cols + c)), m);
    }
  }
}

void dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                             void* output, DType out_dtype) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      store_from_float(output, out_dtype, static_cast<size_t>(r * cols + c),
                       qr::int8_rowwise_value(cb[r * cols + c], scb[r]));
    }
  }
}

void gemm(const GemmArgs& a) {
  const std::vector<float> x = to_floats(a.x, a.dtype, a.m * a.k);
  const std::vector<float> w = to_floats(a.w, a.dtype, a.n * a.k);
  for (int64_t r = 0; r < a.m; ++r) {
    for (int64_t c = 0; c < a.n; ++c) {
      float acc = 0.0f;
      const float* xr = x.data() + r * a.k;
      const float* wc = w.data() + c * a.k;
      for (int64_t i = 0; i < a.k; ++i) acc += xr[i] * wc[i];
      if (a.bias != nullptr) acc += load_as_float(a.bias, a.out_dtype, static_cast<size_t>(c));
      if (a.relu) acc = std::max(acc, 0.0f);
      store_from_float(a.y, a.out_dtype, static_cast<size_t>(r * a.n + c), acc);
    }
  }
}

void dense_gemv(const DenseGemvArgs& a) {
  const std::vector<float> w = to_floats(a.w, a.weight_dtype, a.n * a.k);
  for (int64_t r = 0; r < a.m; ++r) {
    const float* xr = a.x + r * a.k;
    for (int64_t c = 0; c < a.n; ++c) {
      const float* wc = w.data() + c * a.k;
      float acc = 0.0f;
      for (int64_t i = 0; i < a.k; ++i) acc += xr[i] * wc[i];
      if (a.bias != nullptr) acc += load_as_float(a.bias, a.bias_dtype, static_cast<size_t>(c));
      if (a.relu) acc = std::max(acc, 0.0f);
      float& out = a.y[r * a.n + c];
      out = a.accumulate ? out + acc : acc;
    }
  }
}

void int8_matmul(const Int8MatmulArgs& a) {
  // Outlier columns, ascending.
  std::vector<uint8_t> flags(static_cast<size_t>(a.k), 0);
  std::vector<int64_t> cols;
  if (a.threshold > 0.0f) {
    for (int64_t i = 0; i < a.m * a.k; ++i) {
      if (std::fabs(load_as_float(a.x, a.dtype, static_cast<size_t>(i))) >= a.threshold) {
        flags[i % a.k] = 1;
      }
    }
    for (int64_t c = 0; c < a.k; ++c) {
      if (flags[c]) cols.push_back(c);
    }
  }
  std::vector<int8_t> xq(static_cast<size_t>(a.m * a.k));
  std::vector<float> sca(static_cast<size_t>(a.m));
  quantize_int8_rowwise(a.x, a.dtype, a.m, a.k, xq.data(), sca.data(),
                        cols.empty() ? nullptr : flags.data());
  for (int64_t r = 0; r < a.m; ++r) {
    for (int64_t c = 0; c < a.n; ++c) {
      int32_t acc = 0;
      const int8_t* xr = xq.data() + r * a.k;
      const int8_t* wc = a.cb + c * a.k;
      for (int64_t i = 0; i < a.k; ++i) acc += int32_t{xr[i]} * int32_t{wc[i]};
      float v = static_cast<float>(acc) * sca[r] * a.scb[c] * (1.0f / 16129.0f);
      float outlier = 0.0f;
      for (int64_t col : cols) {
        const float w = quant_rules::int8_rowwise_value(a.cb[c * a.k + col], a.scb[c]);
        outlier =
            std::fma(load_as_float(a.x, a.dtype, static_cast<size_t>(r * a.k + col)), w, outlier);
      }
      v += outlier;
      if (a.bias != nullptr) v += load_as_float(a.bias, a.dtype, static_cast<size_t>(c));
      store_from_float(a.y, a.dtype, static_cast<size_t>(r * a.n + c), v);
    }
  }
}

void four_bit_matmul(const FourBitMatmulArgs& a) {
  const int64_t n = a.weight.out, k = a.weight.in, numel = a.weight.numel();
  const std::vector<float> absmax = weight_absmax(a.weight);
  std::vector<float> w(static_cast<size_t>(numel));
  dequantize_4bit(a.weight.codes(), absmax.data(), numel, a.weight.blocksize, a.weight.format,
                  w.data(), DType::kF32);
  const std::vector<float> x = to_floats(a.x, a.dtype, a.m * k);
  for (int64_t r = 0; r < a.m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      float acc = 0.0f;
      const float* xr = x.data() + r * k;
      const float* wc = w.data() + c * k;
      for (int64_t i = 0; i < k; ++i) acc += xr[i] * wc[i];
      if (a.bias != nullptr) acc += load_as_float(a.bias, a.dtype, static_cast<size_t>(c));
      store_from_float(a.y, a.dtype, static_cast<size_t>(r * n + c), acc);
    }
  }
}

}  // namespace stowage::kernels::cpu
