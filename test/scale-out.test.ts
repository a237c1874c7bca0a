/**
 * Scale-out (issue 15): `--shard auto` from a Slurm array task or a Kubernetes Indexed Job index, sharded
 * `cokv eval` + `cokv eval merge` = one unsharded run, merges (profile and eval) that refuse mismatched settings
 * and overlapping, missing or unfinished shards, and profiles that are bit-identical for any thread count.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseShard } from '../src/cli/shard.js';
import type { ProfileFile } from '../src/game/profile-file.js';
import { asset, expectCokvError, expectUserError, haveAssets, repoRoot, tmpDir } from './helpers.js';

process.env.COKV_CACHE_DIR ??= tmpDir('cokv-scale-cache-');

const tiny = asset('models/cokv-retrieval-tiny');
const retrieval = asset('data/retrieval-dev.jsonl');

/** The CLI from source with extra environment; scheduler variables of the test's own environment are dropped. */
function cli(env: Record<string, string>, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const base = { ...process.env };
  for (const k of Object.keys(base)) if (k.startsWith('SLURM_') || k === 'JOB_COMPLETION_INDEX' || k === 'COKV_SHARDS') delete base[k];
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...args], {
    cwd: repoRoot, encoding: 'utf8', timeout: 180_000, env: { ...base, ...env },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const slurm = (id: number, min: number, max: number, extra: Record<string, string> = {}) => ({
  SLURM_ARRAY_TASK_ID: String(id), SLURM_ARRAY_TASK_MIN: String(min), SLURM_ARRAY_TASK_MAX: String(max),
  SLURM_ARRAY_TASK_COUNT: String(max - min + 1), SLURM_ARRAY_TASK_STEP: '1', ...extra,
});

describe('--shard i/k and --shard auto', () => {
  it('i/k as given; auto from a Slurm array (MIN/MAX or COUNT) or a Kubernetes Indexed Job (--shards or COKV_SHARDS)', () => {
    expect(parseShard(undefined, undefined, {})).toBeUndefined();
    expect(parseShard('2/5', undefined, {})).toEqual({ index: 2, count: 5 });
    expect(parseShard('auto', undefined, slurm(3, 0, 3))).toEqual({ index: 3, count: 4 });
    expect(parseShard('auto', undefined, slurm(7, 5, 8))).toEqual({ index: 2, count: 4 }); // --array=5-8
    expect(parseShard('auto', '4', slurm(0, 0, 3))).toEqual({ index: 0, count: 4 });
    expect(parseShard('auto', undefined, { SLURM_ARRAY_TASK_ID: '1', SLURM_ARRAY_TASK_COUNT: '3' })).toEqual({ index: 1, count: 3 });
    expect(parseShard('auto', '6', { JOB_COMPLETION_INDEX: '5' })).toEqual({ index: 5, count: 6 });
    expect(parseShard('auto', undefined, { JOB_COMPLETION_INDEX: '0', COKV_SHARDS: '2' })).toEqual({ index: 0, count: 2 });
    expect(parseShard('auto', '2', { JOB_COMPLETION_INDEX: '1', COKV_SHARDS: '2' })).toEqual({ index: 1, count: 2 });
  });

  it('neither scheduler, inconsistent values or a bad flag → one CokvError line', () => {
    expectCokvError(() => parseShard('auto', undefined, {}), 'neither SLURM_ARRAY_TASK_ID', 'nor JOB_COMPLETION_INDEX');
    expectCokvError(() => parseShard('auto', '3', slurm(0, 0, 3)), '--shards 3 but the Slurm array has 4 tasks');
    expectCokvError(() => parseShard('auto', undefined, { ...slurm(3, 1, 5), SLURM_ARRAY_TASK_COUNT: '3' }), 'SLURM_ARRAY_TASK_COUNT=3 but the array spans 1..5');
    expectCokvError(() => parseShard('auto', undefined, { ...slurm(2, 0, 6), SLURM_ARRAY_TASK_STEP: '2', SLURM_ARRAY_TASK_COUNT: '4' }), 'step 2');
    expectCokvError(() => parseShard('auto', undefined, slurm(9, 0, 3)), 'outside SLURM_ARRAY_TASK_MIN..MAX');
    expectCokvError(() => parseShard('auto', undefined, { SLURM_ARRAY_TASK_ID: '1' }), 'neither SLURM_ARRAY_TASK_MIN/MAX nor SLURM_ARRAY_TASK_COUNT');
    expectCokvError(() => parseShard('auto', undefined, { SLURM_ARRAY_TASK_ID: 'x', SLURM_ARRAY_TASK_COUNT: '2' }), 'SLURM_ARRAY_TASK_ID="x" is not a non-negative integer');
    expectCokvError(() => parseShard('auto', undefined, { JOB_COMPLETION_INDEX: '0' }), 'JOB_COMPLETION_INDEX is set but not the shard count');
    expectCokvError(() => parseShard('auto', undefined, { JOB_COMPLETION_INDEX: '4', COKV_SHARDS: '4' }), 'JOB_COMPLETION_INDEX=4 is not below the shard count 4');
    expectCokvError(() => parseShard('auto', '3', { JOB_COMPLETION_INDEX: '0', COKV_SHARDS: '4' }), '--shards 3 but COKV_SHARDS=4');
    expectCokvError(() => parseShard('auto', '0', { JOB_COMPLETION_INDEX: '0' }), "--shards: '0' must be a positive integer");
    expectCokvError(() => parseShard('auto', undefined, { ...slurm(0, 0, 1), JOB_COMPLETION_INDEX: '0' }), 'both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX');
    expectCokvError(() => parseShard('2/2', undefined, {}), "--shard: '2/2' must be i/k");
    expectCokvError(() => parseShard('1/2', '2', {}), '--shards: only with --shard auto');
    expectCokvError(() => parseShard(undefined, '2', {}), '--shards: only with --shard auto');
  });

  it.skipIf(!haveAssets)('the CLIs say so in one line, exit 1, before loading the model', () => {
    const dir = tmpDir();
    expectUserError(cli({}, 'profile', '--model', tiny, '--data', retrieval, '--limit', '1', '--shard', 'auto', '--out', path.join(dir, 'p.json')), /^cokv: --shard auto: neither SLURM_ARRAY_TASK_ID/);
    expectUserError(cli({ JOB_COMPLETION_INDEX: '1' }, 'eval', '--model', tiny, '--data', retrieval, '--dataset', 'retrieval', '--shard', 'auto', '--out', dir), /JOB_COMPLETION_INDEX is set but not the shard count/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const readJson = (f: string) => JSON.parse(fs.readFileSync(f, 'utf8')) as Json;
const TIMING = new Set(['prefillMs', 'decodeMsPerToken']);

/** A results folder without what only timings change: run.json whole, predictions and metrics field by field. */
function results(dir: string): Json {
  const out: Json = {};
  for (const run of fs.readdirSync(dir).sort()) {
    const d = path.join(dir, run);
    const m = readJson(path.join(d, 'metrics.json'));
    delete m.createdAt;
    delete m.timings;
    out[run] = {
      record: fs.readFileSync(path.join(d, 'run.json'), 'utf8'),
      predictions: fs.readFileSync(path.join(d, 'predictions.jsonl'), 'utf8').trim().split('\n')
        .map((l) => Object.fromEntries(Object.entries(JSON.parse(l) as Json).filter(([k]) => !TIMING.has(k)))),
      metricsKeys: Object.keys(readJson(path.join(d, 'metrics.json'))),
      metrics: m,
      files: fs.readdirSync(d).sort(),
    };
  }
  return out;
}

describe.skipIf(!haveAssets)('cokv eval --shard + cokv eval merge', () => {
  const E = ['eval', '--model', tiny, '--data', retrieval, '--dataset', 'retrieval', '--subset', 'passkey', '--lengths', '512', '--limit', '4',
    '--presses', 'full,snapkv,adakv', '--budgets', '16,32', '--quiet'];

  it('three shards (i/k, Slurm auto, Kubernetes auto) merged = the unsharded run; merges refuse bad shard sets', { timeout: 300_000 }, () => {
    const dir = tmpDir();
    const at = (n: string) => path.join(dir, n);
    const whole = cli({}, ...E, '--out', at('whole'), '--json');
    expect(whole.code, whole.stderr).toBe(0);
    expect(cli({}, ...E, '--shard', '0/3', '--out', at('s0')).code).toBe(0);
    const s1 = cli(slurm(11, 10, 12), ...E, '--shard', 'auto', '--out', at('s1'));
    expect(s1.stderr).toMatch(/^shard 1\/3 done → /);
    const s2 = cli({ JOB_COMPLETION_INDEX: '2', COKV_SHARDS: '3' }, ...E, '--shard', 'auto', '--out', at('s2'), '--json');
    expect(s2.code, s2.stderr).toBe(0);
    expect(JSON.parse(s2.stdout)).toEqual({ shard: '2/3', out: at('s2') });
    // Disjoint parts: 4 items × 5 runs = 20 pairs cut into 6 + 7 + 7, no shard writes metrics.
    const pairs = ['s0', 's1', 's2'].map((s) => fs.readdirSync(at(s)).reduce((a, run) => a + (readJson(path.join(at(s), run, 'shard.json')).items as string[]).length, 0));
    expect(pairs).toEqual([6, 7, 7]);
    expect(fs.readdirSync(at('s1')).some((run) => fs.existsSync(path.join(at('s1'), run, 'metrics.json')))).toBe(false);

    const m = cli({}, 'eval', 'merge', at('s2'), at('s0'), at('s1'), '--out', at('merged'), '--json');
    expect(m.code, m.stderr).toBe(0);
    const strip = (rs: Json[]) => rs.map(({ createdAt: _c, timings: _t, ...r }) => r);
    expect(strip(JSON.parse(m.stdout) as Json[])).toEqual(strip(JSON.parse(whole.stdout) as Json[])); // same runs, same order
    expect(results(at('merged'))).toEqual(results(at('whole')));
    // The merged folder is a results folder like the unsharded one: a rerun reuses it, a retried merge replaces it.
    const again = cli({}, ...E, '--out', at('merged'), '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual(JSON.parse(m.stdout));
    expect(cli({}, 'eval', 'merge', at('s0'), at('s1'), at('s2'), '--out', at('merged')).code).toBe(0);

    // A shard missing, twice, unfinished, of other settings; an unsharded folder; a shard run into another's folder.
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('s2'), '--out', at('m2')), /^cokv: eval merge: shard 1\/3 of retrieval__.* missing/);
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('s1'), at('s1'), at('s2'), '--out', at('m2')), /shard 1\/3 appears twice/);
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('whole'), '--out', at('m2')), /whole: no shard run folders \(it holds unsharded runs\)/);
    fs.cpSync(at('s1'), at('s1-cut'), { recursive: true });
    const cutRun = fs.readdirSync(at('s1-cut')).find((r) => readJson(path.join(at('s1-cut'), r, 'shard.json')).items.length > 0)!;
    const rec = path.join(at('s1-cut'), cutRun, 'shard.json');
    fs.writeFileSync(rec, JSON.stringify({ ...readJson(rec), complete: false }));
    // As a kill leaves it: the last prediction cut in half.
    const predFile = path.join(at('s1-cut'), cutRun, 'predictions.jsonl');
    const lines = fs.readFileSync(predFile, 'utf8').trim().split('\n');
    fs.writeFileSync(predFile, lines.slice(0, -1).map((l) => l + '\n').join('') + lines[lines.length - 1].slice(0, 20));
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('s1-cut'), at('s2'), '--out', at('m2')), /shard 1\/3 is unfinished/);
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('s1-cut'), at('s2'), '--out', at('m2')), /shard 1\/3 is unfinished/);
    expect(cli({}, ...E, '--shard', '1/3', '--out', at('s1-cut')).code).toBe(0); // resuming it completes it
    expect(fs.readFileSync(predFile, 'utf8').trim().split('\n')).toHaveLength(lines.length);
    expect(cli({}, 'eval', 'merge', at('s0'), at('s1-cut'), at('s2'), '--out', at('m3')).code).toBe(0);
    expect(results(at('m3'))).toEqual(results(at('whole')));
    expect(cli({}, ...E, '--window', '4', '--shard', '1/3', '--out', at('s1-w4')).code).toBe(0);
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('s1-w4'), at('s2'), '--out', at('m2')), /other settings than .*s0.* \(different pressOptions\.window\)/);
    expect(cli({}, ...E, '--shard', '1/2', '--out', at('h1')).code).toBe(0);
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('h1'), '--out', at('m2')), /shards of one split share k/);
    expectUserError(cli({}, ...E, '--shard', '2/3', '--out', at('s1')), /holds shard 1\/3, not 2\/3; give each shard its own --out/);
    expectUserError(cli({}, ...E, '--out', at('s1')), /holds shard 1\/3 of a sharded eval; join the shards with `cokv eval merge`/);
    expectUserError(cli({}, ...E, '--shard', '0/3', '--out', at('whole')), /holds a whole \(unsharded\) run; give each shard its own --out/);
    expectUserError(cli({}, 'eval', 'merge', at('s0'), at('s1'), at('s2'), '--out', at('s1-w4')), /holds a shard; merge into another --out/);
    expect(fs.existsSync(at('m2'))).toBe(false);
  });
});

describe.skipIf(!haveAssets)('profiles: shards from a scheduler, incomplete merges, thread counts', () => {
  // 2048-token prompts: decode attention and the GEMMs split over threads.
  const P = ['profile', '--model', tiny, '--data', retrieval, '--task', 'retrieval', '--lengths', '2048', '--limit', '1', '--runs', '2', '--seed', '5', '--quiet'];
  const essence = (f: string) => { const p = readJson(f) as ProfileFile; return { values: p.values, records: p.runStates.map((r) => r.records), mae: p.maeHistory, samples: p.samples }; };

  it('the coalition batch size (GEMV or GEMM rows, chunk composition) does not change a bit', { timeout: 200_000 }, () => {
    const dir = tmpDir();
    for (const b of ['16', '1', '7']) expect(cli({}, ...P, '--samples', '8', '--batch', b, '--out', path.join(dir, `b${b}.json`)).code).toBe(0);
    expect(essence(path.join(dir, 'b1.json'))).toEqual(essence(path.join(dir, 'b16.json')));
    expect(essence(path.join(dir, 'b7.json'))).toEqual(essence(path.join(dir, 'b16.json')));
  });

  it('a shard killed -9 twice, at checkpoints 1 and 3, then resumed (2 threads) = the uninterrupted shard (1 thread)', { timeout: 300_000 }, async () => {
    const dir = tmpDir();
    const S = [...P, '--samples', '16', '--shard', '1/2', '--checkpoint-every', '2'];
    const ref = path.join(dir, 'ref.json'), out = path.join(dir, 'k.json');
    expect(cli({ COKV_THREADS: '1' }, ...S, '--out', ref).code).toBe(0);
    for (const [i, killAt] of [1, 3].entries()) {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...S, '--out', out, ...(i ? ['--resume'] : [])],
        { cwd: repoRoot, stdio: 'ignore', env: { ...process.env, COKV_THREADS: '2' } });
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      const samples = () => { try { return (readJson(out) as ProfileFile).samples; } catch { return 0; } };
      for (let t = 0; t < 2400 && samples() < 2 * killAt && child.exitCode === null; t++) await new Promise((r) => setTimeout(r, 25));
      child.kill('SIGKILL');
      await exited;
      expect(samples()).toBeGreaterThanOrEqual(2 * killAt);
      expect(samples()).toBeLessThan(16);
    }
    const r = cli({ COKV_THREADS: '2' }, ...S, '--out', out, '--resume');
    expect(r.code, r.stderr).toBe(0);
    const { mae: _m, ...a } = essence(out), { mae: _n, ...b } = essence(ref);
    expect(a).toEqual(b);
    expect(readJson(out).maeHistory).toEqual(readJson(ref).maeHistory);
    expect(fs.readdirSync(dir).sort()).toEqual(['k.json', 'ref.json']);
  });

  it('resuming a converged profile (CLI) rewrites nothing; a --samples above the one it ran with continues it', { timeout: 200_000 }, () => {
    const dir = tmpDir();
    const out = path.join(dir, 'c.json');
    // One 512-token item: it converges (every player sampled at every size) after about 112 samples.
    const C = [...P.filter((x) => x !== '--quiet').map((x) => (x === '2048' ? '512' : x)), '--samples', '256', '--tolerance', '1000', '--out', out];
    expect(cli({}, ...C).code).toBe(0);
    const first = readJson(out) as ProfileFile;
    expect(first.converged).toBe(true);
    expect(first.samples).toBeLessThan(256);
    const bytes = fs.readFileSync(out);
    const again = cli({}, ...C, '--resume');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(`${first.samples} samples per run`);
    expect(fs.readFileSync(out).equals(bytes)).toBe(true);
    // --samples at most what it ran with (256) changes nothing either; more than that continues it to that many.
    expect(cli({}, ...C.map((x) => (x === '256' ? '200' : x)), '--resume').code).toBe(0);
    expect(fs.readFileSync(out).equals(bytes)).toBe(true);
    const more = cli({}, ...C.map((x) => (x === '256' ? '264' : x)), '--resume');
    expect(more.code, more.stderr).toBe(0);
    expect((readJson(out) as ProfileFile).samples).toBe(264);
    expect(essence(out).records[0].slice(0, first.samples)).toEqual(first.runStates[0].records);
  });

  it('COKV_THREADS=1, 2 and 3 give the same profile bit for bit; Slurm-array shards merge to it; an incomplete set is refused', { timeout: 400_000 }, () => {
    const dir = tmpDir();
    const at = (n: string) => path.join(dir, n);
    for (const t of ['1', '2', '3']) expect(cli({ COKV_THREADS: t }, ...P, '--samples', '24', '--out', at(`t${t}.json`)).code).toBe(0);
    expect(essence(at('t2.json'))).toEqual(essence(at('t1.json')));
    expect(essence(at('t3.json'))).toEqual(essence(at('t1.json')));
    // Shards of a 3-task array (--array=0-2), each with its own thread count: merged = the unsharded run.
    for (const i of [0, 1, 2]) {
      const r = cli({ ...slurm(i, 0, 2), COKV_THREADS: String(1 + (i % 2)) }, ...P, '--samples', '8', '--shard', 'auto', '--out', at(`s${i}.json`));
      expect(r.code, r.stderr).toBe(0);
      expect(readJson(at(`s${i}.json`)).shard).toBe(`${i}/3`);
    }
    const m = cli({}, 'profile', 'merge', at('s0.json'), at('s1.json'), at('s2.json'), '--out', at('m.json'));
    expect(m.code, m.stderr).toBe(0);
    const merged = essence(at('m.json'));
    expect(merged.values).toEqual(essence(at('t1.json')).values);
    expect(merged.records).toEqual(essence(at('t1.json')).records);
    expectUserError(cli({}, 'profile', 'merge', at('s0.json'), at('s2.json'), '--out', at('bad.json')), /^cokv: profile merge: shard 1\/3 missing/);
    expectUserError(cli({}, 'profile', 'merge', at('s0.json'), at('s1.json'), at('s1.json'), at('s2.json'), '--out', at('bad.json')), /appears twice/);
    expectUserError(cli({}, 'profile', 'merge', at('s0.json'), at('t1.json'), '--out', at('bad.json')), /profile merge .*t1\.json: (shard 0\/1|sample 0 of run 0 appears twice)/);
    expect(fs.existsSync(at('bad.json'))).toBe(false);
  });
});
