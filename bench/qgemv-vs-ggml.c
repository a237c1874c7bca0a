/*
 * GEMV (decode: one activation row) throughput of cokv's integer dots against llama.cpp's own CPU kernels, in one
 * process, interleaved (issue #13): the same weight bytes, the same activation row, the same thread counts.
 *
 * Engines: cokv (cokv_matmul with MM_INT8_X, native/kernels.c + qdot.c), ggml (a MUL_MAT node computed by
 * ggml_graph_compute on a persistent ggml threadpool, weights in a plain CPU buffer: ggml_vec_dot_*_q8_K / *_q8_0)
 * and, for the types ggml-cpu/repack.cpp repacks on AVX2 (Q4_0 -> q4_0_8x8, Q4_K -> q4_K_8x8, IQ4_NL -> iq4_nl_8x8),
 * ggml-repack (weights in the CPU_REPACK buffer llama.cpp loads models into: ggml_gemv_q4_0_8x8_q8_0,
 * ggml_gemv_q4_K_8x8_q8_K, ...; Q5_0, Q8_0 and Q6_K have no AVX2 repack, so llama.cpp runs the plain kernel on
 * them), plus memread (one thread summing the weight bytes with AVX2 loads: the streaming ceiling of one core).
 * "cold": each shape is stored in enough copies to pass 96 MiB, cycled call by call, so weights stream from DRAM as
 * in a real decode step (a 1B model's weights never stay in cache); "hot": one copy, re-read from L2/L3.
 * Each cell is the median over --rounds interleaved rounds (engine × threads × shape inside a round).
 *
 * Build and run with bench/qgemv-vs-ggml.sh (needs a llama.cpp build, ../shared/docs/llamacpp-tools.md; GGML_NATIVE=OFF,
 * AVX2); `--before REV` links the cokv kernels of commit REV in as a second engine (cokv-before) for before/after
 * numbers from one process. Options of the binary:
 *       [--rounds 7] [--threads 1,2] [--mode cold|hot|both] [--engines cokv,cokv-before,ggml,ggml-repack,memread]
 *      [--stat median|min] [--cell-ms 40] [--shapes q4_k:2048x2048,q4_k:8192x2048,q6_k:2048x2048,q6_k:8192x2048,q6_k:128256x2048]   (N x K)
 * Types: q4_0, q5_0, q8_0, iq4_nl (32-element blocks), q4_k, q5_k, q6_k. `--shapes k` is the default list above,
 * `--shapes q32` the 32-element types at the Qwen2.5-0.5B (896, 4864×896) and Llama-3.2-1B (2048, 8192×2048)
 * shapes. The checks before the timing print max |Δ| of cokv (1 and 2 threads, and cokv-before) and of ggml-repack
 * against ggml's plain kernel on each shape.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "kernels.h"

#ifdef COKV_BEFORE
/* The same kernels at an earlier commit, linked in with their cokv_ symbols renamed (bench/qgemv-vs-ggml.sh). */
int before_cokv_matmul(float *out, const float *x, int m, int n, int k, const void *w, int dt, int flags);
int before_cokv_set_threads(int n);
#endif

#define MAX_SHAPES 16
#define MAX_COPIES 128
#define COLD_BYTES (96u << 20)

typedef struct {
  const char *tname;
  int dt;                 /* cokv / ggml type id (the same numbers) */
  int n, k, bytes_per_block, f16_off[2], nf16;
  size_t wbytes;          /* one copy */
  int copies_cold;
  uint8_t *w[MAX_COPIES]; /* cokv + ggml (plain) read these */
  struct ggml_tensor *tw[MAX_COPIES], *trw[MAX_COPIES]; /* plain tensors over w[i]; repacked copies */
  struct ggml_tensor *tx, *tout;
  struct ggml_cgraph *gf;
  float *x, *out_cokv, *out_ggml, *out_ref;
} shape_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: on a loaded machine a 1-thread cell is then timed only while it ran. */
static double thread_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void fill_weights(shape_t *s, uint8_t *dst, uint32_t seed) {
  uint32_t st = seed;
  for (size_t i = 0; i < s->wbytes; i++) {
    st = st * 1103515245u + 12345u;
    dst[i] = (uint8_t)(st >> 24);
  }
  size_t nb = s->wbytes / s->bytes_per_block;
  for (size_t b = 0; b < nb; b++)
    for (int f = 0; f < s->nf16; f++) {
      ggml_fp16_t h = ggml_fp32_to_fp16(0.001f + (float)((b * 37) % 101) / 10000.0f);
      memcpy(dst + b * s->bytes_per_block + s->f16_off[f], &h, 2);
    }
}

/* One core streaming the weight bytes (the ceiling for a memory-bound GEMV on one thread). */
__attribute__((target("avx2"))) static uint64_t memread(const uint8_t *p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t v[4];
  _mm256_storeu_si256((__m256i *)v, s);
  return v[0] + v[1] + v[2] + v[3];
}

static const char *opt(int argc, char **argv, const char *name, const char *def) {
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], name)) return argv[i + 1];
  return def;
}

int main(int argc, char **argv) {
  int rounds = atoi(opt(argc, argv, "--rounds", "7"));
  const char *threads_s = opt(argc, argv, "--threads", "1,2");
  const char *mode_s = opt(argc, argv, "--mode", "cold");
  int use_min = !strcmp(opt(argc, argv, "--stat", "median"), "min");
  double cell_s = atof(opt(argc, argv, "--cell-ms", "40")) / 1000;
  const char *engines_s = opt(argc, argv, "--engines", "cokv-before,cokv,ggml,ggml-repack,memread");
  const char *shapes_s = opt(argc, argv, "--shapes", "k");
  if (!strcmp(shapes_s, "k")) shapes_s = "q4_k:2048x2048,q4_k:8192x2048,q6_k:2048x2048,q6_k:8192x2048,q6_k:128256x2048";
  else if (!strcmp(shapes_s, "q32"))
    shapes_s = "q8_0:896x896,q8_0:4864x896,q8_0:2048x2048,q8_0:8192x2048,q5_0:896x896,q5_0:4864x896,q5_0:2048x2048,"
               "q5_0:8192x2048,q4_0:896x896,q4_0:4864x896,q4_0:2048x2048,q4_0:8192x2048";
  int threads[4], nthr = 0;
  for (const char *p = threads_s; *p && nthr < 4;) {
    threads[nthr++] = atoi(p);
    p = strchr(p, ',');
    if (!p) break;
    p++;
  }
  int want_cokv = 0, want_ggml = 0, want_rep = strstr(engines_s, "ggml-repack") != NULL;
  int want_mem = strstr(engines_s, "memread") != NULL;
  for (const char *p = engines_s; (p = strstr(p, "cokv"));) {
    if (strncmp(p, "cokv-before", 11)) want_cokv = 1;
    p += 4;
  }
  for (const char *p = engines_s; (p = strstr(p, "ggml"));) {
    if (strncmp(p, "ggml-repack", 11)) want_ggml = 1;
    p += 4;
  }
  int modes[2], nmodes = 0; /* 1 = cold, 0 = hot */
  if (!strcmp(mode_s, "cold") || !strcmp(mode_s, "both")) modes[nmodes++] = 1;
  if (!strcmp(mode_s, "hot") || !strcmp(mode_s, "both")) modes[nmodes++] = 0;

  ggml_cpu_init();
  shape_t shapes[MAX_SHAPES];
  int ns = 0;
  char *sdup = strdup(shapes_s);
  for (char *tok = strtok(sdup, ","); tok && ns < MAX_SHAPES; tok = strtok(NULL, ",")) {
    shape_t *s = &shapes[ns];
    memset(s, 0, sizeof *s);
    char tn[16];
    if (sscanf(tok, "%15[^:]:%dx%d", tn, &s->n, &s->k) != 3) {
      fprintf(stderr, "qgemv-vs-ggml: --shapes: bad entry '%s' (want type:NxK)\n", tok);
      return 1;
    }
    if (!strcmp(tn, "q4_k")) s->tname = "Q4_K", s->dt = DT_Q4_K, s->bytes_per_block = 144, s->f16_off[0] = 0, s->f16_off[1] = 2, s->nf16 = 2;
    else if (!strcmp(tn, "q6_k")) s->tname = "Q6_K", s->dt = DT_Q6_K, s->bytes_per_block = 210, s->f16_off[0] = 208, s->nf16 = 1;
    else if (!strcmp(tn, "q5_k")) s->tname = "Q5_K", s->dt = DT_Q5_K, s->bytes_per_block = 176, s->f16_off[0] = 0, s->f16_off[1] = 2, s->nf16 = 2;
    else if (!strcmp(tn, "q8_0")) s->tname = "Q8_0", s->dt = DT_Q8_0, s->bytes_per_block = 34, s->f16_off[0] = 0, s->nf16 = 1;
    else if (!strcmp(tn, "q5_0")) s->tname = "Q5_0", s->dt = DT_Q5_0, s->bytes_per_block = 22, s->f16_off[0] = 0, s->nf16 = 1;
    else if (!strcmp(tn, "q4_0")) s->tname = "Q4_0", s->dt = DT_Q4_0, s->bytes_per_block = 18, s->f16_off[0] = 0, s->nf16 = 1;
    else if (!strcmp(tn, "iq4_nl")) s->tname = "IQ4_NL", s->dt = DT_IQ4_NL, s->bytes_per_block = 18, s->f16_off[0] = 0, s->nf16 = 1;
    else {
      fprintf(stderr, "qgemv-vs-ggml: --shapes: unknown type '%s' (q4_0, q5_0, q8_0, iq4_nl, q4_k, q5_k, q6_k)\n", tn);
      return 1;
    }
    int elems = s->dt == DT_Q8_0 || s->dt == DT_Q5_0 || s->dt == DT_Q4_0 || s->dt == DT_IQ4_NL ? 32 : 256;
    if (s->k % elems || s->n % 8) {
      fprintf(stderr, "qgemv-vs-ggml: --shapes: %s: K must be a multiple of %d and N of 8\n", tok, elems);
      return 1;
    }
    s->wbytes = cokv_row_bytes(s->dt, s->k) * (size_t)s->n;
    s->copies_cold = (int)((COLD_BYTES + s->wbytes - 1) / s->wbytes);
    if (s->copies_cold > MAX_COPIES) s->copies_cold = MAX_COPIES;
    ns++;
  }

  /* Plain copies (shared by cokv and ggml), activation and outputs. */
  size_t meta = ggml_tensor_overhead() * (MAX_COPIES * 2 + 4) * MAX_SHAPES + ggml_graph_overhead() * MAX_SHAPES;
  struct ggml_init_params ip = {meta, NULL, true};
  struct ggml_context *ctx = ggml_init(ip);
  struct ggml_context *ctx_rep = want_rep ? ggml_init(ip) : NULL;
  int any_rep = 0;
  for (int i = 0; i < ns; i++) {
    shape_t *s = &shapes[i];
    for (int c = 0; c < s->copies_cold; c++) {
      if (posix_memalign((void **)&s->w[c], 64, s->wbytes)) return 1;
      fill_weights(s, s->w[c], 12345u + (uint32_t)c);
      s->tw[c] = ggml_new_tensor_2d(ctx, (enum ggml_type)s->dt, s->k, s->n);
      s->tw[c]->data = s->w[c];
      if (want_rep && (s->dt == DT_Q4_K || s->dt == DT_Q4_0 || s->dt == DT_IQ4_NL)) s->trw[c] = ggml_new_tensor_2d(ctx_rep, (enum ggml_type)s->dt, s->k, s->n), any_rep = 1;
    }
    s->x = malloc(sizeof(float) * s->k);
    for (int j = 0; j < s->k; j++) s->x[j] = sinf(j * 0.37f);
    s->out_cokv = malloc(sizeof(float) * s->n);
    s->out_ggml = malloc(sizeof(float) * s->n);
    s->out_ref = malloc(sizeof(float) * s->n);
    s->tx = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, s->k);
    s->tx->data = s->x;
    s->tout = ggml_mul_mat(ctx, s->tw[0], s->tx);
    s->tout->data = s->out_ggml;
    s->gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(s->gf, s->tout);
  }
  if (any_rep) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t rep = NULL;
    for (ggml_backend_buffer_type_t *b = get_extra ? get_extra(dev) : NULL; b && *b; b++)
      if (!strcmp(ggml_backend_buft_name(*b), "CPU_REPACK")) rep = *b;
    if (!rep || !ggml_backend_alloc_ctx_tensors_from_buft(ctx_rep, rep)) {
      fprintf(stderr, "qgemv-vs-ggml: no CPU_REPACK buffer type in this ggml build\n");
      return 1;
    }
    for (int i = 0; i < ns; i++)
      for (int c = 0; c < shapes[i].copies_cold; c++)
        if (shapes[i].trw[c]) ggml_backend_tensor_set(shapes[i].trw[c], shapes[i].w[c], 0, shapes[i].wbytes);
  }

  struct ggml_threadpool *tp[4];
  size_t work_max = 0;
  for (int t = 0; t < nthr; t++) {
    struct ggml_threadpool_params pp = ggml_threadpool_params_default(threads[t]);
    tp[t] = ggml_threadpool_new(&pp);
    ggml_threadpool_pause(tp[t]);
    for (int i = 0; i < ns; i++) {
      struct ggml_cplan cp = ggml_graph_plan(shapes[i].gf, threads[t], tp[t]);
      if (cp.work_size > work_max) work_max = cp.work_size;
      if (shapes[i].trw[0]) {
        shapes[i].tout->src[0] = shapes[i].trw[0];
        cp = ggml_graph_plan(shapes[i].gf, threads[t], tp[t]);
        if (cp.work_size > work_max) work_max = cp.work_size;
        shapes[i].tout->src[0] = shapes[i].tw[0];
      }
    }
  }
  uint8_t *work = malloc(work_max + 64);

  /* Sanity: cokv (1 and 2 threads) and ggml-repack read the same bytes as ggml's plain kernel (results agree to
   * activation rounding; the q8_0 activations are the same numbers in both, so 32-element types agree to f32 sums). */
  for (int i = 0; i < ns; i++) {
    shape_t *s = &shapes[i];
    struct ggml_cplan cp = ggml_graph_plan(s->gf, 1, NULL);
    cp.work_data = work;
    ggml_graph_compute(s->gf, &cp);
    memcpy(s->out_ref, s->out_ggml, sizeof(float) * s->n);
    double mx = 0;
    for (int j = 0; j < s->n; j++)
      if (fabs(s->out_ref[j]) > mx) mx = fabs(s->out_ref[j]);
    for (int v = 0; v < 4; v++) {
      if (v == 3 && !s->trw[0]) continue;
      float *o = v == 3 ? s->out_ggml : s->out_cokv;
      if (v < 2) {
        cokv_set_threads(v + 1);
        cokv_matmul(o, s->x, 1, s->n, s->k, s->w[0], s->dt, MM_INT8_X);
      } else if (v == 2) {
#ifdef COKV_BEFORE
        before_cokv_set_threads(1);
        before_cokv_matmul(o, s->x, 1, s->n, s->k, s->w[0], s->dt, MM_INT8_X);
#else
        continue;
#endif
      } else {
        s->tout->src[0] = s->trw[0];
        cp = ggml_graph_plan(s->gf, 1, NULL);
        cp.work_data = work;
        ggml_graph_compute(s->gf, &cp);
        s->tout->src[0] = s->tw[0];
      }
      double md = 0;
      for (int j = 0; j < s->n; j++) {
        double d = fabs((double)o[j] - s->out_ref[j]);
        if (!(d <= md)) md = d; /* NaN counts */
      }
      const char *who[4] = {"cokv 1t", "cokv 2t", "cokv-before", "ggml-repack"};
      fprintf(stderr, "check %s %dx%d: max |%s - ggml| = %.3g (max |out| %.3g)\n", s->tname, s->n, s->k, who[v], md, mx);
    }
  }

  enum { E_BEFORE, E_COKV, E_GGML, E_REP, E_MEM, NE };
  const char *ename[NE] = {"cokv-before", "cokv", "ggml", "ggml-repack", "memread"};
#ifdef COKV_BEFORE
  int want_before = strstr(engines_s, "cokv-before") != NULL;
#else
  int want_before = 0;
#endif
  int on[NE] = {want_before, want_cokv, want_ggml, want_rep, want_mem};
  /* times[mode][shape][engine][thread][round] */
  static double times[2][MAX_SHAPES][NE][4][64], cputimes[2][MAX_SHAPES][NE][4][64];
  if (rounds > 64) rounds = 64;
  volatile uint64_t sink = 0;
  for (int r = 0; r < rounds; r++) {
    for (int mi = 0; mi < nmodes; mi++) {
      int cold = modes[mi];
      for (int i = 0; i < ns; i++) {
        shape_t *s = &shapes[i];
        int copies = cold ? s->copies_cold : 1;
        /* Calls per cell: ≥ 2 passes over the copies and ≥ --cell-ms of weight bytes at ~20 GB/s. */
        int reps = (int)(cell_s * 20e9 / s->wbytes);
        if (reps < 2 * copies) reps = 2 * copies;
        if (reps < 3) reps = 3;
        for (int e = 0; e < NE; e++) {
          if (!on[e] || (e == E_REP && !s->trw[0])) continue;
          for (int t = 0; t < nthr; t++) {
            int nt = threads[t];
            if (e == E_MEM && nt != 1) continue;
            struct ggml_cplan cp;
            if (e == E_GGML || e == E_REP) {
              ggml_threadpool_resume(tp[t]);
              s->tout->src[0] = e == E_REP ? s->trw[0] : s->tw[0];
              cp = ggml_graph_plan(s->gf, nt, tp[t]);
              cp.work_data = work;
            }
            if (e == E_COKV) cokv_set_threads(nt);
#ifdef COKV_BEFORE
            if (e == E_BEFORE) before_cokv_set_threads(nt);
#endif
            double t0 = 0, c0 = 0;
            for (int it = -copies; it < reps; it++) { /* one untimed pass over the copies first */
              if (it == 0) t0 = now_s(), c0 = thread_s();
              int c = (it + copies) % copies;
              if (e == E_COKV) cokv_matmul(s->out_cokv, s->x, 1, s->n, s->k, s->w[c], s->dt, MM_INT8_X);
              else if (e == E_MEM) sink += memread(s->w[c], s->wbytes);
#ifdef COKV_BEFORE
              else if (e == E_BEFORE) before_cokv_matmul(s->out_cokv, s->x, 1, s->n, s->k, s->w[c], s->dt, MM_INT8_X);
#endif
              else {
                s->tout->src[0] = e == E_REP ? s->trw[c] : s->tw[c];
                ggml_graph_compute(s->gf, &cp);
              }
            }
            times[cold][i][e][t][r] = (now_s() - t0) / reps;
            cputimes[cold][i][e][t][r] = (thread_s() - c0) / reps;
            if (e == E_GGML || e == E_REP) ggml_threadpool_pause(tp[t]);
            s->tout->src[0] = s->tw[0];
            usleep(2000); /* let the other engine's spinning workers go to sleep */
          }
        }
      }
    }
    fprintf(stderr, "round %d/%d done\n", r + 1, rounds);
  }

  double la[3] = {0, 0, 0};
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3) la[0] = la[1] = la[2] = 0;
    fclose(f);
  }
  printf("load average at the end: %.2f %.2f %.2f; %s of %d interleaved rounds; GB/s of weight bytes\n\n", la[0], la[1], la[2], use_min ? "minimum time" : "median", rounds);
  for (int clk = 0; clk < 2; clk++) {
    double (*tt)[MAX_SHAPES][NE][4][64] = clk ? cputimes : times;
    printf(clk ? "\nThe 1-thread cells timed by the thread's CPU time (CLOCK_THREAD_CPUTIME_ID: time descheduled by other load not counted):\n\n" : "Wall time:\n\n");
  printf("| type | N×K | MiB | cache |");
  for (int e = 0; e < NE; e++)
    for (int t = 0; t < nthr; t++)
      if (on[e] && !(e == E_MEM && threads[t] != 1) && !(clk && threads[t] != 1)) printf(" %s %dt |", ename[e], threads[t]);
  printf("\n|---|---|---|---|");
  for (int e = 0; e < NE; e++)
    for (int t = 0; t < nthr; t++)
      if (on[e] && !(e == E_MEM && threads[t] != 1) && !(clk && threads[t] != 1)) printf("---|");
  printf("\n");
  for (int mi = 0; mi < nmodes; mi++) {
    int cold = modes[mi];
    for (int i = 0; i < ns; i++) {
      shape_t *s = &shapes[i];
      printf("| %s | %d×%d | %.1f | %s |", s->tname, s->n, s->k, s->wbytes / 1048576.0, cold ? "cold" : "hot");
      for (int e = 0; e < NE; e++)
        for (int t = 0; t < nthr; t++) {
          if (!on[e] || (e == E_MEM && threads[t] != 1) || (clk && threads[t] != 1)) continue;
          if (e == E_REP && !s->trw[0]) {
            printf(" – |");
            continue;
          }
          double v[64];
          memcpy(v, tt[cold][i][e][t], sizeof(double) * rounds);
          qsort(v, rounds, sizeof(double), cmp_d);
          double med = use_min ? v[0] : rounds % 2 ? v[rounds / 2] : 0.5 * (v[rounds / 2 - 1] + v[rounds / 2]);
          printf(" %.1f |", s->wbytes / med / 1e9);
        }
      printf("\n");
    }
  }
  }
  (void)sink;
  return 0;
}
