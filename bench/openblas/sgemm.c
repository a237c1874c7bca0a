/*
 * Times OpenBLAS's cblas_sgemm for out[M][N] = x[M][K] * W[N][K]^T (the layout of cokv's matmul), compiled by
 * bench/openblas.ts at bench time. Usage: sgemm M K N THREADS. Prints one line: "M K N THREADS GFLOPS".
 * Median over 3 trials of at least 0.25 s each, after one warm-up call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The two OpenBLAS entry points used, declared here so that only the runtime library is needed (no cblas.h). */
enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
void openblas_set_num_threads(int n);

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s M K N THREADS\n", argv[0]);
    return 2;
  }
  int M = atoi(argv[1]), K = atoi(argv[2]), N = atoi(argv[3]), T = atoi(argv[4]);
  openblas_set_num_threads(T);
  float *x = malloc(sizeof(float) * (size_t)M * K);
  float *w = malloc(sizeof(float) * (size_t)N * K);
  float *out = malloc(sizeof(float) * (size_t)M * N);
  if (!x || !w || !out) return 1;
  unsigned s = 12345u;
  for (size_t i = 0; i < (size_t)M * K; i++) { s = s * 1664525u + 1013904223u; x[i] = (float)(s >> 8) / 16777216.0f - 0.5f; }
  for (size_t i = 0; i < (size_t)N * K; i++) { s = s * 1664525u + 1013904223u; w[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f; }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, out, N);
  double trials[3];
  for (int t = 0; t < 3; t++) {
    long n = 0;
    double t0 = now(), el;
    do {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, out, N);
      n++;
      el = now() - t0;
    } while (el < 0.25);
    trials[t] = el / n;
  }
  qsort(trials, 3, sizeof(double), cmp);
  printf("%d %d %d %d %.3f\n", M, K, N, T, 2.0 * M * N * K / trials[1] / 1e9);
  free(x); free(w); free(out);
  return 0;
}
