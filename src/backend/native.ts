/**
 * The Node-API backend: AVX2/FMA/F16C kernels in C (native/kernels.c) on a small pthread pool, loaded from
 * build/Release/cokv_native.node (built by `npm run build:native`, and by the `install` hook when no prebuilt binary
 * loads and a C compiler and the Node headers are present), else from the prebuilt
 * prebuilds/<platform>-<arch>/cokv_native.node that the package ships. Every matmul is one N-API call; the addon
 * checks sizes itself.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttendArgs, AttendF16Args, Backend } from './types.js';
import { HostOpsFromReference } from './host-ops.js';
import type { Weight } from '../model/weights.js';

/** The addon's exports (native/addon.c). */
export interface NativeAddon {
  matmul(out: Float32Array, x: Float32Array, rows: number, n: number, k: number, w: ArrayBufferView, dtype: number, flags?: number): void;
  attend(
    out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
    scale: number, k1: Float32Array, v1: Float32Array, from1: number, to1: number, count1: Int32Array | null,
    k2: Float32Array, v2: Float32Array, from2: number, to2: number,
  ): void;
  /** `attend` over Uint16Array K/V (IEEE half bits, an F16 cache); absent in addons built before it. */
  attend16?(
    out: Float32Array, oOff: number, oStride: number, q: Float32Array, qOff: number, qStride: number, nq: number, hd: number,
    scale: number, k1: Uint16Array, v1: Uint16Array, from1: number, to1: number, count1: Int32Array | null,
    k2: Uint16Array, v2: Uint16Array, from2: number, to2: number,
  ): void;
  swiglu(gate: Float32Array, up: Float32Array, n: number): void;
  /** out[i] += x[i] for i < n; absent in addons built before it. */
  add?(out: Float32Array, x: Float32Array, n: number): void;
  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void;
  /** vnni / vnniKind: the VNNI encoding the integer kernels use (probed: advertised and executed); absent in addons
   * built before them. */
  info(): { avx2: boolean; simd: number; threads: number; vnni?: boolean; vnniKind?: 'avx512-vnni' | 'avx-vnni' | 'none' };
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
const MM_INT8_X = 2;

/** The package root (the same relative path from src/backend and dist/backend). */
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The addon's file name (binding.gyp's target), in build/Release and in prebuilds/<platform>-<arch>. */
export const NATIVE_ADDON_FILE = 'cokv_native.node';
/** A local build: `npm run build:native`, or the install hook's compile fallback. */
export const NATIVE_ADDON_PATH = path.join(PACKAGE_ROOT, 'build', 'Release', NATIVE_ADDON_FILE);
/** The binary shipped in the package for this platform (`npm run prebuild`, run by `prepack`). */
export const NATIVE_PREBUILD_PATH = path.join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`, NATIVE_ADDON_FILE);

export type NativeAddonSource = 'env' | 'build' | 'prebuild';

/**
 * Where the addon is looked for, in order: $COKV_NATIVE_ADDON alone when set (an override: nothing else is tried),
 * else build/Release (a local build wins over the shipped binary), else prebuilds/<platform>-<arch>.
 */
export function nativeAddonCandidates(root = PACKAGE_ROOT, env: NodeJS.ProcessEnv = process.env): { file: string; source: NativeAddonSource }[] {
  if (env.COKV_NATIVE_ADDON) return [{ file: path.resolve(env.COKV_NATIVE_ADDON), source: 'env' }];
  return [
    { file: path.join(root, 'build', 'Release', NATIVE_ADDON_FILE), source: 'build' },
    { file: path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, NATIVE_ADDON_FILE), source: 'prebuild' },
  ];
}

export interface NativeAddonFound {
  addon?: NativeAddon;
  /** The file that loaded, and which candidate it was. */
  file?: string;
  source?: NativeAddonSource;
  /** One line per candidate that was absent or failed to load, in the order tried. */
  errors: string[];
}

/**
 * Try the candidates in order (uncached; a candidate that exists but fails to load, e.g. a stale or foreign build,
 * falls through to the next). `loadNativeAddon` is the cached form the backends use.
 */
export function findNativeAddon(root = PACKAGE_ROOT, env: NodeJS.ProcessEnv = process.env): NativeAddonFound {
  const errors: string[] = [];
  for (const c of nativeAddonCandidates(root, env)) {
    if (!fs.existsSync(c.file)) {
      errors.push(`${c.file} not found`);
      continue;
    }
    try {
      return { addon: createRequire(import.meta.url)(c.file) as NativeAddon, file: c.file, source: c.source, errors };
    } catch (e) {
      errors.push(`${c.file}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  return { errors };
}

let cached: NativeAddon | undefined;
let cachedFile: string | undefined;
let loadError: string | undefined;

/**
 * Load the addon once (from `file`, else the first of `nativeAddonCandidates()` that loads); undefined, with the
 * reason in `nativeLoadError()`, when none does.
 */
export function loadNativeAddon(file?: string): NativeAddon | undefined {
  if (cached || loadError) return cached;
  const found = file !== undefined ? findNativeAddon(PACKAGE_ROOT, { COKV_NATIVE_ADDON: file }) : findNativeAddon();
  if (found.addon) {
    cached = found.addon;
    cachedFile = found.file;
  } else {
    const hint = file !== undefined || process.env.COKV_NATIVE_ADDON ? ''
      : ` (no local build and no prebuilt binary for ${process.platform}-${process.arch}; \`npm rebuild cokv\`, or \`npm run build:native\` in a clone, compiles one with a C compiler)`;
    loadError = `${found.errors.join('; ')}${hint}`;
  }
  return cached;
}

export function nativeLoadError(): string | undefined {
  return loadError;
}

/** The file the addon was loaded from (undefined before a successful `loadNativeAddon()`). */
export function nativeAddonFile(): string | undefined {
  return cachedFile;
}

export interface NativeOptions {
  /**
   * Block-quantized weights (Q4_0 … Q6_K, IQ4_NL/XS, Q8_0): quantize each activation row to 8 bits per block
   * (q8_0 blocks of 32, or q8_K blocks of 256 for the K types and IQ4_XS) and multiply in integers, as llama.cpp's
   * CPU backend does — 2–4x faster than dequantizing weights to f32. Default true (env COKV_EXACT_ACTIVATIONS=1
   * turns it off). Off, weights are dequantized against f32 activations, which matches the TS reference to f32
   * rounding; on, results differ from it by the activation rounding (≈0.4% of each block's largest |x|).
   */
  int8Activations?: boolean;
  /** @deprecated Old name of `int8Activations` (then Q8_0 only). */
  q8Int8?: boolean;
  /** Threads per call (default: every core the process may run on, from its affinity mask; env COKV_THREADS). Process-wide: the pool is shared. */
  threads?: number;
}

export class NativeBackend extends HostOpsFromReference implements Backend {
  readonly name = 'native';
  readonly device = 'host';
  private readonly flags: number;
  // `reference` (HostOpsFromReference) runs what the addon does not accelerate: the host buffers and element-wise
  // steps, embedRow, gegluTanh, and attendF16 on addons built before attend16.
  constructor(readonly addon: NativeAddon, opts: NativeOptions = {}) {
    super();
    const int8 = opts.int8Activations ?? opts.q8Int8 ?? !/^(1|true|yes)$/i.test(process.env.COKV_EXACT_ACTIVATIONS ?? '');
    this.flags = int8 ? MM_INT8_X : 0;
    if (opts.threads !== undefined) addon.setThreads(opts.threads);
  }

  /** Whether `attendF16` runs in the addon (attend16) rather than widening in the TS reference (addons built before it). */
  get nativeAttendF16(): boolean {
    return this.addon.attend16 !== undefined;
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
  attend(a: AttendArgs): void {
    this.addon.attend(a.out, a.oOff, a.oStride, a.q, a.qOff, a.qStride, a.nq, a.hd, a.scale,
      a.k1, a.v1, a.from1, a.to1, a.count1, a.k2, a.v2, a.from2, a.to2);
  }

  /**
   * `attend` over an F16 cache's stored half bits: K/V widened block by block with F16C inside the fused kernel
   * (addon attend16), so an F16 head is read at half the bytes and never copied whole. An addon built before
   * attend16 delegates to the TS reference (which widens the entries it reads).
   */
  attendF16(a: AttendF16Args): void {
    const attend16 = this.addon.attend16;
    if (!attend16) {
      this.reference.attendF16(a);
      return;
    }
    attend16.call(this.addon, a.out, a.oOff, a.oStride, a.q, a.qOff, a.qStride, a.nq, a.hd, a.scale,
      a.k1, a.v1, a.from1, a.to1, a.count1, a.k2, a.v2, a.from2, a.to2);
  }

  swiglu(gate: Float32Array, up: Float32Array, n: number): void {
    this.addon.swiglu(gate, up, n);
  }

  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void {
    this.addon.rmsNorm(out, x, w, rows, dim, eps);
  }

  /** The residual add: in the addon where it has one (a JS loop costs ~2.5 ns an element here), else the reference. */
  override add(out: Float32Array, x: Float32Array, n: number): void {
    if (this.addon.add) this.addon.add(out, x, n);
    else super.add(out, x, n);
  }

  /** Not accelerated: one row per token, a copy or a dequantization (the TS reference). */
  embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void {
    this.reference.embedRow(out, outOff, w, row);
  }

  /** Not accelerated (Gemma's FFN activation): the TS reference. */
  gegluTanh(gate: Float32Array, up: Float32Array, n: number): void {
    this.reference.gegluTanh(gate, up, n);
  }

  /** Every addon call has finished (its pool joined) when it returns. */
  flush(): Promise<void> {
    return Promise.resolve();
  }
}
