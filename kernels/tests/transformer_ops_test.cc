// The specification of transformer_ops.h, run over every backend present: the
// simulated accelerator (the CPU counterparts) always, CUDA where a GPU is
// visible (those cases skip otherwise). Each op is compared with a naive
// float64 reference written here; attention and the reductions must also give
// the same bits on two calls.
#include "kernels/transformer_ops.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/platform.h"
#include "core/stream_graph.h"
#include "kernels/gemm.h"
#include "kernels/tests/test_util.h"

namespace stowage::kernels {
namespace {

using test_util::from_floats;
using test_util::random_values;
using test_util::relative_error;
using test_util::to_floats;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_floats(int64_t count, uint32_t seed, float scale = 1.0f) {
  return to_floats(random_values(DType::kF32, count, seed, scale).data(), DType::kF32, count);
}

class TransformerOpsOnBackend : public ::testing::TestWithParam<DeviceChoice> {
 public:
  void SetUp() override {
    if (GetParam() == DeviceChoice::kCuda && !cuda_device_available()) {
      GTEST_SKIP() << "no CUDA GPU visible";
    }
    platform_ = Platform::create(GetParam());
    stream_.emplace(platform_->accelerator(0).create_stream());
  }

  bool on_cuda() const { return GetParam() == DeviceChoice::kCuda; }

  Buffer upload(const void* host, size_t bytes) {
    Buffer buffer(platform_->accelerator(0).memory(), std::max<size_t>(bytes, 1), stream());
    if (host != nullptr && bytes > 0) stream().copy(buffer.data(), host, bytes);
    return buffer;
  }
  template <typename T>
  Buffer upload(const std::vector<T>& host) {
    return upload(host.data(), host.size() * sizeof(T));
  }
  template <typename T>
  std::vector<T> download(const Buffer& buffer, int64_t count) {
    std::vector<T> host(static_cast<size_t>(count));
    if (count > 0) stream().copy(host.data(), buffer.data(), count * sizeof(T));
    stream_->synchronize();
    return host;
  }

  StreamRef stream() { return stream_->ref(); }

  std::unique_ptr<Platform> platform_;
  std::optional<Stream> stream_;
};

const DType kWeightTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// ---- RMSNorm ----

TEST_P(TransformerOpsOnBackend, RmsNormMatchesFloat64ReferenceForEveryWeightType) {
  const int64_t rows = 5;
  for (DType dtype : kWeightTypes) {
    for (int64_t cols : {1, 7, 64, 576, 1000, 4096}) {
      SCOPED_TRACE(::testing::Message() << short_name(dtype) << " cols " << cols);
      const std::vector<float> x = random_floats(rows * cols, 1 + cols, 3.0f);
      const std::vector<uint8_t> w = random_values(dtype, cols, 2 + cols);
      const std::vector<float> wf = to_floats(w.data(), dtype, cols);
      Buffer dx = upload(x), dw = upload(w), dy = upload(nullptr, x.size() * sizeof(float));
      RmsNormArgs a;
      a.rows = rows;
      a.cols = cols;
      a.x = static_cast<const float*>(dx.data());
      a.weight = dw.data();
      a.weight_dtype = dtype;
      a.eps = 1e-5f;
      a.y = static_cast<float*>(dy.data());
      rms_norm(a, stream());
      const std::vector<float> y = download<float>(dy, rows * cols);
      std::vector<double> ref(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0.0;
        for (int64_t c = 0; c < cols; ++c) ss += double{x[r * cols + c]} * x[r * cols + c];
        const double inv = 1.0 / std::sqrt(ss / cols + 1e-5);
        for (int64_t c = 0; c < cols; ++c) ref[r * cols + c] = x[r * cols + c] * inv * wf[c];
      }
      EXPECT_LT(relative_error(y, ref), 1e-5);
    }
  }
}

TEST_P(TransformerOpsOnBackend, RmsNormRunsInPlace) {
  const int64_t rows = 3, cols = 256;
  const std::vector<float> x = random_floats(rows * cols, 5);
  const std::vector<float> w = random_floats(cols, 6);
  Buffer dx = upload(x), dw = upload(w), dy = upload(nullptr, x.size() * sizeof(float));
  RmsNormArgs a;
  a.rows = rows;
  a.cols = cols;
  a.x = static_cast<const float*>(dx.data());
  a.weight = dw.data();
  a.y = static_cast<float*>(dy.data());
  rms_norm(a, stream());
  a.y = static_cast<float*>(dx.data());
  rms_norm(a, stream());
  const std::vector<float> separate = download<float>(dy, rows * cols);
  const std::vector<float> in_place = download<float>(dx, rows * cols);
  EXPECT_EQ(0, std::memcmp(separate.data(), in_place.data(), separate.size() * sizeof(float)));
}

// ---- RoPE ----

TEST_P(TransformerOpsOnBackend, RopeRotatesBothHalvesByPositionTimesInverseFrequency) {
  for (int64_t head_dim : {2, 64, 128}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << head_dim);
    const int64_t tokens = 4, heads = 3, half = head_dim / 2;
    const std::vector<float> x = random_floats(tokens * heads * head_dim, 7 + head_dim);
    const std::vector<int32_t> positions = {0, 1, 17, 4097};
    std::vector<float> inv_freq(half);
    for (int64_t i = 0; i < half; ++i) {
      inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / head_dim));
    }
    Buffer dx = upload(x), dp = upload(positions), df = upload(inv_freq);
    RopeArgs a;
    a.tokens = tokens;
    a.heads = heads;
    a.head_dim = head_dim;
    a.x = static_cast<float*>(dx.data());
    a.positions = static_cast<const int32_t*>(dp.data());
    a.inv_freq = static_cast<const float*>(df.data());
    apply_rope(a, stream());
    const std::vector<float> y = download<float>(dx, x.size());
    std::vector<double> ref(x.size());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          // The angle in float32, as the contract says; its cos and sin exact.
          const double angle = static_cast<float>(positions[t]) * inv_freq[i];
          const double x0 = x[base + i], x1 = x[base + i + half];
          ref[base + i] = x0 * std::cos(angle) - x1 * std::sin(angle);
          ref[base + i + half] = x1 * std::cos(angle) + x0 * std::sin(angle);
        }
      }
    }
    EXPECT_LT(relative_error(y, ref), 1e-5);
    // Position 0 leaves its token unchanged.
    for (int64_t e = 0; e < heads * head_dim; ++e) EXPECT_EQ(y[e], x[e]);
  }
}

// Queries and keys rotated in one launch give the bits of two launches.
TEST_P(TransformerOpsOnBackend, RopeOfASecondTensorGivesTheSeparateCallsBits) {
  const int64_t tokens = 3, heads = 4, heads2 = 2, head_dim = 64, half = head_dim / 2;
  const std::vector<float> q = random_floats(tokens * heads * head_dim, 41);
  const std::vector<float> k = random_floats(tokens * heads2 * head_dim, 42);
  const std::vector<int32_t> positions = {5, 6, 300};
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / head_dim);
  Buffer dp = upload(positions), df = upload(inv_freq);
  Buffer q1 = upload(q), k1 = upload(k), q2 = upload(q), k2 = upload(k);
  auto args = [&](Buffer& x, int64_t h) {
    RopeArgs a;
    a.tokens = tokens;
    a.heads = h;
    a.head_dim = head_dim;
    a.x = static_cast<float*>(x.data());
    a.positions = static_cast<const int32_t*>(dp.data());
    a.inv_freq = static_cast<const float*>(df.data());
    return a;
  };
  apply_rope(args(q1, heads), stream());
  apply_rope(args(k1, heads2), stream());
  RopeArgs both = args(q2, heads);
  both.x2 = static_cast<float*>(k2.data());
  both.heads2 = heads2;
  apply_rope(both, stream());
  EXPECT_EQ(download<float>(q2, q.size()), download<float>(q1, q.size()));
  EXPECT_EQ(download<float>(k2, k.size()), download<float>(k1, k.size()));
  EXPECT_NE(download<float>(k2, k.size()), k);  // the keys were rotated
}

// Keys and values appended in one launch: each cache as a separate call leaves it.
TEST_P(TransformerOpsOnBackend, KvAppendOfASecondSourceFillsTheSecondCache) {
  const int64_t batch = 2, tokens = 2, kv_heads = 2, head_dim = 8, past = 3, capacity = 7;
  const int64_t row = kv_heads * head_dim;
  const std::vector<float> k = random_floats(batch * tokens * row, 43);
  const std::vector<float> v = random_floats(batch * tokens * row, 44);
  const std::vector<float> cache(batch * capacity * row, -3.0f);
  Buffer dk = upload(k), dv = upload(v);
  Buffer k1 = upload(cache), v1 = upload(cache), k2 = upload(cache), v2 = upload(cache);
  auto args = [&](const Buffer& src, Buffer& dst) {
    KvAppendArgs a;
    a.batch = batch;
    a.tokens = tokens;
    a.kv_heads = kv_heads;
    a.head_dim = head_dim;
    a.past = past;
    a.capacity = capacity;
    a.src = static_cast<const float*>(src.data());
    a.src_stride = row;
    a.cache = static_cast<float*>(dst.data());
    return a;
  };
  kv_append(args(dk, k1), stream());
  kv_append(args(dv, v1), stream());
  KvAppendArgs both = args(dk, k2);
  both.src2 = static_cast<const float*>(dv.data());
  both.cache2 = static_cast<float*>(v2.data());
  kv_append(both, stream());
  EXPECT_EQ(download<float>(k2, cache.size()), download<float>(k1, cache.size()));
  EXPECT_EQ(download<float>(v2, cache.size()), download<float>(v1, cache.size()));
  EXPECT_NE(download<float>(v2, cache.size()), cache);
  both.cache2 = nullptr;
  EXPECT_THROW(kv_append(both, stream()), InvalidInputError);
}

// ---- Embedding ----

TEST_P(TransformerOpsOnBackend, EmbeddingCopiesTheRowsOfTheIdsWidenedToFloat32) {
  const int64_t vocab = 50, hidden = 72;
  const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
  const int64_t tokens = static_cast<int64_t>(ids.size());
  for (DType dtype : kWeightTypes) {
    SCOPED_TRACE(short_name(dtype));
    const std::vector<uint8_t> table = random_values(dtype, vocab * hidden, 11);
    Buffer dt = upload(table), di = upload(ids), dout = upload(nullptr, tokens * hidden * 4);
    EmbeddingArgs a;
    a.tokens = tokens;
    a.vocab = vocab;
    a.hidden = hidden;
    a.ids = static_cast<const int32_t*>(di.data());
    a.table = dt.data();
    a.table_dtype = dtype;
    a.out = static_cast<float*>(dout.data());
    embedding_lookup(a, stream());
    const std::vector<float> out = download<float>(dout, tokens * hidden);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < hidden; ++c) {
        ASSERT_EQ(out[t * hidden + c],
                  load_as_float(table.data(), dtype, static_cast<size_t>(ids[t] * hidden + c)))
            << "token " << t << " col " << c;
      }
    }
  }
}

// ---- SwiGLU and the residual add ----

TEST_P(TransformerOpsOnBackend, SwigluReadsGateAndUpThroughTheirStrides) {
  // gate and up are the two halves of one fused [rows, 2 * cols] projection.
  const int64_t rows = 3, cols = 1000;
  const std::vector<float> fused = random_floats(rows * 2 * cols, 13, 4.0f);
  Buffer df = upload(fused), dout = upload(nullptr, rows * cols * 4);
  SwigluArgs a;
  a.rows = rows;
  a.cols = cols;
  a.gate = static_cast<const float*>(df.data());
  a.gate_stride = 2 * cols;
  a.up = a.gate + cols;
  a.up_stride = 2 * cols;
  a.out = static_cast<float*>(dout.data());
  swiglu(a, stream());
  const std::vector<float> out = download<float>(dout, rows * cols);
  std::vector<double> ref(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double g = fused[r * 2 * cols + c], u = fused[r * 2 * cols + cols + c];
      ref[r * cols + c] = g / (1.0 + std::exp(-g)) * u;
    }
  }
  EXPECT_LT(relative_error(out, ref), 1e-5);
}

TEST_P(TransformerOpsOnBackend, AddInPlaceAddsElementWise) {
  const int64_t count = 4099;
  const std::vector<float> y = random_floats(count, 15), x = random_floats(count, 16);
  Buffer dy = upload(y), dx = upload(x);
  add_in_place(static_cast<float*>(dy.data()), static_cast<const float*>(dx.data()), count,
               stream());
  const std::vector<float> out = download<float>(dy, count);
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(out[i], y[i] + x[i]) << i;
}

// ---- KV cache append ----

TEST_P(TransformerOpsOnBackend, KvAppendWritesTheNewPositionsOnly) {
  const int64_t batch = 2, tokens = 3, kv_heads = 2, head_dim = 8, past = 4, capacity = 9;
  const int64_t row = kv_heads * head_dim, src_stride = 3 * row + 5;  // k inside a fused qkv row
  const std::vector<float> src = random_floats(batch * tokens * src_stride, 17);
  std::vector<float> cache(batch * capacity * row, -7.0f);
  Buffer ds = upload(src), dc = upload(cache);
  KvAppendArgs a;
  a.batch = batch;
  a.tokens = tokens;
  a.kv_heads = kv_heads;
  a.head_dim = head_dim;
  a.past = past;
  a.capacity = capacity;
  a.src = static_cast<const float*>(ds.data()) + row;
  a.src_stride = src_stride;
  a.cache = static_cast<float*>(dc.data());
  kv_append(a, stream());
  const std::vector<float> out = download<float>(dc, cache.size());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t p = 0; p < capacity; ++p) {
      for (int64_t e = 0; e < row; ++e) {
        const bool is_new = p >= past && p < past + tokens;
        const float want = is_new ? src[(b * tokens + (p - past)) * src_stride + row + e] : -7.0f;
        ASSERT_EQ(out[(b * capacity + p) * row + e], want) << "b " << b << " p " << p;
      }
    }
  }
}

// ---- Attention ----

struct AttentionCase {
  const char* name;
  int64_t batch, tokens, heads, kv_heads, head_dim, past, window;
  int64_t q_pad = 0;  // q_stride = heads * head_dim + q_pad
  bool cuda_only = false;
};

// float64 causal GQA attention, with the contract's masks.
std::vector<double> reference_attention(const AttentionCase& c, const std::vector<float>& q,
                                        int64_t q_stride, const std::vector<float>& k,
                                        const std::vector<float>& v, int64_t capacity,
                                        float scale) {
  const int64_t d = c.head_dim, group = c.heads / c.kv_heads, row = c.kv_heads * d;
  std::vector<double> out(c.batch * c.tokens * c.heads * d);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      const int64_t p = c.past + t;
      const int64_t lo = c.window > 0 ? std::max<int64_t>(0, p - c.window + 1) : 0;
      for (int64_t h = 0; h < c.heads; ++h) {
        const int64_t kvh = h / group;
        const float* qh = q.data() + (b * c.tokens + t) * q_stride + h * d;
        std::vector<double> s(p - lo + 1);
        double m = -1e300;
        for (int64_t j = lo; j <= p; ++j) {
          const float* kj = k.data() + (b * capacity + j) * row + kvh * d;
          double dot = 0.0;
          for (int64_t i = 0; i < d; ++i) dot += double{qh[i]} * kj[i];
          s[j - lo] = double{scale} * dot;
          m = std::max(m, s[j - lo]);
        }
        double l = 0.0;
        for (double& e : s) l += (e = std::exp(e - m));
        double* o = out.data() + ((b * c.tokens + t) * c.heads + h) * d;
        for (int64_t j = lo; j <= p; ++j) {
          const float* vj = v.data() + (b * capacity + j) * row + kvh * d;
          for (int64_t i = 0; i < d; ++i) o[i] += s[j - lo] / l * vj[i];
        }
      }
    }
  }
  return out;
}

const AttentionCase kAttentionCases[] = {
    {"decode_gqa", 1, 1, 8, 2, 64, 37, 0},
    {"decode_first_token", 1, 1, 4, 4, 32, 0, 0},
    {"decode_batch3_strided_q", 3, 1, 9, 3, 64, 100, 0, 3 * 64 + 5},
    {"decode_mqa", 2, 1, 16, 1, 128, 70, 0},
    {"decode_window", 2, 1, 8, 2, 64, 90, 32},
    {"prefill_causal", 1, 70, 4, 2, 64, 0, 0},
    {"prefill_with_past", 2, 19, 6, 3, 128, 45, 0},
    {"prefill_window_past", 1, 40, 4, 1, 64, 30, 16, 17},
    {"prefill_odd_head_dim", 1, 33, 2, 2, 80, 5, 0},
    {"prefill_head_dim_256", 1, 20, 2, 1, 256, 12, 0},
    // head_dim % 4 != 0: the CUDA kernels' element-wise (not 16-byte) loads.
    {"decode_head_dim_6", 2, 1, 4, 2, 6, 50, 0},
    {"prefill_head_dim_6", 1, 20, 2, 1, 6, 3, 0},
    // Long enough for the CUDA kernels' tiles and splits of the context.
    {"decode_long_context", 2, 1, 32, 8, 128, 4000, 0, 0, true},
    {"decode_long_batch32", 32, 1, 9, 3, 64, 1030, 0, 0, true},
    {"prefill_long", 1, 300, 8, 2, 128, 0, 0, 0, true},
    {"prefill_long_window_past", 2, 150, 4, 2, 64, 200, 100, 0, true},
};

class AttentionRun {
 public:
  AttentionRun(TransformerOpsOnBackend& t, const AttentionCase& c) : c_(c) {
    const int64_t d = c.head_dim, row = c.kv_heads * d;
    capacity_ = c.past + c.tokens + 3;
    q_stride_ = c.heads * d + c.q_pad;
    q_ = random_floats(c.batch * c.tokens * q_stride_, 21);
    k_ = random_floats(c.batch * capacity_ * row, 22);
    v_ = random_floats(c.batch * capacity_ * row, 23);
    // Positions no query may read hold NaN: those after the last new token
    // and, with a window, those before the first query's window.
    const int64_t first_lo = c.window > 0 ? std::max<int64_t>(0, c.past - c.window + 1) : 0;
    for (int64_t b = 0; b < c.batch; ++b) {
      for (int64_t p = 0; p < capacity_; ++p) {
        if (p >= first_lo && p < c.past + c.tokens) continue;
        for (int64_t e = 0; e < row; ++e) {
          k_[(b * capacity_ + p) * row + e] = kNaN;
          v_[(b * capacity_ + p) * row + e] = kNaN;
        }
      }
    }
    scale_ = 1.0f / std::sqrt(static_cast<float>(d));
    dq_ = t.upload(q_);
    dk_ = t.upload(k_);
    dv_ = t.upload(v_);
    out_count_ = c.batch * c.tokens * c.heads * d;
    dout_ = t.upload(nullptr, out_count_ * sizeof(float));
  }

  AttentionArgs args() {
    AttentionArgs a;
    a.batch = c_.batch;
    a.tokens = c_.tokens;
    a.heads = c_.heads;
    a.kv_heads = c_.kv_heads;
    a.head_dim = c_.head_dim;
    a.past = c_.past;
    a.capacity = capacity_;
    a.window = c_.window;
    a.scale = scale_;
    a.q = static_cast<const float*>(dq_.data());
    a.q_stride = q_stride_;
    a.k_cache = static_cast<const float*>(dk_.data());
    a.v_cache = static_cast<const float*>(dv_.data());
    a.out = static_cast<float*>(dout_.data());
    return a;
  }
  std::vector<double> reference() const {
    return reference_attention(c_, q_, q_stride_, k_, v_, capacity_, scale_);
  }
  const Buffer& out() const { return dout_; }
  int64_t out_count() const { return out_count_; }

 private:
  AttentionCase c_;
  int64_t capacity_ = 0, q_stride_ = 0, out_count_ = 0;
  float scale_ = 1.0f;
  std::vector<float> q_, k_, v_;
  Buffer dq_, dk_, dv_, dout_;
};

TEST_P(TransformerOpsOnBackend, AttentionMatchesFloat64Reference) {
  // Covers GQA / MQA head mapping, the causal mask with past > 0, the sliding
  // window, batch > 1, a q_stride wider than the heads, and head_dims that
  // are not powers of two.
  for (const AttentionCase& c : kAttentionCases) {
    if (c.cuda_only && !on_cuda()) continue;
    SCOPED_TRACE(c.name);
    AttentionRun run(*this, c);
    attention(run.args(), stream());
    const std::vector<float> out = download<float>(run.out(), run.out_count());
    EXPECT_LT(relative_error(out, run.reference()), 1e-5);
  }
}

TEST_P(TransformerOpsOnBackend, AttentionGivesTheSameBitsOnEveryCall) {
  for (const AttentionCase& c : kAttentionCases) {
    if (c.cuda_only && !on_cuda()) continue;
    SCOPED_TRACE(c.name);
    AttentionRun run(*this, c);
    attention(run.args(), stream());
    const std::vector<float> first = download<float>(run.out(), run.out_count());
    attention(run.args(), stream());
    const std::vector<float> second = download<float>(run.out(), run.out_count());
    ASSERT_EQ(0, std::memcmp(first.data(), second.data(), first.size() * sizeof(float)));
  }
}

// past_at: the position is read from device memory when the op runs. The
// enqueued `past` is deliberately wrong (0): results must follow the value
// stored in device memory.
TEST_P(TransformerOpsOnBackend, AttentionAndKvAppendReadThePositionWhenTheyRun) {
  for (const AttentionCase& c : kAttentionCases) {
    if (c.cuda_only && !on_cuda()) continue;
    SCOPED_TRACE(c.name);
    AttentionRun run(*this, c);
    Buffer stored = upload(nullptr, sizeof(int32_t));
    const int32_t value = static_cast<int32_t>(c.past);
    stream().copy(stored.data(), &value, sizeof(value));
    AttentionArgs a = run.args();
    a.past = 0;
    a.past_at = static_cast<const int32_t*>(stored.data());
    attention(a, stream());
    const std::vector<float> out = download<float>(run.out(), run.out_count());
    EXPECT_LT(relative_error(out, run.reference()), 1e-5);
  }
  // kv_append: the stored position decides where rows land; one at the
  // capacity is skipped.
  const int64_t row = 2 * 8, capacity = 6;
  const std::vector<float> src = random_floats(row, 31);
  for (int32_t position : {3, 6}) {
    std::vector<float> cache(capacity * row, -7.0f);
    Buffer ds = upload(src), dc = upload(cache), stored = upload(&position, sizeof(position));
    KvAppendArgs k;
    k.batch = 1;
    k.tokens = 1;
    k.kv_heads = 2;
    k.head_dim = 8;
    k.past = 0;
    k.past_at = static_cast<const int32_t*>(stored.data());
    k.capacity = capacity;
    k.src = static_cast<const float*>(ds.data());
    k.src_stride = row;
    k.cache = static_cast<float*>(dc.data());
    kv_append(k, stream());
    const std::vector<float> out = download<float>(dc, cache.size());
    for (int64_t p = 0; p < capacity; ++p) {
      for (int64_t e = 0; e < row; ++e) {
        ASSERT_EQ(out[p * row + e], p == position ? src[e] : -7.0f) << "position " << position;
      }
    }
  }
}

// ---- RoPE, KV append and attention in one call ----

struct RopeAttentionCase {
  const char* name;
  int64_t batch, tokens, heads, kv_heads, head_dim, past, window;
  bool past_at;  // the position read from device memory (a captured step's)
  bool cuda_only = false;
};

// The caches and outputs of rope_append_attention (fused) or of apply_rope,
// kv_append and attention called in turn, from the same inputs.
struct RopeAttentionResult {
  std::vector<float> out, k_cache, v_cache;
};

RopeAttentionResult run_rope_attention(TransformerOpsOnBackend& t, const RopeAttentionCase& c,
                                       bool fused) {
  const int64_t d = c.head_dim, half = d / 2, rows = c.batch * c.tokens;
  const int64_t q_cols = c.heads * d, kv_cols = c.kv_heads * d, capacity = c.past + c.tokens + 2;
  std::vector<int32_t> positions(rows);
  for (int64_t r = 0; r < rows; ++r) {
    positions[r] = static_cast<int32_t>(c.past + r % c.tokens + 3 * (r / c.tokens));
  }
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / d);
  const std::vector<float> q = random_floats(rows * q_cols, 51);
  const std::vector<float> k = random_floats(rows * kv_cols, 52);
  const std::vector<float> v = random_floats(rows * kv_cols, 53);
  const std::vector<float> k_cache = random_floats(c.batch * capacity * kv_cols, 54);
  const std::vector<float> v_cache = random_floats(c.batch * capacity * kv_cols, 55);
  Buffer dq = t.upload(q), dk = t.upload(k), dv = t.upload(v);
  Buffer dkc = t.upload(k_cache), dvc = t.upload(v_cache);
  Buffer dout = t.upload(nullptr, rows * q_cols * sizeof(float));
  Buffer dp = t.upload(positions), df = t.upload(inv_freq);
  const int32_t past = static_cast<int32_t>(c.past);
  Buffer stored = t.upload(&past, sizeof(past));
  const int32_t* past_at = c.past_at ? static_cast<const int32_t*>(stored.data()) : nullptr;
  RopeAppendAttentionArgs f;
  f.rope = {rows, c.heads, d, static_cast<float*>(dq.data()),
            static_cast<const int32_t*>(dp.data()), static_cast<const float*>(df.data()),
            static_cast<float*>(dk.data()), c.kv_heads};
  f.append = {c.batch, c.tokens, c.kv_heads, d, c.past, past_at, capacity,
              static_cast<const float*>(dk.data()), kv_cols, static_cast<float*>(dkc.data()),
              static_cast<const float*>(dv.data()), static_cast<float*>(dvc.data())};
  AttentionArgs& a = f.attention;
  a.batch = c.batch;
  a.tokens = c.tokens;
  a.heads = c.heads;
  a.kv_heads = c.kv_heads;
  a.head_dim = d;
  a.past = c.past;
  a.past_at = past_at;
  a.capacity = capacity;
  a.window = c.window;
  a.scale = 1.0f / std::sqrt(static_cast<float>(d));
  a.q = static_cast<const float*>(dq.data());
  a.q_stride = q_cols;
  a.k_cache = static_cast<const float*>(dkc.data());
  a.v_cache = static_cast<const float*>(dvc.data());
  a.out = static_cast<float*>(dout.data());
  if (fused) {
    rope_append_attention(f, t.stream());
  } else {
    apply_rope(f.rope, t.stream());
    kv_append(f.append, t.stream());
    attention(f.attention, t.stream());
  }
  return {t.download<float>(dout, rows * q_cols),
          t.download<float>(dkc, c.batch * capacity * kv_cols),
          t.download<float>(dvc, c.batch * capacity * kv_cols)};
}

// On CUDA the decode cases are one launch (the queries rotated as loaded, the
// new key and value appended by the block that reads them); the prefill case
// is the three calls.
TEST_P(TransformerOpsOnBackend, RopeAppendAttentionGivesTheThreeCallsBits) {
  const RopeAttentionCase cases[] = {
      {"decode_gqa", 1, 1, 8, 2, 64, 37, 0, false},
      {"decode_first_token", 1, 1, 4, 4, 32, 0, 0, false},
      {"decode_batch3_past_at", 3, 1, 9, 3, 128, 100, 0, true},
      {"decode_window_past_at", 2, 1, 8, 2, 64, 90, 32, true},
      {"decode_head_dim_6", 2, 1, 4, 2, 6, 50, 0, false},
      // Long enough for a cluster of blocks over the context.
      {"decode_long_context", 2, 1, 32, 8, 128, 3000, 0, true, true},
      {"prefill_three_calls", 2, 5, 4, 2, 64, 7, 0, false},
  };
  for (const RopeAttentionCase& c : cases) {
    if (c.cuda_only && !on_cuda()) continue;
    SCOPED_TRACE(c.name);
    const RopeAttentionResult fused = run_rope_attention(*this, c, true);
    const RopeAttentionResult apart = run_rope_attention(*this, c, false);
    EXPECT_EQ(0, std::memcmp(fused.out.data(), apart.out.data(), fused.out.size() * 4));
    EXPECT_EQ(0, std::memcmp(fused.k_cache.data(), apart.k_cache.data(),
                             fused.k_cache.size() * 4));
    EXPECT_EQ(0, std::memcmp(fused.v_cache.data(), apart.v_cache.data(),
                             fused.v_cache.size() * 4));
  }
}

TEST_P(TransformerOpsOnBackend, RmsNormGivesTheSameBitsOnEveryCall) {
  const int64_t rows = 4, cols = 4096;
  const std::vector<float> x = random_floats(rows * cols, 25);
  const std::vector<float> w = random_floats(cols, 26);
  Buffer dx = upload(x), dw = upload(w), dy = upload(nullptr, x.size() * 4);
  RmsNormArgs a;
  a.rows = rows;
  a.cols = cols;
  a.x = static_cast<const float*>(dx.data());
  a.weight = dw.data();
  a.y = static_cast<float*>(dy.data());
  rms_norm(a, stream());
  const std::vector<float> first = download<float>(dy, rows * cols);
  rms_norm(a, stream());
  const std::vector<float> second = download<float>(dy, rows * cols);
  ASSERT_EQ(0, std::memcmp(first.data(), second.data(), first.size() * sizeof(float)));
}

// ---- RMSNorm fused into dense GEMVs (gemm.h's DenseGemvInputNorm) ----

// The fused calls give the separate calls' bits, exactly (their contract: on
// CUDA the GEMV blocks replay rms_norm's reduction tree, rms_norm_device.h):
// the normalized x written out, a group of three GEMVs (one with a bias and
// ReLU, one adding into y) and the SwiGLU pair. Shapes: k = 4096 (rms_norm's
// 1024 threads, four elements each), 5120 (five), 8192 at m = 1 (the largest
// fused x, 32 KiB), 1000 (256 threads), 256; k = 100 (not whole 16-byte
// chunks) and m * k beyond 32 KiB take the unfused path on CUDA, and must
// give the same bits too. Every weight and norm dtype.
TEST_P(TransformerOpsOnBackend, RmsNormFusedIntoDenseGemvsGivesTheSeparateCallsBits) {
  struct Case {
    int64_t m, n0, n1, k;
  };
  const Case cases[] = {{1, 72, 24, 4096}, {1, 40, 8, 5120}, {1, 24, 8, 8192}, {3, 40, 16, 1000},
                        {2, 64, 16, 256},  {8, 16, 8, 256},  {2, 33, 9, 100},  {8, 16, 8, 4096}};
  const size_t f = sizeof(float);
  int variant = 0;
  for (DType wt : {DType::kBF16, DType::kF16}) {
    for (const Case& c : cases) {
      const DType norm_dtype = kWeightTypes[variant++ % 3];
      const int64_t m = c.m, k = c.k, n0 = c.n0, n1 = c.n1;
      SCOPED_TRACE(::testing::Message() << short_name(wt) << " norm " << short_name(norm_dtype)
                                        << " m " << m << " n " << n0 << "/" << n1 << " k " << k);
      // Activations of a residual stream's size; weights scaled by 1/sqrt(k).
      const std::vector<float> x = random_floats(m * k, 40, 3.0f);
      const auto nw = random_values(norm_dtype, k, 41);
      const auto w0 = random_values(wt, n0 * k, 42, 0.03f),
                 w1 = random_values(wt, n1 * k, 43, 0.03f),
                 w2 = random_values(wt, n0 * k, 44, 0.03f);
      const std::vector<float> bias = random_floats(n1, 45), residual = random_floats(m * n0, 46);
      Buffer dx = upload(x), dnw = upload(nw), dw0 = upload(w0), dw1 = upload(w1), dw2 = upload(w2),
             db = upload(bias);
      auto gemv = [&](const Buffer& xs, const Buffer& w, int64_t n, Buffer& y) {
        DenseGemvArgs a;
        a.m = m;
        a.n = n;
        a.k = k;
        a.weight_dtype = wt;
        a.x = static_cast<const float*>(xs.data());
        a.w = w.data();
        a.y = static_cast<float*>(y.data());
        return a;
      };
      auto group = [&](const Buffer& xs, Buffer& y0, Buffer& y1, Buffer& y2,
                       std::array<DenseGemvArgs, 3>& g) {
        g = {gemv(xs, dw0, n0, y0), gemv(xs, dw1, n1, y1), gemv(xs, dw2, n0, y2)};
        g[1].bias = db.data();
        g[1].relu = true;
        g[2].accumulate = true;
      };
      // Separately: rms_norm, then the GEMVs over its output.
      Buffer xn = upload(nullptr, m * k * f), y0 = upload(nullptr, m * n0 * f),
             y1 = upload(nullptr, m * n1 * f), y2 = upload(residual),
             g = upload(nullptr, m * n0 * f), u = upload(nullptr, m * n0 * f),
             act = upload(nullptr, m * n0 * f);
      rms_norm({m, k, static_cast<const float*>(dx.data()), dnw.data(), norm_dtype, 1e-5f,
                static_cast<float*>(xn.data())},
               stream());
      std::array<DenseGemvArgs, 3> separate;
      group(xn, y0, y1, y2, separate);
      dense_gemv_group(separate.data(), 3, stream());
      dense_gemv_swiglu(gemv(xn, dw0, n0, g), gemv(xn, dw2, n0, u), static_cast<float*>(act.data()),
                        stream());

      // Fused.
      Buffer fxn = upload(nullptr, m * k * f), fy0 = upload(nullptr, m * n0 * f),
             fy1 = upload(nullptr, m * n1 * f), fy2 = upload(residual),
             fg = upload(nullptr, m * n0 * f), fu = upload(nullptr, m * n0 * f),
             fact = upload(nullptr, m * n0 * f), fxn2 = upload(nullptr, m * k * f);
      DenseGemvInputNorm norm;
      norm.weight = dnw.data();
      norm.dtype = norm_dtype;
      norm.eps = 1e-5f;
      norm.out = static_cast<float*>(fxn.data());
      std::array<DenseGemvArgs, 3> fused;
      group(dx, fy0, fy1, fy2, fused);
      dense_gemv_group(fused.data(), 3, norm, stream());
      DenseGemvInputNorm norm2 = norm;
      norm2.out = static_cast<float*>(fxn2.data());
      dense_gemv_swiglu(gemv(dx, dw0, n0, fg), gemv(dx, dw2, n0, fu), norm2,
                        static_cast<float*>(fact.data()), stream());

      const std::vector<float> want_xn = download<float>(xn, m * k);
      EXPECT_EQ(download<float>(fxn, m * k), want_xn);
      EXPECT_EQ(download<float>(fxn2, m * k), want_xn);
      EXPECT_EQ(download<float>(fy0, m * n0), download<float>(y0, m * n0));
      EXPECT_EQ(download<float>(fy1, m * n1), download<float>(y1, m * n1));
      EXPECT_EQ(download<float>(fy2, m * n0), download<float>(y2, m * n0));
      EXPECT_EQ(download<float>(fact, m * n0), download<float>(act, m * n0));
    }
  }
  // A missing output for the normalized x, and a norm weight that is not a
  // float type, are refused.
  DenseGemvArgs bad;
  bad.m = 1;
  bad.n = 1;
  bad.k = 8;
  float x[8] = {}, y[1] = {};
  uint16_t w[8] = {};
  bad.x = x;
  bad.w = w;
  bad.y = y;
  DenseGemvInputNorm no_out;
  no_out.weight = w;
  no_out.dtype = DType::kBF16;
  EXPECT_THROW(dense_gemv_group(&bad, 1, no_out, stream()), InvalidInputError);
  no_out.out = y;
  no_out.dtype = DType::kI32;
  EXPECT_THROW(dense_gemv_group(&bad, 1, no_out, stream()), InvalidInputError);
}

// A decode step's chain of dependent launches, queued with no
// synchronization: per step, q/k/v-like GEMVs with the input norm fused,
// their output added into the residual, the SwiGLU pair with the
// post-attention norm fused, the down projection added into the residual,
// a standalone rms_norm and a RoPE of its output. On sm_90 each of these
// kernels is a programmatic dependent launch that may start while the one
// before it ends (dependent_launch.h); one that read its input, or wrote its
// output, before waiting for the kernel before would see or leave stale
// data. The chain must give, bit for bit, what it gives with the stream
// drained after every call (no overlap possible), and again replayed from a
// captured graph (programmatic edges in the graph).
TEST_P(TransformerOpsOnBackend, DecodeChainOfDependentLaunchesGivesTheDrainedChainsBits) {
  const int64_t k = 4096, inter = 2048, heads = 32, head_dim = 128;
  const int steps = on_cuda() ? 24 : 3;
  const DType wt = DType::kBF16;
  const auto wq = random_values(wt, k * k, 50, 0.015f),
             wg = random_values(wt, inter * k, 51, 0.015f),
             wu = random_values(wt, inter * k, 52, 0.015f),
             wd = random_values(wt, k * inter, 53, 0.02f), n1 = random_values(DType::kBF16, k, 54),
             n2 = random_values(DType::kBF16, k, 55);
  const std::vector<float> h0 = random_floats(k, 56);
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = std::pow(10000.0f, -2.0f * static_cast<float>(i) / head_dim);
  }
  const std::vector<int32_t> position = {17};
  Buffer dwq = upload(wq), dwg = upload(wg), dwu = upload(wu), dwd = upload(wd), dn1 = upload(n1),
         dn2 = upload(n2), dfreq = upload(inv_freq), dpos = upload(position);
  const size_t f = sizeof(float);
  Buffer h = upload(nullptr, k * f), xn = upload(nullptr, k * f), q = upload(nullptr, k * f),
         g = upload(nullptr, inter * f), u = upload(nullptr, inter * f),
         act = upload(nullptr, inter * f), r = upload(nullptr, k * f);
  auto gemv = [&](const Buffer& x, const Buffer& w, int64_t n, int64_t kk, Buffer& y) {
    DenseGemvArgs a;
    a.m = 1;
    a.n = n;
    a.k = kk;
    a.weight_dtype = wt;
    a.x = static_cast<const float*>(x.data());
    a.w = w.data();
    a.y = static_cast<float*>(y.data());
    return a;
  };
  auto norm = [&](const Buffer& w) {
    DenseGemvInputNorm n;
    n.weight = w.data();
    n.dtype = DType::kBF16;
    n.eps = 1e-5f;
    n.out = static_cast<float*>(xn.data());
    return n;
  };
  auto step = [&](bool drain) {
    auto done = [&] {
      if (drain) stream_->synchronize();
    };
    const DenseGemvArgs qa = gemv(h, dwq, k, k, q);
    dense_gemv_group(&qa, 1, norm(dn1), stream());
    done();
    add_in_place(static_cast<float*>(h.data()), static_cast<const float*>(q.data()), k, stream());
    done();
    dense_gemv_swiglu(gemv(h, dwg, inter, k, g), gemv(h, dwu, inter, k, u), norm(dn2),
                      static_cast<float*>(act.data()), stream());
    done();
    DenseGemvArgs down = gemv(act, dwd, k, inter, h);
    down.accumulate = true;
    dense_gemv(down, stream());
    done();
    rms_norm({1, k, static_cast<const float*>(h.data()), dn1.data(), DType::kBF16, 1e-5f,
              static_cast<float*>(r.data())},
             stream());
    done();
    RopeArgs rope;
    rope.tokens = 1;
    rope.heads = heads;
    rope.head_dim = head_dim;
    rope.x = static_cast<float*>(r.data());
    rope.positions = static_cast<const int32_t*>(dpos.data());
    rope.inv_freq = static_cast<const float*>(dfreq.data());
    apply_rope(rope, stream());
    done();
    // The rotated norm feeds the next step's residual (so every kernel's
    // output reaches the end).
    add_in_place(static_cast<float*>(h.data()), static_cast<const float*>(r.data()), k, stream());
    done();
  };
  auto run = [&](bool drain) {
    stream().copy(h.data(), h0.data(), k * f);
    for (int i = 0; i < steps; ++i) step(drain);
    return download<float>(h, k);
  };
  const std::vector<float> drained = run(true);
  for (float v : drained) ASSERT_TRUE(std::isfinite(v));
  for (int attempt = 0; attempt < 3; ++attempt) {
    EXPECT_EQ(run(false), drained) << "attempt " << attempt;
  }
  // Replayed from a graph of the whole chain.
  stream().copy(h.data(), h0.data(), k * f);
  stream_->synchronize();
  StreamGraph graph;
  {
    GraphCapture capture(stream());
    for (int i = 0; i < steps; ++i) step(false);
    graph = capture.finish();
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    stream().copy(h.data(), h0.data(), k * f);
    graph.launch(stream());
    EXPECT_EQ(download<float>(h, k), drained) << "replay " << attempt;
  }
}

// ---- Argmax ----

TEST_P(TransformerOpsOnBackend, ArgmaxTakesTheFirstLargestAndNeverNaN) {
  const int64_t vocab = 49152;
  std::vector<std::vector<float>> rows;
  std::vector<int32_t> want;
  auto add = [&](std::vector<float> row, int32_t id) {
    rows.push_back(std::move(row));
    want.push_back(id);
  };
  std::vector<float> base = random_floats(vocab, 27);
  for (float& e : base) e = std::min(e, 5.0f);
  {  // ties: the first of two equal maxima
    std::vector<float> r = base;
    r[1000] = 9.0f;
    r[40000] = 9.0f;
    add(r, 1000);
  }
  {  // NaN before, at and after the maximum
    std::vector<float> r = base;
    r[0] = kNaN;
    r[500] = 8.0f;
    r[501] = kNaN;
    r[vocab - 1] = kNaN;
    add(r, 500);
  }
  {  // the last element
    std::vector<float> r = base;
    r[vocab - 1] = 7.0f;
    add(r, static_cast<int32_t>(vocab - 1));
  }
  {  // every element equal: the first
    add(std::vector<float>(vocab, -kInf), 0);
  }
  {  // all NaN but one -inf
    std::vector<float> r(vocab, kNaN);
    r[123] = -kInf;
    add(r, 123);
  }
  std::vector<float> logits;
  for (const auto& r : rows) logits.insert(logits.end(), r.begin(), r.end());
  const int64_t n = static_cast<int64_t>(rows.size());
  Buffer dl = upload(logits), di = upload(nullptr, n * sizeof(int32_t));
  argmax_rows(static_cast<const float*>(dl.data()), n, vocab, static_cast<int32_t*>(di.data()),
              stream());
  EXPECT_EQ(download<int32_t>(di, n), want);
  // A short row (fewer elements than threads).
  const std::vector<float> small = {1.0f, 3.0f, kNaN, 3.0f};
  Buffer ds = upload(small);
  argmax_rows(static_cast<const float*>(ds.data()), 1, 4, static_cast<int32_t*>(di.data()),
              stream());
  EXPECT_EQ(download<int32_t>(di, 1)[0], 1);
}

// ---- Argument errors (thrown on the calling thread, before enqueuing) ----

TEST_P(TransformerOpsOnBackend, BadArgumentsThrowInvalidInput) {
  float f[64] = {};
  int32_t ids[4] = {};
  RmsNormArgs norm;
  norm.rows = 1;
  norm.cols = 4;
  norm.x = f;
  norm.weight = f;
  norm.y = f;
  norm.weight_dtype = DType::kI8;
  EXPECT_THROW(rms_norm(norm, stream()), InvalidInputError);
  norm.weight_dtype = DType::kF32;
  norm.weight = nullptr;
  EXPECT_THROW(rms_norm(norm, stream()), InvalidInputError);

  RopeArgs rope;
  rope.tokens = 1;
  rope.heads = 1;
  rope.head_dim = 5;
  rope.x = f;
  rope.positions = ids;
  rope.inv_freq = f;
  EXPECT_THROW(apply_rope(rope, stream()), InvalidInputError);

  SwigluArgs sw;
  sw.rows = 2;
  sw.cols = 4;
  sw.gate = f;
  sw.up = f;
  sw.out = f;
  sw.gate_stride = 3;
  sw.up_stride = 4;
  EXPECT_THROW(swiglu(sw, stream()), InvalidInputError);

  EXPECT_THROW(add_in_place(f, nullptr, 3, stream()), InvalidInputError);
  EXPECT_THROW(add_in_place(f, f, -1, stream()), InvalidInputError);

  KvAppendArgs kv;
  kv.batch = 1;
  kv.tokens = 2;
  kv.kv_heads = 1;
  kv.head_dim = 4;
  kv.past = 3;
  kv.capacity = 4;
  kv.src = f;
  kv.src_stride = 4;
  kv.cache = f;
  EXPECT_THROW(kv_append(kv, stream()), InvalidInputError);  // 3 + 2 > 4
  kv.capacity = 8;
  kv.src_stride = 3;
  EXPECT_THROW(kv_append(kv, stream()), InvalidInputError);

  AttentionArgs at;
  at.batch = 1;
  at.tokens = 1;
  at.heads = 6;
  at.kv_heads = 4;
  at.head_dim = 4;
  at.capacity = 4;
  at.q = f;
  at.q_stride = 24;
  at.k_cache = f;
  at.v_cache = f;
  at.out = f;
  EXPECT_THROW(attention(at, stream()), InvalidInputError);  // 6 % 4 != 0
  at.kv_heads = 3;
  at.q_stride = 23;
  EXPECT_THROW(attention(at, stream()), InvalidInputError);
  at.q_stride = 24;
  at.past = 4;
  EXPECT_THROW(attention(at, stream()), InvalidInputError);  // 4 + 1 > 4
  at.past = 0;
  at.window = -1;
  EXPECT_THROW(attention(at, stream()), InvalidInputError);

  EXPECT_THROW(argmax_rows(f, 1, 0, ids, stream()), InvalidInputError);
  EXPECT_THROW(argmax_rows(f, 1, 4, nullptr, stream()), InvalidInputError);

  EmbeddingArgs emb;
  emb.tokens = 1;
  emb.vocab = 4;
  emb.hidden = 4;
  emb.ids = ids;
  emb.table = f;
  emb.table_dtype = DType::kU8;
  emb.out = f;
  EXPECT_THROW(embedding_lookup(emb, stream()), InvalidInputError);
}

INSTANTIATE_TEST_SUITE_P(Backends, TransformerOpsOnBackend,
                         ::testing::Values(DeviceChoice::kSim, DeviceChoice::kCuda),
                         [](const auto& info) {
                           return info.param == DeviceChoice::kSim ? "Sim" : "Cuda";
                         });

}  // namespace
}  // namespace stowage::kernels
