import type { ModelConfig, RopeSpec } from './config.js';
import { globalRope } from './config.js';

/**
 * RoPE inverse frequencies (rotaryDim/2 values) for the Hugging Face convention (dimension i pairs with
 * i + rotaryDim/2), including llama3, linear and longrope scaling, or llama.cpp's stored per-frequency factors.
 * Values are rounded to f32 like transformers computes them. `long` picks longrope's long factors.
 */
export function ropeInvFreqFor(r: RopeSpec, long = false): Float64Array {
  const half = r.rotaryDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.pow(r.theta, (2 * i) / r.rotaryDim));
  if (r.freqFactors) {
    for (let i = 0; i < half; i++) inv[i] = inv[i] / r.freqFactors[i];
    return inv;
  }
  const s = r.scaling;
  if (s?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] /= s.factor;
  } else if (s?.type === 'longrope') {
    const f = long ? s.longFactor : s.shortFactor;
    for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / (f[i] * Math.pow(r.theta, (2 * i) / r.rotaryDim)));
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

/** Inverse frequencies of the config's full-attention RoPE (see {@link ropeInvFreqFor}). */
export function ropeInvFreq(c: ModelConfig): Float64Array {
  return ropeInvFreqFor(c.layers?.find((l) => l.kind === 'full' && l.rope)?.rope ?? globalRope(c));
}

/**
 * Rotate `heads` consecutive head vectors of size headDim at x[off..] for sequence position `pos`: the first
 * `rotaryDim` dimensions of each head rotate in (i, i + rotaryDim/2) pairs, the rest pass through (partial rotary).
 * The forward pass reaches it through `Backend.rope` (the TS reference in src/backend/ts.ts applies it row by row).
 */
export function applyRope(
  x: Float32Array, off: number, heads: number, headDim: number, pos: number, cos: Float32Array, sin: Float32Array,
  rotaryDim = headDim,
): void {
  const half = rotaryDim / 2;
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

/**
 * Cos/sin tables [position][rotaryDim/2], grown on demand (never per token: capacity doubles). `mscale`
 * multiplies both (longrope's attention factor), as transformers does.
 */
export class RopeTable {
  cos = new Float32Array(0);
  sin = new Float32Array(0);
  private positions = 0;
  constructor(private readonly invFreq: Float64Array, private readonly mscale = 1) {}

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
        cos[p * half + i] = this.mscale === 1 ? Math.cos(a) : Math.fround(Math.cos(a)) * this.mscale;
        sin[p * half + i] = this.mscale === 1 ? Math.sin(a) : Math.fround(Math.sin(a)) * this.mscale;
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.positions = n;
  }
}

/**
 * One layer's rotary embedding: a table, plus for longrope the long-factor table that transformers switches to
 * once a forward pass reaches past the original context (earlier keys keep their rotation, as there).
 */
export class LayerRope {
  private readonly short: RopeTable;
  private readonly long: RopeTable | undefined;
  private readonly original: number;
  constructor(readonly spec: RopeSpec) {
    const s = spec.scaling;
    const mscale = s?.type === 'longrope' ? s.attentionFactor : 1;
    this.short = new RopeTable(ropeInvFreqFor(spec), mscale);
    this.long = s?.type === 'longrope' && !spec.freqFactors ? new RopeTable(ropeInvFreqFor(spec, true), mscale) : undefined;
    this.original = s?.type === 'longrope' ? s.originalMaxPositionEmbeddings : Infinity;
  }

  /** The table for a pass whose largest position is `maxPos`, grown to cover it. */
  table(maxPos: number): RopeTable {
    const t = this.long && maxPos + 1 > this.original ? this.long : this.short;
    t.ensure(maxPos + 1);
    return t;
  }
}
