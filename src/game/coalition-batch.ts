/**
 * Many coalitions decoding against one shared prompt cache, as one batch. The full per-head prompt cache of a
 * sample is computed once; a coalition only changes which prompt entries each head may read: members read all
 * L entries, the others only the last `window` (spec §1: masked heads keep just the local window). Each coalition
 * appends its own generated K/V to small per-coalition buffers. Rows of a forward call are coalition-major:
 * row = b·T + t for coalition b and new token t; all coalitions advance in lockstep, so weights are read once
 * per step for the whole batch.
 */
import type { Backend } from '../backend/types.js';
import type { RaggedKVCache } from '../cache/ragged.js';
import type { ModelConfig } from '../model/config.js';
import { attendSegments, type KvAttention } from '../model/forward.js';
import type { Coalition } from './players.js';

export class CoalitionBatch implements KvAttention {
  readonly batch: number;
  readonly promptLength: number;
  /** Generated tokens so far (the same for every coalition). */
  generated = 0;
  /** Tokens fed in the current forward call (set by `step`). */
  private T = 1;
  private readonly genK: Float32Array;
  private readonly genV: Float32Array;
  private readonly starts: Int32Array;
  private scores = new Float32Array(0);
  readonly positionOf = (row: number): number => this.promptLength + this.generated + (row % this.T);

  constructor(
    private readonly c: ModelConfig,
    private readonly prompt: RaggedKVCache,
    coalitions: Coalition[],
    window: number,
    readonly maxNew: number,
    /** Kernels for the attention (its fused `attend` when it has one); without it, the TypeScript loop. */
    private readonly backend?: Backend,
  ) {
    this.batch = coalitions.length;
    this.promptLength = prompt.head(0, 0).length;
    if (prompt.dtype !== 'f32') throw new Error('coalition batches need an F32 prompt cache');
    const { numLayers: Ln, numKvHeads: G, headDim: hd } = c;
    this.genK = new Float32Array(this.batch * Ln * G * maxNew * hd);
    this.genV = new Float32Array(this.batch * Ln * G * maxNew * hd);
    this.starts = new Int32Array(this.batch * Ln * G);
    const L = this.promptLength;
    coalitions.forEach((s, b) => {
      for (let p = 0; p < Ln * G; p++) this.starts[b * Ln * G + p] = s[p] ? 0 : Math.max(0, L - window);
    });
  }

  /** Declare that the next forward call feeds `T` tokens per coalition. */
  setTokensPerCoalition(T: number): void {
    if (this.generated + T > this.maxNew) throw new Error(`coalition batch: ${this.generated + T} tokens exceed maxNew ${this.maxNew}`);
    this.T = T;
  }

  /** Call after each forward: the fed tokens are now part of every coalition's cache. */
  advance(): void {
    this.generated += this.T;
  }

  attend(layer: number, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, rows: number): void {
    const { numHeads: nh, numKvHeads: G, headDim: hd, numLayers: Ln } = this.c;
    const T = this.T;
    const qDim = nh * hd, kvDim = G * hd, group = nh / G;
    const scale = 1 / Math.sqrt(hd);
    const span = this.maxNew * hd;
    const need = this.promptLength + this.generated + T;
    if (this.scores.length < need) this.scores = new Float32Array(need);
    for (let r = 0; r < rows; r++) {
      const b = Math.floor(r / T), t = r % T;
      for (let g = 0; g < G; g++) {
        const base = ((b * Ln + layer) * G + g) * span;
        const dst = base + (this.generated + t) * hd;
        for (let i = 0; i < hd; i++) {
          this.genK[dst + i] = k[r * kvDim + g * hd + i];
          this.genV[dst + i] = v[r * kvDim + g * hd + i];
        }
      }
    }
    for (let r = 0; r < rows; r++) {
      const b = Math.floor(r / T), t = r % T;
      for (let g = 0; g < G; g++) {
        const head = this.prompt.head(layer, g);
        const start = this.starts[(b * Ln + layer) * G + g];
        // Entry e of this coalition's generated segment sits at genK[(first + e) * hd].
        const first = ((b * Ln + layer) * G + g) * this.maxNew;
        const keys = head.keys as Float32Array, values = head.values as Float32Array;
        if (this.backend?.attend) {
          // The group's query heads are adjacent in the row and read the same segments: one call for all of them.
          const off = r * qDim + g * group * hd;
          this.backend.attend(out, off, hd, q, off, hd, group, hd, scale, keys, values, start, this.promptLength, null,
            this.genK, this.genV, first, first + this.generated + t + 1);
          continue;
        }
        for (let j = 0; j < group; j++) {
          const off = r * qDim + (g * group + j) * hd;
          attendSegments(q, off, hd, scale, out, off, this.scores,
            keys, values, start, this.promptLength, this.genK, this.genV, first, first + this.generated + t + 1);
        }
      }
    }
  }
}
