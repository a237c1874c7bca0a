import type { Weight } from '../model/weights.js';

/**
 * The kernels the forward pass calls. `ts` is the readable reference; faster backends (native, wasm) implement
 * the same interface and are tested against it.
 */
export interface Backend {
  readonly name: string;
  /**
   * out[m][n] = Σ_k x[m][k] · W[n][k] for m < rows, n < W.rows (W in nn.Linear layout).
   * `x` holds rows × W.cols floats, `out` rows × W.rows.
   */
  matmul(out: Float32Array, x: Float32Array, rows: number, w: Weight): void;
  /** Copy row `row` of `w`, dequantized, into out[outOff .. outOff + w.cols). */
  embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void;
  /** Optional SwiGLU in place: gate[i] = silu(gate[i]) · up[i] for i < n. Without it, the forward pass's TS loop. */
  swiglu?(gate: Float32Array, up: Float32Array, n: number): void;
  /** Optional RMSNorm of `rows` rows of `dim` floats: out = w ⊙ x / sqrt(mean(x²) + eps). Without it, the TS loop. */
  rmsNorm?(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void;
  /**
   * Optional fused attention: for each of `nq` queries (at q[qOff + i·qStride]), softmax attention over entries
   * [from1, to1) of k1/v1 — or only the first count1[i] of them (causal prefill) — then [from2, to2) of k2/v2,
   * written to out[oOff + i·oStride]. Backends without it use the TypeScript loop (`attendSegments`).
   */
  attend?(
    out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
    scale: number, k1: Float32Array, v1: Float32Array, from1: number, to1: number, count1: Int32Array | null,
    k2: Float32Array, v2: Float32Array, from2: number, to2: number,
  ): void;
  /**
   * Optional `attend` over an F16 cache: the same arguments and result, except that k1/v1/k2/v2 hold IEEE
   * half-precision bits (what an F16 HeadCache stores), read as their exact F32 values. The forward pass calls it
   * for F16 heads when the backend has it; without it, F16 heads are widened to F32 scratch and go to `attend`
   * (or the TypeScript loop). Reference: `attendF16Reference` in src/backend/ts.ts.
   */
  attendF16?(
    out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
    scale: number, k1: Uint16Array, v1: Uint16Array, from1: number, to1: number, count1: Int32Array | null,
    k2: Uint16Array, v2: Uint16Array, from2: number, to2: number,
  ): void;
}
