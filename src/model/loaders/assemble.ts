/**
 * Format-independent weight assembly: the expected tensor names and shapes of a config under an architecture's
 * tensor map, and the ModelWeights built from a format's tensor readers (fused projections split by rows, Gemma's
 * HF norm offset added, llama-type GGUF Q/K rows un-permuted by the reader). Every tensor read is checked for
 * NaN/Inf here, so no format's loader can skip it.
 */
import { layerTensorName, type ArchModule, type LayerTensor } from '../arch/index.js';
import type { ModelConfig } from '../config.js';
import { quantRowBytes } from '../quant.js';
import { assertFinite } from './finite.js';
import type { LayerWeights, ModelWeights, Weight } from '../weights.js';

/** Our [rows, cols] (or [n]) shape of a layer tensor role. */
export function roleShape(c: ModelConfig, role: LayerTensor): number[] {
  const H = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, ff = c.intermediateSize;
  switch (role) {
    case 'attnNorm': case 'ffnNorm': case 'postAttnNorm': case 'postFfnNorm': return [H];
    case 'qNorm': case 'kNorm': return [c.headDim];
    case 'wq': return [q, H];
    case 'wk': case 'wv': return [kv, H];
    case 'wqkv': return [q + 2 * kv, H];
    case 'wo': return [H, q];
    case 'bq': return [q];
    case 'bk': case 'bv': return [kv];
    case 'wGate': case 'wUp': return [ff, H];
    case 'wGateUp': return [2 * ff, H];
    case 'wDown': return [H, ff];
  }
}

const VECTOR_ROLES = new Set<LayerTensor>(['attnNorm', 'ffnNorm', 'postAttnNorm', 'postFfnNorm', 'qNorm', 'kNorm', 'bq', 'bk', 'bv']);
const NORM_ROLES = new Set<LayerTensor>(['attnNorm', 'ffnNorm', 'postAttnNorm', 'postFfnNorm', 'qNorm', 'kNorm']);

/** Every tensor the config needs in `format`, name → shape (lm_head only when untied). */
export function expectedTensors(c: ModelConfig, arch: ArchModule, format: 'hf' | 'gguf'): Map<string, number[]> {
  const names = format === 'hf' ? arch.hfTensors : arch.ggufTensors;
  const m = new Map<string, number[]>();
  m.set(names.global.tokenEmbedding, [c.vocabSize, c.hiddenSize]);
  const roles = arch.layerTensors(c, format);
  for (let l = 0; l < c.numLayers; l++) for (const r of roles) m.set(layerTensorName(names, r, l), roleShape(c, r));
  m.set(names.global.finalNorm, [c.hiddenSize]);
  if (!c.tiedEmbeddings) m.set(names.global.lmHead, [c.vocabSize, c.hiddenSize]);
  return m;
}

/** Rows [from, from + n) of a weight as a weight of its own (copies; block types slice whole rows of bytes). */
export function sliceRows(w: Weight, from: number, n: number): Weight {
  if (w.dtype === 'f32') return { dtype: 'f32', rows: n, cols: w.cols, data: w.data.slice(from * w.cols, (from + n) * w.cols) };
  const rb = quantRowBytes(w.dtype, w.cols);
  return { dtype: w.dtype, rows: n, cols: w.cols, data: w.data.slice(from * rb, (from + n) * rb) };
}

/** A format's readers: a vector (always F32) and a matrix (kept in its storage type) by tensor name. */
export interface TensorReaders {
  vec(name: string, role?: LayerTensor | 'finalNorm', permuteHeads?: number): Float32Array;
  mat(name: string, role?: LayerTensor | 'tokenEmbedding' | 'lmHead', permuteHeads?: number): Weight;
}

/**
 * `io` with every tensor checked for NaN/Inf (naming `file`); element indices are reported in the file's order,
 * so rows the reader un-permuted (`permuteHeads` > 0, head size `headDim`) are mapped back.
 */
export function finiteReaders(io: TensorReaders, file: string, headDim: number): TensorReaders {
  const half = headDim / 2;
  const fileOrder = (heads: number, cols: number) => (i: number): number => {
    if (heads <= 0) return i;
    const row = Math.floor(i / cols), h = Math.floor(row / headDim), d = row % headDim;
    return (h * headDim + 2 * (d % half) + Math.floor(d / half)) * cols + (i % cols);
  };
  return {
    vec(name, role, permuteHeads = 0) {
      const a = io.vec(name, role, permuteHeads);
      assertFinite(file, name, a, fileOrder(permuteHeads, 1));
      return a;
    },
    mat(name, role, permuteHeads = 0) {
      const w = io.mat(name, role, permuteHeads);
      assertFinite(file, name, w, fileOrder(permuteHeads, w.cols));
      return w;
    },
  };
}

/**
 * Build ModelWeights for `c` from the readers, following the architecture's tensor map for `format`; `file` is
 * named when a tensor holds NaN/Inf.
 */
export function assembleWeights(c: ModelConfig, arch: ArchModule, format: 'hf' | 'gguf', reader: TensorReaders, file: string): ModelWeights {
  const io = finiteReaders(reader, file, c.headDim);
  const names = format === 'hf' ? arch.hfTensors : arch.ggufTensors;
  const normOffset = format === 'hf' ? arch.hfNormOffset : 0;
  const permute = format === 'gguf' && arch.ggufPermuteQK;
  const norm = (a: Float32Array): Float32Array => {
    if (normOffset !== 0) for (let i = 0; i < a.length; i++) a[i] = Math.fround(a[i] + normOffset);
    return a;
  };
  const roles = new Set(arch.layerTensors(c, format));
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const n = (r: LayerTensor): string => layerTensorName(names, r, l);
    const heads = (r: LayerTensor): number => (!permute ? 0 : r === 'wq' || r === 'bq' ? c.numHeads : r === 'wk' || r === 'bk' ? c.numKvHeads : 0);
    const vec = (r: LayerTensor): Float32Array => {
      const a = io.vec(n(r), r, heads(r));
      return NORM_ROLES.has(r) ? norm(a) : a;
    };
    const mat = (r: LayerTensor): Weight => io.mat(n(r), r, heads(r));
    let wq: Weight, wk: Weight, wv: Weight, wGate: Weight, wUp: Weight;
    if (roles.has('wqkv')) {
      const qkv = mat('wqkv');
      wq = sliceRows(qkv, 0, q);
      wk = sliceRows(qkv, q, kv);
      wv = sliceRows(qkv, q + kv, kv);
    } else {
      wq = mat('wq'); wk = mat('wk'); wv = mat('wv');
    }
    if (roles.has('wGateUp')) {
      const gu = mat('wGateUp');
      wGate = sliceRows(gu, 0, c.intermediateSize);
      wUp = sliceRows(gu, c.intermediateSize, c.intermediateSize);
    } else {
      wGate = mat('wGate'); wUp = mat('wUp');
    }
    const layer: LayerWeights = { attnNorm: vec('attnNorm'), wq, wk, wv, wo: mat('wo'), ffnNorm: vec('ffnNorm'), wGate, wUp, wDown: mat('wDown') };
    for (const r of ['bq', 'bk', 'bv', 'qNorm', 'kNorm', 'postAttnNorm', 'postFfnNorm'] as const) {
      if (roles.has(r) && VECTOR_ROLES.has(r)) layer[r] = vec(r);
    }
    layers.push(layer);
  }
  const tokenEmbedding = io.mat(names.global.tokenEmbedding, 'tokenEmbedding');
  const finalNorm = norm(io.vec(names.global.finalNorm, 'finalNorm'));
  const lmHead = c.tiedEmbeddings ? tokenEmbedding : io.mat(names.global.lmHead, 'lmHead');
  return { tokenEmbedding, layers, finalNorm, lmHead };
}
