// The row kernel (gemv_body.inc) compiled for each instruction set. The SIMD
// sets are compiled with target pragmas, function by function, so the binary
// runs on any x86-64 CPU; HostGemv calls one only where the CPU has it.
#include "hostcompute/detail/gemv_isa.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define STOWAGE_HOST_SIMD 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/quant_rules.h"

namespace stowage::hostcompute::detail {

namespace scalar_isa {

struct Ops {
  using Vec = float;
  static constexpr int V = 1;
  static constexpr int kRowsAtOnce = 4;
  static constexpr int kFourBitGroup = 2;
  // The reference: every format through the segment buffer (no fused path).
  static constexpr bool kFused = false;
  static Vec load(const float* p) { return *p; }
  static Vec load_partial(const float*, int) { return 0.0f; }  // never: V == 1
  static void store(float* p, Vec v) { *p = v; }
  static Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
  static Vec add(Vec a, Vec b) { return a + b; }
  static float sum(Vec v) { return v; }
  static int64_t widen_bf16(const uint16_t*, int64_t, float*) { return 0; }
  static int64_t widen_f16(const uint16_t*, int64_t, float*) { return 0; }
  static int64_t widen_int8(const int8_t*, int64_t, float, float*) { return 0; }
  struct Lut {
    float value[16];
  };
  static Lut scale_lut(const float* code, float absmax) {
    Lut lut;
    for (int q = 0; q < 16; ++q) lut.value[q] = code[q] * absmax;
    return lut;
  }
  static void decode_four_bit(const uint8_t* bytes, const Lut& lut, float* out) {
    out[0] = lut.value[bytes[0] >> 4];
    out[1] = lut.value[bytes[0] & 15];
  }
};

#include "hostcompute/detail/gemv_body.inc"

}  // namespace scalar_isa

void gemv_rows_scalar(const GemvJob& job, int64_t row_begin, int64_t row_end) {
  scalar_isa::gemv_rows(job, row_begin, row_end);
}

#if defined(STOWAGE_HOST_SIMD)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace avx2_isa {

struct Ops {
  using Vec = __m256;
  static constexpr int V = 8;
  // 2 x 4 accumulators, 4 weight vectors and the activations fill 16 ymm.
  static constexpr int kRowsAtOnce = 2;
  static constexpr int kFourBitGroup = 16;
  static constexpr bool kFused = true;
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load_partial(const float* p, int count) {
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_maskload_ps(p, mask);
  }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static float sum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static int64_t widen_bf16(const uint16_t* src, int64_t count, float* out) {
    int64_t c = 0;
    for (; c + V <= count; c += V) {
      const __m256i v =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c)));
      _mm256_storeu_ps(out + c, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    return c;
  }
  static int64_t widen_f16(const uint16_t* src, int64_t count, float* out) {
    int64_t c = 0;
    for (; c + V <= count; c += V) {
      _mm256_storeu_ps(out + c,
                       _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c))));
    }
    return c;
  }
  static int64_t widen_int8(const int8_t* src, int64_t count, float scale, float* out) {
    const __m256 s = _mm256_set1_ps(scale);
    int64_t c = 0;
    for (; c + V <= count; c += V) {
      const __m256i v =
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + c)));
      _mm256_storeu_ps(out + c, _mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
    }
    return c;
  }
  struct Lut {
    __m256 low, high;  // codes 0..7, 8..15
  };
  static Lut scale_lut(const float* code, float absmax) {
    const __m256 a = _mm256_set1_ps(absmax);
    return {_mm256_mul_ps(_mm256_loadu_ps(code), a), _mm256_mul_ps(_mm256_loadu_ps(code + 8), a)};
  }
  static __m256 lookup(const Lut& lut, __m256i index) {
    const __m256 high = _mm256_permutevar8x32_ps(lut.high, index);
    const __m256 low = _mm256_permutevar8x32_ps(lut.low, index);
    const __m256i upper = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(7));
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(upper));
  }
  static void decode_four_bit(const uint8_t* bytes, const Lut& lut, float* out) {
    const __m256i b =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
    const __m256 first = lookup(lut, _mm256_srli_epi32(b, 4));  // elements 0, 2, 4, ...
    const __m256 second = lookup(lut, _mm256_and_si256(b, _mm256_set1_epi32(15)));
    const __m256 a = _mm256_unpacklo_ps(first, second);  // e0 e1 e2 e3 | e8 e9 e10 e11
    const __m256 c = _mm256_unpackhi_ps(first, second);  // e4 e5 e6 e7 | e12 e13 e14 e15
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(a, c, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(a, c, 0x31));
  }
  // The fused path's decoders (gemv_body.inc).
  static Vec bf16_vector(const uint16_t* src) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static Vec f16_vector(const uint16_t* src) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  }
  static Vec int8_vector(const int8_t* src) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src))));
  }
  // out[b] = table[codes[b]] * nested + offset for b < count (double
  // quantization's absmax, as quant_rules::dequantize_nested_absmax).
  static void nested_absmax(const uint8_t* codes, int64_t count, const float* table, float nested,
                            float offset, float* out) {
    int64_t b = 0;
    for (; b + V <= count; b += V) {
      const __m256i index =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + b)));
      _mm256_storeu_ps(out + b, _mm256_fmadd_ps(_mm256_i32gather_ps(table, index, 4),
                                                _mm256_set1_ps(nested), _mm256_set1_ps(offset)));
    }
    for (; b < count; ++b) out[b] = std::fma(table[codes[b]], nested, offset);
  }
  // 4 V = 32 elements from 16 bytes: a 16-bit word per lane, elements
  // 4 l .. 4 l + 3 as nibbles at bits 4, 0, 12, 8; nibble_vector<j> gives
  // element 4 l + j in lane l. vpermps reads an index's bits 0-2; the
  // nibble's bit 3, shifted to the sign, picks the table half.
  // out[j V + l] = in[4 l + j] for one group of 4 V floats: x in the 4-bit
  // decoder's order.
  static void nibble_order(const float* in, float* out) {
    const __m256i index = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    for (int j = 0; j < 4; ++j)
      _mm256_storeu_ps(out + j * V, _mm256_i32gather_ps(in + j, index, 4));
  }
  using Nibbles = __m256i;
  static Nibbles load_nibbles(const uint8_t* bytes) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
  }
  template <int J>
  static Vec nibble_vector(Nibbles v, const Lut& lut) {
    constexpr int kShift = J == 0 ? 4 : J == 1 ? 0 : J == 2 ? 12 : 8;
    const __m256i index = kShift == 0 ? v : _mm256_srli_epi32(v, kShift);
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut.low, index),
                            _mm256_permutevar8x32_ps(lut.high, index),
                            _mm256_castsi256_ps(_mm256_slli_epi32(v, 28 - kShift)));
  }
};

#include "hostcompute/detail/gemv_body.inc"

}  // namespace avx2_isa

void gemv_rows_avx2(const GemvJob& job, int64_t row_begin, int64_t row_end) {
  avx2_isa::gemv_rows(job, row_begin, row_end);
}

#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (`__Y = __Y`),
// which -Wmaybe-uninitialized reports wherever they are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace avx512_isa {

struct Ops {
  using Vec = __m512;
  static constexpr int V = 16;
  // 4 x 4 accumulators, 4 weight vectors and the activations: 24 of 32 zmm.
  static constexpr int kRowsAtOnce = 4;
  static constexpr int kFourBitGroup = 32;
  static constexpr bool kFused = true;
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load_partial(const float* p, int count) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), p);
  }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static float sum(Vec v) {
    const __m256 half =
        _mm256_add_ps(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static int64_t widen_bf16(const uint16_t* src, int64_t count, float* out) {
    int64_t c = 0;
    for (; c + V <= count; c += V) {
      const __m512i v =
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c)));
      _mm512_storeu_ps(out + c, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    return c;
  }
  static int64_t widen_f16(const uint16_t* src, int64_t count, float* out) {
    int64_t c = 0;
    for (; c + V <= count; c += V) {
      _mm512_storeu_ps(
          out + c, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c))));
    }
    return c;
  }
  static int64_t widen_int8(const int8_t* src, int64_t count, float scale, float* out) {
    const __m512 s = _mm512_set1_ps(scale);
    int64_t c = 0;
    for (; c + V <= count; c += V) {
      const __m512i v =
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c)));
      _mm512_storeu_ps(out + c, _mm512_mul_ps(_mm512_cvtepi32_ps(v), s));
    }
    return c;
  }
  using Lut = __m512;
  static Lut scale_lut(const float* code, float absmax) {
    return _mm512_mul_ps(_mm512_loadu_ps(code), _mm512_set1_ps(absmax));
  }
  static void decode_four_bit(const uint8_t* bytes, const Lut& lut, float* out) {
    const __m512i b =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
    const __m512 first = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);  // even elements
    const __m512 second = _mm512_permutexvar_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)), lut);
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(first, low, second));
    _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(first, high, second));
  }
  // The fused path's decoders (gemv_body.inc).
  static Vec bf16_vector(const uint16_t* src) {
    const __m512i v =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
  static Vec f16_vector(const uint16_t* src) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
  }
  static Vec int8_vector(const int8_t* src) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src))));
  }
  // out[b] = table[codes[b]] * nested + offset for b < count (double
  // quantization's absmax, as quant_rules::dequantize_nested_absmax).
  static void nested_absmax(const uint8_t* codes, int64_t count, const float* table, float nested,
                            float offset, float* out) {
    int64_t b = 0;
    for (; b + V <= count; b += V) {
      const __m512i index =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b)));
      _mm512_storeu_ps(out + b, _mm512_fmadd_ps(_mm512_i32gather_ps(index, table, 4),
                                                _mm512_set1_ps(nested), _mm512_set1_ps(offset)));
    }
    for (; b < count; ++b) out[b] = std::fma(table[codes[b]], nested, offset);
  }
  // 4 V = 64 elements from 32 bytes: a 16-bit word per lane, elements
  // 4 l .. 4 l + 3 as nibbles at bits 4, 0, 12, 8; nibble_vector<j> gives
  // element 4 l + j in lane l. vpermps reads an index's low 4 bits, so one
  // shift picks each nibble.
  // out[j V + l] = in[4 l + j] for one group of 4 V floats: x in the 4-bit
  // decoder's order (lanes 0-7 of out_j from in[0, 32), 8-15 from in[32, 64)).
  static void nibble_order(const float* in, float* out) {
    const __m512 a = _mm512_loadu_ps(in), b = _mm512_loadu_ps(in + 16);
    const __m512 c = _mm512_loadu_ps(in + 32), d = _mm512_loadu_ps(in + 48);
    __m512i index = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    for (int j = 0; j < 4; ++j) {
      const __m512 low = _mm512_permutex2var_ps(a, index, b);
      const __m512 high = _mm512_permutex2var_ps(c, index, d);
      _mm512_storeu_ps(out + j * V, _mm512_shuffle_f32x4(low, high, 0x44));
      index = _mm512_add_epi32(index, _mm512_set1_epi32(1));
    }
  }
  using Nibbles = __m512i;
  static Nibbles load_nibbles(const uint8_t* bytes) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes)));
  }
  template <int J>
  static Vec nibble_vector(Nibbles v, const Lut& lut) {
    constexpr int kShift = J == 0 ? 4 : J == 1 ? 0 : J == 2 ? 12 : 8;
    return _mm512_permutexvar_ps(kShift == 0 ? v : _mm512_srli_epi32(v, kShift), lut);
  }
};

#include "hostcompute/detail/gemv_body.inc"

}  // namespace avx512_isa

void gemv_rows_avx512(const GemvJob& job, int64_t row_begin, int64_t row_end) {
  avx512_isa::gemv_rows(job, row_begin, row_end);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#else  // no SIMD build: HostGemv never selects these

void gemv_rows_avx2(const GemvJob&, int64_t, int64_t) {
  throw InternalError("host gemv: AVX2 kernels are not built for this target");
}
void gemv_rows_avx512(const GemvJob&, int64_t, int64_t) {
  throw InternalError("host gemv: AVX-512 kernels are not built for this target");
}

#endif

}  // namespace stowage::hostcompute::detail
