/**
 * The load-time NaN/Inf scan of weights, the one check every loader calls on each tensor it reads (GGUF and HF
 * through assembleWeights' readers, llama2.c directly). One non-finite weight makes every logit NaN and greedy
 * decoding print token 0 forever, so such a file is refused at load, naming the tensor and the element. The scan
 * runs in the native addon when it is built (memory-bound, a few ms per 100 MB) and in TS otherwise.
 */
import { CokvError } from '../../errors.js';
import { NATIVE_DTYPE, loadNativeAddon } from '../../backend/native.js';
import { BLOCK, BLOCK_SCALE_OFFSETS, f16ToF32, firstNonFinite } from '../quant.js';
import type { QuantWeight, Weight } from '../weights.js';

type ScanDType = QuantWeight['dtype'] | 'f32' | 'bf16';

/** Milliseconds spent in assertFinite's scans since start (bench/scan-cost.ts reports it against the load). */
export const scanClock = { ms: 0 };

/** Index of the first NaN/Inf of the first `n` elements (see quant.ts firstNonFinite), native when available. */
export function scanNonFinite(dtype: ScanDType, data: Float32Array | Uint8Array, n: number, useNative = true): number {
  const addon = useNative ? loadNativeAddon() : undefined;
  if (addon?.firstNonFinite) return addon.firstNonFinite(data, dtype === 'bf16' ? 30 : NATIVE_DTYPE[dtype], n);
  return firstNonFinite(dtype, data, n);
}

function valueName(v: number): string {
  return Number.isNaN(v) ? 'NaN' : v > 0 ? '+Inf' : '-Inf';
}

/**
 * Throw a CokvError naming `file`, the tensor and the element unless every value of `w` is finite. `fileIndex`
 * maps an element index of the loaded data to the file's order (Q/K rows are un-permuted at load).
 */
export function assertFinite(file: string, name: string, w: Weight | Float32Array, fileIndex: (i: number) => number = (i) => i): void {
  const dtype: ScanDType = w instanceof Float32Array ? 'f32' : w.dtype;
  const data = w instanceof Float32Array ? w : w.data;
  const n = w instanceof Float32Array ? w.length : w.rows * w.cols;
  const cols = w instanceof Float32Array ? 0 : w.cols;
  const t0 = performance.now();
  const i = scanNonFinite(dtype, data, n);
  scanClock.ms += performance.now() - t0;
  if (i < 0) return;
  const at = fileIndex(i);
  const where = cols > 0 ? `element ${at} (row ${Math.floor(at / cols)}, column ${at % cols})` : `element ${at}`;
  let what: string;
  if (data instanceof Float32Array) what = `a non-finite weight (${valueName(data[i])})`;
  else if (dtype === 'f16') {
    what = `a non-finite weight (${valueName(f16ToF32(data[2 * i] | (data[2 * i + 1] << 8)))})`;
  } else {
    const bt = dtype as keyof typeof BLOCK_SCALE_OFFSETS;
    const p = (i / BLOCK[bt].elements) * BLOCK[bt].bytes;
    const bad = BLOCK_SCALE_OFFSETS[bt].map((o) => f16ToF32(data[p + o] | (data[p + o + 1] << 8))).find((v) => !Number.isFinite(v)) ?? NaN;
    what = `a ${dtype.toUpperCase()} block with a non-finite scale (${valueName(bad)})`;
  }
  throw new CokvError(`${file}: tensor ${name} holds ${what} at ${where}`, 'format');
}
