#include "kernels/cpu_transformer_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace stowage::kernels::cpu {
namespace {

// dst[i] = element (offset + i) of a F32, F16 or BF16 array, as float32.
void widen(const void* src, DType dtype, int64_t offset, int64_t count, float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, static_cast<const float*>(src) + offset, count * sizeof(float));
      return;
    case DType::kBF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < count; ++i) {
        const uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
        std::memcpy(&dst[i], &bits, sizeof(float));
      }
      return;
    }
    case DType::kF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < count; ++i) dst[i] = half_bits_to_float(s[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < count; ++i) {
        dst[i] = load_as_float(src, dtype, static_cast<size_t>(offset + i));
      }
      return;
  }
}

// sum a[i] * b[i] in float32 over 8 interleaved partial sums combined in a
// fixed tree: an order set by n alone. Written with SSE2 (every x86-64) since
// -O2 does not vectorize the plain loop; the scalar loop gives the same bits.
float dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 8;
  float lane[kLanes] = {};
  int64_t i = 0;
#if defined(__SSE2__)
  __m128 lo = _mm_setzero_ps(), hi = _mm_setzero_ps();
  for (; i + kLanes <= n; i += kLanes) {
    lo = _mm_add_ps(lo, _mm_mul_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
    hi = _mm_add_ps(hi, _mm_mul_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4)));
  }
  _mm_storeu_ps(lane, lo);
  _mm_storeu_ps(lane + 4, hi);
#else
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += a[i + l] * b[i + l];
  }
#endif
  for (int l = 0; i < n; ++i, ++l) lane[l] += a[i] * b[i];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

// y[i] += w * x[i] (element-wise: vectorizing it changes no bits).
void add_scaled(float* y, float w, const float* x, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 ww = _mm_set1_ps(w);
  for (; i + 4 <= n; i += 4) {
    _mm_storeu_ps(y + i, _mm_add_ps(_mm_loadu_ps(y + i), _mm_mul_ps(ww, _mm_loadu_ps(x + i))));
  }
#endif
  for (; i < n; ++i) y[i] += w * x[i];
}

}  // namespace

void rms_norm(const RmsNormArgs& a) {
  std::vector<float> weight(static_cast<size_t>(a.cols));
  widen(a.weight, a.weight_dtype, 0, a.cols, weight.data());
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.x + r * a.cols;
    float* y = a.y + r * a.cols;
    const float mean = dot(x, x, a.cols) / static_cast<float>(a.cols);
    const float inv = 1.0f / std::sqrt(mean + a.eps);
    for (int64_t c = 0; c < a.cols; ++c) y[c] = (x[c] * inv) * weight[c];
  }
}

void apply_rope(const RopeArgs& a) {
  const int64_t half = a.head_dim / 2;
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (int64_t t = 0; t < a.tokens; ++t) {
    const float pos = static_cast<float>(a.positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * a.inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < a.heads; ++h) {
      float* x = a.x + (t * a.heads + h) * a.head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = x[i];
        const float x1 = x[i + half];
        x[i] = x0 * cos_t[i] - x1 * sin_t[i];
        x[i + half] = x1 * cos_t[i] + x0 * sin_t[i];
      }
    }
  }
  if (a.x2 != nullptr && a.heads2 > 0) {
    RopeArgs second = a;
    second.x = a.x2;
    second.heads = a.heads2;
    second.x2 = nullptr;
    second.heads2 = 0;
    apply_rope(second);
  }
}

void embedding_lookup(const EmbeddingArgs& a) {
  for (int64_t t = 0; t < a.tokens; ++t) {
    widen(a.table, a.table_dtype, static_cast<int64_t>(a.ids[t]) * a.hidden, a.hidden,
          a.out + t * a.hidden);
  }
}

void swiglu(const SwigluArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* g = a.gate + r * a.gate_stride;
    const float* u = a.up + r * a.up_stride;
    float* o = a.out + r * a.cols;
    for (int64_t c = 0; c < a.cols; ++c) o[c] = g[c] / (1.0f + std::exp(-g[c])) * u[c];
  }
}

void add_in_place(float* y, const float* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void kv_append(const KvAppendArgs& a) {
  const int64_t row = a.kv_heads * a.head_dim;
  const int64_t past = a.past_at != nullptr ? *a.past_at : a.past;
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t t = 0; t < a.tokens; ++t) {
      if (past + t >= a.capacity) continue;
      std::memcpy(a.cache + (b * a.capacity + past + t) * row,
                  a.src + (b * a.tokens + t) * a.src_stride, row * sizeof(float));
      if (a.src2 != nullptr) {
        std::memcpy(a.cache2 + (b * a.capacity + past + t) * row,
                    a.src2 + (b * a.tokens + t) * a.src_stride, row * sizeof(float));
      }
    }
  }
}

void attention(const AttentionArgs& a) {
  const int64_t d = a.head_dim;
  const int64_t group = a.heads / a.kv_heads;
  const int64_t kv_row = a.kv_heads * d;
  const int64_t past = a.past_at != nullptr ? *a.past_at : a.past;
  std::vector<float> scores(static_cast<size_t>(a.capacity));
  std::vector<float> acc(static_cast<size_t>(d));
  for (int64_t b = 0; b < a.batch; ++b) {
    const float* k_seq = a.k_cache + b * a.capacity * kv_row;
    const float* v_seq = a.v_cache + b * a.capacity * kv_row;
    for (int64_t t = 0; t < a.tokens; ++t) {
      const int64_t p = past + t;
      if (p >= a.capacity) continue;
      const int64_t lo = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
      const int64_t n = p - lo + 1;
      for (int64_t h = 0; h < a.heads; ++h) {
        const int64_t kvh = h / group;
        const float* q = a.q + (b * a.tokens + t) * a.q_stride + h * d;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < n; ++j) {
          scores[j] = a.scale * dot(q, k_seq + (lo + j) * kv_row + kvh * d, d);
          m = std::fmax(m, scores[j]);
        }
        float l = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          scores[j] = std::exp(scores[j] - m);
          l += scores[j];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float w = scores[j];
          const float* v = v_seq + (lo + j) * kv_row + kvh * d;
          add_scaled(acc.data(), w, v, d);
        }
        float* out = a.out + ((b * a.tokens + t) * a.heads + h) * d;
        const float inv = 1.0f / l;
        for (int64_t i = 0; i < d; ++i) out[i] = acc[i] * inv;
      }
    }
  }
}

void argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    int64_t best = 0;
    for (int64_t c = 1; c < vocab; ++c) {
      // Strictly greater keeps the first of equal values; a NaN best is
      // replaced by the first number after it.
      if (x[c] > x[best] || (std::isnan(x[best]) && !std::isnan(x[c]))) best = c;
    }
    ids[r] = static_cast<int32_t>(best);
  }
}

}  // namespace stowage::kernels::cpu
