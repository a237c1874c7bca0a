/**
 * Backend selection. `auto` takes the native addon if it loads and passes a small self-check against the TS
 * reference, else the WASM SIMD module if it instantiates and passes the same check, else plain TypeScript.
 */
import type { Backend } from './types.js';
import { TsBackend } from './ts.js';
import { NativeBackend, loadNativeAddon, nativeLoadError } from './native.js';
import { WasmBackend } from './wasm.js';
import type { Weight } from '../model/weights.js';
import { quantizeMatrix } from '../model/quant.js';

export type BackendKind = 'native' | 'wasm' | 'ts' | 'auto';
export const BACKEND_KINDS: readonly BackendKind[] = ['auto', 'native', 'wasm', 'ts'];

/** Why each fast backend was passed over by the last `auto` selection (for --verbose output). */
export const backendNotes: string[] = [];

/** Compare a backend with the TS reference on small F32 and Q8_0 products (GEMV and GEMM shapes). */
export function selfCheck(be: Backend): string | undefined {
  const ref = new TsBackend();
  const K = 64, N = 19;
  const data = new Float32Array(N * K);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.5;
  const weights: Weight[] = [{ dtype: 'f32', rows: N, cols: K, data }, quantizeMatrix('q8_0', data, N, K)];
  for (const w of weights) {
    for (const rows of [1, 7]) {
      const x = new Float32Array(rows * K);
      for (let i = 0; i < x.length; i++) x[i] = Math.cos(i * 0.11);
      const want = new Float32Array(rows * N), got = new Float32Array(rows * N);
      ref.matmul(want, x, rows, w);
      be.matmul(got, x, rows, w);
      let scale = 0, err = 0;
      for (let i = 0; i < want.length; i++) {
        scale = Math.max(scale, Math.abs(want[i]));
        err = Math.max(err, Math.abs(want[i] - got[i]));
      }
      // Q8_0 with int8 activations may differ by ~1%; anything above 5% is a broken kernel.
      if (!(err <= scale * (w.dtype === 'f32' ? 1e-5 : 5e-2))) {
        return `${be.name} self-check failed: ${w.dtype} rows=${rows} max error ${err} vs scale ${scale}`;
      }
    }
  }
  return undefined;
}

function tryNative(): Backend | string {
  const addon = loadNativeAddon();
  if (!addon) return `native: ${nativeLoadError()}`;
  try {
    const be = new NativeBackend(addon);
    return selfCheck(be) ?? be;
  } catch (e) {
    return `native: ${(e as Error).message}`;
  }
}

function tryWasm(): Backend | string {
  try {
    const be = new WasmBackend();
    return selfCheck(be) ?? be;
  } catch (e) {
    return `wasm: ${(e as Error).message}`;
  }
}

/**
 * A backend of the given kind. 'native' and 'wasm' throw if unavailable; 'auto' (default) falls back
 * native → wasm → ts, recording the reasons in `backendNotes`.
 */
export function createBackend(kind: BackendKind = 'auto'): Backend {
  switch (kind) {
    case 'ts':
      return new TsBackend();
    case 'native':
    case 'wasm': {
      const r = kind === 'native' ? tryNative() : tryWasm();
      if (typeof r === 'string') throw new Error(`backend ${kind} unavailable: ${r}`);
      return r;
    }
    case 'auto': {
      backendNotes.length = 0;
      for (const attempt of [tryNative, tryWasm]) {
        const r = attempt();
        if (typeof r !== 'string') return r;
        backendNotes.push(r);
      }
      return new TsBackend();
    }
    default:
      throw new Error(`unknown backend "${String(kind)}" (expected one of ${BACKEND_KINDS.join(', ')})`);
  }
}
