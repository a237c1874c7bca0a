/*
 * The GEMM micro-kernel of qgemm.c, included there once per VNNI encoding: QG_MICRO (the function-name prefix),
 * QG_TARGET (its target attribute) and QG_DPBUSD(acc, u8 weights, s8 activations) are defined by the includer —
 * AVX512-VNNI (EVEX, `_mm256_dpbusd_epi32`) and AVX-VNNI (VEX, `_mm256_dpbusd_avx_epi32`). Not a public header.
 */
/*
 * out rows m0 .. m0+5 (< M), columns n0 .. n0+15 (< N) from one packed panel. The 12 int32 accumulators are named
 * variables and the B/4 steps of a block are unrolled (B a constant per instantiation), so they stay in registers.
 */
#define STEP(k4)                                                                                       \
  do {                                                                                                 \
    __m256i w0 = _mm256_load_si256((const __m256i *)(pu + (size_t)(k4) * 64));                        \
    __m256i w1 = _mm256_load_si256((const __m256i *)(pu + (size_t)(k4) * 64 + 32));                   \
    __m256i x;                                                                                         \
    x = _mm256_set1_epi32(ld4(x0 + (size_t)(k4) * 4)), c00 = QG_DPBUSD(c00, w0, x), c01 = QG_DPBUSD(c01, w1, x); \
    x = _mm256_set1_epi32(ld4(x1 + (size_t)(k4) * 4)), c10 = QG_DPBUSD(c10, w0, x), c11 = QG_DPBUSD(c11, w1, x); \
    x = _mm256_set1_epi32(ld4(x2 + (size_t)(k4) * 4)), c20 = QG_DPBUSD(c20, w0, x), c21 = QG_DPBUSD(c21, w1, x); \
    x = _mm256_set1_epi32(ld4(x3 + (size_t)(k4) * 4)), c30 = QG_DPBUSD(c30, w0, x), c31 = QG_DPBUSD(c31, w1, x); \
    x = _mm256_set1_epi32(ld4(x4 + (size_t)(k4) * 4)), c40 = QG_DPBUSD(c40, w0, x), c41 = QG_DPBUSD(c41, w1, x); \
    x = _mm256_set1_epi32(ld4(x5 + (size_t)(k4) * 4)), c50 = QG_DPBUSD(c50, w0, x), c51 = QG_DPBUSD(c51, w1, x); \
  } while (0)

#define FLUSH(r, c0, c1)                                                                                \
  do {                                                                                                  \
    __m256 sx = _mm256_set1_ps(xs[(size_t)(m0 + (r)) * nblk + blk]);                                    \
    __m256 bx = _mm256_set1_ps(xb[(size_t)(m0 + (r)) * nblk + blk]);                                    \
    f##r##0 = _mm256_fnmadd_ps(b0, bx, _mm256_fmadd_ps(_mm256_cvtepi32_ps(c0), _mm256_mul_ps(a0, sx), f##r##0)); \
    f##r##1 = _mm256_fnmadd_ps(b1, bx, _mm256_fmadd_ps(_mm256_cvtepi32_ps(c1), _mm256_mul_ps(a1, sx), f##r##1)); \
  } while (0)

__attribute__((always_inline)) QG_TARGET static inline void QG_CAT(QG_MICRO, _b)(const cokv_qgemm_t *g, int m0, int n0, const uint8_t *pu,
                                                                    const float *pa, const float *pb, float *out, const int B) {
  const int K = g->K, nblk = K / B;
  const float *xs = g->xs, *xb = g->xb;
  const int8_t *x0 = g->xq + (size_t)m0 * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K, *x4 = x3 + K, *x5 = x4 + K;
  __m256 f00 = _mm256_setzero_ps(), f01 = f00, f10 = f00, f11 = f00, f20 = f00, f21 = f00;
  __m256 f30 = f00, f31 = f00, f40 = f00, f41 = f00, f50 = f00, f51 = f00;
  for (int blk = 0; blk < nblk; blk++) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const int kb = blk * (B / 4);
    for (int t = 0; t < B / 4; t++) STEP(kb + t);
    __m256 a0 = _mm256_load_ps(pa + (size_t)blk * PANEL), a1 = _mm256_load_ps(pa + (size_t)blk * PANEL + 8);
    __m256 b0 = _mm256_load_ps(pb + (size_t)blk * PANEL), b1 = _mm256_load_ps(pb + (size_t)blk * PANEL + 8);
    FLUSH(0, c00, c01);
    FLUSH(1, c10, c11);
    FLUSH(2, c20, c21);
    FLUSH(3, c30, c31);
    FLUSH(4, c40, c41);
    FLUSH(5, c50, c51);
  }
  __m256 fr[MX][2] = {{f00, f01}, {f10, f11}, {f20, f21}, {f30, f31}, {f40, f41}, {f50, f51}};
  int nc = g->N - n0 < PANEL ? g->N - n0 : PANEL;
  for (int r = 0; r < MX && m0 + r < g->M; r++) {
    float tmp[PANEL];
    _mm256_storeu_ps(tmp, fr[r][0]);
    _mm256_storeu_ps(tmp + 8, fr[r][1]);
    float *o = out + (size_t)(m0 + r) * g->N + n0;
    for (int c = 0; c < nc; c++) o[c] = tmp[c];
  }
}
QG_TARGET static void QG_CAT(QG_MICRO, 16)(const cokv_qgemm_t *g, int m0, int n0, const uint8_t *pu, const float *pa, const float *pb, float *out) {
  QG_CAT(QG_MICRO, _b)(g, m0, n0, pu, pa, pb, out, 16);
}
QG_TARGET static void QG_CAT(QG_MICRO, 32)(const cokv_qgemm_t *g, int m0, int n0, const uint8_t *pu, const float *pa, const float *pb, float *out) {
  QG_CAT(QG_MICRO, _b)(g, m0, n0, pu, pa, pb, out, 32);
}

#undef STEP
#undef FLUSH
