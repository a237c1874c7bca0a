/**
 * safetensors reader (single file or sharded folder) and a tiny writer for tests.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data section. Each header entry
 * (except the optional `__metadata__`) is `{dtype, shape, data_offsets: [begin, end]}` with offsets relative to the
 * start of the data section. Only the header is read at open; tensors are read one at a time on demand with
 * positioned reads, so opening a multi-GB file is cheap.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CokvError, MAX_TENSOR_ELEMENTS } from '../../errors.js';
import { bf16ToF32, f16ToF32, f32ToF16 } from '../quant.js';
import { allocTyped, preadFully } from './read-chunked.js';

/** The storage types we read. Other safetensors dtypes (I64, F8_E4M3, ...) are rejected with a clear error. */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16';

const DTYPE_BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2 };

/** Largest JSON header we accept. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** One tensor as described by a header. */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** File holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  start: number;
  byteLength: number;
}

/** A set of tensors that can be read one at a time. */
export interface SafetensorsStore {
  /** The file or folder that was opened (used in error messages). */
  readonly path: string;
  /** Tensors in header order (for a sharded folder: shard by shard). */
  readonly tensors: Map<string, SafetensorsEntry>;
  /** `__metadata__` of the (first) file. */
  readonly metadata: Record<string, string>;
  /** Read one tensor, widening F16/BF16 to F32. */
  read(name: string): Float32Array;
  /** Read one tensor's bytes as stored (little-endian). */
  readRaw(name: string): Uint8Array;
}

function fail(file: string, problem: string): never {
  throw new CokvError(`${file}: ${problem}`, 'format');
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function statFile(file: string): fs.Stats {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CokvError(`${file}: cannot open (${code === 'ENOENT' ? 'no such file' : code ?? String(e)})`, 'file');
  }
  if (!st.isFile()) throw new CokvError(`${file}: not a regular file`, 'file');
  return st;
}

/** Read exactly `dst.byteLength` bytes at `pos` (in readSync-sized chunks), or fail naming the file. */
function readExact(fd: number, file: string, dst: Uint8Array, pos: number): void {
  const done = preadFully(fd, dst, pos, file);
  if (done < dst.byteLength) fail(file, `file is truncated (wanted ${dst.byteLength} bytes at offset ${pos}, got ${done})`);
}

function withFd<T>(file: string, fn: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CokvError(`${file}: cannot open (${code === 'ENOENT' ? 'no such file' : code ?? String(e)})`, 'file');
  }
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function parseShape(file: string, name: string, raw: unknown): { shape: number[]; elements: number } {
  if (!Array.isArray(raw)) fail(file, `tensor "${name}": shape is not an array`);
  if (raw.length > 8) fail(file, `tensor "${name}": shape has ${raw.length} dimensions`);
  let elements = 1;
  const shape: number[] = [];
  for (const d of raw) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      fail(file, `tensor "${name}": bad dimension ${JSON.stringify(d)} in shape`);
    }
    shape.push(d);
    elements *= d;
    if (elements > MAX_TENSOR_ELEMENTS) {
      fail(file, `tensor "${name}": shape [${raw.map(String).join(', ')}] has an absurd number of elements`);
    }
  }
  return { shape, elements };
}

/** Parse and validate one safetensors file's header. Reads only the first 8 + N bytes. */
function readHeader(file: string): { tensors: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  const size = statFile(file).size;
  if (size < 8) fail(file, `file is ${size} bytes, too short for a safetensors header`);
  return withFd(file, (fd) => {
    const lenBuf = Buffer.alloc(8);
    readExact(fd, file, lenBuf, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(file, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    const n = Number(headerLen);
    if (n < 2) fail(file, `header length ${n} is too small`);
    if (8 + n > size) fail(file, `header length ${n} runs past the end of the ${size}-byte file`);
    const hBuf = Buffer.alloc(n);
    readExact(fd, file, hBuf, 8);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(hBuf));
    } catch (e) {
      fail(file, `header is not valid JSON (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
    }
    if (!isPlainObject(header)) fail(file, 'header is not a JSON object');
    const dataStart = 8 + n;
    const dataSize = size - dataStart;
    const metadata: Record<string, string> = {};
    const tensors = new Map<string, SafetensorsEntry>();
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (raw === null) continue;
        if (!isPlainObject(raw)) fail(file, '__metadata__ is not an object');
        for (const [k, v] of Object.entries(raw)) metadata[k] = typeof v === 'string' ? v : JSON.stringify(v);
        continue;
      }
      if (!isPlainObject(raw)) fail(file, `tensor "${name}": header entry is not an object`);
      const dtype = raw.dtype;
      if (typeof dtype !== 'string') fail(file, `tensor "${name}": missing dtype`);
      if (!(dtype in DTYPE_BYTES)) {
        fail(file, `tensor "${name}" has unsupported dtype ${dtype} (supported: F32, F16, BF16)`);
      }
      const dt = dtype as SafetensorsDType;
      const { shape, elements } = parseShape(file, name, raw.shape);
      const offs = raw.data_offsets;
      if (
        !Array.isArray(offs) || offs.length !== 2 ||
        !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
      ) {
        fail(file, `tensor "${name}": data_offsets must be two non-negative integers`);
      }
      const [begin, end] = offs as [number, number];
      if (end < begin) fail(file, `tensor "${name}": data_offsets [${begin}, ${end}] end before they begin`);
      if (end > dataSize) {
        fail(file, `tensor "${name}": data_offsets [${begin}, ${end}] run past the end of the file (data section is ${dataSize} bytes)`);
      }
      const want = elements * DTYPE_BYTES[dt];
      if (end - begin !== want) {
        fail(file, `tensor "${name}": data_offsets span ${end - begin} bytes but shape [${shape.join(', ')}] ${dt} needs ${want}`);
      }
      spans.push({ name, begin, end });
      tensors.set(name, { name, dtype: dt, shape, file, start: dataStart + begin, byteLength: want });
    }
    spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
    for (let i = 1; i < spans.length; i++) {
      const p = spans[i - 1];
      const c = spans[i];
      if (c.begin < p.end) fail(file, `tensors "${p.name}" and "${c.name}" have overlapping data_offsets`);
    }
    return { tensors, metadata };
  });
}

let f16Table: Float32Array | undefined;
let bf16Table: Float32Array | undefined;
function table(dtype: 'F16' | 'BF16'): Float32Array {
  if (dtype === 'F16') {
    if (!f16Table) {
      f16Table = new Float32Array(65536);
      for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
    }
    return f16Table;
  }
  if (!bf16Table) {
    bf16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) bf16Table[i] = bf16ToF32(i);
  }
  return bf16Table;
}

/** Bytes per read of tensor data (and per widening pass for F16/BF16): tensors are read by offset, never whole files. */
const CHUNK_BYTES = 16 * 1024 * 1024;

/** Read one tensor's bytes as stored. */
export function readEntryRaw(e: SafetensorsEntry): Uint8Array {
  const out = allocTyped(e.file, `tensor "${e.name}"`, e.byteLength, Uint8Array);
  withFd(e.file, (fd) => {
    for (let off = 0; off < out.byteLength; off += CHUNK_BYTES) {
      readExact(fd, e.file, out.subarray(off, Math.min(off + CHUNK_BYTES, out.byteLength)), e.start + off);
    }
  });
  return out;
}

/** Read one tensor's data from its file. */
export function readEntry(e: SafetensorsEntry): Float32Array {
  const elements = e.byteLength / DTYPE_BYTES[e.dtype];
  const out = allocTyped(e.file, `tensor "${e.name}" (as F32)`, elements, Float32Array, 'elements');
  withFd(e.file, (fd) => {
    if (e.dtype === 'F32') {
      // Straight into the result, one chunk-sized byte view at a time (a single view of more than 2^32 bytes
      // is not allowed). Little-endian host assumed (as everywhere Node runs in practice).
      for (let off = 0; off < out.byteLength; off += CHUNK_BYTES) {
        const n = Math.min(CHUNK_BYTES, out.byteLength - off);
        readExact(fd, e.file, new Uint8Array(out.buffer, out.byteOffset + off, n), e.start + off);
      }
      return;
    }
    const t = table(e.dtype);
    const chunkElems = CHUNK_BYTES / 2;
    const tmp = new Uint16Array(Math.min(chunkElems, elements));
    const tmpBytes = new Uint8Array(tmp.buffer);
    for (let i0 = 0; i0 < elements; i0 += chunkElems) {
      const n = Math.min(chunkElems, elements - i0);
      readExact(fd, e.file, tmpBytes.subarray(0, n * 2), e.start + i0 * 2);
      for (let i = 0; i < n; i++) out[i0 + i] = t[tmp[i]];
    }
  });
  return out;
}

class Store implements SafetensorsStore {
  constructor(
    readonly path: string,
    readonly tensors: Map<string, SafetensorsEntry>,
    readonly metadata: Record<string, string>,
  ) {}
  read(name: string): Float32Array {
    const e = this.tensors.get(name);
    if (!e) throw new CokvError(`${this.path}: no tensor named "${name}"`, 'format');
    return readEntry(e);
  }
  readRaw(name: string): Uint8Array {
    const e = this.tensors.get(name);
    if (!e) throw new CokvError(`${this.path}: no tensor named "${name}"`, 'format');
    return readEntryRaw(e);
  }
}

/** Open one `.safetensors` file (reads and validates the header only). */
export function openSafetensors(file: string): SafetensorsStore {
  const { tensors, metadata } = readHeader(file);
  return new Store(file, tensors, metadata);
}

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
export const SAFETENSORS_SINGLE = 'model.safetensors';

/**
 * Open the weights of a Hugging Face folder: `model.safetensors.index.json` (sharded, `weight_map` name → shard
 * file) if present, else `model.safetensors`.
 */
export function openSafetensorsFolder(dir: string): SafetensorsStore {
  const indexPath = path.join(dir, SAFETENSORS_INDEX);
  if (fs.existsSync(indexPath)) return openSharded(indexPath);
  const single = path.join(dir, SAFETENSORS_SINGLE);
  if (fs.existsSync(single)) return openSafetensors(single);
  throw new CokvError(`${dir}: no ${SAFETENSORS_SINGLE} or ${SAFETENSORS_INDEX} found`, 'file');
}

function openSharded(indexPath: string): SafetensorsStore {
  const dir = path.dirname(indexPath);
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    fail(indexPath, `cannot read index (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
  }
  if (!isPlainObject(index) || !isPlainObject(index.weight_map)) fail(indexPath, 'index has no weight_map object');
  const weightMap = index.weight_map;
  const shardNames: string[] = [];
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard === '' || shard !== path.basename(shard) || shard === '..' || shard === '.') {
      fail(indexPath, `weight_map entry for "${name}" is not a plain file name`);
    }
    if (!shardNames.includes(shard)) shardNames.push(shard);
  }
  if (shardNames.length === 0) fail(indexPath, 'weight_map is empty');
  const tensors = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> | undefined;
  for (const shard of shardNames) {
    const shardPath = path.join(dir, shard);
    if (!fs.existsSync(shardPath)) fail(indexPath, `shard ${shard} listed in weight_map is missing`);
    const h = readHeader(shardPath);
    metadata ??= h.metadata;
    for (const [name, e] of h.tensors) {
      if (tensors.has(name)) fail(shardPath, `tensor "${name}" also appears in ${path.basename(tensors.get(name)!.file)}`);
      tensors.set(name, e);
    }
  }
  for (const [name, shard] of Object.entries(weightMap)) {
    const e = tensors.get(name);
    if (!e || path.basename(e.file) !== shard) fail(indexPath, `weight_map puts "${name}" in ${String(shard)}, but it is not there`);
  }
  return new Store(indexPath, tensors, metadata ?? {});
}

/** float → bfloat16 bits, round to nearest even (NaN stays NaN). */
function f32ToBf16(v: number, u32: Uint32Array, f32: Float32Array): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** A tensor to write. `data` is F32 and is narrowed to `dtype` on write. */
export interface TensorToWrite {
  name: string;
  shape: number[];
  dtype: SafetensorsDType;
  data: Float32Array;
}

/** Write a safetensors file (small files; used by tests and fixtures). */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (const t of tensors) {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (elements !== t.data.length) {
      throw new CokvError(`${file}: tensor "${t.name}" has ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    }
    let bytes: Uint8Array;
    if (t.dtype === 'F32') {
      bytes = new Uint8Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
    } else {
      const h = new Uint16Array(elements);
      for (let i = 0; i < elements; i++) h[i] = t.dtype === 'F16' ? f32ToF16(t.data[i]) : f32ToBf16(t.data[i], u32, f32);
      bytes = new Uint8Array(h.buffer);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  const jsonLen = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonLen % 8)) % 8);
  const jsonBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(jsonBuf.byteLength), 0);
  fs.writeFileSync(file, Buffer.concat([lenBuf, jsonBuf, ...parts]));
}
