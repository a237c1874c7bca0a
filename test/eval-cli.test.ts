import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { asset, haveAssets, tmpDir, cokv, expectUserError } from './helpers.js';

const tiny = asset('models/cokv-retrieval-tiny');
const data = asset('data/retrieval-dev.jsonl');
const stories = asset('models/stories260K');
const storiesData = asset('data/stories/stories-dev.jsonl');

describe.skipIf(!haveAssets)('cokv eval / needle / bench', () => {
  it('eval writes one folder per run with predictions and metrics, skips finished runs and resumes cut ones', () => {
    const out = tmpDir();
    const args = ['eval', '--model', tiny, '--data', data, '--dataset', 'retrieval', '--subset', 'passkey', '--lengths', '512',
      '--split', 'all', '--limit', '2', '--presses', 'full,snapkv', '--budgets', '64', '--out', out, '--quiet', '--json'];
    const r = cokv(...args);
    expect(r.code, r.stderr).toBe(0);
    const runs = JSON.parse(r.stdout);
    expect(runs.map((m: { press: string }) => m.press)).toEqual(['full', 'snapkv']);
    const dirs = fs.readdirSync(out).sort();
    // F16 is the default KV storage; folders of any storage but F32 end in its name.
    expect(dirs).toEqual(['retrieval__cokv-retrieval-tiny__full__full__f16', 'retrieval__cokv-retrieval-tiny__snapkv__64__f16']);
    const m = JSON.parse(fs.readFileSync(path.join(out, dirs[1], 'metrics.json'), 'utf8'));
    expect(m).toMatchObject({ dataset: 'retrieval', model: 'cokv-retrieval-tiny', press: 'snapkv', budget: 64, protocol: 'question-aware', metric: 'exact_match', n: 2 });
    expect(m.keptKvBytes).toBeLessThan(m.fullKvBytes);
    expect(m.keptKvBytes / m.fullKvBytes).toBeCloseTo(64 / 512, 1);
    const preds = fs.readFileSync(path.join(out, dirs[1], 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(preds).toHaveLength(2);
    expect(Object.keys(preds[0])).toEqual(expect.arrayContaining(['id', 'prediction', 'answers', 'score', 'promptTokens', 'keptKvBytes']));
    // Cut the snapkv run: drop its metrics and the last prediction (plus a torn line); the rerun redoes only that.
    fs.rmSync(path.join(out, dirs[1], 'metrics.json'));
    const file = path.join(out, dirs[1], 'predictions.jsonl');
    fs.writeFileSync(file, JSON.stringify(preds[0]) + '\n{"id": "torn');
    const again = cokv(...args);
    expect(again.code, again.stderr).toBe(0);
    const m2 = JSON.parse(fs.readFileSync(path.join(out, dirs[1], 'metrics.json'), 'utf8'));
    expect(m2.score).toBe(m.score);
    expect(fs.readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);
  });

  it('eval --metric loglik on stories scores teacher-forced log-probs and greedy agreement, Full agrees with itself', () => {
    const out = tmpDir();
    const r = cokv('eval', '--model', stories, '--data', storiesData, '--dataset', 'stories', '--split', 'test', '--limit', '2',
      '--presses', 'full,snapkv', '--budgets', '16', '--metric', 'loglik', '--out', out, '--quiet', '--json');
    expect(r.code, r.stderr).toBe(0);
    const [full, snap] = JSON.parse(r.stdout);
    expect(full.metric).toBe('loglik@16');
    expect(full.score).toBeLessThan(0);
    expect(full.agreement).toBe(100);
    expect(snap.keptKvBytes).toBeLessThan(full.keptKvBytes);
    expect(snap.agreement).toBeGreaterThanOrEqual(0);
    expect(snap.agreement).toBeLessThanOrEqual(100);
  });

  it('context-only protocol compresses the context alone and prefills the question uncompressed', () => {
    const out = tmpDir();
    const run = (protocol: string) => {
      const r = cokv('eval', '--model', tiny, '--data', data, '--dataset', 'retrieval', '--subset', 'passkey', '--lengths', '512',
        '--split', 'all', '--limit', '1', '--presses', 'snapkv', '--budgets', '64', '--protocol', protocol, '--out', out, '--quiet', '--json');
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout)[0];
    };
    const qa = run('question-aware'), ctx = run('context-only');
    expect(ctx.protocol).toBe('context-only');
    expect(fs.readdirSync(out).filter((d) => d.includes('__ctx'))).toHaveLength(1);
    // Both keep 64 tokens per head of what they compress; context-only then adds the question's tokens to every
    // head (4 layers × 4 KV heads × 32 dims × K and V × 2 bytes = 2048 bytes per token in the default F16).
    const extra = (ctx.keptKvBytes - qa.keptKvBytes) / 2048;
    expect(Number.isInteger(extra)).toBe(true);
    expect(extra).toBeGreaterThan(5);
    expect(extra).toBeLessThan(64);
  });

  it('--kv-dtype q8 and f16 runs get their own folders (__q8, __f16) and their bytes per kept token', () => {
    const out = tmpDir();
    const run = (dtype: string, budget: number) => {
      const r = cokv('eval', '--model', tiny, '--data', data, '--dataset', 'retrieval', '--subset', 'passkey', '--lengths', '512',
        '--split', 'all', '--limit', '1', '--presses', 'snapkv', '--budgets', String(budget), '--kv-dtype', dtype, '--out', out, '--quiet', '--json');
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout)[0];
    };
    // Same bytes as F32 at B=16: F16 at 32, Q8 at ⌊16·4·32/36⌋ = 56 (4 layers × 4 KV heads × 2 × (32 + 4) = 1152 bytes per token).
    const f32 = run('f32', 16), f16 = run('f16', 32), q8 = run('q8', 56);
    expect(fs.readdirSync(out).sort()).toEqual(['retrieval__cokv-retrieval-tiny__snapkv__16', 'retrieval__cokv-retrieval-tiny__snapkv__32__f16',
      'retrieval__cokv-retrieval-tiny__snapkv__56__q8']);
    expect(q8.settings.kvDtype).toBe('q8');
    expect(q8.fullKvBytes / 1152).toBe(f32.fullKvBytes / 4096);
    expect(f16.keptKvBytes).toBe(f32.keptKvBytes);
    expect(q8.keptKvBytes).toBeLessThanOrEqual(f32.keptKvBytes);
    expect(q8.keptKvBytes / 1152).toBeCloseTo((f32.keptKvBytes / 4096) * (56 / 16), 0);
  });

  it('needle writes a depth × length grid; bench prints a table with Full as 1.0', () => {
    const out = tmpDir();
    const r = cokv('needle', '--model', tiny, '--haystack', asset('data/needle/PaulGrahamEssays'), '--lengths', '300', '--depths', '2',
      '--presses', 'full', '--out', out, '--quiet',
      '--needle', ' The pass key is 58213. Remember it. ', '--question', 'What is the pass key? The pass key is', '--answer', '58213',
      '--template', '{context}\n{question}');
    expect(r.code, r.stderr).toBe(0);
    const grid = JSON.parse(fs.readFileSync(path.join(out, 'needle', 'cokv-retrieval-tiny__full__full.json'), 'utf8'));
    expect(grid.depths).toEqual([0, 100]);
    expect(grid.scores).toHaveLength(2);
    const b = cokv('bench', '--model', tiny, '--lengths', '256', '--presses', 'full,snapkv', '--budgets', '32', '--decode', '2', '--out', out);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toMatch(/\| 256 \| full \| - \|.*\| 1\.000 \|/);
    const bench = JSON.parse(fs.readFileSync(path.join(out, 'bench', 'cokv-retrieval-tiny.json'), 'utf8'));
    expect(bench.rows).toHaveLength(2);
    expect(bench.rows[1].kvBytes).toBeLessThan(bench.rows[0].kvBytes);
  });

  describe('bad input: one line, exit 1', () => {
    const dir = tmpDir();
    const bad = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(bad, '{"context": "a", "input": "b", "answers": ["1"], "task": "passkey", "length": 512}\nnot json\n');
    const asFile = path.join(dir, 'file.txt');
    fs.writeFileSync(asFile, 'x');
    const base = ['eval', '--model', tiny, '--presses', 'full', '--split', 'all', '--quiet'];
    const cases: [string, string[], RegExp][] = [
      ['unknown dataset', [...base, '--data', data, '--dataset', 'nope', '--out', dir], /unknown dataset 'nope'/],
      ['budgets with a non-number', [...base, '--data', data, '--dataset', 'retrieval', '--budgets', '64,lots', '--out', dir], /--budgets: 'lots' is not a number/],
      ['out is a file', [...base, '--data', data, '--dataset', 'retrieval', '--limit', '1', '--out', asFile], /is a file, not a folder/],
      ['malformed line', [...base, '--data', bad, '--dataset', 'retrieval', '--out', dir], /bad\.jsonl:2: /],
      ['missing data', [...base, '--data', path.join(dir, 'none.jsonl'), '--dataset', 'retrieval', '--out', dir], /no such file/],
      ['bad protocol', [...base, '--data', data, '--dataset', 'retrieval', '--protocol', 'x', '--out', dir], /--protocol/],
      ['bad KV storage type', [...base, '--data', data, '--dataset', 'retrieval', '--kv-dtype', 'q4', '--out', dir], /^cokv: --kv-dtype: 'q4' must be f32, f16 or q8$/m],
    ];
    for (const [name, args, re] of cases) {
      it(name, () => {
        expectUserError(cokv(...args), re);
      });
    }
    it('--skip-bad-lines goes on past a malformed line', () => {
      const out = tmpDir();
      const r = cokv(...base, '--data', bad, '--dataset', 'retrieval', '--out', out, '--skip-bad-lines');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/bad\.jsonl:2/);
    });
  });
});

describe.skipIf(!haveAssets)('cokv eval on LongBench data', () => {
  it('multi_news: official template, middle truncation to --max-length, rouge-L scoring, both protocols', () => {
    const out = tmpDir();
    for (const protocol of ['question-aware', 'context-only']) {
      const r = cokv('eval', '--model', tiny, '--data', asset('data/longbench'), '--dataset', 'multi_news', '--split', 'all', '--limit', '1',
        '--max-length', '600', '--presses', 'full,snapkv', '--budgets', '32', '--protocol', protocol, '--out', out, '--quiet', '--json');
      expect(r.code, r.stderr).toBe(0);
      const [full, snap] = JSON.parse(r.stdout);
      expect(full.metric).toBe('rouge_l');
      expect(full.n).toBe(1);
      const pred = JSON.parse(fs.readFileSync(path.join(out, fs.readdirSync(out).find((d) => d.includes('__full__') && (protocol === 'context-only') === d.includes('__ctx'))!, 'predictions.jsonl'), 'utf8').trim());
      // Truncated to 600 tokens (multi_news documents are far longer); the answer budget is dataset2maxlen's 512, clipped to the context.
      expect(pred.promptTokens).toBeLessThanOrEqual(601);
      expect(pred.promptTokens).toBeGreaterThan(500);
      expect(snap.keptKvBytes).toBeLessThan(full.keptKvBytes);
    }
  });
});
