#include "models/testing/mlp_checkpoints.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "core/error.h"

namespace stowage::models::testing {

void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  std::string header = "{";
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const RawTensor& t = tensors[i];
    std::string dims;
    for (size_t d = 0; d < t.shape.rank(); ++d) dims += (d ? "," : "") + std::to_string(t.shape[d]);
    header += fmt::format("{}\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                          i ? "," : "", t.name, safetensors_name(t.dtype), dims, offset,
                          offset + t.bytes.size());
    offset += t.bytes.size();
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) throw IoError(fmt::format("cannot create '{}'", path));
  uint64_t n = header.size();
  bool ok = std::fwrite(&n, 8, 1, f) == 1 && std::fwrite(header.data(), 1, n, f) == n;
  for (const RawTensor& t : tensors) {
    if (!t.bytes.empty())
      ok = ok && std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size();
  }
  ok = std::fclose(f) == 0 && ok;
  if (!ok) throw IoError(fmt::format("short write to '{}'", path));
}

const char* test_format_name(TestFormat format) {
  switch (format) {
    case TestFormat::kF32:
      return "f32";
    case TestFormat::kF16:
      return "f16";
    case TestFormat::kBF16:
      return "bf16";
    case TestFormat::kInt8:
      return "int8";
    case TestFormat::kNf4:
      return "nf4";
    case TestFormat::kFp4:
      return "fp4";
    case TestFormat::kNf4DoubleQuant:
      return "nf4_dq";
  }
  return "?";
}

namespace {

template <typename T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<uint8_t> floats_as(const std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> out(v.size() * dtype_size(dtype));
  for (size_t i = 0; i < v.size(); ++i) store_from_float(out.data(), dtype, i, v[i]);
  return out;
}

const float kNf4[16] = {-1.0f,
                        -0.6961928009986877f,
                        -0.5250730514526367f,
                        -0.39491748809814453f,
                        -0.28444138169288635f,
                        -0.18477343022823334f,
                        -0.09105003625154495f,
                        0.0f,
                        0.07958029955625534f,
                        0.16093020141124725f,
                        0.24611230194568634f,
                        0.33791524171829224f,
                        0.44070982933044434f,
                        0.5626170039176941f,
                        0.7229568362236023f,
                        1.0f};
const float kFp4[16] = {0.0f,        0.0052083f, 0.6666667f,  1.0f,        0.3333333f,  0.5f,
                        0.1666667f,  0.25f,      -0.0f,       -0.0052083f, -0.6666667f, -1.0f,
                        -0.3333333f, -0.5f,      -0.1666667f, -0.25f};

// Nearest code (test data only: the library's quantizers live in quant/).
int nearest(const float* map, float x) {
  int best = 0;
  for (int i = 1; i < 16; ++i) {
    if (std::fabs(map[i] - x) < std::fabs(map[best] - x)) best = i;
  }
  return best;
}

}  // namespace

std::vector<RawTensor> make_mlp(const std::vector<int64_t>& widths, TestFormat format,
                                uint32_t seed, DType storage, bool bias) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<RawTensor> out;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    const int64_t in = widths[i], o = widths[i + 1];
    const std::string p = fmt::format("layers.{}.", i);
    std::vector<float> w(static_cast<size_t>(in * o));
    const float scale = 1.0f / std::sqrt(static_cast<float>(in));
    for (float& v : w) v = dist(rng) * scale * 2.0f;
    switch (format) {
      case TestFormat::kF32:
      case TestFormat::kF16:
      case TestFormat::kBF16: {
        DType dt = format == TestFormat::kF32   ? DType::kF32
                   : format == TestFormat::kF16 ? DType::kF16
                                                : DType::kBF16;
        out.push_back({p + "weight", dt, Shape{o, in}, floats_as(w, dt)});
        break;
      }
      case TestFormat::kInt8: {
        std::vector<float> scb(static_cast<size_t>(o));
        std::vector<int8_t> cb(w.size());
        for (int64_t r = 0; r < o; ++r) {
          float m = 0;
          for (int64_t c = 0; c < in; ++c) m = std::max(m, std::fabs(w[r * in + c]));
          scb[r] = m;
          for (int64_t c = 0; c < in; ++c)
            cb[r * in + c] =
                static_cast<int8_t>(std::nearbyint(w[r * in + c] * (127.0f * (1.0f / m))));
        }
        out.push_back({p + "SCB", DType::kF32, Shape{o}, as_bytes(scb)});
        out.push_back({p + "weight", DType::kI8, Shape{o, in}, as_bytes(cb)});
        out.push_back({p + "weight_format", DType::kU8, Shape{}, {0}});
        break;
      }
      case TestFormat::kNf4:
      case TestFormat::kFp4:
      case TestFormat::kNf4DoubleQuant: {
        const bool fp4 = format == TestFormat::kFp4;
        const bool dq = format == TestFormat::kNf4DoubleQuant;
        const float* map = fp4 ? kFp4 : kNf4;
        const int64_t blocksize = 64;
        const int64_t n = in * o;
        const int64_t blocks = (n + blocksize - 1) / blocksize;
        std::vector<float> absmax(static_cast<size_t>(blocks), 0.0f);
        for (int64_t e = 0; e < n; ++e)
          absmax[e / blocksize] = std::max(absmax[e / blocksize], std::fabs(w[e]));
        const size_t item = dtype_size(storage);
        const int64_t packed = (n + 1) / 2;
        const int64_t rows = (n + 2 * static_cast<int64_t>(item) - 1) / (2 * item);
        std::vector<uint8_t> codes(static_cast<size_t>(rows) * item, 0);
        for (int64_t e = 0; e < n; ++e) {
          const float a = absmax[e / blocksize];
          const int q = nearest(map, a == 0 ? 0.0f : w[e] * (1.0f / a));
          codes[e / 2] |= static_cast<uint8_t>(e % 2 == 0 ? q << 4 : q);
        }
        (void)packed;
        out.push_back({p + "weight", storage, Shape{rows, 1}, codes});
        std::string json;
        if (dq) {
          // Nested: absmax - mean, blockwise over 256 with a 256-entry map
          // (a linear signed map here: test data only).
          float mean = 0;
          for (float a : absmax) mean += a;
          mean /= static_cast<float>(blocks);
          const int64_t nb = (blocks + 255) / 256;
          std::vector<float> nested(static_cast<size_t>(nb), 0.0f);
          for (int64_t b = 0; b < blocks; ++b)
            nested[b / 256] = std::max(nested[b / 256], std::fabs(absmax[b] - mean));
          std::vector<float> nmap(256);
          for (int k = 0; k < 256; ++k) nmap[k] = -1.0f + 2.0f * static_cast<float>(k) / 255.0f;
          std::vector<uint8_t> acodes(static_cast<size_t>(blocks));
          for (int64_t b = 0; b < blocks; ++b) {
            const float x = nested[b / 256] == 0 ? 0.0f : (absmax[b] - mean) / nested[b / 256];
            acodes[b] = static_cast<uint8_t>(std::lround((x + 1.0f) * 127.5f));
          }
          out.push_back({p + "weight.absmax", DType::kU8, Shape{blocks}, acodes});
          out.push_back({p + "weight.nested_absmax", DType::kF32, Shape{nb}, as_bytes(nested)});
          out.push_back({p + "weight.nested_quant_map", DType::kF32, Shape{256}, as_bytes(nmap)});
          json = fmt::format(
              "{{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": "
              "[{}, {}], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", "
              "\"nested_offset\": {}}}",
              o, in, mean);
        } else {
          out.push_back({p + "weight.absmax", DType::kF32, Shape{blocks}, as_bytes(absmax)});
          json = fmt::format(
              "{{\"quant_type\": \"{}\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": "
              "[{}, {}]}}",
              fp4 ? "fp4" : "nf4", o, in);
        }
        out.push_back({p + "weight.quant_map", DType::kF32, Shape{16},
                       as_bytes(std::vector<float>(map, map + 16))});
        out.push_back({p + "weight.quant_state.bitsandbytes__" + std::string(fp4 ? "fp4" : "nf4"),
                       DType::kU8, Shape{static_cast<int64_t>(json.size())},
                       std::vector<uint8_t>(json.begin(), json.end())});
        break;
      }
    }
    if (bias) {
      std::vector<float> b(static_cast<size_t>(o));
      for (float& v : b) v = dist(rng) * 0.1f;
      out.push_back({p + "bias", DType::kF32, Shape{o}, as_bytes(b)});
    }
  }
  return out;
}

RawTensor make_input(int64_t batch, int64_t width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(batch * width));
  for (float& v : x) v = dist(rng);
  return {"x", DType::kF32, Shape{batch, width}, as_bytes(x)};
}

}  // namespace stowage::models::testing
