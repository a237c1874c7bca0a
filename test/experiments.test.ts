/** The results pipeline on a smoke-test slice: files and schemas, and presses at a budget above the prompt = Full. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assetsDir, haveAssets, repoRoot, runAsync, tmpDir } from './helpers.js';

describe.skipIf(!haveAssets)('cokv experiment all --quick --slice tiny', () => {
  it('writes profiles, runs, masking, estimator, summary and figures; budget ≥ prompt scores exactly like Full', async () => {
    const out = tmpDir();
    const r = await runAsync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), 'experiment', 'all', '--quick', '--slice', 'tiny',
      '--out', out, '--assets', assetsDir], { timeoutMs: 240_000 });
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(r.stderr).toMatch(/== step 1\/\d+: profiles/);
    expect(r.stderr).toMatch(/^eval \[[#.]+\] \d+\/\d+ \| .* elapsed, ETA /m); // the sub-commands' bars, with an ETA
    for (const f of ['profiles/cokv-retrieval-tiny__loglik.json', 'profiles/stories260K__loglik.json', 'profiles/cokv-retrieval-tiny__headkv.json',
      'masking/cokv-retrieval-tiny.json', 'estimator/summary.json', 'estimator/exact-retrieval-tiny.json', 'bench/smollm2-135m-random.json', 'summary.json', 'results.md',
      'data/retrieval-generated.jsonl']) {
      expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    }
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
    expect(summary.entries.length).toBeGreaterThan(50);
    // The sweep on generated items is summarised apart from the dev-split sweep.
    expect(summary.entries.filter((e: { items: string }) => e.items === 'generated').length).toBeGreaterThan(20);
    expect(summary.entries.filter((e: { items: string }) => e.items === 'dev-test').length).toBeGreaterThan(20);
    for (const e of summary.entries) {
      expect(Object.keys(e)).toEqual(expect.arrayContaining(['model', 'task', 'protocol', 'press', 'budget', 'score', 'n', 'keptKvBytes', 'fullKvBytes', 'run']));
      expect(typeof e.score).toBe('number');
      // CoKV runs use the default (metric) profile for the retrieval model, loglik for stories; the utility and
      // allocator variants name theirs.
      const want = e.run.startsWith('sensitivity/utility-') ? /__(kl|metric|loglik)\.json$/ : e.run.includes('cokv-loglik') ? /__loglik\.json$/
        : e.run.includes('cokv-loo') ? /__metric-loo\.json$/ : e.model === 'stories260K' ? /__loglik\.json$/ : /__metric\.json$/;
      if (e.press === 'cokv') expect(e.profile, e.run).toMatch(want);
    }
    // Every press at budget 1024 (more than any prompt here) must equal Full, prediction for prediction.
    const groups = new Map<string, typeof summary.entries>();
    for (const e of summary.entries) {
      if (e.run.startsWith('sensitivity') || e.run.startsWith('quant')) continue;
      const key = `${e.model}|${e.task}|${e.protocol}|${e.items}`;
      groups.set(key, [...(groups.get(key) ?? []), e]);
    }
    let compared = 0;
    for (const list of groups.values()) {
      const full = list.find((e: { press: string }) => e.press === 'full');
      const fullPreds = fs.readFileSync(path.join(out, 'runs', full.run, 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).prediction);
      for (const e of list.filter((x: { budget: number | null }) => x.budget === 1024)) {
        expect(e.score, `${e.run}`).toBe(full.score);
        const preds = fs.readFileSync(path.join(out, 'runs', e.run, 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).prediction);
        expect(preds).toEqual(fullPreds);
        expect(e.keptKvBytes).toBe(full.keptKvBytes);
        compared++;
      }
    }
    expect(compared).toBeGreaterThanOrEqual(7 * 7);
    expect(fs.readdirSync(path.join(out, 'figures')).filter((f) => f.endsWith('.svg')).length).toBeGreaterThan(3);
  }, 300_000);
});

describe.skipIf(!haveAssets)('cokv experiment --quiet', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), 'experiment', ...args],
    { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });

  it('prints only the step lines: no sub-command lines, output, bars or warnings', () => {
    const out = tmpDir();
    const r = run('profiles', '--quick', '--slice', 'tiny', '--quiet', '--out', out, '--assets', assetsDir);
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toEqual([expect.stringMatching(/^\[\d+s\] == step 1\/1: profiles \(quick\)$/), expect.stringMatching(/^\[\d+s\] == profiles done in \d+ s$/)]);
    expect(fs.existsSync(path.join(out, 'profiles/cokv-retrieval-tiny__headkv.json'))).toBe(true);
    fs.rmSync(out, { recursive: true, force: true });
  }, 120_000);

  it('a failing step still shows its command and its error', () => {
    const out = tmpDir(), assets = tmpDir();
    const r = run('profiles', '--slice', 'tiny', '--quiet', '--out', out, '--assets', assets);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\$ cokv profile --model .*cokv-retrieval-tiny/);
    expect(r.stderr).toMatch(/^cokv: --data .*retrieval-dev.jsonl: no such file/m);
    expect(r.stderr).toMatch(/experiment step failed \(exit 1\)/);
    for (const d of [out, assets]) fs.rmSync(d, { recursive: true, force: true });
  }, 60_000);
});
