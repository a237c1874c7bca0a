/*
 * Integer dot products of quantized weight rows with quantized activations, the way ggml computes them on CPU:
 * the activation row x is quantized once per matmul to 8 bits per block — "q8_0" blocks of 32 (for Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, IQ4_NL weights) or "q8_K" blocks of 256 with 16-element sums (for Q2_K..Q6_K, IQ4_XS) — and
 * every weight block is multiplied with it in int8/int16/int32 (AVX2 maddubs/madd), with one float multiply-add
 * per block. Only built into AVX2 code paths; the caller checks the CPU.
 */
#ifndef COKV_QDOT_H
#define COKV_QDOT_H

#include <stddef.h>
#include <stdint.h>

/* Activation block kinds. */
enum { XQ_NONE = 0, XQ_Q8_0 = 1, XQ_Q8_K = 2 };

/* The activation kind a weight type's integer dot takes (XQ_NONE: no integer dot for it, e.g. F32/F16). */
int cokv_xq_kind(int dt);

/* Bytes of one quantized activation row of k elements (k a whole number of the kind's blocks). */
size_t cokv_xq_row_bytes(int kind, int k);

/* Quantize one row of k floats into `dst` (cokv_xq_row_bytes(kind, k) bytes). AVX2 only. */
void cokv_quantize_x_row(int kind, const float *x, int k, uint8_t *dst);

/* Activation rows one weight row's kernel takes at once in GEMM tiles. */
#define COKV_QX 4

/*
 * One weight row (k elements) against nx quantized activation rows at xq, xq + xrb, ...: out[r] = dot with row r.
 * `one` takes nx = 1, `many` nx = COKV_QX (one unpacking of each weight block serves all of them). AVX2 only.
 */
typedef void (*cokv_qdot_fn)(const uint8_t *w, const uint8_t *xq, size_t xrb, int k, float *out);
/*
 * GEMV over gemv_rows weight rows at once (4 or 8): rows w, w + rb, w + 2·rb, ... against one quantized activation
 * row; out[r] = dot with row r. NULL for the types without one (the K types: `one` per row).
 */
typedef void (*cokv_qgemv_fn)(const uint8_t *w, size_t rb, const uint8_t *xq, int k, float *out);
typedef struct {
  cokv_qdot_fn one, many;
  cokv_qgemv_fn gemv;
  int gemv_rows;
} cokv_qdot_fns;
cokv_qdot_fns cokv_qdot_for(int dt);

#endif
