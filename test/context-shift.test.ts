/**
 * Context shift (src/session/context-shift.ts, Sequence.shift): dropping positions [start, end) and re-rotating the
 * later keys by −(end − start). Checked on the TS backend with F32 storage:
 * - layer 0's keys depend on their token and position only, so after the shift they must equal the keys a fresh
 *   prefill of the shortened token list computes at the new positions (to f32 rounding), on several RoPE variants
 *   (default, llama3 scaling, partial rotary, q/k norms, NoPE layers, sliding layers with their own RoPE);
 * - attention depends only on distances between positions, so a cache shifted from the start continues exactly
 *   like the same cache with those entries evicted in place (logits to f32 rounding, greedy tokens identical).
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { CokvError } from '../src/errors.js';
import type { RaggedKVCache } from '../src/cache/ragged.js';
import type { ModelConfig } from '../src/model/config.js';
import { contextShiftProblem, shiftedCache } from '../src/session/context-shift.js';
import { asset, haveAssets, maxRelDiff, repoRoot } from './helpers.js';

const fixture = (name: string, file: string): string => path.join(repoRoot, 'test/fixtures/models', name, file);

/** Per head, entry index by position. */
function byPosition(c: RaggedKVCache, l: number, g: number): Map<number, number> {
  const m = new Map<number, number>();
  c.head(l, g).positions.forEach((p, j) => m.set(p, j));
  return m;
}

/** A prompt of about `n` tokens. */
function promptOf(model: CokvModel, n: number): number[] {
  const words = 'the grass is green and the sky is blue while a little dog runs in the park every day'.split(' ');
  const ids: number[] = [];
  for (let i = 0; ids.length < n; i++) ids.push(...model.encode(`${words[i % words.length]} `, false));
  return ids.slice(0, n);
}

const MODELS: [string, string][] = [
  ['llama3 (GGUF rope_freqs factors)', fixture('llama3-tiny', 'llama3-tiny-f32.gguf')],
  ['llama3 (HF llama3 rope scaling)', fixture('llama3-tiny', 'hf-bf16')],
  ['qwen3 (q/k norms)', fixture('qwen3-tiny', 'qwen3-tiny-f32.gguf')],
  ['phi3 (partial rotary)', fixture('phi3-tiny', 'phi3-tiny-f32.gguf')],
  ['smollm3 (NoPE layers)', fixture('smollm3-tiny', 'smollm3-tiny-f32.gguf')],
  ['gemma3 (sliding layers, own RoPE)', fixture('gemma3-tiny', 'gemma3-tiny-f32.gguf')],
];

describe('context shift', () => {
  it.each(MODELS)('%s: layer 0 keys after the shift equal a fresh prefill\'s at the new positions; values unchanged', async (_name, file) => {
    expect(fs.existsSync(file)).toBe(true);
    const model = await loadModel(file, { backend: 'ts' });
    expect(contextShiftProblem(model.config, 'f32')).toBeUndefined();
    const ids = promptOf(model, 120);
    const [start, end] = [10, 70];
    const cache = model.newCache(0, 'f32');
    model.prefill(ids, cache);
    const shifted = shiftedCache(model.config, cache, start, end);
    expect(shifted.position).toBe(ids.length - (end - start));
    const fresh = model.newCache(0, 'f32');
    model.prefill([...ids.slice(0, start), ...ids.slice(end)], fresh);
    const hd = model.config.headDim;
    let moved = 0;
    for (let g = 0; g < model.config.numKvHeads; g++) {
      const a = byPosition(shifted, 0, g), b = byPosition(fresh, 0, g);
      const ka = shifted.head(0, g).keysF32(), kb = fresh.head(0, g).keysF32();
      const va = shifted.head(0, g).valuesF32(), vb = fresh.head(0, g).valuesF32();
      for (const [p, jb] of b) {
        const ja = a.get(p);
        if (ja === undefined) continue; // a sliding layer's fresh cache may hold positions the shifted one had dropped
        expect(maxRelDiff(ka.subarray(ja * hd, (ja + 1) * hd), kb.subarray(jb * hd, (jb + 1) * hd)), `head ${g} position ${p}`).toBeLessThan(1e-5);
        expect(va.subarray(ja * hd, (ja + 1) * hd)).toEqual(vb.subarray(jb * hd, (jb + 1) * hd));
        if (p >= start) moved++;
      }
    }
    expect(moved).toBeGreaterThan(0);
    // Every layer: the dropped positions are gone, the later ones renumbered, values as they were.
    for (let l = 0; l < model.config.numLayers; l++) {
      for (let g = 0; g < model.config.numKvHeads; g++) {
        const before = cache.head(l, g), after = shifted.head(l, g);
        const want = [...before.positions].filter((p) => p < start || p >= end).map((p) => (p >= end ? p - (end - start) : p));
        expect([...after.positions]).toEqual(want);
        const keptIdx = [...before.positions].flatMap((p, j) => (p < start || p >= end ? [j] : []));
        const vb = before.valuesF32(), va = after.valuesF32();
        keptIdx.forEach((j, i) => expect(va.subarray(i * hd, (i + 1) * hd)).toEqual(vb.subarray(j * hd, (j + 1) * hd)));
      }
    }
  });

  it.each(MODELS)('%s: shifted from the start, it continues like the cache with those entries evicted in place', async (_name, file) => {
    const model = await loadModel(file, { backend: 'ts' });
    const ids = promptOf(model, 100);
    const n = 40;
    const cache = model.newCache(0, 'f32');
    const logits = model.prefill(ids, cache);
    const evicted = cache.clone();
    for (let l = 0; l < model.config.numLayers; l++) {
      for (let g = 0; g < model.config.numKvHeads; g++) {
        const h = evicted.head(l, g);
        h.keep([...h.positions].flatMap((p, j) => (p >= n ? [j] : [])));
      }
    }
    const shifted = shiftedCache(model.config, cache, 0, n);
    const cont = promptOf(model, 12).reverse();
    const a = model.transformer.forward(cont, shifted, { logits: 'all' });
    const b = model.transformer.forward(cont, evicted, { logits: 'all' });
    expect(maxRelDiff(a, b)).toBeLessThan(1e-4);
    // Greedy decoding from both (the prompt's last logits are the same) gives the same tokens.
    const greedy = (c: RaggedKVCache, first: Float32Array): number[] => {
      const out: number[] = [];
      let lg = first;
      for (let t = 0; t < 8; t++) {
        let best = 0;
        for (let i = 1; i < lg.length; i++) if (lg[i] > lg[best]) best = i;
        out.push(best);
        lg = model.transformer.forward([best], c, { logits: 'last' }).slice();
      }
      return out;
    };
    const V = model.config.vocabSize;
    const lastA = a.slice(a.length - V), lastB = b.slice(b.length - V);
    expect(greedy(shifted, lastA)).toEqual(greedy(evicted, lastB));
    expect(logits.length).toBe(V);
  });

  it('refuses q8 storage, longrope scaling and ranges outside the processed positions, in one line', async () => {
    const model = await loadModel(fixture('llama3-tiny', 'llama3-tiny-f32.gguf'), { backend: 'ts' });
    const q8 = model.newCache(0, 'q8');
    model.prefill(promptOf(model, 20), q8);
    const f32 = model.newCache(0, 'f32');
    model.prefill(promptOf(model, 20), f32);
    const fails = (fn: () => unknown, text: string): void => {
      let err: unknown;
      try { fn(); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(CokvError);
      expect((err as CokvError).kind).toBe('state');
      expect((err as CokvError).message).toBe(text);
    };
    fails(() => shiftedCache(model.config, q8, 0, 5), 'context shift: not with q8 KV storage (re-rotating int8 keys would quantize them again; use f16 or f32)');
    fails(() => shiftedCache(model.config, f32, 5, 5), 'context shift: shift [5, 5) is not a non-empty range of the 20 positions processed');
    fails(() => shiftedCache(model.config, f32, 10, 21), 'context shift: shift [10, 21) is not a non-empty range of the 20 positions processed');
    const longrope = { ...model.config, layers: model.config.layers.map((l) => ({ ...l, rope: { ...l.rope!, scaling: { type: 'longrope' } } })) } as unknown as ModelConfig;
    expect(contextShiftProblem(longrope, 'f32')).toBe('not with longrope RoPE scaling (its frequencies depend on the sequence length)');
    expect(contextShiftProblem(model.config, 'f16')).toBeUndefined();
  });
});

describe.skipIf(!haveAssets)('Sequence.shift', () => {
  let model: CokvModel;
  beforeAll(async () => {
    model = await loadModel(asset('models/cokv-retrieval-tiny'), { backend: 'ts' });
  });

  it('drops the tokens, renumbers the positions, and generates as the raw shifted cache does (f32 and f16)', async () => {
    const ids = promptOf(model, 150);
    for (const kvDtype of ['f32', 'f16'] as const) {
      const seq = await model.createSequence({ kvDtype });
      await seq.prefill(ids);
      await seq.shift(20, 90);
      expect(seq.tokens).toEqual([...ids.slice(0, 20), ...ids.slice(90)]);
      expect(seq.position).toBe(80);
      expect([...seq.headPositions(0, 0)]).toEqual(Array.from({ length: 80 }, (_, i) => i));
      const g = seq.generate({ maxTokens: 6, temperature: 0 });
      await g.complete();
      // The same steps on the raw cache.
      const raw = model.newCache(0, kvDtype);
      let lg = model.prefill(ids, raw);
      const c = shiftedCache(model.config, raw, 20, 90);
      const want: number[] = [];
      for (let t = 0; t < 6; t++) {
        let best = 0;
        for (let i = 1; i < lg.length; i++) if (lg[i] > lg[best]) best = i;
        want.push(best);
        if (t < 5) lg = model.transformer.forward([best], c, { logits: 'last' }).slice();
      }
      expect(g.tokens).toEqual(want);
      expect(seq.position).toBe(80 + 6);
      await expect(seq.compress(await import('../src/press/registry.js').then((r) => r.createPress('snapkv', { budget: 16 }, model.config)))).rejects.toThrow(/plain prefill/);
      seq.dispose();
    }
    const q8 = await model.createSequence({ kvDtype: 'q8' });
    await q8.prefill(ids.slice(0, 30));
    await expect(q8.shift(0, 10)).rejects.toThrow('context shift: not with q8 KV storage');
    expect(q8.position).toBe(30); // refused before anything changed
    q8.dispose();
  });
});
