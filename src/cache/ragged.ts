/**
 * Ragged KV cache: one contiguous K and V buffer per (layer, KV head), each with its own length. Heads are never
 * expanded to query heads (GQA-native). Keys are stored after RoPE, so evicting entries needs no re-rotation;
 * the position counter of the sequence keeps counting from the uncompressed length.
 *
 * Storage is F32 (default) or F16 (half the bytes; attention widens a head to F32 scratch as it reads it).
 */
import { f16Lut, f32ToF16 } from '../model/quant.js';

export type KvDType = 'f32' | 'f16';
type Store = Float32Array | Uint16Array;

const BYTES: Record<KvDType, number> = { f32: 4, f16: 2 };

function alloc(dtype: KvDType, n: number): Store {
  return dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
}

/** One KV head's storage. Entry j occupies [j*headDim, (j+1)*headDim) of `keys` and `values`. */
export class HeadCache {
  keys: Store;
  values: Store;
  /** Original sequence position of each entry (bookkeeping for presses and tests). */
  positions: Int32Array;
  length = 0;

  constructor(readonly headDim: number, capacity: number, readonly dtype: KvDType = 'f32') {
    this.keys = alloc(dtype, capacity * headDim);
    this.values = alloc(dtype, capacity * headDim);
    this.positions = new Int32Array(capacity);
  }

  get capacity(): number {
    return this.positions.length;
  }

  /** Make room for at least `capacity` entries (copying what is held). */
  reserve(capacity: number): void {
    if (capacity <= this.capacity) return;
    const d = this.headDim;
    const k = alloc(this.dtype, capacity * d);
    const v = alloc(this.dtype, capacity * d);
    const p = new Int32Array(capacity);
    k.set(this.keys.subarray(0, this.length * d));
    v.set(this.values.subarray(0, this.length * d));
    p.set(this.positions.subarray(0, this.length));
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
    } else {
      for (let i = 0; i < d; i++) {
        this.keys[o + i] = f32ToF16(k[kOff + i]);
        this.values[o + i] = f32ToF16(v[vOff + i]);
      }
    }
    this.positions[this.length] = position;
    this.length++;
  }

  /**
   * Keys as F32: the buffer itself for F32 storage, else the first `length` entries widened into `scratch`
   * (grown as needed and returned).
   */
  keysF32(scratch?: Float32Array): Float32Array {
    return this.widen(this.keys, scratch);
  }

  valuesF32(scratch?: Float32Array): Float32Array {
    return this.widen(this.values, scratch);
  }

  private widen(src: Store, scratch?: Float32Array): Float32Array {
    if (src instanceof Float32Array) return src;
    const n = this.length * this.headDim;
    const out = scratch && scratch.length >= n ? scratch : new Float32Array(Math.max(n, 16));
    const lut = f16Lut();
    for (let i = 0; i < n; i++) out[i] = lut[src[i]];
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
    const k = alloc(this.dtype, cap * d);
    const v = alloc(this.dtype, cap * d);
    const p = new Int32Array(cap);
    for (let n = 0; n < indices.length; n++) {
      const j = indices[n];
      k.set(this.keys.subarray(j * d, (j + 1) * d), n * d);
      v.set(this.values.subarray(j * d, (j + 1) * d), n * d);
      p[n] = this.positions[j];
    }
    this.keys = k;
    this.values = v;
    this.positions = p;
    this.length = indices.length;
  }

  /** A copy holding the same entries, with room for `extra` more. */
  clone(extra = 0): HeadCache {
    const h = new HeadCache(this.headDim, this.length + extra, this.dtype);
    h.keys.set(this.keys.subarray(0, this.length * this.headDim));
    h.values.set(this.values.subarray(0, this.length * this.headDim));
    h.positions.set(this.positions.subarray(0, this.length));
    h.length = this.length;
    return h;
  }

  /** Bytes of K and V actually held (length × headDim × 2 × bytes per element). */
  bytes(): number {
    return this.length * this.headDim * 2 * BYTES[this.dtype];
  }

  /** Bytes allocated, including spare capacity and the position index. */
  allocatedBytes(): number {
    return this.keys.byteLength + this.values.byteLength + this.positions.byteLength;
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
    return this.position * this.numLayers * this.numKvHeads * this.headDim * 2 * BYTES[this.dtype];
  }

  /** Per-head lengths, [layer][kvHead]. */
  lengths(): number[][] {
    return this.heads.map((row) => row.map((h) => h.length));
  }
}
