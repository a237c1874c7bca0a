/**
 * Reference kernels in plain TypeScript. Matmul is cache-blocked over K and register-blocked 4×4 (four rows of x
 * against four rows of W share each loaded element); quantized weights are dequantized one row tile at a time
 * into a small scratch buffer, so they stay compact in memory.
 */
import type { Backend } from './types.js';
import type { QuantWeight, Weight } from '../model/weights.js';
import { dequantRow, dotRow, f16Lut, quantRowBytes } from '../model/quant.js';
import { attendSegments } from '../model/forward.js';

const K_BLOCK = 256;
const QUANT_TILE_ROWS = 16;

/** out[m][n] += Σ_{k∈[k0,k1)} x[m][k]·w[n][k] for m ∈ [0,rows), n ∈ [n0,n1); w row n starts at wOff + (n-n0)*K. */
function gemmBlock(
  out: Float32Array, outStride: number, outCol0: number,
  x: Float32Array, rows: number, K: number,
  w: Float32Array, wRowOff: number, nRows: number,
  k0: number, k1: number,
): void {
  let n = 0;
  for (; n + 4 <= nRows; n += 4) {
    const w0 = wRowOff + n * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K;
    let m = 0;
    for (; m + 2 <= rows; m += 2) {
      const x0 = m * K, x1 = x0 + K;
      let a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
      for (let k = k0; k < k1; k++) {
        const xa = x[x0 + k], xb = x[x1 + k];
        const b0 = w[w0 + k], b1 = w[w1 + k], b2 = w[w2 + k], b3 = w[w3 + k];
        a00 += xa * b0; a01 += xa * b1; a02 += xa * b2; a03 += xa * b3;
        a10 += xb * b0; a11 += xb * b1; a12 += xb * b2; a13 += xb * b3;
      }
      const o0 = m * outStride + outCol0 + n, o1 = o0 + outStride;
      out[o0] += a00; out[o0 + 1] += a01; out[o0 + 2] += a02; out[o0 + 3] += a03;
      out[o1] += a10; out[o1 + 1] += a11; out[o1 + 2] += a12; out[o1 + 3] += a13;
    }
    for (; m < rows; m++) {
      const x0 = m * K;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let k = k0; k < k1; k++) {
        const xa = x[x0 + k];
        a0 += xa * w[w0 + k]; a1 += xa * w[w1 + k]; a2 += xa * w[w2 + k]; a3 += xa * w[w3 + k];
      }
      const o0 = m * outStride + outCol0 + n;
      out[o0] += a0; out[o0 + 1] += a1; out[o0 + 2] += a2; out[o0 + 3] += a3;
    }
  }
  for (; n < nRows; n++) {
    const w0 = wRowOff + n * K;
    for (let m = 0; m < rows; m++) {
      const x0 = m * K;
      let a = 0;
      for (let k = k0; k < k1; k++) a += x[x0 + k] * w[w0 + k];
      out[m * outStride + outCol0 + n] += a;
    }
  }
}

/** Full-K product of a tile of W rows (already F32) against all rows of x. */
function gemmTile(
  out: Float32Array, outStride: number, outCol0: number,
  x: Float32Array, rows: number, K: number, w: Float32Array, wRowOff: number, nRows: number,
): void {
  for (let m = 0; m < rows; m++) out.fill(0, m * outStride + outCol0, m * outStride + outCol0 + nRows);
  for (let k0 = 0; k0 < K; k0 += K_BLOCK) {
    gemmBlock(out, outStride, outCol0, x, rows, K, w, wRowOff, nRows, k0, Math.min(K, k0 + K_BLOCK));
  }
}

export class TsBackend implements Backend {
  readonly name = 'ts';
  private scratch = new Float32Array(0);

  matmul(out: Float32Array, x: Float32Array, rows: number, w: Weight): void {
    const N = w.rows, K = w.cols;
    if (w.dtype === 'f32') {
      // Tile W by rows so a tile stays in cache while all rows of x stream past it.
      const tile = Math.max(4, Math.floor(65536 / K) & ~3);
      for (let n0 = 0; n0 < N; n0 += tile) {
        gemmTile(out, N, n0, x, rows, K, w.data, n0 * K, Math.min(tile, N - n0));
      }
      return;
    }
    this.matmulQuant(out, x, rows, w);
  }

  private matmulQuant(out: Float32Array, x: Float32Array, rows: number, w: QuantWeight): void {
    const N = w.rows, K = w.cols;
    const rowBytes = quantRowBytes(w.dtype, K);
    if (rows < 4) {
      // Decode-sized products: dot each quantized row straight against x (no dequantized tile).
      for (let m = 0; m < rows; m++) {
        for (let n = 0; n < N; n++) out[m * N + n] = dotRow(w.dtype, w.data, n * rowBytes, x, m * K, K);
      }
      return;
    }
    if (this.scratch.length < QUANT_TILE_ROWS * K) this.scratch = new Float32Array(QUANT_TILE_ROWS * K);
    const tileBuf = this.scratch;
    for (let n0 = 0; n0 < N; n0 += QUANT_TILE_ROWS) {
      const nRows = Math.min(QUANT_TILE_ROWS, N - n0);
      for (let r = 0; r < nRows; r++) dequantRow(w.dtype, w.data, (n0 + r) * rowBytes, K, tileBuf, r * K);
      gemmTile(out, N, n0, x, rows, K, tileBuf, 0, nRows);
    }
  }

  embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void {
    if (w.dtype === 'f32') {
      out.set(w.data.subarray(row * w.cols, (row + 1) * w.cols), outOff);
      return;
    }
    dequantRow(w.dtype, w.data, row * quantRowBytes(w.dtype, w.cols), w.cols, out, outOff);
  }
}

/** Entries [0, to) of a half-precision K or V buffer widened to F32 (exact: every half value is an F32 value). */
function widenHalf(src: Uint16Array, to: number, hd: number): Float32Array {
  const lut = f16Lut();
  const out = new Float32Array(to * hd);
  for (let i = 0; i < out.length; i++) out[i] = lut[src[i]];
  return out;
}

/**
 * Reference for `Backend.attendF16` (the contract native kernels are tested against): widen the half K/V to F32
 * and run `attendSegments` for each query, with `count1[i]` limiting query i to entries [from1, from1 + count1[i]).
 * It allocates per call, so the TS backend does not use it in the forward pass (which widens each F16 head once
 * per step instead); the result equals that path's bit for bit.
 */
export function attendF16Reference(
  out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
  scale: number, k1: Uint16Array, v1: Uint16Array, from1: number, to1: number, count1: Int32Array | null,
  k2: Uint16Array, v2: Uint16Array, from2: number, to2: number,
): void {
  const k1f = widenHalf(k1, to1, hd), v1f = widenHalf(v1, to1, hd);
  const k2f = widenHalf(k2, to2, hd), v2f = widenHalf(v2, to2, hd);
  const scores = new Float32Array(Math.max(1, to1 - from1 + to2 - from2));
  for (let i = 0; i < nq; i++) {
    const end1 = count1 ? from1 + count1[i] : to1;
    attendSegments(q, qOff + i * qStride, hd, scale, out, oOff + i * oStride, scores, k1f, v1f, from1, end1, k2f, v2f, from2, to2);
  }
}
