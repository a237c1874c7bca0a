/**
 * Architecture modules: each family's config keys (transformers v4 and v5 forms, GGUF metadata) map to the
 * recipe and per-layer list the forward pass runs, and refused families fail with one line naming the file and
 * the architecture. Numerical parity with transformers / llama.cpp is in fixtures-arch.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fullAttentionLayers } from '../src/model/config.js';
import { loadModel } from '../src/engine.js';
import { configFromHf, openHfFolder } from '../src/model/loaders/hf.js';
import { openSafetensorsFolder, writeSafetensors } from '../src/model/loaders/safetensors.js';
import { gv, writeGguf, type GgufMetaValue } from '../src/model/loaders/gguf-writer.js';
import { openGguf } from '../src/model/loaders/gguf.js';
import { expectCokvError, repoRoot, tmpDir } from './helpers.js';

const base = {
  hidden_size: 64, num_hidden_layers: 6, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 96,
  vocab_size: 256, max_position_embeddings: 1024, rms_norm_eps: 1e-6,
};

describe('HF configs', () => {
  it('qwen3: q/k norm and an explicit head_dim that differs from hidden/heads', () => {
    const c = configFromHf({ ...base, model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], head_dim: 32,
      rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }, 'q3.json');
    expect(c.architecture).toBe('qwen3');
    expect(c.headDim).toBe(32);
    expect(c.recipe).toMatchObject({ qkNorm: true, attentionBias: false, postNorms: false, activation: 'silu', attentionScale: 1 / Math.sqrt(32) });
    // v5 nests rope_theta in rope_parameters: reading the top level instead would silently give 10000.
    expect(c.layers.every((l) => l.kind === 'full' && l.rope?.theta === 1e6 && l.rope.rotaryDim === 32)).toBe(true);
  });

  it('gemma3 (transformers v5): layer_types, per-layer-type rope_parameters, query_pre_attn_scalar, √hidden embedding scale', () => {
    const c = configFromHf({ ...base, model_type: 'gemma3_text', architectures: ['Gemma3ForCausalLM'], head_dim: 16,
      hidden_activation: 'gelu_pytorch_tanh', query_pre_attn_scalar: 24, sliding_window: 8,
      layer_types: ['sliding_attention', 'sliding_attention', 'full_attention', 'sliding_attention', 'sliding_attention', 'full_attention'],
      rope_parameters: { full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } },
    }, 'g3.json');
    expect(c.tiedEmbeddings).toBe(true); // Gemma's default
    expect(c.recipe).toMatchObject({ qkNorm: true, postNorms: true, activation: 'gelu_tanh', attentionScale: 1 / Math.sqrt(24) });
    expect(c.recipe.embeddingScale).toBe(Math.fround(8));
    expect(fullAttentionLayers(c)).toEqual([2, 5]);
    expect(c.layers[0]).toEqual({ kind: 'sliding', window: 8, rope: { theta: 1e4, rotaryDim: 16 } });
    expect(c.layers[2]).toEqual({ kind: 'full', rope: { theta: 1e6, rotaryDim: 16, scaling: { type: 'linear', factor: 8 } } });
  });

  it('gemma3 (transformers v4): sliding_window_pattern and rope_local_base_freq', () => {
    const c = configFromHf({ ...base, num_hidden_layers: 12, model_type: 'gemma3_text', head_dim: 16, sliding_window: 512,
      sliding_window_pattern: 6, rope_theta: 1e6, rope_local_base_freq: 1e4, query_pre_attn_scalar: 16 }, 'g3.json');
    expect(fullAttentionLayers(c)).toEqual([5, 11]);
    expect(c.layers[0]).toEqual({ kind: 'sliding', window: 512, rope: { theta: 1e4, rotaryDim: 16 } });
    expect(c.layers[5].rope?.theta).toBe(1e6);
  });

  it('smollm3: no_rope_layers (1 = RoPE) and the default interval of 4', () => {
    const c = configFromHf({ ...base, num_hidden_layers: 4, model_type: 'smollm3', no_rope_layers: [1, 0, 1, 1] }, 's3.json');
    expect(c.layers.map((l) => l.rope !== undefined)).toEqual([true, false, true, true]);
    const d = configFromHf({ ...base, num_hidden_layers: 8, model_type: 'smollm3' }, 's3.json');
    expect(d.layers.map((l) => l.rope !== undefined)).toEqual([true, true, true, false, true, true, true, false]);
    expectCokvError(() => configFromHf({ ...base, num_hidden_layers: 4, model_type: 'smollm3', no_rope_layers: [1, 0] }, 's3.json'), 's3.json', 'no_rope_layers');
  });

  it('phi3: partial rotary, longrope with its default attention factor, sliding window on every layer', () => {
    const c = configFromHf({ ...base, model_type: 'phi3', partial_rotary_factor: 0.75, sliding_window: 2047,
      rope_scaling: { type: 'longrope', short_factor: [1, 1, 1, 1, 1, 1], long_factor: [2, 2, 2, 2, 2, 2] },
      original_max_position_embeddings: 64, max_position_embeddings: 4096 }, 'p3.json');
    expect(c.layers[0].rope?.rotaryDim).toBe(12);
    expect(c.layers.every((l) => l.kind === 'sliding' && l.window === 2047)).toBe(true);
    const s = c.layers[0].rope?.scaling;
    expect(s?.type).toBe('longrope');
    // transformers: √(1 + ln(4096/64) / ln 64)
    if (s?.type === 'longrope') expect(s.attentionFactor).toBeCloseTo(Math.sqrt(1 + Math.log(64) / Math.log(64)), 12);
    expectCokvError(() => configFromHf({ ...base, model_type: 'phi3', partial_rotary_factor: 0.75,
      rope_scaling: { type: 'longrope', short_factor: [1, 1], long_factor: [2, 2] }, original_max_position_embeddings: 64 }, 'p3.json'),
    'p3.json', 'short_factor');
  });

  it('refuses hybrid, mixture-of-experts and vision-language checkpoints with one line naming the architecture', () => {
    for (const [type, why] of [['qwen3_next', 'Gated DeltaNet'], ['qwen3_5', 'Gated DeltaNet'], ['gemma3n', 'Gemma 3n'],
      ['gemma4', 'Gemma 4'], ['lfm2', 'convolution'], ['qwen3_moe', 'mixture-of-experts'], ['gemma3', 'without a text_config']]) {
      expectCokvError(() => configFromHf({ ...base, model_type: type }, 'cfg.json'), 'cfg.json', `"${type}"`, why, 'supported:');
    }
    expectCokvError(() => configFromHf({ ...base, model_type: 'gpt2' }, 'cfg.json'), 'cfg.json', 'unsupported model_type "gpt2"');
    expectCokvError(() => configFromHf({ ...base, model_type: 'gemma3_text', hidden_activation: 'relu' }, 'cfg.json'), 'relu');
    expectCokvError(() => configFromHf({ ...base, model_type: 'gemma3_text', attn_logit_softcapping: 50 }, 'cfg.json'), 'attn_logit_softcapping');
  });
});

describe('GGUF metadata', () => {
  const tmp = tmpDir('cokv-arch-');
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  let n = 0;

  /** A GGUF with every tensor `arch` needs (zero-filled F32, norms 1) and the given metadata. */
  function write(arch: string, meta: Record<string, GgufMetaValue>, layers: number, tensors: (l: number) => [string, number[]][]): string {
    const f = path.join(tmp, `${arch}-${n++}.gguf`);
    const H = 64, V = 32;
    const list: { name: string; shape: number[]; dtype: 'f32'; data: Float32Array }[] = [];
    const add = (name: string, shape: number[]): void => {
      const size = shape.reduce((a, b) => a * b, 1);
      list.push({ name, shape, dtype: 'f32', data: new Float32Array(size).fill(name.includes('norm') ? 1 : 0.01) });
    };
    add('token_embd.weight', [V, H]);
    add('output_norm.weight', [H]);
    for (let l = 0; l < layers; l++) for (const [name, shape] of tensors(l)) add(`blk.${l}.${name}`, shape);
    const k = (s: string): string => `${arch}.${s}`;
    writeGguf(f, {
      metadata: {
        'general.architecture': gv.str(arch), [k('embedding_length')]: gv.u32(H), [k('block_count')]: gv.u32(layers),
        [k('feed_forward_length')]: gv.u32(96), [k('attention.head_count')]: gv.u32(4), [k('attention.head_count_kv')]: gv.u32(2),
        [k('attention.key_length')]: gv.u32(16), [k('attention.value_length')]: gv.u32(16), [k('context_length')]: gv.u32(512),
        ...Object.fromEntries(Object.entries(meta).map(([key, v]) => [key.includes('.') && !key.startsWith('general') ? k(key) : key, v])),
      },
      tensors: list,
    });
    return f;
  }
  const llamaLayer = (l: number): [string, number[]][] => {
    void l;
    return [['attn_norm.weight', [64]], ['attn_q.weight', [64, 64]], ['attn_k.weight', [32, 64]], ['attn_v.weight', [32, 64]],
      ['attn_output.weight', [64, 64]], ['ffn_norm.weight', [64]], ['ffn_gate.weight', [96, 64]], ['ffn_up.weight', [96, 64]],
      ['ffn_down.weight', [64, 96]]];
  };

  it('gemma3: llama.cpp\'s default 6-layer pattern, freq_base_swa, 1/√key_length, post norms', () => {
    const gemmaLayer = (l: number): [string, number[]][] => [...llamaLayer(l), ['attn_q_norm.weight', [16]], ['attn_k_norm.weight', [16]],
      ['post_attention_norm.weight', [64]], ['post_ffw_norm.weight', [64]]];
    const f = write('gemma3', { 'attention.sliding_window': gv.u32(32), 'rope.freq_base': gv.f32(1e6), 'attention.layer_norm_rms_epsilon': gv.f32(1e-6) }, 7, gemmaLayer);
    const c = openGguf(f).config;
    expect(fullAttentionLayers(c)).toEqual([5]);
    expect(c.layers[0]).toEqual({ kind: 'sliding', window: 32, rope: { theta: 10000, rotaryDim: 16 } });
    expect(c.layers[5].rope?.theta).toBe(1e6);
    expect(c.recipe).toMatchObject({ qkNorm: true, postNorms: true, activation: 'gelu_tanh', attentionScale: 0.25 });
    const g = write('gemma3', { 'attention.sliding_window': gv.u32(32), 'rope.freq_base_swa': gv.f32(5000),
      'attention.sliding_window_pattern': gv.arr('bool', [true, false, true, true, false, true, true]) }, 7, gemmaLayer);
    const d = openGguf(g).config;
    expect(fullAttentionLayers(d)).toEqual([1, 4]);
    expect(d.layers[0].rope?.theta).toBe(5000);
  });

  it('smollm3: NoPE on every 4th layer (llama.cpp\'s fixed step)', () => {
    const c = openGguf(write('smollm3', {}, 4, llamaLayer)).config;
    expect(c.layers.map((l) => l.rope !== undefined)).toEqual([true, true, true, false]);
  });

  it('qwen3: q/k norm tensors are required', () => {
    const f = write('qwen3', {}, 1, llamaLayer);
    expectCokvError(() => openGguf(f), f, 'missing tensor blk.0.attn_q_norm.weight');
  });

  it('refuses hybrid and MoE architectures with one line naming them', () => {
    for (const [arch, why] of [['qwen35', 'Gated DeltaNet'], ['qwen3next', 'Gated DeltaNet'], ['gemma4', 'Gemma 4'], ['lfm2', 'convolution'], ['qwen3moe', 'mixture-of-experts']]) {
      const f = write(arch, {}, 1, llamaLayer);
      expectCokvError(() => openGguf(f), f, `architecture '${arch}'`, why, 'supported:');
    }
  });

  it('an HF folder of a refused architecture fails at open with the same line', () => {
    const d = path.join(tmp, 'hf-next');
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...base, model_type: 'qwen3_next' }));
    expectCokvError(() => openHfFolder(d), 'qwen3_next', 'Gated DeltaNet');
  });
});

describe('Gemma 3 vision-language folders (Gemma3ForConditionalGeneration)', () => {
  const fixture = path.join(repoRoot, 'test/fixtures/models/gemma3-tiny/hf-bf16');
  const tmp = tmpDir('cokv-arch-vl-');
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** The text fixture re-packed as transformers saves the vision-language class: nested text_config, prefixed names, a vision tower. */
  function vlFolder(prefix: string): string {
    const d = path.join(tmp, prefix.replace(/\W/g, '_'));
    fs.mkdirSync(d);
    const text = JSON.parse(fs.readFileSync(path.join(fixture, 'config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({
      model_type: 'gemma3', architectures: ['Gemma3ForConditionalGeneration'], text_config: text,
      vision_config: { model_type: 'siglip_vision_model', hidden_size: 8 }, mm_tokens_per_image: 4,
    }));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(fixture, f), path.join(d, f));
    const store = openSafetensorsFolder(fixture);
    const tensors = [...store.tensors.values()].map((e) => ({
      name: e.name.replace(/^model\./, prefix), shape: [...e.shape], dtype: 'F32' as const, data: store.read(e.name),
    }));
    tensors.push({ name: 'model.vision_tower.vision_model.embeddings.patch_embedding.weight', shape: [8, 3], dtype: 'F32', data: new Float32Array(24) });
    tensors.push({ name: 'model.multi_modal_projector.mm_input_projection_weight', shape: [8, 64], dtype: 'F32', data: new Float32Array(512) });
    writeSafetensors(path.join(d, 'model.safetensors'), tensors);
    return d;
  }

  for (const prefix of ['model.language_model.', 'language_model.model.']) {
    it(`runs the text tower (${prefix}…) with the same logits as the text-only checkpoint`, async () => {
      const d = vlFolder(prefix);
      const want = await loadModel(fixture, { backend: 'ts' });
      const got = await loadModel(d, { backend: 'ts' });
      expect(got.config.architecture).toBe('gemma3');
      expect(got.config.layers).toEqual(want.config.layers);
      const ids = [0, 17, 300, 42, 9, 1000, 77, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21];
      expect(Array.from(got.prefill(ids, got.newCache()))).toEqual(Array.from(want.prefill(ids, want.newCache())));
    });
  }
});
