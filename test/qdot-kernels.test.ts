/**
 * The native integer dots (native/qdot.c, `int8Activations`) of the addon as built, for every block type
 * (test/qdot-check.ts: random blocks against activations quantized as the addon does; GEMV and GEMM shapes, 1 and 2
 * threads). The AVX-VNNI bodies, which this CPU may not run, are checked by test/avxvnni-kernels.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import { dequantize } from '../src/model/quant.js';
import { Rng } from '../src/generate/rng.js';
import { F16_FIELDS, checkIntegerDots, randomBlocks, type BlockType } from './qdot-check.js';

const addon = loadNativeAddon();
if (!addon) console.warn(`[qdot tests] native addon unavailable, skipped: ${nativeLoadError()}`);
const avx2 = addon?.info().avx2 ?? false;
const vnni = (addon?.info() as { vnni?: boolean } | undefined)?.vnni ?? false;
if (addon && !avx2) console.warn('[qdot tests] CPU without AVX2: the integer dots are not used, skipped');

describe.skipIf(!addon || !avx2)('native integer dots (int8 activations)', () => {
  const types = Object.keys(F16_FIELDS) as BlockType[];
  for (const dtype of types) {
    it(`${dtype}: equals Σ dequant(W)·dequant(xq) to f32 rounding, GEMV and GEMM, 1 and 2 threads`, () => {
      checkIntegerDots(addon!, dtype, vnni);
    });
  }

  it('int8Activations: false keeps the f32-activation path (matches dequant(W)·x to f32 rounding)', () => {
    const rng = new Rng(99);
    const be = new NativeBackend(addon!, { int8Activations: false });
    const w = randomBlocks(rng, 'q4_k', 9, 256);
    const wf = dequantize(w);
    const x = new Float32Array(256).map(() => rng.next() * 2 - 1);
    const got = new Float32Array(9);
    be.matmul(got, x, 1, w);
    for (let j = 0; j < 9; j++) {
      let want = 0, mag = 0;
      for (let k = 0; k < 256; k++) { want += wf[j * 256 + k] * x[k]; mag += Math.abs(wf[j * 256 + k] * x[k]); }
      expect(Math.abs(got[j] - want)).toBeLessThanOrEqual(2e-6 * mag);
    }
  });
});
