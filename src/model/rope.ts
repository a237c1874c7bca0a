import type { ModelConfig } from './config.js';

/**
 * RoPE inverse frequencies for the Hugging Face convention (dimension i pairs with i + headDim/2), including
 * llama3 and linear scaling, or llama.cpp's stored per-frequency factors. Values are rounded to f32 like
 * transformers computes them.
 */
export function ropeInvFreq(c: ModelConfig): Float64Array {
  const half = c.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim));
  if (c.ropeFreqFactors) {
    for (let i = 0; i < half; i++) inv[i] = inv[i] / c.ropeFreqFactors[i];
    return inv;
  }
  const s = c.ropeScaling;
  if (s?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] /= s.factor;
  } else if (s?.type === 'llama3') {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen < highWavelen) continue; // high frequency: unchanged
      if (wavelen > lowWavelen) {
        inv[i] = inv[i] / s.factor; // low frequency: fully scaled
      } else {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}

/** Rotate `heads` consecutive head vectors of size headDim at x[off..] for sequence position `pos`. */
export function applyRope(
  x: Float32Array, off: number, heads: number, headDim: number, pos: number, cos: Float32Array, sin: Float32Array,
): void {
  const half = headDim / 2;
  const t = pos * half;
  for (let h = 0; h < heads; h++) {
    const b = off + h * headDim;
    for (let i = 0; i < half; i++) {
      const c = cos[t + i], s = sin[t + i];
      const a = x[b + i], z = x[b + i + half];
      x[b + i] = a * c - z * s;
      x[b + i + half] = z * c + a * s;
    }
  }
}

/** Cos/sin tables [position][headDim/2], grown on demand (never per token: capacity doubles). */
export class RopeTable {
  cos = new Float32Array(0);
  sin = new Float32Array(0);
  private positions = 0;
  constructor(private readonly invFreq: Float64Array) {}

  ensure(positions: number): void {
    if (positions <= this.positions) return;
    const n = Math.max(positions, this.positions * 2, 64);
    const half = this.invFreq.length;
    const cos = new Float32Array(n * half);
    const sin = new Float32Array(n * half);
    for (let p = 0; p < n; p++) {
      for (let i = 0; i < half; i++) {
        // transformers multiplies position and inv_freq in float32 before cos/sin.
        const a = Math.fround(p * this.invFreq[i]);
        cos[p * half + i] = Math.cos(a);
        sin[p * half + i] = Math.sin(a);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.positions = n;
  }
}
