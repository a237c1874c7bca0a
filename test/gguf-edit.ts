/**
 * A byte-level GGUF editor for tests that build hostile files: parse a file into metadata entries (value bytes kept
 * as stored), tensor infos and the data section, change any of them, and write the result back without the
 * reader's validation in the way (offsets are written as given, so overlaps and gaps are possible).
 */

export interface KvEntry {
  key: string;
  /** GGUF value type id. */
  type: number;
  /** The value's bytes as stored (after the type id). */
  raw: Buffer;
}

export interface TensorEntry {
  name: string;
  dims: bigint[];
  ggmlType: number;
  /** Offset in the data section. */
  offset: bigint;
}

export interface GgufDoc {
  version: number;
  kvs: KvEntry[];
  tensors: TensorEntry[];
  alignment: number;
  /** The data section (from the aligned end of the tensor infos to the end of the file). */
  data: Buffer;
}

const FIXED: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Bytes of the value of `type` at `pos`. */
function valueBytes(b: Buffer, pos: number, type: number): number {
  if (type in FIXED) return FIXED[type];
  if (type === 8) return 8 + Number(b.readBigUInt64LE(pos));
  if (type === 9) {
    const at = b.readUInt32LE(pos), n = Number(b.readBigUInt64LE(pos + 4));
    let p = pos + 12;
    if (at in FIXED) return 12 + n * FIXED[at];
    for (let i = 0; i < n; i++) p += valueBytes(b, p, at);
    return p - pos;
  }
  throw new Error(`gguf-edit: value type ${type}`);
}

export function parseGguf(b: Buffer): GgufDoc {
  let p = 4;
  const version = b.readUInt32LE(p); p += 4;
  const nT = Number(b.readBigUInt64LE(p)); p += 8;
  const nKv = Number(b.readBigUInt64LE(p)); p += 8;
  const str = (): string => {
    const n = Number(b.readBigUInt64LE(p));
    const s = b.toString('utf8', p + 8, p + 8 + n);
    p += 8 + n;
    return s;
  };
  const kvs: KvEntry[] = [];
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const type = b.readUInt32LE(p); p += 4;
    const n = valueBytes(b, p, type);
    kvs.push({ key, type, raw: Buffer.from(b.subarray(p, p + n)) });
    p += n;
  }
  const tensors: TensorEntry[] = [];
  for (let i = 0; i < nT; i++) {
    const name = str();
    const nd = b.readUInt32LE(p); p += 4;
    const dims: bigint[] = [];
    for (let d = 0; d < nd; d++) { dims.push(b.readBigUInt64LE(p)); p += 8; }
    const ggmlType = b.readUInt32LE(p); p += 4;
    const offset = b.readBigUInt64LE(p); p += 8;
    tensors.push({ name, dims, ggmlType, offset });
  }
  const al = kvs.find((k) => k.key === 'general.alignment');
  const alignment = al ? al.raw.readUInt32LE(0) : 32;
  const dataOffset = Math.ceil(p / alignment) * alignment;
  return { version, kvs, tensors, alignment, data: Buffer.from(b.subarray(dataOffset)) };
}

function strBytes(s: string): Buffer {
  const body = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(body.length));
  return Buffer.concat([len, body]);
}

export function serializeGguf(d: GgufDoc): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(24);
  head.write('GGUF', 0, 'latin1');
  head.writeUInt32LE(d.version, 4);
  head.writeBigUInt64LE(BigInt(d.tensors.length), 8);
  head.writeBigUInt64LE(BigInt(d.kvs.length), 16);
  parts.push(head);
  for (const kv of d.kvs) {
    const t = Buffer.alloc(4);
    t.writeUInt32LE(kv.type);
    parts.push(strBytes(kv.key), t, kv.raw);
  }
  for (const ti of d.tensors) {
    const b = Buffer.alloc(4 + 8 * ti.dims.length + 4 + 8);
    b.writeUInt32LE(ti.dims.length, 0);
    ti.dims.forEach((v, i) => b.writeBigUInt64LE(v, 4 + 8 * i));
    b.writeUInt32LE(ti.ggmlType, 4 + 8 * ti.dims.length);
    b.writeBigUInt64LE(ti.offset, 8 + 8 * ti.dims.length);
    parts.push(strBytes(ti.name), b);
  }
  const len = parts.reduce((a, x) => a + x.length, 0);
  parts.push(Buffer.alloc(Math.ceil(len / d.alignment) * d.alignment - len), d.data);
  return Buffer.concat(parts);
}

/** Value encoders for KvEntry.raw (type ids: u32 4, i32 5, string 8, array 9). */
export const raw = {
  u32(v: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; },
  str(s: string): Buffer { return strBytes(s); },
  strArray(list: readonly string[]): Buffer {
    const h = Buffer.alloc(12);
    h.writeUInt32LE(8, 0);
    h.writeBigUInt64LE(BigInt(list.length), 4);
    return Buffer.concat([h, ...list.map(strBytes)]);
  },
  i32Array(list: readonly number[]): Buffer {
    const h = Buffer.alloc(12 + 4 * list.length);
    h.writeUInt32LE(5, 0);
    h.writeBigUInt64LE(BigInt(list.length), 4);
    list.forEach((v, i) => h.writeInt32LE(v, 12 + 4 * i));
    return h;
  },
};

/** The strings of a string-array entry. */
export function readStrArray(kv: KvEntry): string[] {
  const n = Number(kv.raw.readBigUInt64LE(4));
  const out: string[] = [];
  let p = 12;
  for (let i = 0; i < n; i++) {
    const l = Number(kv.raw.readBigUInt64LE(p));
    out.push(kv.raw.toString('utf8', p + 8, p + 8 + l));
    p += 8 + l;
  }
  return out;
}

/** Elements of a tensor of `dims`. */
export function elementsOf(t: TensorEntry): number {
  return t.dims.reduce((a, b) => a * Number(b), 1);
}

export function kv(d: GgufDoc, key: string): KvEntry {
  const e = d.kvs.find((k) => k.key === key);
  if (!e) throw new Error(`gguf-edit: no key ${key}`);
  return e;
}

export function tensor(d: GgufDoc, name: string): TensorEntry {
  const t = d.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`gguf-edit: no tensor ${name}`);
  return t;
}
