/**
 * The integer-dot check shared by test/qdot-kernels.test.ts (the addon as built) and test/avxvnni-kernels.test.ts
 * (a build whose AVX-VNNI bodies run): random weight blocks (random bytes, sane f16 scale fields) against activation
 * rows quantized here exactly as the addon quantizes them (q8_0 blocks of 32 for the 32-element types, q8_K blocks
 * of 256 for the K types and IQ4_XS). The addon's result must equal Σ dequant(W) · dequant(x_q) up to f32 rounding —
 * which checks every bit-unpacking path of the integer kernels — and stay within the bound the activation rounding
 * allows of the exact f32 product. GEMV and GEMM shapes, 1 and 2 threads.
 */
import { expect } from 'vitest';
import { NativeBackend, type NativeAddon } from '../src/backend/native.js';
import { BLOCK, dequantize, f16ToF32, f32ToF16 } from '../src/model/quant.js';
import type { QuantWeight } from '../src/model/weights.js';
import { Rng } from '../src/generate/rng.js';

export type BlockType = Exclude<QuantWeight['dtype'], 'f16'>;
/** Byte offsets of each type's f16 scale fields in a block (ggml-common.h). */
export const F16_FIELDS: Record<BlockType, number[]> = {
  q8_0: [0], q4_0: [0], q4_1: [0, 2], q5_0: [0], q5_1: [0, 2], iq4_nl: [0],
  q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208], iq4_xs: [0],
};
const K_TYPES = new Set<BlockType>(['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_xs']);

export function randomBlocks(rng: Rng, dtype: BlockType, rows: number, cols: number): QuantWeight {
  const { elements, bytes } = BLOCK[dtype];
  const nb = (rows * cols) / elements;
  const data = new Uint8Array(nb * bytes);
  for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
  for (let b = 0; b < nb; b++) {
    for (const off of F16_FIELDS[dtype]) {
      const h = f32ToF16((rng.next() * 2 - 1) * 0.02);
      data[b * bytes + off] = h & 0xff;
      data[b * bytes + off + 1] = h >> 8;
    }
  }
  return { dtype, rows, cols, data };
}

/** f32 -> nearest f16 -> f32 (as ggml keeps q8_0 scales). */
function f16Round(v: number): number {
  return f16ToF32(f32ToF16(Math.fround(v)));
}

/** nearbyintf: round half to even. */
function rint(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : r;
}

/** x rows as the addon quantizes them, dequantized back (q·d in f32). */
function quantizedActivations(x: Float32Array, rows: number, cols: number, kType: boolean): Float32Array {
  const out = new Float32Array(x.length);
  const f = Math.fround;
  const size = kType ? 256 : 32;
  for (let b = 0; b < (rows * cols) / size; b++) {
    const o = b * size;
    let amax = 0, max = 0;
    for (let i = 0; i < size; i++) {
      const a = Math.abs(x[o + i]);
      if (a > amax) { amax = a; max = x[o + i]; }
    }
    if (amax === 0) continue;
    if (kType) {
      const iscale = f(-127 / max), d = f(1 / iscale);
      for (let i = 0; i < size; i++) out[o + i] = f(Math.max(-127, Math.min(127, rint(f(iscale * x[o + i])))) * d);
    } else {
      const d = f16Round(amax / 127), id = f(127 / amax);
      for (let i = 0; i < size; i++) out[o + i] = f(rint(f(x[o + i] * id)) * d);
    }
  }
  return out;
}

/** Every GEMV / GEMM shape of one block type through `addon` (int8 activations); `vnni`: the addon's prefill GEMM runs
 * on VNNI, so its 130-row results must also equal the integer reference (else only the f32 bound holds). */
export function checkIntegerDots(addon: NativeAddon, dtype: BlockType, vnni: boolean): void {
  const types = Object.keys(F16_FIELDS) as BlockType[];
  const rng = new Rng(7 + types.indexOf(dtype));
  const be = new NativeBackend(addon, { int8Activations: true });
  const before = addon.info().threads;
  try {
    // 130 rows: the prefill GEMM (AVX512-VNNI where the CPU runs it, else f32 GEMM — then only the second bound holds)
    // GEMV remainders: an odd block count (544 = 17 blocks of 32; 768 = 3 super-blocks) and a single block, with
    // row counts that are not multiples of the kernels' 4/8-row groups
    const odd = K_TYPES.has(dtype) ? [[1, 13, 768], [1, 9, 256]] : [[1, 13, 544], [1, 9, 32]];
    for (const [rows, n, cols] of [[1, 37, 512], ...odd, [3, 20, 256], [19, 41, 768], [130, 70, 512]] as const) {
      const w = randomBlocks(rng, dtype, n, cols);
      const wf = dequantize(w);
      const x = new Float32Array(rows * cols);
      for (let i = 0; i < x.length; i++) x[i] = (rng.next() * 2 - 1) * (i % 97 === 0 ? 8 : 1);
      const xq = quantizedActivations(x, rows, cols, K_TYPES.has(dtype));
      for (const threads of [1, 2]) {
        addon.setThreads(threads);
        const got = new Float32Array(rows * n);
        be.matmul(got, x, rows, w);
        for (let m = 0; m < rows; m++) {
          for (let j = 0; j < n; j++) {
            let want = 0, mag = 0, exact = 0, bound = 0;
            for (let k = 0; k < cols; k++) {
              const wv = wf[j * cols + k];
              want += wv * xq[m * cols + k];
              mag += Math.abs(wv * xq[m * cols + k]);
              exact += wv * x[m * cols + k];
              bound += Math.abs(wv) * Math.abs(x[m * cols + k] - xq[m * cols + k]);
            }
            const g = got[m * n + j];
            if (rows < 128 || vnni) expect(Math.abs(g - want), `${dtype} rows=${rows} n=${n} cols=${cols} [${m},${j}]`).toBeLessThanOrEqual(2e-6 * mag + 1e-30);
            expect(Math.abs(g - exact)).toBeLessThanOrEqual(bound + 2e-6 * mag + 1e-30);
          }
        }
      }
    }
  } finally {
    addon.setThreads(before);
  }
}
