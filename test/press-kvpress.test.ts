/**
 * `preset: 'kvpress'` reproduces NVIDIA kvpress's own kept sets (issue #19 item 5): SnapKV, Ada-KV (α 0.2 and
 * 0.5), PyramidKV (β 20 and 2) and StreamingLLM at compression ratios 0.25…0.9 on the peer-check prompts
 * (../shared/docs/findings/peer-kvpress.md §1), per (layer, KV head). The fixture was made by kvpress itself
 * (tools/reference/kvpress_keptsets.py); the whole prompt is compressed in one prefill, as there.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { createPress } from '../src/press/registry.js';
import type { PressOptions } from '../src/press/options.js';
import { resolveBudget } from '../src/press/options.js';
import { pyramidKvpressLayerBudget } from '../src/press/allocators/kvpress.js';
import type { Sequence } from '../src/session/sequence.js';
import { tinyConfig } from './random-model.js';
import { asset, expectCokvError, haveAssets, repoRoot } from './helpers.js';

const tinyCfg = () => tinyConfig();

interface Fixture {
  prompts: { name: string; index: number; length: number; idsSha256: string }[];
  cases: { prompt: string; name: string; ratio: number; kvpress: string; cokv: PressOptions & { press: string }; counts: number[][]; kept: string[][] }[];
}

const fixture = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test/fixtures/kvpress/keptsets.json'), 'utf8')) as Fixture;

/** Positions whose bit is set in a little-endian base64 bitmap. */
function fromBitmap(b64: string, length: number): number[] {
  const bits = Buffer.from(b64, 'base64');
  const out: number[] = [];
  for (let p = 0; p < length; p++) if (bits[p >> 3] & (1 << (p & 7))) out.push(p);
  return out;
}

describe('kvpress ratio and PyramidKV arithmetic', () => {
  it('a kvpress-preset ratio keeps int(L·(1 − r)), float truncation included', () => {
    const o = (ratio: number): PressOptions => ({ preset: 'kvpress', ratio, window: 64 });
    expect(resolveBudget(o(0.9), 1020)).toBe(101); // 1020·(1 − 0.9) = 101.99999999999997
    expect(resolveBudget(o(0.75), 502)).toBe(125); // 125.5 truncated
    expect(resolveBudget(o(0.5), 1012)).toBe(506);
    // Without the preset, a ratio is the kept fraction, rounded to nearest.
    expect(resolveBudget({ ratio: 0.25, window: 64 }, 502)).toBe(126);
    expect(resolveBudget({ ratio: 0.1, window: 64 }, 1020)).toBe(102);
  });

  it('PyramidKV layer budgets: clipped ramp, fallback below the window, ties rounded to even', () => {
    // L = 502, r = 0.75: K = 125.5 → K/β < 64 → every layer round(125.5) = 126.
    expect([0, 1, 2, 3].map((l) => pyramidKvpressLayerBudget(l, 4, 502, 64, 502 * 0.25, 20))).toEqual([126, 126, 126, 126]);
    // L = 502, r = 0.5: K = 251 → max 502.45… ≥ L − w = 438 → max 438, min 2·251 − 438 = 64 → 438, 313, 189, 64.
    expect([0, 1, 2, 3].map((l) => pyramidKvpressLayerBudget(l, 4, 502, 64, 502 * 0.5, 20))).toEqual([438, 313, 189, 64]);
    // One layer: round(K) (kvpress divides by layers − 1).
    expect(pyramidKvpressLayerBudget(0, 1, 502, 64, 251, 20)).toBe(251);
  });

  it('bad ratios under the preset are one CokvError line', () => {
    expectCokvError(() => createPress('snapkv', { preset: 'kvpress', ratio: 1 }, tinyCfg()), 'ratio: 1 must be in [0, 1)', 'fraction removed');
    expectCokvError(() => createPress('snapkv', { preset: 'kvpress', ratio: -0.1 }, tinyCfg()), 'ratio: ');
    expectCokvError(() => createPress('snapkv', { preset: 'kvpres' as never, ratio: 0.5 }, tinyCfg()), "preset: 'kvpres' must be kvpress");
    // The preset's window is 64: a budget must exceed it unless a window is given.
    expectCokvError(() => createPress('snapkv', { preset: 'kvpress', budget: 64 }, tinyCfg()), 'budget: 64 must be larger than the window (64)');
    expect(() => createPress('snapkv', { preset: 'kvpress', budget: 64, window: 8 }, tinyCfg())).not.toThrow();
  });
});

describe.runIf(haveAssets)('--preset kvpress keeps kvpress\'s sets on the peer-check prompts', () => {
  let model: CokvModel;
  const docs = new Map<string, Sequence>();
  beforeAll(async () => {
    model = await loadModel(asset('models/cokv-retrieval-tiny'), { backend: 'ts' });
    const rows = fs.readFileSync(asset('data/retrieval-dev.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { context: string; input: string });
    for (const p of fixture.prompts) {
      const r = rows[p.index];
      const ids = [model.tokenizer.bosId!, ...model.encode(`${r.context}\n${r.input}`, false)];
      expect(ids.length, p.name).toBe(p.length);
      expect(createHash('sha256').update(JSON.stringify(ids)).digest('hex'), `${p.name}: the ids kvpress was given`).toBe(p.idsSha256);
      // One full prefill per prompt (F32 K/V, as kvpress's float32 run); each case compresses a fork of it.
      const doc = await model.createSequence({ kvDtype: 'f32', windowRows: 64 });
      await doc.prefill(ids, { chunkSize: 0 });
      docs.set(p.name, doc);
    }
  }, 120_000);

  it('covers every press at several ratios', () => {
    const names = new Set(fixture.cases.map((c) => c.name));
    expect([...names].sort()).toEqual(['adakv', 'adakv-a0.5', 'pyramidkv', 'pyramidkv-b2', 'snapkv', 'streaming']);
    expect(new Set(fixture.cases.map((c) => c.ratio)).size).toBeGreaterThanOrEqual(3);
  });

  for (const c of fixture.cases) {
    it(`${c.prompt} ${c.name} r=${c.ratio}`, async () => {
      const L = fixture.prompts.find((p) => p.name === c.prompt)!.length;
      const { press: name, ...options } = c.cokv;
      const press = createPress(name, options, model.config);
      const s = docs.get(c.prompt)!.fork();
      await s.compress(press);
      for (let l = 0; l < c.kept.length; l++) {
        for (let g = 0; g < c.kept[l].length; g++) {
          const want = fromBitmap(c.kept[l][g], L);
          expect(want.length).toBe(c.counts[l][g]);
          expect(Array.from(s.headPositions(l, g)), `layer ${l} head ${g} (${c.kvpress})`).toEqual(want);
        }
      }
      s.dispose();
    });
  }

  it('the CoKV reference rules (no preset) keep other sets: the preset is what makes them equal', async () => {
    const c = fixture.cases.find((x) => x.name === 'adakv' && x.ratio === 0.5 && x.prompt === 'passkey@1024')!;
    const s = docs.get(c.prompt)!.fork();
    const B = resolveBudget({ preset: 'kvpress', ratio: 0.5, window: 64 }, 1020);
    await s.compress(createPress('adakv', { budget: B, window: 64, pool: 'avg', kernel: 5 }, model.config));
    const same = c.kept.flat().every((b, i) => JSON.stringify(Array.from(s.headPositions(Math.floor(i / 4), i % 4))) === JSON.stringify(fromBitmap(b, 1020)));
    expect(same).toBe(false);
    s.dispose();
  });
});
