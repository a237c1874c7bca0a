/**
 * Ragged KV cache: one contiguous K and V buffer per (layer, KV head), each with its own length. Heads are never
 * expanded to query heads (GQA-native). Keys are stored after RoPE, so evicting entries needs no re-rotation;
 * the position counter of the sequence keeps counting from the uncompressed length.
 *
 * Storage is F32 (default), F16 (half the bytes) or Q8 (each entry's K row and V row quantized symmetrically to
 * int8 with one F32 scale per row: scale = max|x|/127, q = round(x/scale)). Attention reads F16 and Q8 heads
 * widened to F32 scratch.
 */
import { f16Lut, f32ToF16 } from '../model/quant.js';

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
 * One KV head's storage. Entry j occupies [j*headDim, (j+1)*headDim) of `keys` and `values`; for Q8 storage its
 * row scales are `keyScales[j]` and `valueScales[j]` (empty arrays for F32 and F16).
 */
export class HeadCache {
  keys: Store;
  values: Store;
  keyScales: Float32Array;
  valueScales: Float32Array;
  /** Original sequence position of each entry (bookkeeping for presses and tests). */
  positions: Int32Array;
  length = 0;

  constructor(readonly headDim: number, capacity: number, readonly dtype: KvDType = 'f32') {
    this.keys = alloc(dtype, capacity * headDim);
    this.values = alloc(dtype, capacity * headDim);
    this.keyScales = new Float32Array(dtype === 'q8' ? capacity : 0);
    this.valueScales = new Float32Array(dtype === 'q8' ? capacity : 0);
    this.positions = new Int32Array(capacity);
  }

  get capacity(): number {
    return this.positions.length;
  }

  /** Make room for at least `capacity` entries (copying what is held). */
  reserve(capacity: number): void {
    if (capacity <= this.capacity) return;
    const d = this.headDim, n = this.length;
    const k = alloc(this.dtype, capacity * d);
    const v = alloc(this.dtype, capacity * d);
    const p = new Int32Array(capacity);
    k.set(this.keys.subarray(0, n * d));
    v.set(this.values.subarray(0, n * d));
    p.set(this.positions.subarray(0, n));
    if (this.dtype === 'q8') {
      const ks = new Float32Array(capacity), vs = new Float32Array(capacity);
      ks.set(this.keyScales.subarray(0, n));
      vs.set(this.valueScales.subarray(0, n));
      this.keyScales = ks;
      this.valueScales = vs;
    }
    this.keys = k;
    this.values = v;
    this.positions = p;
  }

  /** Append one entry; `src` arrays hold the vector at offset `off`. */
  append(k: Float32Array, kOff: number, v: Float32Array, vOff: number, position: number): void {
    if (this.length === this.capacity) this.reserve(Math.max(16, Math.ceil(this.capacity * 1.5)));
    const d = this.headDim;
    const o = this.length * d;
    if (this.dtype === 'f32') {
      for (let i = 0; i < d; i++) {
        this.keys[o + i] = k[kOff + i];
        this.values[o + i] = v[vOff + i];
      }
    } else if (this.dtype === 'f16') {
      for (let i = 0; i < d; i++) {
        this.keys[o + i] = f32ToF16(k[kOff + i]);
        this.values[o + i] = f32ToF16(v[vOff + i]);
      }
    } else {
      this.keyScales[this.length] = quantizeRow(k, kOff, d, this.keys, o);
      this.valueScales[this.length] = quantizeRow(v, vOff, d, this.values, o);
    }
    this.positions[this.length] = position;
    this.length++;
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
    const n = this.length * d;
    const out = scratch && scratch.length >= n ? scratch : new Float32Array(Math.max(n, 16));
    if (src instanceof Uint16Array) {
      const lut = f16Lut();
      for (let i = 0; i < n; i++) out[i] = lut[src[i]];
    } else {
      for (let j = 0; j < this.length; j++) {
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
      if (!(j > prev && j < this.length)) throw new Error(`HeadCache.keep: indices must be ascending and < ${this.length}`);
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
      p[n] = this.positions[j];
    }
    this.keys = k;
    this.values = v;
    this.keyScales = ks;
    this.valueScales = vs;
    this.positions = p;
    this.length = indices.length;
  }

  /** Drop the `n` oldest entries (in place: the rest move to the front; capacity is kept for the next appends). */
  dropFront(n: number): void {
    if (n <= 0) return;
    if (n > this.length) throw new Error(`HeadCache.dropFront: ${n} > ${this.length} entries`);
    const d = this.headDim, rest = this.length - n;
    this.keys.copyWithin(0, n * d, this.length * d);
    this.values.copyWithin(0, n * d, this.length * d);
    if (this.dtype === 'q8') {
      this.keyScales.copyWithin(0, n, this.length);
      this.valueScales.copyWithin(0, n, this.length);
    }
    this.positions.copyWithin(0, n, this.length);
    this.length = rest;
  }

  /** A copy holding the same entries, with room for `extra` more. */
  clone(extra = 0): HeadCache {
    const n = this.length;
    const h = new HeadCache(this.headDim, n + extra, this.dtype);
    h.keys.set(this.keys.subarray(0, n * this.headDim));
    h.values.set(this.values.subarray(0, n * this.headDim));
    h.keyScales.set(this.keyScales.subarray(0, n));
    h.valueScales.set(this.valueScales.subarray(0, n));
    h.positions.set(this.positions.subarray(0, n));
    h.length = n;
    return h;
  }

  /** Bytes of K and V actually held: length × `kvEntryBytes` (Q8 row scales included). */
  bytes(): number {
    return this.length * kvEntryBytes(this.dtype, this.headDim);
  }

  /** Bytes allocated, including spare capacity, Q8 row scales and the position index. */
  allocatedBytes(): number {
    return this.keys.byteLength + this.values.byteLength + this.keyScales.byteLength + this.valueScales.byteLength + this.positions.byteLength;
  }
}

/** The whole model's cache: layers × kvHeads independent heads plus the sequence position counter. */
export class RaggedKVCache {
  readonly heads: HeadCache[][];
  /** Position of the next token to be processed (= tokens seen so far, evicted or not). */
  position = 0;

  constructor(
    readonly numLayers: number, readonly numKvHeads: number, readonly headDim: number, capacity = 0,
    readonly dtype: KvDType = 'f32',
  ) {
    this.heads = [];
    for (let l = 0; l < numLayers; l++) {
      const row: HeadCache[] = [];
      for (let h = 0; h < numKvHeads; h++) row.push(new HeadCache(headDim, capacity, dtype));
      this.heads.push(row);
    }
  }

  /** A deep copy (each head with room for `extra` more entries). */
  clone(extra = 0): RaggedKVCache {
    const c = new RaggedKVCache(this.numLayers, this.numKvHeads, this.headDim, 0, this.dtype);
    for (let l = 0; l < this.numLayers; l++) for (let h = 0; h < this.numKvHeads; h++) c.heads[l][h] = this.heads[l][h].clone(extra);
    c.position = this.position;
    return c;
  }

  head(layer: number, kvHead: number): HeadCache {
    return this.heads[layer][kvHead];
  }

  /** Ensure every head can take `extra` more entries without reallocating (done once before a decode loop). */
  reserveExtra(extra: number): void {
    for (const row of this.heads) for (const h of row) h.reserve(h.length + extra);
  }

  /**
   * Drop, on every sliding-window layer, the entries no later query can see (positions ≤ position − window), so
   * such a layer holds at most 1.25 × its window plus the last pass's rows. Called by the forward pass after each
   * pass; entries are dropped in batches of a quarter window so decode does not move the whole window every token.
   */
  trimSliding(layers: readonly { kind: 'full' | 'sliding'; window?: number }[]): void {
    for (let l = 0; l < this.numLayers; l++) {
      const spec = layers[l];
      if (spec?.kind !== 'sliding') continue;
      const oldest = this.position - spec.window!; // entries at or before this are out of every future window
      for (const h of this.heads[l]) {
        let n = 0;
        while (n < h.length && h.positions[n] <= oldest) n++;
        if (n >= Math.max(1, Math.ceil(spec.window! / 4))) h.dropFront(n);
      }
    }
  }

  /** Exact K+V bytes held by all heads. */
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

  /** Bytes a full (uncompressed) cache of the same storage type would hold for the tokens seen so far. */
  fullBytes(): number {
    return this.position * this.numLayers * this.numKvHeads * kvEntryBytes(this.dtype, this.headDim);
  }

  /** Per-head lengths, [layer][kvHead]. */
  lengths(): number[][] {
    return this.heads.map((row) => row.map((h) => h.length));
  }
}
