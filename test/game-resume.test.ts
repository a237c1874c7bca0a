/**
 * Resume, shards and merge of profiles are bit-identical to one uninterrupted run (sampling is counter-based and
 * the accumulators are recomputed from the records), a killed run continues exactly from its last atomic
 * checkpoint, and incompatible files are refused with a CokvError.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { ModelGame } from '../src/game/model-game.js';
import type { Coalition } from '../src/game/players.js';
import { buildProfile, mergeProfiles, runProfiler, type ProfilerOptions } from '../src/game/profiler.js';
import {
  readProfile, recordsFromJson, writeProfileAtomic, type ProfileFile, type ProfileSettings,
} from '../src/game/profile-file.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { tmpDir } from './helpers.js';
import { game, n, profilerOptions, settings, utility } from './synthetic-game.js';
import { plantedConfig, plantedModel, plantedSamples } from './planted-model.js';
import { tinyConfig } from './random-model.js';

const opts = (over: Partial<ProfilerOptions> = {}): ProfilerOptions => profilerOptions(40, over);

/** The profile without what legitimately differs between equivalent runs (clock, cost, convergence trace). */
function essence(p: ProfileFile): unknown {
  const { createdAt: _c, updatedAt: _u, cost: _cost, maeHistory: _m, ...rest } = p;
  return JSON.parse(JSON.stringify(rest));
}

describe('resume', () => {
  it('16 samples, then a fresh resume to 40 = one run to 40 (records, sums, counts, values)', async () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.json'), b = path.join(dir, 'b.json');
    const full = await runProfiler(game(), opts({ out: a }));
    expect(full.samples).toBe(40);
    await runProfiler(game(), opts({ out: b, maxSamples: 16 }));
    expect(readProfile(b).samples).toBe(16);
    // Another checkpoint interval on resume: the chunking must not matter.
    const resumed = await runProfiler(game(), opts({ out: b, resume: true, checkpointEvery: 5 }));
    expect(essence(resumed)).toEqual(essence(full));
    expect(essence(readProfile(b))).toEqual(essence(readProfile(a)));
    const fa = readProfile(a), fb = readProfile(b);
    for (let r = 0; r < 2; r++) {
      expect(fb.runStates[r].records).toEqual(fa.runStates[r].records);
      expect(fb.runStates[r].sums).toEqual(fa.runStates[r].sums);
      expect(fb.runStates[r].counts).toEqual(fa.runStates[r].counts);
      expect(fb.runStates[r].values).toEqual(fa.runStates[r].values);
    }
    expect(fb.values).toEqual(fa.values);
    // The resumed file keeps its creation time and extends the convergence trace.
    expect(fb.maeHistory.map((m) => m.samples)).toEqual([8, 16, 21, 26, 31, 36, 40]);
    expect(fb.maeHistory.at(-1)).toEqual(fa.maeHistory.at(-1));
  });

  it('a real model game (planted, batched coalitions) resumes bit-identically too', async () => {
    const dir = tmpDir();
    const samples = plantedSamples(2, 8);
    const c = plantedConfig();
    const s: ProfileSettings = {
      ...settings(), model: modelFingerprint(c), shape: [c.numLayers, c.numKvHeads], maxNew: 2, task: 'planted',
      sampleIds: samples.map((x) => x.id),
    };
    const mk = (batchSize: number) => new ModelGame(plantedModel(), samples, { utility: 'loglik', window: 4, maxNew: 2, batchSize });
    const a = path.join(dir, 'a.json'), b = path.join(dir, 'b.json');
    const full = await runProfiler(mk(16), { settings: s, modelPath: 'planted', maxSamples: 12, tolerance: 0, checkpointEvery: 4, out: a });
    await runProfiler(mk(3), { settings: s, modelPath: 'planted', maxSamples: 5, tolerance: 0, checkpointEvery: 5, out: b });
    const resumed = await runProfiler(mk(7), { settings: s, modelPath: 'planted', maxSamples: 12, tolerance: 0, checkpointEvery: 3, out: b, resume: true });
    expect(essence(resumed)).toEqual(essence(full));
    // Cost adds up over the two sessions: each session prefills every sample once.
    expect(resumed.cost.prefills).toBe(2 * samples.length);
    expect(resumed.cost.coalitionEvaluations).toBe(full.cost.coalitionEvaluations);
  });

  it('resuming a finished profile changes nothing (same values, cost and convergence kept)', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'p.json');
    const first = await runProfiler(game(), opts({ out, maxSamples: 16 }));
    const before = fs.readFileSync(out, 'utf8');
    const g = game();
    const again = await runProfiler(g, opts({ out, maxSamples: 16, resume: true }));
    expect(g.calls).toBe(0);
    expect(essence(again)).toEqual(essence(first));
    expect(again.maeHistory).toEqual(first.maeHistory);
    expect(again.cost).toEqual(readProfile(out).cost);
    expect(fs.readFileSync(out, 'utf8')).toBe(before);
    // A converged profile stays converged.
    const small = (x: Coalition) => 1e-3 * utility(x);
    const conv = path.join(dir, 'conv.json');
    const done = await runProfiler(game(small), opts({ out: conv, maxSamples: 4000, tolerance: undefined, checkpointEvery: 16 }));
    expect(done.converged).toBe(true);
    const kept = await runProfiler(game(small), opts({ out: conv, maxSamples: done.samples, tolerance: undefined, resume: true }));
    expect(kept.converged).toBe(true);
    expect(kept.values).toEqual(done.values);
  });

  it('--resume without a file starts fresh', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'new.json');
    const p = await runProfiler(game(), opts({ out, resume: true, maxSamples: 16 }));
    const q = await runProfiler(game(), opts({ maxSamples: 16 }));
    expect(essence(p)).toEqual(essence(q));
  });
});

describe('a killed run continues exactly', () => {
  it('killed right after a checkpoint (progress callback throws): resume gives the uninterrupted profile', async () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.json'), b = path.join(dir, 'b.json');
    const full = await runProfiler(game(), opts({ out: a }));
    await expect(runProfiler(game(), opts({
      out: b, onProgress: (p) => { if (p.samples === 24) throw new Error('killed'); },
    }))).rejects.toThrow('killed');
    expect(readProfile(b).samples).toBe(24);
    const resumed = await runProfiler(game(), opts({ out: b, resume: true }));
    expect(essence(resumed)).toEqual(essence(full));
  });

  it('killed during an evaluation: the previous checkpoint is intact, a stray temp file is ignored', async () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.json'), b = path.join(dir, 'b.json');
    const full = await runProfiler(game(), opts({ out: a }));
    const dying = game();
    const evaluate = dying.evaluate.bind(dying);
    dying.evaluate = (cs) => {
      if (dying.calls === 3) throw new Error('SIGKILL');
      return evaluate(cs);
    };
    await expect(runProfiler(dying, opts({ out: b }))).rejects.toThrow('SIGKILL');
    expect(readProfile(b).samples).toBe(24);
    // A half-written temp file from the dead process (atomic writes never touch the real file until rename).
    fs.writeFileSync(`${b}.tmp-999999`, '{"schema": "cokv-prof');
    const resumed = await runProfiler(game(), opts({ out: b, resume: true }));
    expect(essence(resumed)).toEqual(essence(full));
  });

  it('a checkpoint written atomically mid-run (first 16 records), then a fresh resume', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'mid.json');
    const full = await runProfiler(game(), opts());
    const head = full.runStates.map((rs) => recordsFromJson(rs.records, n).filter((r) => r.k < 16));
    writeProfileAtomic(out, buildProfile(settings(), 'synthetic', head));
    expect(fs.readdirSync(dir)).toEqual(['mid.json']);
    const g = game();
    const resumed = await runProfiler(g, opts({ out, resume: true }));
    expect(essence(resumed)).toEqual(essence(full));
    expect(g.calls).toBe(3); // 24 more samples in chunks of 8
  });
});

describe('shards and merge', () => {
  it('shards 0/3, 1/3, 2/3 merged = one unsharded run over the same sample indices', async () => {
    const dir = tmpDir();
    const single = await runProfiler(game(), opts({ maxSamples: 24 }));
    const files = [0, 1, 2].map((i) => path.join(dir, `s${i}.json`));
    for (let i = 0; i < 3; i++) {
      const p = await runProfiler(game(), opts({ out: files[i], maxSamples: 8, shard: { index: i, count: 3 }, checkpointEvery: 3 }));
      expect(p.shard).toBe(`${i}/3`);
      expect(p.converged).toBe(false);
      for (const rs of p.runStates) expect(rs.records.map((r) => r[0])).toEqual(Array.from({ length: 8 }, (_, t) => i + 3 * t));
    }
    const merged = mergeProfiles(files);
    expect(merged.shard).toBeUndefined();
    expect(merged.samples).toBe(24);
    expect(merged.runStates).toEqual(single.runStates);
    expect(merged.values).toEqual(single.values);
    expect(essence({ ...merged, converged: false })).toEqual(essence(single));
    // Order of the files does not matter.
    expect(mergeProfiles([files[2], files[0], files[1]]).runStates).toEqual(single.runStates);
    // The merged file can be written, read back and resumed as an unsharded profile.
    const m = path.join(dir, 'merged.json');
    writeProfileAtomic(m, merged);
    const longer = await runProfiler(game(), opts({ out: m, resume: true, maxSamples: 40 }));
    expect(essence(longer)).toEqual(essence(await runProfiler(game(), opts())));
  });

  it('a shard resumes within its own indices', async () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.json'), b = path.join(dir, 'b.json');
    const full = await runProfiler(game(), opts({ out: a, maxSamples: 8, shard: { index: 1, count: 3 } }));
    await runProfiler(game(), opts({ out: b, maxSamples: 3, shard: { index: 1, count: 3 } }));
    const resumed = await runProfiler(game(), opts({ out: b, maxSamples: 8, shard: { index: 1, count: 3 }, resume: true }));
    expect(essence(resumed)).toEqual(essence(full));
  });
});

describe('incompatible files are refused', () => {
  const make = async (over: Partial<ProfilerOptions> = {}) => {
    const dir = tmpDir();
    const out = path.join(dir, 'p.json');
    await runProfiler(game(), opts({ out, maxSamples: 8, ...over }));
    return out;
  };

  const mismatches: [string, Partial<ProfileSettings>][] = [
    ['seed', { seed: 4 }],
    ['sizes', { sizes: [2, 4] }],
    ['utility', { utility: 'kl' }],
    ['window', { window: 8 }],
    ['runs', { runs: 3 }],
    ['sSideOnly', { sSideOnly: true }],
    ['dataHash', { dataHash: 'other' }],
    ['sampleIds', { sampleIds: ['s0'] }],
  ];
  for (const [key, over] of mismatches) {
    it(`resume with another ${key} → CokvError naming it`, async () => {
      const out = await make();
      const before = fs.readFileSync(out, 'utf8');
      const err = await runProfiler(game(), opts({ out, resume: true, settings: settings(over) })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CokvError);
      expect((err as Error).message).toMatch(new RegExp(`other settings \\(${key} differs`));
      expect(fs.readFileSync(out, 'utf8')).toBe(before);
    });
  }

  it('resume with another model → CokvError', async () => {
    const out = await make();
    const other = settings({ model: modelFingerprint(tinyConfig({ numLayers: 3, numKvHeads: 4, numHeads: 8 })) });
    await expect(runProfiler(game(), opts({ out, resume: true, settings: other }))).rejects.toThrow(/model differs/);
  });

  it('resume of a shard as another shard (or unsharded) → CokvError', async () => {
    const out = await make({ shard: { index: 0, count: 3 } });
    await expect(runProfiler(game(), opts({ out, resume: true, shard: { index: 1, count: 3 } }))).rejects.toBeInstanceOf(CokvError);
    await expect(runProfiler(game(), opts({ out, resume: true }))).rejects.toThrow(/shard 0\/3, not 0\/1/);
  });

  it('resume of a file that is not a profile → CokvError', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'x.json');
    fs.writeFileSync(out, '{"schema": "something-else"}');
    await expect(runProfiler(game(), opts({ out, resume: true }))).rejects.toThrow(/not a cokv profile/);
    fs.writeFileSync(out, '{"schema": "cokv-prof');
    await expect(runProfiler(game(), opts({ out, resume: true }))).rejects.toThrow(/not valid JSON/);
  });

  it('sizes outside [1, n − 1] → CokvError', async () => {
    for (const sizes of [[0, 3], [3, 12]]) {
      await expect(runProfiler(game(), opts({ settings: settings({ sizes }) }))).rejects.toBeInstanceOf(CokvError);
    }
  });

  it('merge: overlapping shards, other settings, no files → CokvError', async () => {
    const s0 = await make({ shard: { index: 0, count: 3 } });
    const s1 = await make({ shard: { index: 1, count: 3 } });
    const whole = await make();
    expect(() => mergeProfiles([s0, s0])).toThrow(CokvError);
    expect(() => mergeProfiles([s0, s0])).toThrow(/appears twice/);
    expect(() => mergeProfiles([whole, s1])).toThrow(/appears twice/);
    // Two of three shards: refused, as the result would look like a complete profile (reliability row 864).
    expect(() => mergeProfiles([s0, s1])).toThrow(/shard 2\/3 missing/);
    const seed = await make({ settings: settings({ seed: 9 }), shard: { index: 2, count: 3 } });
    expect(() => mergeProfiles([s0, s1, seed])).toThrow(/other settings .*seed differs/);
    expect(() => mergeProfiles([])).toThrow(CokvError);
    expect(() => mergeProfiles([path.join(tmpDir(), 'missing.json')])).toThrow(/cannot read/);
  });
});
