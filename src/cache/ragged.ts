/**
 * Ragged KV cache: one contiguous K and V buffer per (layer, KV head), each with its own length. Heads are never
 * expanded to query heads (GQA-native). Keys are stored after RoPE, so evicting entries needs no re-rotation;
 * the position counter of the sequence keeps counting from the uncompressed length.
 *
 * Storage is F32 (default), F16 (half the bytes) or Q8 (each entry's K row and V row quantized symmetrically to
 * int8 with one F32 scale per row: scale = max|x|/127, q = round(x/scale)). Attention reads F16 and Q8 heads
 * widened to F32 scratch.
 *
 * The cache knows each layer's kind. A sliding-window layer holds only its window: the forward pass trims it
 * after every pass (`trimSliding`), its heads preallocate at most window + one prefill chunk, and presses never
 * touch it. Byte accounting separates the full-attention ("budgeted") layers, which presses compress and whose
 * kept fraction results report, from the sliding ones, which hold the same entries whatever the press.
 *
 * Over 500 lines on purpose: the head buffers, the three storage types and the byte accounting share one per-head layout; split, each part would reach into the others' private fields.
 */
import type { LayerSpec } from '../model/config.js';
import { DEFAULT_PREFILL_CHUNK } from '../model/forward.js';
import { f16Lut, f32RowToF16 } from '../model/quant.js';

export type KvDType = 'f32' | 'f16' | 'q8';
/** Every KV storage type, in flag order. */
export const KV_DTYPES: readonly KvDType[] = ['f32', 'f16', 'q8'];
type Store = Float32Array | Uint16Array | Int8Array;

/**
 * Bytes one entry (token) of one KV head holds, K and V together: 2 × headDim elements, plus for Q8 one F32
 * scale per row (so 2 × (headDim + 4)).
 */
export function kvEntryBytes(dtype: KvDType, headDim: number): number {
  switch (dtype) {
    case 'f32': return 2 * headDim * 4;
    case 'f16': return 2 * headDim * 2;
    case 'q8': return 2 * (headDim + 4);
  }
}

/**
 * The most entries per head that `dtype` storage can hold in no more bytes than `length` entries of `from` storage
 * (rounded down): e.g. F16 at 2·length for F32, Q8 at ⌊length · 4·headDim/(headDim + 4)⌋.
 */
export function equalBytesLength(length: number, dtype: KvDType, headDim: number, from: KvDType = 'f32'): number {
  return Math.floor((length * kvEntryBytes(from, headDim)) / kvEntryBytes(dtype, headDim));
}

function alloc(dtype: KvDType, n: number): Store {
  return dtype === 'f32' ? new Float32Array(n) : dtype === 'f16' ? new Uint16Array(n) : new Int8Array(n);
}

/** Quantize `d` values of `src` at `off` into `dst` at `o` (symmetric int8); returns the row's scale. */
function quantizeRow(src: Float32Array, off: number, d: number, dst: Store, o: number): number {
  let amax = 0;
  for (let i = 0; i < d; i++) {
    const a = Math.abs(src[off + i]);
    if (a > amax) amax = a;
  }
  const scale = Math.fround(amax / 127);
  if (scale === 0) {
    for (let i = 0; i < d; i++) dst[o + i] = 0;
    return 0;
  }
  for (let i = 0; i < d; i++) dst[o + i] = Math.max(-127, Math.min(127, Math.round(src[off + i] / scale)));
  return scale;
}

/**
 * The stored entries of one head, as views of its buffers (the first `length` entries, not copies): `keys` and
 * `values` (length × headDim elements each, in the storage type), Q8 row scales (empty for F32 and F16) and each
 * entry's original position. Read only: writing through them changes the cache.
 */
export interface HeadEntries {
  keys: Store;
  values: Store;
  keyScales: Float32Array;
  valueScales: Float32Array;
  positions: Int32Array;
}

/**
 * One KV head's storage. Entry j occupies [j*headDim, (j+1)*headDim) of the K and V buffers; for Q8 storage its
 * row scales are at index j of the scale buffers (empty for F32 and F16). The buffers are private: attention
 * and scorers read K/V through `keysF32` / `valuesF32` (F32, widened when stored narrower), positions through
 * `positions` / `positionAt`; only the kernels that read the stored bits (F16 attention) and the cache file use
 * `entries()`. Entries change only through `append`, `keep`, `dropFront` (and `reserve` / `shrink` for room).
 */
export class HeadCache {
  private keys: Store;
  private values: Store;
  private keyScales: Float32Array;
  private valueScales: Float32Array;
  /** Original sequence position of each entry (bookkeeping for presses and tests). */
  private pos: Int32Array;
  private n = 0;

  constructor(readonly headDim: number, capacity: number, readonly dtype: KvDType = 'f32') {
    this.keys = alloc(dtype, capacity * headDim);
    this.values = alloc(dtype, capacity * headDim);
    this.keyScales = new Float32Array(dtype === 'q8' ? capacity : 0);
    this.valueScales = new Float32Array(dtype === 'q8' ? capacity : 0);
    this.pos = new Int32Array(capacity);
  }

  /**
   * A head holding exactly `e` (taken over, not copied; keys/values of length × headDim elements of `dtype`'s
   * storage type, scales for Q8): how a saved cache is loaded.
   */
  static fromEntries(headDim: number, dtype: KvDType, e: HeadEntries): HeadCache {
    const n = e.positions.length;
    const h = new HeadCache(headDim, 0, dtype);
    const kind = alloc(dtype, 0).constructor;
    if (!(e.keys.constructor === kind && e.values.constructor === kind && e.keys.length === n * headDim && e.values.length === n * headDim)) {
      throw new Error(`HeadCache.fromEntries: keys/values are not ${n} × ${headDim} ${dtype} elements`);
    }
    const scales = dtype === 'q8' ? n : 0;
    if (e.keyScales.length !== scales || e.valueScales.length !== scales) throw new Error(`HeadCache.fromEntries: ${scales} row scales expected`);
    h.keys = e.keys;
    h.values = e.values;
    h.keyScales = e.keyScales;
    h.valueScales = e.valueScales;
    h.pos = e.positions;
    h.n = n;
    return h;
  }

  /** Entries held. */
  get length(): number {
    return this.n;
  }

  /** Each held entry's original sequence position, ascending (a view of the first `length`; read only). */
  get positions(): Int32Array {
    return this.pos.subarray(0, this.n);
  }

  /** Original sequence position of entry `j` (< length). */
  positionAt(j: number): number {
    return this.pos[j];
  }

  /**
   * The stored entries as views (see {@link HeadEntries}): for kernels that read the storage type itself (F16
   * attention) and for the cache file. Everything else reads `keysF32` / `valuesF32`.
   */
  entries(): HeadEntries {
    const n = this.n, d = this.headDim, q8 = this.dtype === 'q8';
    return {
      keys: this.keys.subarray(0, n * d), values: this.values.subarray(0, n * d),
      keyScales: this.keyScales.subarray(0, q8 ? n : 0), valueScales: this.valueScales.subarray(0, q8 ? n : 0),
      positions: this.pos.subarray(0, n),
    };
  }

  get capacity(): number {
    return this.pos.length;
  }

  /** Make room for at least `capacity` entries (copying what is held). */
  reserve(capacity: number): void {
    if (capacity > this.capacity) this.realloc(capacity);
  }

  /** Release spare room beyond `capacity` entries (never below `length`), so the memory is really returned. */
  shrink(capacity: number): void {
    const cap = Math.max(this.n, capacity);
    if (cap < this.capacity) this.realloc(cap);
  }

  private realloc(capacity: number): void {
    const d = this.headDim, n = this.n;
    const k = alloc(this.dtype, capacity * d);
    const v = alloc(this.dtype, capacity * d);
    const p = new Int32Array(capacity);
    k.set(this.keys.subarray(0, n * d));
    v.set(this.values.subarray(0, n * d));
    p.set(this.pos.subarray(0, n));
    if (this.dtype === 'q8') {
      const ks = new Float32Array(capacity), vs = new Float32Array(capacity);
      ks.set(this.keyScales.subarray(0, n));
      vs.set(this.valueScales.subarray(0, n));
      this.keyScales = ks;
      this.valueScales = vs;
    }
    this.keys = k;
    this.values = v;
    this.pos = p;
  }

  /** Append one entry; `src` arrays hold the vector at offset `off`. */
  append(k: Float32Array, kOff: number, v: Float32Array, vOff: number, position: number): void {
    if (this.n === this.capacity) this.reserve(Math.max(16, Math.ceil(this.capacity * 1.5)));
    const d = this.headDim;
    const o = this.n * d;
    if (this.dtype === 'f32') {
      for (let i = 0; i < d; i++) {
        this.keys[o + i] = k[kOff + i];
        this.values[o + i] = v[vOff + i];
      }
    } else if (this.dtype === 'f16') {
      f32RowToF16(k, kOff, this.keys as Uint16Array, o, d);
      f32RowToF16(v, vOff, this.values as Uint16Array, o, d);
    } else {
      this.keyScales[this.n] = quantizeRow(k, kOff, d, this.keys, o);
      this.valueScales[this.n] = quantizeRow(v, vOff, d, this.values, o);
    }
    this.pos[this.n] = position;
    this.n++;
  }

  /**
   * Keys as F32: the buffer itself for F32 storage, else the first `length` entries widened (F16) or
   * dequantized (Q8) into `scratch` (grown as needed and returned).
   */
  keysF32(scratch?: Float32Array): Float32Array {
    return this.widen(this.keys, this.keyScales, scratch);
  }

  valuesF32(scratch?: Float32Array): Float32Array {
    return this.widen(this.values, this.valueScales, scratch);
  }

  private widen(src: Store, scales: Float32Array, scratch?: Float32Array): Float32Array {
    if (src instanceof Float32Array) return src;
    const d = this.headDim;
    const n = this.n * d;
    const out = scratch && scratch.length >= n ? scratch : new Float32Array(Math.max(n, 16));
    if (src instanceof Uint16Array) {
      const lut = f16Lut();
      for (let i = 0; i < n; i++) out[i] = lut[src[i]];
    } else {
      for (let j = 0; j < this.n; j++) {
        const s = scales[j], o = j * d;
        for (let i = 0; i < d; i++) out[o + i] = src[o + i] * s;
      }
    }
    return out;
  }

  /**
   * Keep only the entries at `indices` (ascending, unique, < length), in that order, then shrink the buffers to
   * `length + reserveExtra` so the memory is really released.
   */
  keep(indices: ArrayLike<number>, reserveExtra = 0): void {
    const d = this.headDim;
    let prev = -1;
    for (let n = 0; n < indices.length; n++) {
      const j = indices[n];
      if (!(j > prev && j < this.n)) throw new Error(`HeadCache.keep: indices must be ascending and < ${this.n}`);
      prev = j;
    }
    const cap = indices.length + reserveExtra;
    const q8 = this.dtype === 'q8';
    const k = alloc(this.dtype, cap * d);
    const v = alloc(this.dtype, cap * d);
    const ks = new Float32Array(q8 ? cap : 0), vs = new Float32Array(q8 ? cap : 0);
    const p = new Int32Array(cap);
    for (let n = 0; n < indices.length; n++) {
      const j = indices[n];
      k.set(this.keys.subarray(j * d, (j + 1) * d), n * d);
      v.set(this.values.subarray(j * d, (j + 1) * d), n * d);
      if (q8) {
        ks[n] = this.keyScales[j];
        vs[n] = this.valueScales[j];
      }
      p[n] = this.pos[j];
    }
    this.keys = k;
    this.values = v;
    this.keyScales = ks;
    this.valueScales = vs;
    this.pos = p;
    this.n = indices.length;
  }

  /** Drop the `n` oldest entries (in place: the rest move to the front; capacity is kept for the next appends). */
  dropFront(n: number): void {
    if (n <= 0) return;
    if (n > this.n) throw new Error(`HeadCache.dropFront: ${n} > ${this.n} entries`);
    const d = this.headDim, rest = this.n - n;
    this.keys.copyWithin(0, n * d, this.n * d);
    this.values.copyWithin(0, n * d, this.n * d);
    if (this.dtype === 'q8') {
      this.keyScales.copyWithin(0, n, this.n);
      this.valueScales.copyWithin(0, n, this.n);
    }
    this.pos.copyWithin(0, n, this.n);
    this.n = rest;
  }

  /** A copy holding the same entries, with room for `extra` more. */
  clone(extra = 0): HeadCache {
    const n = this.n;
    const h = new HeadCache(this.headDim, n + extra, this.dtype);
    h.keys.set(this.keys.subarray(0, n * this.headDim));
    h.values.set(this.values.subarray(0, n * this.headDim));
    h.keyScales.set(this.keyScales.subarray(0, n));
    h.valueScales.set(this.valueScales.subarray(0, n));
    h.pos.set(this.pos.subarray(0, n));
    h.n = n;
    return h;
  }

  /** Bytes of K and V actually held: length × `kvEntryBytes` (Q8 row scales included). */
  bytes(): number {
    return this.n * kvEntryBytes(this.dtype, this.headDim);
  }

  /** Bytes allocated, including spare capacity, Q8 row scales and the position index. */
  allocatedBytes(): number {
    return this.keys.byteLength + this.values.byteLength + this.keyScales.byteLength + this.valueScales.byteLength + this.pos.byteLength;
  }
}

/** What the cache needs to know of a layer: full attention (budgeted by presses) or a sliding window. */
export type CacheLayer = Pick<LayerSpec, 'kind' | 'window'>;

/** Entries a sliding layer drops at once (a quarter window), so decode does not move the window every token. */
export function slidingDropBatch(window: number): number {
  return Math.max(1, Math.ceil(window / 4));
}

/**
 * The most entries a sliding-window head holds between forward passes: the `window − 1` positions the next query
 * still sees, plus fewer than one drop batch of older ones waiting to be dropped together.
 */
export function slidingHoldBound(window: number): number {
  return window - 1 + slidingDropBatch(window) - 1;
}

/** The whole model's cache: layers × kvHeads independent heads plus the sequence position counter. */
export class RaggedKVCache {
  private readonly rows: HeadCache[][];
  /** Position of the next token to be processed (= tokens seen so far, evicted or not); see `position`. */
  private pos = 0;
  private kinds: CacheLayer[];
  /** Whether `kinds` were given (a cache made without them takes them from the first `trimSliding`). */
  private kindsGiven: boolean;
  /**
   * Rows of one forward pass a sliding head keeps room for beyond its window: a prefill chunk, or less when the
   * cache was sized for fewer tokens. Bounds what a sliding head preallocates and keeps after a long pass.
   */
  private spareRows: number;
  /** The last `layers` array `trimSliding` checked (the forward pass passes the same one every time). */
  private checkedLayers: readonly CacheLayer[] | undefined;

  /**
   * `layers` gives each layer's kind (default: all full attention, the Llama case); a sliding layer's heads
   * preallocate at most their window plus one prefill chunk instead of `capacity`.
   */
  constructor(
    readonly numLayers: number, readonly numKvHeads: number, readonly headDim: number, capacity = 0,
    readonly dtype: KvDType = 'f32', layers?: readonly CacheLayer[],
  ) {
    this.kindsGiven = layers !== undefined;
    this.kinds = RaggedKVCache.checkKinds(layers ?? Array.from({ length: numLayers }, () => ({ kind: 'full' as const })), numLayers);
    this.spareRows = capacity > 0 ? Math.min(capacity, DEFAULT_PREFILL_CHUNK) : DEFAULT_PREFILL_CHUNK;
    this.rows = [];
    for (let l = 0; l < numLayers; l++) {
      const row: HeadCache[] = [];
      const cap = this.roomFor(l, 0, capacity);
      for (let h = 0; h < numKvHeads; h++) row.push(new HeadCache(headDim, cap, dtype));
      this.rows.push(row);
    }
  }

  /**
   * A cache holding `heads` ([layer][kvHead], taken over) at `position`: how a saved cache is loaded. Each head
   * must have this cache's head size and storage type.
   */
  static restore(
    heads: HeadCache[][], position: number, headDim: number, dtype: KvDType, layers: readonly CacheLayer[],
  ): RaggedKVCache {
    const c = new RaggedKVCache(heads.length, heads[0]?.length ?? 0, headDim, 0, dtype, layers);
    heads.forEach((row, l) => row.forEach((h, g) => {
      if (row.length !== c.numKvHeads || h.headDim !== headDim || h.dtype !== dtype) throw new Error(`RaggedKVCache.restore: head (${l}, ${g}) does not fit the cache`);
      c.rows[l][g] = h;
    }));
    c.setPosition(position);
    return c;
  }

  /** Every head, [layer][kvHead] (the arrays are read only; each head changes only through its methods). */
  get heads(): readonly (readonly HeadCache[])[] {
    return this.rows;
  }

  /** Position of the next token to be processed (= tokens seen so far, evicted or not). Moves only by `advance`. */
  get position(): number {
    return this.pos;
  }

  private setPosition(p: number): void {
    if (!(Number.isInteger(p) && p >= 0)) throw new RangeError(`position: ${p} is not a token count`);
    this.pos = p;
  }

  private static checkKinds(layers: readonly CacheLayer[], numLayers: number): CacheLayer[] {
    if (layers.length !== numLayers) throw new Error(`RaggedKVCache: ${layers.length} layer kinds for ${numLayers} layers`);
    return layers.map((l, i) => {
      if (l.kind === 'full') return { kind: 'full' };
      if (!(l.kind === 'sliding' && Number.isInteger(l.window) && l.window! > 0)) {
        throw new Error(`RaggedKVCache: layer ${i} is not full attention nor sliding with a positive window`);
      }
      return { kind: 'sliding', window: l.window };
    });
  }

  /** Each layer's kind and window. */
  get layers(): readonly CacheLayer[] {
    return this.kinds;
  }

  /** Whether presses budget this layer (full attention); sliding layers keep their window. */
  isBudgeted(layer: number): boolean {
    return this.kinds[layer].kind === 'full';
  }

  /** The full-attention layers, ascending. */
  budgetedLayers(): number[] {
    const out: number[] = [];
    this.kinds.forEach((k, l) => { if (k.kind === 'full') out.push(l); });
    return out;
  }

  /**
   * Capacity a head of layer `l` holding `length` entries gets when `extra` more may come: length + extra, but on
   * a sliding layer no more than its hold bound plus min(extra, spare rows), since older entries are dropped.
   */
  private roomFor(l: number, length: number, extra: number): number {
    const k = this.kinds[l];
    if (k.kind !== 'sliding') return length + extra;
    return Math.max(length, Math.min(length + extra, slidingHoldBound(k.window!) + Math.min(extra, this.spareRows)));
  }

  /** A deep copy with the same layer kinds (each head with room for `extra` more entries, capped on sliding layers). */
  clone(extra = 0): RaggedKVCache {
    const c = new RaggedKVCache(this.numLayers, this.numKvHeads, this.headDim, 0, this.dtype, this.kinds);
    c.kindsGiven = this.kindsGiven;
    c.spareRows = this.spareRows;
    for (let l = 0; l < this.numLayers; l++) {
      for (let h = 0; h < this.numKvHeads; h++) {
        const src = this.heads[l][h];
        c.rows[l][h] = src.clone(this.roomFor(l, src.length, extra) - src.length);
      }
    }
    c.pos = this.pos;
    return c;
  }

  head(layer: number, kvHead: number): HeadCache {
    return this.rows[layer][kvHead];
  }

  /**
   * Ensure every head can take `extra` more entries without reallocating (done once before a decode loop); a
   * sliding head only needs its window plus the rows of one pass.
   */
  reserveExtra(extra: number): void {
    this.heads.forEach((row, l) => { for (const h of row) h.reserve(this.roomFor(l, h.length, extra)); });
  }

  /**
   * Record that `tokens` more positions were processed (the forward pass calls this after a pass has appended
   * their K/V), then drop what sliding-window layers can no longer see.
   */
  advance(tokens: number, layers?: readonly CacheLayer[]): void {
    if (!(Number.isInteger(tokens) && tokens >= 0)) throw new RangeError(`advance: ${tokens} is not a token count`);
    this.pos += tokens;
    this.trimSliding(layers);
  }

  /**
   * Drop, on every sliding-window layer, the entries no later query can see (positions ≤ position − window), so
   * such a layer holds at most {@link slidingHoldBound} entries between passes plus the last pass's rows during
   * one. Called by the forward pass after each pass; entries are dropped in batches of a quarter window so decode
   * does not move the whole window every token. A head that grew during a long pass (a whole prompt at once) is
   * shrunk back to its window plus spare rows. `layers` (the model's) must agree with the cache's kinds; a cache
   * made without kinds adopts them.
   */
  trimSliding(layers?: readonly CacheLayer[]): void {
    if (layers && layers !== this.checkedLayers) {
      this.adoptKinds(layers);
      this.checkedLayers = layers;
    }
    for (let l = 0; l < this.numLayers; l++) {
      const spec = this.kinds[l];
      if (spec.kind !== 'sliding') continue;
      const W = spec.window!;
      const oldest = this.position - W; // entries at or before this are out of every future window
      const limit = slidingHoldBound(W) + this.spareRows;
      for (const h of this.heads[l]) {
        let n = 0;
        while (n < h.length && h.positionAt(n) <= oldest) n++;
        if (n >= slidingDropBatch(W)) h.dropFront(n);
        if (h.capacity > limit) h.shrink(limit);
      }
    }
  }

  private adoptKinds(layers: readonly CacheLayer[]): void {
    const given = RaggedKVCache.checkKinds(layers, this.numLayers);
    if (this.kindsGiven) {
      given.forEach((k, l) => {
        const mine = this.kinds[l];
        if (k.kind !== mine.kind || k.window !== mine.window) {
          throw new Error(`RaggedKVCache: layer ${l} is ${k.kind}${k.window ? ` (${k.window})` : ''} for the model, ${mine.kind}${mine.window ? ` (${mine.window})` : ''} in the cache`);
        }
      });
      return;
    }
    this.kinds = given;
    this.kindsGiven = true;
  }

  /** Exact K+V bytes held by all heads (every layer, sliding ones included). */
  bytes(): number {
    let b = 0;
    for (const row of this.heads) for (const h of row) b += h.bytes();
    return b;
  }

  allocatedBytes(): number {
    let b = 0;
    for (const row of this.heads) for (const h of row) b += h.allocatedBytes();
    return b;
  }

  private heldBytes(budgeted: boolean): number {
    let b = 0;
    this.heads.forEach((row, l) => { if (this.isBudgeted(l) === budgeted) for (const h of row) b += h.bytes(); });
    return b;
  }

  /** Exact K+V bytes held by the full-attention (budgeted) layers' heads. */
  budgetedBytes(): number {
    return this.heldBytes(true);
  }

  /** Exact K+V bytes held by the sliding layers' heads (never compressed by a press, so the same as a full cache's). */
  slidingBytes(): number {
    return this.heldBytes(false);
  }

  /**
   * Bytes an uncompressed cache of the same storage type holds for the tokens seen so far on the full-attention
   * layers: position entries per head, every one of them.
   */
  budgetedFullBytes(): number {
    return this.position * this.budgetedLayers().length * this.numKvHeads * kvEntryBytes(this.dtype, this.headDim);
  }

  /**
   * Bytes an uncompressed cache of the same storage type holds for the tokens seen so far: `budgetedFullBytes()`
   * plus what the sliding layers hold. Presses never touch sliding layers, so those hold exactly what they would
   * in a full cache: the last min(position, window − 1) positions plus fewer than a drop batch
   * (⌈window/4⌉) of older ones not yet dropped — at most {@link slidingHoldBound} entries per head between passes.
   * So a full cache has bytes() = fullBytes().
   */
  fullBytes(): number {
    return this.budgetedFullBytes() + this.slidingBytes();
  }
  /** Per-head lengths, [layer][kvHead]. */
  lengths(): number[][] {
    return this.heads.map((row) => row.map((h) => h.length));
  }
}
