/**
 * Every block-quantized GGUF type, on blocks written by llama.cpp's own quantizer (test/fixtures/quant, made by
 * tools/reference/make_quant_blocks.py): cokv's dequantizer against gguf-py's, the dot helper, each backend's
 * matmul (GEMV and GEMM) against the dequantized product, whole-model loading and prefill, and the one-line refusal
 * of the types cokv does not read.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Backend } from '../src/backend/types.js';
import { NativeBackend, loadNativeAddon } from '../src/backend/native.js';
import { completeConfig, type ModelConfig } from '../src/model/config.js';
import { gv, writeGguf, type GgufMetaValue, type GgufRawTensorInput } from '../src/model/loaders/gguf-writer.js';
import { openGguf, readGgufHeader } from '../src/model/loaders/gguf.js';
import { BLOCK, GGML_TYPE, dequantRow, dequantize, dotRow, isBlockType, quantRowBytes } from '../src/model/quant.js';
import type { QuantWeight, Weight } from '../src/model/weights.js';
import { loadModel } from '../src/engine.js';
import { Rng } from '../src/generate/rng.js';
import { expectCokvError, repoRoot, tmpDir, availableBackends, spmTokenizerMeta, maxRelDiff, exactBackend } from './helpers.js';

interface Entry {
  dtype: QuantWeight['dtype'];
  ggmlType: number;
  tensor: string;
  rows: number;
  cols: number;
  rowBytes: number;
  raw: string;
  values: string;
}

const dir = path.join(repoRoot, 'test/fixtures/quant');
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { entries: Entry[] };
const NEW_TYPES = ['q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q5_k', 'iq4_nl', 'iq4_xs'] as const;

/** A fixture tensor: llama.cpp's raw rows and gguf-py's float32 dequantization of them. */
function load(e: Entry): { w: QuantWeight; values: Float32Array } {
  const raw = new Uint8Array(fs.readFileSync(path.join(dir, e.raw)));
  const v = fs.readFileSync(path.join(dir, e.values));
  const values = new Float32Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  expect(raw.length).toBe(e.rows * e.rowBytes);
  expect(values.length).toBe(e.rows * e.cols);
  return { w: { dtype: e.dtype, rows: e.rows, cols: e.cols, data: raw }, values };
}

/** `n` rows cycled from the fixture (rows of whole blocks, so still llama.cpp's blocks), with their values. */
function tall(e: Entry, n: number): { w: QuantWeight; values: Float32Array } {
  const f = load(e);
  const data = new Uint8Array(n * e.rowBytes);
  const values = new Float32Array(n * e.cols);
  for (let r = 0; r < n; r++) {
    const s = (r * 7 + (r >> 4)) % e.rows;
    data.set(f.w.data.subarray(s * e.rowBytes, (s + 1) * e.rowBytes), r * e.rowBytes);
    values.set(f.values.subarray(s * e.cols, (s + 1) * e.cols), r * e.cols);
  }
  return { w: { dtype: e.dtype, rows: n, cols: e.cols, data }, values };
}

function randArray(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
}

/**
 * Largest |got - want| over outputs, relative to Σ_k |w_k·x_k| of that output (the scale an f32 sum's rounding
 * error is proportional to), with `want` computed in float64 from gguf-py's values.
 */
function relToAbsSum(got: Float32Array, x: Float32Array, m: number, values: Float32Array, n: number, k: number): number {
  let worst = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, a = 0;
      for (let t = 0; t < k; t++) {
        const p = values[j * k + t] * x[i * k + t];
        s += p;
        a += Math.abs(p);
      }
      worst = Math.max(worst, Math.abs(got[i * n + j] - s) / a);
    }
  }
  return worst;
}

const BACKENDS = availableBackends();
const addon = loadNativeAddon();

describe('fixture set', () => {
  it('covers every block type cokv reads, with rows of whole super-blocks and of non-256 lengths', () => {
    const types = new Set(manifest.entries.map((e) => e.dtype));
    expect([...types].sort()).toEqual(Object.keys(BLOCK).filter((t) => t !== 'f16').sort());
    for (const t of NEW_TYPES) expect(manifest.entries.some((e) => e.dtype === t && e.cols === 512), t).toBe(true);
    for (const t of ['q4_1', 'q5_0', 'q5_1', 'iq4_nl'] as const) {
      expect(manifest.entries.some((e) => e.dtype === t && e.cols === 800), t).toBe(true);
    }
    for (const e of manifest.entries) {
      expect(GGML_TYPE[e.dtype.toUpperCase() as keyof typeof GGML_TYPE], e.dtype).toBe(e.ggmlType);
      expect(quantRowBytes(e.dtype, e.cols), e.dtype).toBe(e.rowBytes);
    }
  });

  it('isBlockType: every raw-block type (F16 included), not F32 or BF16', () => {
    for (const t of Object.keys(BLOCK) as QuantWeight['dtype'][]) expect(isBlockType(t), t).toBe(true);
    expect(isBlockType('f32')).toBe(false);
    expect(isBlockType('bf16')).toBe(false);
  });
});

describe.each(manifest.entries.map((e) => [`${e.dtype} k=${e.cols}`, e] as const))('%s', (_name, e) => {
  it("dequantRow is bit-identical to gguf-py's dequantize", () => {
    const { w, values } = load(e);
    const got = new Float32Array(e.rows * e.cols).fill(NaN);
    for (let r = 0; r < e.rows; r++) dequantRow(e.dtype, w.data, r * e.rowBytes, e.cols, got, r * e.cols);
    const gb = new Uint32Array(got.buffer), wb = new Uint32Array(values.buffer);
    let diff = 0;
    for (let i = 0; i < gb.length; i++) if (gb[i] !== wb[i]) diff++;
    expect(diff, 'elements whose f32 bits differ').toBe(0);
    expect(new Uint32Array(dequantize(w).buffer)).toEqual(wb);
  });

  it('dotRow equals the dequantized dot product', () => {
    const { w, values } = load(e);
    const rng = new Rng(e.cols + e.ggmlType);
    const x = randArray(rng, e.cols + 5);
    for (let r = 0; r < e.rows; r++) {
      let s = 0, a = 0;
      for (let k = 0; k < e.cols; k++) {
        s += values[r * e.cols + k] * x[5 + k];
        a += Math.abs(values[r * e.cols + k] * x[5 + k]);
      }
      const got = dotRow(e.dtype, w.data, r * e.rowBytes, x, 5, e.cols);
      expect(Math.abs(got - s) / a, `row ${r}`).toBeLessThanOrEqual(1e-12);
    }
  });

  for (const kind of BACKENDS) {
    it(`${kind}: matmul against one-hot x returns the dequantized values exactly (GEMV and GEMM)`, () => {
      const be = exactBackend(kind);
      const { w, values } = tall(e, 40);
      const K = e.cols, N = w.rows;
      // GEMM: x = identity, so out[m][n] = W[n][m] with every other product an exact zero.
      const eye = new Float32Array(K * K);
      for (let i = 0; i < K; i++) eye[i * K + i] = 1;
      const out = new Float32Array(K * N).fill(NaN);
      be.matmul(out, eye, K, w);
      let bad = 0;
      for (let m = 0; m < K; m++) for (let n = 0; n < N; n++) if (out[m * N + n] !== values[n * K + m]) bad++;
      expect(bad, 'GEMM outputs differing from gguf-py').toBe(0);
      // GEMV: one-hot rows, one at a time (=== because a sum of zeros may turn -0 into +0).
      const one = new Float32Array(N);
      for (const col of [0, 31, 32, K >> 1, K - 1]) {
        be.matmul(one, eye.subarray(col * K, (col + 1) * K), 1, w);
        for (let n = 0; n < N; n++) if (one[n] !== values[n * K + col]) bad++;
      }
      expect(bad, 'GEMV outputs differing from gguf-py').toBe(0);
    });

    it(`${kind}: matmul equals the dequantized float64 product (GEMV 1 row, GEMM 7 rows)`, () => {
      const be = exactBackend(kind);
      // 304 rows so the native GEMM spans several column tiles and threads.
      const { w, values } = tall(e, 304);
      const rng = new Rng(e.ggmlType * 1000 + e.cols);
      for (const m of [1, 7]) {
        const x = randArray(rng, m * e.cols);
        const out = new Float32Array(m * w.rows).fill(NaN);
        be.matmul(out, x, m, w);
        expect(relToAbsSum(out, x, m, values, w.rows, e.cols), `rows=${m}`).toBeLessThanOrEqual(1e-6);
      }
    });
  }

  it.skipIf(!addon)('native scalar fallback (no AVX2): same values', () => {
    const { w, values } = tall(e, 40);
    addon!.setSimd(0);
    try {
      const be = new NativeBackend(addon!, { int8Activations: false });
      const rng = new Rng(9);
      for (const m of [1, 6]) {
        const x = randArray(rng, m * e.cols);
        const out = new Float32Array(m * w.rows).fill(NaN);
        be.matmul(out, x, m, w);
        expect(relToAbsSum(out, x, m, values, w.rows, e.cols), `rows=${m}`).toBeLessThanOrEqual(1e-6);
      }
    } finally {
      addon!.setSimd(1);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Whole GGUF models whose every matrix is one type (rows taken from the llama.cpp blocks), against the same model
// stored as F32 with gguf-py's values.
// ---------------------------------------------------------------------------------------------------------------

const tmp = tmpDir('cokv-quant-types-');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cfg: ModelConfig = completeConfig({
  architecture: 'llama', hiddenSize: 256, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 64, intermediateSize: 512,
  vocabSize: 24, contextLength: 64, ropeTheta: 10000, rmsNormEps: 1e-5, tiedEmbeddings: false, attentionBias: false,
});


function modelMetadata(c: ModelConfig): Record<string, GgufMetaValue> {
  return {
    'general.architecture': gv.str('llama'),
    'llama.context_length': gv.u32(c.contextLength),
    'llama.embedding_length': gv.u32(c.hiddenSize),
    'llama.block_count': gv.u32(c.numLayers),
    'llama.feed_forward_length': gv.u32(c.intermediateSize),
    'llama.rope.dimension_count': gv.u32(c.headDim),
    'llama.attention.head_count': gv.u32(c.numHeads),
    'llama.attention.head_count_kv': gv.u32(c.numKvHeads),
    'llama.attention.layer_norm_rms_epsilon': gv.f32(c.rmsNormEps),
    'llama.rope.freq_base': gv.f32(c.ropeTheta),
    'llama.vocab_size': gv.u32(c.vocabSize),
    ...spmTokenizerMeta(c.vocabSize),
  };
}

/**
 * Write `<dtype>.gguf` (matrices as raw blocks cut from the 512-column fixture: whole rows for 512 columns, half
 * rows — one 256-element super-block or eight 32-blocks — for 256) and `<dtype>-f32.gguf` (the same values as F32).
 * Returns the file paths and the F32 values of blk.0.ffn_down.weight.
 */
function writeModels(e: Entry): { quant: string; f32: string; down: Float32Array } {
  const f = load(e);
  const quant: GgufRawTensorInput[] = [];
  const f32: GgufRawTensorInput[] = [];
  let down = new Float32Array(0);
  const ones = (n: number) => new Uint8Array(Float32Array.from({ length: n }, () => 1).buffer);
  const vec = (name: string, n: number) => {
    quant.push({ name, dims: [n], ggmlType: GGML_TYPE.F32, raw: ones(n) });
    f32.push({ name, dims: [n], ggmlType: GGML_TYPE.F32, raw: ones(n) });
  };
  const mat = (name: string, rows: number, cols: number, salt: number) => {
    const parts = e.cols / cols;
    const rb = e.rowBytes / parts;
    const data = new Uint8Array(rows * rb);
    const values = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      const i = (r * 5 + salt) % (e.rows * parts);
      const src = Math.floor(i / parts), part = i % parts;
      data.set(f.w.data.subarray(src * e.rowBytes + part * rb, src * e.rowBytes + (part + 1) * rb), r * rb);
      values.set(f.values.subarray(src * e.cols + part * cols, src * e.cols + (part + 1) * cols), r * cols);
    }
    quant.push({ name, dims: [cols, rows], ggmlType: e.ggmlType, raw: data });
    f32.push({ name, dims: [cols, rows], ggmlType: GGML_TYPE.F32, raw: new Uint8Array(values.buffer) });
    if (name === 'blk.0.ffn_down.weight') down = values;
  };
  const c = cfg, h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  mat('token_embd.weight', c.vocabSize, h, 0);
  vec('blk.0.attn_norm.weight', h);
  mat('blk.0.attn_q.weight', q, h, 1);
  mat('blk.0.attn_k.weight', kv, h, 2);
  mat('blk.0.attn_v.weight', kv, h, 3);
  mat('blk.0.attn_output.weight', h, q, 4);
  vec('blk.0.ffn_norm.weight', h);
  mat('blk.0.ffn_gate.weight', c.intermediateSize, h, 5);
  mat('blk.0.ffn_up.weight', c.intermediateSize, h, 6);
  mat('blk.0.ffn_down.weight', h, c.intermediateSize, 7);
  vec('output_norm.weight', h);
  mat('output.weight', c.vocabSize, h, 8);
  const files = { quant: path.join(tmp, `${e.dtype}.gguf`), f32: path.join(tmp, `${e.dtype}-f32.gguf`) };
  writeGguf(files.quant, { metadata: modelMetadata(c), tensors: quant });
  writeGguf(files.f32, { metadata: modelMetadata(c), tensors: f32 });
  return { ...files, down };
}


describe('whole models stored in each block type', () => {
  const entries = manifest.entries.filter((e) => e.cols === 512);
  it.each(entries.map((e) => [e.dtype, e] as const))('%s: loads as raw blocks and prefills like its F32 twin', async (_n, e) => {
    const files = writeModels(e);
    const h = readGgufHeader(files.quant);
    expect(h.tensors.find((t) => t.name === 'blk.0.ffn_down.weight')?.dtype).toBe(e.dtype);
    const src = openGguf(files.quant);
    const weights = src.loadWeights();
    for (const wt of [weights.layers[0].wq, weights.layers[0].wDown, weights.tokenEmbedding, weights.lmHead] as Weight[]) {
      expect(wt.dtype).toBe(e.dtype);
    }
    expect(new Uint32Array(dequantize(weights.layers[0].wDown as QuantWeight).buffer))
      .toEqual(new Uint32Array(files.down.buffer));
    const short = [1, 5], long = [1, 7, 3, 11, 4, 9, 20, 2];
    for (const kind of BACKENDS) {
      const backend: Backend = exactBackend(kind);
      const mq = await loadModel(files.quant, { backend });
      const mf = await loadModel(files.f32, { backend });
      for (const ids of [short, long]) {
        const lq = mq.prefill(ids, mq.newCache());
        const lf = mf.prefill(ids, mf.newCache());
        expect(lq.every(Number.isFinite)).toBe(true);
        // Same weights, same kernels modulo f32 summation order: the logits agree to f32 rounding.
        expect(maxRelDiff(lq, lf), `${kind} ${ids.length} tokens`).toBeLessThanOrEqual(1e-5);
      }
    }
  });
});

describe('types cokv does not read', () => {
  it.each([
    ['IQ2_XXS', GGML_TYPE.IQ2_XXS, 256, 66],
    ['TQ1_0', GGML_TYPE.TQ1_0, 256, 54],
    ['Q8_1', GGML_TYPE.Q8_1, 32, 36],
  ] as const)('%s is refused in one line naming the tensor and the type', (name, id, cols, bytes) => {
    const f = path.join(tmp, `refused-${name}.gguf`);
    writeGguf(f, {
      metadata: modelMetadata(cfg),
      tensors: [{ name: 'blk.0.ffn_up.weight', dims: [cols, 2], ggmlType: id, raw: new Uint8Array(2 * bytes) }],
    });
    const err = expectCokvError(() => openGguf(f), `tensor blk.0.ffn_up.weight has ggml type ${name} (${id}), which cokv does not support`);
    expect(err.message.startsWith(f)).toBe(true);
    // The message lists every type that is read.
    for (const t of ['F32', 'BF16', ...Object.keys(BLOCK).map((k) => k.toUpperCase())]) {
      expect(err.message).toMatch(new RegExp(`supported: [^)]*\\b${t}\\b`));
    }
  });
});
