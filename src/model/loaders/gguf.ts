/**
 * GGUF reader (versions 2 and 3). The header is parsed with small buffered reads; tensor data is read per tensor
 * on `loadWeights()`, so opening a multi-GB file costs only its header. Every malformed input becomes a one-line
 * CokvError that starts with the file path.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv_count × (string key, u32 type,
 * value), tensor_count × (string name, u32 n_dims, u64 ne[n_dims] fastest-first, u32 ggml_type, u64 offset),
 * padding to `general.alignment` (default 32), tensor data. Strings are u64 length + UTF-8 bytes.
 *
 * Over 500 lines on purpose: the format's header parser, its metadata → config mapping and the tensor reads, with a one-line error for every malformed case the reliability review found.
 */
import * as fs from 'node:fs';
import { CokvError, MAX_TENSOR_ELEMENTS } from '../../errors.js';
import { archForGguf, archModule, type ArchModule, type GgufMetaReader } from '../arch/index.js';
import { ggufRopeScaling } from '../arch/common.js';
import { llamaRecipe, validateConfig, type ModelConfig } from '../config.js';
import { assembleWeights, expectedTensors } from './assemble.js';
import { allocTyped, preadFully } from './read-chunked.js';
import type { FileDType, ModelSource, TensorInfo } from '../source.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { F32Weight, ModelWeights, QuantWeight, Weight } from '../weights.js';
import { BLOCK, GGML_TYPE, bf16ToF32, dequantRow, f16Lut, ggmlTypeName, isBlockType, quantRowBytes } from '../quant.js';

/** A metadata value as read: numbers (u64/i64 beyond 2^53 as bigint), booleans, strings or arrays of those. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** GGUF metadata value type ids. */
export const GGUF_VALUE_TYPE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9,
  UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;

export interface GgufTensorInfo {
  name: string;
  /** ggml dims, fastest-varying first (ne[0] = columns of a matrix). */
  dims: number[];
  /** ggml type id. */
  ggmlType: number;
  /** Our storage type name. */
  dtype: FileDType;
  /** Offset relative to the data section. */
  offset: number;
  /** Bytes of data. */
  nbytes: number;
}

export interface GgufHeader {
  path: string;
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute file offset of the tensor data section. */
  dataOffset: number;
  fileSize: number;
}

const MAGIC = 0x46554747; // "GGUF" little-endian

/**
 * Bounds on what the header may make us allocate, far above any real model (a 262k-token vocabulary with scores,
 * types and merges is ~10^6 array elements and ~10 MB of strings) and far below V8's limits (a string of at most
 * 0x1fffffe8 characters, a heap of a few GB): checking counts only against the file size lets one lying count in a
 * multi-GB (or sparse) file allocate gigabytes.
 */
export const GGUF_LIMITS = {
  /** Bytes of one metadata string value (chat templates are the largest, ~100 KB). */
  string: 1 << 24,
  /** Bytes of one metadata key or tensor name (ggml's own limit for names is 64). */
  name: 1 << 16,
  /** Metadata array elements, all arrays together. */
  arrayElements: 1 << 24,
  /** Bytes of all metadata strings together. */
  stringBytes: 1 << 28,
  /** Metadata keys, and tensors. */
  keys: 1 << 20,
  tensors: 1 << 20,
};

const SUPPORTED_TYPES: Record<number, FileDType> = {
  [GGML_TYPE.F32]: 'f32',
  [GGML_TYPE.F16]: 'f16',
  [GGML_TYPE.BF16]: 'bf16',
  [GGML_TYPE.Q8_0]: 'q8_0',
  [GGML_TYPE.Q4_0]: 'q4_0',
  [GGML_TYPE.Q4_1]: 'q4_1',
  [GGML_TYPE.Q5_0]: 'q5_0',
  [GGML_TYPE.Q5_1]: 'q5_1',
  [GGML_TYPE.Q2_K]: 'q2_k',
  [GGML_TYPE.Q3_K]: 'q3_k',
  [GGML_TYPE.Q4_K]: 'q4_k',
  [GGML_TYPE.Q5_K]: 'q5_k',
  [GGML_TYPE.Q6_K]: 'q6_k',
  [GGML_TYPE.IQ4_NL]: 'iq4_nl',
  [GGML_TYPE.IQ4_XS]: 'iq4_xs',
};

/** Buffered little-endian reader over a file descriptor with bounds checks against the file size. */
class FileReader {
  private buf = Buffer.alloc(1 << 16);
  private bufStart = 0;
  private bufLen = 0;
  pos = 0;
  /** Metadata array elements and string bytes read so far (bounded by GGUF_LIMITS). */
  elements = 0;
  stringBytes = 0;

  constructor(
    readonly fd: number,
    readonly size: number,
    readonly path: string,
  ) {}

  fail(msg: string): never {
    throw new CokvError(`${this.path}: ${msg}`, 'format');
  }

  private ensure(n: number, what: string): number {
    if (this.pos + n > this.size) {
      this.fail(`truncated file: needs ${n} more bytes for ${what} at offset ${this.pos}, file has ${this.size}`);
    }
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.bufLen) {
      if (n > this.buf.length) this.buf = Buffer.alloc(Math.max(n, this.buf.length * 2));
      this.bufStart = this.pos;
      const want = Math.min(this.buf.length, this.size - this.pos);
      this.bufLen = readFully(this.fd, this.buf, 0, want, this.pos, this.path);
      if (this.bufLen < n) this.fail(`unexpected end of file at offset ${this.pos} reading ${what}`);
    }
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }

  u8(what: string): number { return this.buf.readUInt8(this.ensure(1, what)); }
  i8(what: string): number { return this.buf.readInt8(this.ensure(1, what)); }
  u16(what: string): number { return this.buf.readUInt16LE(this.ensure(2, what)); }
  i16(what: string): number { return this.buf.readInt16LE(this.ensure(2, what)); }
  u32(what: string): number { return this.buf.readUInt32LE(this.ensure(4, what)); }
  i32(what: string): number { return this.buf.readInt32LE(this.ensure(4, what)); }
  f32(what: string): number { return this.buf.readFloatLE(this.ensure(4, what)); }
  f64(what: string): number { return this.buf.readDoubleLE(this.ensure(8, what)); }
  u64big(what: string): bigint { return this.buf.readBigUInt64LE(this.ensure(8, what)); }
  i64big(what: string): bigint { return this.buf.readBigInt64LE(this.ensure(8, what)); }

  /** u64 that must fit a safe integer (counts, lengths, offsets). */
  u64n(what: string): number {
    const v = this.u64big(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} = ${v} is absurd`);
    return Number(v);
  }

  str(what: string, max = GGUF_LIMITS.string): string {
    const n = this.u64n(`${what} length`);
    if (this.pos + n > this.size) {
      this.fail(`${what} claims ${n} bytes but only ${this.size - this.pos} remain in the file`);
    }
    if (n > max) this.fail(`${what} is ${n} bytes long, more than the ${max} allowed (corrupt length?)`);
    this.stringBytes += n;
    if (this.stringBytes > GGUF_LIMITS.stringBytes) {
      this.fail(`${what}: metadata strings total more than ${GGUF_LIMITS.stringBytes} bytes (corrupt lengths?)`);
    }
    if (n === 0) return '';
    const o = this.ensure(n, what);
    return this.buf.toString('utf8', o, o + n);
  }
}

/** Read `len` bytes at `pos` into `buf` at `off`, in chunks of at most 1 GiB (readSync's limit is 2^31 − 1). */
function readFully(fd: number, buf: Buffer | Uint8Array, off: number, len: number, pos: number, path: string): number {
  return preadFully(fd, buf.subarray(off, off + len), pos, path);
}

function openFd(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (e as Error).message;
    throw new CokvError(`${path}: cannot open: ${why}`, 'file');
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new CokvError(`${path}: not a regular file`, 'file');
  }
  return { fd, size: st.size };
}

/** Smallest encoded size of one value of a metadata type (to bound array counts before allocating). */
function minValueBytes(t: number): number {
  switch (t) {
    case 0: case 1: case 7: return 1;
    case 2: case 3: return 2;
    case 4: case 5: case 6: return 4;
    case 8: case 10: case 11: case 12: return 8;
    case 9: return 12;
    default: return 1;
  }
}

function readValue(r: FileReader, type: number, key: string, depth: number): GgufValue {
  switch (type) {
    case 0: return r.u8(key);
    case 1: return r.i8(key);
    case 2: return r.u16(key);
    case 3: return r.i16(key);
    case 4: return r.u32(key);
    case 5: return r.i32(key);
    case 6: return r.f32(key);
    case 7: {
      const b = r.u8(key);
      if (b > 1) r.fail(`metadata ${key}: bool value ${b} is neither 0 nor 1`);
      return b === 1;
    }
    case 8: return r.str(`metadata ${key}`);
    case 9: {
      if (depth > 2) r.fail(`metadata ${key}: arrays nested too deeply`);
      const at = r.u32(`${key} array type`);
      if (at > 12) r.fail(`metadata ${key}: unknown array element type ${at}`);
      const n = r.u64n(`${key} array length`);
      if (n * minValueBytes(at) > r.size - r.pos) {
        r.fail(`metadata ${key}: array of ${n} elements does not fit in the file`);
      }
      r.elements += n;
      if (r.elements > GGUF_LIMITS.arrayElements) {
        r.fail(`metadata ${key}: array of ${n} elements takes the metadata past ${GGUF_LIMITS.arrayElements} array elements (corrupt count?)`);
      }
      const out: GgufValue[] = new Array<GgufValue>(n);
      for (let i = 0; i < n; i++) out[i] = readValue(r, at, key, depth + 1);
      return out;
    }
    case 10: {
      const v = r.u64big(key);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case 11: {
      const v = r.i64big(key);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
    case 12: return r.f64(key);
    default:
      return r.fail(`metadata ${key}: unknown value type ${type}`);
  }
}

/** Bytes of a tensor of `elements` elements (cols = ne[0]) of a supported type. */
function tensorBytes(dtype: FileDType, elements: number, cols: number): number {
  switch (dtype) {
    case 'f32': return elements * 4;
    case 'f16': case 'bf16': return elements * 2;
    default: {
      const b = BLOCK[dtype];
      if (cols % b.elements !== 0) return -1;
      return (elements / b.elements) * b.bytes;
    }
  }
}

/** Parse the header of a GGUF file: metadata, tensor infos and the data section's place; reads no tensor data. */
export function readGgufHeader(path: string): GgufHeader {
  const { fd, size } = openFd(path);
  try {
    return parseHeader(new FileReader(fd, size, path));
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(r: FileReader): GgufHeader {
  if (r.size < 24) r.fail(`file of ${r.size} bytes is too small to be GGUF`);
  const magic = r.u32('magic');
  if (magic !== MAGIC) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(magic);
    r.fail(`not a GGUF file (magic ${JSON.stringify(b.toString('latin1'))}, expected "GGUF")`);
  }
  const version = r.u32('version');
  if (version === 1) r.fail('GGUF version 1 is not supported (re-convert the model with a current llama.cpp)');
  if (version !== 2 && version !== 3) r.fail(`unsupported GGUF version ${version} (supported: 2, 3)`);
  const nTensors = r.u64n('tensor count');
  const nKv = r.u64n('metadata count');
  // Each kv needs at least 8 (key len) + 1 + 4 (type) + 1 bytes; each tensor info at least 8 + 1 + 4 + 8 + 4 + 8.
  if (nKv * 14 > r.size) r.fail(`metadata count ${nKv} is absurd for a file of ${r.size} bytes (truncated?)`);
  if (nTensors * 33 > r.size) r.fail(`tensor count ${nTensors} is absurd for a file of ${r.size} bytes (truncated?)`);
  if (nKv > GGUF_LIMITS.keys) r.fail(`metadata count ${nKv} is more than the ${GGUF_LIMITS.keys} allowed (corrupt count?)`);
  if (nTensors > GGUF_LIMITS.tensors) r.fail(`tensor count ${nTensors} is more than the ${GGUF_LIMITS.tensors} allowed (corrupt count?)`);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = r.str(`metadata key #${i}`, GGUF_LIMITS.name);
    const type = r.u32(`type of ${key}`);
    const value = readValue(r, type, key, 0);
    if (metadata.has(key)) r.fail(`duplicate metadata key ${key}`);
    metadata.set(key, value);
  }

  let alignment = 32;
  const al = metadata.get('general.alignment');
  if (al !== undefined) {
    if (typeof al !== 'number' || !Number.isInteger(al) || al <= 0 || al > 1 << 20 || (al & (al - 1)) !== 0) {
      r.fail(`general.alignment ${String(al)} is not a power of two`);
    }
    alignment = al;
  }

  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = r.str(`tensor #${i} name`, GGUF_LIMITS.name);
    if (names.has(name)) r.fail(`duplicate tensor ${name}`);
    names.add(name);
    const nd = r.u32(`${name} n_dims`);
    if (nd < 1 || nd > 4) r.fail(`tensor ${name} has ${nd} dimensions (expected 1..4)`);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nd; d++) {
      const v = r.u64big(`${name} dim ${d}`);
      if (v < 1n) r.fail(`tensor ${name} has a zero dimension`);
      if (v > BigInt(MAX_TENSOR_ELEMENTS)) r.fail(`tensor ${name} dimension ${v} is absurd`);
      dims.push(Number(v));
      elements *= Number(v);
    }
    if (elements > MAX_TENSOR_ELEMENTS) {
      r.fail(`tensor ${name} has ${elements} elements (dims ${dims.join('x')}), more than the ${MAX_TENSOR_ELEMENTS} allowed`);
    }
    const ggmlType = r.u32(`${name} type`);
    const dtype = SUPPORTED_TYPES[ggmlType];
    if (dtype === undefined) {
      r.fail(
        `tensor ${name} has ggml type ${ggmlTypeName(ggmlType)} (${ggmlType}), which cokv does not support ` +
          '(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)',
      );
    }
    const offset = r.u64n(`${name} offset`);
    if (offset % alignment !== 0) r.fail(`tensor ${name} offset ${offset} is not a multiple of the alignment ${alignment}`);
    const nbytes = tensorBytes(dtype, elements, dims[0]);
    if (nbytes < 0) {
      r.fail(`tensor ${name}: row of ${dims[0]} elements is not a whole number of ${dtype} blocks`);
    }
    tensors.push({ name, dims, ggmlType, dtype, offset, nbytes });
  }
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  for (const t of tensors) {
    const end = dataOffset + t.offset + t.nbytes;
    if (end > r.size) {
      r.fail(
        `tensor ${t.name} data (offset ${t.offset}, ${t.nbytes} bytes) runs past the end of the file ` +
          `(${end} > ${r.size} bytes; truncated?)`,
      );
    }
  }
  checkDataLayout(r, tensors, alignment);
  return { path: r.path, version, metadata, tensors, alignment, dataOffset, fileSize: r.size };
}

function describeTensor(t: GgufTensorInfo): string {
  return `${t.name} (${ggmlTypeName(t.ggmlType)} ${t.dims.join('x')}, ${t.nbytes} bytes at data offset ${t.offset})`;
}

/**
 * llama.cpp (gguf.cpp) requires tensor data to be contiguous in tensor-info order: each tensor starts where the
 * previous one ends, padded to the alignment. Overlapping ranges would load one tensor's bytes as another's, and a
 * gap or overlap is what a changed type or shape leaves behind (the tensor then reads its neighbours' bytes).
 */
function checkDataLayout(r: FileReader, tensors: GgufTensorInfo[], alignment: number): void {
  const byStart = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const p = byStart[i - 1], t = byStart[i];
    if (t.offset < p.offset + p.nbytes) r.fail(`tensors ${describeTensor(p)} and ${describeTensor(t)} overlap`);
  }
  let expect = 0;
  let prev: GgufTensorInfo | undefined;
  for (const t of tensors) {
    if (t.offset !== expect) {
      r.fail(
        prev
          ? `tensor ${describeTensor(t)} does not start where ${describeTensor(prev)} ends (data offset ${expect}): ` +
            'tensor data must be contiguous (changed type or shape?)'
          : `first tensor ${describeTensor(t)} does not start at data offset 0`,
      );
    }
    expect = Math.ceil((t.offset + t.nbytes) / alignment) * alignment;
    prev = t;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata → ModelConfig
// ---------------------------------------------------------------------------------------------------------------

function metaNum(h: GgufHeader, key: string, required: true): number;
function metaNum(h: GgufHeader, key: string, required?: false): number | undefined;
function metaNum(h: GgufHeader, key: string, required = false): number | undefined {
  const v = h.metadata.get(key);
  if (v === undefined) {
    if (required) throw new CokvError(`${h.path}: missing metadata ${key}`, 'format');
    return undefined;
  }
  if (typeof v === 'bigint') throw new CokvError(`${h.path}: metadata ${key} = ${v} is absurd`, 'format');
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new CokvError(`${h.path}: metadata ${key} should be a number, got ${describe(v)}`, 'format');
  }
  return v;
}

function metaStr(h: GgufHeader, key: string): string | undefined {
  const v = h.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new CokvError(`${h.path}: metadata ${key} should be a string, got ${describe(v)}`, 'format');
  return v;
}

function describe(v: GgufValue): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return `${typeof v} ${String(v).slice(0, 40)}`;
}

/** Typed reads of the file's metadata for an architecture module (keys relative to `<arch>.`). */
function metaReader(h: GgufHeader, arch: string): GgufMetaReader {
  const full = (key: string): string => (/^(general|tokenizer)\./.test(key) ? key : `${arch}.${key}`);
  const names = new Set(h.tensors.map((t) => t.name));
  return {
    file: h.path,
    arch,
    num: (key, def) => (def === undefined ? metaNum(h, full(key), true) : metaNum(h, full(key)) ?? def),
    optNum: (key) => {
      const v = h.metadata.get(full(key));
      return Array.isArray(v) ? undefined : metaNum(h, full(key));
    },
    str: (key) => metaStr(h, full(key)),
    arr: (key) => {
      const v = h.metadata.get(full(key));
      return Array.isArray(v) ? v : undefined;
    },
    hasTensor: (name) => names.has(name),
  };
}

/** Map GGUF metadata (and tensor shapes) to a ModelConfig; throws CokvError naming the file on anything odd. */
export function ggufConfig(h: GgufHeader): ModelConfig {
  const archName = metaStr(h, 'general.architecture');
  if (archName === undefined) throw new CokvError(`${h.path}: missing metadata general.architecture`, 'format');
  const arch = archForGguf(archName, h.path);
  const meta = metaReader(h, archName);
  const hiddenSize = meta.num('embedding_length');
  const numLayers = meta.num('block_count');
  const intermediateSize = meta.num('feed_forward_length');
  const numHeads = meta.num('attention.head_count');
  const numKvHeads = meta.optNum('attention.head_count_kv') ?? numHeads;
  const headDim = meta.optNum('attention.key_length') ?? (numHeads > 0 ? hiddenSize / numHeads : 0);
  const valueLength = meta.optNum('attention.value_length');
  if (valueLength !== undefined && valueLength !== headDim) {
    throw new CokvError(`${h.path}: value_length ${valueLength} differs from key_length ${headDim} (unsupported)`, 'format');
  }
  if (Number.isInteger(numLayers) && numLayers > 0 && numLayers * 7 > h.tensors.length) {
    throw new CokvError(`${h.path}: block_count ${numLayers} needs at least ${numLayers * 7} tensors, the file has ${h.tensors.length}`, 'format');
  }
  const embd = h.tensors.find((t) => t.name === 'token_embd.weight');
  if (!embd) throw new CokvError(`${h.path}: missing tensor token_embd.weight`, 'format');
  if (embd.dims.length !== 2) {
    throw new CokvError(`${h.path}: tensor token_embd.weight should be 2-D, has dims ${embd.dims.join('x')}`, 'format');
  }
  const tokens = h.metadata.get('tokenizer.ggml.tokens');
  // llama.cpp requires one token per embedding row: extra rows would be ids that decode to nothing, missing rows
  // ids the model cannot embed.
  if (Array.isArray(tokens) && tokens.length !== embd.dims[1]) {
    throw new CokvError(
      `${h.path}: tokenizer.ggml.tokens has ${tokens.length} tokens but token_embd.weight has ${embd.dims[1]} rows`, 'format');
  }
  const base: ModelConfig = {
    architecture: arch.architecture,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize,
    vocabSize: embd.dims[1] ?? (Array.isArray(tokens) ? tokens.length : 0),
    // Required, as in llama.cpp: a default would accept prompts far past the trained context.
    contextLength: meta.num('context_length'),
    ropeTheta: meta.optNum('rope.freq_base') ?? 10000,
    rmsNormEps: meta.optNum('attention.layer_norm_rms_epsilon') ?? 1e-5,
    tiedEmbeddings: !h.tensors.some((t) => t.name === 'output.weight'),
    attentionBias: false,
    recipe: llamaRecipe(Number.isFinite(headDim) && headDim > 0 ? headDim : 1),
    layers: [],
  };
  const scaling = ggufRopeScaling(meta);
  if (scaling) base.ropeScaling = scaling;
  const config = arch.fromGguf(base, meta);
  validateConfig(config, h.path);
  // A block_count below the layers present would silently run a shallower model.
  let maxBlk = -1;
  for (const t of h.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) maxBlk = Math.max(maxBlk, Number(m[1]));
  }
  if (maxBlk >= config.numLayers) {
    throw new CokvError(`${h.path}: block_count is ${config.numLayers} but the file has tensors of layer ${maxBlk} (blk.${maxBlk}.*)`, 'format');
  }
  return config;
}

/** Our shape ([rows, cols]) of a ggml dims list (fastest-first). */
export function ggmlDimsToShape(dims: readonly number[]): number[] {
  return [...dims].reverse();
}

// ---------------------------------------------------------------------------------------------------------------
// ModelSource
// ---------------------------------------------------------------------------------------------------------------

/** Open a GGUF model: header, config and tokenizer metadata now; weights on `loadWeights()`. */
export function openGguf(path: string): ModelSource {
  const h = readGgufHeader(path);
  const config = ggufConfig(h);
  const arch = archModule(config.architecture);
  const expected = expectedTensors(config, arch, 'gguf');
  const byName = new Map(h.tensors.map((t) => [t.name, t]));
  for (const [name, shape] of expected) {
    const t = byName.get(name);
    if (!t) throw new CokvError(`${path}: missing tensor ${name}`, 'format');
    const got = ggmlDimsToShape(t.dims);
    if (got.length !== shape.length || got.some((v, i) => v !== shape[i])) {
      throw new CokvError(
        `${path}: tensor ${name} has shape [${got.join(', ')}] but the config implies [${shape.join(', ')}]`,
        'format',
      );
    }
  }
  // llama3 scaling as per-frequency divisors (convert_hf_to_gguf writes them for rope_type llama3): full layers only.
  const ropeFreqs = byName.get('rope_freqs.weight');
  if (ropeFreqs) {
    const rot = config.layers.find((l) => l.kind === 'full' && l.rope)?.rope?.rotaryDim ?? config.headDim;
    const vals = readRopeFactors(h, ropeFreqs, rot);
    config.ropeFreqFactors = vals;
    config.layers = config.layers.map((l) => (l.kind === 'full' && l.rope ? { ...l, rope: { ...l.rope, freqFactors: vals } } : l));
  }

  // Phi-3.5 / Phi-4-mini longrope: per-frequency divisors for short and long contexts, a cos/sin multiplier.
  const ropeShort = byName.get('rope_factors_short.weight'), ropeLong = byName.get('rope_factors_long.weight');
  if (ropeShort || ropeLong) {
    if (!ropeShort || !ropeLong) throw new CokvError(`${path}: rope_factors_short.weight and rope_factors_long.weight come in pairs`, 'format');
    const rot = config.layers.find((l) => l.rope)?.rope?.rotaryDim ?? config.headDim;
    const prefix = `${metaStr(h, 'general.architecture')}.`;
    const scaling = {
      type: 'longrope' as const, shortFactor: readRopeFactors(h, ropeShort, rot), longFactor: readRopeFactors(h, ropeLong, rot),
      originalMaxPositionEmbeddings: metaNum(h, `${prefix}rope.scaling.original_context_length`) ?? config.contextLength,
      attentionFactor: metaNum(h, `${prefix}rope.scaling.attn_factor`) ?? 1,
    };
    config.ropeScaling = scaling;
    config.layers = config.layers.map((l) => (l.rope ? { ...l, rope: { ...l.rope, scaling } } : l));
  }

  const tokens = h.metadata.get('tokenizer.ggml.tokens');
  checkSpecialIds(h, Array.isArray(tokens) ? tokens.length : config.vocabSize);
  const tokenStr = (key: string): string | undefined => {
    const id = h.metadata.get(key);
    if (typeof id === 'number' && Array.isArray(tokens) && id >= 0 && id < tokens.length) {
      const s = tokens[id];
      return typeof s === 'string' ? s : undefined;
    }
    return undefined;
  };
  const eosIds: number[] = [];
  for (const key of ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    const v = h.metadata.get(key);
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && !eosIds.includes(v)) eosIds.push(v);
  }
  const tensors: TensorInfo[] = h.tensors.map((t) => ({ name: t.name, shape: ggmlDimsToShape(t.dims), dtype: t.dtype }));
  const chat = h.metadata.get('tokenizer.chat_template');

  return {
    format: 'gguf',
    path,
    config,
    tensors,
    chatTemplate: typeof chat === 'string' ? chat : undefined,
    bosToken: tokenStr('tokenizer.ggml.bos_token_id'),
    eosToken: tokenStr('tokenizer.ggml.eos_token_id'),
    generation: eosIds.length ? { eosIds } : undefined,
    async loadTokenizer(): Promise<Tokenizer> {
      const { tokenizerFromGguf } = await import('../tokenizer/gguf-tokenizer.js');
      return tokenizerFromGguf(h.metadata, path);
    },
    loadWeights(): ModelWeights {
      return loadGgufWeights(h, config, arch, byName);
    },
  };
}

/**
 * Every `tokenizer.ggml.*_token_id` must name a token: an out-of-range BOS/EOS/UNK/PAD id would otherwise be
 * dropped silently and the model run without the special token its file asks for.
 */
function checkSpecialIds(h: GgufHeader, nTokens: number): void {
  for (const [key, v] of h.metadata) {
    // The ids cokv acts on (BOS added, EOS/EOT/EOM stop, UNK substituted) must be real tokens. Others (padding,
    // sep, mask, fim_*) are unused here, and real converters write e.g. padding = vocab size or -1 for "none":
    // like llama.cpp, they are not an error.
    if (!/^tokenizer\.ggml\.(bos|eos|eot|eom|unknown)_token_id$/.test(key)) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= nTokens) {
      throw new CokvError(`${h.path}: metadata ${key} = ${typeof v === 'number' ? v : describe(v)} is not a token id (the vocabulary has ${nTokens} tokens)`, 'format');
    }
  }
}

/** A RoPE per-frequency factor tensor: exactly rotaryDim/2 positive finite values, or a CokvError naming it. */
function readRopeFactors(h: GgufHeader, t: GgufTensorInfo, rotaryDim: number): number[] {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.dims.length !== 1 || n !== rotaryDim / 2) {
    throw new CokvError(`${h.path}: ${t.name} has ${n} values, expected rotary dim/2 = ${rotaryDim / 2}`, 'format');
  }
  const { fd } = openFd(h.path);
  try {
    const vals = Array.from(readTensorF32(fd, h, t));
    if (vals.some((v) => !(v > 0) || !Number.isFinite(v))) {
      throw new CokvError(`${h.path}: ${t.name} holds non-positive or non-finite factors`, 'format');
    }
    return vals;
  } finally {
    fs.closeSync(fd);
  }
}

/** Read a tensor's raw bytes. */
function readTensorBytes(fd: number, h: GgufHeader, t: GgufTensorInfo): Uint8Array {
  const buf = allocTyped(h.path, `tensor ${t.name}`, t.nbytes, Uint8Array);
  const n = readFully(fd, buf, 0, t.nbytes, h.dataOffset + t.offset, h.path);
  if (n !== t.nbytes) throw new CokvError(`${h.path}: tensor ${t.name}: file ended after ${n} of ${t.nbytes} bytes`, 'format');
  return buf;
}

/** Read any supported tensor and widen it to F32 (row-major, our order). */
function readTensorF32(fd: number, h: GgufHeader, t: GgufTensorInfo): Float32Array {
  const raw = readTensorBytes(fd, h, t);
  return toF32(raw, t);
}

function toF32(raw: Uint8Array, t: GgufTensorInfo): Float32Array {
  const elements = t.dims.reduce((a, b) => a * b, 1);
  switch (t.dtype) {
    case 'f32': {
      if (raw.byteOffset % 4 === 0) return new Float32Array(raw.buffer, raw.byteOffset, elements);
      return new Float32Array(raw.slice().buffer, 0, elements);
    }
    case 'f16': {
      const lut = f16Lut();
      const out = new Float32Array(elements);
      for (let i = 0; i < elements; i++) out[i] = lut[raw[2 * i] | (raw[2 * i + 1] << 8)];
      return out;
    }
    case 'bf16': {
      const out = new Float32Array(elements);
      for (let i = 0; i < elements; i++) out[i] = bf16ToF32(raw[2 * i] | (raw[2 * i + 1] << 8));
      return out;
    }
    default: {
      const cols = t.dims[0];
      const rows = elements / cols;
      const out = new Float32Array(elements);
      const rb = quantRowBytes(t.dtype, cols);
      for (let r = 0; r < rows; r++) dequantRow(t.dtype, raw, r * rb, cols, out, r * cols);
      return out;
    }
  }
}

/**
 * Undo llama.cpp's Q/K row permutation for `llama` GGUFs, in place (returns `buf`): no second copy of the
 * tensor. The converter maps HF row h*D + s*D/2 + i to GGUF row h*D + 2i + s (s ∈ {0,1}, i < D/2), so HF row
 * d of a head is GGUF row from(d) = 2·(d mod D/2) + ⌊d / (D/2)⌋; each cycle of that map is rotated through
 * one row of scratch.
 */
export function unpermuteRows(buf: Uint8Array, rowBytes: number, nHead: number, headDim: number): Uint8Array {
  const half = headDim / 2;
  const from = (d: number): number => 2 * (d % half) + Math.floor(d / half);
  const cycles: number[][] = [];
  const seen = new Uint8Array(headDim);
  for (let d0 = 0; d0 < headDim; d0++) {
    if (seen[d0]) continue;
    const cycle: number[] = [];
    let d = d0;
    do {
      seen[d] = 1;
      cycle.push(d);
      d = from(d);
    } while (d !== d0);
    if (cycle.length > 1) cycles.push(cycle);
  }
  const tmp = new Uint8Array(rowBytes);
  for (let h = 0; h < nHead; h++) {
    const base = h * headDim * rowBytes;
    const at = (r: number): number => base + r * rowBytes;
    for (const c of cycles) {
      tmp.set(buf.subarray(at(c[0]), at(c[0]) + rowBytes));
      for (let k = 0; k + 1 < c.length; k++) buf.copyWithin(at(c[k]), at(c[k + 1]), at(c[k + 1]) + rowBytes);
      buf.set(tmp, at(c[c.length - 1]));
    }
  }
  return buf;
}

function loadGgufWeights(h: GgufHeader, c: ModelConfig, arch: ArchModule, byName: Map<string, GgufTensorInfo>): ModelWeights {
  const { fd } = openFd(h.path);
  try {
    const info = (name: string): GgufTensorInfo => {
      const t = byName.get(name);
      if (!t) throw new CokvError(`${h.path}: missing tensor ${name}`, 'format');
      return t;
    };
    return assembleWeights(c, arch, 'gguf', {
      vec(name, _role, permuteHeads = 0): Float32Array {
        let a = readTensorF32(fd, h, info(name));
        if (permuteHeads > 0) {
          const bytes = unpermuteRows(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), 4, permuteHeads, c.headDim);
          a = new Float32Array(bytes.buffer);
        }
        return a;
      },
      mat(name, _role, permuteHeads = 0): Weight {
        const t = info(name);
        const [rows, cols] = ggmlDimsToShape(t.dims);
        if (isBlockType(t.dtype)) {
          let data = readTensorBytes(fd, h, t);
          if (permuteHeads > 0) data = unpermuteRows(data, quantRowBytes(t.dtype, cols), permuteHeads, c.headDim);
          const w: QuantWeight = { dtype: t.dtype, rows, cols, data };
          return w;
        }
        let data = readTensorF32(fd, h, t);
        if (permuteHeads > 0) {
          const bytes = unpermuteRows(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), cols * 4, permuteHeads, c.headDim);
          data = new Float32Array(bytes.buffer);
        }
        const w: F32Weight = { dtype: 'f32', rows, cols, data };
        return w;
      },
    }, h.path);
  } finally {
    fs.closeSync(fd);
  }
}
