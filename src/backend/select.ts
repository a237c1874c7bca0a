/**
 * Backend selection. `auto` takes the native addon if it loads and passes a small self-check against the TS
 * reference, else the WASM SIMD module if it instantiates and passes the same check, else plain TypeScript.
 * The library prints nothing: `backendSelection()` says which backend the last selection took and why, and
 * `onBackendFallback` tells a listener (the CLI: one stderr line) once per process when 'auto' falls back.
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

/**
 * How much slower each fallback is than native, measured (docs/benchmarks.md, "Kernels and engine per backend":
 * random SmolLM2-135M shape, 512-token prompt, 2-core VM, 2026-11-28; ts from the first table, F32). Quote only
 * numbers from that file here.
 */
export const FALLBACK_SLOWDOWN: Readonly<Record<'wasm' | 'ts', string>> = {
  wasm: '~3-15x slower than native (docs/benchmarks.md: prefill 50 vs 761 tok/s, decode 16 vs 50-102 tok/s)',
  ts: '~7-39x slower than native (docs/benchmarks.md: prefill 19.5 vs 761 tok/s, decode 7.4 vs 50 tok/s)',
};

export interface BackendSelection {
  /** The backend in use. */
  name: 'native' | 'wasm' | 'ts';
  /** What was asked for ($COKV_BACKEND / --backend / the `backend` option; default 'auto'). */
  requested: BackendKind;
  /** Why faster backends were passed over ('auto' only; the first is the native addon's reason). */
  notes: string[];
  /** After an 'auto' fallback to wasm or ts: one line saying why and how much slower; undefined otherwise. */
  warning?: string;
}

let lastSelection: BackendSelection | undefined;
const fallbackListeners = new Set<(s: BackendSelection) => void>();
const warned = new Set<string>();

/** The outcome of the last `createBackend` (what `loadModel` calls unless given a Backend object); undefined before. */
export function backendSelection(): BackendSelection | undefined {
  return lastSelection && { ...lastSelection, notes: [...lastSelection.notes] };
}

/**
 * Call `listener` when 'auto' falls back to wasm or ts: once per process for each distinct fallback (a second model
 * load with the same outcome stays quiet). Returns a function that removes the listener.
 */
export function onBackendFallback(listener: (s: BackendSelection) => void): () => void {
  fallbackListeners.add(listener);
  return () => { fallbackListeners.delete(listener); };
}

/** The one-line warning for an 'auto' fallback to `name`, given the reasons the faster backends were passed over. */
export function fallbackWarning(name: 'wasm' | 'ts', notes: readonly string[]): string {
  return `using the ${name} backend, ${FALLBACK_SLOWDOWN[name]}, because ${notes[0] ?? 'the native addon is unavailable'}`;
}

function record(sel: BackendSelection): void {
  lastSelection = sel;
  if (!sel.warning || warned.has(sel.warning)) return;
  warned.add(sel.warning);
  for (const l of fallbackListeners) l(backendSelection()!);
}

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
      record({ name: 'ts', requested: 'ts', notes: [] });
      return new TsBackend();
    case 'native':
    case 'wasm': {
      const r = kind === 'native' ? tryNative() : tryWasm();
      if (typeof r === 'string') throw new Error(`backend ${kind} unavailable: ${r}`);
      record({ name: kind, requested: kind, notes: [] });
      return r;
    }
    case 'auto': {
      backendNotes.length = 0;
      for (const [name, attempt] of [['native', tryNative], ['wasm', tryWasm]] as const) {
        const r = attempt();
        if (typeof r !== 'string') {
          record({ name, requested: 'auto', notes: [...backendNotes], warning: name === 'wasm' ? fallbackWarning(name, backendNotes) : undefined });
          return r;
        }
        backendNotes.push(r);
      }
      record({ name: 'ts', requested: 'auto', notes: [...backendNotes], warning: fallbackWarning('ts', backendNotes) });
      return new TsBackend();
    }
    default:
      throw new Error(`unknown backend "${String(kind)}" (expected one of ${BACKEND_KINDS.join(', ')})`);
  }
}
