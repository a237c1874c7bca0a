/**
 * Press prefills in chunks: the exact mode (full K/V until the last chunk, compressed there) keeps what a one-pass
 * press prefill keeps; the bounded `prefillEvict` mode never holds more than budget + chunk per head (checked through
 * the cache's own byte accounting at every compression); F16 is the default storage; bad combinations are one line.
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { kvEntryBytes, type RaggedKVCache } from '../src/cache/ragged.js';
import type { LayerPrefillContext } from '../src/model/forward.js';
import { createPress } from '../src/press/registry.js';
import type { Press } from '../src/press/types.js';
import type { PressOptions } from '../src/press/options.js';
import { asset, cokv, expectCokvError, haveAssets, repoRoot, tmpDir } from './helpers.js';
import { CokvError } from '../src/errors.js';

const tinyPath = asset('models/cokv-retrieval-tiny');
const storiesPath = asset('models/stories260K');
const profileOf = (model: string, kind: string) => path.join(repoRoot, 'results/profiles', `${model}__${kind}.json`);

/** Every press family, with the files the static ones read. */
function presses(model: string, budget: number): [string, PressOptions][] {
  return [
    ['snapkv', { budget }], ['pyramidkv', { budget }], ['adakv', { budget }], ['ada-pyramidkv', { budget }],
    ['streaming', { budget }], ['random', { budget, seed: 3 }], ['snapkv', { ratio: 0.1 }],
    ['headkv', { budget, headScores: profileOf(model, 'headkv') }], ['cokv', { budget, profile: profileOf(model, 'loglik') }],
  ];
}

/** Positions every (layer, KV head) keeps. */
function kept(seq: { lengths(): number[][]; headPositions(l: number, g: number): Int32Array }): number[][][] {
  return seq.lengths().map((row, l) => row.map((_, g) => Array.from(seq.headPositions(l, g))));
}

const promptOf = (n: number, vocab: number) => Array.from({ length: n }, (_, i) => 3 + ((i * 37 + (i >> 3)) % (vocab - 3)));

/** A press that records, at every call, the longest budgeted head and the budgeted bytes the cache holds. */
class Recording implements Press {
  readonly name: string;
  readonly window?: number;
  calls = 0;
  longest = 0;
  maxBudgetedBytes = 0;
  constructor(private readonly inner: Press) {
    this.name = inner.name;
    this.window = inner.window;
  }
  compressLayer(ctx: LayerPrefillContext, reserve: number): void {
    this.calls++;
    for (const l of ctx.cache.budgetedLayers()) for (let g = 0; g < ctx.cache.numKvHeads; g++) this.longest = Math.max(this.longest, ctx.cache.head(l, g).length);
    this.maxBudgetedBytes = Math.max(this.maxBudgetedBytes, ctx.cache.budgetedBytes());
    this.inner.compressLayer(ctx, reserve);
  }
}

describe.skipIf(!haveAssets)('press prefill in chunks (exact mode) keeps what one pass keeps', () => {
  const cases: { name: string; path: string; tokens: number; chunkSize?: number; budget: number }[] = [
    // 1500 tokens: the engine's 512-row chunks (first chunk 476).
    { name: 'cokv-retrieval-tiny', path: tinyPath, tokens: 1500, budget: 64 },
    // stories260K's context is 512: chunks of 64 so that the prompt takes several.
    { name: 'stories260K', path: storiesPath, tokens: 400, chunkSize: 64, budget: 48 },
  ];
  for (const c of cases) {
    describe(c.name, () => {
      let model: CokvModel;
      let ids: number[];
      beforeAll(async () => {
        model = await loadModel(c.path);
        ids = promptOf(c.tokens, model.config.vocabSize);
      });
      for (const [name, o] of presses(c.name, c.budget)) {
        it(`${name} ${JSON.stringify(o.budget ?? `ratio ${o.ratio}`)}: the same kept positions and greedy tokens as a one-pass prefill`, async () => {
          // Chunked K/V and queries equal one pass's up to float rounding (backends may block rows differently), so
          // the test compares what that rounding could change: the kept sets and the decoded tokens.
          const run = async (chunkSize: number | undefined) => {
            const s = await model.createSequence();
            await s.prefill(ids, { press: createPress(name, o, model.config), chunkSize, reserve: 8 });
            const g = s.generate({ maxTokens: 8, temperature: 0, eosIds: [] });
            const k = kept(s);
            await g.complete();
            return { kept: k, tokens: g.tokens, peak: model.transformer.workspaceRows };
          };
          const one = await run(0);
          const chunked = await run(c.chunkSize);
          expect(chunked.kept).toEqual(one.kept);
          expect(chunked.tokens).toEqual(one.tokens);
          expect(one.kept.flat().reduce((a, h) => a + h.length, 0)).toBeLessThan(ids.length * one.kept.flat().length);
        });
      }

      it('prefill in chunks + compress() is the press prefill in the same chunks, K/V bit for bit', async () => {
        const press = () => createPress('adakv', { budget: c.budget }, model.config);
        const a = await model.createSequence();
        await a.prefill(ids, { press: press(), chunkSize: c.chunkSize });
        const b = await model.createSequence();
        await b.prefill(ids, { chunkSize: c.chunkSize });
        await b.compress(press());
        expect(kept(b)).toEqual(kept(a));
        expect(a.logits).toEqual(b.logits);
        const ca = (a as unknown as { cache: RaggedKVCache }).cache;
        const cb = (b as unknown as { cache: RaggedKVCache }).cache;
        for (let l = 0; l < model.config.numLayers; l++) {
          const ha = ca.head(l, 0), hb = cb.head(l, 0);
          expect(Array.from(hb.entries().keys)).toEqual(Array.from(ha.entries().keys));
        }
      });
    });
  }

  it('the TS backend computes every row alike: chunked and one-pass press prefills hold the same K/V bits', async () => {
    const model = await loadModel(storiesPath, { backend: 'ts' });
    const ids = promptOf(300, model.config.vocabSize);
    const run = async (chunkSize: number) => {
      const s = await model.createSequence();
      await s.prefill(ids, { press: createPress('snapkv', { budget: 40 }, model.config), chunkSize });
      return s;
    };
    const one = await run(0), chunked = await run(64);
    expect(kept(chunked)).toEqual(kept(one));
    expect(chunked.logits).toEqual(one.logits);
  });
});

describe.skipIf(!haveAssets)('prefillEvict: held KV stays within budget + chunk', () => {
  let model: CokvModel;
  let ids: number[];
  beforeAll(async () => {
    model = await loadModel(tinyPath);
    ids = promptOf(1500, model.config.vocabSize);
  });

  it('snapkv B=64, chunks of 128: every head holds ≤ 64 + 128 entries at every compression, ≤ 64 at the end', async () => {
    const chunk = 128, budget = 64;
    const rec = new Recording(createPress('snapkv', { budget }, model.config));
    const s = await model.createSequence();
    await s.prefill(ids, { press: rec, prefillEvict: true, chunkSize: chunk });
    const chunks = Math.ceil(ids.length / chunk);
    expect(rec.calls).toBe(chunks * model.config.numLayers);
    expect(rec.longest).toBeLessThanOrEqual(budget + chunk);
    const heads = model.config.numLayers * model.config.numKvHeads;
    const entry = kvEntryBytes(s.kvDtype, model.config.headDim);
    expect(rec.maxBudgetedBytes).toBeLessThanOrEqual(heads * (budget + chunk) * entry);
    expect(s.lengths().flat().every((n) => n <= budget)).toBe(true);
    expect(s.stats.kvBudgetedBytes).toBeLessThanOrEqual(heads * budget * entry);
    // The exact mode holds the whole prompt until its last chunk.
    const exact = new Recording(createPress('snapkv', { budget }, model.config));
    await (await model.createSequence()).prefill(ids, { press: exact, chunkSize: chunk });
    expect(exact.calls).toBe(model.config.numLayers);
    expect(exact.longest).toBe(ids.length);
  });

  for (const [name, o] of [['adakv', { budget: 48 }], ['pyramidkv', { budget: 48 }], ['cokv', { budget: 48, profile: profileOf('cokv-retrieval-tiny', 'loglik') }]] as const) {
    it(`${name}: the budgeted bytes held never pass heads × (budget + chunk) entries; the result holds ≤ heads × budget`, async () => {
      const chunk = 200;
      const rec = new Recording(createPress(name, o, model.config));
      const s = await model.createSequence();
      await s.prefill(ids, { press: rec, prefillEvict: true, chunkSize: chunk, reserve: 4 });
      const heads = model.config.numLayers * model.config.numKvHeads;
      const entry = kvEntryBytes(s.kvDtype, model.config.headDim);
      expect(rec.calls).toBe(Math.ceil(ids.length / chunk) * model.config.numLayers);
      expect(rec.maxBudgetedBytes).toBeLessThanOrEqual(heads * (o.budget + chunk) * entry);
      expect(s.stats.kvBudgetedBytes).toBeLessThanOrEqual(heads * o.budget * entry);
      expect(s.stats.kvBudgetedBytes).toBeGreaterThan(heads * (o.budget - 8) * entry);
      await s.generate({ maxTokens: 3, temperature: 0 }).complete();
    });
  }

  it('generate({ prefillEvict }) reports the bounded prompt cache; the exact mode may keep other entries', async () => {
    const press = createPress('snapkv', { budget: 64 }, model.config);
    const evict = model.generate(ids, { press, prefillEvict: true, maxTokens: 4, temperature: 0 });
    await evict.complete();
    const exact = model.generate(ids, { press, maxTokens: 4, temperature: 0 });
    await exact.complete();
    expect(evict.stats!.promptBudgetedKvBytes).toBe(exact.stats!.promptBudgetedKvBytes);
    expect(evict.stats!.kvDtype).toBe('f16');
  });

  it('refuses prefillEvict without a press, with the full press, in one pass, or with chunks shorter than the window', async () => {
    const s = await model.createSequence();
    const rejects = async (p: Promise<unknown>, msg: string) => {
      const e = await p.then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(CokvError);
      expect((e as CokvError).kind).toBe('flag');
      expect((e as CokvError).message).toContain(msg);
      expect((e as CokvError).message).not.toContain('\n');
    };
    await rejects(s.prefill(ids, { prefillEvict: true }), 'prefillEvict: needs a press');
    await rejects(s.prefill(ids, { prefillEvict: true, press: createPress('full', {}, model.config) }), 'prefillEvict: needs a press');
    const snap = createPress('snapkv', { budget: 64, window: 16 }, model.config);
    await rejects(s.prefill(ids, { prefillEvict: true, press: snap, chunkSize: 0 }), 'chunkSize 0');
    await rejects(s.prefill(ids, { prefillEvict: true, press: snap, chunkSize: 8 }), 'shorter than the press\'s window 16');
    expect(s.position).toBe(0); // nothing was run
    expectCokvError(() => model.generate(ids, { prefillEvict: true }), 'prefillEvict: needs a press');
    const shared = model.prefillShared(ids.slice(0, 100));
    expectCokvError(() => model.generate(ids.slice(0, 100), { prefillEvict: true, press: snap, prefilled: model.fromShared(shared, undefined, 4) }), 'prefillEvict: not with prefilled');
  });
});

describe.skipIf(!haveAssets)('CLI: F16 by default, --prefill-evict', () => {
  it('generate --json names the KV storage: f16 by default, f32 when asked; the summary line too', () => {
    const base = ['generate', '--model', storiesPath, '--prompt', 'Once upon a time', '--max-tokens', '4'];
    const d = cokv(...base, '--json');
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout).stats.kvDtype).toBe('f16');
    const f = cokv(...base, '--json', '--kv-dtype', 'f32');
    expect(JSON.parse(f.stdout).stats.kvDtype).toBe('f32');
    const line = cokv(...base, '--press', 'snapkv', '--budget', '8', '--window', '4', '--prefill-evict');
    expect(line.code, line.stderr).toBe(0);
    expect(line.stderr).toContain('KV f16 ');
  });

  it('bad --prefill-evict combinations: one line, exit 1', () => {
    const base = ['generate', '--model', storiesPath, '--prompt', 'Once upon a time', '--max-tokens', '4'];
    for (const [args, msg] of [
      [['--prefill-evict'], '--prefill-evict: needs --press'],
      [['--prefill-evict', '--press', 'full'], '--prefill-evict: needs --press'],
      [['--prefill-evict', '--press', 'snapkv', '--budget', '700', '--window', '600'], '--window 600 is longer than the 512-token prefill chunk'],
    ] as const) {
      const r = cokv(...base, ...args);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(msg);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const e = cokv('eval', '--model', tinyPath, '--data', asset('data/retrieval-dev.jsonl'), '--dataset', 'retrieval', '--presses', 'full',
      '--prefill-evict', '--out', tmpDir(), '--quiet');
    expect(e.code).toBe(1);
    expect(e.stderr).toContain('--prefill-evict: needs a press other than full');
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    const w = cokv('eval', '--model', tinyPath, '--data', asset('data/retrieval-dev.jsonl'), '--dataset', 'retrieval', '--presses', 'snapkv',
      '--budgets', '700', '--window', '600', '--prefill-evict', '--out', tmpDir(), '--quiet');
    expect(w.code).toBe(1);
    expect(w.stderr).toContain("--prefill-evict: the chunk size 512 is shorter than the press's window 600");
    expect(w.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('eval records the F16 default and --prefill-evict in its settings and folder names', () => {
    const out = tmpDir();
    const args = ['eval', '--model', tinyPath, '--data', asset('data/retrieval-dev.jsonl'), '--dataset', 'retrieval', '--subset', 'passkey',
      '--lengths', '1024', '--split', 'all', '--limit', '1', '--presses', 'full,snapkv', '--budgets', '64', '--out', out, '--quiet', '--json'];
    const exact = cokv(...args);
    expect(exact.code, exact.stderr).toBe(0);
    const evict = cokv(...args, '--prefill-evict');
    expect(evict.code, evict.stderr).toBe(0);
    const [full, snap] = JSON.parse(exact.stdout), [, snapEvict] = JSON.parse(evict.stdout);
    expect(full.settings.kvDtype).toBe('f16');
    expect(snap.settings.prefillEvict).toBeUndefined();
    expect(snapEvict.settings.prefillEvict).toBe(true);
    expect(fs.readdirSync(out).sort()).toEqual([
      'retrieval__cokv-retrieval-tiny__full__full__f16', 'retrieval__cokv-retrieval-tiny__snapkv__64__f16',
      'retrieval__cokv-retrieval-tiny__snapkv__64__f16__evict',
    ]);
    expect(snapEvict.keptKvBytes).toBeLessThanOrEqual(snap.keptKvBytes);
  });
});
