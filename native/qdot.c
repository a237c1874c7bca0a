/*
 * Integer dots of quantized weight rows with quantized activation rows (see qdot.h). Weight block layouts are
 * ggml's (ggml-common.h); each kernel reads one weight row block by block and keeps the integer part of a block's
 * dot in int32 lanes, so the only rounding is the activation quantization and one float multiply-add per block
 * (or per 256-element super-block for the K types), as in llama.cpp's CPU backend.
 *
 * Activation rows:
 *   q8_0 kind: per 32 elements { float d; int32 s (sum of qs); int8 qs[32] }                         40 bytes
 *   q8_K kind: per 256 elements { float d; int16 bsums[16] (sums of 16 qs each); int8 qs[256] }     292 bytes
 * q8_0 rounds x/d (d = max|x|/127) to nearest; q8_K scales by the signed extreme (d = -max/127), as ggml does.
 *
 * Saturation: _mm256_maddubs_epi16 adds two u8·s8 products into int16; every use below stays under 32767
 * (|w| ≤ 128 after sign folding with |x| ≤ 127, or w ≤ 63 unsigned), so no lane saturates.
 */
#include "qdot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "kernels.h"
#include "qgemm.h" /* cokv_vnni_usable */
#include "simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QD_X86 1
#else
#define QD_X86 0
#endif

#define XQ0_BYTES 40
#define XQK_BYTES 292
#define XQK_QS 36 /* offset of qs in a q8_K block */

int cokv_xq_kind(int dt) {
  switch (dt) {
    case DT_Q8_0: case DT_Q4_0: case DT_Q4_1: case DT_Q5_0: case DT_Q5_1: case DT_IQ4_NL: return XQ_Q8_0;
    case DT_Q2_K: case DT_Q3_K: case DT_Q4_K: case DT_Q5_K: case DT_Q6_K: case DT_IQ4_XS: return XQ_Q8_K;
    default: return XQ_NONE;
  }
}

size_t cokv_xq_row_bytes(int kind, int k) {
  if (kind == XQ_Q8_0) return (size_t)(k / 32) * XQ0_BYTES;
  if (kind == XQ_Q8_K) return (size_t)(k / 256) * XQK_BYTES;
  return 0;
}

/* f32 -> nearest f16 (ties to even) -> f32, for normal and subnormal halves; larger values saturate to inf. */
static float f16_round(float f) {
  if (!(fabsf(f) < 65520.0f)) return f != f ? f : copysignf(INFINITY, f);
  if (fabsf(f) < 6.103515625e-05f) return nearbyintf(f * 16777216.0f) / 16777216.0f; /* subnormal: steps of 2^-24 */
  int e;
  float m = frexpf(f, &e); /* f = m·2^e, 0.5 ≤ |m| < 1: keep 11 significant bits */
  return ldexpf(nearbyintf(ldexpf(m, 11)), e - 11);
}

static void quantize_x_row_scalar(int kind, const float *x, int k, uint8_t *dst) {
  if (kind == XQ_Q8_0) {
    for (int b = 0; b < k / 32; b++, x += 32, dst += XQ0_BYTES) {
      float amax = 0;
      for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
      /* As ggml's q8_0: the scale is kept as f16 (so the dots multiply f16(dw)·f16(dx)), x scaled by 127/amax. */
      float d = f16_round(amax / 127.0f), id = amax != 0 ? 127.0f / amax : 0.0f;
      int8_t *q = (int8_t *)(dst + 8);
      int32_t s = 0;
      for (int i = 0; i < 32; i++) {
        q[i] = (int8_t)nearbyintf(x[i] * id);
        s += q[i];
      }
      memcpy(dst, &d, 4);
      memcpy(dst + 4, &s, 4);
    }
    return;
  }
  for (int b = 0; b < k / 256; b++, x += 256, dst += XQK_BYTES) {
    float amax = 0, max = 0;
    for (int i = 0; i < 256; i++) {
      float a = fabsf(x[i]);
      if (a > amax) amax = a, max = x[i];
    }
    int8_t *q = (int8_t *)(dst + XQK_QS);
    int16_t bs[16];
    float d = 0;
    if (amax == 0) {
      memset(q, 0, 256);
      memset(bs, 0, sizeof bs);
    } else {
      float iscale = -127.0f / max;
      for (int i = 0; i < 256; i++) {
        int v = (int)nearbyintf(iscale * x[i]);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
      }
      for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += q[g * 16 + i];
        bs[g] = (int16_t)s;
      }
      d = 1.0f / iscale;
    }
    memcpy(dst, &d, 4);
    memcpy(dst + 4, bs, sizeof bs);
  }
}

#if QD_X86
#define QAVX2 __attribute__((target("avx2,fma,f16c")))
/* 32 floats (4 vectors) rounded to nearest-even int8 (values already within ±127.5), in order. */
QAVX2 static inline __m256i round_pack32(__m256 a, __m256 b, __m256 c, __m256 d, __m256i *sum32) {
  const int rm = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(a, rm)), i1 = _mm256_cvtps_epi32(_mm256_round_ps(b, rm));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(c, rm)), i3 = _mm256_cvtps_epi32(_mm256_round_ps(d, rm));
  *sum32 = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
  __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
QAVX2 static inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
QAVX2 static inline int hsum8i(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
/* Bit-identical to quantize_x_row_scalar (same products, nearest-even rounding, same clamps). */
QAVX2 static void quantize_x_row_avx2(int kind, const float *x, int k, uint8_t *dst) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  if (kind == XQ_Q8_0) {
    for (int b = 0; b < k / 32; b++, x += 32, dst += XQ0_BYTES) {
      __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
      __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                               _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
      float amax = hmax8(m);
      float d = f16_round(amax / 127.0f), id = amax != 0 ? 127.0f / amax : 0.0f;
      __m256 iv = _mm256_set1_ps(id);
      __m256i s32;
      __m256i q = round_pack32(_mm256_mul_ps(v0, iv), _mm256_mul_ps(v1, iv), _mm256_mul_ps(v2, iv), _mm256_mul_ps(v3, iv), &s32);
      _mm256_storeu_si256((__m256i *)(dst + 8), q);
      int32_t s = hsum8i(s32);
      memcpy(dst, &d, 4);
      memcpy(dst + 4, &s, 4);
    }
    return;
  }
  for (int b = 0; b < k / 256; b++, x += 256, dst += XQK_BYTES) {
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 256; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), absmask));
    float amax = hmax8(m), max = 0;
    int8_t *q = (int8_t *)(dst + XQK_QS);
    int16_t bs[16];
    float d = 0;
    if (amax == 0) {
      memset(q, 0, 256);
      memset(bs, 0, sizeof bs);
    } else {
      for (int i = 0; i < 256; i++)
        if (fabsf(x[i]) == amax) {
          max = x[i];
          break;
        }
      float iscale = -127.0f / max;
      __m256 iv = _mm256_set1_ps(iscale);
      const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
      for (int g = 0; g < 8; g++) {
        const float *xg = x + 32 * g;
        __m256 a = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(xg), iv)));
        __m256 bb = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(xg + 8), iv)));
        __m256 c = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(xg + 16), iv)));
        __m256 dd = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(xg + 24), iv)));
        __m256i s32;
        __m256i qv = round_pack32(a, bb, c, dd, &s32);
        _mm256_storeu_si256((__m256i *)(q + 32 * g), qv);
      }
      for (int g = 0; g < 16; g++) {
        __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(q + 16 * g)));
        __m128i w = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(q + 16 * g + 8)));
        __m128i t = _mm_madd_epi16(_mm_add_epi16(v, w), _mm_set1_epi16(1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        bs[g] = (int16_t)_mm_cvtsi128_si32(t);
      }
      d = 1.0f / iscale;
    }
    memcpy(dst, &d, 4);
    memcpy(dst + 4, bs, sizeof bs);
  }
}
#endif

void cokv_quantize_x_row(int kind, const float *x, int k, uint8_t *dst) {
#if QD_X86
  quantize_x_row_avx2(kind, x, k, dst);
#else
  quantize_x_row_scalar(kind, x, k, dst);
#endif
}

#if QD_X86


/* Unsigned bytes (≤ 128 as u8) · signed bytes, summed in 8 int32 lanes. */
AVX2_TARGET static inline __m256i dot_u8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
/* int16 lanes: s0 in the low 128 bits, s1 in the high (the two 16-element groups of a 32-byte load). */
AVX2_TARGET static inline __m256i scale2(int s0, int s1) {
  return _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
}

/*
 * Each kernel is written once as an always-inline body over NX activation rows (rows at xq + r*xrb), so that one
 * unpacking of a weight block (nibbles, high bits, scales) serves NX rows: NX = 1 for GEMV, QX for GEMM tiles.
 * The wrappers below instantiate both with NX a constant, so the per-row loops unroll into registers.
 */
#define INL AVX2_TARGET static inline __attribute__((always_inline))
/*
 * Software prefetch of the weight stream DIST bytes ahead, one per 64-byte line of each block (DIST 0: none). Cold
 * GEMV (weights from DRAM, as in decode) measured with bench/qgemv-vs-ggml.sh: Q4_K/Q5_K gain 7–15% at 1–2 KiB
 * ahead; Q6_K is faster without (the hardware prefetcher keeps up with its denser stream).
 */
#ifndef QPF_DIST_Q45
#define QPF_DIST_Q45 2048
#endif
#ifndef QPF_DIST_Q6
#define QPF_DIST_Q6 0
#endif
#define QPF(p, bytes, DIST)                                                                              \
  do {                                                                                                   \
    if ((DIST) > 0)                                                                                      \
      for (int o_ = 0; o_ < (bytes); o_ += 64) _mm_prefetch((const char *)(p) + (DIST) + o_, _MM_HINT_T0); \
  } while (0)
#define XROW(r, b, bytes) (xq + (size_t)(r) * xrb + (size_t)(b) * (bytes))

/* ---- 32-element block types against q8_0 activations ---- */

/* Signed weight bytes (q8_0, q4_0, q5_0, iq4_nl): one block's 32 values -> Σ over NX rows, scaled by dw·dy. */
#define BODY_SIGNED32(BYTES, UNPACK)                                                                  \
  __m256 acc[COKV_QX];                                                                                     \
  for (int r = 0; r < NX; r++) acc[r] = _mm256_setzero_ps();                                          \
  for (int b = 0; b < k / 32; b++, w += (BYTES)) {                                                    \
    __m256i q = UNPACK;                                                                               \
    __m256i aq = _mm256_sign_epi8(q, q);                                                              \
    float dw = f16at(w);                                                                              \
    for (int r = 0; r < NX; r++) {                                                                    \
      const uint8_t *y = XROW(r, b, XQ0_BYTES);                                                       \
      __m256i p = dot_u8(aq, _mm256_sign_epi8(loadu(y + 8), q));                                      \
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * f32at(y)), acc[r]);         \
    }                                                                                                 \
  }                                                                                                   \
  for (int r = 0; r < NX; r++) out[r] = hsum_ps(acc[r]);

/* Unsigned weight bytes with a per-block offset m (q4_1, q5_1): x = q·d + m. */
#define BODY_OFFSET32(BYTES, UNPACK)                                                                  \
  __m256 acc[COKV_QX];                                                                                     \
  float accm[COKV_QX];                                                                                     \
  for (int r = 0; r < NX; r++) acc[r] = _mm256_setzero_ps(), accm[r] = 0;                             \
  for (int b = 0; b < k / 32; b++, w += (BYTES)) {                                                    \
    __m256i q = UNPACK;                                                                               \
    float dw = f16at(w), mw = f16at(w + 2);                                                           \
    for (int r = 0; r < NX; r++) {                                                                    \
      const uint8_t *y = XROW(r, b, XQ0_BYTES);                                                       \
      float dy = f32at(y);                                                                            \
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8(q, loadu(y + 8))), _mm256_set1_ps(dw * dy), acc[r]); \
      accm[r] += mw * dy * (float)i32at(y + 4);                                                       \
    }                                                                                                 \
  }                                                                                                   \
  for (int r = 0; r < NX; r++) out[r] = hsum_ps(acc[r]) + accm[r];


INL void body_q8_0(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX) {
  if (NX == 1) {
    /* one row (GEMV): two fmadd chains (even / odd blocks), so the loop is not bound by the fmadd latency */
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    const int nb = k / 32;
    int b = 0;
    for (; b + 2 <= nb; b += 2, w += 68) {
      const uint8_t *y = xq + (size_t)b * XQ0_BYTES;
      __m256i q0 = loadu(w + 2), q1 = loadu(w + 36);
      __m256i p0 = dot_u8(_mm256_sign_epi8(q0, q0), _mm256_sign_epi8(loadu(y + 8), q0));
      __m256i p1 = dot_u8(_mm256_sign_epi8(q1, q1), _mm256_sign_epi8(loadu(y + XQ0_BYTES + 8), q1));
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(f16at(w) * f32at(y)), a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(f16at(w + 34) * f32at(y + XQ0_BYTES)), a1);
    }
    if (b < nb) {
      const uint8_t *y = xq + (size_t)b * XQ0_BYTES;
      __m256i q0 = loadu(w + 2);
      __m256i p0 = dot_u8(_mm256_sign_epi8(q0, q0), _mm256_sign_epi8(loadu(y + 8), q0));
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(f16at(w) * f32at(y)), a0);
    }
    out[0] = hsum_ps(_mm256_add_ps(a0, a1));
    return;
  }
  BODY_SIGNED32(34, loadu(w + 2))
}
INL void body_q4_0(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX) {
  const __m256i eight = _mm256_set1_epi8(8);
  BODY_SIGNED32(18, _mm256_sub_epi8(nibbles32(w + 2), eight))
}
/* q − 16 as a signed byte: the nibble where the fifth bit is set, nibble | 0xf0 (= nibble − 16) where it is not. */
INL void body_q5_0(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX) {
  const __m256i f0 = _mm256_set1_epi8((char)0xf0);
  BODY_SIGNED32(22, _mm256_or_si256(nibbles32(w + 6), _mm256_andnot_si256(bits_to_bytes(u32at(w + 2)), f0)))
}
INL void body_iq4_nl(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX) {
  const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_iq4nl));
  BODY_SIGNED32(18, _mm256_shuffle_epi8(tbl, nibbles32(w + 2)))
}
INL void body_q4_1(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX) {
  BODY_OFFSET32(20, nibbles32(w + 4))
}
INL void body_q5_1(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX) {
  const __m256i b4 = _mm256_set1_epi8(0x10);
  BODY_OFFSET32(24, _mm256_or_si256(nibbles32(w + 8), _mm256_and_si256(bits_to_bytes(u32at(w + 4)), b4)))
}

/*
 * ---- GEMV: several weight rows of a 32-element type against one q8_0 activation row ----
 * The one-row bodies above spend most of a block on its scale (an f16 convert, a multiply, a broadcast) and on one
 * fmadd chain whose latency bounds the loop. Here 8 (Q4_0, Q5_0, IQ4_NL) or 4 (Q8_0, off: GEMV_Q8_0) rows at w, w + rb, ... share
 * each activation block: every row's block dot stays in int32 lanes, the rows' lanes are reduced together by 3 hadds,
 * then one convert and one fmadd with the rows' scales dw·dy take all the rows, on two chains (even / odd blocks).
 * The weights enter as unsigned bytes u = q + o (o = 8 for Q4_0, 16 for Q5_0, 128 for Q8_0 / IQ4_NL on VNNI)
 * against the signed activation bytes: Σ q·y = Σ u·y − o·s with s = Σ y (kept in the activation block), the
 * correction subtracted after the hadds — so each row's block integer is exactly Σ q·y, as in the one-row bodies;
 * only the float sum runs in another order. u·y pairs: maddubs + madd (u ≤ 31: no int16 saturation), or vpdpbusd
 * where AVX512-VNNI runs (inline asm, as madd_acc; u up to 255). Q8_0 / IQ4_NL on AVX2 keep the sign trick
 * (255·127·2 would saturate maddubs), with no correction.
 */
/* Q8_0 GEMV: 1 = the 4-row body below; 0 = the one-row body (two fmadd chains) per row. Measured (bench/qgemv-vs-ggml.sh,
 * one binary, 1 thread): 4 rows are 15–30% faster with the weights in cache, but 0–20% slower streaming them from
 * DRAM (as in decode), where Q8_0's 34 bytes per block already keep the one-row loop near one core's read rate. */
#ifndef GEMV_Q8_0
#define GEMV_Q8_0 0
#endif
#ifndef GEMV_PF_GROUPS
#define GEMV_PF_GROUPS 1 /* 0: no software prefetch; 2: two groups ahead (measured slower) */
#endif
#ifndef GEMV_PF_HINT
#define GEMV_PF_HINT _MM_HINT_T0 /* _MM_HINT_T1 measured no faster */
#endif
/*
 * The rows of a group are read as 4 or 8 interleaved streams, which the hardware prefetchers follow badly (measured
 * with bench/qgemv-vs-ggml.sh: cold GEMV at a third of the speed without this); so the next group's rows·rb bytes
 * are prefetched as one linear stream, rows·bytes per block.
 */
/* bytes ahead: GEMV_PF_GROUPS whole groups (at least 8 KiB ahead for short rows measured no faster) */
INL size_t gemv_pf_ahead(int rows, size_t rb) { return (size_t)GEMV_PF_GROUPS * (size_t)rows * rb; }
#define GEMV_PF(w, rows, ahead, o, bytes)                                                                            \
  do {                                                                                                              \
    if (GEMV_PF_GROUPS > 0)                                                                                         \
      for (int l_ = 0; l_ < (rows) * (bytes); l_ += 64)                                                             \
        _mm_prefetch((const char *)(w) + (ahead) + (rows) * (o) + l_, GEMV_PF_HINT);                                \
  } while (0)

/*
 * `vnni` in the bodies below: COKV_VNNI_NONE (AVX2 maddubs/madd), COKV_VNNI_EVEX (AVX512-VNNI: EVEX vpdpbusd /
 * vpdpwssd, plus masked vpaddb for Q5_0) or COKV_VNNI_VEX (AVX-VNNI: the `{vex}` forms, no mask registers). A
 * constant in each instantiation, so each keeps one form. The COKV_VEX_AS_EVEX test build emits the EVEX twin (the
 * same operation) for the `{vex}` ones, so that the AVX-VNNI bodies run on a CPU with AVX512-VNNI only.
 */
#if COKV_VEX_AS_EVEX
#define VEX_ ""
#else
#define VEX_ "%{vex%} " /* `{vex}` (braces escaped for asm dialects) */
#endif
INL __m256i dpbusd_acc(__m256i acc, __m256i u, __m256i s, const int vnni) {
  if (vnni == COKV_VNNI_VEX) __asm__(VEX_ "vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
  else __asm__("vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
  return acc;
}
/*
 * u + 16 in the bytes whose bit is set in `bits` (Q5_0's fifth bits): kmovd + one merge-masked vpaddb (AVX512BW+VL)
 * instead of the 6 AVX2 ops of bits_to_bytes, and, or. k1 is not declared clobbered because gcc accepts no mask
 * register there in an AVX2 function; that is safe: such a function (and those it is inlined into) never holds a
 * value in a mask register, and k0–k7 are call-clobbered in the SysV ABI. Used only where gemv_evex_usable() ran
 * this very sequence.
 */
INL __m256i add16_masked(__m256i u, uint32_t bits, __m256i sixteen) {
  __asm__("kmovd %1, %%k1\n\tvpaddb %2, %0, %0%{%%k1%}" : "+x"(u) : "r"(bits), "x"(sixteen));
  return u;
}

/* Q8_0, R = 2 or 4 rows: the rows' lanes reduced by hadds to [rows: lanes 0..3 | rows: lanes 4..7] (R = 4) or
 * [row 0 ×2, row 1 ×2 | the same for lanes 4..7] (R = 2). */
INL void gemv_q8_0_body(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out, const int vnni, const int R) {
  const __m256i ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8((char)0x80);
  const uint8_t *wr[4] = {w, w + rb, w + 2 * rb, w + 3 * rb};
  const size_t ahead = gemv_pf_ahead(R, rb);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int nb = k / 32;
  for (int b = 0; b < nb; b++) {
    const uint8_t *y = xq + (size_t)b * XQ0_BYTES;
    const size_t o = (size_t)b * 34;
    GEMV_PF(w, R, ahead, o, 34);
    __m256i yq = loadu(y + 8);
    __m256i p[4];
    for (int r = 0; r < R; r++) {
      __m256i qv = loadu(wr[r] + o + 2);
      p[r] = vnni ? dpbusd_acc(_mm256_setzero_si256(), _mm256_xor_si256(qv, bias), yq, vnni)
                  : _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qv, qv), _mm256_sign_epi8(yq, qv)), ones);
    }
    __m256i h = R == 4 ? _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3])) : _mm256_hadd_epi32(p[0], p[1]);
    /* 128·s over the row's lanes (2 of them for R = 4, 4 for R = 2) */
    if (vnni) h = _mm256_sub_epi32(h, _mm256_set1_epi32((R == 4 ? 64 : 32) * i32at(y + 4)));
    __m128i dh = R == 4 ? _mm_setr_epi16((short)u16at(wr[0] + o), (short)u16at(wr[1] + o), (short)u16at(wr[2] + o),
                                         (short)u16at(wr[3] + o), 0, 0, 0, 0)
                        : _mm_setr_epi16((short)u16at(wr[0] + o), (short)u16at(wr[0] + o), (short)u16at(wr[1] + o),
                                         (short)u16at(wr[1] + o), 0, 0, 0, 0);
    __m128 d4 = _mm_mul_ps(_mm_cvtph_ps(dh), _mm_set1_ps(f32at(y)));
    __m256 d8 = _mm256_set_m128(d4, d4);
    if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), d8, acc1);
    else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), d8, acc0);
  }
  __m256 a = _mm256_add_ps(acc0, acc1);
  __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  if (R == 4) {
    _mm_storeu_ps(out, a4);
  } else {
    __m128 t = _mm_add_ps(a4, _mm_movehdup_ps(a4)); /* lanes 0 and 2: rows 0 and 1 */
    out[0] = _mm_cvtss_f32(t);
    out[1] = _mm_cvtss_f32(_mm_movehl_ps(t, t));
  }
}

/*
 * Q4_0 / Q5_0 / IQ4_NL, 8 rows: rows r and r + 4 share one register (their 16 qs bytes in the low / high half); the
 * low nibbles (elements 0..15) and high nibbles (16..31) of that register meet the activation's elements 0..15 /
 * 16..31 broadcast to both halves. That saves a broadcast and a variable shift per row, and the 3 hadds of the 4
 * registers leave [rows 0..3 | rows 4..7] whole, so one fmadd takes 8 rows and the correction is o·s per lane.
 */
enum { G_Q4_0, G_Q5_0, G_IQ4_NL };
INL void gemv8_body(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out, const int type, const int vnni) {
  const int bytes = type == G_Q5_0 ? 22 : 18, qoff = type == G_Q5_0 ? 6 : 2;
  const int off = type == G_Q4_0 ? 8 : type == G_Q5_0 ? 16 : vnni ? 128 : 0;
  const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi8(0x10);
  const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_iq4nl));
  const __m256i tblu = _mm256_xor_si256(tbl, _mm256_set1_epi8((char)0x80)); /* the levels + 128, as u8 */
  const uint8_t *wr[8];
  for (int r = 0; r < 8; r++) wr[r] = w + (size_t)r * rb;
  const size_t ahead = gemv_pf_ahead(8, rb);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int nb = k / 32;
  for (int b = 0; b < nb; b++) {
    const uint8_t *y = xq + (size_t)b * XQ0_BYTES;
    const size_t o = (size_t)b * bytes;
    GEMV_PF(w, 8, ahead, o, bytes);
    __m256i ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y + 8)));
    __m256i yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y + 24)));
    __m256i p[4];
    for (int r = 0; r < 4; r++) {
      const uint8_t *qa = wr[r] + o, *qb = wr[r + 4] + o;
      __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(qa + qoff))),
                                          _mm_loadu_si128((const __m128i *)(qb + qoff)), 1);
      __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      if (type == G_Q5_0) { /* fifth bits 0..15 of both rows go with lo, 16..31 with hi */
        uint32_t ha = u32at(qa + 2), hb = u32at(qb + 2);
        uint32_t mlo = (ha & 0xffffu) | hb << 16, mhi = ha >> 16 | (hb & 0xffff0000u);
        if (vnni == COKV_VNNI_EVEX) {
          lo = add16_masked(lo, mlo, sixteen);
          hi = add16_masked(hi, mhi, sixteen);
        } else {
          lo = _mm256_or_si256(lo, _mm256_and_si256(bits_to_bytes(mlo), sixteen));
          hi = _mm256_or_si256(hi, _mm256_and_si256(bits_to_bytes(mhi), sixteen));
        }
      } else if (type == G_IQ4_NL) {
        if (vnni) {
          lo = _mm256_shuffle_epi8(tblu, lo);
          hi = _mm256_shuffle_epi8(tblu, hi);
        } else { /* signed levels: the sign trick, each half widened to int32 on its own (summed, they could saturate) */
          __m256i ql = _mm256_shuffle_epi8(tbl, lo), qh = _mm256_shuffle_epi8(tbl, hi);
          p[r] = _mm256_add_epi32(
              _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(ql, ql), _mm256_sign_epi8(ylo, ql)), ones),
              _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qh, qh), _mm256_sign_epi8(yhi, qh)), ones));
          continue;
        }
      }
      /* int16 sums of the two halves' pairs: ≤ 2·2·31·127 — no saturation */
      if (vnni) p[r] = dpbusd_acc(dpbusd_acc(_mm256_setzero_si256(), lo, ylo, vnni), hi, yhi, vnni);
      else p[r] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi)), ones);
    }
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    if (off) h = _mm256_sub_epi32(h, _mm256_set1_epi32(off * i32at(y + 4)));
    /* the 8 rows' f16 scales joined in general registers (integer ports, idle here) and moved over as 2 quadwords */
    uint64_t s03 = (uint64_t)u16at(wr[0] + o) | (uint64_t)u16at(wr[1] + o) << 16 | (uint64_t)u16at(wr[2] + o) << 32 |
                   (uint64_t)u16at(wr[3] + o) << 48;
    uint64_t s47 = (uint64_t)u16at(wr[4] + o) | (uint64_t)u16at(wr[5] + o) << 16 | (uint64_t)u16at(wr[6] + o) << 32 |
                   (uint64_t)u16at(wr[7] + o) << 48;
    __m128i dh = _mm_insert_epi64(_mm_cvtsi64_si128((long long)s03), (long long)s47, 1);
    __m256 d8 = _mm256_mul_ps(_mm256_cvtph_ps(dh), _mm256_set1_ps(f32at(y)));
    if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), d8, acc1);
    else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), d8, acc0);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(acc0, acc1));
}

#ifndef GEMV_Q8_ROWS
#define GEMV_Q8_ROWS 4 /* 2: slower than the one-row body in cache, no faster from DRAM */
#endif
AVX2_TARGET static void gemv4_q8_0(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out) {
  gemv_q8_0_body(w, rb, xq, k, out, 0, GEMV_Q8_ROWS);
}
AVX2_TARGET static void gemv4v_q8_0(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out) {
  gemv_q8_0_body(w, rb, xq, k, out, COKV_VNNI_EVEX, GEMV_Q8_ROWS);
}
AVX2_TARGET static void gemv4a_q8_0(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out) {
  gemv_q8_0_body(w, rb, xq, k, out, COKV_VNNI_VEX, GEMV_Q8_ROWS);
}
#define INSTANTIATE_GEMV8(T, G)                                                                                 \
  AVX2_TARGET static void gemv8_##T(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out) {        \
    gemv8_body(w, rb, xq, k, out, G, 0);                                                                        \
  }                                                                                                             \
  AVX2_TARGET static void gemv8v_##T(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out) {       \
    gemv8_body(w, rb, xq, k, out, G, COKV_VNNI_EVEX);                                                           \
  }                                                                                                             \
  AVX2_TARGET static void gemv8a_##T(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out) {       \
    gemv8_body(w, rb, xq, k, out, G, COKV_VNNI_VEX);                                                            \
  }
INSTANTIATE_GEMV8(q4_0, G_Q4_0)
INSTANTIATE_GEMV8(q5_0, G_Q5_0)
INSTANTIATE_GEMV8(iq4_nl, G_IQ4_NL)

/*
 * Do the EVEX instructions of the gemv*v_ bodies (vpdpbusd, kmovd, merge-masked vpaddb on ymm) run here? Checked
 * in a child, as cokv_vnni_usable checks vpdpbusd alone: a CPU or hypervisor can advertise extensions it does not
 * execute. (COKV_NO_VNNI=1 turns them off with the VNNI GEMM.)
 */
AVX2_TARGET static int evex_probe_op(void) {
  volatile uint32_t bits = 0x80000001u;
  __m256i u = add16_masked(_mm256_set1_epi8(1), bits, _mm256_set1_epi8(0x10));
  u = dpbusd_acc(_mm256_setzero_si256(), u, _mm256_set1_epi8(1), COKV_VNNI_EVEX);
  return _mm256_extract_epi32(u, 0) * 100 + _mm256_extract_epi32(u, 7); /* 17+1+1+1, 1+1+1+17 */
}
static int gemv_evex_usable(void) {
  static int cached = -1;
  if (cached >= 0) return cached;
  cached = 0;
  if (!cokv_vnni_usable()) return cached;
  pid_t pid = fork();
  if (pid < 0) return cached;
  if (pid == 0) _exit(evex_probe_op() == 2020 ? 0 : 1);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return cached;
  }
  cached = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return cached;
}

/* ---- K types against q8_K activations ---- */

/*
 * acc + Σ pairs a·b (int16 -> int32): madd + add on AVX2; one vpdpwssd where AVX512-VNNI runs (vnni: a constant, so
 * each instantiation keeps one form). Inline asm, so that the AVX2 bodies need no AVX-512 target; the integer result
 * is the same (vpdpwssd wraps like vpaddd). Two such chains per block (even / odd steps) keep its latency hidden.
 */
INL __m256i madd_acc(__m256i acc, __m256i a, __m256i b, const int vnni) {
  if (vnni == COKV_VNNI_VEX) {
    __asm__(VEX_ "vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
    return acc;
  }
  if (vnni) {
    __asm__("vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
    return acc;
  }
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}

/* Σ_g c[g]·bsums[g] of an activation block (c: 16 int16). */
INL int hsum_epi32x4(__m128i v) {
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
  return _mm_cvtsi128_si32(v);
}
INL int bsum_dot16(const uint8_t *y, __m256i c) {
  __m256i d = _mm256_madd_epi16(loadu(y + 4), c);
  return hsum_epi32x4(_mm_add_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1)));
}

/* Byte-shuffle controls that broadcast one int16 lane of a 128-bit half to every int16 lane: ctl_w16[j] picks word j
 * in both halves (Q4_K/Q5_K: the scale of sub-block j over its 32 elements); ctl_w16x2[t] picks word 2t in the low
 * half and 2t + 1 in the high half (Q6_K: two 16-element scales over one 32-byte chunk). */
#define W16(j) (char)(2 * (j)), (char)(2 * (j) + 1)
#define W16X8(j) W16(j), W16(j), W16(j), W16(j), W16(j), W16(j), W16(j), W16(j)
static const int8_t ctl_w16[8][32] __attribute__((aligned(32))) = {
    {W16X8(0), W16X8(0)}, {W16X8(1), W16X8(1)}, {W16X8(2), W16X8(2)}, {W16X8(3), W16X8(3)},
    {W16X8(4), W16X8(4)}, {W16X8(5), W16X8(5)}, {W16X8(6), W16X8(6)}, {W16X8(7), W16X8(7)}};
static const int8_t ctl_w16x2[4][32] __attribute__((aligned(32))) = {
    {W16X8(0), W16X8(1)}, {W16X8(2), W16X8(3)}, {W16X8(4), W16X8(5)}, {W16X8(6), W16X8(7)}};
#undef W16X8
#undef W16
INL __m256i bcast_w16(__m256i v, const int8_t *ctl) { return _mm256_shuffle_epi8(v, _mm256_load_si256((const __m256i *)ctl)); }

/* Q4_K/Q5_K 12 scale bytes (as scale_min_k4) -> the 8 six-bit scales as int16 in both 128-bit halves (*scales), and
 * the 8 mins each twice as int16 (lanes 2j, 2j+1 = min j, to meet the activation's 16-element sums). In vector
 * registers: the 32-bit words u0, u1, u2 give scales 0..3 = u0 & 0x3f.., scales 4..7 = (u2 & 0x0f..) | (u0 >> 2 &
 * 0x30..), mins 0..3 = u1 & 0x3f.., mins 4..7 = (u2 >> 4 & 0x0f..) | (u1 >> 2 & 0x30..). Reads 16 bytes (the 12 and
 * the first 4 of qs). (Broadcasting each scale by a load from a stack copy instead was measured slower.) */
INL __m256i k4_scales_mins(const uint8_t *q, __m256i *scales) {
  const int m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x30303030;
  __m128i v = _mm_loadu_si128((const __m128i *)q);
  __m128i lo = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)); /* u0, u2, u1, u2 */
  lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 0, 4)), _mm_setr_epi32(m6, m4, m6, m4));
  __m128i hi = _mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), 2); /* u0, u0, u1, u1 (>> 2) */
  __m128i b = _mm_or_si128(lo, _mm_and_si128(hi, _mm_setr_epi32(0, m2, 0, m2)));
  *scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(b));
  return _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(b, b));
}

/* Q4_K / Q5_K: x = d·sc·q − dmin·m per 32-element sub-block; the mins meet the activation's 16-element sums. */
INL void body_q45_k(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX, const int vnni, const int five) {
  const int bytes = five ? 176 : 144;
  __m256 acc[COKV_QX], accm[COKV_QX];
  for (int r = 0; r < NX; r++) acc[r] = _mm256_setzero_ps(), accm[r] = _mm256_setzero_ps();
  for (int b = 0; b < k / 256; b++, w += bytes) {
    QPF(w, bytes, QPF_DIST_Q45);
    __m256i scales, mins2 = k4_scales_mins(w + 4, &scales);
    const uint8_t *q = w + (five ? 48 : 16);
    __m256i qh = five ? loadu(w + 16) : _mm256_setzero_si256();
    __m256i sumi[COKV_QX], sumj[COKV_QX];
    for (int r = 0; r < NX; r++) sumi[r] = sumj[r] = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
      __m256i lo, hi;
      unpack_q45k_pair(loadu(q + 32 * i), &qh, five, &lo, &hi);
      __m256i s0 = bcast_w16(scales, ctl_w16[2 * i]), s1 = bcast_w16(scales, ctl_w16[2 * i + 1]);
      for (int r = 0; r < NX; r++) {
        const int8_t *y = (const int8_t *)(XROW(r, b, XQK_BYTES) + XQK_QS) + 64 * i;
        sumi[r] = madd_acc(sumi[r], _mm256_maddubs_epi16(lo, loadu(y)), s0, vnni);
        sumj[r] = madd_acc(sumj[r], _mm256_maddubs_epi16(hi, loadu(y + 32)), s1, vnni);
      }
    }
    for (int r = 0; r < NX; r++) sumi[r] = _mm256_add_epi32(sumi[r], sumj[r]);
    /* d and dmin (adjacent halves) widened at once */
    __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128((int)u32at(w)));
    for (int r = 0; r < NX; r++) {
      const uint8_t *y = XROW(r, b, XQK_BYTES);
      __m128 f = _mm_mul_ps(dd, _mm_set1_ps(f32at(y))); /* d·dy, dmin·dy: the same products as before */
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_broadcastss_ps(f), acc[r]);
      accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(loadu(y + 4), mins2)),
                                _mm256_broadcastss_ps(_mm_movehdup_ps(f)), accm[r]);
    }
  }
  for (int r = 0; r < NX; r++) out[r] = hsum_ps(_mm256_sub_ps(acc[r], accm[r]));
}

/* Q6_K: q (0..63) − 32 with an int8 scale per 16 elements; Σ sc·(q − 32)·y = Σ sc·q·y − 32·Σ sc·bsum. */
INL void body_q6_k(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX, const int vnni) {
  __m256 acc[COKV_QX];
  for (int r = 0; r < NX; r++) acc[r] = _mm256_setzero_ps();
  for (int b = 0; b < k / 256; b++, w += 210) {
    QPF(w, 210, QPF_DIST_Q6);
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
    __m256i sumi[COKV_QX], sumj[COKV_QX];
    for (int r = 0; r < NX; r++) sumi[r] = sumj[r] = _mm256_setzero_si256();
    for (int n = 0; n < 2; n++) {
      /* the 8 scales of this half (int16) in both 128-bit halves */
      __m256i sh = n ? _mm256_permute4x64_epi64(sc16, 0xee) : _mm256_permute4x64_epi64(sc16, 0x44);
      __m256i qs[4];
      unpack_q6k_half(w + 64 * n, w + 128 + 32 * n, qs);
      for (int t = 0; t < 4; t++) {
        __m256i sv = bcast_w16(sh, ctl_w16x2[t]);
        for (int r = 0; r < NX; r++) {
          const int8_t *y = (const int8_t *)(XROW(r, b, XQK_BYTES) + XQK_QS) + 128 * n + 32 * t;
          __m256i p = _mm256_maddubs_epi16(qs[t], loadu(y));
          if (t & 1) sumj[r] = madd_acc(sumj[r], p, sv, vnni);
          else sumi[r] = madd_acc(sumi[r], p, sv, vnni);
        }
      }
    }
    for (int r = 0; r < NX; r++) sumi[r] = _mm256_add_epi32(sumi[r], sumj[r]);
    float dw = f16at(w + 208);
    for (int r = 0; r < NX; r++) {
      const uint8_t *y = XROW(r, b, XQK_BYTES);
      /* the −32 offset lane by lane (8 partial sums of 32·sc·bsum), no horizontal sum in the block loop */
      __m256i si = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(_mm256_madd_epi16(loadu(y + 4), sc16), 5));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(dw * f32at(y)), acc[r]);
    }
  }
  for (int r = 0; r < NX; r++) out[r] = hsum_ps(acc[r]);
}

/*
 * Q3_K / Q2_K element order: 32-byte chunk n of qs, bit pair j, byte l -> element 128n + 32j + l, scale 8n + 2j + l/16.
 * Q3_K: 2-bit q plus a high bit (hmask bit 4n + j; clear = −4): Σ sc·(q3 − 4)·y with q3 = q | hbit << 2 in 0..7.
 * Q2_K: x = d·(sc & 15)·q − dmin·(sc >> 4).
 */
INL void body_q23_k(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX, const int vnni, const int three) {
  const int bytes = three ? 110 : 84;
  __m256 acc[COKV_QX];
  float accm[COKV_QX];
  for (int r = 0; r < NX; r++) acc[r] = _mm256_setzero_ps(), accm[r] = 0;
  for (int b = 0; b < k / 256; b++, w += bytes) {
    int s[16];
    int16_t c[16];
    if (three) {
      const uint8_t *sc = w + 96;
      for (int i = 0; i < 16; i++) {
        int low = i < 8 ? sc[i] & 0xf : sc[i - 8] >> 4;
        int high = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
        s[i] = (low | high << 4) - 32;
        c[i] = (int16_t)(4 * s[i]);
      }
    } else {
      for (int i = 0; i < 16; i++) s[i] = w[i] & 0xf, c[i] = (int16_t)(w[i] >> 4);
    }
    const uint8_t *qbase = w + (three ? 32 : 16);
    __m256i hm = three ? loadu(w) : _mm256_setzero_si256();
    __m256i sumi[COKV_QX], sumj[COKV_QX];
    for (int r = 0; r < NX; r++) sumi[r] = sumj[r] = _mm256_setzero_si256();
    for (int n = 0; n < 2; n++) {
      __m256i qv = loadu(qbase + 32 * n);
      for (int j = 0; j < 4; j++) {
        __m256i q = unpack_q23k_run(qv, j, three ? &hm : NULL);
        __m256i sv = scale2(s[8 * n + 2 * j], s[8 * n + 2 * j + 1]);
        for (int r = 0; r < NX; r++) {
          const int8_t *y = (const int8_t *)(XROW(r, b, XQK_BYTES) + XQK_QS) + 128 * n + 32 * j;
          __m256i p = _mm256_maddubs_epi16(q, loadu(y));
          if (j & 1) sumj[r] = madd_acc(sumj[r], p, sv, vnni);
          else sumi[r] = madd_acc(sumi[r], p, sv, vnni);
        }
      }
    }
    for (int r = 0; r < NX; r++) sumi[r] = _mm256_add_epi32(sumi[r], sumj[r]);
    __m256i cv = loadu(c);
    float dw = f16at(w + (three ? 108 : 80)), dmin = three ? 0.0f : f16at(w + 82);
    for (int r = 0; r < NX; r++) {
      const uint8_t *y = XROW(r, b, XQK_BYTES);
      float dy = f32at(y);
      int corr = bsum_dot16(y, cv);
      __m256i si = three ? _mm256_sub_epi32(sumi[r], _mm256_setr_epi32(corr, 0, 0, 0, 0, 0, 0, 0)) : sumi[r];
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(dw * dy), acc[r]);
      if (!three) accm[r] += dmin * dy * (float)corr;
    }
  }
  for (int r = 0; r < NX; r++) out[r] = hsum_ps(acc[r]) - accm[r];
}

/* IQ4_XS: 8 sub-blocks of 32 non-linear 4-bit levels, 6-bit scale each (ls − 32). */
INL void body_iq4_xs(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out, const int NX, const int vnni) {
  const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_iq4nl));
  __m256 acc[COKV_QX];
  for (int r = 0; r < NX; r++) acc[r] = _mm256_setzero_ps();
  for (int b = 0; b < k / 256; b++, w += 136) {
    unsigned sh = w[2] | w[3] << 8;
    __m256i sumi[COKV_QX], sumj[COKV_QX];
    for (int r = 0; r < NX; r++) sumi[r] = sumj[r] = _mm256_setzero_si256();
    for (int ib = 0; ib < 8; ib++) {
      int ls = ((w[4 + ib / 2] >> (4 * (ib & 1))) & 0xf) | ((sh >> (2 * ib)) & 3) << 4;
      __m256i q = _mm256_shuffle_epi8(tbl, nibbles32(w + 8 + 16 * ib)), aq = _mm256_sign_epi8(q, q);
      __m256i sv = _mm256_set1_epi16((short)(ls - 32));
      for (int r = 0; r < NX; r++) {
        const int8_t *y = (const int8_t *)(XROW(r, b, XQK_BYTES) + XQK_QS) + 32 * ib;
        __m256i p = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(loadu(y), q));
        if (ib & 1) sumj[r] = madd_acc(sumj[r], p, sv, vnni);
        else sumi[r] = madd_acc(sumi[r], p, sv, vnni);
      }
    }
    for (int r = 0; r < NX; r++) sumi[r] = _mm256_add_epi32(sumi[r], sumj[r]);
    float dw = f16at(w);
    for (int r = 0; r < NX; r++)
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(dw * f32at(XROW(r, b, XQK_BYTES))), acc[r]);
  }
  for (int r = 0; r < NX; r++) out[r] = hsum_ps(acc[r]);
}

/* dot1_T / dotx_T over body_B(…, NX, extra...): the K-type pairs share one body with a flag (five / three bits); the
 * K types also come as dot1v_T / dotxv_T, their madd + add steps as vpdpwssd (AVX512-VNNI, chosen at run time). */
#define INSTANTIATE_AS(T, B, ...)                                                                        \
  AVX2_TARGET static void dot1_##T(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out) { \
    body_##B(w, xq, xrb, k, out, 1 __VA_ARGS__);                                                         \
  }                                                                                                      \
  AVX2_TARGET static void dotx_##T(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out) { \
    body_##B(w, xq, xrb, k, out, COKV_QX __VA_ARGS__);                                                   \
  }
#define INSTANTIATE(T) INSTANTIATE_AS(T, T)
#define INSTANTIATE_K(T, B, ...)                                                                          \
  INSTANTIATE_AS(T, B, , 0 __VA_ARGS__)                                                                   \
  AVX2_TARGET static void dot1v_##T(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out) { \
    body_##B(w, xq, xrb, k, out, 1, COKV_VNNI_EVEX __VA_ARGS__);                                          \
  }                                                                                                       \
  AVX2_TARGET static void dotxv_##T(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out) { \
    body_##B(w, xq, xrb, k, out, COKV_QX, COKV_VNNI_EVEX __VA_ARGS__);                                    \
  }                                                                                                       \
  AVX2_TARGET static void dot1a_##T(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out) { \
    body_##B(w, xq, xrb, k, out, 1, COKV_VNNI_VEX __VA_ARGS__);                                           \
  }                                                                                                       \
  AVX2_TARGET static void dotxa_##T(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out) { \
    body_##B(w, xq, xrb, k, out, COKV_QX, COKV_VNNI_VEX __VA_ARGS__);                                     \
  }
INSTANTIATE(q8_0)
INSTANTIATE(q4_0)
INSTANTIATE(q4_1)
INSTANTIATE(q5_0)
INSTANTIATE(q5_1)
INSTANTIATE(iq4_nl)
INSTANTIATE_K(q2_k, q23_k, , 0)
INSTANTIATE_K(q3_k, q23_k, , 1)
INSTANTIATE_K(q4_k, q45_k, , 0)
INSTANTIATE_K(q5_k, q45_k, , 1)
INSTANTIATE_K(q6_k, q6_k)
INSTANTIATE_K(iq4_xs, iq4_xs)

cokv_qdot_fns cokv_qdot_for(int dt) {
  cokv_qdot_fns f = {NULL, NULL, NULL, 0};
  /* AVX512-VNNI bodies (their GEMV also needs the masked vpaddb: gemv_evex_usable), AVX-VNNI ones, or AVX2 */
  const int v = cokv_vnni_kind(), ev = v == COKV_VNNI_EVEX, vex = v == COKV_VNNI_VEX;
  switch (dt) {
#define CASE(D, T) case D: f.one = dot1_##T, f.many = dotx_##T; break;
#define CASE_G(D, T, R)                                                            \
  case D:                                                                          \
    f.one = dot1_##T, f.many = dotx_##T, f.gemv_rows = R;                          \
    f.gemv = ev && gemv_evex_usable() ? gemv##R##v_##T : vex ? gemv##R##a_##T : gemv##R##_##T; \
    break;
#define CASE_K(D, T)                                                                 \
  case D:                                                                            \
    f.one = ev ? dot1v_##T : vex ? dot1a_##T : dot1_##T;                             \
    f.many = ev ? dotxv_##T : vex ? dotxa_##T : dotx_##T;                            \
    break;
#if GEMV_Q8_0
    case DT_Q8_0:
      f.one = dot1_q8_0, f.many = dotx_q8_0, f.gemv_rows = GEMV_Q8_ROWS;
      f.gemv = ev && gemv_evex_usable() ? gemv4v_q8_0 : vex ? gemv4a_q8_0 : gemv4_q8_0;
      break;
#else
    CASE(DT_Q8_0, q8_0)
#endif
    CASE_G(DT_Q4_0, q4_0, 8)
    CASE(DT_Q4_1, q4_1)
    CASE_G(DT_Q5_0, q5_0, 8)
    CASE(DT_Q5_1, q5_1)
    CASE_G(DT_IQ4_NL, iq4_nl, 8)
    CASE_K(DT_Q2_K, q2_k)
    CASE_K(DT_Q3_K, q3_k)
    CASE_K(DT_Q4_K, q4_k)
    CASE_K(DT_Q5_K, q5_k)
    CASE_K(DT_Q6_K, q6_k)
    CASE_K(DT_IQ4_XS, iq4_xs)
#undef CASE_K
#undef CASE_G
#undef CASE
  }
  return f;
}
#else
cokv_qdot_fns cokv_qdot_for(int dt) {
  (void)dt;
  cokv_qdot_fns f = {NULL, NULL, NULL, 0};
  return f;
}
#endif
