/**
 * Many coalitions decoding against one shared prompt cache, as one batch. The full per-head prompt cache of a
 * sample is computed once; a coalition only changes which prompt entries each head may read: members read all
 * L entries, the others only the last `window` (spec §1: masked heads keep just the local window). Each coalition
 * appends its own generated K/V to small per-coalition buffers. Rows of a forward call are coalition-major:
 * row = b·T + t for coalition b and new token t; all coalitions advance in lockstep, so weights are read once
 * per step for the whole batch.
 *
 * Players are the KV heads of the full-attention layers (see players.ts). A sliding-window layer is masked in no
 * coalition: every query there reads the entries of its own window, from the (trimmed) prompt cache and the
 * coalition's generated entries, exactly as the forward pass does.
 */
import { emptyAttendArgs, type ActivationBuffer, type Backend } from '../backend/types.js';
import type { RaggedKVCache } from '../cache/ragged.js';
import type { ModelConfig } from '../model/config.js';
import type { KvAttention } from '../model/forward.js';
import { Players, type Coalition } from './players.js';

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
  /** Refilled before each backend call (a decode step makes rows × KV heads of them). */
  private readonly args = emptyAttendArgs();
  /** Per layer: its sliding window, or 0 for full attention. */
  private readonly windows: Int32Array;
  readonly positionOf = (row: number): number => this.promptLength + this.generated + (row % this.T);

  constructor(
    private readonly c: ModelConfig,
    private readonly prompt: RaggedKVCache,
    coalitions: Coalition[],
    window: number,
    readonly maxNew: number,
    /** Kernels for the attention (the model's backend). */
    private readonly backend: Backend,
  ) {
    this.batch = coalitions.length;
    // The position counter, not a head's length: sliding layers' prompt caches are trimmed to their window.
    this.promptLength = prompt.position;
    if (prompt.dtype !== 'f32') throw new Error('coalition batches need an F32 prompt cache');
    const { numLayers: Ln, numKvHeads: G, headDim: hd } = c;
    this.windows = Int32Array.from(c.layers, (l) => (l.kind === 'sliding' ? l.window! : 0));
    const players = Players.of(c);
    this.genK = new Float32Array(this.batch * Ln * G * maxNew * hd);
    this.genV = new Float32Array(this.batch * Ln * G * maxNew * hd);
    this.starts = new Int32Array(this.batch * Ln * G);
    coalitions.forEach((s, b) => {
      if (s.length !== players.n) throw new Error(`coalition batch: a coalition of ${s.length} players, the model has ${players.n}`);
      players.layers.forEach((l, row) => {
        for (let g = 0; g < G; g++) {
          const L = prompt.head(l, g).length;
          this.starts[(b * Ln + l) * G + g] = s[row * G + g] ? 0 : Math.max(0, L - window);
        }
      });
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

  attend(layer: number, q: ActivationBuffer, kAct: ActivationBuffer, vAct: ActivationBuffer, out: ActivationBuffer, rows: number): void {
    const { numHeads: nh, numKvHeads: G, headDim: hd, numLayers: Ln } = this.c;
    // The generated K/V live in host arrays (genK/genV), like the prompt cache: read the new rows back.
    const k = this.backend.read(kAct), v = this.backend.read(vAct);
    const T = this.T;
    const qDim = nh * hd, kvDim = G * hd, group = nh / G;
    const span = this.maxNew * hd;
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
    const window = this.windows[layer];
    // The group's query heads are adjacent in the row and read the same segments: one call for all of them.
    const a = this.args;
    a.out = out; a.q = q; a.oStride = a.qStride = hd; a.nq = group; a.hd = hd; a.scale = this.c.recipe.attentionScale;
    a.count1 = null; a.k2 = this.genK; a.v2 = this.genV;
    for (let r = 0; r < rows; r++) {
      const b = Math.floor(r / T), t = r % T;
      const e = this.generated + t; // this row's own entry in the generated segment
      for (let g = 0; g < G; g++) {
        const head = this.prompt.head(layer, g);
        // Entry e of this coalition's generated segment sits at genK[(first + e) * hd].
        const first = ((b * Ln + layer) * G + g) * this.maxNew;
        let start = this.starts[(b * Ln + layer) * G + g], genFrom = 0;
        if (window > 0) {
          // Sliding layer: the query at position p sees positions > p − window. Prompt entries hold consecutive
          // positions from positions[0]; generated entry e' sits at position promptLength + e'.
          const oldest = this.promptLength + e - window + 1;
          start = head.length > 0 ? Math.min(head.length, Math.max(0, oldest - head.positionAt(0))) : 0;
          genFrom = Math.max(0, oldest - this.promptLength);
        }
        a.k1 = head.keysF32(); // the F32 buffers themselves (no copy)
        a.v1 = head.valuesF32();
        a.oOff = a.qOff = r * qDim + g * group * hd;
        a.from1 = start; a.to1 = head.length;
        a.from2 = first + genFrom; a.to2 = first + e + 1;
        this.backend.attend(a);
      }
    }
  }
}
