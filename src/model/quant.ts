/**
 * Element conversions and block (de)quantization shared by the loaders and the kernels. Block layouts follow
 * ggml (ggml-common.h): Q8_0 = f16 scale + 32 int8; Q4_0 = f16 scale + 16 bytes of nibbles; Q4_1 / Q5_0 / Q5_1 /
 * IQ4_NL are other 32-element blocks; Q2_K..Q6_K and IQ4_XS are 256-element super-blocks.
 *
 * The dequantizers give ggml's dequantize_row_* values bit for bit: every product of scale and quant is exact in
 * f32 (at most 24 significant bits), and a following `- min` / `+ m` done in double then stored to a Float32Array
 * rounds like one f32 operation.
 *
 * Over 500 lines on purpose: one short dequantizer per ggml block type (12 of them), kept together as ggml keeps them, with the shared element conversions.
 */
import type { FileDType } from './source.js';
import type { QuantWeight } from './weights.js';

const f32View = new Float32Array(1);
const u32View = new Uint32Array(f32View.buffer);

/** IEEE half to float. */
export function f16ToF32(h: number): number {
  const s = (h & 0x8000) >> 15;
  const e = (h & 0x7c00) >> 10;
  const f = h & 0x03ff;
  if (e === 0) return (s ? -1 : 1) * 2 ** -14 * (f / 1024);
  if (e === 0x1f) return f ? NaN : (s ? -Infinity : Infinity);
  return (s ? -1 : 1) * 2 ** (e - 15) * (1 + f / 1024);
}

/** bfloat16 to float: the upper 16 bits of an f32. */
export function bf16ToF32(b: number): number {
  u32View[0] = b << 16;
  return f32View[0];
}

/** Float to IEEE half, round to nearest even (used by writers and quantizers). */
export function f32ToF16(v: number): number {
  f32View[0] = v;
  return f16FromF32Bits(u32View[0]);
}

/** The IEEE half nearest (ties to even) to the float whose bits are `x`; NaN stays NaN, overflow goes to ±Inf. */
function f16FromF32Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  let exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  exp = exp - 127 + 15;
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant = (mant | 0x800000) >>> (1 - exp);
    if (mant & 0x1000 && (mant & 0x2fff)) mant += 0x2000;
    return sign | (mant >>> 13);
  }
  let h = sign | (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1;
  return h;
}

/**
 * `n` values of `src` from `srcOff` as IEEE half bits into `dst` from `dstOff`: f32ToF16 element by element, reading
 * the float bits through one view of `src`'s buffer instead of a scratch write and read per element (the F16 KV cache
 * appends every new K/V row this way).
 */
export function f32RowToF16(src: Float32Array, srcOff: number, dst: Uint16Array, dstOff: number, n: number): void {
  const bits = u32ViewOf(src);
  const b0 = (src.byteOffset >>> 2) + srcOff;
  for (let i = 0; i < n; i++) dst[dstOff + i] = f16FromF32Bits(bits[b0 + i]);
}

/**
 * A Uint32Array over the whole buffer of `a`, cached for the last two buffers seen (a forward pass reuses its K and V
 * buffers, and an append converts one row of each in turn).
 */
const bitViews: Uint32Array<ArrayBufferLike>[] = [];
function u32ViewOf(a: Float32Array): Uint32Array {
  const words = a.buffer.byteLength >>> 2;
  for (const v of bitViews) if (v.buffer === a.buffer && v.length === words) return v;
  const v = new Uint32Array(a.buffer, 0, words);
  if (bitViews.length === 2) bitViews.shift();
  bitViews.push(v);
  return v;
}

/** Elements per block and bytes per block of each block-quantized type. */
export const BLOCK: Record<QuantWeight['dtype'], { elements: number; bytes: number }> = {
  f16: { elements: 1, bytes: 2 },
  q8_0: { elements: 32, bytes: 34 },
  q4_0: { elements: 32, bytes: 18 },
  q4_k: { elements: 256, bytes: 144 },
  q6_k: { elements: 256, bytes: 210 },
  q4_1: { elements: 32, bytes: 20 },
  q5_0: { elements: 32, bytes: 22 },
  q5_1: { elements: 32, bytes: 24 },
  q2_k: { elements: 256, bytes: 84 },
  q3_k: { elements: 256, bytes: 110 },
  q5_k: { elements: 256, bytes: 176 },
  iq4_nl: { elements: 32, bytes: 18 },
  iq4_xs: { elements: 256, bytes: 136 },
};

/** Whether a file type is kept as raw blocks in memory (F16 included); F32 and BF16 load as F32 arrays. */
export function isBlockType(d: FileDType): d is QuantWeight['dtype'] {
  return Object.hasOwn(BLOCK, d);
}

/** Bytes of one row of `cols` elements; throws if cols is not a whole number of blocks. */
export function quantRowBytes(dtype: QuantWeight['dtype'], cols: number): number {
  const b = BLOCK[dtype];
  if (cols % b.elements !== 0) throw new Error(`${dtype} row of ${cols} elements is not a multiple of ${b.elements}`);
  return (cols / b.elements) * b.bytes;
}

/** Dequantize `cols` elements of a Q8_0 row starting at byte `off` of `src` into `out[outOff..]`. */
export function dequantRowQ8_0(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const nb = cols / 32;
  for (let b = 0; b < nb; b++) {
    const p = off + b * 34;
    const d = f16ToF32(src[p] | (src[p + 1] << 8));
    for (let i = 0; i < 32; i++) {
      const q = src[p + 2 + i];
      out[outOff + b * 32 + i] = d * (q > 127 ? q - 256 : q);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fast f16 decoding, the remaining block types, reference quantizers and dot helpers.
// ---------------------------------------------------------------------------------------------------------------

let f16Table: Float32Array | undefined;

/** Lookup table of all 65536 half values (built on first use, 256 KiB). */
export function f16Lut(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  return f16Table;
}

/** ggml type ids (ggml.h `enum ggml_type`) and their names, for the GGUF reader and writer. */
export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13,
  Q6_K: 14, Q8_K: 15, IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30, TQ1_0: 34, TQ2_0: 35, MXFP4: 39,
} as const;

/** Name of a ggml type id (`type 77` when unknown). */
export function ggmlTypeName(t: number): string {
  for (const [k, v] of Object.entries(GGML_TYPE)) if (v === t) return k;
  return `type ${t}`;
}

/** Dequantize `cols` elements of a Q4_0 row (f16 d, 16 bytes: low nibbles = elements 0..15, high = 16..31). */
export function dequantRowQ4_0(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  const nb = cols / 32;
  for (let b = 0; b < nb; b++) {
    const p = off + b * 18;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const o = outOff + b * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 2 + j];
      out[o + j] = ((q & 0x0f) - 8) * d;
      out[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

/** Q4_K: f16 d, f16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles; 8 sub-blocks of 32. */
export function dequantRowQ4_K(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  const nb = cols / 256;
  for (let b = 0; b < nb; b++) {
    const p = off + b * 144;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const dmin = lut[src[p + 2] | (src[p + 3] << 8)];
    const sc = p + 4;
    let q = p + 16;
    let o = outOff + b * 256;
    for (let j = 0, is = 0; j < 256; j += 64, is += 2) {
      let s: number, m: number;
      // get_scale_min_k4(is), then (is + 1)
      if (is < 4) {
        s = src[sc + is] & 63; m = src[sc + is + 4] & 63;
      } else {
        s = (src[sc + is + 4] & 0xf) | ((src[sc + is - 4] >> 6) << 4);
        m = (src[sc + is + 4] >> 4) | ((src[sc + is] >> 6) << 4);
      }
      const d1 = d * s, m1 = dmin * m;
      const i2 = is + 1;
      if (i2 < 4) {
        s = src[sc + i2] & 63; m = src[sc + i2 + 4] & 63;
      } else {
        s = (src[sc + i2 + 4] & 0xf) | ((src[sc + i2 - 4] >> 6) << 4);
        m = (src[sc + i2 + 4] >> 4) | ((src[sc + i2] >> 6) << 4);
      }
      const d2 = d * s, m2 = dmin * m;
      for (let l = 0; l < 32; l++) out[o + l] = d1 * (src[q + l] & 0xf) - m1;
      for (let l = 0; l < 32; l++) out[o + 32 + l] = d2 * (src[q + l] >> 4) - m2;
      q += 32;
      o += 64;
    }
  }
}

/** Q6_K: 128 bytes low nibbles (ql), 64 bytes high 2-bit pairs (qh), 16 int8 scales, f16 d. */
export function dequantRowQ6_K(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  const nb = cols / 256;
  for (let b = 0; b < nb; b++) {
    const p = off + b * 210;
    const d = lut[src[p + 208] | (src[p + 209] << 8)];
    let ql = p;
    let qh = p + 128;
    let sc = p + 192;
    let o = outOff + b * 256;
    for (let n = 0; n < 256; n += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l];
        const q1 = ((src[ql + l] & 0xf) | ((h & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const s0 = (src[sc + is] << 24) >> 24;
        const s2 = (src[sc + is + 2] << 24) >> 24;
        const s4 = (src[sc + is + 4] << 24) >> 24;
        const s6 = (src[sc + is + 6] << 24) >> 24;
        out[o + l] = d * s0 * q1;
        out[o + l + 32] = d * s2 * q2;
        out[o + l + 64] = d * s4 * q3;
        out[o + l + 96] = d * s6 * q4;
      }
      o += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

/** Q4_1: f16 d, f16 m, 16 bytes of nibbles (low = elements 0..15, high = 16..31); x = q·d + m. */
export function dequantRowQ4_1(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 32; b++) {
    const p = off + b * 20;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const m = lut[src[p + 2] | (src[p + 3] << 8)];
    const o = outOff + b * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 4 + j];
      out[o + j] = (q & 0x0f) * d + m;
      out[o + j + 16] = (q >> 4) * d + m;
    }
  }
}

/** The little-endian u32 at `src[p..p+4)` (a Q5 block's qh: bit j is the fifth bit of element j). */
function u32At(src: Uint8Array, p: number): number {
  return (src[p] | (src[p + 1] << 8) | (src[p + 2] << 16) | (src[p + 3] << 24)) >>> 0;
}

/** Q5_0: f16 d, 4 bytes qh (bit j = fifth bit of element j), 16 bytes of nibbles; x = (q - 16)·d. */
export function dequantRowQ5_0(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 32; b++) {
    const p = off + b * 22;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const qh = u32At(src, p + 2);
    const o = outOff + b * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 6 + j];
      out[o + j] = (((q & 0x0f) | (((qh >>> j) & 1) << 4)) - 16) * d;
      out[o + j + 16] = (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * d;
    }
  }
}

/** Q5_1: f16 d, f16 m, 4 bytes qh, 16 bytes of nibbles; x = q·d + m. */
export function dequantRowQ5_1(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 32; b++) {
    const p = off + b * 24;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const m = lut[src[p + 2] | (src[p + 3] << 8)];
    const qh = u32At(src, p + 4);
    const o = outOff + b * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 8 + j];
      out[o + j] = ((q & 0x0f) | (((qh >>> j) & 1) << 4)) * d + m;
      out[o + j + 16] = ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * d + m;
    }
  }
}

/**
 * Q2_K: 16 bytes of (4-bit scale | 4-bit min << 4), 64 bytes of 2-bit quants, f16 d, f16 dmin; 16 sub-blocks of 16.
 * Each 32-byte half of qs holds 128 elements: bits 2s..2s+1 of byte l are element 32s + l.
 */
export function dequantRowQ2_K(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 256; b++) {
    const p = off + b * 84;
    const d = lut[src[p + 80] | (src[p + 81] << 8)];
    const dmin = lut[src[p + 82] | (src[p + 83] << 8)];
    let o = outOff + b * 256;
    let is = 0;
    for (let q = p + 16; q < p + 80; q += 32) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (let half = 0; half < 32; half += 16) {
          const sc = src[p + is++];
          const dl = d * (sc & 0xf), ml = dmin * (sc >> 4);
          for (let l = 0; l < 16; l++) out[o + l] = dl * ((src[q + half + l] >> shift) & 3) - ml;
          o += 16;
        }
      }
    }
  }
}

const q3Scales = new Int32Array(16);

/**
 * Q3_K: 32 bytes hmask (high bit, inverted: clear means -4), 64 bytes of 2-bit quants (laid out as Q2_K's), 12
 * bytes of 6-bit scales (offset 32), f16 d; 16 sub-blocks of 16. Scale i: the low nibble of byte i (i < 8) or the
 * high nibble of byte i - 8, topped by bits 2·⌊i/4⌋..+1 of byte 8 + i % 4.
 */
export function dequantRowQ3_K(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  const scales = q3Scales;
  for (let b = 0; b < cols / 256; b++) {
    const p = off + b * 110;
    const hm = p, sc = p + 96;
    const d = lut[src[p + 108] | (src[p + 109] << 8)];
    for (let i = 0; i < 16; i++) {
      const low = i < 8 ? src[sc + i] & 0xf : src[sc + i - 8] >> 4;
      const high = (src[sc + 8 + (i & 3)] >> (2 * (i >> 2))) & 3;
      scales[i] = (low | (high << 4)) - 32;
    }
    let o = outOff + b * 256;
    let is = 0, m = 1;
    for (let q = p + 32; q < p + 96; q += 32) {
      for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (let half = 0; half < 32; half += 16) {
          const dl = d * scales[is++];
          for (let l = 0; l < 16; l++) {
            out[o + l] = dl * (((src[q + half + l] >> shift) & 3) - (src[hm + half + l] & m ? 0 : 4));
          }
          o += 16;
        }
      }
    }
  }
}

/** Q5_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins (as Q4_K), 32 bytes qh, 128 bytes of nibbles. */
export function dequantRowQ5_K(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 256; b++) {
    const p = off + b * 176;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const dmin = lut[src[p + 2] | (src[p + 3] << 8)];
    const sc = p + 4, qh = p + 16;
    let ql = p + 48;
    let o = outOff + b * 256;
    for (let is = 0, u = 1; is < 8; is += 2, u <<= 2) {
      const d1 = d * scaleK4(src, sc, is), m1 = dmin * minK4(src, sc, is);
      const d2 = d * scaleK4(src, sc, is + 1), m2 = dmin * minK4(src, sc, is + 1);
      for (let l = 0; l < 32; l++) out[o + l] = d1 * ((src[ql + l] & 0xf) + (src[qh + l] & u ? 16 : 0)) - m1;
      for (let l = 0; l < 32; l++) out[o + 32 + l] = d2 * ((src[ql + l] >> 4) + (src[qh + l] & (u << 1) ? 16 : 0)) - m2;
      ql += 32;
      o += 64;
    }
  }
}

/** 6-bit scale `j` of a Q4_K/Q5_K 12-byte scales field at `src[sc..]` (ggml's get_scale_min_k4, scale half). */
function scaleK4(src: Uint8Array, sc: number, j: number): number {
  return j < 4 ? src[sc + j] & 63 : (src[sc + j + 4] & 0xf) | ((src[sc + j - 4] >> 6) << 4);
}

/** 6-bit min `j` of the same field. */
function minK4(src: Uint8Array, sc: number, j: number): number {
  return j < 4 ? src[sc + j + 4] & 63 : (src[sc + j + 4] >> 4) | ((src[sc + j] >> 6) << 4);
}

/** The 16 non-linear levels of IQ4_NL / IQ4_XS (ggml's kvalues_iq4nl). */
const IQ4_LEVELS = new Int8Array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]);

/** IQ4_NL: f16 d, 16 bytes of nibbles indexing IQ4_LEVELS (low = elements 0..15, high = 16..31). */
export function dequantRowIQ4_NL(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 32; b++) {
    const p = off + b * 18;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const o = outOff + b * 32;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 2 + j];
      out[o + j] = d * IQ4_LEVELS[q & 0xf];
      out[o + j + 16] = d * IQ4_LEVELS[q >> 4];
    }
  }
}

/**
 * IQ4_XS: f16 d, u16 scales_h (2 high bits per sub-block), 4 bytes scales_l (a nibble per sub-block), 128 bytes of
 * nibbles; 8 sub-blocks of 32 laid out like IQ4_NL blocks, each scaled by d·(6-bit scale - 32).
 */
export function dequantRowIQ4_XS(src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number): void {
  const lut = f16Lut();
  for (let b = 0; b < cols / 256; b++) {
    const p = off + b * 136;
    const d = lut[src[p] | (src[p + 1] << 8)];
    const sh = src[p + 2] | (src[p + 3] << 8);
    for (let ib = 0; ib < 8; ib++) {
      const ls = ((src[p + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
      const dl = d * (ls - 32);
      const q = p + 8 + ib * 16;
      const o = outOff + b * 256 + ib * 32;
      for (let j = 0; j < 16; j++) {
        out[o + j] = dl * IQ4_LEVELS[src[q + j] & 0xf];
        out[o + j + 16] = dl * IQ4_LEVELS[src[q + j] >> 4];
      }
    }
  }
}

/** Dequantize one row of any supported block type. */
export function dequantRow(
  dtype: QuantWeight['dtype'], src: Uint8Array, off: number, cols: number, out: Float32Array, outOff: number,
): void {
  switch (dtype) {
    case 'f16': {
      const lut = f16Lut();
      for (let i = 0; i < cols; i++) out[outOff + i] = lut[src[off + 2 * i] | (src[off + 2 * i + 1] << 8)];
      return;
    }
    case 'q8_0': return dequantRowQ8_0(src, off, cols, out, outOff);
    case 'q4_0': return dequantRowQ4_0(src, off, cols, out, outOff);
    case 'q4_k': return dequantRowQ4_K(src, off, cols, out, outOff);
    case 'q6_k': return dequantRowQ6_K(src, off, cols, out, outOff);
    case 'q4_1': return dequantRowQ4_1(src, off, cols, out, outOff);
    case 'q5_0': return dequantRowQ5_0(src, off, cols, out, outOff);
    case 'q5_1': return dequantRowQ5_1(src, off, cols, out, outOff);
    case 'q2_k': return dequantRowQ2_K(src, off, cols, out, outOff);
    case 'q3_k': return dequantRowQ3_K(src, off, cols, out, outOff);
    case 'q5_k': return dequantRowQ5_K(src, off, cols, out, outOff);
    case 'iq4_nl': return dequantRowIQ4_NL(src, off, cols, out, outOff);
    case 'iq4_xs': return dequantRowIQ4_XS(src, off, cols, out, outOff);
  }
}

/** Dequantize a whole quantized weight into a new row-major Float32Array. */
export function dequantize(w: QuantWeight): Float32Array {
  const out = new Float32Array(w.rows * w.cols);
  const rb = quantRowBytes(w.dtype, w.cols);
  for (let r = 0; r < w.rows; r++) dequantRow(w.dtype, w.data, r * rb, w.cols, out, r * w.cols);
  return out;
}

const fr = Math.fround;

/** C `roundf`: halves away from zero. */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/**
 * Quantize `cols` floats of `x` (from `xOff`) into Q8_0 blocks at `dst[dstOff..]`, exactly like ggml's
 * quantize_row_q8_0_ref (f32 arithmetic, round half away from zero).
 */
export function quantizeRowQ8_0(x: ArrayLike<number>, xOff: number, cols: number, dst: Uint8Array, dstOff: number): void {
  if (cols % 32 !== 0) throw new Error(`q8_0 row of ${cols} elements is not a multiple of 32`);
  for (let b = 0; b < cols / 32; b++) {
    const xi = xOff + b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(fr(x[xi + j])));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const p = dstOff + b * 34;
    const h = f32ToF16(d);
    dst[p] = h & 0xff;
    dst[p + 1] = h >> 8;
    for (let j = 0; j < 32; j++) dst[p + 2 + j] = roundf(fr(fr(x[xi + j]) * id)) & 0xff;
  }
}

/** Quantize into Q4_0 blocks exactly like ggml's quantize_row_q4_0_ref (d = max / -8, nibble = min(15, (int8)(x/d + 8.5))). */
export function quantizeRowQ4_0(x: ArrayLike<number>, xOff: number, cols: number, dst: Uint8Array, dstOff: number): void {
  if (cols % 32 !== 0) throw new Error(`q4_0 row of ${cols} elements is not a multiple of 32`);
  for (let b = 0; b < cols / 32; b++) {
    const xi = xOff + b * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = fr(x[xi + j]);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    const p = dstOff + b * 18;
    const h = f32ToF16(d);
    dst[p] = h & 0xff;
    dst[p + 1] = h >> 8;
    for (let j = 0; j < 16; j++) {
      const x0 = fr(fr(x[xi + j]) * id);
      const x1 = fr(fr(x[xi + 16 + j]) * id);
      const xi0 = Math.min(15, Math.trunc(fr(x0 + 8.5)));
      const xi1 = Math.min(15, Math.trunc(fr(x1 + 8.5)));
      dst[p + 2 + j] = (xi0 & 0xf) | ((xi1 & 0xf) << 4);
    }
  }
}

/** Quantize a row-major [rows][cols] matrix into a new QuantWeight of type q8_0 or q4_0. */
export function quantizeMatrix(dtype: 'q8_0' | 'q4_0', data: ArrayLike<number>, rows: number, cols: number): QuantWeight {
  const rb = quantRowBytes(dtype, cols);
  const out = new Uint8Array(rows * rb);
  const f = dtype === 'q8_0' ? quantizeRowQ8_0 : quantizeRowQ4_0;
  for (let r = 0; r < rows; r++) f(data, r * cols, cols, out, r * rb);
  return { dtype, rows, cols, data: out };
}

let lastU8: Uint8Array | undefined;
let lastI8: Int8Array<ArrayBufferLike> = new Int8Array(0);
/** Signed view of a byte array (cached for the last array seen, so row-by-row kernels don't allocate). */
function int8View(src: Uint8Array): Int8Array<ArrayBufferLike> {
  if (src !== lastU8) {
    lastU8 = src;
    lastI8 = new Int8Array(src.buffer, src.byteOffset, src.byteLength);
  }
  return lastI8;
}

/** Dot product of one Q8_0 row (at byte `off` of `src`) with `x[xOff .. xOff+cols)`, no temporary buffers. */
export function dotRowQ8_0(src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number): number {
  const lut = f16Lut();
  const i8 = int8View(src);
  let sum = 0;
  for (let b = 0, p = off, xi = xOff; b < cols / 32; b++, p += 34, xi += 32) {
    const d = lut[src[p] | (src[p + 1] << 8)];
    const q = p + 2;
    let s = 0;
    for (let j = 0; j < 32; j += 4) {
      s += i8[q + j] * x[xi + j] + i8[q + j + 1] * x[xi + j + 1] + i8[q + j + 2] * x[xi + j + 2] + i8[q + j + 3] * x[xi + j + 3];
    }
    sum += d * s;
  }
  return sum;
}

/** Dot product of one Q4_0 row with `x[xOff..]`. */
export function dotRowQ4_0(src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number): number {
  const lut = f16Lut();
  let sum = 0;
  for (let b = 0, p = off, xi = xOff; b < cols / 32; b++, p += 18, xi += 32) {
    const d = lut[src[p] | (src[p + 1] << 8)];
    let s = 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 2 + j];
      s += ((q & 0x0f) - 8) * x[xi + j] + ((q >> 4) - 8) * x[xi + j + 16];
    }
    sum += d * s;
  }
  return sum;
}

/** Dot product of one Q4_1 row with `x[xOff..]`: per block d·Σq·x + m·Σx. */
export function dotRowQ4_1(src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number): number {
  const lut = f16Lut();
  let sum = 0;
  for (let b = 0, p = off, xi = xOff; b < cols / 32; b++, p += 20, xi += 32) {
    let s = 0, sx = 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 4 + j];
      const x0 = x[xi + j], x1 = x[xi + j + 16];
      s += (q & 0x0f) * x0 + (q >> 4) * x1;
      sx += x0 + x1;
    }
    sum += lut[src[p] | (src[p + 1] << 8)] * s + lut[src[p + 2] | (src[p + 3] << 8)] * sx;
  }
  return sum;
}

/** Dot product of one Q5_0 row with `x[xOff..]`. */
export function dotRowQ5_0(src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number): number {
  const lut = f16Lut();
  let sum = 0;
  for (let b = 0, p = off, xi = xOff; b < cols / 32; b++, p += 22, xi += 32) {
    const qh = u32At(src, p + 2);
    let s = 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 6 + j];
      s += (((q & 0x0f) | (((qh >>> j) & 1) << 4)) - 16) * x[xi + j] +
        (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * x[xi + j + 16];
    }
    sum += lut[src[p] | (src[p + 1] << 8)] * s;
  }
  return sum;
}

/** Dot product of one Q5_1 row with `x[xOff..]`: per block d·Σq·x + m·Σx. */
export function dotRowQ5_1(src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number): number {
  const lut = f16Lut();
  let sum = 0;
  for (let b = 0, p = off, xi = xOff; b < cols / 32; b++, p += 24, xi += 32) {
    const qh = u32At(src, p + 4);
    let s = 0, sx = 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 8 + j];
      const x0 = x[xi + j], x1 = x[xi + j + 16];
      s += ((q & 0x0f) | (((qh >>> j) & 1) << 4)) * x0 + ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * x1;
      sx += x0 + x1;
    }
    sum += lut[src[p] | (src[p + 1] << 8)] * s + lut[src[p + 2] | (src[p + 3] << 8)] * sx;
  }
  return sum;
}

/** Dot product of one IQ4_NL row with `x[xOff..]`. */
export function dotRowIQ4_NL(src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number): number {
  const lut = f16Lut();
  let sum = 0;
  for (let b = 0, p = off, xi = xOff; b < cols / 32; b++, p += 18, xi += 32) {
    let s = 0;
    for (let j = 0; j < 16; j++) {
      const q = src[p + 2 + j];
      s += IQ4_LEVELS[q & 0x0f] * x[xi + j] + IQ4_LEVELS[q >> 4] * x[xi + j + 16];
    }
    sum += lut[src[p] | (src[p + 1] << 8)] * s;
  }
  return sum;
}

const dotScratch = { buf: new Float32Array(256) };

/**
 * Dot product of one row of any block type with `x[xOff..]`. The 32-element types use direct kernels; F16, the
 * K-quants and IQ4_XS dequantize the row into a reused scratch buffer first.
 */
export function dotRow(
  dtype: QuantWeight['dtype'], src: Uint8Array, off: number, x: Float32Array, xOff: number, cols: number,
): number {
  if (dtype === 'q8_0') return dotRowQ8_0(src, off, x, xOff, cols);
  if (dtype === 'q4_0') return dotRowQ4_0(src, off, x, xOff, cols);
  if (dtype === 'q4_1') return dotRowQ4_1(src, off, x, xOff, cols);
  if (dtype === 'q5_0') return dotRowQ5_0(src, off, x, xOff, cols);
  if (dtype === 'q5_1') return dotRowQ5_1(src, off, x, xOff, cols);
  if (dtype === 'iq4_nl') return dotRowIQ4_NL(src, off, x, xOff, cols);
  if (dotScratch.buf.length < cols) dotScratch.buf = new Float32Array(cols);
  const t = dotScratch.buf;
  dequantRow(dtype, src, off, cols, t, 0);
  let s = 0;
  for (let i = 0; i < cols; i++) s += t[i] * x[xOff + i];
  return s;
}

/**
 * Byte offsets of the f16 scale fields in one block of each block type (ggml-common.h). The integer quants are
 * always finite and every dequantized value is built from its block's scales, so a block holds a non-finite value
 * exactly when one of these fields is NaN/Inf (0·Inf is NaN too).
 */
export const BLOCK_SCALE_OFFSETS: Record<Exclude<QuantWeight['dtype'], 'f16'>, readonly number[]> = {
  q8_0: [0], q4_0: [0], iq4_nl: [0], q5_0: [0], q4_1: [0, 2], q5_1: [0, 2],
  q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208], iq4_xs: [0],
};

/**
 * Index of the first NaN/Inf among the first `n` elements of `data` (F32 values, or the raw little-endian bytes of
 * F16 / BF16 / a block type), or -1. For block types the index is the first element of the first block whose scale
 * is non-finite. The TS fallback of the native addon's firstNonFinite (same results).
 */
export function firstNonFinite(dtype: QuantWeight['dtype'] | 'f32' | 'bf16', data: Float32Array | Uint8Array, n: number): number {
  if (dtype === 'f32') {
    if (!(data instanceof Float32Array)) throw new RangeError('firstNonFinite: f32 data must be a Float32Array');
    // v - v is 0 for every finite v and NaN for NaN and ±Inf.
    for (let i = 0; i < n; i++) if (data[i] - data[i] !== 0) return i;
    return -1;
  }
  if (data instanceof Float32Array) throw new RangeError(`firstNonFinite: ${dtype} data must be raw bytes`);
  if (dtype === 'f16' || dtype === 'bf16') {
    // Exponent bits all set means Inf or NaN. Adding one to the exponent field carries into the sign bit exactly
    // then, so two halves per u32 are tested at once, OR-reduced per chunk and searched only in a bad chunk.
    const [mask, one] = dtype === 'f16' ? [0x7c007c00, 0x04000400] : [0x7f807f80, 0x00800080];
    const hiMask = mask & 0xffff;
    const words = data.byteOffset % 4 === 0 ? new Uint32Array(data.buffer, data.byteOffset, n >>> 1) : undefined;
    const CHUNK = 4096;
    for (let i0 = 0; i0 < n; i0 += CHUNK) {
      const i1 = Math.min(n, i0 + CHUNK);
      let bad = 0;
      if (words) {
        for (let w = i0 >>> 1, we = i1 >>> 1; w < we; w++) bad |= ((words[w] & mask) + one) & 0x80008000;
        // An odd end leaves its last half outside the words.
        if (i1 & 1 && ((data[2 * i1 - 2] | (data[2 * i1 - 1] << 8)) & hiMask) === hiMask) bad = 1;
      } else bad = 1;
      if (bad === 0) continue;
      for (let i = i0; i < i1; i++) if (((data[2 * i] | (data[2 * i + 1] << 8)) & hiMask) === hiMask) return i;
    }
    return -1;
  }
  const b = BLOCK[dtype], offs = BLOCK_SCALE_OFFSETS[dtype];
  if (n % b.elements !== 0) throw new RangeError(`firstNonFinite: ${n} elements are not whole ${dtype} blocks`);
  const nb = n / b.elements;
  for (let k = 0, p = 0; k < nb; k++, p += b.bytes) {
    for (const o of offs) if ((data[p + o + 1] & 0x7c) === 0x7c) return k * b.elements;
  }
  return -1;
}
