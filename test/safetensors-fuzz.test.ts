/**
 * Corrupt a small valid Hugging Face folder (random byte flips, truncation, header edits) and check that opening
 * and loading either succeed or throw CokvError — never another error type, never a hang.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { openHfFolder } from '../src/model/loaders/hf.js';
import { writeSafetensors, type TensorToWrite } from '../src/model/loaders/safetensors.js';

/** mulberry32: small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const H = 8;
const HEADS = 2;
const KV = 1;
const FF = 12;
const VOCAB = 16;

const config = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: H,
  num_hidden_layers: 1,
  num_attention_heads: HEADS,
  num_key_value_heads: KV,
  intermediate_size: FF,
  vocab_size: VOCAB,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
};

function tensors(rand: () => number): TensorToWrite[] {
  const hd = H / HEADS;
  const shapes: [string, number[], TensorToWrite['dtype']][] = [
    ['model.embed_tokens.weight', [VOCAB, H], 'BF16'],
    ['model.layers.0.input_layernorm.weight', [H], 'F32'],
    ['model.layers.0.self_attn.q_proj.weight', [HEADS * hd, H], 'F16'],
    ['model.layers.0.self_attn.q_proj.bias', [HEADS * hd], 'F32'],
    ['model.layers.0.self_attn.k_proj.weight', [KV * hd, H], 'F32'],
    ['model.layers.0.self_attn.k_proj.bias', [KV * hd], 'F16'],
    ['model.layers.0.self_attn.v_proj.weight', [KV * hd, H], 'BF16'],
    ['model.layers.0.self_attn.v_proj.bias', [KV * hd], 'F32'],
    ['model.layers.0.self_attn.o_proj.weight', [H, HEADS * hd], 'F32'],
    ['model.layers.0.post_attention_layernorm.weight', [H], 'F32'],
    ['model.layers.0.mlp.gate_proj.weight', [FF, H], 'F16'],
    ['model.layers.0.mlp.up_proj.weight', [FF, H], 'F32'],
    ['model.layers.0.mlp.down_proj.weight', [H, FF], 'F32'],
    ['model.norm.weight', [H], 'F32'],
    ['lm_head.weight', [VOCAB, H], 'F32'],
  ];
  return shapes.map(([name, shape, dtype]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = rand() * 2 - 1;
    return { name, shape, dtype, data };
  });
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('safetensors / HF folder fuzz', () => {
  it('corrupted folders open and load, or throw CokvError', () => {
    const rand = prng(0xc0c0);
    const d = path.join(tmp, 'model');
    fs.mkdirSync(d);
    const stPath = path.join(d, 'model.safetensors');
    const cfgPath = path.join(d, 'config.json');
    writeSafetensors(stPath, tensors(rand), { format: 'pt' });
    const goodSt = fs.readFileSync(stPath);
    const goodCfg = Buffer.from(JSON.stringify(config, null, 1));
    const headerLen = Number(goodSt.readBigUInt64LE(0));

    // Sanity: the uncorrupted folder loads.
    fs.writeFileSync(cfgPath, goodCfg);
    openHfFolder(d).loadWeights();

    const t0 = Date.now();
    const outcomes = { ok: 0, cokv: 0 };
    const iterations = 320;
    for (let it = 0; it < iterations; it++) {
      let st = Buffer.from(goodSt);
      let cfg = Buffer.from(goodCfg);
      const mode = it % 8;
      const flips = 1 + Math.floor(rand() * 4);
      if (mode <= 2) {
        // flip bytes anywhere in the file
        for (let k = 0; k < flips; k++) st[Math.floor(rand() * st.length)] ^= 1 + Math.floor(rand() * 255);
      } else if (mode <= 4) {
        // flip bytes in the length prefix or the JSON header (where the parser is)
        for (let k = 0; k < flips; k++) {
          const pos = rand() < 0.15 ? Math.floor(rand() * 8) : 8 + Math.floor(rand() * headerLen);
          st[pos] = rand() < 0.5 ? st[pos] ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
        }
      } else if (mode === 5) {
        // truncate
        st = st.subarray(0, Math.floor(rand() * st.length));
      } else if (mode === 6) {
        // replace a digit in the header with another digit (keeps JSON valid, moves offsets/shapes)
        const text = st.subarray(8, 8 + headerLen).toString('latin1');
        const digits = [...text.matchAll(/\d/g)].map((m) => m.index);
        for (let k = 0; k < flips && digits.length > 0; k++) {
          const pos = 8 + digits[Math.floor(rand() * digits.length)];
          st[pos] = 0x30 + Math.floor(rand() * 10);
        }
      } else {
        // corrupt config.json
        if (rand() < 0.3) {
          cfg = cfg.subarray(0, Math.floor(rand() * cfg.length));
        } else {
          for (let k = 0; k < flips; k++) cfg[Math.floor(rand() * cfg.length)] = 0x20 + Math.floor(rand() * 95);
        }
      }
      fs.writeFileSync(stPath, st);
      fs.writeFileSync(cfgPath, cfg);
      try {
        const src = openHfFolder(d);
        const w = src.loadWeights();
        expect(w.layers.length).toBe(src.config.numLayers);
        outcomes.ok++;
      } catch (e) {
        if (!(e instanceof CokvError)) {
          throw new Error(`iteration ${it} (mode ${mode}): expected CokvError, got ${String(e)}\n${(e as Error).stack ?? ''}`);
        }
        expect(e.message).not.toContain('\n');
        outcomes.cokv++;
      }
    }
    expect(outcomes.ok + outcomes.cokv).toBe(iterations);
    // Both outcomes must occur (flips in tensor data load fine; header damage is refused).
    expect(outcomes.ok).toBeGreaterThan(10);
    expect(outcomes.cokv).toBeGreaterThan(50);
    expect(Date.now() - t0).toBeLessThan(20_000);
  }, 30_000);
});
