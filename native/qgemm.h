/*
 * Integer GEMM for block-quantized weights on CPUs with AVX512-VNNI or AVX-VNNI (vpdpbusd on 256-bit registers): the prefill
 * path of MM_INT8_X from QG_MIN_M rows on. Each thread takes panels of 16 weight rows, unpacks them once per call
 * into unsigned bytes u with per-block scales (w = a·u − b, blocks of 16 or 32 as the type has them) interleaved
 * as [k/4][16 rows][4 bytes], and runs a 16-row × 6-activation-row micro-kernel of 12 int32 accumulators
 * (one dpbusd = 32 u8·s8 products), flushed to float once per block. Activations are quantized exactly as for the
 * integer dots (qdot.h: q8_0 per 32 for the 32-element types, q8_K per 256 for the K types), so GEMM and GEMV agree
 * up to float rounding.
 */
#ifndef COKV_QGEMM_H
#define COKV_QGEMM_H

#include <stddef.h>
#include <stdint.h>

/* 1 when the CPU executes AVX512-VNNI/VL/BW instructions (checked by running one in a child process). */
int cokv_vnni_usable(void);
/* 1 when the CPU executes AVX-VNNI (VEX-encoded vpdpbusd / vpdpwssd; checked in a child process the same way). */
int cokv_avxvnni_usable(void);
/* Which VNNI encoding the integer kernels use: AVX512-VNNI where it runs, else AVX-VNNI where that runs, else none
 * (AVX2 maddubs/madd). COKV_NO_VNNI=1 forces none. */
enum { COKV_VNNI_NONE = 0, COKV_VNNI_EVEX = 1, COKV_VNNI_VEX = 2 };
int cokv_vnni_kind(void);

/* 1 when `dt` has a VNNI GEMM. */
int cokv_qgemm_supports(int dt);

typedef struct {
  const uint8_t *w; /* N rows of rb bytes */
  size_t rb;
  int dt, M, N, K;
  int block;        /* 16 or 32 (elements per weight scale) */
  int mpad;         /* M rounded up to the micro-kernel's 6 rows */
  const int8_t *xq; /* mpad × K quantized activations (rows ≥ M are zero) */
  const float *xs;  /* mpad × K/block: activation scale of each block */
  const float *xb;  /* mpad × K/block: scale · Σ q over the block */
} cokv_qgemm_t;

/* Bytes of the activation buffer for M rows (xq, xs, xb). */
size_t cokv_qgemm_x_bytes(int dt, int M, int K);
/* Quantize x (M × K floats) into buf and fill g's activation fields (g->dt, M, K must be set). */
void cokv_qgemm_prepare_x(cokv_qgemm_t *g, const float *x, uint8_t *buf);
/* Per-thread scratch bytes for one 16-row panel. */
size_t cokv_qgemm_scratch_bytes(const cokv_qgemm_t *g);
/* out[m][n] for every m < M and n in [n0, n0 + 16) ∩ [0, N) (ldo = N). */
void cokv_qgemm_panel(const cokv_qgemm_t *g, int n0, float *out, uint8_t *scratch);

#endif
