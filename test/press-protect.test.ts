/**
 * Boundary protection (issue #19 item 3, arXiv 2605.18053): the `protect` option of every scored press and the
 * `boundary-snapkv` press. Kept sets contain the protected boundary tokens and the window, budgets stay exact,
 * protect = 0 is the plain press, bad values are one CokvError line; and the plumbing from Sequence.prefill /
 * compress, CokvModel.prefill and generate to the press.
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Command } from 'commander';
import { checkBoundaries, protectedCount, protectedEntries } from '../src/press/boundaries.js';
import { createPress, PRESS_NAMES } from '../src/press/registry.js';
import type { PressOptions } from '../src/press/options.js';
import { ScoredPress } from '../src/press/press.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { addPressFlags, pressOptionsFromFlags, type PressFlags } from '../src/cli/press-flags.js';
import { loadModel, type CokvModel } from '../src/engine.js';
import { Sequence } from '../src/session/sequence.js';
import { tinyConfig } from './random-model.js';
import { compressRandomCache, keptPositions } from './press-helpers.js';
import { CokvError } from '../src/errors.js';
import { asset, cokv, expectCokvError, expectUserError, haveAssets, tmpDir } from './helpers.js';

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

describe('the boundary rule', () => {
  const pos = Int32Array.from(range(0, 100));
  it('shares the protected slots equally among segments, remainder to the earlier ones, first tokens of each', () => {
    expect(protectedEntries(pos, 90, [10, 50], 9)).toEqual([0, 1, 2, 10, 11, 12, 50, 51, 52]);
    expect(protectedEntries(pos, 90, [10, 50], 10)).toEqual([0, 1, 2, 3, 10, 11, 12, 50, 51, 52]);
    // Position 0 is always a boundary; repeats and order do not matter.
    expect(protectedEntries(pos, 90, [50, 0, 10, 10], 9)).toEqual([0, 1, 2, 10, 11, 12, 50, 51, 52]);
  });

  it('a short segment keeps all it has and the rest is re-shared; segments in the window are dropped', () => {
    // Segments [0,10) [10,11) [11,90): shares 3,3,3 → the 1-token segment takes 1, the other 8 go 4 + 4.
    expect(protectedEntries(pos, 90, [10, 11], 9)).toEqual([0, 1, 2, 3, 10, 11, 12, 13, 14]);
    // A boundary at 95 begins inside the window (entries ≥ 90 are not candidates): the slots stay with the others.
    expect(protectedEntries(pos, 90, [95], 6)).toEqual(range(0, 6));
  });

  it('without boundaries the first `count` tokens are protected (the sink)', () => {
    expect(protectedEntries(pos, 90, undefined, 5)).toEqual(range(0, 5));
    expect(protectedEntries(pos, 90, [], 0)).toEqual([]);
  });

  it('works on positions, not entry indices (a head compressed before holds gaps)', () => {
    const gappy = Int32Array.from([0, 1, 7, 8, 30, 31, 32, 60, 61, 62]);
    // Boundaries 5 and 31: segments {0,1} {7,8,30} {31,32,60,61,62} → 2 each → entries 0,1 | 2,3 | 5,6.
    expect(protectedEntries(gappy, 10, [5, 31], 6)).toEqual([0, 1, 2, 3, 5, 6]);
  });

  it('protected count is ⌊protect·B⌋, at most B − w', () => {
    expect(protectedCount(0.1, 128, 8)).toBe(12);
    expect(protectedCount(0.1, 9, 8)).toBe(0);
    expect(protectedCount(0.95, 20, 8)).toBe(12);
    expect(protectedCount(0, 128, 8)).toBe(0);
  });

  it('bad boundaries are one CokvError line naming the option', () => {
    for (const [b, re] of [[[1, -1], /-1 is not a non-negative integer/], [[2.5], /2.5 is not/], [[10], /10 is past the end of the 10-token prompt/], [['3'], /3 is not/]] as const) {
      const e = expectCokvError(() => checkBoundaries(b, 10), 'boundaries: ', re);
      expect(e.kind).toBe('flag');
    }
    expectCokvError(() => checkBoundaries(5, 10), 'boundaries: must be an array');
    expect(checkBoundaries([7, 0, 7, 3], 10)).toEqual([0, 3, 7]);
  });
});

describe('protect through createPress, every scored press', () => {
  const dir = tmpDir('cokv-press-protect-');
  const cfg = tinyConfig({ numLayers: 3, numKvHeads: 2, numHeads: 4, headDim: 4 });
  const profile = path.join(dir, 'profile.json');
  fs.writeFileSync(profile, JSON.stringify({ shape: [3, 2], scores: [[0.3, 0.1], [0.9, 0.2], [0.5, 0.05]] }));
  const headScores = path.join(dir, 'heads.json');
  fs.writeFileSync(headScores, JSON.stringify({ scores: [[1, 2, 3, 4], [5, 1, 2, 3], [2, 2, 1, 9]] }));
  const L = 120, B = 40, w = 4;
  const boundaries = [0, 30, 31, 70];
  const scored = PRESS_NAMES.filter((n) => n !== 'full');
  const base: PressOptions = { budget: B, window: w, profile, headScores, alpha: 1 };

  it('keeps the protected tokens and the window, with the plain press\'s per-head counts (budgets exact)', () => {
    for (const name of scored) {
      for (const redistribute of [true, false]) {
        const plain = compressRandomCache(createPress(name, { ...base, protect: name === 'boundary-snapkv' ? 0 : undefined, redistribute }, cfg), cfg, L, 5);
        const press = createPress(name, { ...base, protect: 0.25, redistribute }, cfg) as ScoredPress;
        const cache = compressRandomCache(press, cfg, L, 5, boundaries);
        const r = protectedCount(0.25, B, w); // 10
        expect(r).toBe(10);
        const sets = keptPositions(cache);
        // 10 slots over segments [0,30) [30,31) [31,70) [70,116): 3, 1 (all it has), 3, 3.
        const want = protectedEntries(Int32Array.from(range(0, L)), L - w, boundaries, r);
        expect(want).toEqual([0, 1, 2, 30, 31, 32, 33, 70, 71, 72]);
        sets.flat().forEach((kept, i) => {
          const label = `${name} redistribute=${redistribute} head ${i}`;
          for (const p of want) expect(kept, label).toContain(p);
          for (const p of range(L - w, L)) expect(kept, label).toContain(p);
        });
        if (name === 'snapkv' || name === 'boundary-snapkv' || name === 'streaming') {
          expect(cache.lengths().flat().every((n) => n === B), name).toBe(true);
        }
        if (redistribute) {
          const total = cache.lengths().flat().reduce((a, b) => a + b, 0);
          expect(total, name).toBe(cfg.numLayers * cfg.numKvHeads * B);
        }
        // Ada-KV shares each layer's H·(B − w − r) among its heads: each layer still holds H·B. (PyramidKV, HeadKV,
        // CoKV and random share the model's total across layers, so only that total is fixed.)
        const rows = (c: RaggedKVCache) => c.lengths().map((row) => row.reduce((a, b) => a + b, 0));
        if (name === 'adakv' && redistribute) expect(rows(cache), name).toEqual(rows(plain));
      }
    }
  });

  it('protect = 0 (and boundary-snapkv with protect 0) is the plain press, token for token', () => {
    for (const name of scored.filter((n) => n !== 'boundary-snapkv')) {
      const plain = keptPositions(compressRandomCache(createPress(name, base, cfg), cfg, L, 9));
      const zero = keptPositions(compressRandomCache(createPress(name, { ...base, protect: 0 }, cfg), cfg, L, 9, boundaries));
      expect(zero, name).toEqual(plain);
    }
    const snap = keptPositions(compressRandomCache(createPress('snapkv', base, cfg), cfg, L, 9));
    expect(keptPositions(compressRandomCache(createPress('boundary-snapkv', { ...base, protect: 0 }, cfg), cfg, L, 9, boundaries))).toEqual(snap);
  });

  it('boundary-snapkv is SnapKV with protect 0.1; the other selected tokens are SnapKV\'s top among the rest', () => {
    const a = keptPositions(compressRandomCache(createPress('boundary-snapkv', base, cfg), cfg, L, 11, boundaries));
    const b = keptPositions(compressRandomCache(createPress('snapkv', { ...base, protect: 0.1 }, cfg), cfg, L, 11, boundaries));
    expect(a).toEqual(b);
    const plain = keptPositions(compressRandomCache(createPress('snapkv', base, cfg), cfg, L, 11));
    // r = ⌊0.1·40⌋ = 4: one slot per segment.
    const want = protectedEntries(Int32Array.from(range(0, L)), L - w, boundaries, 4);
    expect(want).toEqual([0, 30, 31, 70]);
    a.flat().forEach((kept, i) => {
      const picks = kept.filter((p) => p < L - w && !want.includes(p));
      const plainPicks = plain.flat()[i].filter((p) => p < L - w && !want.includes(p));
      // The 32 unprotected picks are the top 32 of the unprotected tokens; SnapKV's top 36 of all tokens holds at
      // most 4 protected ones, so it contains them.
      expect(picks.length).toBe(B - w - want.length);
      for (const p of picks) expect(plainPicks).toContain(p);
    });
  });

  it('without boundaries a protecting press keeps the first r prompt tokens', () => {
    const sets = keptPositions(compressRandomCache(createPress('snapkv', { ...base, protect: 0.25 }, cfg), cfg, L, 13));
    for (const kept of sets.flat()) for (const p of range(0, 10)) expect(kept).toContain(p);
  });

  it('bad protect values are one CokvError line naming protect', () => {
    for (const v of [1, -0.1, 1.5, Number.NaN]) {
      const e = expectCokvError(() => createPress('snapkv', { budget: 16, protect: v }, cfg), 'protect: ', 'must be a fraction in [0, 1)');
      expect(e.kind).toBe('flag');
    }
    expectCokvError(() => createPress('snapkv', { budget: 16, protect: '0.1' as unknown as number }, cfg), 'protect: ');
  });
});

describe('--protect and --preset flags', () => {
  const parse = (...args: string[]): PressFlags => {
    const cmd = addPressFlags(new Command('t').exitOverride());
    let got: PressFlags | undefined;
    cmd.action((f: PressFlags) => { got = f; });
    cmd.parse(args, { from: 'user' });
    return got!;
  };

  it('--protect alone is 0.1, with a value that value; absent leaves protect unset', () => {
    expect(pressOptionsFromFlags(parse('--protect')).protect).toBe(0.1);
    expect(pressOptionsFromFlags(parse('--protect', '0.2')).protect).toBe(0.2);
    expect('protect' in pressOptionsFromFlags(parse())).toBe(false);
  });

  it('bad --protect / --preset values are one CokvError line naming the flag', () => {
    expectCokvError(() => pressOptionsFromFlags(parse('--protect', '1')), '--protect: ', '[0, 1)');
    expectCokvError(() => pressOptionsFromFlags(parse('--protect', 'x')), '--protect: ', 'not a number');
    expectCokvError(() => pressOptionsFromFlags(parse('--protect', '-0.5')), '--protect: ');
    expectCokvError(() => pressOptionsFromFlags(parse('--preset', 'kvpres')), "--preset: 'kvpres' must be kvpress");
  });

  it('--preset kvpress replaces the window/pool/kernel defaults; given flags win', () => {
    expect(pressOptionsFromFlags(parse())).toMatchObject({ window: 8, pool: 'max', kernel: 7 });
    const p = pressOptionsFromFlags(parse('--preset', 'kvpress'));
    expect(p).toMatchObject({ preset: 'kvpress', window: undefined, pool: undefined, kernel: undefined });
    expect(pressOptionsFromFlags(parse('--preset', 'kvpress', '--window', '8', '--pool', 'max'))).toMatchObject({ window: 8, pool: 'max', kernel: undefined });
    const press = createPress('snapkv', { ...p, ratio: 0.5 }, tinyConfig()) as ScoredPress;
    expect(press.options).toMatchObject({ window: 64, pool: 'avg', kernel: 5 });
    expect((createPress('streaming', { ...p, ratio: 0.5 }, tinyConfig()) as ScoredPress).options.window).toBe(1);
  });
});

describe.runIf(haveAssets)('boundaries through Sequence.prefill / compress, CokvModel.prefill and generate', () => {
  let model: CokvModel;
  let ids: number[];
  beforeAll(async () => {
    model = await loadModel(asset('models/cokv-retrieval-tiny'), { backend: 'ts' });
    const item = JSON.parse(fs.readFileSync(asset('data/retrieval-dev.jsonl'), 'utf8').split('\n')[0]) as { context: string; input: string };
    ids = model.encode(`${item.context}\n${item.input}`).slice(0, 300);
  });
  const B = 64;
  const boundaries = [0, 100, 250];

  const sets = (s: Sequence) => s.lengths().map((row, l) => row.map((_, g) => Array.from(s.headPositions(l, g))));

  it('the kept sets hold the protected tokens, the same by every path', async () => {
    const press = createPress('boundary-snapkv', { budget: B, protect: 0.25 }, model.config);
    const r = protectedCount(0.25, B, 8); // 16 → 6, 5, 5
    const want = protectedEntries(Int32Array.from(range(0, ids.length)), ids.length - 8, boundaries, r);
    expect(want).toEqual([...range(0, 6), ...range(100, 105), ...range(250, 255)]);
    const a = await model.createSequence({ kvDtype: 'f32' });
    await a.prefill(ids, { press, boundaries });
    const viaPrefill = sets(a);
    for (const kept of viaPrefill.flat()) {
      expect(kept.length).toBe(B);
      for (const p of want) expect(kept).toContain(p);
    }
    const b = await model.createSequence({ kvDtype: 'f32' });
    await b.prefill(ids);
    await b.compress(press, { boundaries });
    expect(sets(b)).toEqual(viaPrefill);
    const cache = model.newCache(ids.length, 'f32');
    model.prefill(ids, cache, press, 0, { boundaries });
    expect(cache.lengths().map((row, l) => row.map((_, g) => Array.from(cache.head(l, g).positions.slice(0, cache.head(l, g).length))))).toEqual(viaPrefill);
    // Without boundaries only the first r tokens are protected: another set.
    const c = await model.createSequence({ kvDtype: 'f32' });
    await c.prefill(ids, { press });
    for (const kept of sets(c).flat()) for (const p of range(0, r)) expect(kept).toContain(p);
    expect(sets(c)).not.toEqual(viaPrefill);
  });

  it('boundaries of a later prefill count from its own first token', async () => {
    const press = createPress('snapkv', { budget: B, protect: 0.25 }, model.config);
    const s = await model.createSequence({ kvDtype: 'f32' });
    await s.append(ids.slice(0, 50));
    await s.prefill(ids.slice(50), { press, boundaries: [50, 200] }); // positions 100 and 250
    const whole = await model.createSequence({ kvDtype: 'f32' });
    await whole.prefill(ids, { press, boundaries });
    expect(sets(s)).toEqual(sets(whole));
  });

  it('the bounded prefillEvict mode keeps the protected tokens through every chunk', async () => {
    const press = createPress('boundary-snapkv', { budget: B, protect: 0.25 }, model.config);
    const s = await model.createSequence({ kvDtype: 'f32' });
    await s.prefill(ids, { press, boundaries, prefillEvict: true, chunkSize: 64 });
    const want = protectedEntries(Int32Array.from(range(0, ids.length)), ids.length - 8, boundaries, protectedCount(0.25, B, 8));
    for (const kept of sets(s).flat()) {
      expect(kept.length).toBe(B);
      for (const p of want) expect(kept).toContain(p);
    }
  });

  it('generate passes boundaries to its prefill', async () => {
    const press = createPress('boundary-snapkv', { budget: B, protect: 0.25 }, model.config);
    const g = model.generate(ids, { press, boundaries, maxTokens: 2, temperature: 0, kvDtype: 'f32' });
    await g.complete();
    const s = await model.createSequence({ kvDtype: 'f32' });
    await s.prefill(ids, { press, boundaries });
    const h = s.generate({ maxTokens: 2, temperature: 0 });
    await h.complete();
    expect(g.tokens).toEqual(h.tokens);
  });

  it('bad boundaries are refused with one line before anything runs', async () => {
    const press = createPress('boundary-snapkv', { budget: B }, model.config);
    const s = await model.createSequence();
    let err: unknown;
    try { await s.prefill(ids, { press, boundaries: [0, ids.length] }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(CokvError);
    expect((err as CokvError).message).toBe(`boundaries: ${ids.length} is past the end of the ${ids.length}-token prompt`);
    expect(s.position).toBe(0);
    expectCokvError(() => model.prefill(ids, model.newCache(), press, 0, { boundaries: [-3] }), 'boundaries: -3');
    expectCokvError(() => model.generate(ids, { press, boundaries: [1.5] }), 'boundaries: 1.5');
  });
});

describe.runIf(haveAssets)('the CLI flags', () => {
  const model = () => asset('models/cokv-retrieval-tiny');
  it('bad --protect / --preset values exit 1 with one line naming the flag', () => {
    const bad = cokv('generate', '--model', model(), '--prompt', 'hello there', '--press', 'snapkv', '--budget', '16', '--protect', '1.5', '--max-tokens', '2');
    expectUserError(bad, /^cokv: --protect: 1\.5 must be a fraction in \[0, 1\)$/m);
    const preset = cokv('generate', '--model', model(), '--prompt', 'hello there', '--press', 'snapkv', '--budget', '16', '--preset', 'vllm', '--max-tokens', '2');
    expectUserError(preset, /^cokv: --preset: 'vllm' must be kvpress$/m);
    // The preset's window 64 applies unless --window is given.
    const small = cokv('generate', '--model', model(), '--prompt', 'hello there', '--press', 'boundary-snapkv', '--preset', 'kvpress', '--budget', '64', '--max-tokens', '2');
    expectUserError(small, /^cokv: --budget: 64 must be larger than the window \(64\)$/m);
  });
});
