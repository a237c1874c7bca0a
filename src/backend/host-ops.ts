/**
 * The operations a host backend (native.ts, wasm.ts) takes from the TS reference as they are: activation buffers
 * are host Float32Arrays, and the element-wise steps between layer ops (residual and bias adds, the embedding
 * scale, the logit soft-cap, RoPE) cost a few floats per hidden value against a matmul's thousands — not worth a
 * call into native or WASM code each (the native backend does take the residual add: one call per layer, where the
 * JS loop was a tenth of a 135M model's prefill). A backend extends this class and writes only the operations it accelerates;
 * `reference` is there for the rest, which it delegates explicitly.
 */
import type { ActivationBuffer, RopeArgs } from './types.js';
import { TsBackend } from './ts.js';

export abstract class HostOpsFromReference {
  /** The complete reference backend (src/backend/ts.ts). */
  protected readonly reference = new TsBackend();

  alloc(n: number): ActivationBuffer {
    return this.reference.alloc(n);
  }

  view(buf: ActivationBuffer, offset: number, length: number): ActivationBuffer {
    return this.reference.view(buf, offset, length);
  }

  read(buf: ActivationBuffer): Float32Array {
    return this.reference.read(buf);
  }

  add(out: Float32Array, x: Float32Array, n: number): void {
    this.reference.add(out, x, n);
  }

  addBias(x: Float32Array, bias: Float32Array, rows: number, dim: number): void {
    this.reference.addBias(x, bias, rows, dim);
  }

  scale(x: Float32Array, n: number, s: number): void {
    this.reference.scale(x, n, s);
  }

  softcap(x: Float32Array, n: number, cap: number): void {
    this.reference.softcap(x, n, cap);
  }

  rope(a: RopeArgs): void {
    this.reference.rope(a);
  }
}
