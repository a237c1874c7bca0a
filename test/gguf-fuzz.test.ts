import { Rng } from '../src/generate/rng.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { completeConfig, type ModelConfig } from '../src/model/config.js';
import { gv, writeLlamaGguf } from '../src/model/loaders/gguf-writer.js';
import { openGguf, readGgufHeader } from '../src/model/loaders/gguf.js';
import { tokenizerFromGguf } from '../src/model/tokenizer/gguf-tokenizer.js';

/** Seeded uniform [0, 1) stream (the project's mulberry32 generator). */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('GGUF reader under corruption', () => {
  it('either loads or throws CokvError for ~300 corrupted files', { timeout: 60_000 }, () => {
    const r = rng(12345);
    const c: ModelConfig = completeConfig({
      architecture: 'qwen2', hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 16, intermediateSize: 64,
      vocabSize: 48, contextLength: 128, ropeTheta: 10000, rmsNormEps: 1e-6, tiedEmbeddings: false, attentionBias: true,
    });
    const sizes: Record<string, number> = {
      'model.embed_tokens.weight': 48 * 32, 'lm_head.weight': 48 * 32, 'model.norm.weight': 32,
      'model.layers.0.input_layernorm.weight': 32, 'model.layers.0.post_attention_layernorm.weight': 32,
      'model.layers.0.self_attn.q_proj.weight': 32 * 32, 'model.layers.0.self_attn.k_proj.weight': 16 * 32,
      'model.layers.0.self_attn.v_proj.weight': 16 * 32, 'model.layers.0.self_attn.o_proj.weight': 32 * 32,
      'model.layers.0.self_attn.q_proj.bias': 32, 'model.layers.0.self_attn.k_proj.bias': 16,
      'model.layers.0.self_attn.v_proj.bias': 16,
      'model.layers.0.mlp.gate_proj.weight': 64 * 32, 'model.layers.0.mlp.up_proj.weight': 64 * 32,
      'model.layers.0.mlp.down_proj.weight': 32 * 64,
    };
    const weights: Record<string, Float32Array> = {};
    for (const [k, n] of Object.entries(sizes)) weights[k] = Float32Array.from({ length: n }, () => r() - 0.5);
    const tokens = ['<|endoftext|>', '<|im_start|>', ...Array.from({ length: 46 }, (_, i) => String.fromCharCode(97 + (i % 26)) + (i >= 26 ? 'x' : ''))];
    const good = path.join(tmp, 'good.gguf');
    writeLlamaGguf(good, {
      config: c, weights, dtype: 'q8_0',
      tokenizer: {
        'tokenizer.ggml.model': gv.str('gpt2'),
        'tokenizer.ggml.pre': gv.str('qwen2'),
        'tokenizer.ggml.tokens': gv.arr('string', tokens),
        'tokenizer.ggml.token_type': gv.arr('i32', tokens.map((_, i) => (i < 2 ? 3 : 1))),
        'tokenizer.ggml.merges': gv.arr('string', ['a b', 'c d']),
        'tokenizer.ggml.eos_token_id': gv.u32(0),
        'tokenizer.chat_template': gv.str('{% for m in messages %}{{ m.content }}{% endfor %}'),
      },
    });
    const bytes = fs.readFileSync(good);
    const headerEnd = readGgufHeader(good).dataOffset;
    openGguf(good).loadWeights(); // the original is fine

    let ok = 0;
    let rejected = 0;
    const t0 = Date.now();
    for (let iter = 0; iter < 300; iter++) {
      let b = Buffer.from(bytes);
      const mode = r();
      if (mode < 0.25) {
        b = b.subarray(0, Math.floor(r() * b.length));
      } else {
        const flips = 1 + Math.floor(r() * 8);
        for (let k = 0; k < flips; k++) {
          // mostly hit the header, where the structure lives
          const pos = r() < 0.8 ? Math.floor(r() * headerEnd) : Math.floor(r() * b.length);
          b[pos] = r() < 0.5 ? b[pos] ^ (1 << Math.floor(r() * 8)) : Math.floor(r() * 256);
        }
      }
      const f = path.join(tmp, `f${iter}.gguf`);
      fs.writeFileSync(f, b);
      try {
        const src = openGguf(f);
        src.loadWeights();
        tokenizerFromGguf(readGgufHeader(f).metadata, f);
        ok++;
      } catch (e) {
        if (!(e instanceof CokvError)) {
          throw new Error(`iteration ${iter}: non-CokvError ${(e as Error).stack ?? String(e)}`);
        }
        expect(e.message.startsWith(f)).toBe(true);
        rejected++;
      }
      fs.rmSync(f);
    }
    expect(ok + rejected).toBe(300);
    expect(rejected).toBeGreaterThan(50);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });
});
