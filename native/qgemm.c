/* VNNI integer GEMM for block-quantized weights: see qgemm.h. */
#include "qgemm.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels.h"
#include "qdot.h"
#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define QG_X86 1
#else
#define QG_X86 0
#endif

#define PANEL 16 /* weight rows per panel: two ymm of 8 int32 lanes */
#define MX 6     /* activation rows per micro-kernel */
#define PANELS_MAX 4

int cokv_qgemm_supports(int dt) {
  switch (dt) {
    case DT_Q8_0: case DT_Q4_0: case DT_Q4_1: case DT_Q5_0: case DT_Q5_1: case DT_IQ4_NL: case DT_IQ4_XS:
    case DT_Q2_K: case DT_Q3_K: case DT_Q4_K: case DT_Q5_K: case DT_Q6_K: return 1;
    default: return 0;
  }
}

static int block_of(int dt) { return dt == DT_Q2_K || dt == DT_Q3_K || dt == DT_Q6_K ? 16 : 32; }

/*
 * ---- one weight row -> unsigned bytes u[k] and per-block a, b with w = a·u − b (element order of ggml) ----
 * The bytes come from the same AVX2 bit unpacking as the integer dots (simd.h); the scales are a few per block.
 */
#if QG_X86
AVX2_TARGET static void unpack_row(int dt, const uint8_t *row, int K, uint8_t *u, float *a, float *b) {
  const __m256i x80 = _mm256_set1_epi8((char)0x80), b4 = _mm256_set1_epi8(0x10);
  const __m256i tbl = _mm256_xor_si256(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_iq4nl)), x80);
#define PUT(off, v) _mm256_storeu_si256((__m256i *)(u + (off)), (v))
  switch (dt) {
    case DT_Q8_0:
      for (int blk = 0; blk < K / 32; blk++, u += 32) {
        const uint8_t *p = row + (size_t)blk * 34;
        PUT(0, _mm256_xor_si256(loadu(p + 2), x80)); /* q + 128 */
        a[blk] = f16at(p), b[blk] = 128 * a[blk];
      }
      return;
    case DT_Q4_0: case DT_Q4_1:
      for (int blk = 0; blk < K / 32; blk++, u += 32) {
        const uint8_t *p = row + (size_t)blk * (dt == DT_Q4_0 ? 18 : 20);
        PUT(0, nibbles32(p + (dt == DT_Q4_0 ? 2 : 4)));
        a[blk] = f16at(p), b[blk] = dt == DT_Q4_0 ? 8 * a[blk] : -f16at(p + 2);
      }
      return;
    case DT_Q5_0: case DT_Q5_1: {
      const int o = dt == DT_Q5_0 ? 2 : 4;
      for (int blk = 0; blk < K / 32; blk++, u += 32) {
        const uint8_t *p = row + (size_t)blk * (dt == DT_Q5_0 ? 22 : 24);
        PUT(0, _mm256_or_si256(nibbles32(p + o + 4), _mm256_and_si256(bits_to_bytes(u32at(p + o)), b4)));
        a[blk] = f16at(p), b[blk] = dt == DT_Q5_0 ? 16 * a[blk] : -f16at(p + 2);
      }
      return;
    }
    case DT_IQ4_NL:
      for (int blk = 0; blk < K / 32; blk++, u += 32) {
        const uint8_t *p = row + (size_t)blk * 18;
        PUT(0, _mm256_shuffle_epi8(tbl, nibbles32(p + 2))); /* level + 128 */
        a[blk] = f16at(p), b[blk] = 128 * a[blk];
      }
      return;
    case DT_IQ4_XS:
      for (int sb = 0; sb < K / 256; sb++) {
        const uint8_t *p = row + (size_t)sb * 136;
        float d = f16at(p);
        unsigned sh = p[2] | p[3] << 8;
        for (int ib = 0; ib < 8; ib++, u += 32) {
          int ls = ((p[4 + ib / 2] >> (4 * (ib & 1))) & 0xf) | ((sh >> (2 * ib)) & 3) << 4;
          PUT(0, _mm256_shuffle_epi8(tbl, nibbles32(p + 8 + ib * 16)));
          a[sb * 8 + ib] = d * (ls - 32), b[sb * 8 + ib] = 128 * a[sb * 8 + ib];
        }
      }
      return;
    case DT_Q4_K: case DT_Q5_K: {
      const int five = dt == DT_Q5_K, bytes = five ? 176 : 144;
      for (int sb = 0; sb < K / 256; sb++) {
        const uint8_t *p = row + (size_t)sb * bytes, *q = p + (five ? 48 : 16);
        float d = f16at(p), dmin = f16at(p + 2);
        uint8_t sm[16];
        unpack_k4_scales(p + 4, sm);
        for (int j = 0; j < 8; j++) a[sb * 8 + j] = d * sm[j], b[sb * 8 + j] = dmin * sm[8 + j];
        __m256i qh = five ? loadu(p + 16) : _mm256_setzero_si256();
        for (int i = 0; i < 4; i++, u += 64) {
          __m256i lo, hi;
          unpack_q45k_pair(loadu(q + 32 * i), &qh, five, &lo, &hi);
          PUT(0, lo);
          PUT(32, hi);
        }
      }
      return;
    }
    case DT_Q6_K:
      for (int sb = 0; sb < K / 256; sb++) {
        const uint8_t *p = row + (size_t)sb * 210;
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = f16at(p + 208);
        for (int g = 0; g < 16; g++) a[sb * 16 + g] = d * sc[g], b[sb * 16 + g] = 32 * a[sb * 16 + g];
        for (int n = 0; n < 2; n++, u += 128) {
          __m256i q[4];
          unpack_q6k_half(p + 64 * n, p + 128 + 32 * n, q);
          for (int t = 0; t < 4; t++) PUT(32 * t, q[t]);
        }
      }
      return;
    case DT_Q3_K: case DT_Q2_K: {
      const int three = dt == DT_Q3_K, bytes = three ? 110 : 84;
      for (int sb = 0; sb < K / 256; sb++) {
        const uint8_t *p = row + (size_t)sb * bytes, *qs = p + (three ? 32 : 16);
        float d = f16at(p + (three ? 108 : 80));
        if (three) {
          const uint8_t *sc = p + 96;
          for (int i = 0; i < 16; i++) {
            int low = i < 8 ? sc[i] & 0xf : sc[i - 8] >> 4, high = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
            a[sb * 16 + i] = d * ((low | high << 4) - 32), b[sb * 16 + i] = 4 * a[sb * 16 + i];
          }
        } else {
          float dmin = f16at(p + 82);
          for (int i = 0; i < 16; i++) a[sb * 16 + i] = d * (p[i] & 0xf), b[sb * 16 + i] = dmin * (p[i] >> 4);
        }
        /* element 128n + 32j + l: bits 2j..2j+1 of qs[32n + l]; Q3_K's high bit is bit 4n + j of hmask[l] */
        __m256i hm = three ? loadu(p) : _mm256_setzero_si256();
        for (int n = 0; n < 2; n++) {
          __m256i qv = loadu(qs + 32 * n);
          for (int j = 0; j < 4; j++, u += 32) {
            PUT(0, unpack_q23k_run(qv, j, three ? &hm : NULL));
          }
        }
      }
      return;
    }
  }
#undef PUT
}
#endif

/* ---- activations ---- */

size_t cokv_qgemm_x_bytes(int dt, int M, int K) {
  int mpad = (M + MX - 1) / MX * MX, nblk = K / block_of(dt);
  size_t row = cokv_xq_row_bytes(cokv_xq_kind(dt), K);
  return (size_t)mpad * K + 2 * (size_t)mpad * nblk * sizeof(float) + row + 64;
}

void cokv_qgemm_prepare_x(cokv_qgemm_t *g, const float *x, uint8_t *buf) {
  const int K = g->K, B = block_of(g->dt), nblk = K / B, kind = cokv_xq_kind(g->dt);
  g->block = B;
  g->mpad = (g->M + MX - 1) / MX * MX;
  float *xs = (float *)buf, *xb = xs + (size_t)g->mpad * nblk;
  int8_t *xq = (int8_t *)(xb + (size_t)g->mpad * nblk);
  uint8_t *row = (uint8_t *)(xq + (size_t)g->mpad * K);
  for (int m = 0; m < g->mpad; m++) {
    int8_t *q = xq + (size_t)m * K;
    float *s = xs + (size_t)m * nblk, *sb = xb + (size_t)m * nblk;
    if (m >= g->M) {
      memset(q, 0, (size_t)K);
      for (int i = 0; i < nblk; i++) s[i] = 0, sb[i] = 0;
      continue;
    }
    /* the integer dots' own quantization (qdot.c), then copied out: GEMM and GEMV see identical activations */
    cokv_quantize_x_row(kind, x + (size_t)m * K, K, row);
    const int gsz = kind == XQ_Q8_0 ? 32 : 256, gbytes = kind == XQ_Q8_0 ? 40 : 292, qoff = kind == XQ_Q8_0 ? 8 : 36;
    for (int gi = 0; gi < K / gsz; gi++) {
      const uint8_t *blk = row + (size_t)gi * gbytes;
      float d;
      memcpy(&d, blk, 4);
      memcpy(q + (size_t)gi * gsz, blk + qoff, (size_t)gsz);
      for (int i = 0; i < gsz / B; i++) {
        int sum = 0;
        for (int e = 0; e < B; e++) sum += q[(size_t)gi * gsz + i * B + e];
        s[gi * (gsz / B) + i] = d;
        sb[gi * (gsz / B) + i] = d * (float)sum;
      }
    }
  }
  g->xs = xs, g->xb = xb, g->xq = xq;
}

/* ---- panels ---- */

size_t cokv_qgemm_scratch_bytes(const cokv_qgemm_t *g) {
  const int K = g->K, nblk = K / block_of(g->dt);
  /* row temps (u, a, b), then PANELS_MAX packed panels: bytes [K/4][16][4], a and b [nblk][16] */
  return (size_t)K + 2 * (size_t)nblk * 4 + (size_t)PANELS_MAX * ((size_t)PANEL * K + 2 * (size_t)nblk * PANEL * 4) + 128;
}

#if QG_X86
#define VNNI_TARGET __attribute__((target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")))
#define AVXVNNI_TARGET __attribute__((target("avx2,fma,avxvnni")))

/* Pack rows [n0, n0 + 16) (rows ≥ N: zero) into one panel. */
static void pack_panel(const cokv_qgemm_t *g, int n0, uint8_t *pu, float *pa, float *pb, uint8_t *tu, float *ta, float *tb) {
  const int K = g->K, nblk = K / g->block;
  for (int r = 0; r < PANEL; r++) {
    int n = n0 + r;
    if (n < g->N) {
      unpack_row(g->dt, g->w + (size_t)n * g->rb, K, tu, ta, tb);
    } else {
      memset(tu, 0, (size_t)K);
      for (int i = 0; i < nblk; i++) ta[i] = 0, tb[i] = 0;
    }
    for (int k4 = 0; k4 < K / 4; k4++) memcpy(pu + (size_t)k4 * 64 + r * 4, tu + (size_t)k4 * 4, 4);
    for (int i = 0; i < nblk; i++) pa[(size_t)i * PANEL + r] = ta[i], pb[(size_t)i * PANEL + r] = tb[i];
  }
}

static inline int32_t ld4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

#define QG_CAT_(a, b) a##b
#define QG_CAT(a, b) QG_CAT_(a, b)
/* AVX512-VNNI: EVEX vpdpbusd on ymm */
#define QG_MICRO micro_evex
#define QG_TARGET VNNI_TARGET
#define QG_DPBUSD(c, w, x) _mm256_dpbusd_epi32(c, w, x)
#include "qgemm-micro.h"
#undef QG_MICRO
#undef QG_TARGET
#undef QG_DPBUSD
/* AVX-VNNI (no AVX-512: Alder Lake and later client cores, Zen 5 ...): the same kernel, VEX vpdpbusd. In the
 * COKV_VEX_AS_EVEX test build it runs with the EVEX twin (same operation), since this CPU family may lack AVX-VNNI. */
#define QG_MICRO micro_vex
#if COKV_VEX_AS_EVEX
#define QG_TARGET VNNI_TARGET
#define QG_DPBUSD(c, w, x) _mm256_dpbusd_epi32(c, w, x)
#else
#define QG_TARGET AVXVNNI_TARGET
#define QG_DPBUSD(c, w, x) _mm256_dpbusd_avx_epi32(c, w, x)
#endif
#include "qgemm-micro.h"
#undef QG_MICRO
#undef QG_TARGET
#undef QG_DPBUSD

void cokv_qgemm_panel(const cokv_qgemm_t *g, int n0, float *out, uint8_t *scratch) {
  const int K = g->K, nblk = K / g->block;
  uint8_t *base = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
  uint8_t *tu = base;
  float *ta = (float *)(tu + K), *tb = ta + nblk;
  uint8_t *p0 = (uint8_t *)(((uintptr_t)(tb + nblk) + 63) & ~(uintptr_t)63);
  const size_t pstride = ((size_t)PANEL * K + 2 * (size_t)nblk * PANEL * 4 + 63) & ~(size_t)63;
  const int vex = cokv_vnni_kind() == COKV_VNNI_VEX;
  int np = 0;
  for (; np < PANELS_MAX && n0 + np * PANEL < g->N; np++) {
    uint8_t *pu = p0 + np * pstride;
    pack_panel(g, n0 + np * PANEL, pu, (float *)(pu + (size_t)PANEL * K), (float *)(pu + (size_t)PANEL * K) + (size_t)nblk * PANEL, tu, ta, tb);
  }
  /* every activation row group against the panels, so a group's rows stay in L1 across panels */
  for (int m0 = 0; m0 < g->M; m0 += MX) {
    for (int p = 0; p < np; p++) {
      uint8_t *pu = p0 + p * pstride;
      const float *pa = (const float *)(pu + (size_t)PANEL * K);
      if (vex) (g->block == 16 ? micro_vex16 : micro_vex32)(g, m0, n0 + p * PANEL, pu, pa, pa + (size_t)nblk * PANEL, out);
      else (g->block == 16 ? micro_evex16 : micro_evex32)(g, m0, n0 + p * PANEL, pu, pa, pa + (size_t)nblk * PANEL, out);
    }
  }
}

VNNI_TARGET static int vnni_probe_op(void) {
  volatile int one = 1;
  __m256i a = _mm256_set1_epi8((char)(2 * one)), b = _mm256_set1_epi8((char)(-3 * one));
  __m256i r = _mm256_dpbusd_epi32(_mm256_set1_epi32(7), a, b); /* 7 + 4·(2·−3) = −17 */
  return _mm256_extract_epi32(r, 3);
}

/* Run `op` in a child process: 1 when it exits with `want` (a CPU or hypervisor can advertise extensions it does not
 * execute; the child dies of SIGILL then, not this process). */
static int runs_in_child(int (*op)(void), int want) {
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) _exit(op() == want ? 0 : 1);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 0;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* COKV_NO_VNNI=1: neither VNNI form (the AVX2 kernels and the F32 GEMM). */
static int vnni_turned_off(void) {
  const char *off = getenv("COKV_NO_VNNI");
  return off && *off && *off != '0';
}

int cokv_vnni_usable(void) {
  static int cached = -1;
  if (cached >= 0) return cached;
  cached = 0;
  if (vnni_turned_off()) return cached;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512bw")) return cached;
  cached = runs_in_child(vnni_probe_op, -17);
  return cached;
}

#if !COKV_VEX_AS_EVEX
/* the two VEX instructions the AVX-VNNI kernels use: vpdpbusd (here and in qdot.c) and vpdpwssd (qdot.c's K types) */
AVXVNNI_TARGET static int avxvnni_probe_op(void) {
  volatile int one = 1;
  __m256i a = _mm256_set1_epi8((char)(2 * one)), b = _mm256_set1_epi8((char)(-3 * one));
  __m256i r = _mm256_dpbusd_avx_epi32(_mm256_set1_epi32(7), a, b);                    /* 7 + 4·(2·−3) = −17 */
  r = _mm256_dpwssd_avx_epi32(r, _mm256_set1_epi16((short)(5 * one)), _mm256_set1_epi16(2)); /* −17 + 2·10 = 3 */
  return _mm256_extract_epi32(r, 5);
}
#endif

int cokv_avxvnni_usable(void) {
  static int cached = -1;
  if (cached >= 0) return cached;
  cached = 0;
  if (vnni_turned_off()) return cached;
#if COKV_VEX_AS_EVEX
  cached = cokv_vnni_usable(); /* test build: the VEX kernels run with EVEX instructions */
#else
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avxvnni")) return cached;
  cached = runs_in_child(avxvnni_probe_op, 3);
#endif
  return cached;
}

int cokv_vnni_kind(void) {
#if COKV_VEX_AS_EVEX
  return cokv_avxvnni_usable() ? COKV_VNNI_VEX : COKV_VNNI_NONE; /* test build: always the VEX kernels */
#else
  /* AVX512-VNNI first: the same speed on ymm, and its GEMV bodies add Q5_0's fifth bits with one masked vpaddb */
  return cokv_vnni_usable() ? COKV_VNNI_EVEX : cokv_avxvnni_usable() ? COKV_VNNI_VEX : COKV_VNNI_NONE;
#endif
}
#else
void cokv_qgemm_panel(const cokv_qgemm_t *g, int n0, float *out, uint8_t *scratch) {
  (void)g, (void)n0, (void)out, (void)scratch;
}
int cokv_vnni_usable(void) { return 0; }
int cokv_avxvnni_usable(void) { return 0; }
int cokv_vnni_kind(void) { return COKV_VNNI_NONE; }
#endif
