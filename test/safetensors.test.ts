import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { configFromHf, openHfFolder, pickChatTemplate } from '../src/model/loaders/hf.js';
import {
  openSafetensors,
  openSafetensorsFolder,
  writeSafetensors,
  type TensorToWrite,
} from '../src/model/loaders/safetensors.js';
import type { F32Weight } from '../src/model/weights.js';
import { expectCokvError } from './helpers.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-st-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let dirCounter = 0;
function newDir(): string {
  const d = path.join(tmp, `m${dirCounter++}`);
  fs.mkdirSync(d);
  return d;
}

/** Deterministic values. */
function values(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return a;
}

interface TinyOpts {
  modelType?: 'llama' | 'mistral' | 'qwen2';
  tie?: boolean;
  withLmHead?: boolean;
  dtype?: 'F32' | 'F16' | 'BF16';
  headDim?: number;
}

const H = 16;
const HEADS = 4;
const KV = 2;
const FF = 24;
const VOCAB = 32;
const LAYERS = 2;

function tinyConfig(o: TinyOpts = {}): Record<string, unknown> {
  const mt = o.modelType ?? 'llama';
  const arch = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' }[mt];
  const c: Record<string, unknown> = {
    architectures: [arch],
    model_type: mt,
    hidden_size: H,
    num_hidden_layers: LAYERS,
    num_attention_heads: HEADS,
    num_key_value_heads: KV,
    intermediate_size: FF,
    vocab_size: VOCAB,
    max_position_embeddings: 128,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: o.tie ?? false,
  };
  if (o.headDim !== undefined) c.head_dim = o.headDim;
  return c;
}

function tinyTensors(o: TinyOpts = {}): TensorToWrite[] {
  const dtype = o.dtype ?? 'F32';
  const hd = o.headDim ?? H / HEADS;
  const q = HEADS * hd;
  const kv = KV * hd;
  const out: TensorToWrite[] = [];
  let seed = 1;
  const add = (name: string, shape: number[]): void => {
    out.push({ name, shape, dtype, data: values(shape.reduce((a, b) => a * b, 1), seed++) });
  };
  add('model.embed_tokens.weight', [VOCAB, H]);
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}.`;
    add(`${p}input_layernorm.weight`, [H]);
    add(`${p}self_attn.q_proj.weight`, [q, H]);
    add(`${p}self_attn.k_proj.weight`, [kv, H]);
    add(`${p}self_attn.v_proj.weight`, [kv, H]);
    add(`${p}self_attn.o_proj.weight`, [H, q]);
    if (o.modelType === 'qwen2') {
      add(`${p}self_attn.q_proj.bias`, [q]);
      add(`${p}self_attn.k_proj.bias`, [kv]);
      add(`${p}self_attn.v_proj.bias`, [kv]);
    }
    add(`${p}post_attention_layernorm.weight`, [H]);
    add(`${p}mlp.gate_proj.weight`, [FF, H]);
    add(`${p}mlp.up_proj.weight`, [FF, H]);
    add(`${p}mlp.down_proj.weight`, [H, FF]);
  }
  add('model.norm.weight', [H]);
  if (o.withLmHead ?? !(o.tie ?? false)) add('lm_head.weight', [VOCAB, H]);
  return out;
}

function writeTinyFolder(o: TinyOpts = {}, tensors = tinyTensors(o)): string {
  const d = newDir();
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(tinyConfig(o)));
  writeSafetensors(path.join(d, 'model.safetensors'), tensors, { format: 'pt' });
  return d;
}

/** Run fn, expect a one-line CokvError whose message contains every `parts`. */
const expectCokv = (fn: () => unknown, ...parts: string[]): CokvError => expectCokvError(fn, ...parts);

/** Build a raw safetensors file from a header object and data bytes. */
function rawFile(header: unknown, dataBytes: number, headerLenOverride?: bigint): string {
  const f = path.join(newDir(), 'x.safetensors');
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length), 0);
  fs.writeFileSync(f, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return f;
}

describe('safetensors reader/writer', () => {
  it('round-trips F32, F16 and BF16 and reads lazily per tensor', () => {
    const f = path.join(newDir(), 'a.safetensors');
    const a = Float32Array.from([1, -2, 0.5, 3.25, 0, -0.125]);
    const b = Float32Array.from([1.5, -1024, 65504, 6.103515625e-5]);
    const c = Float32Array.from([1, -3.5, 1e10, -1e-10, 0.1]);
    writeSafetensors(f, [
      { name: 'a', shape: [2, 3], dtype: 'F32', data: a },
      { name: 'b', shape: [4], dtype: 'F16', data: b },
      { name: 'c', shape: [5], dtype: 'BF16', data: c },
    ], { format: 'pt' });
    const s = openSafetensors(f);
    expect(s.metadata).toEqual({ format: 'pt' });
    expect([...s.tensors.keys()]).toEqual(['a', 'b', 'c']);
    expect(s.tensors.get('a')!.shape).toEqual([2, 3]);
    expect(s.tensors.get('b')!.dtype).toBe('F16');
    expect(Array.from(s.read('a'))).toEqual(Array.from(a));
    expect(Array.from(s.read('b'))).toEqual(Array.from(b)); // all exactly representable in f16
    const cr = s.read('c');
    for (let i = 0; i < c.length; i++) expect(Math.abs(cr[i] - c[i])).toBeLessThanOrEqual(Math.abs(c[i]) / 128);
    expect(cr[0]).toBe(1);
    expect(cr[1]).toBe(-3.5);
    // header is 8-byte aligned as the format recommends
    const hlen = Number(fs.readFileSync(f).readBigUInt64LE(0));
    expect(hlen % 8).toBe(0);
    expectCokv(() => s.read('nope'), f, 'nope');
  });

  it('handles empty tensors and files without __metadata__', () => {
    const f = path.join(newDir(), 'e.safetensors');
    writeSafetensors(f, [
      { name: 'z', shape: [0, 4], dtype: 'F32', data: new Float32Array(0) },
      { name: 'y', shape: [2], dtype: 'BF16', data: Float32Array.from([2, 4]) },
    ]);
    const s = openSafetensors(f);
    expect(s.metadata).toEqual({});
    expect(s.read('z').length).toBe(0);
    expect(Array.from(s.read('y'))).toEqual([2, 4]);
  });

  it('reads sharded folders through model.safetensors.index.json', () => {
    const d = newDir();
    const t = tinyTensors();
    const half = Math.floor(t.length / 2);
    writeSafetensors(path.join(d, 'model-00001-of-00002.safetensors'), t.slice(0, half));
    writeSafetensors(path.join(d, 'model-00002-of-00002.safetensors'), t.slice(half));
    const weightMap: Record<string, string> = {};
    t.forEach((x, i) => (weightMap[x.name] = i < half ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'));
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(tinyConfig()));
    const s = openSafetensorsFolder(d);
    expect(s.tensors.size).toBe(t.length);
    expect(Array.from(s.read(t[t.length - 1].name))).toEqual(Array.from(t[t.length - 1].data));
    const src = openHfFolder(d);
    const w = src.loadWeights();
    expect(Array.from((w.lmHead as F32Weight).data)).toEqual(Array.from(t[t.length - 1].data));

    // a weight_map entry pointing at the wrong shard
    weightMap[t[0].name] = 'model-00002-of-00002.safetensors';
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    expectCokv(() => openSafetensorsFolder(d), 'model.safetensors.index.json', t[0].name);
    // a missing shard
    weightMap[t[0].name] = 'model-00003-of-00003.safetensors';
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    expectCokv(() => openSafetensorsFolder(d), 'model-00003-of-00003.safetensors', 'missing');
    // path escapes are refused
    weightMap[t[0].name] = '../evil.safetensors';
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    expectCokv(() => openSafetensorsFolder(d), 'plain file name');
  });
});

describe('safetensors bad input', () => {
  it('rejects a header length bigger than the file', () => {
    const f = rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 4, 10_000n);
    expectCokv(() => openSafetensors(f), f, 'header length', 'past the end');
  });
  it('rejects an absurd header length', () => {
    const f = rawFile({}, 0, 2n ** 62n);
    expectCokv(() => openSafetensors(f), f, 'header length');
  });
  it('rejects a file shorter than 8 bytes and a missing file', () => {
    const f = path.join(newDir(), 'short.safetensors');
    fs.writeFileSync(f, Buffer.from([1, 2, 3]));
    expectCokv(() => openSafetensors(f), f, 'too short');
    const g = path.join(tmp, 'does-not-exist.safetensors');
    expectCokv(() => openSafetensors(g), g, 'no such file');
  });
  it('rejects a header that is not JSON', () => {
    const f = path.join(newDir(), 'nj.safetensors');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(5n, 0);
    fs.writeFileSync(f, Buffer.concat([len, Buffer.from('{abc}')]));
    expectCokv(() => openSafetensors(f), f, 'not valid JSON');
  });
  it('rejects data_offsets past the end of the file', () => {
    const f = rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8);
    expectCokv(() => openSafetensors(f), f, '"a"', 'past the end');
  });
  it('rejects overlapping data_offsets', () => {
    const f = rawFile({
      a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
      b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
    }, 24);
    expectCokv(() => openSafetensors(f), f, 'overlapping');
  });
  it('rejects offsets that do not match shape × dtype size', () => {
    const f = rawFile({ a: { dtype: 'F16', shape: [4], data_offsets: [0, 16] } }, 16);
    expectCokv(() => openSafetensors(f), f, '"a"', 'needs 8');
  });
  it('rejects unsupported dtypes, naming tensor and dtype', () => {
    for (const dt of ['I64', 'F8_E4M3', 'F64', 'U8']) {
      const f = rawFile({ ids: { dtype: dt, shape: [2], data_offsets: [0, 16] } }, 16);
      expectCokv(() => openSafetensors(f), f, '"ids"', dt);
    }
  });
  it('rejects absurd shapes (2^40 elements) and malformed shapes', () => {
    const f = rawFile({ a: { dtype: 'F32', shape: [2 ** 20, 2 ** 20], data_offsets: [0, 4] } }, 4);
    expectCokv(() => openSafetensors(f), f, '"a"', 'absurd');
    const g = rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4);
    expectCokv(() => openSafetensors(g), g, 'dimension');
    const h = rawFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4);
    expectCokv(() => openSafetensors(h), h, 'dimension');
    const i = rawFile({ a: { dtype: 'F32', shape: 'x', data_offsets: [0, 4] } }, 4);
    expectCokv(() => openSafetensors(i), i, 'shape');
    const j = rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4] } }, 4);
    expectCokv(() => openSafetensors(j), j, 'data_offsets');
  });
  it('rejects a truncated file', () => {
    const d = writeTinyFolder();
    const f = path.join(d, 'model.safetensors');
    const buf = fs.readFileSync(f);
    fs.writeFileSync(f, buf.subarray(0, buf.length - 100));
    expectCokv(() => openHfFolder(d), f, 'past the end');
    // truncated inside the header
    fs.writeFileSync(f, buf.subarray(0, 40));
    expectCokv(() => openHfFolder(d), f, 'header length');
  });
});

describe('Hugging Face folders', () => {
  it('maps a llama config and loads weights in HF layout', () => {
    const t = tinyTensors();
    const d = writeTinyFolder({}, t);
    fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify({
      bos_token: '<s>',
      eos_token: { content: '</s>', special: true },
      chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }],
    }));
    fs.writeFileSync(path.join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 7], do_sample: true, temperature: 0.6, top_p: 0.9, top_k: 20 }));
    const src = openHfFolder(d);
    expect(src.format).toBe('hf');
    expect(src.config.layers).toEqual(Array.from({ length: LAYERS }, () => ({ kind: 'full', rope: { theta: 10000, rotaryDim: H / HEADS } })));
    expect(src.config.recipe).toMatchObject({ qkNorm: false, postNorms: false, activation: 'silu', attentionScale: 1 / Math.sqrt(H / HEADS) });
    expect(src.config).toMatchObject({
      architecture: 'llama', hiddenSize: H, numLayers: LAYERS, numHeads: HEADS, numKvHeads: KV, headDim: H / HEADS,
      intermediateSize: FF, vocabSize: VOCAB, contextLength: 128, ropeTheta: 10000, rmsNormEps: 1e-5,
      tiedEmbeddings: false, attentionBias: false,
    });
    expect(src.chatTemplate).toBe('D');
    expect(src.bosToken).toBe('<s>');
    expect(src.eosToken).toBe('</s>');
    expect(src.generation).toEqual({ eosIds: [2, 7], temperature: 0.6, topP: 0.9, topK: 20 });
    expect(src.tensors.length).toBe(t.length);
    expect(src.tensors.find((x) => x.name === 'model.layers.0.mlp.down_proj.weight')).toEqual({
      name: 'model.layers.0.mlp.down_proj.weight', shape: [H, FF], dtype: 'f32',
    });
    const w = src.loadWeights();
    const byName = new Map(t.map((x) => [x.name, x.data]));
    expect(w.layers.length).toBe(LAYERS);
    const wq = w.layers[1].wq as F32Weight;
    expect([wq.dtype, wq.rows, wq.cols]).toEqual(['f32', H, H]);
    expect(Array.from(wq.data)).toEqual(Array.from(byName.get('model.layers.1.self_attn.q_proj.weight')!));
    const wd = w.layers[0].wDown as F32Weight;
    expect([wd.rows, wd.cols]).toEqual([H, FF]);
    expect(Array.from(w.layers[0].ffnNorm)).toEqual(Array.from(byName.get('model.layers.0.post_attention_layernorm.weight')!));
    expect(Array.from(w.finalNorm)).toEqual(Array.from(byName.get('model.norm.weight')!));
    expect(w.lmHead).not.toBe(w.tokenEmbedding);
    expect(w.layers[0].bq).toBeUndefined();
  });

  it('qwen2: biases, tied embeddings, BF16 widened', () => {
    const d = writeTinyFolder({ modelType: 'qwen2', tie: true, dtype: 'BF16' });
    const src = openHfFolder(d);
    expect(src.config.architecture).toBe('qwen2');
    expect(src.config.attentionBias).toBe(true);
    expect(src.config.tiedEmbeddings).toBe(true);
    expect(src.tensors[0].dtype).toBe('bf16');
    const w = src.loadWeights();
    expect(w.lmHead).toBe(w.tokenEmbedding);
    expect(w.layers[0].bq!.length).toBe(H);
    expect(w.layers[0].bk!.length).toBe(KV * (H / HEADS));
    expect(w.tokenEmbedding.dtype).toBe('f32');
  });

  it('tied with an lm_head present uses the embedding; mistral F16; head_dim differing from hidden/heads', () => {
    const d = writeTinyFolder({ tie: true, withLmHead: true, modelType: 'mistral', dtype: 'F16', headDim: 8 });
    const src = openHfFolder(d);
    expect(src.config.architecture).toBe('mistral');
    expect(src.config.headDim).toBe(8);
    const w = src.loadWeights();
    expect(w.lmHead).toBe(w.tokenEmbedding);
    expect((w.layers[0].wq as F32Weight).rows).toBe(HEADS * 8);
    expect((w.layers[0].wo as F32Weight).cols).toBe(HEADS * 8);
  });

  it('config mapping: defaults, rope scaling, transformers 5 rope_parameters', () => {
    const base = tinyConfig();
    delete base.num_key_value_heads;
    delete base.rope_theta;
    delete base.rms_norm_eps;
    delete base.tie_word_embeddings;
    const c = configFromHf(base, 'config.json');
    expect(c.numKvHeads).toBe(HEADS);
    expect(c.ropeTheta).toBe(10000);
    expect(c.rmsNormEps).toBe(1e-6);
    expect(c.tiedEmbeddings).toBe(false);
    expect(c.ropeScaling).toBeUndefined();

    const l3 = configFromHf({
      ...tinyConfig(),
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    }, 'config.json');
    expect(l3.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(configFromHf({ ...tinyConfig(), rope_scaling: { type: 'linear', factor: 2 } }, 'c').ropeScaling).toEqual({ type: 'linear', factor: 2 });
    expect(configFromHf({ ...tinyConfig(), rope_scaling: { rope_type: 'default' } }, 'c').ropeScaling).toBeUndefined();
    expect(configFromHf({ ...tinyConfig(), rope_scaling: null }, 'c').ropeScaling).toBeUndefined();
    expectCokv(() => configFromHf({ ...tinyConfig(), rope_scaling: { type: 'yarn', factor: 4 } }, 'cfg.json'), 'cfg.json', 'yarn');
    expectCokv(() => configFromHf({ ...tinyConfig(), rope_scaling: { type: 'dynamic', factor: 4 } }, 'cfg.json'), 'dynamic');

    const t5: Record<string, unknown> = { ...tinyConfig(), rope_parameters: { rope_theta: 100000, rope_type: 'default' } };
    delete t5.rope_theta;
    expect(configFromHf(t5, 'c').ropeTheta).toBe(100000);

    expect(configFromHf({ ...tinyConfig(), attention_bias: true }, 'c').attentionBias).toBe(true);
    expect(configFromHf({ ...tinyConfig(), head_dim: null }, 'c').headDim).toBe(H / HEADS);
    expectCokv(() => configFromHf({ ...tinyConfig(), hidden_size: '16' }, 'cfg.json'), 'cfg.json', 'hidden_size');
    expectCokv(() => configFromHf({ ...tinyConfig(), num_attention_heads: 5 }, 'cfg.json'), 'cfg.json');
    expectCokv(() => configFromHf({ ...tinyConfig(), hidden_act: 'gelu' }, 'cfg.json'), 'gelu');
    expectCokv(() => configFromHf({ ...tinyConfig(), architectures: ['LlamaForSequenceClassification'] }, 'cfg.json'),
      'LlamaForSequenceClassification');
    const noType = { ...tinyConfig() };
    delete noType.model_type;
    expect(configFromHf(noType, 'c').architecture).toBe('llama');
  });

  it('picks chat templates', () => {
    expect(pickChatTemplate('x', 'f')).toBe('x');
    expect(pickChatTemplate(undefined, 'f')).toBeUndefined();
    expect(pickChatTemplate([{ name: 'default', template: 'y' }], 'f')).toBe('y');
    expectCokv(() => pickChatTemplate([{ name: 'a', template: 'x' }, { name: 'b', template: 'y' }], 'f'), 'default');
  });
});

describe('Hugging Face folder bad input', () => {
  it('missing config.json', () => {
    const d = newDir();
    expectCokv(() => openHfFolder(d), path.join(d, 'config.json'), 'no such file');
  });
  it('config.json not JSON', () => {
    const d = writeTinyFolder();
    fs.writeFileSync(path.join(d, 'config.json'), '{ "model_type": "llama", ');
    expectCokv(() => openHfFolder(d), path.join(d, 'config.json'), 'not valid JSON');
  });
  it('unknown model_type', () => {
    const d = writeTinyFolder();
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...tinyConfig(), model_type: 'gemma2', architectures: ['Gemma2ForCausalLM'] }));
    expectCokv(() => openHfFolder(d), path.join(d, 'config.json'), 'gemma2');
  });
  it('missing weights file', () => {
    const d = newDir();
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(tinyConfig()));
    expectCokv(() => openHfFolder(d), d, 'model.safetensors');
  });
  it('missing tensor', () => {
    const t = tinyTensors().filter((x) => x.name !== 'model.layers.1.mlp.up_proj.weight');
    const d = writeTinyFolder({}, t);
    expectCokv(() => openHfFolder(d), 'model.safetensors', 'missing', 'model.layers.1.mlp.up_proj.weight');
  });
  it('untied config without lm_head', () => {
    const d = writeTinyFolder({}, tinyTensors({ tie: true }));
    expectCokv(() => openHfFolder(d), 'model.safetensors', 'lm_head.weight', 'tie_word_embeddings');
  });
  it('unexpected tensor', () => {
    const t = tinyTensors();
    t.push({ name: 'model.layers.2.mlp.up_proj.weight', shape: [FF, H], dtype: 'F32', data: new Float32Array(FF * H) });
    const d = writeTinyFolder({}, t);
    expectCokv(() => openHfFolder(d), 'model.safetensors', 'unexpected', 'model.layers.2.mlp.up_proj.weight');
  });
  it('tensor with wrong shape', () => {
    const t = tinyTensors().map((x) =>
      x.name === 'model.layers.0.self_attn.k_proj.weight' ? { ...x, shape: [H, H], data: new Float32Array(H * H) } : x);
    const d = writeTinyFolder({}, t);
    expectCokv(() => openHfFolder(d), 'model.safetensors', 'model.layers.0.self_attn.k_proj.weight', `[${H}, ${H}]`,
      `expected [${KV * (H / HEADS)}, ${H}]`);
  });
  it('unsupported dtype inside a model folder', () => {
    const d = writeTinyFolder();
    const f = path.join(d, 'model.safetensors');
    const buf = fs.readFileSync(f);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string }>;
    header['model.norm.weight'].dtype = 'I32'; // same element size, so only the dtype is wrong
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length), 0);
    fs.writeFileSync(f, Buffer.concat([len, json, buf.subarray(8 + n)]));
    expectCokv(() => openHfFolder(d), f, 'model.norm.weight', 'I32');
  });
  it('absurd dimensions in config.json', () => {
    const d = writeTinyFolder();
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...tinyConfig(), vocab_size: 2 ** 30, hidden_size: 2 ** 20, num_attention_heads: 1, num_key_value_heads: 1 }));
    expectCokv(() => openHfFolder(d), path.join(d, 'config.json'));
  });
  it('not a folder', () => {
    expectCokv(() => openHfFolder(path.join(tmp, 'nope')), 'nope');
  });
});

const TINY = path.resolve('../shared/assets/models/cokv-retrieval-tiny');
const haveTiny = fs.existsSync(path.join(TINY, 'model.safetensors'));
if (!haveTiny) console.warn(`skipping cokv-retrieval-tiny safetensors tests: ${TINY} not found`);

describe.skipIf(!haveTiny)('cokv-retrieval-tiny (shared asset)', () => {
  it('opens the folder and loads weights matching the raw file bytes', async () => {
    const src = openHfFolder(TINY);
    expect(src.config).toMatchObject({
      architecture: 'llama', hiddenSize: 128, numLayers: 4, numHeads: 8, numKvHeads: 4, headDim: 32,
      intermediateSize: 384, vocabSize: 2048, contextLength: 2048, ropeTheta: 100000, rmsNormEps: 1e-5,
      tiedEmbeddings: true, attentionBias: false,
    });
    expect(src.config.ropeScaling).toBeUndefined();
    expect(src.generation).toEqual({ eosIds: [1], temperature: 0 }); // do_sample: false
    expect(src.bosToken).toBe('<s>');
    expect(src.eosToken).toBe('</s>');
    expect(src.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight')?.shape).toEqual([256, 128]);
    const w = src.loadWeights();
    expect(w.lmHead).toBe(w.tokenEmbedding);
    expect((w.layers[3].wo as F32Weight).cols).toBe(256);
    // Independent check: read the first o_proj floats straight from the file.
    const buf = fs.readFileSync(path.join(TINY, 'model.safetensors'));
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: number[] }>;
    const off = 8 + n + header['model.layers.3.self_attn.o_proj.weight'].data_offsets[0];
    const wo = (w.layers[3].wo as F32Weight).data;
    for (const i of [0, 1, 255, 256, 128 * 256 - 1]) expect(wo[i]).toBe(buf.readFloatLE(off + 4 * i));
    const tok = await src.loadTokenizer();
    expect(tok.eosIds).toEqual([1]);
    expect(tok.bosId).toBe(0);
  });
});
