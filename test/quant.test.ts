import { describe, expect, it } from 'vitest';
import { Rng } from '../src/generate/rng.js';
import {
  dequantRow, dequantRowQ4_0, dequantRowQ4_K, dequantRowQ6_K, dequantRowQ8_0, dequantize, dotRow, dotRowQ4_0,
  dotRowQ8_0, f16ToF32, f32RowToF16, f32ToF16, quantizeMatrix, quantizeRowQ4_0, quantizeRowQ8_0,
} from '../src/model/quant.js';

/** Seeded uniform [0, 1) stream (the project's mulberry32 generator). */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

describe('dequantization of hand-made blocks', () => {
  it('Q8_0: f16 scale then 32 int8', () => {
    const b = new Uint8Array(34);
    b[0] = 0x00; b[1] = 0x38; // 0.5
    for (let i = 0; i < 32; i++) b[2 + i] = (i - 16) & 0xff;
    const out = new Float32Array(32);
    dequantRowQ8_0(b, 0, 32, out, 0);
    expect(out[0]).toBe(-8);
    expect(out[16]).toBe(0);
    expect(out[31]).toBe(7.5);
    expect(Array.from(out)).toEqual(Array.from({ length: 32 }, (_, i) => (i - 16) * 0.5));
  });

  it('Q4_0: low nibbles are elements 0..15, high nibbles 16..31, offset 8', () => {
    const b = new Uint8Array(18 + 18);
    b[18] = 0x00; b[19] = 0x40; // d = 2.0 in the second block (tests offsets)
    for (let j = 0; j < 16; j++) b[20 + j] = j | ((15 - j) << 4);
    const out = new Float32Array(64).fill(99);
    dequantRowQ4_0(b, 18, 32, out, 32);
    expect(out[0]).toBe(99);
    for (let j = 0; j < 16; j++) {
      expect(out[32 + j]).toBe((j - 8) * 2);
      expect(out[32 + 16 + j]).toBe((7 - j) * 2);
    }
  });

  it('Q4_K: 6-bit packed scales and mins', () => {
    const b = new Uint8Array(144);
    b[0] = 0x00; b[1] = 0x3c; // d = 1
    b[2] = 0x00; b[3] = 0x38; // dmin = 0.5
    const scales = [0x41, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x48, 0x21, 0x43, 0x65, 0x87];
    b.set(scales, 4);
    // worked out by hand from get_scale_min_k4:
    const sc = [1, 2, 3, 4, 17, 3, 5, 7];
    const mn = [5, 6, 7, 8, 2, 4, 6, 24];
    for (let c = 0; c < 4; c++) for (let l = 0; l < 32; l++) b[16 + c * 32 + l] = (l % 16) | ((15 - (l % 16)) << 4);
    const out = new Float32Array(256);
    dequantRowQ4_K(b, 0, 256, out, 0);
    for (let j = 0; j < 8; j++) {
      for (let l = 0; l < 32; l++) {
        const nib = j % 2 === 0 ? l % 16 : 15 - (l % 16);
        expect(out[j * 32 + l]).toBe(1 * sc[j] * nib - 0.5 * mn[j]);
      }
    }
    expect(out[0]).toBe(-2.5); // 1*1*0 - 0.5*5
    expect(out[4 * 32 + 3]).toBe(17 * 3 - 1); // sub-block 4: sc 17, min 2
    expect(out[7 * 32]).toBe(7 * 15 - 12); // sub-block 7: sc 7, min 24, nibble 15
  });

  it('Q6_K: ql/qh/int8 scales', () => {
    const b = new Uint8Array(210);
    b[0] = 0xa5; // ql[0]: low 5, high 10
    b[32] = 0x3c; // ql[32]: low 12, high 3
    b[128] = 0xe4; // qh[0] = 0b11_10_01_00
    for (let i = 0; i < 16; i++) b[192 + i] = (i - 8) & 0xff; // scales -8..7
    b[208] = 0x00; b[209] = 0x34; // d = 0.25
    const out = new Float32Array(256);
    dequantRowQ6_K(b, 0, 256, out, 0);
    expect(out[0]).toBe(54); // q = 5-32 = -27, scale -8
    expect(out[32]).toBe(6); // q = 12+16-32 = -4, scale -6
    expect(out[64]).toBe(-10); // q = 10+32-32 = 10, scale -4
    expect(out[96]).toBe(-9.5); // q = 3+48-32 = 19, scale -2
    expect(out[1]).toBe(64); // q = -32, scale -8
    expect(out[16]).toBe(56); // is = 1: scale -7
    expect(out[128]).toBe(-0); // second half, scale 0
    expect(out[200]).toBe(-32); // second half, group 2, l 8: scale sc[12] = 4
  });
});

describe('reference quantizers', () => {
  it('Q8_0 rounds half away from zero like roundf', () => {
    const x = new Float32Array(32);
    x.set([127, 2.5, -2.5, 0.5, -0.5, 1.5, -126.6]);
    const b = new Uint8Array(34);
    quantizeRowQ8_0(x, 0, 32, b, 0);
    expect(b[0] | (b[1] << 8)).toBe(f32ToF16(1));
    const q = Array.from(new Int8Array(b.buffer, 2, 7));
    expect(q).toEqual([127, 3, -3, 1, -1, 2, -127]);
  });

  it('Q8_0 scale is amax/127', () => {
    const x = Float32Array.from({ length: 32 }, (_, j) => j - 16);
    const b = new Uint8Array(34);
    quantizeRowQ8_0(x, 0, 32, b, 0);
    expect(b[0] | (b[1] << 8)).toBe(f32ToF16(16 / 127));
    const q = new Int8Array(b.buffer, 2, 32);
    expect(q[0]).toBe(-127);
    expect(q[17]).toBe(8); // 1 * 7.9375
    expect(q[31]).toBe(119); // 15 * 7.9375 = 119.06
  });

  it('Q4_0 uses d = max/-8 with truncation of x/d + 8.5', () => {
    const x = new Float32Array(32);
    x.set([-8, 7, 7.49, 7.5, -0.5, 0.49, 0.5]);
    const b = new Uint8Array(18);
    quantizeRowQ4_0(x, 0, 32, b, 0);
    expect(f16ToF32(b[0] | (b[1] << 8))).toBe(1);
    const lo = Array.from(b.subarray(2, 9), (v) => v & 15);
    expect(lo).toEqual([0, 15, 15, 15, 8, 8, 9]);
    const out = new Float32Array(32);
    dequantRowQ4_0(b, 0, 32, out, 0);
    expect(Array.from(out.subarray(0, 7))).toEqual([-8, 7, 7, 7, 0, 0, 1]);
    // positive max gives a negative scale
    const y = new Float32Array(32);
    y[0] = 8; y[1] = 3;
    quantizeRowQ4_0(y, 0, 32, b, 0);
    dequantRowQ4_0(b, 0, 32, out, 0);
    expect(out[0]).toBe(8);
    expect(out[1]).toBe(3);
  });

  it('round trips random rows within half a quantization step', () => {
    const r = rng(7);
    const rows = 5;
    const cols = 96;
    const x = Float32Array.from({ length: rows * cols }, () => (r() - 0.5) * 4);
    for (const dt of ['q8_0', 'q4_0'] as const) {
      const w = quantizeMatrix(dt, x, rows, cols);
      const y = dequantize(w);
      for (let b = 0; b < (rows * cols) / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
        const step = dt === 'q8_0' ? amax / 127 : amax / 8;
        for (let j = 0; j < 32; j++) {
          // q4_0 clamps the top code (+8 → 7), so allow a whole step there
          expect(Math.abs(y[b * 32 + j] - x[b * 32 + j])).toBeLessThanOrEqual(step * (dt === 'q8_0' ? 0.51 : 1.01) + 1e-3);
        }
      }
    }
  });
});

describe('dot helpers', () => {
  it('match a dequantized dot product for every block type', () => {
    const r = rng(3);
    const cols = 512;
    const x = Float32Array.from({ length: cols + 3 }, () => r() - 0.5);
    for (const dt of ['q8_0', 'q4_0', 'q4_k', 'q6_k'] as const) {
      const bytes = dt === 'q8_0' ? 34 * 16 : dt === 'q4_0' ? 18 * 16 : dt === 'q4_k' ? 144 * 2 : 210 * 2;
      const raw = Uint8Array.from({ length: bytes + 5 }, () => Math.floor(r() * 256));
      // keep the f16 scales finite and small
      if (dt === 'q8_0' || dt === 'q4_0') for (let b = 0; b < 16; b++) raw[5 + b * (dt === 'q8_0' ? 34 : 18) + 1] = 0x2c;
      if (dt === 'q4_k') for (let b = 0; b < 2; b++) { raw[5 + b * 144 + 1] = 0x2c; raw[5 + b * 144 + 3] = 0x2c; }
      if (dt === 'q6_k') for (let b = 0; b < 2; b++) raw[5 + b * 210 + 209] = 0x2c;
      const deq = new Float32Array(cols);
      dequantRow(dt, raw, 5, cols, deq, 0);
      let want = 0;
      for (let i = 0; i < cols; i++) want += deq[i] * x[3 + i];
      expect(dotRow(dt, raw, 5, x, 3, cols)).toBeCloseTo(want, 3);
      if (dt === 'q8_0') expect(dotRowQ8_0(raw, 5, x, 3, cols)).toBeCloseTo(want, 3);
      if (dt === 'q4_0') expect(dotRowQ4_0(raw, 5, x, 3, cols)).toBeCloseTo(want, 3);
    }
  });
});

describe('f32RowToF16 (the F16 KV cache append)', () => {
  it('gives f32ToF16 element by element: specials, subnormals, ties, offsets, alternating buffers', () => {
    const r = rng(5);
    const special = [0, -0, 1, -1, 65504, 65519.996, 65520, -65520, 1e-8, -1e-8, 2 ** -24, 2 ** -25,
      2.98023259e-8, 6.1035156e-5, 6.097555e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity, NaN, 3.4e38];
    for (let e = -30; e <= 17; e++) special.push(2 ** e * (1 + r()), -(2 ** e) * (1 + r()));
    for (let i = 0; i < 2000; i++) special.push((r() * 2 - 1) * 10 ** (r() * 12 - 8));
    // two source buffers read in turn (K then V), at offsets inside them, into offsets of one destination
    const n = special.length;
    const k = new Float32Array(n + 3), v = new Float32Array(n + 5);
    k.set(special, 3);
    v.set(special.map((x) => -x / 3), 5);
    const dst = new Uint16Array(2 * n + 7);
    for (let off = 0; off < n; off += 64) {
      const m = Math.min(64, n - off);
      f32RowToF16(k, 3 + off, dst, 7 + off, m);
      f32RowToF16(v, 5 + off, dst, 7 + n + off, m);
    }
    for (let i = 0; i < n; i++) {
      expect(dst[7 + i], `k[${i}] = ${k[3 + i]}`).toBe(f32ToF16(k[3 + i]));
      expect(dst[7 + n + i], `v[${i}] = ${v[5 + i]}`).toBe(f32ToF16(v[5 + i]));
    }
    // a subarray view (byteOffset ≠ 0) of a third buffer
    const big = new Float32Array(100).map((_, i) => i / 7 - 3);
    const sub = big.subarray(10, 90);
    const out = new Uint16Array(80);
    f32RowToF16(sub, 0, out, 0, 80);
    expect(Array.from(out)).toEqual(Array.from(sub, (x) => f32ToF16(x)));
  });
});
