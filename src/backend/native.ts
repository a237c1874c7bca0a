/**
 * The Node-API backend: AVX2/FMA/F16C kernels in C (native/kernels.c) on a small pthread pool, loaded from
 * build/Release/cokv_native.node (built by `npm run build:native`, and by `npm ci` through the `install` hook when a
 * C compiler and the Node headers are present). Every matmul is one N-API call; the addon checks sizes itself.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from './types.js';
import type { Weight } from '../model/weights.js';
import { dequantRow, quantRowBytes } from '../model/quant.js';

/** The addon's exports (native/addon.c). */
export interface NativeAddon {
  matmul(out: Float32Array, x: Float32Array, rows: number, n: number, k: number, w: ArrayBufferView, dtype: number, flags?: number): void;
  attend(
    out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
    scale: number, k1: Float32Array, v1: Float32Array, from1: number, to1: number, count1: Int32Array | null,
    k2: Float32Array, v2: Float32Array, from2: number, to2: number,
  ): void;
  swiglu(gate: Float32Array, up: Float32Array, n: number): void;
  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void;
  info(): { avx2: boolean; simd: number; threads: number };
  setThreads(n: number): number;
  setSimd(level: number): number;
  /** Index of the first NaN/Inf of n elements (ggml dtype id, BF16 = 30), or -1; absent in addons built before it. */
  firstNonFinite?(data: ArrayBufferView, dtype: number, n: number): number;
}

/** ggml type ids, as the addon takes them. */
export const NATIVE_DTYPE = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8, q2_k: 10, q3_k: 11, q4_k: 12, q5_k: 13, q6_k: 14,
  iq4_nl: 20, iq4_xs: 23,
} as const satisfies Record<Weight['dtype'], number>;
const MM_Q8_INT8 = 1;

/** Where the addon is looked for (the same relative path from src/backend and dist/backend). */
export const NATIVE_ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../build/Release/cokv_native.node');

let cached: NativeAddon | undefined;
let loadError: string | undefined;

/** Load the addon once; undefined (with the reason in `nativeLoadError()`) when it is not built or fails to load. */
export function loadNativeAddon(file = process.env.COKV_NATIVE_ADDON ?? NATIVE_ADDON_PATH): NativeAddon | undefined {
  if (cached || loadError) return cached;
  if (!fs.existsSync(file)) {
    loadError = `${file} not found (run \`npm run build:native\`)`;
    return undefined;
  }
  try {
    cached = createRequire(import.meta.url)(file) as NativeAddon;
  } catch (e) {
    loadError = `${file}: ${(e as Error).message}`;
  }
  return cached;
}

export function nativeLoadError(): string | undefined {
  return loadError;
}

export interface NativeOptions {
  /**
   * Q8_0 GEMV (fewer than 4 rows): quantize x to Q8_0 per call and use an int8 dot, like llama.cpp. ~1.4x faster
   * on cold weights here, but x loses precision (≈0.4% of each 32-block's max), so logits differ slightly from the
   * reference. Default false: Q8_0 weights are dequantized on the fly against f32 x (matches the TS backend to f32
   * rounding).
   */
  q8Int8?: boolean;
  /** Threads per call (default: online CPUs, at most 8; env COKV_THREADS). Process-wide: the pool is shared. */
  threads?: number;
}

export class NativeBackend implements Backend {
  readonly name = 'native';
  private readonly flags: number;

  constructor(readonly addon: NativeAddon, opts: NativeOptions = {}) {
    this.flags = opts.q8Int8 ? MM_Q8_INT8 : 0;
    if (opts.threads !== undefined) addon.setThreads(opts.threads);
  }

  /** A backend over the addon, or an Error saying why the addon is unavailable. */
  static create(opts: NativeOptions = {}): NativeBackend {
    const addon = loadNativeAddon();
    if (!addon) throw new Error(`native backend unavailable: ${loadError}`);
    return new NativeBackend(addon, opts);
  }

  matmul(out: Float32Array, x: Float32Array, rows: number, w: Weight): void {
    if (rows === 0) return;
    this.addon.matmul(out, x, rows, w.rows, w.cols, w.data, NATIVE_DTYPE[w.dtype], this.flags);
  }

  /** The same product with IEEE half weights ([n][k] as Uint16Array), through F16C. */
  matmulF16(out: Float32Array, x: Float32Array, rows: number, w: Uint16Array, n: number, k: number): void {
    if (rows === 0) return;
    this.addon.matmul(out, x, rows, n, k, w, NATIVE_DTYPE.f16, 0);
  }

  /**
   * Softmax attention of `nq` query vectors (q rows at qOff + i*qStride) over entries [from1, to1) of k1/v1 then
   * [from2, to2) of k2/v2, like `attendSegments` for each query; with `count1`, query i sees only the first
   * count1[i] entries of segment 1 (causal prefill). Threads split the queries.
   */
  attend(
    out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
    scale: number, k1: Float32Array, v1: Float32Array, from1: number, to1: number, count1: Int32Array | null,
    k2: Float32Array, v2: Float32Array, from2: number, to2: number,
  ): void {
    this.addon.attend(out, oOff, oStride, q, qOff, qStride, nq, hd, scale, k1, v1, from1, to1, count1, k2, v2, from2, to2);
  }

  swiglu(gate: Float32Array, up: Float32Array, n: number): void {
    this.addon.swiglu(gate, up, n);
  }

  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void {
    this.addon.rmsNorm(out, x, w, rows, dim, eps);
  }

  embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void {
    if (w.dtype === 'f32') {
      out.set(w.data.subarray(row * w.cols, (row + 1) * w.cols), outOff);
      return;
    }
    dequantRow(w.dtype, w.data, row * quantRowBytes(w.dtype, w.cols), w.cols, out, outOff);
  }
}
