/**
 * llama2.c checkpoints (Karpathy's run.c format): legacy v0 (7×int32 header, weights grouped by kind across
 * layers, then freq_cis tables, then an optional classifier) and v1 ("ak42" magic, 256-byte header, norms first).
 * llama2.c rotates interleaved pairs (2i, 2i+1); we permute Q/K rows to the Hugging Face rotate_half layout once
 * at load, exactly as transformers' conversion script does, so one forward pass serves every format.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../../errors.js';
import { completeConfig, validateConfig, type ModelConfig } from '../config.js';
import { assertFinite } from './finite.js';
import type { ModelSource, TensorInfo } from '../source.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { F32Weight, LayerWeights, ModelWeights } from '../weights.js';

const V1_MAGIC = 0x616b3432;

interface Llama2cLayout {
  version: 0 | 1;
  config: ModelConfig;
  sharedClassifier: boolean;
  headerBytes: number;
  seqLen: number;
}

function readHeader(file: string, fd: number, size: number): Llama2cLayout {
  if (size < 28) throw new CokvError(`${file}: too small to be a llama2.c checkpoint (${size} bytes)`);
  const head = Buffer.alloc(Math.min(size, 256));
  fs.readSync(fd, head, 0, head.length, 0);
  let version: 0 | 1 = 0;
  let off = 0;
  if (head.readUInt32LE(0) === V1_MAGIC) {
    const v = head.readInt32LE(4);
    if (v !== 1) throw new CokvError(`${file}: llama2.c checkpoint version ${v} is not supported (v0 and v1 are)`);
    if (size < 256) throw new CokvError(`${file}: truncated llama2.c v1 header`);
    version = 1;
    off = 8;
  }
  const [dim, hidden, layers, heads, kvHeads, vocabRaw, seqLen] = Array.from({ length: 7 }, (_, i) => head.readInt32LE(off + 4 * i));
  const sharedClassifier = version === 1 ? head.readUInt8(off + 28) !== 0 : vocabRaw > 0;
  const vocab = Math.abs(vocabRaw);
  if (!(dim > 0 && hidden > 0 && layers > 0 && heads > 0 && kvHeads > 0 && vocab > 0 && seqLen > 0) || dim % heads !== 0) {
    throw new CokvError(`${file}: not a llama2.c checkpoint (header dims ${[dim, hidden, layers, heads, kvHeads, vocabRaw, seqLen].join(', ')})`);
  }
  // Bounded before the config builds its per-layer list (the HF loader has the same bound).
  if (layers > 100_000) throw new CokvError(`${file}: header says ${layers} layers, not a sensible llama2.c checkpoint`);
  const config: ModelConfig = completeConfig({
    architecture: 'llama',
    hiddenSize: dim,
    numLayers: layers,
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim: dim / heads,
    intermediateSize: hidden,
    vocabSize: vocab,
    contextLength: seqLen,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tiedEmbeddings: sharedClassifier,
    attentionBias: false,
  });
  validateConfig(config, file);
  return { version, config, sharedClassifier, headerBytes: version === 1 ? 256 : 28, seqLen };
}

/** Tensors in file order with their element counts. */
function tensorPlan(lay: Llama2cLayout): { name: string; shape: number[] }[] {
  const c = lay.config;
  const L = c.numLayers, D = c.hiddenSize, F = c.intermediateSize, kv = c.numKvHeads * c.headDim;
  const perLayer = (name: string, shape: number[]) => Array.from({ length: L }, (_, l) => ({ name: `layers.${l}.${name}`, shape }));
  const norms = [...perLayer('attention_norm', [D]), ...perLayer('ffn_norm', [D]), { name: 'norm', shape: [D] }];
  const mats = [
    ...perLayer('wq', [D, D]), ...perLayer('wk', [kv, D]), ...perLayer('wv', [kv, D]), ...perLayer('wo', [D, D]),
    ...perLayer('w1', [F, D]), ...perLayer('w2', [D, F]), ...perLayer('w3', [F, D]),
  ];
  const emb = { name: 'tok_embeddings', shape: [c.vocabSize, D] };
  const cls = lay.sharedClassifier ? [] : [{ name: 'output', shape: [c.vocabSize, D] }];
  if (lay.version === 1) return [...norms, emb, ...mats, ...cls];
  // v0: embedding, attention norms, attention weights, ffn norms, ffn weights, final norm, freq_cis, classifier.
  const half = c.headDim / 2;
  return [
    emb, ...perLayer('attention_norm', [D]),
    ...perLayer('wq', [D, D]), ...perLayer('wk', [kv, D]), ...perLayer('wv', [kv, D]), ...perLayer('wo', [D, D]),
    ...perLayer('ffn_norm', [D]),
    ...perLayer('w1', [F, D]), ...perLayer('w2', [D, F]), ...perLayer('w3', [F, D]),
    { name: 'norm', shape: [D] },
    { name: 'freq_cis_real', shape: [lay.seqLen, half] }, { name: 'freq_cis_imag', shape: [lay.seqLen, half] },
    ...cls,
  ];
}

/** Floats of all tensors in the file (tensorPlan's total, computed without building it). */
function impliedFloats(lay: Llama2cLayout): number {
  const c = lay.config;
  const L = c.numLayers, D = c.hiddenSize, F = c.intermediateSize, kv = c.numKvHeads * c.headDim, V = c.vocabSize;
  const perLayer = 2 * D + D * D + 2 * kv * D + D * D + 3 * F * D;
  const freqCis = lay.version === 0 ? 2 * lay.seqLen * (c.headDim / 2) : 0;
  return L * perLayer + D + V * D + freqCis + (lay.sharedClassifier ? 0 : V * D);
}

/** Reorder rows of a [heads*headDim, cols] matrix from interleaved-pair RoPE to rotate_half RoPE. */
export function interleavedToHalfRows(w: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      const src = r < half ? 2 * r : 2 * (r - half) + 1;
      out.set(w.subarray((h * headDim + src) * cols, (h * headDim + src + 1) * cols), (h * headDim + r) * cols);
    }
  }
  return out;
}

/** The tokenizer.bin beside a checkpoint: int32 max_token_length, then per token f32 score, int32 len, bytes. */
export function readLlama2cTokenizer(file: string, vocabSize: number): { pieces: string[]; scores: number[] } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    throw new CokvError(`${file}: cannot read llama2.c tokenizer`);
  }
  const pieces: string[] = [];
  const scores: number[] = [];
  let off = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (off + 8 > buf.length) throw new CokvError(`${file}: truncated after ${i} of ${vocabSize} tokens`);
    scores.push(buf.readFloatLE(off));
    const len = buf.readInt32LE(off + 4);
    off += 8;
    if (len < 0 || off + len > buf.length) throw new CokvError(`${file}: token ${i} has a bad length ${len}`);
    pieces.push(buf.toString('utf8', off, off + len));
    off += len;
  }
  return { pieces, scores };
}

function findTokenizerFile(checkpoint: string, vocab: number): string | undefined {
  const dir = path.dirname(checkpoint);
  const candidates = [`tok${vocab}.bin`, 'tokenizer.bin'];
  for (const c of candidates) if (fs.existsSync(path.join(dir, c))) return path.join(dir, c);
  return undefined;
}

/** Open a llama2.c checkpoint (`.bin` file, or a folder containing exactly one with its tokenizer). */
export function openLlama2c(file: string): ModelSource {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new CokvError(`${file}: cannot open file`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const lay = readHeader(file, fd, size);
    // The size is checked before the tensor plan is built: a lying layer count would otherwise build billions of
    // plan entries. The file must be exactly what the header implies (run.c's exporters write nothing else), or
    // a changed dimension would read the weights at shifted offsets and load a different model.
    const expected = lay.headerBytes + impliedFloats(lay) * 4;
    if (size < expected) {
      throw new CokvError(`${file}: truncated llama2.c checkpoint (${size} bytes, header implies ${expected})`);
    }
    if (size > expected) {
      throw new CokvError(`${file}: llama2.c checkpoint has ${size} bytes but its header implies ${expected} (header dims do not match the weights?)`);
    }
    const plan = tensorPlan(lay);
    const tensors: TensorInfo[] = plan.map((t) => ({ name: t.name, shape: t.shape, dtype: 'f32' }));
    const tokFile = findTokenizerFile(file, lay.config.vocabSize);
    return {
      format: 'llama2c',
      path: file,
      config: lay.config,
      tensors,
      bosToken: '<s>',
      eosToken: '</s>',
      generation: { eosIds: [2] },
      async loadTokenizer(): Promise<Tokenizer> {
        if (!tokFile) throw new CokvError(`${file}: no tokenizer.bin or tok${lay.config.vocabSize}.bin beside the checkpoint`);
        const { pieces, scores } = readLlama2cTokenizer(tokFile, lay.config.vocabSize);
        const { SpmTokenizer } = await import('../tokenizer/spm.js');
        return SpmTokenizer.fromLlama2c(pieces, scores);
      },
      loadWeights(): ModelWeights {
        return readWeights(file, lay, plan);
      },
    };
  } finally {
    fs.closeSync(fd);
  }
}

function readWeights(file: string, lay: Llama2cLayout, plan: { name: string; shape: number[] }[]): ModelWeights {
  const fd = fs.openSync(file, 'r');
  const byName = new Map<string, Float32Array>();
  try {
    let off = lay.headerBytes;
    for (const t of plan) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (!t.name.startsWith('freq_cis')) {
        const arr = new Float32Array(n);
        fs.readSync(fd, new Uint8Array(arr.buffer), 0, n * 4, off);
        // Before the Q/K row reordering, so the index is the file's.
        assertFinite(file, t.name, arr.length === t.shape[0] ? arr : { dtype: 'f32', rows: t.shape[0], cols: t.shape[1], data: arr });
        byName.set(t.name, arr);
      }
      off += n * 4;
    }
  } finally {
    fs.closeSync(fd);
  }
  const c = lay.config;
  const get = (name: string) => byName.get(name)!;
  const mat = (data: Float32Array, rows: number, cols: number): F32Weight => ({ dtype: 'f32', rows, cols, data });
  const D = c.hiddenSize, F = c.intermediateSize, kv = c.numKvHeads * c.headDim;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `layers.${l}.`;
    layers.push({
      attnNorm: get(p + 'attention_norm'),
      wq: mat(interleavedToHalfRows(get(p + 'wq'), c.numHeads, c.headDim, D), D, D),
      wk: mat(interleavedToHalfRows(get(p + 'wk'), c.numKvHeads, c.headDim, D), kv, D),
      wv: mat(get(p + 'wv'), kv, D),
      wo: mat(get(p + 'wo'), D, D),
      ffnNorm: get(p + 'ffn_norm'),
      wGate: mat(get(p + 'w1'), F, D),
      wDown: mat(get(p + 'w2'), D, F),
      wUp: mat(get(p + 'w3'), F, D),
    });
  }
  const emb = mat(get('tok_embeddings'), c.vocabSize, D);
  return {
    tokenEmbedding: emb,
    layers,
    finalNorm: get('norm'),
    lmHead: lay.sharedClassifier ? emb : mat(get('output'), c.vocabSize, D),
  };
}
