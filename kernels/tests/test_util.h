// Helpers shared by the kernels/ tests: random inputs in any float dtype,
// float64 references and error measures.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"

namespace stowage::kernels::test_util {

// `count` elements of dtype, normally distributed with standard deviation
// `scale`, as raw bytes.
inline std::vector<uint8_t> random_values(DType dtype, int64_t count, uint32_t seed,
                                          float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * dtype_size(dtype) + 1);
  for (int64_t i = 0; i < count; ++i) {
    store_from_float(bytes.data(), dtype, static_cast<size_t>(i), normal(gen));
  }
  return bytes;
}

inline std::vector<float> to_floats(const void* data, DType dtype, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) out[i] = load_as_float(data, dtype, static_cast<size_t>(i));
  return out;
}

inline std::vector<uint8_t> from_floats(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype) + 1);
  for (size_t i = 0; i < values.size(); ++i) store_from_float(bytes.data(), dtype, i, values[i]);
  return bytes;
}

// max |got - ref| / max |ref| (the error relative to the output's scale).
inline double relative_error(const std::vector<float>& got, const std::vector<double>& ref) {
  double err = 0.0;
  double scale = 1e-30;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(got[i]) - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return err / scale;
}

// y[m, n] = x[m, k] @ w[n, k]^T (+ bias) in float64.
inline std::vector<double> reference_matmul(const std::vector<float>& x,
                                            const std::vector<float>& w,
                                            const std::vector<float>* bias, int64_t m, int64_t n,
                                            int64_t k, bool relu = false) {
  std::vector<double> y(static_cast<size_t>(m * n));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double acc = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        acc += static_cast<double>(x[r * k + i]) * static_cast<double>(w[c * k + i]);
      }
      if (bias != nullptr) acc += (*bias)[c];
      if (relu) acc = std::max(acc, 0.0);
      y[r * n + c] = acc;
    }
  }
  return y;
}

}  // namespace stowage::kernels::test_util
