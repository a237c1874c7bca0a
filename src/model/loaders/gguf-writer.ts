/**
 * GGUF (version 3) writer: typed metadata, tensors as F32 / F16 / BF16 / Q8_0 / Q4_0 from Float32Array input, and
 * `writeLlamaGguf`, which lays a Llama/Qwen2 model out the way llama.cpp's convert_hf_to_gguf.py does (tensor names,
 * metadata keys, the Q/K row permutation for `llama`). Used by tests and benchmarks to make model files.
 */
import * as fs from 'node:fs';
import { CokvError } from '../../errors.js';
import { archModule } from '../arch/index.js';
import type { ModelConfig } from '../config.js';
import { GGML_TYPE, f32ToF16, quantRowBytes, quantizeRowQ4_0, quantizeRowQ8_0 } from '../quant.js';

export type GgufScalarType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'bool' | 'string' | 'u64' | 'i64' | 'f64';
export type GgufScalar = number | bigint | boolean | string;

/** A typed metadata value. */
export type GgufMetaValue =
  | { type: GgufScalarType; value: GgufScalar }
  | { type: 'array'; itemType: GgufScalarType; value: readonly GgufScalar[] };

/** Shorthand constructors for typed metadata values. */
export const gv = {
  u8: (v: number): GgufMetaValue => ({ type: 'u8', value: v }),
  i8: (v: number): GgufMetaValue => ({ type: 'i8', value: v }),
  u16: (v: number): GgufMetaValue => ({ type: 'u16', value: v }),
  i16: (v: number): GgufMetaValue => ({ type: 'i16', value: v }),
  u32: (v: number): GgufMetaValue => ({ type: 'u32', value: v }),
  i32: (v: number): GgufMetaValue => ({ type: 'i32', value: v }),
  u64: (v: number | bigint): GgufMetaValue => ({ type: 'u64', value: v }),
  i64: (v: number | bigint): GgufMetaValue => ({ type: 'i64', value: v }),
  f32: (v: number): GgufMetaValue => ({ type: 'f32', value: v }),
  f64: (v: number): GgufMetaValue => ({ type: 'f64', value: v }),
  bool: (v: boolean): GgufMetaValue => ({ type: 'bool', value: v }),
  str: (v: string): GgufMetaValue => ({ type: 'string', value: v }),
  arr: (itemType: GgufScalarType, v: readonly GgufScalar[]): GgufMetaValue => ({ type: 'array', itemType, value: v }),
};

export type GgufWriteDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

/** A tensor to write: `shape` in our order ([rows, cols] for matrices), data row-major. */
export interface GgufTensorInput {
  name: string;
  shape: number[];
  dtype: GgufWriteDType;
  data: Float32Array;
}

/** A tensor written verbatim (tests use this to craft odd files): ggml dims fastest-first, raw bytes, no checks. */
export interface GgufRawTensorInput {
  name: string;
  dims: number[];
  ggmlType: number;
  raw: Uint8Array;
}

export interface GgufWriteSpec {
  metadata: Record<string, GgufMetaValue>;
  tensors: (GgufTensorInput | GgufRawTensorInput)[];
  /** Defaults to 32 (written as general.alignment only when not 32). */
  alignment?: number;
  /** Defaults to 3. */
  version?: number;
}

const TYPE_ID: Record<GgufScalarType | 'array', number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
};

const DTYPE_GGML: Record<GgufWriteDType, number> = {
  f32: GGML_TYPE.F32, f16: GGML_TYPE.F16, bf16: GGML_TYPE.BF16, q8_0: GGML_TYPE.Q8_0, q4_0: GGML_TYPE.Q4_0,
};

/** Growable little-endian byte sink for the header. */
class Sink {
  buf = Buffer.alloc(1 << 16);
  len = 0;
  private grow(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = Buffer.alloc(cap);
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
  u8(v: number): void { this.grow(1); this.buf.writeUInt8(v, this.len); this.len += 1; }
  i8(v: number): void { this.grow(1); this.buf.writeInt8(v, this.len); this.len += 1; }
  u16(v: number): void { this.grow(2); this.buf.writeUInt16LE(v, this.len); this.len += 2; }
  i16(v: number): void { this.grow(2); this.buf.writeInt16LE(v, this.len); this.len += 2; }
  u32(v: number): void { this.grow(4); this.buf.writeUInt32LE(v, this.len); this.len += 4; }
  i32(v: number): void { this.grow(4); this.buf.writeInt32LE(v, this.len); this.len += 4; }
  f32(v: number): void { this.grow(4); this.buf.writeFloatLE(v, this.len); this.len += 4; }
  f64(v: number): void { this.grow(8); this.buf.writeDoubleLE(v, this.len); this.len += 8; }
  u64(v: number | bigint): void { this.grow(8); this.buf.writeBigUInt64LE(BigInt(v), this.len); this.len += 8; }
  i64(v: number | bigint): void { this.grow(8); this.buf.writeBigInt64LE(BigInt(v), this.len); this.len += 8; }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.grow(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }
  pad(alignment: number): void {
    const n = (alignment - (this.len % alignment)) % alignment;
    this.grow(n);
    this.buf.fill(0, this.len, this.len + n);
    this.len += n;
  }
}

function writeScalar(s: Sink, t: GgufScalarType, v: GgufScalar, key: string): void {
  const num = (): number => {
    if (typeof v !== 'number') throw new Error(`gguf writer: ${key}: expected a number for ${t}, got ${typeof v}`);
    return v;
  };
  switch (t) {
    case 'u8': return s.u8(num());
    case 'i8': return s.i8(num());
    case 'u16': return s.u16(num());
    case 'i16': return s.i16(num());
    case 'u32': return s.u32(num());
    case 'i32': return s.i32(num());
    case 'f32': return s.f32(num());
    case 'f64': return s.f64(num());
    case 'bool': return s.u8(v ? 1 : 0);
    case 'string':
      if (typeof v !== 'string') throw new Error(`gguf writer: ${key}: expected a string`);
      return s.str(v);
    case 'u64': return s.u64(typeof v === 'bigint' ? v : num());
    case 'i64': return s.i64(typeof v === 'bigint' ? v : num());
  }
}

function isRaw(t: GgufTensorInput | GgufRawTensorInput): t is GgufRawTensorInput {
  return (t as GgufRawTensorInput).raw !== undefined;
}

/** Encode a tensor's data in its file type. */
export function encodeTensor(t: GgufTensorInput): Uint8Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new Error(`gguf writer: ${t.name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`);
  const cols = t.shape[t.shape.length - 1];
  switch (t.dtype) {
    case 'f32':
      return new Uint8Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
    case 'f16': {
      const out = new Uint8Array(n * 2);
      for (let i = 0; i < n; i++) {
        const h = f32ToF16(t.data[i]);
        out[2 * i] = h & 0xff;
        out[2 * i + 1] = h >> 8;
      }
      return out;
    }
    case 'bf16': {
      const out = new Uint8Array(n * 2);
      const u = new Uint32Array(1);
      const f = new Float32Array(u.buffer);
      for (let i = 0; i < n; i++) {
        f[0] = t.data[i];
        const x = u[0];
        // round to nearest even (as ggml's fp32_to_bf16); NaN stays quiet NaN
        const b = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 64) : ((x + (0x7fff + ((x >>> 16) & 1))) >>> 16);
        out[2 * i] = b & 0xff;
        out[2 * i + 1] = (b >> 8) & 0xff;
      }
      return out;
    }
    case 'q8_0':
    case 'q4_0': {
      const rows = n / cols;
      const rb = quantRowBytes(t.dtype, cols);
      const out = new Uint8Array(rows * rb);
      const f = t.dtype === 'q8_0' ? quantizeRowQ8_0 : quantizeRowQ4_0;
      for (let r = 0; r < rows; r++) f(t.data, r * cols, cols, out, r * rb);
      return out;
    }
  }
}

/** Write a GGUF file. Tensor data is encoded and written one tensor at a time. */
export function writeGguf(path: string, spec: GgufWriteSpec): void {
  const alignment = spec.alignment ?? 32;
  const s = new Sink();
  s.u32(0x46554747);
  s.u32(spec.version ?? 3);
  const meta = { ...spec.metadata };
  if (alignment !== 32 && !meta['general.alignment']) meta['general.alignment'] = gv.u32(alignment);
  const keys = Object.keys(meta);
  s.u64(spec.tensors.length);
  s.u64(keys.length);
  for (const key of keys) {
    const v = meta[key];
    s.str(key);
    s.u32(TYPE_ID[v.type]);
    if (v.type === 'array') {
      s.u32(TYPE_ID[v.itemType]);
      s.u64(v.value.length);
      for (const x of v.value) writeScalar(s, v.itemType, x, key);
    } else {
      writeScalar(s, v.type, v.value, key);
    }
  }
  // Tensor infos need offsets, so encode sizes first (quantized sizes are known without encoding).
  const sizes: number[] = [];
  for (const t of spec.tensors) {
    if (isRaw(t)) sizes.push(t.raw.length);
    else {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const cols = t.shape[t.shape.length - 1];
      sizes.push(t.dtype === 'f32' ? n * 4 : t.dtype === 'f16' || t.dtype === 'bf16' ? n * 2 : (n / cols) * quantRowBytes(t.dtype, cols));
    }
  }
  let off = 0;
  spec.tensors.forEach((t, i) => {
    s.str(t.name);
    const dims = isRaw(t) ? t.dims : [...t.shape].reverse();
    s.u32(dims.length);
    for (const d of dims) s.u64(d);
    s.u32(isRaw(t) ? t.ggmlType : DTYPE_GGML[t.dtype]);
    s.u64(off);
    off += sizes[i];
    off = Math.ceil(off / alignment) * alignment;
  });
  s.pad(alignment);
  const fd = fs.openSync(path, 'w');
  try {
    fs.writeSync(fd, s.buf, 0, s.len);
    let written = 0;
    const zeros = Buffer.alloc(alignment);
    spec.tensors.forEach((t, i) => {
      const bytes = isRaw(t) ? t.raw : encodeTensor(t);
      if (bytes.length !== sizes[i]) throw new Error(`gguf writer: ${t.name}: encoded ${bytes.length} bytes, expected ${sizes[i]}`);
      fs.writeSync(fd, bytes);
      written += bytes.length;
      const pad = (alignment - (written % alignment)) % alignment;
      if (pad) fs.writeSync(fd, zeros, 0, pad);
      written += pad;
    });
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Llama / Qwen2 models, laid out like convert_hf_to_gguf.py
// ---------------------------------------------------------------------------------------------------------------

/**
 * llama.cpp's `LlamaModel.permute`: reshape rows to (n_head, 2, D/2), swap the last two axes. HF row
 * h*D + s*D/2 + i goes to GGUF row h*D + 2i + s. `rowLen` is the number of values per row (1 for biases).
 */
export function permuteRowsF32(data: Float32Array, rowLen: number, nHead: number, headDim: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = headDim / 2;
  for (let h = 0; h < nHead; h++) {
    for (let s = 0; s < 2; s++) {
      for (let i = 0; i < half; i++) {
        const from = h * headDim + s * half + i;
        const to = h * headDim + 2 * i + s;
        out.set(data.subarray(from * rowLen, (from + 1) * rowLen), to * rowLen);
      }
    }
  }
  return out;
}

/** llama.cpp `general.file_type` (llama_ftype) for a whole-model dtype. */
const FILE_TYPE: Record<GgufWriteDType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

export interface LlamaGgufSpec {
  config: ModelConfig;
  /** Tensors by Hugging Face name (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...). */
  weights: Record<string, Float32Array>;
  /** `tokenizer.*` metadata (tokenizer.ggml.model, tokens, scores, token_type, merges, ids, chat_template...). */
  tokenizer: Record<string, GgufMetaValue>;
  /** Storage type of 2-D weights; 1-D tensors (norms, biases) are always F32, as llama.cpp does. */
  dtype: GgufWriteDType;
  name?: string;
}

/** llama3 rope scaling → per-frequency factors (as llama.cpp's converter writes into rope_freqs.weight). */
export function llama3RopeFactors(c: ModelConfig): Float32Array | undefined {
  const s = c.ropeScaling;
  if (!s || s.type !== 'llama3') return undefined;
  const half = c.headDim / 2;
  const out = new Float32Array(half);
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = 1 / c.ropeTheta ** ((2 * i) / c.headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/** Write a complete llama/qwen2 GGUF from HF-named F32 tensors. */
export function writeLlamaGguf(path: string, spec: LlamaGgufSpec): void {
  const c = spec.config;
  const module = archModule(c.architecture);
  const r = c.recipe;
  if (r.qkNorm || r.postNorms || r.activation !== 'silu' || c.layers.some((l) => l.kind !== 'full' || !l.rope)) {
    throw new CokvError(`writeLlamaGguf: ${c.architecture} is not a Llama-recipe model; this writer covers llama, mistral and qwen2`, 'input');
  }
  // Mistral converts to the llama architecture; the module says whether llama.cpp permutes Q/K.
  const arch = module.ggufArchs[0] ?? 'llama';
  const permute = module.ggufArchs.length > 0 ? module.ggufPermuteQK : true;
  const get = (name: string): Float32Array => {
    const w = spec.weights[name];
    if (!w) throw new CokvError(`writeLlamaGguf: missing tensor ${name}`, 'input');
    return w;
  };
  const tensors: GgufTensorInput[] = [];
  const matDtype = (cols: number): GgufWriteDType =>
    (spec.dtype === 'q8_0' || spec.dtype === 'q4_0') && cols % 32 !== 0 ? 'f16' : spec.dtype;
  const mat = (name: string, hf: string, rows: number, cols: number, heads = 0): void => {
    let data = get(hf);
    if (data.length !== rows * cols) throw new CokvError(`writeLlamaGguf: ${hf} has ${data.length} values, expected ${rows}x${cols}`, 'input');
    if (heads && permute) data = permuteRowsF32(data, cols, heads, c.headDim);
    tensors.push({ name, shape: [rows, cols], dtype: matDtype(cols), data });
  };
  const vec = (name: string, hf: string, n: number, heads = 0): void => {
    let data = get(hf);
    if (data.length !== n) throw new CokvError(`writeLlamaGguf: ${hf} has ${data.length} values, expected ${n}`, 'input');
    if (heads && permute) data = permuteRowsF32(data, 1, heads, c.headDim);
    tensors.push({ name, shape: [n], dtype: 'f32', data });
  };
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  mat('token_embd.weight', 'model.embed_tokens.weight', c.vocabSize, c.hiddenSize);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `blk.${i}.`;
    const hp = `model.layers.${i}.`;
    vec(`${p}attn_norm.weight`, `${hp}input_layernorm.weight`, c.hiddenSize);
    mat(`${p}attn_q.weight`, `${hp}self_attn.q_proj.weight`, q, c.hiddenSize, c.numHeads);
    mat(`${p}attn_k.weight`, `${hp}self_attn.k_proj.weight`, kv, c.hiddenSize, c.numKvHeads);
    mat(`${p}attn_v.weight`, `${hp}self_attn.v_proj.weight`, kv, c.hiddenSize);
    if (c.attentionBias) {
      vec(`${p}attn_q.bias`, `${hp}self_attn.q_proj.bias`, q, c.numHeads);
      vec(`${p}attn_k.bias`, `${hp}self_attn.k_proj.bias`, kv, c.numKvHeads);
      vec(`${p}attn_v.bias`, `${hp}self_attn.v_proj.bias`, kv);
    }
    mat(`${p}attn_output.weight`, `${hp}self_attn.o_proj.weight`, c.hiddenSize, q);
    vec(`${p}ffn_norm.weight`, `${hp}post_attention_layernorm.weight`, c.hiddenSize);
    mat(`${p}ffn_gate.weight`, `${hp}mlp.gate_proj.weight`, c.intermediateSize, c.hiddenSize);
    mat(`${p}ffn_up.weight`, `${hp}mlp.up_proj.weight`, c.intermediateSize, c.hiddenSize);
    mat(`${p}ffn_down.weight`, `${hp}mlp.down_proj.weight`, c.hiddenSize, c.intermediateSize);
  }
  vec('output_norm.weight', 'model.norm.weight', c.hiddenSize);
  if (!c.tiedEmbeddings) mat('output.weight', 'lm_head.weight', c.vocabSize, c.hiddenSize);
  const factors = llama3RopeFactors(c);
  if (factors) tensors.push({ name: 'rope_freqs.weight', shape: [factors.length], dtype: 'f32', data: factors });

  const k = (s: string): string => `${arch}.${s}`;
  const metadata: Record<string, GgufMetaValue> = {
    'general.architecture': gv.str(arch),
    'general.name': gv.str(spec.name ?? 'cokv-model'),
    [k('context_length')]: gv.u32(c.contextLength),
    [k('embedding_length')]: gv.u32(c.hiddenSize),
    [k('block_count')]: gv.u32(c.numLayers),
    [k('feed_forward_length')]: gv.u32(c.intermediateSize),
    [k('rope.dimension_count')]: gv.u32(c.headDim),
    [k('attention.head_count')]: gv.u32(c.numHeads),
    [k('attention.head_count_kv')]: gv.u32(c.numKvHeads),
  };
  if (c.headDim * c.numHeads !== c.hiddenSize) {
    metadata[k('attention.key_length')] = gv.u32(c.headDim);
    metadata[k('attention.value_length')] = gv.u32(c.headDim);
  }
  metadata[k('attention.layer_norm_rms_epsilon')] = gv.f32(c.rmsNormEps);
  metadata[k('rope.freq_base')] = gv.f32(c.ropeTheta);
  if (c.ropeScaling?.type === 'linear') {
    metadata[k('rope.scaling.type')] = gv.str('linear');
    metadata[k('rope.scaling.factor')] = gv.f32(c.ropeScaling.factor);
  }
  metadata[k('vocab_size')] = gv.u32(c.vocabSize);
  metadata['general.file_type'] = gv.u32(FILE_TYPE[spec.dtype]);
  Object.assign(metadata, spec.tokenizer);
  writeGguf(path, { metadata, tensors });
}
