import { Rng } from '../src/generate/rng.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { afterAll, describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { completeConfig, type BaseConfig, type ModelConfig } from '../src/model/config.js';
import { gv, writeGguf, writeLlamaGguf, type GgufMetaValue } from '../src/model/loaders/gguf-writer.js';
import { openGguf, readGgufHeader } from '../src/model/loaders/gguf.js';
import { dequantize, GGML_TYPE } from '../src/model/quant.js';
import type { Weight } from '../src/model/weights.js';
import { expectCokvError, spmTokenizerMeta } from './helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tinyDir = path.resolve(repoRoot, '../shared/assets/models/cokv-retrieval-tiny');
const tinyF32 = path.join(tinyDir, 'cokv-retrieval-tiny-f32.gguf');
const tinyQ8 = path.join(tinyDir, 'cokv-retrieval-tiny-q8_0.gguf');
const haveTiny = fs.existsSync(tinyF32) && fs.existsSync(tinyQ8) && fs.existsSync(path.join(tinyDir, 'tokenizer.json'));
if (!haveTiny) console.warn(`skipping cokv-retrieval-tiny GGUF tests: assets not found under ${tinyDir}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-gguf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (name = 'm'): string => path.join(tmp, `${name}-${fileNo++}.gguf`);

/** Seeded uniform [0, 1) stream (the project's mulberry32 generator). */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** Max |a - b| (fast; avoids per-element expects on big arrays). */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function toF32(w: Weight): Float32Array {
  return w.dtype === 'f32' ? w.data : dequantize(w);
}

/** Read one F32 tensor from a safetensors file (test-only, tiny files). */
function safetensor(file: string, name: string): Float32Array {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const t = header[name];
  const [a, b] = t.data_offsets;
  return new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n + a, buf.byteOffset + 8 + n + b));
}

const smallConfig = (over: Partial<BaseConfig> = {}): ModelConfig => completeConfig({
  architecture: 'llama', hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96,
  vocabSize: 40, contextLength: 256, ropeTheta: 10000, rmsNormEps: 1e-5, tiedEmbeddings: false, attentionBias: false,
  ...over,
});

/** Random HF-named weights for a config. */
export function randomHfWeights(c: ModelConfig, seed = 1): Record<string, Float32Array> {
  const r = rng(seed);
  const w: Record<string, Float32Array> = {};
  const t = (name: string, n: number): void => {
    w[name] = Float32Array.from({ length: n }, () => (r() - 0.5) * 0.2);
  };
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  t('model.embed_tokens.weight', c.vocabSize * c.hiddenSize);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    t(`${p}input_layernorm.weight`, c.hiddenSize);
    t(`${p}self_attn.q_proj.weight`, q * c.hiddenSize);
    t(`${p}self_attn.k_proj.weight`, kv * c.hiddenSize);
    t(`${p}self_attn.v_proj.weight`, kv * c.hiddenSize);
    t(`${p}self_attn.o_proj.weight`, c.hiddenSize * q);
    if (c.attentionBias) {
      t(`${p}self_attn.q_proj.bias`, q);
      t(`${p}self_attn.k_proj.bias`, kv);
      t(`${p}self_attn.v_proj.bias`, kv);
    }
    t(`${p}post_attention_layernorm.weight`, c.hiddenSize);
    t(`${p}mlp.gate_proj.weight`, c.intermediateSize * c.hiddenSize);
    t(`${p}mlp.up_proj.weight`, c.intermediateSize * c.hiddenSize);
    t(`${p}mlp.down_proj.weight`, c.hiddenSize * c.intermediateSize);
  }
  t('model.norm.weight', c.hiddenSize);
  if (!c.tiedEmbeddings) t('lm_head.weight', c.vocabSize * c.hiddenSize);
  return w;
}

/** The small SPM vocabulary plus a chat template. */
function byteTokenizerMeta(n: number): Record<string, GgufMetaValue> {
  return { ...spmTokenizerMeta(n), 'tokenizer.chat_template': gv.str('{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}') };
}

function writeSmall(file: string, c: ModelConfig, dtype: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0', seed = 1): Record<string, Float32Array> {
  const weights = randomHfWeights(c, seed);
  writeLlamaGguf(file, { config: c, weights, tokenizer: byteTokenizerMeta(c.vocabSize), dtype });
  return weights;
}

/** A one-line CokvError whose message starts with the file path (and matches `pattern`). */
function expectCokv(fn: () => unknown, file: string, pattern?: RegExp): CokvError {
  const err = expectCokvError(fn, ...(pattern ? [pattern] : []));
  expect(err.message.startsWith(file)).toBe(true);
  return err;
}

describe.skipIf(!haveTiny)('cokv-retrieval-tiny GGUFs', () => {
  it('give the expected config', () => {
    for (const f of [tinyF32, tinyQ8]) {
      const src = openGguf(f);
      expect(src.format).toBe('gguf');
      const c = src.config;
      expect(c.architecture).toBe('llama');
      expect([c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.hiddenSize, c.vocabSize]).toEqual([4, 8, 4, 32, 128, 2048]);
      expect(c.ropeTheta).toBe(1e5);
      expect(c.intermediateSize).toBe(384);
      expect(c.tiedEmbeddings).toBe(true);
      expect(c.attentionBias).toBe(false);
      expect(src.bosToken).toBe('<s>');
      expect(src.eosToken).toBe('</s>');
      expect(src.generation?.eosIds).toEqual([1]);
      expect(src.tensors.find((t) => t.name === 'blk.0.attn_q.weight')?.shape).toEqual([256, 128]);
    }
    const h = readGgufHeader(tinyQ8);
    expect(h.version).toBe(3);
    expect(h.alignment).toBe(32);
    expect(h.metadata.get('tokenizer.ggml.pre')).toBe('smollm');
    expect(h.tensors.find((t) => t.name === 'token_embd.weight')?.ggmlType).toBe(GGML_TYPE.Q8_0);
  });

  it('F32 weights equal model.safetensors after undoing the Q/K permutation', () => {
    const st = path.join(tinyDir, 'model.safetensors');
    if (!fs.existsSync(st)) return;
    const w = openGguf(tinyF32).loadWeights();
    for (const l of [0, 3]) {
      expect(maxDiff(toF32(w.layers[l].wq), safetensor(st, `model.layers.${l}.self_attn.q_proj.weight`))).toBe(0);
      expect(maxDiff(toF32(w.layers[l].wk), safetensor(st, `model.layers.${l}.self_attn.k_proj.weight`))).toBe(0);
      expect(maxDiff(toF32(w.layers[l].wv), safetensor(st, `model.layers.${l}.self_attn.v_proj.weight`))).toBe(0);
      expect(maxDiff(toF32(w.layers[l].wDown), safetensor(st, `model.layers.${l}.mlp.down_proj.weight`))).toBe(0);
    }
    expect(maxDiff(toF32(w.tokenEmbedding), safetensor(st, 'model.embed_tokens.weight'))).toBe(0);
    expect(w.finalNorm).toEqual(safetensor(st, 'model.norm.weight'));
    expect(w.lmHead).toBe(w.tokenEmbedding);
  });

  it('F32 and Q8_0 weights agree within Q8_0 error', () => {
    const a = openGguf(tinyF32).loadWeights();
    const b = openGguf(tinyQ8).loadWeights();
    expect(b.layers[0].wq.dtype).toBe('q8_0');
    const pairs: [Weight, Weight][] = [[a.tokenEmbedding, b.tokenEmbedding]];
    for (let l = 0; l < 4; l++) {
      const x = a.layers[l];
      const y = b.layers[l];
      pairs.push([x.wq, y.wq], [x.wk, y.wk], [x.wv, y.wv], [x.wo, y.wo], [x.wGate, y.wGate], [x.wUp, y.wUp], [x.wDown, y.wDown]);
      expect(y.attnNorm).toEqual(x.attnNorm);
    }
    for (const [f, q] of pairs) {
      expect([q.rows, q.cols]).toEqual([f.rows, f.cols]);
      const fa = toF32(f);
      const qa = toF32(q);
      let bad = 0;
      for (let blk = 0; blk < fa.length / 32; blk++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(fa[blk * 32 + j]));
        const tol = (amax / 127) * 0.5 * 1.01 + amax * 1e-3; // half a step (+ f16 rounding of the scale)
        for (let j = 0; j < 32; j++) if (Math.abs(qa[blk * 32 + j] - fa[blk * 32 + j]) > tol) bad++;
      }
      expect(bad).toBe(0);
      expect(maxDiff(qa, fa)).toBeGreaterThan(0);
    }
  });

  it('tokenizer (gpt2 / smollm) matches tokenizer.json exactly', async () => {
    const tok = await openGguf(tinyQ8).loadTokenizer();
    const hf = new HfTokenizer(
      JSON.parse(fs.readFileSync(path.join(tinyDir, 'tokenizer.json'), 'utf8')) as object,
      JSON.parse(fs.readFileSync(path.join(tinyDir, 'tokenizer_config.json'), 'utf8')) as object,
    );
    const texts = [
      'The pass key is 58213. Remember it. 58213 is the pass key.',
      "Hello,   world?? It's 3:45pm -- don't PANIC!!\n\nNew paragraph\twith tab\r\nand CRLF.   ",
      'café naïve Zürich 你好，世界 Привет мир 😀👍🏽 — “quotes” … ½ ₂',
      'x = [1, 22, 333, 4444]; y = {"a": 1.5e-10}\n    indented code();\n',
      '  leading spaces and trailing\n\n\n',
      'What is the REGISTER_CONTENT in line shiny-bush-7? The REGISTER_CONTENT is',
    ];
    for (const text of texts) {
      const ours = tok.encode(text, { addSpecial: false });
      const ref = hf.encode(text, { add_special_tokens: false }).ids;
      expect(ours).toEqual(ref);
      expect(tok.decode(ours)).toBe(text);
    }
    expect(tok.bosId).toBe(0);
    expect(tok.eosIds).toEqual([1]);
    expect(tok.addBosDefault).toBe(true);
    const withBos = tok.encode('The pass key is');
    expect(withBos[0]).toBe(0);
    expect(tok.decode(withBos)).toBe('The pass key is');
    expect(tok.decode(withBos, { skipSpecial: false })).toBe('<s>The pass key is');
    // special tokens in text are matched whole (as transformers does)
    expect(tok.encode('<s>hi</s>', { addSpecial: false })).toEqual(hf.encode('<s>hi</s>', { add_special_tokens: false }).ids);
    // the reference prompt's ids
    const ref0 = JSON.parse(fs.readFileSync(path.join(tinyDir, 'reference/prompt0.json'), 'utf8')) as { prompt: string; input_ids: number[] };
    expect(tok.encode(ref0.prompt)).toEqual(ref0.input_ids);
    expect(tok.encode('')).toEqual([0]);
    expect(tok.decode([])).toBe('');
  });
});

describe('GGUF writer and reader', () => {
  it('round-trip every metadata type', () => {
    const f = tmpFile('meta');
    const big = 2n ** 60n + 3n;
    writeGguf(f, {
      metadata: {
        'general.architecture': gv.str('llama'),
        u8: gv.u8(250), i8: gv.i8(-100), u16: gv.u16(65000), i16: gv.i16(-30000), u32: gv.u32(4e9), i32: gv.i32(-2e9),
        f32: gv.f32(1.5), f64: gv.f64(Math.PI), bool: gv.bool(true), boolf: gv.bool(false), str: gv.str('héllo ▁ 😀'),
        u64small: gv.u64(12345), u64big: gv.u64(big), i64: gv.i64(-(2n ** 62n)),
        arrs: gv.arr('string', ['a', '', 'ccc']), arrf: gv.arr('f32', [0.5, -2]), arru8: gv.arr('u8', [1, 2, 3]),
        arrb: gv.arr('bool', [true, false]), empty: gv.arr('i32', []),
      },
      tensors: [{ name: 'x', shape: [2, 3], dtype: 'f32', data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
    });
    const h = readGgufHeader(f);
    const m = h.metadata;
    expect(h.version).toBe(3);
    expect([m.get('u8'), m.get('i8'), m.get('u16'), m.get('i16'), m.get('u32'), m.get('i32')]).toEqual([250, -100, 65000, -30000, 4e9, -2e9]);
    expect([m.get('f32'), m.get('f64'), m.get('bool'), m.get('boolf'), m.get('str')]).toEqual([1.5, Math.PI, true, false, 'héllo ▁ 😀']);
    expect(m.get('u64small')).toBe(12345);
    expect(m.get('u64big')).toBe(big);
    expect(m.get('i64')).toBe(-(2n ** 62n));
    expect(m.get('arrs')).toEqual(['a', '', 'ccc']);
    expect(m.get('arrf')).toEqual([0.5, -2]);
    expect(m.get('arru8')).toEqual([1, 2, 3]);
    expect(m.get('arrb')).toEqual([true, false]);
    expect(m.get('empty')).toEqual([]);
    expect(h.tensors).toEqual([{ name: 'x', dims: [3, 2], ggmlType: 0, dtype: 'f32', offset: 0, nbytes: 24 }]);
    expect(h.dataOffset % 32).toBe(0);
  });

  for (const dtype of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const) {
    it(`llama model in ${dtype}: loads back the HF weights (Q/K permutation undone)`, () => {
      const c = smallConfig();
      const f = tmpFile(dtype);
      const hfW = writeSmall(f, c, dtype);
      const src = openGguf(f);
      expect(src.config).toEqual({ ...c, rmsNormEps: Math.fround(1e-5) });
      expect(src.chatTemplate).toContain('bos_token');
      const w = src.loadWeights();
      const tol = { f32: 0, f16: 1e-4, bf16: 1e-3, q8_0: 1e-3, q4_0: 1.5e-2 }[dtype];
      const cmp = (got: Weight | Float32Array, name: string): void => {
        const a = got instanceof Float32Array ? got : toF32(got);
        const b = hfW[name];
        expect(a.length).toBe(b.length);
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
        expect(worst, name).toBeLessThanOrEqual(tol);
      };
      // F16 and block-quantized matrices stay as stored; BF16 widens to F32.
      const expectQuant = dtype === 'q8_0' || dtype === 'q4_0' || dtype === 'f16' ? dtype : 'f32';
      expect(w.layers[0].wq.dtype).toBe(expectQuant);
      for (let l = 0; l < c.numLayers; l++) {
        const p = `model.layers.${l}.`;
        cmp(w.layers[l].wq, `${p}self_attn.q_proj.weight`);
        cmp(w.layers[l].wk, `${p}self_attn.k_proj.weight`);
        cmp(w.layers[l].wv, `${p}self_attn.v_proj.weight`);
        cmp(w.layers[l].wo, `${p}self_attn.o_proj.weight`);
        cmp(w.layers[l].wGate, `${p}mlp.gate_proj.weight`);
        cmp(w.layers[l].wUp, `${p}mlp.up_proj.weight`);
        cmp(w.layers[l].wDown, `${p}mlp.down_proj.weight`);
        expect(w.layers[l].attnNorm).toEqual(hfW[`${p}input_layernorm.weight`]);
      }
      cmp(w.tokenEmbedding, 'model.embed_tokens.weight');
      cmp(w.lmHead, 'lm_head.weight');
      expect(w.lmHead).not.toBe(w.tokenEmbedding);
    });
  }

  it('the llama permutation really is applied in the file (rows interleaved per head)', () => {
    const c = smallConfig({ numLayers: 1 });
    const f = tmpFile('perm');
    const hfW = writeSmall(f, c, 'f32');
    const h = readGgufHeader(f);
    const t = h.tensors.find((x) => x.name === 'blk.0.attn_k.weight')!;
    const buf = fs.readFileSync(f);
    const raw = new Float32Array(buf.buffer.slice(buf.byteOffset + h.dataOffset + t.offset, buf.byteOffset + h.dataOffset + t.offset + t.nbytes));
    const hfK = hfW['model.layers.0.self_attn.k_proj.weight'];
    const D = c.headDim;
    const cols = c.hiddenSize;
    // GGUF row h*D + 2i + s holds HF row h*D + s*D/2 + i
    for (const [h2, i, s] of [[0, 0, 1], [1, 3, 0], [1, 7, 1]]) {
      const g = h2 * D + 2 * i + s;
      const hr = h2 * D + s * (D / 2) + i;
      expect(Array.from(raw.subarray(g * cols, (g + 1) * cols))).toEqual(Array.from(hfK.subarray(hr * cols, (hr + 1) * cols)));
    }
  });

  it('qwen2: biases, tied embeddings, no permutation', () => {
    const c = smallConfig({ architecture: 'qwen2', attentionBias: true, tiedEmbeddings: true, ropeTheta: 1e6 });
    const f = tmpFile('qwen');
    const hfW = writeSmall(f, c, 'q8_0');
    const src = openGguf(f);
    expect(src.config.architecture).toBe('qwen2');
    expect(src.config.attentionBias).toBe(true);
    expect(src.config.tiedEmbeddings).toBe(true);
    const w = src.loadWeights();
    expect(w.layers[1].bq).toEqual(hfW['model.layers.1.self_attn.q_proj.bias']);
    expect(w.layers[1].bk).toEqual(hfW['model.layers.1.self_attn.k_proj.bias']);
    expect(w.layers[1].bv).toEqual(hfW['model.layers.1.self_attn.v_proj.bias']);
    expect(w.lmHead).toBe(w.tokenEmbedding);
    const q = toF32(w.layers[1].wq);
    const ref = hfW['model.layers.1.self_attn.q_proj.weight'];
    for (let i = 0; i < q.length; i++) expect(Math.abs(q[i] - ref[i])).toBeLessThan(2e-3);
  });

  it('llama biases are un-permuted too; llama3 rope factors land in ropeFreqFactors; linear scaling', () => {
    const c = smallConfig({
      attentionBias: true,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    });
    const f = tmpFile('l3');
    const hfW = writeSmall(f, c, 'f32');
    // attentionBias is not a llama GGUF property (it is derived from the architecture), so only the data is checked
    const h = readGgufHeader(f);
    expect(h.tensors.some((t) => t.name === 'blk.0.attn_q.bias')).toBe(true);
    const src = openGguf(f);
    expect(src.config.ropeFreqFactors?.length).toBe(c.headDim / 2);
    expect(src.config.ropeFreqFactors?.[0]).toBe(1);
    expect(src.config.ropeFreqFactors?.[c.headDim / 2 - 1]).toBe(8);
    expect(hfW['model.layers.0.self_attn.q_proj.bias'].length).toBe(c.numHeads * c.headDim);

    const f2 = tmpFile('lin');
    writeSmall(f2, smallConfig({ ropeScaling: { type: 'linear', factor: 4 } }), 'f16');
    expect(openGguf(f2).config.ropeScaling).toEqual({ type: 'linear', factor: 4 });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------------------------

function patchU64(buf: Buffer, pos: number, v: bigint): void {
  buf.writeBigUInt64LE(v, pos);
}

/** Byte position of the value of metadata `key` (after its string and u32 type). */
function metaValuePos(buf: Buffer, key: string): number {
  const kb = Buffer.from(key);
  const at = buf.indexOf(kb);
  expect(at).toBeGreaterThan(0);
  return at + kb.length + 4;
}

/** Byte position of tensor `name`'s info (its string length field). */
function tensorInfoPos(buf: Buffer, name: string): number {
  const nb = Buffer.from(name);
  let at = -1;
  let from = 0;
  for (;;) {
    const i = buf.indexOf(nb, from);
    if (i < 0) break;
    if (buf.readBigUInt64LE(i - 8) === BigInt(nb.length)) at = i - 8;
    from = i + 1;
  }
  expect(at).toBeGreaterThan(0);
  return at;
}

describe('bad GGUF input gives one-line CokvErrors naming the file', () => {
  const good = tmpFile('good');
  writeSmall(good, smallConfig({ numLayers: 1 }), 'q8_0');
  const goodBytes = fs.readFileSync(good);
  const variant = (name: string, edit: (b: Buffer) => Buffer | void): string => {
    const b = Buffer.from(goodBytes);
    const out = edit(b) ?? b;
    const f = tmpFile(name);
    fs.writeFileSync(f, out);
    return f;
  };

  it('missing file', () => {
    const f = path.join(tmp, 'nope.gguf');
    expectCokv(() => openGguf(f), f, /cannot open: no such file/);
    expectCokv(() => readGgufHeader(f), f);
  });

  it('a directory', () => {
    expectCokv(() => openGguf(tmp), tmp);
  });

  it('truncated file (header and data)', () => {
    const f1 = variant('trunc-h', (b) => b.subarray(0, 300));
    expectCokv(() => openGguf(f1), f1, /truncated/);
    const f2 = variant('trunc-d', (b) => b.subarray(0, b.length - 100));
    expectCokv(() => openGguf(f2), f2, /past the end of the file/);
    const f3 = variant('trunc-0', (b) => b.subarray(0, 10));
    expectCokv(() => openGguf(f3), f3, /too small/);
  });

  it('wrong magic', () => {
    const f = variant('magic', (b) => void b.write('GGUX', 0));
    expectCokv(() => openGguf(f), f, /not a GGUF file/);
  });

  it('version 1 and 99', () => {
    const f1 = variant('v1', (b) => void b.writeUInt32LE(1, 4));
    expectCokv(() => openGguf(f1), f1, /version 1 is not supported/);
    const f99 = variant('v99', (b) => void b.writeUInt32LE(99, 4));
    expectCokv(() => openGguf(f99), f99, /unsupported GGUF version 99/);
  });

  it('version 2 files read like version 3', () => {
    const f = variant('v2', (b) => void b.writeUInt32LE(2, 4));
    expect(openGguf(f).config.numLayers).toBe(1);
  });

  it('unsupported architecture', () => {
    const f = tmpFile('arch');
    writeGguf(f, {
      metadata: { 'general.architecture': gv.str('mamba') },
      tensors: [{ name: 'token_embd.weight', shape: [4, 32], dtype: 'f32', data: new Float32Array(128) }],
    });
    expectCokv(() => openGguf(f), f, /architecture 'mamba' is a state-space model/);
  });

  it('unsupported tensor type names the tensor and the type', () => {
    const f = tmpFile('iq2xxs');
    writeGguf(f, {
      metadata: { 'general.architecture': gv.str('llama') },
      tensors: [{ name: 'blk.0.ffn_up.weight', dims: [256, 2], ggmlType: GGML_TYPE.IQ2_XXS, raw: new Uint8Array(2 * 66) }],
    });
    expectCokv(() => openGguf(f), f, /blk\.0\.ffn_up\.weight.*IQ2_XXS \(16\)/);
    const f2 = tmpFile('t99');
    writeGguf(f2, {
      metadata: {},
      tensors: [{ name: 'weird', dims: [32], ggmlType: 99, raw: new Uint8Array(32) }],
    });
    expectCokv(() => readGgufHeader(f2), f2, /weird.*type 99/);
  });

  it('tensor offset past the end of the file', () => {
    const f = variant('off', (b) => {
      const p = tensorInfoPos(b, 'blk.0.ffn_down.weight');
      const nameLen = Number(b.readBigUInt64LE(p));
      const nd = b.readUInt32LE(p + 8 + nameLen);
      patchU64(b, p + 8 + nameLen + 4 + nd * 8 + 4, 1n << 40n);
    });
    expectCokv(() => openGguf(f), f, /blk\.0\.ffn_down\.weight.*past the end/);
  });

  it('tensor shape disagreeing with the config', () => {
    const f = variant('shape', (b) => void b.writeUInt32LE(128, metaValuePos(b, 'llama.feed_forward_length')));
    expectCokv(() => openGguf(f), f, /blk\.0\.ffn_gate\.weight has shape \[96, 64\] but the config implies \[128, 64\]/);
  });

  it('absurd dimensions (2^40 elements)', () => {
    const f = tmpFile('dims');
    writeGguf(f, {
      metadata: { 'general.architecture': gv.str('llama') },
      tensors: [{ name: 'huge', dims: [2 ** 20, 2 ** 20], ggmlType: GGML_TYPE.F32, raw: new Uint8Array(64) }],
    });
    expectCokv(() => openGguf(f), f, /huge.*elements/);
    const f2 = tmpFile('dim0');
    writeGguf(f2, { metadata: {}, tensors: [{ name: 'zero', dims: [0, 4], ggmlType: 0, raw: new Uint8Array(0) }] });
    expectCokv(() => readGgufHeader(f2), f2, /zero dimension/);
  });

  it('absurd tensor and metadata counts', () => {
    const f = variant('count', (b) => patchU64(b, 8, 1n << 40n));
    expectCokv(() => openGguf(f), f, /tensor count .* absurd/);
    const f2 = variant('kvcount', (b) => patchU64(b, 16, 2n ** 63n));
    expectCokv(() => openGguf(f2), f2, /absurd/);
  });

  it('absurd string and array lengths', () => {
    const f = variant('strlen', (b) => {
      const key = Buffer.from('general.architecture');
      const at = b.indexOf(key);
      patchU64(b, at - 8, 1n << 50n);
    });
    expectCokv(() => openGguf(f), f, /absurd|remain in the file/);
    const f2 = variant('arrlen', (b) => {
      const p = metaValuePos(b, 'tokenizer.ggml.tokens');
      patchU64(b, p + 4, 1n << 40n);
    });
    expectCokv(() => openGguf(f2), f2, /tokenizer\.ggml\.tokens.*does not fit/);
  });

  it('missing required metadata and tensors', () => {
    const f = tmpFile('nometa');
    writeGguf(f, { metadata: { 'general.architecture': gv.str('llama') }, tensors: [] });
    expectCokv(() => openGguf(f), f, /missing metadata llama\.embedding_length/);
    const f2 = variant('notensor', (b) => {
      const p = tensorInfoPos(b, 'blk.0.ffn_up.weight');
      b.write('X', p + 8); // rename to Xlk.0.ffn_up.weight
    });
    expectCokv(() => openGguf(f2), f2, /missing tensor blk\.0\.ffn_up\.weight/);
  });
});
