/*
 * cokv native kernels. Built for the x86-64 baseline; the AVX2/FMA/F16C code paths carry target attributes and are
 * chosen at run time (__builtin_cpu_supports), with portable scalar code otherwise.
 *
 * GEMM (rows >= GEMM_MIN_M): GotoBLAS-style. x is packed once per call into 6-row panels (k-major, per KC block);
 * each thread takes NC-column tiles of W, packs (and dequantizes) a KC x NC block into 16-wide panels that stay in
 * L2, and runs a 6x16 micro-kernel (12 ymm accumulators, broadcast + 2 loads + 12 FMA per k).
 * GEMV (fewer rows): 4 rows of W per pass share each load of x; F32, F16 (F16C) and Q8_0 (dequantized on the fly)
 * read W directly; the other block types (Q4_0/1, Q5_0/1, Q2_K..Q6_K, IQ4_NL/XS) dequantize 4 rows into a scratch
 * buffer first. With MM_INT8_X (the TS backend's default) block types instead take the integer dots of qdot.c and,
 * for prefill batches, the VNNI GEMM of qgemm.c. Threads split W's rows (GEMV) or column tiles (GEMM) through an atomic counter.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif
#include "kernels.h"
#include "qdot.h"
#include "qgemm.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COKV_X86 1
#else
#define COKV_X86 0
#endif

#define MAX_THREADS 64
#define KC 256
#define NC_MAX 256
#define MR 6
#define NR 16
#define GEMM_MIN_M 4
#define INT8_MAX_M 128
#ifndef QG_MIN_M
#define QG_MIN_M 32 /* VNNI GEMM from this many rows on (below: the integer dots' 4-row tiles) */
#endif
#ifndef PF_GROUPS
#define PF_GROUPS 0 /* row prefetch off: measured slower than the hardware prefetcher on the GEMV stream (docs/benchmarks.md) */
#endif

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

/* ------------------------------------------------------------------------------------------------------------ */
/* CPU features, f16                                                                                              */

static int g_cpu_avx2 = -1;
static int g_simd = -1;
static float g_f16[65536];
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;

static float h2f_bits(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, r;
  if (e == 0) {
    float f = ldexpf((float)m, -24);
    return s ? -f : f;
  }
  if (e == 31) r = s | 0x7f800000u | (m << 13);
  else r = s | ((e + 112) << 23) | (m << 13);
  float f;
  memcpy(&f, &r, 4);
  return f;
}

static void init_once(void) {
  for (int i = 0; i < 65536; i++) g_f16[i] = h2f_bits((uint16_t)i);
#if COKV_X86
  __builtin_cpu_init();
  g_cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  g_cpu_avx2 = 0;
#endif
  g_simd = g_cpu_avx2;
  /* Probed here, at the first kernel call (model loading runs a backend self-check first), while the process is
   * still small: the probe forks. */
  if (g_cpu_avx2) cokv_vnni_kind();
}

int cokv_vnni(void) {
  pthread_once(&g_init_once, init_once);
  return g_cpu_avx2 ? cokv_vnni_kind() : 0;
}

static inline float h2f(const uint8_t *p) { return g_f16[p[0] | (p[1] << 8)]; }

int cokv_cpu_avx2(void) {
  pthread_once(&g_init_once, init_once);
  return g_cpu_avx2;
}
int cokv_simd(void) {
  pthread_once(&g_init_once, init_once);
  return g_simd;
}
void cokv_set_simd(int level) {
  pthread_once(&g_init_once, init_once);
  g_simd = level && g_cpu_avx2 ? 1 : 0;
}

size_t cokv_row_bytes(int dt, int k) {
  if (k <= 0) return 0;
  switch (dt) {
    case DT_F32: return (size_t)k * 4;
    case DT_F16: return (size_t)k * 2;
    case DT_Q8_0: return k % 32 ? 0 : (size_t)(k / 32) * 34;
    case DT_Q4_0: return k % 32 ? 0 : (size_t)(k / 32) * 18;
    case DT_Q4_K: return k % 256 ? 0 : (size_t)(k / 256) * 144;
    case DT_Q6_K: return k % 256 ? 0 : (size_t)(k / 256) * 210;
    case DT_Q4_1: return k % 32 ? 0 : (size_t)(k / 32) * 20;
    case DT_Q5_0: return k % 32 ? 0 : (size_t)(k / 32) * 22;
    case DT_Q5_1: return k % 32 ? 0 : (size_t)(k / 32) * 24;
    case DT_IQ4_NL: return k % 32 ? 0 : (size_t)(k / 32) * 18;
    case DT_Q2_K: return k % 256 ? 0 : (size_t)(k / 256) * 84;
    case DT_Q3_K: return k % 256 ? 0 : (size_t)(k / 256) * 110;
    case DT_Q5_K: return k % 256 ? 0 : (size_t)(k / 256) * 176;
    case DT_IQ4_XS: return k % 256 ? 0 : (size_t)(k / 256) * 136;
    default: return 0;
  }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Scalar dequantization of a row segment [k0, k0+n) (k0 and n whole blocks, except for F32/F16)                  */

static void dq_q8_0(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
    const uint8_t *p = row + (size_t)b * 34;
    float d = h2f(p);
    const int8_t *q = (const int8_t *)(p + 2);
    for (int i = 0; i < 32; i++) *dst++ = d * q[i];
  }
}

static void dq_q4_0(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
    const uint8_t *p = row + (size_t)b * 18;
    float d = h2f(p);
    for (int j = 0; j < 16; j++) {
      dst[j] = ((p[2 + j] & 0x0f) - 8) * d;
      dst[j + 16] = ((p[2 + j] >> 4) - 8) * d;
    }
    dst += 32;
  }
}

static inline void scale_min_k4(int j, const uint8_t *q, int *d, int *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

static void dq_q4_k(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 256; b < (k0 + n) / 256; b++) {
    const uint8_t *p = row + (size_t)b * 144;
    float d = h2f(p), dmin = h2f(p + 2);
    const uint8_t *sc = p + 4, *q = p + 16;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
      int s, m;
      scale_min_k4(is, sc, &s, &m);
      float d1 = d * s, m1 = dmin * m;
      scale_min_k4(is + 1, sc, &s, &m);
      float d2 = d * s, m2 = dmin * m;
      for (int l = 0; l < 32; l++) dst[l] = d1 * (q[l] & 0xf) - m1;
      for (int l = 0; l < 32; l++) dst[32 + l] = d2 * (q[l] >> 4) - m2;
      q += 32;
      dst += 64;
    }
  }
}

static void dq_q6_k(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 256; b < (k0 + n) / 256; b++) {
    const uint8_t *p = row + (size_t)b * 210;
    float d = h2f(p + 208);
    const uint8_t *ql = p, *qh = p + 128;
    const int8_t *sc = (const int8_t *)(p + 192);
    for (int h = 0; h < 2; h++) {
      for (int l = 0; l < 32; l++) {
        int is = l >> 4;
        int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
        int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        dst[l] = d * sc[is] * q1;
        dst[l + 32] = d * sc[is + 2] * q2;
        dst[l + 64] = d * sc[is + 4] * q3;
        dst[l + 96] = d * sc[is + 6] * q4;
      }
      dst += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

/* Q4_1: d, m, 16 bytes of nibbles (low = elements 0..15, high = 16..31); x = q*d + m. */
static void dq_q4_1(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
    const uint8_t *p = row + (size_t)b * 20;
    float d = h2f(p), m = h2f(p + 2);
    for (int j = 0; j < 16; j++) {
      dst[j] = (p[4 + j] & 0x0f) * d + m;
      dst[j + 16] = (p[4 + j] >> 4) * d + m;
    }
    dst += 32;
  }
}

static inline uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Q5_0: d, u32 qh (bit j = fifth bit of element j), 16 bytes of nibbles; x = (q - 16)*d. */
static void dq_q5_0(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
    const uint8_t *p = row + (size_t)b * 22;
    float d = h2f(p);
    uint32_t qh = le32(p + 2);
    for (int j = 0; j < 16; j++) {
      dst[j] = ((int)((p[6 + j] & 0x0f) | ((qh >> j) & 1) << 4) - 16) * d;
      dst[j + 16] = ((int)((p[6 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16) * d;
    }
    dst += 32;
  }
}

/* Q5_1: d, m, u32 qh, 16 bytes of nibbles; x = q*d + m. */
static void dq_q5_1(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
    const uint8_t *p = row + (size_t)b * 24;
    float d = h2f(p), m = h2f(p + 2);
    uint32_t qh = le32(p + 4);
    for (int j = 0; j < 16; j++) {
      dst[j] = (int)((p[8 + j] & 0x0f) | ((qh >> j) & 1) << 4) * d + m;
      dst[j + 16] = (int)((p[8 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4) * d + m;
    }
    dst += 32;
  }
}

/* Q2_K: 16 bytes (scale | min << 4), 64 bytes of 2-bit quants, d, dmin; each 32-byte half of qs holds 128 elements. */
static void dq_q2_k(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 256; b < (k0 + n) / 256; b++) {
    const uint8_t *p = row + (size_t)b * 84;
    float d = h2f(p + 80), dmin = h2f(p + 82);
    const uint8_t *sc = p;
    for (const uint8_t *q = p + 16; q < p + 80; q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 32; half += 16) {
          float dl = d * (*sc & 0xf), ml = dmin * (*sc >> 4);
          sc++;
          for (int l = 0; l < 16; l++) dst[l] = dl * ((q[half + l] >> shift) & 3) - ml;
          dst += 16;
        }
      }
    }
  }
}

/* Q3_K: 32 bytes hmask (clear bit = -4), 64 bytes of 2-bit quants (as Q2_K), 12 bytes of 6-bit scales, d. */
static void dq_q3_k(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 256; b < (k0 + n) / 256; b++) {
    const uint8_t *p = row + (size_t)b * 110, *hm = p, *sc = p + 96;
    float d = h2f(p + 108);
    int scales[16];
    for (int i = 0; i < 16; i++) {
      int low = i < 8 ? sc[i] & 0xf : sc[i - 8] >> 4;
      int high = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
      scales[i] = (low | high << 4) - 32;
    }
    int is = 0;
    unsigned m = 1;
    for (const uint8_t *q = p + 32; q < p + 96; q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (int half = 0; half < 32; half += 16) {
          float dl = d * scales[is++];
          for (int l = 0; l < 16; l++) dst[l] = dl * (((q[half + l] >> shift) & 3) - (hm[half + l] & m ? 0 : 4));
          dst += 16;
        }
      }
    }
  }
}

/* Q5_K: d, dmin, 12 bytes of 6-bit scales/mins (as Q4_K), 32 bytes qh, 128 bytes of nibbles. */
static void dq_q5_k(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 256; b < (k0 + n) / 256; b++) {
    const uint8_t *p = row + (size_t)b * 176;
    float d = h2f(p), dmin = h2f(p + 2);
    const uint8_t *sc = p + 4, *qh = p + 16, *ql = p + 48;
    unsigned u = 1;
    for (int is = 0; is < 8; is += 2, u <<= 2) {
      int s, m;
      scale_min_k4(is, sc, &s, &m);
      float d1 = d * s, m1 = dmin * m;
      scale_min_k4(is + 1, sc, &s, &m);
      float d2 = d * s, m2 = dmin * m;
      for (int l = 0; l < 32; l++) dst[l] = d1 * ((ql[l] & 0xf) + (qh[l] & u ? 16 : 0)) - m1;
      for (int l = 0; l < 32; l++) dst[32 + l] = d2 * ((ql[l] >> 4) + (qh[l] & (u << 1) ? 16 : 0)) - m2;
      ql += 32;
      dst += 64;
    }
  }
}

static const int8_t k_iq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* IQ4_NL: d, 16 bytes of nibbles indexing the non-linear levels. */
static void dq_iq4_nl(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
    const uint8_t *p = row + (size_t)b * 18;
    float d = h2f(p);
    for (int j = 0; j < 16; j++) {
      dst[j] = d * k_iq4[p[2 + j] & 0xf];
      dst[j + 16] = d * k_iq4[p[2 + j] >> 4];
    }
    dst += 32;
  }
}

/* IQ4_XS: d, u16 scales_h, 4 bytes scales_l, 128 bytes of nibbles; 8 IQ4_NL-like sub-blocks, scale d*(ls - 32). */
static void dq_iq4_xs(const uint8_t *row, int k0, int n, float *dst) {
  for (int b = k0 / 256; b < (k0 + n) / 256; b++) {
    const uint8_t *p = row + (size_t)b * 136;
    float d = h2f(p);
    unsigned sh = p[2] | p[3] << 8;
    for (int ib = 0; ib < 8; ib++) {
      int ls = ((p[4 + ib / 2] >> (4 * (ib & 1))) & 0xf) | ((sh >> (2 * ib)) & 3) << 4;
      float dl = d * (ls - 32);
      const uint8_t *q = p + 8 + ib * 16;
      for (int j = 0; j < 16; j++) {
        dst[j] = dl * k_iq4[q[j] & 0xf];
        dst[j + 16] = dl * k_iq4[q[j] >> 4];
      }
      dst += 32;
    }
  }
}

static void dq_scalar(int dt, const uint8_t *row, int k0, int n, float *dst) {
  switch (dt) {
    case DT_F32: memcpy(dst, (const float *)row + k0, (size_t)n * 4); break;
    case DT_F16: {
      const uint16_t *h = (const uint16_t *)row + k0;
      for (int i = 0; i < n; i++) dst[i] = g_f16[h[i]];
      break;
    }
    case DT_Q8_0: dq_q8_0(row, k0, n, dst); break;
    case DT_Q4_0: dq_q4_0(row, k0, n, dst); break;
    case DT_Q4_K: dq_q4_k(row, k0, n, dst); break;
    case DT_Q6_K: dq_q6_k(row, k0, n, dst); break;
    case DT_Q4_1: dq_q4_1(row, k0, n, dst); break;
    case DT_Q5_0: dq_q5_0(row, k0, n, dst); break;
    case DT_Q5_1: dq_q5_1(row, k0, n, dst); break;
    case DT_Q2_K: dq_q2_k(row, k0, n, dst); break;
    case DT_Q3_K: dq_q3_k(row, k0, n, dst); break;
    case DT_Q5_K: dq_q5_k(row, k0, n, dst); break;
    case DT_IQ4_NL: dq_iq4_nl(row, k0, n, dst); break;
    case DT_IQ4_XS: dq_iq4_xs(row, k0, n, dst); break;
  }
}

#if COKV_X86
AVX2_TARGET static void dq_avx2(int dt, const uint8_t *row, int k0, int n, float *dst) {
  if (dt == DT_F16) {
    const uint16_t *h = (const uint16_t *)row + k0;
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) dst[i] = g_f16[h[i]];
  } else if (dt == DT_Q8_0) {
    for (int b = k0 / 32; b < (k0 + n) / 32; b++) {
      const uint8_t *p = row + (size_t)b * 34;
      __m256 d = _mm256_set1_ps(h2f(p));
      for (int j = 0; j < 32; j += 8) {
        __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + j)));
        _mm256_storeu_ps(dst + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
      }
      dst += 32;
    }
  } else {
    dq_scalar(dt, row, k0, n, dst);
  }
}
#endif

static inline void dequant(int dt, const uint8_t *row, int k0, int n, float *dst) {
#if COKV_X86
  if (g_simd) {
    dq_avx2(dt, row, k0, n, dst);
    return;
  }
#endif
  dq_scalar(dt, row, k0, n, dst);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Thread pool: workers spin on a generation counter for a while after each job, then sleep on a condvar.         */

static int g_nthreads = 0;     /* threads per call, caller included */
static int g_created = 1;      /* threads existing, caller included */
static atomic_uint g_gen;
static atomic_int g_pending;
static void (*g_fn)(void *, int);
static void *g_arg;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER;
static long g_spin_ns = 300000;

static inline void cpu_relax(void) {
#if COKV_X86
  _mm_pause();
#endif
}

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* g_gen holds (sequence << 7) | threads-in-this-job, so a worker reads "is there a job for me" in one load. */
static unsigned g_start_gen[MAX_THREADS];

static void *worker_main(void *arg) {
  int tid = (int)(intptr_t)arg;
  /* The generation current when this thread was created (under g_call_mu, so no job was in flight): a job posted
   * before the thread first runs is still seen as new. */
  unsigned seen = g_start_gen[tid];
  for (;;) {
    if (atomic_load_explicit(&g_gen, memory_order_acquire) == seen) {
      long t0 = now_ns();
      int spins = 0;
      while (atomic_load_explicit(&g_gen, memory_order_acquire) == seen) {
        cpu_relax();
        if (++spins % 256 == 0 && now_ns() - t0 > g_spin_ns) {
          pthread_mutex_lock(&g_mu);
          while (atomic_load(&g_gen) == seen) pthread_cond_wait(&g_cv, &g_mu);
          pthread_mutex_unlock(&g_mu);
        }
      }
    }
    seen = atomic_load_explicit(&g_gen, memory_order_acquire);
    if (tid < (int)(seen & 127)) {
      g_fn(g_arg, tid);
      atomic_fetch_sub_explicit(&g_pending, 1, memory_order_release);
    }
  }
  return NULL;
}

static int default_threads(void) {
  const char *e = getenv("COKV_THREADS");
  long n = e ? strtol(e, NULL, 10) : 0;
  /* Every core this process may run on (its affinity mask: taskset, cgroup cpusets, Slurm's --cpus-per-task). */
#ifdef CPU_COUNT
  if (n <= 0) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
  }
#endif
  if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  const char *s = getenv("COKV_SPIN_US");
  if (s) g_spin_ns = strtol(s, NULL, 10) * 1000L;
  return (int)n;
}

int cokv_set_threads(int n) {
  if (n < 1) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  pthread_mutex_lock(&g_call_mu);
  while (g_created < n) {
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    g_start_gen[g_created] = atomic_load(&g_gen);
    int rc = pthread_create(&t, &at, worker_main, (void *)(intptr_t)g_created);
    pthread_attr_destroy(&at);
    if (rc != 0) break;
    g_created++;
  }
  g_nthreads = n < g_created ? n : g_created;
  pthread_mutex_unlock(&g_call_mu);
  return g_nthreads;
}

int cokv_threads(void) {
  if (g_nthreads == 0) cokv_set_threads(default_threads());
  return g_nthreads;
}

/* Run fn(arg, tid) on nt threads (nt <= g_nthreads); the caller is tid 0. Caller holds g_call_mu. */
/*
 * Straggler guard: on an oversubscribed machine a descheduled worker can hold the caller for a whole time slice
 * (ms) on a call that takes µs. When the caller waits for workers longer than it worked itself (+20 µs) on 3 calls
 * more than it did not, the next SOLO_CALLS calls run on the caller alone (each job splits work through an atomic
 * counter, so one thread completes it), then threads are tried again.
 */
#define SOLO_CALLS 256
static int g_solo_left = 0, g_bad = 0;

static void pool_run(void (*fn)(void *, int), void *arg, int nt) {
  if (nt > g_nthreads) nt = g_nthreads;
  if (nt <= 1 || g_solo_left > 0) {
    if (nt > 1) g_solo_left--;
    fn(arg, 0);
    return;
  }
  g_fn = fn;
  g_arg = arg;
  atomic_store(&g_pending, nt - 1);
  pthread_mutex_lock(&g_mu);
  unsigned g = atomic_load(&g_gen);
  atomic_store_explicit(&g_gen, (((g >> 7) + 1) << 7) | (unsigned)nt, memory_order_release);
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  long t0 = now_ns();
  fn(arg, 0);
  long t1 = now_ns();
  while (atomic_load_explicit(&g_pending, memory_order_acquire) > 0) cpu_relax();
  long t2 = now_ns();
  if (t2 - t1 > (t1 - t0) + 20000) {
    if (++g_bad >= 3) {
      g_bad = 0;
      g_solo_left = SOLO_CALLS;
    }
  } else if (g_bad > 0) {
    g_bad--;
  }
}

/* Per-thread scratch, grown on demand (64-byte aligned). */
typedef struct {
  float *p;
  size_t n;
} buf_t;
static buf_t g_bpack[MAX_THREADS], g_rowtmp[MAX_THREADS];
static buf_t g_apack;
static buf_t g_xqb; /* quantized x rows for MM_INT8_X */
static buf_t g_qgs[MAX_THREADS]; /* VNNI GEMM: packed weight panels per thread */

static float *buf_get(buf_t *b, size_t n) {
  if (b->n < n) {
    free(b->p);
    b->p = NULL;
    b->n = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float) + 64) != 0) return NULL;
    b->p = p;
    b->n = n;
  }
  return b->p;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Jobs                                                                                                           */

typedef struct {
  float *out;
  const float *x;
  int m, n, k, dt, flags;
  const uint8_t *w;
  size_t rb;
  /* GEMV: chunks of rows */
  int chunk;
  /* GEMM */
  const float *apack;
  int mpad, nc, ntiles;
  /* MM_INT8_X: x quantized per row (xrb bytes each) for the weight type's integer dot */
  const uint8_t *xqb;
  size_t xrb;
  cokv_qdot_fns qfn;
  /* MM_INT8_X GEMM on AVX512-VNNI */
  cokv_qgemm_t qg;
  atomic_int next;
  atomic_int failed;
} job_t;

/* --- scalar row kernel (any type): 4 rows dequantized into scratch, dots against every x row --- */
static void rows_scalar(job_t *j, int n0, int n1, int tid) {
  const int K = j->k;
  float *t = buf_get(&g_rowtmp[tid], (size_t)4 * K);
  if (!t) {
    atomic_store(&j->failed, 1);
    return;
  }
  for (int n = n0; n < n1; n += 4) {
    int nr = n1 - n < 4 ? n1 - n : 4;
    for (int r = 0; r < nr; r++) {
      if (j->dt == DT_F32) memcpy(t + (size_t)r * K, j->w + (size_t)(n + r) * j->rb, (size_t)K * 4);
      else dq_scalar(j->dt, j->w + (size_t)(n + r) * j->rb, 0, K, t + (size_t)r * K);
    }
    for (int m = 0; m < j->m; m++) {
      const float *x = j->x + (size_t)m * K;
      for (int r = 0; r < nr; r++) {
        const float *wr = t + (size_t)r * K;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int kk = 0;
        for (; kk + 4 <= K; kk += 4) {
          s0 += x[kk] * wr[kk];
          s1 += x[kk + 1] * wr[kk + 1];
          s2 += x[kk + 2] * wr[kk + 2];
          s3 += x[kk + 3] * wr[kk + 3];
        }
        for (; kk < K; kk++) s0 += x[kk] * wr[kk];
        j->out[(size_t)m * j->n + n + r] = (s0 + s1) + (s2 + s3);
      }
    }
  }
}

#if COKV_X86
AVX2_TARGET static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* 4 f32 rows (w0..w3, any may repeat for a short tail) against x, K floats. */
AVX2_TARGET static void dot4_f32(const float *x, const float *w0, const float *w1, const float *w2, const float *w3,
                                 int K, float *res) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x0, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x0, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), x0, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), x0, a3);
    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), x1, b0);
    b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), x1, b1);
    b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), x1, b2);
    b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), x1, b3);
  }
  for (; k + 8 <= K; k += 8) {
    __m256 x0 = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x0, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x0, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), x0, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), x0, a3);
  }
  float r0 = hsum(_mm256_add_ps(a0, b0)), r1 = hsum(_mm256_add_ps(a1, b1));
  float r2 = hsum(_mm256_add_ps(a2, b2)), r3 = hsum(_mm256_add_ps(a3, b3));
  for (; k < K; k++) {
    r0 += x[k] * w0[k];
    r1 += x[k] * w1[k];
    r2 += x[k] * w2[k];
    r3 += x[k] * w3[k];
  }
  res[0] = r0, res[1] = r1, res[2] = r2, res[3] = r3;
}

AVX2_TARGET static void dot4_f16(const float *x, const uint16_t *w0, const uint16_t *w1, const uint16_t *w2,
                                 const uint16_t *w3, int K, float *res) {
#define LH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    a0 = _mm256_fmadd_ps(LH(w0 + k), x0, a0);
    a1 = _mm256_fmadd_ps(LH(w1 + k), x0, a1);
    a2 = _mm256_fmadd_ps(LH(w2 + k), x0, a2);
    a3 = _mm256_fmadd_ps(LH(w3 + k), x0, a3);
    b0 = _mm256_fmadd_ps(LH(w0 + k + 8), x1, b0);
    b1 = _mm256_fmadd_ps(LH(w1 + k + 8), x1, b1);
    b2 = _mm256_fmadd_ps(LH(w2 + k + 8), x1, b2);
    b3 = _mm256_fmadd_ps(LH(w3 + k + 8), x1, b3);
  }
  for (; k + 8 <= K; k += 8) {
    __m256 x0 = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(LH(w0 + k), x0, a0);
    a1 = _mm256_fmadd_ps(LH(w1 + k), x0, a1);
    a2 = _mm256_fmadd_ps(LH(w2 + k), x0, a2);
    a3 = _mm256_fmadd_ps(LH(w3 + k), x0, a3);
  }
#undef LH
  float r0 = hsum(_mm256_add_ps(a0, b0)), r1 = hsum(_mm256_add_ps(a1, b1));
  float r2 = hsum(_mm256_add_ps(a2, b2)), r3 = hsum(_mm256_add_ps(a3, b3));
  for (; k < K; k++) {
    r0 += x[k] * g_f16[w0[k]];
    r1 += x[k] * g_f16[w1[k]];
    r2 += x[k] * g_f16[w2[k]];
    r3 += x[k] * g_f16[w3[k]];
  }
  res[0] = r0, res[1] = r1, res[2] = r2, res[3] = r3;
}

/* Q8_0 rows, x in f32: int8 -> f32 per block, FMA with x, scale by d once per block. */
AVX2_TARGET static void dot4_q8_f32(const float *x, const uint8_t *const *w, int K, float *res) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const int nb = K / 32;
  for (int b = 0; b < nb; b++) {
    const float *xb = x + b * 32;
    __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
           x3 = _mm256_loadu_ps(xb + 24);
    for (int r = 0; r < 4; r++) {
      const uint8_t *p = w[r] + (size_t)b * 34;
      const __m128i *q = (const __m128i *)(p + 2);
      __m128i q16a = _mm_loadu_si128(q), q16b = _mm_loadu_si128(q + 1);
      __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q16a)), x0);
      s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q16a, 8))), x1, s);
      s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q16b)), x2, s);
      s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q16b, 8))), x3, s);
      acc[r] = _mm256_fmadd_ps(s, _mm256_set1_ps(_cvtsh_ss((unsigned short)(p[0] | (p[1] << 8)))), acc[r]);
    }
  }
  for (int r = 0; r < 4; r++) res[r] = hsum(acc[r]);
}

static void rows_avx2(job_t *j, int n0, int n1, int tid) {
  const int K = j->k;
  float *t = NULL;
  if (j->dt != DT_F32 && j->dt != DT_F16 && j->dt != DT_Q8_0) {
    t = buf_get(&g_rowtmp[tid], (size_t)4 * K);
    if (!t) {
      atomic_store(&j->failed, 1);
      return;
    }
  }
  float res[4];
  for (int n = n0; n < n1; n += 4) {
    int nr = n1 - n < 4 ? n1 - n : 4;
    const uint8_t *wr[4];
    for (int r = 0; r < 4; r++) wr[r] = j->w + (size_t)(n + (r < nr ? r : nr - 1)) * j->rb;
    /* Rows with small K are short streams the hardware prefetcher barely learns; fetch the group PF_GROUPS ahead. */
    if (PF_GROUPS > 0 && n + 4 * (PF_GROUPS + 1) <= n1) {
      const char *pf = (const char *)j->w + (size_t)(n + 4 * PF_GROUPS) * j->rb;
      for (size_t off = 0; off < 4 * j->rb; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
    }
    if (t) {
      for (int r = 0; r < nr; r++) dequant(j->dt, wr[r], 0, K, t + (size_t)r * K);
    }
    for (int m = 0; m < j->m; m++) {
      const float *x = j->x + (size_t)m * K;
      switch (j->dt) {
        case DT_F32:
          dot4_f32(x, (const float *)wr[0], (const float *)wr[1], (const float *)wr[2], (const float *)wr[3], K, res);
          break;
        case DT_F16:
          dot4_f16(x, (const uint16_t *)wr[0], (const uint16_t *)wr[1], (const uint16_t *)wr[2],
                   (const uint16_t *)wr[3], K, res);
          break;
        case DT_Q8_0:
          dot4_q8_f32(x, wr, K, res);
          break;
        default: {
          int last = nr - 1;
          dot4_f32(x, t, t + (size_t)(last < 1 ? last : 1) * K, t + (size_t)(last < 2 ? last : 2) * K,
                   t + (size_t)(last < 3 ? last : 3) * K, K, res);
        }
      }
      float *o = j->out + (size_t)m * j->n + n;
      for (int r = 0; r < nr; r++) o[r] = res[r];
    }
  }
}

/* 6x16 micro-kernel: c[0..mr)[0..nr) (+)= a-panel (kc x 6) . b-panel (kc x 16). */
AVX2_TARGET static void kern_6x16(int kc, const float *a, const float *b, float *c, int ldc, int first, int mr, int nr) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 av = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10);
    c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20);
    c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30);
    c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40);
    c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50);
    c51 = _mm256_fmadd_ps(av, b1, c51);
    a += MR;
    b += NR;
  }
  __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; i++) {
      float *ci = c + (size_t)i * ldc;
      if (first) {
        _mm256_storeu_ps(ci, acc[i][0]);
        _mm256_storeu_ps(ci + 8, acc[i][1]);
      } else {
        _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]));
        _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]));
      }
    }
    return;
  }
  float tmp[MR][NR] __attribute__((aligned(32)));
  for (int i = 0; i < MR; i++) {
    _mm256_store_ps(tmp[i], acc[i][0]);
    _mm256_store_ps(tmp[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < mr; i++) {
    float *ci = c + (size_t)i * ldc;
    if (first)
      for (int jj = 0; jj < nr; jj++) ci[jj] = tmp[i][jj];
    else
      for (int jj = 0; jj < nr; jj++) ci[jj] += tmp[i][jj];
  }
}

/* Pack rows [n0, n0+nc) x cols [k0, k0+kc) of W into 16-wide panels: dst[p][k][16], zero-padded. */
AVX2_TARGET static void pack_b(const job_t *j, int n0, int nc, int k0, int kc, float *dst, float *row) {
  int np = (nc + NR - 1) / NR;
  for (int p = 0; p < np; p++) {
    float *d = dst + (size_t)p * NR * kc;
    for (int r = 0; r < NR; r++) {
      int n = n0 + p * NR + r;
      if (n >= n0 + nc) {
        for (int k = 0; k < kc; k++) d[k * NR + r] = 0;
        continue;
      }
      const float *src;
      if (j->dt == DT_F32) {
        src = (const float *)(j->w + (size_t)n * j->rb) + k0;
      } else {
        dq_avx2(j->dt, j->w + (size_t)n * j->rb, k0, kc, row);
        src = row;
      }
      for (int k = 0; k < kc; k++) d[k * NR + r] = src[k];
    }
  }
}

static void gemm_tiles(job_t *j, int tid) {
  float *bp = buf_get(&g_bpack[tid], (size_t)NC_MAX * KC);
  float *row = buf_get(&g_rowtmp[tid], KC);
  if (!bp || !row) {
    atomic_store(&j->failed, 1);
    return;
  }
  const int M = j->m, N = j->n, K = j->k, mp = j->mpad / MR;
  for (;;) {
    int t = atomic_fetch_add(&j->next, 1);
    if (t >= j->ntiles) break;
    int n0 = t * j->nc, nc = N - n0 < j->nc ? N - n0 : j->nc, np = (nc + NR - 1) / NR;
    for (int k0 = 0; k0 < K; k0 += KC) {
      int kc = K - k0 < KC ? K - k0 : KC;
      pack_b(j, n0, nc, k0, kc, bp, row);
      const float *ablk = j->apack + (size_t)k0 * j->mpad;
      for (int i = 0; i < mp; i++) {
        const float *a = ablk + (size_t)i * MR * kc;
        int mr = M - i * MR < MR ? M - i * MR : MR;
        float *c = j->out + (size_t)i * MR * N + n0;
        for (int p = 0; p < np; p++) {
          int nr = nc - p * NR < NR ? nc - p * NR : NR;
          kern_6x16(kc, a, bp + (size_t)p * NR * kc, c + p * NR, N, k0 == 0, mr, nr);
        }
      }
    }
  }
}
#endif

#if COKV_X86
/*
 * MM_INT8_X: rows [n0, n1) of W against every quantized x row. x rows go in tiles of QM so a tile stays in L1/L2
 * while the chunk's W rows stream past it once per tile (one W row per call for GEMV).
 */
#define QM 16
static void qrows(job_t *j, int n0, int n1) {
  const int M = j->m, N = j->n, K = j->k;
  for (int m0 = 0; m0 < M; m0 += QM) {
    int m1 = M - m0 < QM ? M : m0 + QM;
    for (int n = n0; n < n1; n++) {
      const uint8_t *wr = j->w + (size_t)n * j->rb;
      if (PF_GROUPS > 0 && n + PF_GROUPS < n1) {
        const char *pf = (const char *)j->w + (size_t)(n + PF_GROUPS) * j->rb;
        for (size_t off = 0; off < j->rb; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
      }
      if (M == 1 && j->qfn.gemv && n + j->qfn.gemv_rows <= n1) { /* GEMV: 4 or 8 weight rows per call (qdot.h) */
        j->qfn.gemv(wr, j->rb, j->xqb, K, j->out + n);
        n += j->qfn.gemv_rows - 1;
        continue;
      }
      int m = m0;
      for (; m + COKV_QX <= m1; m += COKV_QX) {
        float o[COKV_QX];
        j->qfn.many(wr, j->xqb + (size_t)m * j->xrb, j->xrb, K, o);
        for (int r = 0; r < COKV_QX; r++) j->out[(size_t)(m + r) * N + n] = o[r];
      }
      for (; m < m1; m++) j->qfn.one(wr, j->xqb + (size_t)m * j->xrb, j->xrb, K, j->out + (size_t)m * N + n);
    }
  }
}

static void qrows_job(void *arg, int tid) {
  job_t *j = arg;
  (void)tid;
  for (;;) {
    int c = atomic_fetch_add(&j->next, 1);
    int n0 = c * j->chunk;
    if (n0 >= j->n) break;
    qrows(j, n0, n0 + j->chunk < j->n ? n0 + j->chunk : j->n);
  }
}
#endif

#if COKV_X86
/* VNNI GEMM: threads take groups of up to 4 panels (64 weight rows) through the atomic counter. */
static void qgemm_job(void *arg, int tid) {
  job_t *j = arg;
  uint8_t *scratch = (uint8_t *)buf_get(&g_qgs[tid], cokv_qgemm_scratch_bytes(&j->qg) / 4 + 16);
  if (!scratch) {
    atomic_store(&j->failed, 1);
    return;
  }
  for (;;) {
    int n0 = atomic_fetch_add(&j->next, 1) * 64;
    if (n0 >= j->n) break;
    cokv_qgemm_panel(&j->qg, n0, j->out, scratch);
  }
}
#endif

static void rows_job(void *arg, int tid) {
  job_t *j = arg;
  for (;;) {
    int c = atomic_fetch_add(&j->next, 1);
    int n0 = c * j->chunk;
    if (n0 >= j->n) break;
    int n1 = n0 + j->chunk < j->n ? n0 + j->chunk : j->n;
#if COKV_X86
    if (g_simd) rows_avx2(j, n0, n1, tid);
    else
#endif
      rows_scalar(j, n0, n1, tid);
  }
}

#if COKV_X86
static void gemm_job(void *arg, int tid) { gemm_tiles(arg, tid); }
#endif

int cokv_matmul(float *out, const float *x, int M, int N, int K, const void *w, int dt, int flags) {
  pthread_once(&g_init_once, init_once);
  int nthreads = cokv_threads();
  pthread_mutex_lock(&g_call_mu);
  job_t j;
  memset(&j, 0, sizeof j);
  if (flags & MM_Q8_INT8) flags |= MM_INT8_X; /* the old Q8_0-only flag: now the general integer path */
  j.out = out, j.x = x, j.m = M, j.n = N, j.k = K, j.dt = dt, j.flags = flags;
  j.w = w;
  j.rb = cokv_row_bytes(dt, K);
  atomic_init(&j.next, 0);
  atomic_init(&j.failed, 0);
  double work = (double)M * N * K;
  /* Below ~1M multiply-adds (e.g. a 576x192 K/V projection of one token) dispatch and cache-line traffic cost more
   * than a second thread saves. */
  int nt = work < (double)(1 << 20) ? 1 : nthreads;
  int rc = 0;
#if COKV_X86
  /* Integer dots for GEMV and small batches; from INT8_MAX_M rows on, the f32 GEMM (weights dequantized once per
   * KC x NC tile, 6x16 FMA micro-kernel) is as fast or faster on AVX2 (measured: docs/benchmarks.md), so prefill
   * chunks take it with f32 activations. */
  if (g_simd && (flags & MM_INT8_X) && M >= QG_MIN_M && cokv_qgemm_supports(dt) && cokv_vnni_kind()) {
    j.qg.w = j.w, j.qg.rb = j.rb, j.qg.dt = dt, j.qg.M = M, j.qg.N = N, j.qg.K = K;
    uint8_t *xb = (uint8_t *)buf_get(&g_xqb, cokv_qgemm_x_bytes(dt, M, K) / 4 + 16);
    if (!xb) {
      rc = -1;
      goto done;
    }
    cokv_qgemm_prepare_x(&j.qg, x, xb);
    pool_run(qgemm_job, &j, nt);
    if (atomic_load(&j.failed)) rc = -1;
    goto done;
  }
  if (g_simd && (flags & MM_INT8_X) && cokv_xq_kind(dt) != XQ_NONE && M < INT8_MAX_M) {
    int kind = cokv_xq_kind(dt);
    j.xrb = cokv_xq_row_bytes(kind, K);
    uint8_t *xb = (uint8_t *)buf_get(&g_xqb, ((size_t)M * j.xrb + 3) / 4 + 16);
    if (!xb) {
      rc = -1;
      goto done;
    }
    for (int r = 0; r < M; r++) cokv_quantize_x_row(kind, x + (size_t)r * K, K, xb + (size_t)r * j.xrb);
    j.xqb = xb;
    j.qfn = cokv_qdot_for(dt);
    int chunk = (N + 8 * nt - 1) / (8 * nt);
    chunk = (chunk + 7) & ~7; /* whole groups of the GEMV kernels' 4 or 8 rows */
    if (chunk < 16) chunk = 16;
    j.chunk = chunk;
    pool_run(qrows_job, &j, nt);
    goto done;
  }
  if (g_simd && M >= GEMM_MIN_M) {
    int mpad = (M + MR - 1) / MR * MR;
    float *ap = buf_get(&g_apack, (size_t)mpad * K);
    if (!ap) {
      rc = -1;
      goto done;
    }
    /* Pack x: per KC block, 6-row panels, k-major, zero rows past M. */
    for (int k0 = 0; k0 < K; k0 += KC) {
      int kc = K - k0 < KC ? K - k0 : KC;
      float *blk = ap + (size_t)k0 * mpad;
      for (int i = 0; i < mpad / MR; i++) {
        float *d = blk + (size_t)i * MR * kc;
        for (int r = 0; r < MR; r++) {
          int mrow = i * MR + r;
          if (mrow >= M) {
            for (int k = 0; k < kc; k++) d[k * MR + r] = 0;
          } else {
            const float *s = x + (size_t)mrow * K + k0;
            for (int k = 0; k < kc; k++) d[k * MR + r] = s[k];
          }
        }
      }
    }
    j.apack = ap;
    j.mpad = mpad;
    int nc = (N + 2 * nt - 1) / (2 * nt);
    nc = (nc + NR - 1) / NR * NR;
    if (nc > NC_MAX) nc = NC_MAX;
    if (nc < NR) nc = NR;
    j.nc = nc;
    j.ntiles = (N + nc - 1) / nc;
    pool_run(gemm_job, &j, nt);
    if (atomic_load(&j.failed)) rc = -1;
    goto done;
  }
#endif
  {
    int chunk = (N + 8 * nt - 1) / (8 * nt);
    chunk = (chunk + 3) & ~3;
    if (chunk < 16) chunk = 16;
    j.chunk = chunk;
    pool_run(rows_job, &j, nt);
    if (atomic_load(&j.failed)) rc = -1;
  }
#if COKV_X86
done:
#endif
  pthread_mutex_unlock(&g_call_mu);
  return rc;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Attention                                                                                                      */

#if COKV_X86
AVX2_TARGET static void widen8(const uint16_t *h, float *dst) {
  _mm256_storeu_ps(dst, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
}
#endif

typedef struct {
  float *out;
  int oStride;
  const float *q;
  int qStride, nq, hd;
  float scale;
  const void *k1, *v1; /* rows of hd floats, or of hd IEEE halves when `half` */
  int from1, to1;
  const int *count1;
  const void *k2, *v2;
  int half;
  int from2, to2;
  atomic_int next;
  atomic_int failed;
  /* att_decode_job: one softmax state (m, l, o; ATT_STATE floats) per chunk of entries, merged in chunk order */
  float *cstate;
} att_t;

static buf_t g_scores[MAX_THREADS];
static buf_t g_kvrow[MAX_THREADS]; /* F16 K/V widened: one row (att_job) or one block of ATT_BK rows per K and V */

/* Rows [j, j + n) of a K/V segment as floats: the rows themselves, or (F16) widened into dst. */
static const float *kv_rows(const att_t *a, const void *base, int j, int n, float *dst) {
  const int hd = a->hd;
  if (!a->half) return (const float *)base + (size_t)j * hd;
  const uint16_t *h = (const uint16_t *)base + (size_t)j * hd;
  size_t cnt = (size_t)n * hd, i = 0;
#if COKV_X86
  if (g_simd) {
    for (; i + 8 <= cnt; i += 8) widen8(h + i, dst + i);
  }
#endif
  for (; i < cnt; i++) dst[i] = g_f16[h[i]];
  return dst;
}

static float dot_scalar(const float *a, const float *b, int n) {
  float s = 0;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}
static void axpy_scalar(float *y, float a, const float *x, int n) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}
#if COKV_X86
AVX2_TARGET static float dot_avx2(const float *a, const float *b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}
AVX2_TARGET static void axpy_avx2(float *y, float a, const float *x, int n) {
  __m256 av = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}
#endif

static void att_job(void *arg, int tid) {
  att_t *a = arg;
  const int hd = a->hd;
  float *sc = buf_get(&g_scores[tid], (size_t)(a->to1 - a->from1) + (size_t)(a->to2 - a->from2) + 16);
  float *row = a->half ? buf_get(&g_kvrow[tid], (size_t)hd + 16) : NULL;
  if (!sc || (a->half && !row)) {
    atomic_store(&a->failed, 1);
    return;
  }
#if COKV_X86
  float (*dot)(const float *, const float *, int) = g_simd ? dot_avx2 : dot_scalar;
  void (*axpy)(float *, float, const float *, int) = g_simd ? axpy_avx2 : axpy_scalar;
#else
  float (*dot)(const float *, const float *, int) = dot_scalar;
  void (*axpy)(float *, float, const float *, int) = axpy_scalar;
#endif
  for (;;) {
    int i = atomic_fetch_add(&a->next, 1);
    if (i >= a->nq) break;
    const float *q = a->q + (size_t)i * a->qStride;
    float *o = a->out + (size_t)i * a->oStride;
    int to1 = a->count1 ? a->from1 + a->count1[i] : a->to1;
    int n = 0;
    float mx = -INFINITY;
    for (int jj = a->from1; jj < to1; jj++, n++) {
      float s = dot(q, kv_rows(a, a->k1, jj, 1, row), hd) * a->scale;
      sc[n] = s;
      if (s > mx) mx = s;
    }
    for (int jj = a->from2; jj < a->to2; jj++, n++) {
      float s = dot(q, kv_rows(a, a->k2, jj, 1, row), hd) * a->scale;
      sc[n] = s;
      if (s > mx) mx = s;
    }
    float sum = 0;
    for (int jj = 0; jj < n; jj++) {
      float e = expf(sc[jj] - mx);
      sc[jj] = e;
      sum += e;
    }
    float inv = 1.0f / sum;
    memset(o, 0, (size_t)hd * 4);
    n = 0;
    for (int jj = a->from1; jj < to1; jj++, n++) axpy(o, sc[n] * inv, kv_rows(a, a->v1, jj, 1, row), hd);
    for (int jj = a->from2; jj < a->to2; jj++, n++) axpy(o, sc[n] * inv, kv_rows(a, a->v2, jj, 1, row), hd);
  }
}

/*
 * Tiled prefill attention (FlashAttention-style, AVX2, hd a multiple of 8): each job is a block of ATT_BQ queries;
 * keys and values stream through in blocks of ATT_BK entries with an online softmax (running max m, sum l and an
 * unnormalised output rescaled when m grows), so memory is O(ATT_BQ·hd) per thread and no score row is ever longer
 * than ATT_BK. Each key block is transposed once (hd × ATT_BK) and reused by every query of the block: the score
 * tile is a 4×16 register-blocked product, the value update a 4×16 one, exp is a vectorised polynomial.
 */
#define ATT_BQ 32
#define ATT_BK 64
static buf_t g_att_tile[MAX_THREADS];

#if COKV_X86
AVX2_TARGET static void att_scores_tiled(const float *qs, int nr, int hd, const float *k, int bn, float *kt, float *s);
AVX2_TARGET static void att_softmax_pv(int nr, int hd, const float *v, int bn, const int *valid, float *s, float *m,
                                       float *l, float *o);

/* e^x (Cephes expf polynomial on x − n·ln2, |rel err| < 2e-7); x is clamped to [−87, 88]: below gives ~1e-38, not 0. */
AVX2_TARGET static inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/*
 * One key block of `bn` entries (k, v: row-major, hd floats each) against the query block: rows r < nr of qs
 * (pre-scaled, nr a multiple of 4), with valid[r] entries of the block visible to row r (0..bn). Updates m, l and
 * the unnormalised output o (nr × hd). With `few` (at most 8 queries, decode) the scores are direct dot products;
 * otherwise the block is transposed once and shared by a 4×16 register-blocked score tile.
 */
AVX2_TARGET static void att_block(const float *qs, int nr, int hd, const float *k, const float *v, int bn,
                                  const int *valid, float *kt, float *s, float *m, float *l, float *o, int few) {
  if (few) {
    for (int r = 0; r < nr; r++) {
      if (valid[r] <= 0) continue;
      const float *qr = qs + (size_t)r * hd;
      float *sr = s + (size_t)r * ATT_BK;
      for (int j = 0; j < valid[r]; j++) sr[j] = dot_avx2(qr, k + (size_t)j * hd, hd);
    }
  } else {
    att_scores_tiled(qs, nr, hd, k, bn, kt, s);
  }
  att_softmax_pv(nr, hd, v, bn, valid, s, m, l, o);
}

/* s[r][j] = qs[r] · k[j] for r < nr, j < bn through the transposed block kt. */
AVX2_TARGET static void att_scores_tiled(const float *qs, int nr, int hd, const float *k, int bn, float *kt, float *s) {
  /* kt[d][j] = k[j][d], zero-padded to ATT_BK columns */
  for (int d = 0; d < hd; d++) {
    float *row = kt + (size_t)d * ATT_BK;
    int j = 0;
    for (; j < bn; j++) row[j] = k[(size_t)j * hd + d];
    for (; j < ATT_BK; j++) row[j] = 0;
  }
  /* s[r][j] = qs[r] · k[j] */
  for (int r0 = 0; r0 < nr; r0 += 4) {
    const float *q0 = qs + (size_t)r0 * hd, *q1 = q0 + hd, *q2 = q1 + hd, *q3 = q2 + hd; /* qs is padded to 4 rows */
    for (int j0 = 0; j0 < bn; j0 += 16) {
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
      const float *kp = kt + j0;
      for (int d = 0; d < hd; d++, kp += ATT_BK) {
        __m256 k0 = _mm256_load_ps(kp), k1 = _mm256_load_ps(kp + 8);
        __m256 b = _mm256_broadcast_ss(q0 + d);
        a00 = _mm256_fmadd_ps(b, k0, a00), a01 = _mm256_fmadd_ps(b, k1, a01);
        b = _mm256_broadcast_ss(q1 + d);
        a10 = _mm256_fmadd_ps(b, k0, a10), a11 = _mm256_fmadd_ps(b, k1, a11);
        b = _mm256_broadcast_ss(q2 + d);
        a20 = _mm256_fmadd_ps(b, k0, a20), a21 = _mm256_fmadd_ps(b, k1, a21);
        b = _mm256_broadcast_ss(q3 + d);
        a30 = _mm256_fmadd_ps(b, k0, a30), a31 = _mm256_fmadd_ps(b, k1, a31);
      }
      float *sp = s + (size_t)r0 * ATT_BK + j0;
      _mm256_store_ps(sp, a00), _mm256_store_ps(sp + 8, a01);
      _mm256_store_ps(sp + ATT_BK, a10), _mm256_store_ps(sp + ATT_BK + 8, a11);
      _mm256_store_ps(sp + 2 * ATT_BK, a20), _mm256_store_ps(sp + 2 * ATT_BK + 8, a21);
      _mm256_store_ps(sp + 3 * ATT_BK, a30), _mm256_store_ps(sp + 3 * ATT_BK + 8, a31);
    }
  }
}

/* Online softmax of the score block s, then o += p · v (see att_block). */
AVX2_TARGET static void att_softmax_pv(int nr, int hd, const float *v, int bn, const int *valid, float *s, float *m,
                                       float *l, float *o) {
  /* online softmax: p = e^(s − m_new) on the visible entries, 0 elsewhere; rescale l and o by e^(m_old − m_new) */
  const int bn16 = (bn + 15) & ~15;
  for (int r = 0; r < nr; r++) {
    float *sr = s + (size_t)r * ATT_BK;
    int nv = valid[r];
    if (nv <= 0) {
      memset(sr, 0, (size_t)bn16 * 4);
      continue;
    }
    float mx = m[r];
    for (int j = 0; j < nv; j++) mx = sr[j] > mx ? sr[j] : mx;
    if (mx > m[r]) {
      float c = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
      l[r] *= c;
      float *orow = o + (size_t)r * hd;
      __m256 cv = _mm256_set1_ps(c);
      for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(orow + d, _mm256_mul_ps(cv, _mm256_loadu_ps(orow + d)));
      m[r] = mx;
    }
    __m256 mv = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= nv; j += 8) {
      __m256 p = exp256(_mm256_sub_ps(_mm256_load_ps(sr + j), mv));
      _mm256_store_ps(sr + j, p);
      sum = _mm256_add_ps(sum, p);
    }
    float tail = 0;
    for (; j < nv; j++) {
      sr[j] = expf(sr[j] - mx);
      tail += sr[j];
    }
    for (; j < bn16; j++) sr[j] = 0;
    l[r] += hsum(sum) + tail;
  }
  /* o[r] += Σ_j p[r][j] · v[j] in 4-row × 16-column tiles (8-column tail when hd % 16 == 8) */
  for (int r0 = 0; r0 < nr; r0 += 4) {
    const float *p0 = s + (size_t)r0 * ATT_BK, *p1 = p0 + ATT_BK, *p2 = p1 + ATT_BK, *p3 = p2 + ATT_BK;
    float *o0 = o + (size_t)r0 * hd, *o1 = o0 + hd, *o2 = o1 + hd, *o3 = o2 + hd; /* o is padded to 4 rows */
    int d0 = 0;
    for (; d0 + 16 <= hd; d0 += 16) {
      __m256 a00 = _mm256_loadu_ps(o0 + d0), a01 = _mm256_loadu_ps(o0 + d0 + 8);
      __m256 a10 = _mm256_loadu_ps(o1 + d0), a11 = _mm256_loadu_ps(o1 + d0 + 8);
      __m256 a20 = _mm256_loadu_ps(o2 + d0), a21 = _mm256_loadu_ps(o2 + d0 + 8);
      __m256 a30 = _mm256_loadu_ps(o3 + d0), a31 = _mm256_loadu_ps(o3 + d0 + 8);
      const float *vp = v + d0;
      for (int j = 0; j < bn; j++, vp += hd) {
        __m256 v0 = _mm256_loadu_ps(vp), v1 = _mm256_loadu_ps(vp + 8);
        __m256 b = _mm256_broadcast_ss(p0 + j);
        a00 = _mm256_fmadd_ps(b, v0, a00), a01 = _mm256_fmadd_ps(b, v1, a01);
        b = _mm256_broadcast_ss(p1 + j);
        a10 = _mm256_fmadd_ps(b, v0, a10), a11 = _mm256_fmadd_ps(b, v1, a11);
        b = _mm256_broadcast_ss(p2 + j);
        a20 = _mm256_fmadd_ps(b, v0, a20), a21 = _mm256_fmadd_ps(b, v1, a21);
        b = _mm256_broadcast_ss(p3 + j);
        a30 = _mm256_fmadd_ps(b, v0, a30), a31 = _mm256_fmadd_ps(b, v1, a31);
      }
      _mm256_storeu_ps(o0 + d0, a00), _mm256_storeu_ps(o0 + d0 + 8, a01);
      _mm256_storeu_ps(o1 + d0, a10), _mm256_storeu_ps(o1 + d0 + 8, a11);
      _mm256_storeu_ps(o2 + d0, a20), _mm256_storeu_ps(o2 + d0 + 8, a21);
      _mm256_storeu_ps(o3 + d0, a30), _mm256_storeu_ps(o3 + d0 + 8, a31);
    }
    if (d0 < hd) {
      __m256 a0 = _mm256_loadu_ps(o0 + d0), a1 = _mm256_loadu_ps(o1 + d0);
      __m256 a2 = _mm256_loadu_ps(o2 + d0), a3 = _mm256_loadu_ps(o3 + d0);
      const float *vp = v + d0;
      for (int j = 0; j < bn; j++, vp += hd) {
        __m256 v0 = _mm256_loadu_ps(vp);
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), v0, a0);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + j), v0, a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p2 + j), v0, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p3 + j), v0, a3);
      }
      _mm256_storeu_ps(o0 + d0, a0), _mm256_storeu_ps(o1 + d0, a1);
      _mm256_storeu_ps(o2 + d0, a2), _mm256_storeu_ps(o3 + d0, a3);
    }
  }
}

/* One thread's attention tile, carved from g_att_tile[tid]: kt (hd × ATT_BK), s (ATT_BQ × ATT_BK), qs and o
 * (ATT_BQ × hd each), m, l and valid (ATT_BQ each). */
typedef struct {
  float *kt, *s, *qs, *o, *m, *l;
  int *valid;
} att_tile_t;

static att_tile_t att_tile_at(float *base, int hd) {
  att_tile_t t;
  t.kt = base;
  t.s = t.kt + (size_t)hd * ATT_BK;
  t.qs = t.s + (size_t)ATT_BQ * ATT_BK;
  t.o = t.qs + (size_t)ATT_BQ * hd;
  t.m = t.o + (size_t)ATT_BQ * hd;
  t.l = t.m + ATT_BQ;
  t.valid = (int *)(t.l + ATT_BQ);
  return t;
}

/* F16 K/V: this thread's widened key and value blocks (ATT_BK rows each), or 0 with a->failed set. */
static int att_kv_scratch(att_t *a, int tid, float **kbuf, float **vbuf) {
  if (!a->half) return 1;
  *kbuf = buf_get(&g_kvrow[tid], (size_t)2 * ATT_BK * a->hd + 16);
  if (!*kbuf) {
    atomic_store(&a->failed, 1);
    return 0;
  }
  *vbuf = *kbuf + (size_t)ATT_BK * a->hd;
  return 1;
}

/* This thread's tile (grown on demand), or 0 with a->failed set. */
static int att_tile_get(att_t *a, int tid, att_tile_t *t) {
  size_t need = (size_t)2 * ATT_BQ * a->hd + (size_t)a->hd * ATT_BK + (size_t)ATT_BQ * ATT_BK + 3 * ATT_BQ + 16;
  float *base = buf_get(&g_att_tile[tid], need);
  if (!base) {
    atomic_store(&a->failed, 1);
    return 0;
  }
  *t = att_tile_at(base, a->hd);
  return 1;
}

/* Rows r < nr4 of the tile: queries i0 + r (r < nr) scaled into qs, zero rows after; empty softmax state. */
static void att_tile_start(const att_t *a, const att_tile_t *t, int i0, int nr, int nr4) {
  const int hd = a->hd;
  for (int r = 0; r < nr4; r++) {
    float *qr = t->qs + (size_t)r * hd;
    if (r < nr) {
      const float *src = a->q + (size_t)(i0 + r) * a->qStride;
      for (int d = 0; d < hd; d++) qr[d] = src[d] * a->scale;
    } else {
      memset(qr, 0, (size_t)hd * 4);
    }
    memset(t->o + (size_t)r * hd, 0, (size_t)hd * 4);
    t->m[r] = -INFINITY;
    t->l[r] = 0;
  }
}

AVX2_TARGET static void att_tiled_job(void *arg, int tid) {
  att_t *a = arg;
  const int hd = a->hd;
  att_tile_t t;
  if (!att_tile_get(a, tid, &t)) return;
  float *kbuf = NULL, *vbuf = NULL;
  if (!att_kv_scratch(a, tid, &kbuf, &vbuf)) return;
  float *kt = t.kt, *s = t.s, *qs = t.qs, *o = t.o, *m = t.m, *l = t.l;
  int *valid = t.valid;
  const int nblocks = (a->nq + ATT_BQ - 1) / ATT_BQ;
  const int n1 = a->to1 - a->from1, n2 = a->to2 - a->from2;
  for (;;) {
    int bi = atomic_fetch_add(&a->next, 1);
    if (bi >= nblocks) break;
    /* the last query blocks see the most keys under a causal mask: hand them out first */
    int i0 = (nblocks - 1 - bi) * ATT_BQ, nr = a->nq - i0 < ATT_BQ ? a->nq - i0 : ATT_BQ;
    int nr4 = (nr + 3) & ~3, c1max = 0;
    att_tile_start(a, &t, i0, nr, nr4);
    for (int r = 0; r < nr; r++) {
      int c1 = a->count1 ? a->count1[i0 + r] : n1;
      if (c1 > c1max) c1max = c1;
    }
    for (int b0 = 0; b0 < c1max; b0 += ATT_BK) {
      int bn = c1max - b0 < ATT_BK ? c1max - b0 : ATT_BK;
      for (int r = 0; r < nr4; r++) {
        int c1 = r < nr ? (a->count1 ? a->count1[i0 + r] : n1) : 0, vis = c1 - b0;
        valid[r] = vis < 0 ? 0 : vis > bn ? bn : vis;
      }
      const float *kb = kv_rows(a, a->k1, a->from1 + b0, bn, kbuf), *vb = kv_rows(a, a->v1, a->from1 + b0, bn, vbuf);
      att_block(qs, nr4, hd, kb, vb, bn, valid, kt, s, m, l, o, 0);
    }
    for (int b0 = 0; b0 < n2; b0 += ATT_BK) {
      int bn = n2 - b0 < ATT_BK ? n2 - b0 : ATT_BK;
      for (int r = 0; r < nr4; r++) valid[r] = r < nr ? bn : 0;
      const float *kb = kv_rows(a, a->k2, a->from2 + b0, bn, kbuf), *vb = kv_rows(a, a->v2, a->from2 + b0, bn, vbuf);
      att_block(qs, nr4, hd, kb, vb, bn, valid, kt, s, m, l, o, 0);
    }
    for (int r = 0; r < nr; r++) {
      float *dst = a->out + (size_t)(i0 + r) * a->oStride;
      const float *src = o + (size_t)r * hd;
      float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
      for (int d = 0; d < hd; d++) dst[d] = src[d] * inv;
    }
  }
}
/*
 * Decode (at most ATT_FEW queries that all see every entry, e.g. one token's query heads of a KV group): the
 * entries are split into chunks across threads (flash-decoding). Each chunk gets its own online-softmax state
 * (m, l, o) and the caller merges the states in chunk order, so the result is bit-identical whatever the thread
 * count or which thread took which chunk (profiles and resumes must reproduce exactly). K and V are read once for
 * all the queries.
 */
#define ATT_FEW 8
#define ATT_CHUNK 256
/* Floats of one chunk's state: m and l (ATT_FEW each), then o (ATT_FEW × hd). */
#define ATT_STATE(hd) ((size_t)2 * ATT_FEW + (size_t)ATT_FEW * (hd))
static buf_t g_att_chunks;
AVX2_TARGET static void att_decode_job(void *arg, int tid) {
  att_t *a = arg;
  const int hd = a->hd, nr4 = (a->nq + 3) & ~3;
  att_tile_t t;
  if (!att_tile_get(a, tid, &t)) return;
  float *kbuf = NULL, *vbuf = NULL;
  if (!att_kv_scratch(a, tid, &kbuf, &vbuf)) return;
  const int n1 = a->to1 - a->from1, n = n1 + (a->to2 - a->from2);
  const int nchunks = (n + ATT_CHUNK - 1) / ATT_CHUNK;
  int started = 0;
  for (;;) {
    int c = atomic_fetch_add(&a->next, 1);
    if (c >= nchunks) break;
    if (!started) {
      started = 1;
      att_tile_start(a, &t, 0, a->nq, nr4);
    }
    float *m = a->cstate + (size_t)c * ATT_STATE(hd), *l = m + ATT_FEW, *o = l + ATT_FEW;
    for (int r = 0; r < nr4; r++) m[r] = -INFINITY, l[r] = 0;
    memset(o, 0, (size_t)nr4 * hd * 4);
    int e0 = c * ATT_CHUNK, e1 = e0 + ATT_CHUNK < n ? e0 + ATT_CHUNK : n;
    for (int b0 = e0; b0 < e1;) {
      /* a block never crosses the boundary between the two segments */
      int lim = b0 < n1 ? (e1 < n1 ? e1 : n1) : e1;
      int bn = lim - b0 < ATT_BK ? lim - b0 : ATT_BK;
      const float *k = b0 < n1 ? kv_rows(a, a->k1, a->from1 + b0, bn, kbuf) : kv_rows(a, a->k2, a->from2 + b0 - n1, bn, kbuf);
      const float *v = b0 < n1 ? kv_rows(a, a->v1, a->from1 + b0, bn, vbuf) : kv_rows(a, a->v2, a->from2 + b0 - n1, bn, vbuf);
      for (int r = 0; r < nr4; r++) t.valid[r] = r < a->nq ? bn : 0;
      att_block(t.qs, nr4, hd, k, v, bn, t.valid, t.kt, t.s, m, l, o, 1);
      b0 += bn;
    }
  }
}

/* Merge the per-chunk states of att_decode_job into the output rows, in chunk order (a fixed reduction order). */
static void att_decode_merge(att_t *a, int nchunks) {
  const int hd = a->hd;
  for (int r = 0; r < a->nq; r++) {
    float mx = -INFINITY;
    for (int c = 0; c < nchunks; c++) {
      const float *mc = a->cstate + (size_t)c * ATT_STATE(hd);
      if (mc[r] > mx) mx = mc[r];
    }
    float *dst = a->out + (size_t)r * a->oStride;
    memset(dst, 0, (size_t)hd * 4);
    float sum = 0;
    for (int c = 0; c < nchunks; c++) {
      const float *mc = a->cstate + (size_t)c * ATT_STATE(hd), *lc = mc + ATT_FEW, *oc = lc + ATT_FEW;
      if (lc[r] <= 0) continue;
      float w = expf(mc[r] - mx);
      sum += w * lc[r];
      for (int d = 0; d < hd; d++) dst[d] += w * oc[(size_t)r * hd + d];
    }
    float inv = sum > 0 ? 1.0f / sum : 0.0f;
    for (int d = 0; d < hd; d++) dst[d] *= inv;
  }
}
#endif


#if COKV_X86
AVX2_TARGET static void swiglu_avx2(float *gate, const float *up, size_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 g = _mm256_loadu_ps(gate + i);
    __m256 e = exp256(_mm256_sub_ps(zero, g));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; i++) {
    float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

/* Sum of squares in double (8 lanes of float partial sums per 64 elements, widened), like the TS reference. */
AVX2_TARGET static void rmsnorm_avx2(float *out, const float *x, const float *w, int rows, int dim, float eps) {
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * dim;
    float *o = out + (size_t)r * dim;
    __m256d acc0 = _mm256_setzero_pd(), acc1 = acc0;
    int i = 0;
    for (; i + 8 <= dim; i += 8) {
      __m256 v = _mm256_loadu_ps(xr + i);
      __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      acc0 = _mm256_fmadd_pd(lo, lo, acc0);
      acc1 = _mm256_fmadd_pd(hi, hi, acc1);
    }
    double buf[4];
    _mm256_storeu_pd(buf, _mm256_add_pd(acc0, acc1));
    double ss = (buf[0] + buf[1]) + (buf[2] + buf[3]);
    for (; i < dim; i++) ss += (double)xr[i] * xr[i];
    float inv = (float)(1.0 / sqrt(ss / dim + eps));
    __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= dim; i += 8)
      _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(xr + i), iv)));
    for (; i < dim; i++) o[i] = w[i] * (xr[i] * inv);
  }
}
#endif

static int attend_impl(float *out, int oStride, const float *q, int qStride, int nq, int hd, float scale,
                       const void *k1, const void *v1, int from1, int to1, const int *count1,
                       const void *k2, const void *v2, int from2, int to2, int half) {
  pthread_once(&g_init_once, init_once);
  int nthreads = cokv_threads();
  pthread_mutex_lock(&g_call_mu);
  att_t a;
  memset(&a, 0, sizeof a);
  a.out = out, a.oStride = oStride, a.q = q, a.qStride = qStride, a.nq = nq, a.hd = hd, a.scale = scale;
  a.k1 = k1, a.v1 = v1, a.from1 = from1, a.to1 = to1, a.count1 = count1;
  a.k2 = k2, a.v2 = v2, a.from2 = from2, a.to2 = to2, a.half = half;
  atomic_init(&a.next, 0);
  atomic_init(&a.failed, 0);
  double work = (double)nq * ((to1 - from1) + (to2 - from2)) * hd;
  void (*job)(void *, int) = att_job;
  int nt = work < 65536 ? 1 : nthreads;
#if COKV_X86
  if (g_simd && hd % 8 == 0) {
    int same = 1; /* every query sees all of segment 1 */
    for (int i = 0; count1 && i < nq && same; i++) same = count1[i] == to1 - from1;
    if (nq <= ATT_FEW && same) {
      /* Decode: the few queries of a KV group share one pass over K/V, split across threads by entries. */
      int nchunks = ((to1 - from1) + (to2 - from2) + ATT_CHUNK - 1) / ATT_CHUNK;
      a.cstate = buf_get(&g_att_chunks, (size_t)(nchunks > 0 ? nchunks : 1) * ATT_STATE(hd));
      if (!a.cstate) {
        pthread_mutex_unlock(&g_call_mu);
        return -1;
      }
      if (nt > nchunks) nt = nchunks;
      if (nt > g_nthreads) nt = g_nthreads;
      pool_run(att_decode_job, &a, nt);
      if (!atomic_load(&a.failed)) att_decode_merge(&a, nchunks);
      pthread_mutex_unlock(&g_call_mu);
      return atomic_load(&a.failed) ? -1 : 0;
    }
    /* Several queries (prefill, batched rows) share key blocks in the tiled kernel. */
    if (nq >= 4) job = att_tiled_job;
  }
#endif
  pool_run(job, &a, nt);
  pthread_mutex_unlock(&g_call_mu);
  return atomic_load(&a.failed) ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Element-wise layers: SwiGLU and RMSNorm (vectorised; the exp in SiLU is most of a prefill's non-matmul time)    */

int cokv_attend(float *out, int oStride, const float *q, int qStride, int nq, int hd, float scale,
                const float *k1, const float *v1, int from1, int to1, const int *count1,
                const float *k2, const float *v2, int from2, int to2) {
  return attend_impl(out, oStride, q, qStride, nq, hd, scale, k1, v1, from1, to1, count1, k2, v2, from2, to2, 0);
}

int cokv_attend16(float *out, int oStride, const float *q, int qStride, int nq, int hd, float scale,
                  const uint16_t *k1, const uint16_t *v1, int from1, int to1, const int *count1,
                  const uint16_t *k2, const uint16_t *v2, int from2, int to2) {
  return attend_impl(out, oStride, q, qStride, nq, hd, scale, k1, v1, from1, to1, count1, k2, v2, from2, to2, 1);
}

void cokv_swiglu(float *gate, const float *up, size_t n) {
  pthread_once(&g_init_once, init_once);
  size_t i = 0;
#if COKV_X86
  if (g_simd) {
    swiglu_avx2(gate, up, n);
    return;
  }
#endif
  for (; i < n; i++) {
    float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

void cokv_add(float *out, const float *x, size_t n) {
  /* a plain loop: the compiler vectorizes it for the baseline ISA, and it is bound by memory anyway */
  for (size_t i = 0; i < n; i++) out[i] += x[i];
}

void cokv_rmsnorm(float *out, const float *x, const float *w, int rows, int dim, float eps) {
  pthread_once(&g_init_once, init_once);
#if COKV_X86
  if (g_simd) {
    rmsnorm_avx2(out, x, w, rows, dim, eps);
    return;
  }
#endif
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * dim;
    float *o = out + (size_t)r * dim;
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
    float inv = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++) o[i] = w[i] * (xr[i] * inv);
  }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Non-finite scan (load-time check of weights)                                                                   */

/* Block layout of a type for the scan: bytes and elements per block, byte offsets of its f16 scales (-1: none). */
static int scale_fields(int dt, int *bytes, int *elems, int *o0, int *o1) {
  *o1 = -1;
  switch (dt) {
    case DT_Q8_0: *bytes = 34; *elems = 32; *o0 = 0; return 1;
    case DT_Q4_0: case DT_IQ4_NL: *bytes = 18; *elems = 32; *o0 = 0; return 1;
    case DT_Q4_1: *bytes = 20; *elems = 32; *o0 = 0; *o1 = 2; return 1;
    case DT_Q5_0: *bytes = 22; *elems = 32; *o0 = 0; return 1;
    case DT_Q5_1: *bytes = 24; *elems = 32; *o0 = 0; *o1 = 2; return 1;
    case DT_Q2_K: *bytes = 84; *elems = 256; *o0 = 80; *o1 = 82; return 1;
    case DT_Q3_K: *bytes = 110; *elems = 256; *o0 = 108; return 1;
    case DT_Q4_K: *bytes = 144; *elems = 256; *o0 = 0; *o1 = 2; return 1;
    case DT_Q5_K: *bytes = 176; *elems = 256; *o0 = 0; *o1 = 2; return 1;
    case DT_Q6_K: *bytes = 210; *elems = 256; *o0 = 208; return 1;
    case DT_IQ4_XS: *bytes = 136; *elems = 256; *o0 = 0; return 1;
    default: return 0;
  }
}

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Chunks are OR-reduced without early exit (the compiler vectorizes that); only a bad chunk is searched again. */
#define SCAN_CHUNK 4096

static int64_t scan_range(const void *data, int dt, int64_t n) {
  const uint8_t *p = (const uint8_t *)data;
  if (n < 0) return -2;
  if (dt == DT_F32) {
    for (int64_t i0 = 0; i0 < n; i0 += SCAN_CHUNK) {
      int64_t i1 = i0 + SCAN_CHUNK < n ? i0 + SCAN_CHUNK : n;
      unsigned bad = 0;
      for (int64_t i = i0; i < i1; i++) {
        uint32_t u;
        memcpy(&u, p + 4 * i, 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
      }
      if (bad) {
        for (int64_t i = i0; i < i1; i++) {
          uint32_t u;
          memcpy(&u, p + 4 * i, 4);
          if ((u & 0x7f800000u) == 0x7f800000u) return i;
        }
      }
    }
    return -1;
  }
  if (dt == DT_F16 || dt == DT_BF16) {
    const uint16_t mask = dt == DT_F16 ? 0x7c00 : 0x7f80;
    for (int64_t i0 = 0; i0 < n; i0 += SCAN_CHUNK) {
      int64_t i1 = i0 + SCAN_CHUNK < n ? i0 + SCAN_CHUNK : n;
      unsigned bad = 0;
      for (int64_t i = i0; i < i1; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        bad |= (h & mask) == mask;
      }
      if (bad) {
        for (int64_t i = i0; i < i1; i++) {
          uint16_t h;
          memcpy(&h, p + 2 * i, 2);
          if ((h & mask) == mask) return i;
        }
      }
    }
    return -1;
  }
  int bytes, elems, o0, o1;
  if (!scale_fields(dt, &bytes, &elems, &o0, &o1) || n % elems != 0) return -2;
  int64_t nb = n / elems;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *q = p + (size_t)b * (size_t)bytes;
    if ((le16(q + o0) & 0x7c00) == 0x7c00 || (o1 >= 0 && (le16(q + o1) & 0x7c00) == 0x7c00)) return b * elems;
  }
  return -1;
}

/* Big tensors are scanned on the pool in chunks (the scan is memory-bound; one core reads ~15 GB/s); each thread
 * keeps the smallest bad index found, and chunks past it are skipped, so the result is the serial one. Only above
 * SCAN_PAR_MIN elements: between the reads of a load the helpers fall asleep, and waking them cost more than they
 * saved on a 4M-element F16 matrix (measured with bench/scan-cost.ts), while a 44M-element embedding gains. */
#define SCAN_PAR_CHUNK (1 << 20) /* elements: a multiple of every block size */
#define SCAN_PAR_MIN (1 << 24)

typedef struct {
  const uint8_t *p;
  int dt;
  int64_t n, chunks;
  size_t unit_bytes, unit_elems;
  atomic_llong next, best;
} scan_t;

static void scan_job(void *arg, int tid) {
  (void)tid;
  scan_t *s = (scan_t *)arg;
  for (;;) {
    int64_t c = atomic_fetch_add(&s->next, 1);
    if (c >= s->chunks) return;
    int64_t i0 = c * SCAN_PAR_CHUNK, cnt = s->n - i0 < SCAN_PAR_CHUNK ? s->n - i0 : SCAN_PAR_CHUNK;
    int64_t best = atomic_load(&s->best);
    if (best >= 0 && best < i0) continue;
    int64_t r = scan_range(s->p + (size_t)(i0 / (int64_t)s->unit_elems) * s->unit_bytes, s->dt, cnt);
    if (r < 0) continue;
    r += i0;
    while ((best = atomic_load(&s->best)) < 0 || r < best) {
      if (atomic_compare_exchange_weak(&s->best, &best, r)) break;
    }
  }
}

int64_t cokv_first_nonfinite(const void *data, int dt, int64_t n) {
  pthread_once(&g_init_once, init_once);
  int bytes, elems, o0, o1;
  size_t ub, ue;
  if (dt == DT_F32) ub = 4, ue = 1;
  else if (dt == DT_F16 || dt == DT_BF16) ub = 2, ue = 1;
  else if (scale_fields(dt, &bytes, &elems, &o0, &o1)) ub = (size_t)bytes, ue = (size_t)elems;
  else return -2;
  int nthreads = cokv_threads();
  if (n < 0 || n % (int64_t)ue != 0) return -2;
  if (n < SCAN_PAR_MIN || nthreads <= 1) return scan_range(data, dt, n);
  scan_t s;
  s.p = (const uint8_t *)data, s.dt = dt, s.n = n, s.chunks = (n + SCAN_PAR_CHUNK - 1) / SCAN_PAR_CHUNK;
  s.unit_bytes = ub, s.unit_elems = ue;
  atomic_init(&s.next, 0);
  atomic_init(&s.best, -1);
  pthread_mutex_lock(&g_call_mu);
  pool_run(scan_job, &s, nthreads);
  pthread_mutex_unlock(&g_call_mu);
  return atomic_load(&s.best);
}
