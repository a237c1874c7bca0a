/**
 * Element conversions and block (de)quantization shared by the loaders and the kernels. Block layouts follow
 * ggml (ggml-common.h): Q8_0 = f16 scale + 32 int8; Q4_0 = f16 scale + 16 bytes of nibbles;
 * Q4_K / Q6_K are 256-element super-blocks.
 */
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
  const x = u32View[0];
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

/** Elements per block and bytes per block of each block-quantized type. */
export const BLOCK: Record<QuantWeight['dtype'], { elements: number; bytes: number }> = {
  q8_0: { elements: 32, bytes: 34 },
  q4_0: { elements: 32, bytes: 18 },
  q4_k: { elements: 256, bytes: 144 },
  q6_k: { elements: 256, bytes: 210 },
};

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
