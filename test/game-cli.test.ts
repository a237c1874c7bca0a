/**
 * `cokv profile` end to end on stories260K (20 players): a short real profiling run, the profile file's schema,
 * `profile show|compare|merge`, shards + resume through the CLI reproducing the single run bit for bit, the file
 * feeding `generate --press cokv`, and bad input (one line on stderr, exit 1).
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ProfileFile } from '../src/game/profile-file.js';
import { asset, tmpDir, cokv, expectUserError } from './helpers.js';

/** Run the CLI from source, like `npx cokv …` after a build. */
const model = asset('models/stories260K');
const data = asset('data/stories/stories-dev.jsonl');
const have = fs.existsSync(model) && fs.existsSync(data);

/** The flags of the reference run; shards and resumes must use the same settings. */
const base = ['--model', model, '--data', data, '--task', 'stories', '--utility', 'loglik', '--limit', '4', '--runs', '2', '--quiet'];

const read = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as ProfileFile;

describe.skipIf(!have)('cokv profile on stories260K', () => {
  const dir = have ? tmpDir('cokv-game-cli-') : '';
  const out = path.join(dir, 'p.json');
  let p: ProfileFile;

  beforeAll(() => {
    const r = cokv('profile', ...base, '--samples', '24', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    p = read(out);
  });

  it('writes a complete profile file', () => {
    expect(p.schema).toBe('cokv-profile/1');
    expect(p.model).toMatchObject({ architecture: 'llama', layers: 5, heads: 8, kvHeads: 4, headDim: 8, vocabSize: 512 });
    expect(p.model.hash).toMatch(/^[0-9a-f]{16}$/);
    expect(p.shape).toEqual([5, 4]);
    expect(p.window).toBe(8);
    expect(p.sizes).toEqual([3, 5, 8, 10]); // n/8, n/4, 3n/8, n/2 of 20 players, rounded
    expect(p.utility).toBe('loglik');
    expect(p.task).toBe('stories');
    expect(p.dataHash).toMatch(/^[0-9a-f]{16}$/);
    expect(p.sampleIds).toHaveLength(4);
    expect(new Set(p.sampleIds).size).toBe(4);
    expect(p.runs).toBe(2);
    expect(p.samples).toBe(24);
    expect(p.shard).toBeUndefined();
    expect(p.runStates).toHaveLength(2);
    const vs = [3, 5, 8, 10, 12, 15, 17]; // H ∪ (n − H)
    p.runStates.forEach((rs, r) => {
      expect(rs.run).toBe(r);
      expect(rs.records).toHaveLength(24);
      expect(rs.records.map((x) => x[0])).toEqual(Array.from({ length: 24 }, (_, k) => k));
      for (const [, size, u, hex] of rs.records) {
        expect(p.sizes).toContain(size);
        expect(Number.isFinite(u)).toBe(true);
        expect(hex).toMatch(/^[0-9a-f]{5}$/);
      }
      expect(rs.sizes).toEqual(vs);
      expect(rs.sums).toHaveLength(vs.length);
      expect(rs.counts).toHaveLength(vs.length);
      for (const row of [...rs.sums, ...rs.counts]) expect(row).toHaveLength(20);
      // Every record counts once for every player, on one side.
      for (let i = 0; i < 20; i++) expect(rs.counts.reduce((t, row) => t + row[i], 0)).toBe(24);
      expect(rs.values).toHaveLength(5);
      for (const row of rs.values) expect(row).toHaveLength(4);
    });
    expect(p.values).toHaveLength(5);
    p.values.forEach((row, l) => {
      expect(row).toHaveLength(4);
      row.forEach((v, g) => {
        expect(Number.isFinite(v)).toBe(true);
        expect(v).toBeCloseTo((p.runStates[0].values[l][g] + p.runStates[1].values[l][g]) / 2, 12);
      });
    });
    expect(p.maeHistory.length).toBeGreaterThan(0);
    expect(p.maeHistory.at(-1)!.samples).toBe(24);
    for (const m of p.maeHistory) expect(m.mae).toBeGreaterThanOrEqual(0);
    expect(typeof p.converged).toBe('boolean');
    expect(p.cost.prefills).toBe(4);
    expect(p.cost.prefillTokens).toBeGreaterThan(4 * 8);
    // 2 coalitions (S, N\S) per sample per run, plus any reference evaluations (U(N), U(∅)) the CLI reports.
    expect(p.cost.coalitionEvaluations).toBeGreaterThanOrEqual(24 * 2 * 2);
    expect(p.cost.coalitionEvaluations).toBeLessThanOrEqual(24 * 2 * 2 + 2);
    expect(p.cost.decodeRows).toBeGreaterThan(0);
    expect(p.cost.seconds).toBeGreaterThan(0);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('profile show: heatmap with every layer and head, top and bottom heads; --json gives the values', () => {
    const r = cokv('profile', 'show', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/loglik utility on stories \(24 samples per run × 2 runs/);
    for (const l of [0, 1, 2, 3, 4]) expect(r.stdout).toMatch(new RegExp(`^L${l}\\s`, 'm'));
    for (const g of [0, 1, 2, 3]) expect(r.stdout).toContain(`H${g}`);
    expect(r.stdout).toMatch(/^top 5: (L\dH\d -?[\d.e-]+(, )?){5}$/m);
    expect(r.stdout).toMatch(/^bottom 5: /m);
    const j = cokv('profile', 'show', out, '--json');
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toEqual({ shape: [5, 4], values: p.values });
  });

  it('profile compare: a profile against itself; --json', () => {
    const r = cokv('profile', 'compare', out, out);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^MAE 0\.000 \| Spearman 1\.000 \| top-1 overlap 100% .*top-10 overlap 100%\n$/);
    const j = cokv('profile', 'compare', out, out, '--json');
    expect(JSON.parse(j.stdout)).toMatchObject({ mae: 0, spearman: 1 });
  });

  it('shards 0/2 (resumed halfway) and 1/2 merged = the single run, bit for bit; compare says so', () => {
    const s0 = path.join(dir, 's0.json'), s1 = path.join(dir, 's1.json'), merged = path.join(dir, 'merged.json');
    expect(cokv('profile', ...base, '--samples', '5', '--shard', '0/2', '--out', s0).code).toBe(0);
    const resumed = cokv('profile', ...base, '--samples', '12', '--shard', '0/2', '--out', s0, '--resume');
    expect(resumed.stderr).toBe('');
    expect(resumed.code).toBe(0);
    expect(cokv('profile', ...base, '--samples', '12', '--shard', '1/2', '--out', s1).code).toBe(0);
    const a = read(s0), b = read(s1);
    expect(a.shard).toBe('0/2');
    expect(a.runStates[0].records.map((x) => x[0])).toEqual(Array.from({ length: 12 }, (_, t) => 2 * t));
    expect(b.runStates[1].records.map((x) => x[0])).toEqual(Array.from({ length: 12 }, (_, t) => 2 * t + 1));
    const m = cokv('profile', 'merge', s0, s1, '--out', merged);
    expect(m.code).toBe(0);
    expect(m.stderr).toMatch(/merged 2 profiles: 24 samples per run/);
    const mp = read(merged);
    expect(mp.shard).toBeUndefined();
    expect(mp.runStates).toEqual(p.runStates);
    expect(mp.values).toEqual(p.values);
    const c = cokv('profile', 'compare', out, merged, '--json');
    expect(JSON.parse(c.stdout)).toMatchObject({ mae: 0, spearman: 1 });
    // Overlapping shards are refused.
    const bad = cokv('profile', 'merge', s0, merged, '--out', path.join(dir, 'bad.json'));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/appears twice/);
    expect(fs.existsSync(path.join(dir, 'bad.json'))).toBe(false);
  });

  it('generate --press cokv --profile accepts the written profile', () => {
    const r = cokv('generate', '--model', model, '--prompt', 'Once upon a time there was a dog named Max who liked to run in the big green park every day',
      '--max-tokens', '5', '--json', '--press', 'cokv', '--profile', out, '--budget', '12');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.tokens).toHaveLength(5);
    expect(o.stats.kvBytes).toBeLessThan(o.stats.kvFullBytes);
  });

  describe('bad input: one line on stderr, exit 1', () => {
    const bad = have ? tmpDir('cokv-game-cli-bad-') : '';
    const empty = path.join(bad, 'empty.jsonl');
    const noAnswers = path.join(bad, 'no-answers.jsonl');
    const emptyAnswers = path.join(bad, 'empty-answers.jsonl');
    if (have) {
      fs.writeFileSync(empty, '');
      fs.writeFileSync(noAnswers, `${JSON.stringify({ _id: 'a', context: 'Once upon a time there was a big dog who liked to run and play.', input: '' })}\n`);
      fs.writeFileSync(emptyAnswers, `${JSON.stringify({ _id: 'a', context: 'Once upon a time there was a big dog who liked to run and play.', input: '', answers: [] })}\n`);
    }
    const x = path.join(bad, 'x.json');
    const profileWith = (...args: string[]) => ['profile', '--model', model, '--task', 'stories', '--quiet', ...args];
    const cases: [string, () => string[], RegExp][] = [
      ['empty data file', () => profileWith('--data', empty, '--out', x), /empty\.jsonl/],
      ['a line without answers', () => profileWith('--data', noAnswers, '--out', x), /no-answers\.jsonl:1: .*answers/],
      ['a line with an empty answers list', () => profileWith('--data', emptyAnswers, '--out', x), /empty-answers\.jsonl:1: .*answers/],
      ['--sizes 0', () => profileWith('--data', data, '--limit', '2', '--sizes', '0', '--out', x), /--sizes: 0 is outside \[1, 19\]/],
      ['--sizes 20 for n = 20', () => profileWith('--data', data, '--limit', '2', '--sizes', '20', '--out', x), /--sizes: 20 is outside \[1, 19\]/],
      ['--resume with other settings', () => ['profile', ...base, '--samples', '24', '--seed', '5', '--out', out, '--resume'], /--resume .*p\.json: the profile was made with other settings \(seed differs/],
      ['--out exists without --resume', () => ['profile', ...base, '--samples', '24', '--out', out], /--out .*p\.json: file exists/],
      ['unknown --task', () => profileWith('--data', data, '--task', 'nosuch', '--out', x), /unknown (task|dataset) 'nosuch'/],
      ['unknown --utility', () => profileWith('--data', data, '--utility', 'magic', '--out', x), /--utility: 'magic'/],
      ['bad --shard', () => profileWith('--data', data, '--shard', '2/2', '--out', x), /--shard: '2\/2'/],
      ['show of a file that is not a profile', () => ['profile', 'show', empty], /empty\.jsonl: not valid JSON/],
    ];
    for (const [name, args, re] of cases) {
      it(name, () => {
        const before = fs.readFileSync(out, 'utf8');
        expectUserError(cokv(...args()), re);
        expect(fs.existsSync(x)).toBe(false);
        expect(fs.readFileSync(out, 'utf8')).toBe(before);
      });
    }
  });
});
