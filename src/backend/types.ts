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
}
