/**
 * The reference backend: every operation of the contract (src/backend/types.ts) in plain TypeScript, written once
 * here — the other backends implement each one faster or delegate to these. Matmul is cache-blocked over K and
 * register-blocked 4×4 (four rows of x against four rows of W share each loaded element); quantized weights are
 * dequantized one row tile at a time into a small scratch buffer, so they stay compact in memory.
 */
import { emptyAttendArgs, type ActivationBuffer, type AttendArgs, type AttendF16Args, type Backend, type RopeArgs } from './types.js';
import type { QuantWeight, Weight } from '../model/weights.js';
import { dequantRow, dotRow, f16Lut, quantRowBytes } from '../model/quant.js';
import { applyRope } from '../model/rope.js';

/**
 * Softmax attention of one query vector over two key/value segments (entries [from, to) of each), written to
 * out[outOff..outOff+hd). `scores` is scratch of at least the total entry count.
 */
export function attendSegments(
  q: Float32Array, qOff: number, hd: number, scale: number, out: Float32Array, outOff: number, scores: Float32Array,
  k1: Float32Array, v1: Float32Array, from1: number, to1: number,
  k2: Float32Array, v2: Float32Array, from2: number, to2: number,
): void {
  let max = -Infinity;
  let n = 0;
  for (let j = from1; j < to1; j++, n++) {
    let s = 0;
    const ko = j * hd;
    for (let i = 0; i < hd; i++) s += q[qOff + i] * k1[ko + i];
    s *= scale;
    scores[n] = s;
    if (s > max) max = s;
  }
  for (let j = from2; j < to2; j++, n++) {
    let s = 0;
    const ko = j * hd;
    for (let i = 0; i < hd; i++) s += q[qOff + i] * k2[ko + i];
    s *= scale;
    scores[n] = s;
    if (s > max) max = s;
  }
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const e = Math.exp(scores[j] - max);
    scores[j] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < hd; i++) out[outOff + i] = 0;
  n = 0;
  for (let j = from1; j < to1; j++, n++) {
    const p = scores[n] * inv;
    const vo = j * hd;
    for (let i = 0; i < hd; i++) out[outOff + i] += p * v1[vo + i];
  }
  for (let j = from2; j < to2; j++, n++) {
    const p = scores[n] * inv;
    const vo = j * hd;
    for (let i = 0; i < hd; i++) out[outOff + i] += p * v2[vo + i];
  }
}

/** The reference RMSNorm: out = w ⊙ x / sqrt(mean(x²) + eps), row by row (`out` may be `x`). */
export function rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[o + i] = w[i] * (x[o + i] * inv);
  }
}

/** The reference GeGLU with tanh GELU (gelu_pytorch_tanh), in place: gate = gelu_tanh(gate) · up. */
export function gegluTanh(gate: Float32Array, up: Float32Array, n: number): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = 0.5 * g * (1 + Math.tanh(c * (g + 0.044715 * g * g * g))) * up[i];
  }
}

/** The reference SwiGLU, in place: gate = silu(gate) · up. */
export function swiglu(gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

/** The reference residual add, in place: out[i] += x[i]. */
export function add(out: Float32Array, x: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] += x[i];
}

/** The reference bias add, in place: x[r·dim + i] += bias[i]. */
export function addBias(x: Float32Array, bias: Float32Array, rows: number, dim: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    for (let i = 0; i < dim; i++) x[o + i] += bias[i];
  }
}

/** The reference scale, in place: x[i] *= s. */
export function scale(x: Float32Array, n: number, s: number): void {
  for (let i = 0; i < n; i++) x[i] *= s;
}

/** The reference soft-cap, in place: x[i] = cap · tanh(x[i] / cap). */
export function softcap(x: Float32Array, n: number, cap: number): void {
  for (let i = 0; i < n; i++) x[i] = cap * Math.tanh(x[i] / cap);
}

/** The reference RoPE: `applyRope` (src/model/rope.ts) on each row's heads at that row's position. */
export function rope(a: RopeArgs): void {
  const { x, heads, headDim, rotaryDim, positions, cos, sin } = a;
  const rowDim = heads * headDim;
  for (let r = 0; r < a.rows; r++) applyRope(x, r * rowDim, heads, headDim, positions[r], cos, sin, rotaryDim);
}

/** The reference embedding lookup: row `row` of `w`, dequantized, into out[outOff .. outOff + w.cols). */
export function embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void {
  if (w.dtype === 'f32') {
    out.set(w.data.subarray(row * w.cols, (row + 1) * w.cols), outOff);
    return;
  }
  dequantRow(w.dtype, w.data, row * quantRowBytes(w.dtype, w.cols), w.cols, out, outOff);
}

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
  readonly device = 'host';
  private scratch = new Float32Array(0);
  /** attend's score scratch and attendF16's widened K/V, grown as needed and reused (decode allocates nothing). */
  private scores = new Float32Array(0);
  private readonly wide: Record<'k1' | 'v1' | 'k2' | 'v2', Float32Array> = { k1: new Float32Array(0), v1: new Float32Array(0), k2: new Float32Array(0), v2: new Float32Array(0) };
  private readonly wideArgs = emptyAttendArgs();

  /** Host activations are plain arrays. */
  alloc(n: number): ActivationBuffer {
    return new Float32Array(n);
  }

  view(buf: ActivationBuffer, offset: number, length: number): ActivationBuffer {
    return buf.subarray(offset, offset + length);
  }

  /** The array itself: it already is on the host. */
  read(buf: ActivationBuffer): Float32Array {
    return buf;
  }

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
    embedRow(out, outOff, w, row);
  }

  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void {
    rmsNorm(out, x, w, rows, dim, eps);
  }

  swiglu(gate: Float32Array, up: Float32Array, n: number): void {
    swiglu(gate, up, n);
  }

  gegluTanh(gate: Float32Array, up: Float32Array, n: number): void {
    gegluTanh(gate, up, n);
  }

  add(out: Float32Array, x: Float32Array, n: number): void {
    add(out, x, n);
  }

  addBias(x: Float32Array, bias: Float32Array, rows: number, dim: number): void {
    addBias(x, bias, rows, dim);
  }

  scale(x: Float32Array, n: number, s: number): void {
    scale(x, n, s);
  }

  softcap(x: Float32Array, n: number, cap: number): void {
    softcap(x, n, cap);
  }

  rope(a: RopeArgs): void {
    rope(a);
  }

  /** `attendSegments` for each query, query i limited to entries [from1, from1 + count1[i]) of segment 1. */
  attend(a: AttendArgs): void {
    const n = a.to1 - a.from1 + a.to2 - a.from2;
    if (this.scores.length < n) this.scores = new Float32Array(Math.max(n, 2 * this.scores.length));
    const { count1, from1 } = a;
    for (let i = 0; i < a.nq; i++) {
      attendSegments(a.q, a.qOff + i * a.qStride, a.hd, a.scale, a.out, a.oOff + i * a.oStride, this.scores,
        a.k1, a.v1, from1, count1 ? from1 + count1[i] : a.to1, a.k2, a.v2, a.from2, a.to2);
    }
  }

  /**
   * Widen the entries the call reads ([from, to) of each segment; half → F32 is exact) into reused scratch, then
   * `attend`: bit-identical to widening the whole head and calling `attend`.
   */
  attendF16(a: AttendF16Args): void {
    const w = this.wide, hd = a.hd;
    w.k1 = widenHalf(a.k1, a.from1, a.to1, hd, w.k1);
    w.v1 = widenHalf(a.v1, a.from1, a.to1, hd, w.v1);
    w.k2 = widenHalf(a.k2, a.from2, a.to2, hd, w.k2);
    w.v2 = widenHalf(a.v2, a.from2, a.to2, hd, w.v2);
    const f = this.wideArgs;
    f.out = a.out; f.oOff = a.oOff; f.oStride = a.oStride; f.q = a.q; f.qOff = a.qOff; f.qStride = a.qStride;
    f.nq = a.nq; f.hd = hd; f.scale = a.scale; f.count1 = a.count1;
    f.k1 = w.k1; f.v1 = w.v1; f.from1 = a.from1; f.to1 = a.to1;
    f.k2 = w.k2; f.v2 = w.v2; f.from2 = a.from2; f.to2 = a.to2;
    this.attend(f);
  }

  /** Every operation has finished when it returns. */
  flush(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Entries [from, to) of a half-precision K or V buffer widened to F32 (exact: every half value is an F32 value) at
 * the same offsets of `dst` (grown when too small; entries before `from` are left as they are).
 */
function widenHalf(src: Uint16Array, from: number, to: number, hd: number, dst: Float32Array): Float32Array {
  if (dst.length < to * hd) dst = new Float32Array(Math.max(to * hd, 2 * dst.length));
  const lut = f16Lut();
  for (let i = from * hd, end = to * hd; i < end; i++) dst[i] = lut[src[i]];
  return dst;
}
