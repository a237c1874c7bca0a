/**
 * Every backend's matmul against the TS reference (random shapes with odd sizes, F32 and the block types), the
 * native F16 and attention entry points, the native scalar fallback, and backend selection. Native tests skip with
 * a message when build/Release/cokv_native.node is not built.
 */
import { describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import type { Backend } from '../src/backend/types.js';
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import { WasmBackend } from '../src/backend/wasm.js';
import { createBackend, selfCheck } from '../src/backend/select.js';
import { attendSegments, rmsNorm, swiglu } from '../src/backend/ts.js';
import { dequantize, f16Lut, f32ToF16, quantizeMatrix } from '../src/model/quant.js';
import type { QuantWeight, Weight } from '../src/model/weights.js';
import { Rng } from '../src/generate/rng.js';
import { relErr } from './helpers.js';

const addon = loadNativeAddon();
if (!addon) console.warn(`[backend tests] native addon unavailable, native tests skipped: ${nativeLoadError()}`);
const ROWS = [1, 3, 7, 64];
const COLS = [32, 96, 576];
const ref = new TsBackend();

function randArray(rng: Rng, n: number, s = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.next() * 2 - 1) * s;
  return a;
}

/** Random raw K-quant blocks with sane f16 scales (random bytes elsewhere cover every code path). */
function randomKQuant(rng: Rng, dtype: 'q4_k' | 'q6_k', rows: number, cols: number): QuantWeight {
  const bytes = dtype === 'q4_k' ? 144 : 210;
  const nb = (rows * cols) / 256;
  const data = new Uint8Array(nb * bytes);
  for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
  for (let b = 0; b < nb; b++) {
    const p = b * bytes;
    const put = (off: number, v: number) => { const h = f32ToF16(v); data[off] = h & 0xff; data[off + 1] = h >> 8; };
    if (dtype === 'q4_k') { put(p, 0.01 + rng.next() * 0.01); put(p + 2, rng.next() * 0.01); } else put(p + 208, 0.001 + rng.next() * 0.002);
  }
  return { dtype, rows, cols, data };
}

function makeWeight(rng: Rng, dtype: Weight['dtype'], rows: number, cols: number): Weight {
  if (dtype === 'q4_k' || dtype === 'q6_k') return randomKQuant(rng, dtype, rows, cols);
  const data = randArray(rng, rows * cols, 1 / Math.sqrt(cols));
  if (dtype === 'f32') return { dtype, rows, cols, data };
  if (dtype === 'f16') {
    const half = Uint16Array.from(data, (v) => f32ToF16(v));
    return { dtype, rows, cols, data: new Uint8Array(half.buffer) };
  }
  // The other block types are covered on llama.cpp-written blocks in quant-types.test.ts.
  if (dtype !== 'q8_0' && dtype !== 'q4_0') throw new Error(`no random ${dtype} weights here`);
  return quantizeMatrix(dtype, data, rows, cols);
}

/** The reference product: TS kernels over the dequantized weight (TS dequantizes only Q8_0 itself). */
function reference(x: Float32Array, rows: number, w: Weight): Float32Array {
  const out = new Float32Array(rows * w.rows);
  const wf: Weight = w.dtype === 'f32' ? w : { dtype: 'f32', rows: w.rows, cols: w.cols, data: dequantize(w) };
  ref.matmul(out, x, rows, wf);
  return out;
}

function checkBackend(be: Backend, dtypes: Weight['dtype'][], seed: number): void {
  const rng = new Rng(seed);
  for (const dtype of dtypes) {
    for (const rows of ROWS) {
      for (const cols of dtype === 'q4_k' || dtype === 'q6_k' ? [256, 512] : COLS) {
        const n = 1 + rng.int(300);
        const w = makeWeight(rng, dtype, n, cols);
        const x = randArray(rng, rows * cols);
        const want = reference(x, rows, w);
        const got = new Float32Array(rows * n).fill(NaN);
        be.matmul(got, x, rows, w);
        const e = relErr(got, want);
        // Same dequantized values, same f32 products; only the summation order differs.
        expect(e, `${be.name} ${dtype} rows=${rows} cols=${cols} n=${n}`).toBeLessThanOrEqual(1e-5);
      }
    }
  }
}

const ALL: Weight['dtype'][] = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k', 'q6_k'];

describe('TS backend on raw F16 weights', () => {
  it('equals its own F32 product over the widened weights (GEMV and GEMM paths)', () => {
    checkBackend(new TsBackend(), ['f16'], 13);
  });
});

describe('wasm backend vs TS reference', () => {
  it('matmul for F32, F16, Q8_0, Q4_0, Q4_K, Q6_K over odd shapes (rel. error ≤ 1e-5)', () => {
    checkBackend(new WasmBackend(), ALL, 11);
  });
  it('passes the selection self-check and handles many weights (memory reuse)', () => {
    const be = new WasmBackend();
    expect(selfCheck(be)).toBeUndefined();
    const rng = new Rng(5);
    for (let i = 0; i < 50; i++) {
      const w = makeWeight(rng, 'f32', 256, 576);
      const x = randArray(rng, 576);
      const got = new Float32Array(256);
      be.matmul(got, x, 1, w);
      expect(relErr(got, reference(x, 1, w))).toBeLessThanOrEqual(1e-5);
    }
  });
});

describe.skipIf(!addon)('native backend vs TS reference', () => {
  it('matmul for F32, Q8_0, Q4_0, Q4_K, Q6_K over odd shapes (rel. error ≤ 1e-5)', () => {
    checkBackend(new NativeBackend(addon!, { int8Activations: false }), ALL, 12);
  });

  it('scalar fallback (no AVX2) gives the same results', () => {
    addon!.setSimd(0);
    try {
      expect(addon!.info().simd).toBe(0);
      checkBackend(new NativeBackend(addon!, { int8Activations: false }), ALL, 13);
    } finally {
      addon!.setSimd(1);
    }
  });

  it('1 and 3 threads give the same results', () => {
    const before = addon!.info().threads;
    try {
      for (const t of [1, 3]) {
        addon!.setThreads(t);
        checkBackend(new NativeBackend(addon!, { int8Activations: false }), ['f32', 'q8_0'], 14 + t);
      }
    } finally {
      addon!.setThreads(before);
    }
  });

  it('Q8_0 with int8 activations stays within the bound set by quantizing x', () => {
    // x is rounded to Q8_0 per 32-block: each element moves by at most amax(block)/254, so output n moves by at most
    // Σ_k |W[n][k]|·amax(block of k)/254 (plus f32 rounding). Checked element by element.
    const be = new NativeBackend(addon!, { q8Int8: true });
    const rng = new Rng(21);
    for (const rows of [1, 3]) {
      for (const cols of COLS) {
        const n = 1 + rng.int(300);
        const w = makeWeight(rng, 'q8_0', n, cols) as QuantWeight;
        const wf = dequantize(w);
        const x = randArray(rng, rows * cols);
        const want = reference(x, rows, w);
        const got = new Float32Array(rows * n);
        be.matmul(got, x, rows, w);
        let scale = 0;
        for (const v of want) scale = Math.max(scale, Math.abs(v));
        for (let m = 0; m < rows; m++) {
          for (let j = 0; j < n; j++) {
            let bound = 0;
            for (let b = 0; b < cols / 32; b++) {
              let amax = 0;
              for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[m * cols + b * 32 + i]));
              for (let i = 0; i < 32; i++) bound += Math.abs(wf[j * cols + b * 32 + i]) * amax / 254;
            }
            expect(Math.abs(got[m * n + j] - want[m * n + j])).toBeLessThanOrEqual(bound * 1.01 + 1e-5 * scale);
          }
        }
      }
    }
  });

  it('F16 weights through F16C match the TS reference on the widened weights', () => {
    const be = new NativeBackend(addon!, { int8Activations: false });
    const lut = f16Lut();
    const rng = new Rng(31);
    for (const simd of [1, 0]) {
      addon!.setSimd(simd);
      for (const rows of ROWS) {
        for (const cols of COLS) {
          const n = 1 + rng.int(300);
          const h = new Uint16Array(n * cols);
          const wf = new Float32Array(n * cols);
          for (let i = 0; i < h.length; i++) { h[i] = f32ToF16((rng.next() * 2 - 1) / Math.sqrt(cols)); wf[i] = lut[h[i]]; }
          const x = randArray(rng, rows * cols);
          const want = reference(x, rows, { dtype: 'f32', rows: n, cols, data: wf });
          const got = new Float32Array(rows * n);
          be.matmulF16(got, x, rows, h, n, cols);
          expect(relErr(got, want), `f16 simd=${simd} rows=${rows} cols=${cols}`).toBeLessThanOrEqual(1e-5);
        }
      }
    }
    addon!.setSimd(1);
  });

  it('attend matches attendSegments (two segments, causal counts)', () => {
    const be = new NativeBackend(addon!, { int8Activations: false });
    const rng = new Rng(41);
    // nq > 8 (or causal counts) with hd % 8 == 0 takes the tiled (online-softmax) kernel: cover partial query and key blocks, the
    // 8-column value tail (hd 40, 80), a causal diagonal inside a key block, and the per-query path (hd 6, nq < 4).
    for (const [hd, n1, n2, nq] of [[64, 300, 0, 5], [32, 17, 9, 3], [64, 2048, 40, 2], [64, 200, 0, 200], [80, 130, 70, 37],
      [40, 64, 1, 33], [128, 97, 0, 96], [6, 50, 5, 12], [8, 1, 3, 4],
      // nq ≤ 8 seeing every entry takes the decode kernel (entries split across threads, states merged).
      [64, 1000, 0, 1], [64, 700, 300, 8], [32, 5000, 17, 3]] as const) {
      const k1 = randArray(rng, n1 * hd), v1 = randArray(rng, n1 * hd);
      const k2 = randArray(rng, Math.max(1, n2) * hd), v2 = randArray(rng, Math.max(1, n2) * hd);
      const qStride = hd * 3;
      const q = randArray(rng, nq * qStride);
      const scale = 1 / Math.sqrt(hd);
      for (const causal of [false, true]) {
        const count = new Int32Array(nq).map((_, i) => Math.max(1, n1 - (nq - 1 - i)));
        if (nq > 100) count.reverse(); // counts need not increase with the row
        const want = new Float32Array(nq * qStride), got = new Float32Array(nq * qStride);
        const scores = new Float32Array(n1 + n2);
        for (let i = 0; i < nq; i++) {
          const to1 = causal ? count[i] : n1;
          attendSegments(q, i * qStride + hd, hd, scale, want, i * qStride + hd, scores, k1, v1, 0, to1, k2, v2, 0, n2);
        }
        be.attend({ out: got, oOff: hd, oStride: qStride, q, qOff: hd, qStride, nq, hd, scale, k1, v1, from1: 0, to1: n1, count1: causal ? count : null, k2, v2, from2: 0, to2: n2 });
        expect(relErr(got, want), `attend hd=${hd} n1=${n1} n2=${n2} causal=${causal}`).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('swiglu and rmsNorm match the reference loops (AVX2 and scalar paths)', () => {
    const be = new NativeBackend(addon!, { int8Activations: false });
    const rng = new Rng(43);
    for (const simd of [1, 0]) {
      addon!.setSimd(simd);
      for (const n of [1, 7, 8, 61, 1536 * 3]) {
        const gate = randArray(rng, n, 30), up = randArray(rng, n); // ±30: both tails of the sigmoid
        gate[0] = 100; if (n > 1) gate[1] = -100; // beyond the exp clamp
        const want = gate.slice(), got = gate.slice();
        swiglu(want, up, n);
        be.swiglu(got, up, n);
        expect(relErr(got, want), `swiglu n=${n} simd=${simd}`).toBeLessThanOrEqual(1e-6);
      }
      for (const [rows, dim] of [[1, 576], [5, 64], [3, 13], [2, 8]]) {
        const x = randArray(rng, rows * dim, 3), w = randArray(rng, dim);
        const want = new Float32Array(rows * dim), got = new Float32Array(rows * dim);
        rmsNorm(want, x, w, rows, dim, 1e-5);
        be.rmsNorm(got, x, w, rows, dim, 1e-5);
        expect(relErr(got, want), `rmsNorm ${rows}x${dim} simd=${simd}`).toBeLessThanOrEqual(1e-6);
      }
    }
    addon!.setSimd(1);
    expect(() => be.swiglu(new Float32Array(4), new Float32Array(3), 4)).toThrow(/exceeds/);
    expect(() => be.rmsNorm(new Float32Array(10), new Float32Array(12), new Float32Array(6), 2, 6, 1e-5)).toThrow(/too small/);
  });

  it('add equals the reference residual add exactly, and refuses arrays shorter than n', () => {
    const be = new NativeBackend(addon!, { int8Activations: false });
    expect(typeof addon!.add).toBe('function');
    const rng = new Rng(47);
    for (const n of [1, 7, 8, 33, 576 * 5]) {
      const x = randArray(rng, n, 50), base = randArray(rng, n, 1e-3);
      base[0] = 3.4e38; x[0] = 3.4e38; // overflow to +Inf in both
      const want = base.slice(), got = base.slice();
      ref.add(want, x, n);
      be.add(got, x, n);
      expect(Array.from(got), `add n=${n}`).toEqual(Array.from(want));
    }
    const out = new Float32Array(8).fill(1);
    be.add(out, new Float32Array(8).fill(2), 5); // only the first n
    expect(Array.from(out)).toEqual([3, 3, 3, 3, 3, 1, 1, 1]);
    expect(() => be.add(new Float32Array(4), new Float32Array(3), 4)).toThrow(/exceeds/);
  });

  it('rejects arrays smaller than the shape', () => {
    const w: Weight = { dtype: 'f32', rows: 8, cols: 32, data: new Float32Array(8 * 32) };
    expect(() => new NativeBackend(addon!, { int8Activations: false }).matmul(new Float32Array(7), new Float32Array(32), 1, w)).toThrow(/out is smaller/);
    expect(() => addon!.matmul(new Float32Array(8), new Float32Array(32), 1, 8, 32, new Float32Array(10), 0)).toThrow(/w is smaller/);
    expect(() => addon!.matmul(new Float32Array(8), new Float32Array(40), 1, 8, 40, new Uint8Array(1000), 8)).toThrow(/whole number/);
  });
});

describe('createBackend', () => {
  it('ts and wasm are always available; auto picks native when it loads, else wasm', () => {
    expect(createBackend('ts').name).toBe('ts');
    expect(createBackend('wasm').name).toBe('wasm');
    expect(createBackend().name).toBe(addon ? 'native' : 'wasm');
    if (addon) expect(createBackend('native').name).toBe('native');
    else expect(() => createBackend('native')).toThrow(/unavailable/);
    expect(() => createBackend('gpu' as never)).toThrow(/unknown backend/);
  });
});
