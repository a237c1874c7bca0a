/* AVX2 helpers shared by the integer kernels (qdot.c, qgemm.c): block field reads and bit unpacking. */
#ifndef COKV_SIMD_H
#define COKV_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

static const int8_t k_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

AVX2_TARGET static inline float f16at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | (p[1] << 8))); }
static inline float f32at(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}
static inline int32_t i32at(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

AVX2_TARGET static inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
AVX2_TARGET static inline __m256i loadu(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15) then high nibbles (16..31). */
AVX2_TARGET static inline __m256i nibbles32(const uint8_t *p) {
  __m128i t = _mm_loadu_si128((const __m128i *)p);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}
/* Byte j = 0xff where bit j of x is set. */
AVX2_TARGET static inline __m256i bits_to_bytes(uint32_t x) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                        3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}
static inline uint16_t u16at(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}
static inline uint32_t u32at(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Q4_K/Q5_K 12 scale bytes -> 8 six-bit scales (bytes 0..7 of out) and 8 mins (bytes 8..15), as scale_min_k4. */
static inline void unpack_k4_scales(const uint8_t *q, uint8_t *out) {
  uint32_t u[4];
  memcpy(u, q, 12);
  const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
  u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4); /* mins 4..7 */
  uint32_t mins03 = u[1] & m6;
  u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4); /* scales 4..7 */
  u[2] = mins03;
  u[0] &= m6; /* scales 0..3 */
  memcpy(out, u, 16);
}

/* Q4_K/Q5_K: the 64 values of sub-block pair i from its 32 bytes of nibbles (lo: sub-block 2i, hi: 2i+1); for Q5_K
 * the fifth bits come from *qh (bits 0 and 1 of each byte), which is shifted on to the next pair's bits. */
AVX2_TARGET static inline void unpack_q45k_pair(__m256i qv, __m256i *qh, int five, __m256i *lo, __m256i *hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  *lo = _mm256_and_si256(qv, m4);
  *hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
  if (five) {
    *lo = _mm256_or_si256(*lo, _mm256_slli_epi16(_mm256_and_si256(*qh, one), 4));
    *hi = _mm256_or_si256(*hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(*qh, 1), one), 4));
    *qh = _mm256_srli_epi16(*qh, 2);
  }
}

/* Q6_K: the 128 values (0..63, before − 32) of one half of a block from ql (64 bytes) and qh (32 bytes), in order:
 * chunk c takes low nibbles (c < 2) or high nibbles of ql, and bits 2c, 2c+1 of qh moved to bits 4, 5. */
AVX2_TARGET static inline void unpack_q6k_half(const uint8_t *ql, const uint8_t *qhp, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256i l0 = loadu(ql), l1 = loadu(ql + 32), h = loadu(qhp);
  __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x03)), 4);
  __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x0c)), 2);
  __m256i h2 = _mm256_and_si256(h, _mm256_set1_epi8(0x30));
  __m256i h3 = _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8((char)0xc0)), 2);
  q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), h0);
  q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), h1);
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2);
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3);
}

/* Q2_K / Q3_K: the 32 values of bit pair j of a 32-byte qs chunk; for Q3_K (hm != NULL) plus the high bit from bit 0
 * of each byte of *hm (clear = −4 later), which is shifted on to the next run's bit. */
AVX2_TARGET static inline __m256i unpack_q23k_run(__m256i qv, int j, __m256i *hm) {
  __m256i q = _mm256_and_si256(_mm256_srl_epi16(qv, _mm_cvtsi32_si128(2 * j)), _mm256_set1_epi8(3));
  if (hm) {
    q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_and_si256(*hm, _mm256_set1_epi8(1)), 2));
    *hm = _mm256_srli_epi16(*hm, 1);
  }
  return q;
}

#endif
#endif
