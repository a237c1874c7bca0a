/*
 * cokv native kernels: matmul out[m][n] = sum_k x[m][k] * W[n][k] (W in nn.Linear layout, rows of raw ggml blocks
 * for quantized types), run on a small pthread pool. Pure C (no N-API here) so the kernels can be tested alone.
 */
#ifndef COKV_KERNELS_H
#define COKV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Weight types: ggml type ids. */
enum {
  DT_F32 = 0, DT_F16 = 1, DT_Q4_0 = 2, DT_Q4_1 = 3, DT_Q5_0 = 6, DT_Q5_1 = 7, DT_Q8_0 = 8, DT_Q2_K = 10, DT_Q3_K = 11,
  DT_Q4_K = 12, DT_Q5_K = 13, DT_Q6_K = 14, DT_IQ4_NL = 20, DT_IQ4_XS = 23, DT_BF16 = 30
};

/* Flags for cokv_matmul. */
enum {
  MM_Q8_INT8 = 1, /* older name, now the same as MM_INT8_X */
  MM_INT8_X = 2   /* every block type, GEMV and GEMM: quantize x rows to q8_0 / q8_K and use integer dots (qdot.h) */
};

/* Bytes of one weight row of k elements, or 0 if k is not a whole number of blocks / the type is unknown. */
size_t cokv_row_bytes(int dt, int k);

/* SIMD level in use: 1 = AVX2+FMA+F16C, 0 = scalar. cokv_set_simd can only lower it below what the CPU has. */
int cokv_simd(void);
int cokv_cpu_avx2(void);
/* The VNNI encoding the integer dots and the prefill GEMM use (advertised and executed: probed once): 0 none,
 * 1 AVX512-VNNI, 2 AVX-VNNI (qgemm.h: COKV_VNNI_*). */
int cokv_vnni(void);
void cokv_set_simd(int level);

/* Threads used per call (the caller's thread included). */
int cokv_threads(void);
int cokv_set_threads(int n);

/* The whole matmul; returns 0, or -1 on an allocation failure. Inputs are assumed validated. */
int cokv_matmul(float *out, const float *x, int m, int n, int k, const void *w, int dt, int flags);

/*
 * Softmax attention of nq query vectors (one KV head's group, each hd floats at q + i*qStride) over key/value
 * segments: entries [from1, to1) of k1/v1 and [from2, to2) of k2/v2 (rows of hd floats). Query i sees the first
 * count1[i] entries of segment 1 (causal prefill), or all of them when count1 is NULL. Output rows at out + i*oStride.
 */
int cokv_attend(float *out, int oStride, const float *q, int qStride, int nq, int hd, float scale,
                const float *k1, const float *v1, int from1, int to1, const int *count1,
                const float *k2, const float *v2, int from2, int to2);

/* cokv_attend over K/V rows stored as IEEE halves (an F16 KV cache): widened block by block, F16C. */
int cokv_attend16(float *out, int oStride, const float *q, int qStride, int nq, int hd, float scale,
                  const uint16_t *k1, const uint16_t *v1, int from1, int to1, const int *count1,
                  const uint16_t *k2, const uint16_t *v2, int from2, int to2);

/* gate[i] = silu(gate[i]) * up[i] (SwiGLU), in place. */
void cokv_swiglu(float *gate, const float *up, size_t n);
/* Residual add in place: out[i] += x[i] (f32 adds, correctly rounded: the same values as the TS reference). */
void cokv_add(float *out, const float *x, size_t n);

/* out[r] = w ⊙ x[r] / sqrt(mean(x[r]²) + eps) for each of `rows` rows of `dim` floats (sum of squares in double). */
void cokv_rmsnorm(float *out, const float *x, const float *w, int rows, int dim, float eps);

/*
 * Index of the first non-finite (NaN/Inf) element among the n elements at `data` of type dt (F32, F16, BF16 or a
 * block type), or -1 when all are finite; -2 for an unknown type or n not a whole number of blocks. Block types
 * are judged by their f16 scale fields: the integer quants are always finite and every value of a block is a
 * product or sum of its scales, so a block dequantizes to a non-finite value exactly when one of its scales is
 * non-finite; the index returned is then the block's first element. Reads n's worth of bytes, no more; arrays of
 * 2^24 elements and more are split across the thread pool (same result).
 */
int64_t cokv_first_nonfinite(const void *data, int dt, int64_t n);

#endif
