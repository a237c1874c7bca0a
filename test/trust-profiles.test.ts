/**
 * Regression tests for the profile rows of the reliability review (shared/docs/findings/reliability.md): profiles
 * bound to the weights, every field validated on read, outputs that never clobber or interleave, merges that
 * refuse incomplete shard sets, bit-identical profiles for any thread count, idempotent resume, and budgets met
 * with huge values. Each test names its row (`row 745 other_model_same_shape`).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { profileShowText } from '../src/cli/profile.js';
import { loadModel, type CokvModel } from '../src/engine.js';
import { CokvError } from '../src/errors.js';
import { mergeProfiles, runProfiler, type Game, type ProfilerOptions } from '../src/game/profiler.js';
import { readProfile, writeProfileAtomic, type ProfileFile } from '../src/game/profile-file.js';
import { Rng } from '../src/generate/rng.js';
import { modelFingerprint, weightsFingerprint } from '../src/model/fingerprint.js';
import { apportion } from '../src/press/apportion.js';
import { cokvAllocation } from '../src/press/allocators/cokv.js';
import { createPress } from '../src/press/registry.js';
import { lockOutput } from '../src/util/files.js';
import { NativeBackend, loadNativeAddon } from '../src/backend/native.js';
import { asset, cokv, expectCokvError, expectUserError, haveAssets, repoRoot, tmpDir } from './helpers.js';
import { game, n, profilerOptions, settings } from './synthetic-game.js';

// Weight digests of this file's runs go to a private cache (children inherit it), not the user's.
process.env.COKV_CACHE_DIR = tmpDir('cokv-trust-cache-');

const llamaF32 = path.join(repoRoot, 'test/fixtures/models/llama3-tiny/llama3-tiny-f32.gguf');
const llamaQ8 = path.join(repoRoot, 'test/fixtures/models/llama3-tiny/llama3-tiny-q8_0.gguf');
const stories = asset('data/stories/stories-dev.jsonl');
const tiny = asset('models/cokv-retrieval-tiny');
const retrieval = asset('data/retrieval-dev.jsonl');

/** The CLI with extra environment (cokv() inherits process.env only). */
function cli(env: Record<string, string>, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...args], {
    cwd: repoRoot, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

// ---- a synthetic game (fast) for the file-format rows ----
const opts = (over: Partial<ProfilerOptions> = {}): ProfilerOptions => profilerOptions(24, over);
const readJson = (f: string) => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const writeJson = (f: string, o: unknown) => fs.writeFileSync(f, JSON.stringify(o));

/** A finished 24-sample synthetic profile file. */
async function profileFile(dir: string, name = 'p.json', over: Partial<ProfilerOptions> = {}): Promise<string> {
  const out = path.join(dir, name);
  await runProfiler(game(), opts({ out, ...over }));
  return out;
}

/** A copy of `src` changed by `edit`. */
function edited(src: string, name: string, edit: (p: Record<string, any>) => void): string { // eslint-disable-line @typescript-eslint/no-explicit-any
  const p = readJson(src);
  edit(p);
  const f = path.join(path.dirname(src), name);
  writeJson(f, p);
  return f;
}

describe('content fingerprint: profiles are bound to the weights', () => {
  let f32: CokvModel, q8: CokvModel;
  beforeAll(async () => {
    f32 = await loadModel(llamaF32);
    q8 = await loadModel(llamaQ8);
  });
  const pressWith = (file: string, m: CokvModel) => () => createPress('cokv', { budget: 16, profile: file }, m.config);
  const valuesFor = (m: CokvModel) => Array.from({ length: m.config.numLayers }, (_, l) => Array.from({ length: m.config.numKvHeads }, (_, h) => l + h / 10));

  it('weightsFingerprint: md5 of the file bytes, cached by path + size + mtime; an unwritable cache is no error', () => {
    const dir = tmpDir();
    const copy = path.join(dir, 'm.gguf');
    fs.copyFileSync(llamaF32, copy);
    const cacheDir = tmpDir('cokv-trust-cache2-');
    const prev = process.env.COKV_CACHE_DIR;
    try {
      process.env.COKV_CACHE_DIR = cacheDir;
      const a = weightsFingerprint(copy);
      expect(a).toMatch(/^md5:[0-9a-f]{32}$/);
      expect(weightsFingerprint(llamaF32)).toBe(a);
      const cacheFile = path.join(cacheDir, 'weights-md5.json');
      const cache = readJson(cacheFile);
      const key = fs.realpathSync(copy);
      expect(cache[key].size).toBe(fs.statSync(copy).size);
      // The cached digest is used while size and mtime stand (proof: a planted digest comes back) …
      cache[key].md5 = '0'.repeat(32);
      writeJson(cacheFile, cache);
      expect(weightsFingerprint(copy)).not.toBe(a);
      // … and a rewrite of the file (new mtime) is hashed again.
      const t = new Date(Date.now() + 5000);
      fs.utimesSync(copy, t, t);
      expect(weightsFingerprint(copy)).toBe(a);
      // A cache path that cannot be a folder: hashing still works.
      process.env.COKV_CACHE_DIR = path.join(copy, 'no');
      expect(weightsFingerprint(copy)).toBe(a);
    } finally {
      process.env.COKV_CACHE_DIR = prev;
    }
  });

  it('row 745 other_model_same_shape: a profile of one model is refused for another of the same dims (other quantization, one changed weight)', () => {
    const dir = tmpDir();
    const p = path.join(dir, 'p.json');
    writeJson(p, { model: modelFingerprint(f32.config), shape: [f32.config.numLayers, f32.config.numKvHeads], values: valuesFor(f32) });
    expect(pressWith(p, f32)()).toBeDefined();
    expect(modelFingerprint(q8.config).hash).toBe(modelFingerprint(f32.config).hash); // same shape …
    expectCokvError(pressWith(p, q8), `profile ${p}:`, 'made for another model', 'other weights'); // … other weights
  });

  it('row 745: one tensor byte changed (same dims, same name) → refused', async () => {
    const dir = tmpDir();
    const copy = path.join(dir, 'other.gguf');
    const bytes = fs.readFileSync(llamaF32);
    bytes[bytes.length - 4] ^= 0x01; // lowest mantissa bit of the last weight: still finite, another model
    fs.writeFileSync(copy, bytes);
    const other = await loadModel(copy);
    const p = path.join(dir, 'p.json');
    writeJson(p, { model: modelFingerprint(f32.config), shape: [f32.config.numLayers, f32.config.numKvHeads], values: valuesFor(f32) });
    expectCokvError(pressWith(p, other), 'made for another model', 'other weights');
  });

  it('rows 702 no_model, 703 model_empty, 704 model_string; a profile without the weights hash; a partial fingerprint', () => {
    const dir = tmpDir();
    const good = { schema: 'cokv-profile/1', model: modelFingerprint(f32.config), shape: [f32.config.numLayers, f32.config.numKvHeads], values: valuesFor(f32) };
    const { model: _m, ...noModel } = good;
    const cases: [string, unknown, string][] = [
      ['no_model.json', noModel, 'no "model" fingerprint'],
      ['model_empty.json', { ...good, model: {} }, '"model.architecture" is missing'],
      ['model_string.json', { ...good, model: 'some-other-model' }, '"model" must be a fingerprint object'],
      ['no_weights.json', { ...good, model: { ...good.model, weights: undefined } }, 'no weights fingerprint'],
      ['bad_weights.json', { ...good, model: { ...good.model, weights: 'md5:xyz' } }, '"model.weights" is invalid'],
      ['partial.json', { ...good, model: { layers: f32.config.numLayers, hash: good.model.hash } }, 'is missing'],
    ];
    for (const [name, body, why] of cases) {
      const f = path.join(dir, name);
      writeJson(f, body);
      expectCokvError(pressWith(f, f32), `profile ${f}:`, why);
    }
    // The documented hand-written minimal format may omit "model" (the user vouches for it).
    const minimal = path.join(dir, 'minimal.json');
    writeJson(minimal, { scores: valuesFor(f32) });
    expect(pressWith(minimal, f32)()).toBeDefined();
  });

  it.skipIf(!haveAssets)('a profile written by `cokv profile` carries the weights hash and feeds generate; the same file is refused on the q8_0 twin (CLI, exit 1)', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'p.json');
    const r = cokv('profile', '--model', llamaF32, '--data', stories, '--task', 'stories', '--limit', '1', '--samples', '8', '--runs', '1', '--out', out, '--quiet');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readJson(out).model.weights).toBe(weightsFingerprint(llamaF32));
    const gen = (m: string) => cokv('generate', '--model', m, '--prompt', 'Once upon a time', '--max-tokens', '2', '--press', 'cokv', '--profile', out, '--budget', '12');
    expect(gen(llamaF32).code).toBe(0);
    expectUserError(gen(llamaQ8), /--profile .*made for another model \(other weights/);
  });
});

describe('every field of a profile is validated (show, compare, merge, --resume)', () => {
  let dir: string, good: string;
  beforeAll(async () => {
    dir = tmpDir();
    good = await profileFile(dir);
  });
  const show = (f: string) => () => profileShowText(f, false);

  it('the reference profile reads back and shows', () => {
    expect(readProfile(good).samples).toBe(24);
    expect(profileShowText(good, false)).toMatch(/top 5:/);
  });

  it('rows 729 show_no_shape, 730 show_values_short, 731 show_values_garbage, 732 show_shape_huge → one-line CokvError', () => {
    const cases: [string, (p: Record<string, any>) => void, string][] = [ // eslint-disable-line @typescript-eslint/no-explicit-any
      ['no_shape', (p) => { delete p.shape; }, '"shape" must be'],
      ['values_short', (p) => { p.values = [[1, 2]]; }, '"values" must have 3 rows'],
      ['values_garbage', (p) => { p.values = [null, 'a', {}]; }, '"values" row 0'],
      ['values_null_cell', (p) => { p.values[1][2] = null; }, '"values" [1][2] is not a finite number'],
      ['shape_huge', (p) => { p.shape = [1e5, 1e5]; }, 'players, more than'],
      ['shape_e308', (p) => { p.shape = [4, 1e308]; }, '"shape" must be'],
    ];
    for (const [name, edit, why] of cases) expectCokvError(show(edited(good, `${name}.json`, edit)), 'profile show', why);
  });

  it('rows 729/731 through the CLI: exit 1, one line', () => {
    expectUserError(cokv('profile', 'show', edited(good, 'cli_no_shape.json', (p) => { delete p.shape; })), /profile show .*"shape" must be/);
    expectUserError(cokv('profile', 'show', edited(good, 'cli_garbage.json', (p) => { p.values = [null, 'a', {}]; })), /profile show .*"values"/);
  });

  it('row 735 compare_len_mismatch: values 1×1 under an equal "shape" → exit 1 naming the file (no "MAE NaN")', () => {
    const c = edited(good, 'cmp_c.json', (p) => { p.values = [[1]]; });
    const r = cokv('profile', 'compare', good, c);
    expectUserError(r, /profile compare .*cmp_c\.json: "values" must have 3 rows/);
    expect(r.stdout).not.toMatch(/NaN/);
  });

  it('rows 739 merge_bad_hex, 740 merge_short_record, 741 merge_fewer_runs, 742 merge_huge_u → CokvError naming the file', () => {
    const cases: [string, (p: Record<string, any>) => void, string][] = [ // eslint-disable-line @typescript-eslint/no-explicit-any
      ['bad_hex', (p) => { p.runStates[0].records[3][3] = 'zz' + p.runStates[0].records[3][3].slice(2); }, 'must be 3 lowercase hex digits'],
      ['short_record', (p) => { p.runStates[0].records[0] = [0, 2]; }, 'must be [k, size, u, coalition hex]'],
      ['fewer_runs', (p) => { p.runStates.pop(); }, '"runs" is 2 but there are 1 runStates'],
      ['huge_u', (p) => { p.runStates[1].records[5][2] = 1e308; }, 'u 1e+308 is not a finite number within'],
      ['edited_coalition', (p) => { const r = p.runStates[0].records[2]; r[3] = r[3] === '000' ? '001' : '000'; }, 'coalition'],
    ];
    for (const [name, edit, why] of cases) {
      const f = edited(good, `${name}.json`, edit);
      expectCokvError(() => mergeProfiles([f]), 'profile merge', f, why);
    }
  });

  it('rows 746–757 (resume): extra/fewer runStates, bad/short hex, k huge or a string, tampered u, unequal or missing records, maeHistory "x" → CokvError, file untouched', async () => {
    const cases: [string, (p: Record<string, any>) => void, string][] = [ // eslint-disable-line @typescript-eslint/no-explicit-any
      ['extra_runstate', (p) => { p.runStates.push(structuredClone(p.runStates[1])); }, 'there are 3 runStates'],
      ['fewer_runstates', (p) => { p.runStates.pop(); }, 'there are 1 runStates'],
      ['bad_hex', (p) => { p.runStates[0].records[4][3] = 'zzz'; }, 'lowercase hex digits'],
      ['short_hex', (p) => { p.runStates[0].records[4][3] = '0'; }, 'must be 3 lowercase hex digits for 12 players'],
      ['huge_k', (p) => { p.runStates[0].records.at(-1)[0] = 1e15; }, 'sample index k is 1000000000000000, expected 23'],
      ['k_string', (p) => { p.runStates[0].records.at(-1)[0] = 'x'; }, 'sample index k is "x"'],
      ['k_null', (p) => { p.runStates[1].records[0][0] = null; }, 'sample index k is null'],
      ['u_tampered', (p) => { p.runStates[0].records[7][2] = 1e300; }, 'is not a finite number within'],
      ['records_unequal', (p) => { p.runStates[1].records = p.runStates[1].records.slice(0, 10); }, 'run 1 has 10 records, run 0 has 24'],
      ['records_missing', (p) => { delete p.runStates[0].records; }, 'runStates[0] has no "records"'],
      ['mae_string', (p) => { p.maeHistory = 'x'; }, '"maeHistory" must be a list'],
      ['samples_lie', (p) => { p.samples = 30; }, '"samples" is 30'],
      ['converged_string', (p) => { p.converged = 'yes'; }, '"converged" must be true or false'],
    ];
    for (const [name, edit, why] of cases) {
      const f = edited(good, `${name}.json`, edit);
      const before = fs.readFileSync(f, 'utf8');
      const g = game();
      const err = await runProfiler(g, opts({ out: f, resume: true, maxSamples: 32 })).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(CokvError);
      expect((err as CokvError).message, name).toContain(`--resume ${f}`);
      expect((err as CokvError).message, name).toContain(why);
      expect((err as CokvError).message).not.toContain('\n');
      expect(g.calls, name).toBe(0);
      expect(fs.readFileSync(f, 'utf8'), name).toBe(before);
    }
  });

  it('row 894 profile_json_fuzz: 300 structural mutations → show and readProfile give a result or one CokvError, never another error', () => {
    const base = readJson(good);
    const rng = new Rng(11);
    const junk = [null, 'x', 1e308, -1, 0, 1.5, [], {}, [[]], true, 'zz', [1, 2], { a: 1 }, Number.MAX_SAFE_INTEGER];
    const paths: (string | number)[][] = [];
    const walk = (v: unknown, p: (string | number)[]): void => {
      paths.push(p);
      if (p.length > 4 || v === null || typeof v !== 'object') return;
      const keys = Array.isArray(v) ? v.slice(0, 3).map((_, i) => i) : Object.keys(v as object);
      for (const k of keys) walk((v as Record<string | number, unknown>)[k], [...p, k]);
    };
    walk(base, []);
    let refused = 0, accepted = 0;
    for (let t = 0; t < 300; t++) {
      const p = structuredClone(base);
      const at = paths[1 + rng.int(paths.length - 1)];
      let parent = p as Record<string | number, unknown>;
      for (const k of at.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
      const key = at[at.length - 1];
      const op = rng.int(3);
      if (op === 0) delete parent[key];
      else if (op === 1) parent[key] = junk[rng.int(junk.length)];
      else if (Array.isArray(parent[key])) (parent[key] as unknown[]).push(junk[rng.int(junk.length)]);
      else parent[key] = [parent[key]];
      const f = path.join(dir, 'fuzz.json');
      writeJson(f, p);
      for (const json of [false, true]) {
        try {
          profileShowText(f, json);
          accepted++;
        } catch (e) {
          if (!(e instanceof CokvError)) throw new Error(`mutation ${t} at ${at.join('.')} (op ${op}): ${(e as Error).stack}`);
          expect(e.message).not.toContain('\n');
          refused++;
        }
      }
    }
    expect(refused).toBeGreaterThan(200);
    expect(accepted).toBeGreaterThan(0); // e.g. a changed createdAt still shows
  });

  it('an older profile without model.weights still shows and merges; --resume for a weights-bound model refuses it', async () => {
    expect(readProfile(good).model.weights).toBeUndefined(); // the synthetic game's model is not read from a file
    expect(profileShowText(good, true)).toContain('"values"');
    expect(mergeProfiles([good]).samples).toBe(24);
    const bound = settings({ model: { ...settings().model, weights: `md5:${'0'.repeat(32)}` } });
    await expect(runProfiler(game(), opts({ settings: bound, out: good, resume: true, maxSamples: 32 })))
      .rejects.toThrow(/other settings \(model differs \(model weights differ \(md5:0+ vs none: made before profiles were bound/);
  });

  it('a profile that would be written corrupt (NaN u from a broken game) is refused before it reaches the file', async () => {
    const out = path.join(tmpDir(), 'nan.json');
    const g: Game = { n, evaluate: (cs) => cs.map(() => NaN) };
    await expect(runProfiler(g, opts({ out }))).rejects.toThrow(/about to be written.*not a finite number/);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('resume of a converged profile is a no-op (rows 761 converged_resume, 871 profile_resume_converged)', () => {
  it('same --samples: nothing evaluated, file byte-identical; a larger --samples continues to it', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'c.json');
    const first = await runProfiler(game(), opts({ out, maxSamples: 400, tolerance: 10 }));
    expect(first.converged).toBe(true);
    expect(first.samples).toBeLessThan(400);
    const bytes = fs.readFileSync(out, 'utf8');
    for (let i = 0; i < 2; i++) {
      const g = game();
      const again = await runProfiler(g, opts({ out, maxSamples: 400, tolerance: 10, resume: true }));
      expect(g.calls).toBe(0);
      expect(again.samples).toBe(first.samples);
      expect(fs.readFileSync(out, 'utf8')).toBe(bytes);
    }
    const more = await runProfiler(game(), opts({ out, maxSamples: 416, tolerance: 10, resume: true }));
    expect(more.samples).toBe(416);
    expect(more.converged).toBe(true);
    expect(readProfile(out).maxSamples).toBe(416);
  });
});

describe('merges (row 864 merge_incomplete_shards, merged convergence)', () => {
  it('an incomplete or uneven shard set is refused; a complete one merges and is judged by the run\'s tolerance', async () => {
    const dir = tmpDir();
    const shard = (i: number, k: number, name: string, over: Partial<ProfilerOptions> = {}) =>
      profileFile(dir, name, { shard: { index: i, count: k }, maxSamples: 16, ...over });
    const s0 = await shard(0, 2, 's0.json'), s1 = await shard(1, 2, 's1.json');
    expectCokvError(() => mergeProfiles([s0]), 'shard 1/2 missing');
    const q1 = await shard(1, 4, 'q1.json'); // odd indices only: no overlap with s0, but another split
    expectCokvError(() => mergeProfiles([s0, q1]), 'shards of one split share k');
    const short = await shard(1, 2, 's1-short.json', { maxSamples: 8 });
    expectCokvError(() => mergeProfiles([s0, short]), 'do not cover samples');
    const tol = await shard(1, 2, 's1-tol.json', { tolerance: 1 });
    expectCokvError(() => mergeProfiles([s0, tol]), 'tolerance');
    const merged = mergeProfiles([s1, s0]);
    expect(merged.samples).toBe(32);
    expect(merged.shard).toBeUndefined();
    expect(merged.converged).toBe(false); // tolerance 0
    // The same shards with a loose tolerance (as a range/n tolerance of a wide-range game would be): converged.
    const l0 = await shard(0, 2, 'l0.json', { tolerance: 10, maxSamples: 200 }), l1 = await shard(1, 2, 'l1.json', { tolerance: 10, maxSamples: 200 });
    const loose = mergeProfiles([l0, l1]);
    expect(loose.converged).toBe(true);
    expect(loose.tolerance).toBe(10);
    // A shard from another machine whose range-based tolerance differs in the last bits still merges.
    const l1b = await shard(1, 2, 'l1b.json', { tolerance: 10 * (1 + 1e-12), maxSamples: 200 });
    expect(mergeProfiles([l0, l1b]).converged).toBe(true);
  });
});

describe('outputs (rows 683, 684, 690, 694, 695, 696, 878, 880)', () => {
  afterEach(() => { vi.restoreAllMocks(); });

  it.skipIf(!haveAssets)('row 694 exact_out_overwrites_existing: --exact refuses an existing --out, which stays as it was', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'existing.json');
    fs.writeFileSync(out, '{"keep":1}\n');
    // A temp file of a writer killed mid-write (its pid is gone) is cleaned up by the next writer of --out.
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const stale = path.join(dir, `.existing.json.tmp-${dead}`);
    fs.writeFileSync(stale, '{"half');
    expectUserError(cokv('profile', '--model', llamaQ8, '--data', stories, '--task', 'stories', '--limit', '1', '--exact', '--out', out, '--quiet'), /--out .*existing\.json: file exists/);
    expect(fs.readFileSync(out, 'utf8')).toBe('{"keep":1}\n');
    expect(fs.readdirSync(dir)).toEqual(['existing.json']);
  });

  it.skipIf(!haveAssets)('rows 690/695/696: merge --out and --exact --out on a pipe, a symlink to a device or (as root) a device node are refused and left alone', async () => {
    const dir = tmpDir();
    const src = await profileFile(dir);
    const targets: string[] = [];
    const fifo = path.join(dir, 'fifo');
    if (spawnSync('mkfifo', [fifo]).status === 0) targets.push(fifo);
    const link = path.join(dir, 'null-link');
    fs.symlinkSync('/dev/null', link);
    targets.push(link);
    const node = path.join(dir, 'full');
    if (process.getuid?.() === 0 && spawnSync('mknod', [node, 'c', '1', '7']).status === 0) targets.push(node);
    for (const t of targets) {
      const kind = fs.lstatSync(t);
      expectUserError(cokv('profile', 'merge', src, '--out', t), /--out .*: is (a pipe|a symbolic link|a device); cokv writes only regular files/);
      expectUserError(cokv('profile', '--model', llamaQ8, '--data', stories, '--task', 'stories', '--limit', '1', '--exact', '--out', t, '--quiet'), /is (a pipe|a symbolic link|a device)/);
      const after = fs.lstatSync(t);
      expect([after.ino, after.mode]).toEqual([kind.ino, kind.mode]);
    }
    // The library writer refuses too.
    expectCokvError(() => writeProfileAtomic(link, readProfile(src)), 'is a symbolic link');
  });

  it.skipIf(!haveAssets)('row 878 profile_concurrent_same_out: a second writer of one --out is refused at once', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'p.json');
    const lock = lockOutput(out);
    try {
      expectUserError(cokv('profile', '--model', llamaQ8, '--data', stories, '--task', 'stories', '--limit', '1', '--samples', '8', '--out', out, '--quiet'),
        new RegExp(`--out .*p\\.json: another cokv process \\(pid ${process.pid}\\) is writing it`));
      expect(fs.existsSync(out)).toBe(false);
    } finally {
      lock.release();
    }
  });

  it('rows 683 enospc_profile, 880 enospc_profile_tmp_left: a full disk at a checkpoint → one-line CokvError, previous checkpoint intact, no temp file', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'p.json');
    const real = fs.writeFileSync;
    let writes = 0;
    vi.spyOn(fs, 'writeFileSync').mockImplementation((file, data, o) => {
      if (String(file).includes('.tmp-') && ++writes === 2) {
        real(file, String(data).slice(0, 100), o); // a partial temp file, as on a filling disk
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
      }
      real(file, data, o);
    });
    const err = await runProfiler(game(), opts({ out })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CokvError);
    expect((err as CokvError).message).toMatch(/^--out .*no space left on the device \(ENOSPC, write\)$/);
    vi.restoreAllMocks();
    expect(readProfile(out).samples).toBe(8); // the first checkpoint
    expect(fs.readdirSync(dir)).toEqual(['p.json']);
  });

  it.skipIf(!haveAssets || process.getuid?.() !== 0 || !fs.existsSync('/usr/bin/setpriv'))('row 684 readonly_profile_out (as nobody): a read-only --out folder → exit 1 before the model is loaded', () => {
    const dir = tmpDir();
    fs.chmodSync(dir, 0o755);
    const ro = path.join(dir, 'ro');
    fs.mkdirSync(ro, { mode: 0o555 });
    fs.chmodSync(ro, 0o555);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'),
      'profile', '--model', llamaQ8, '--data', stories, '--task', 'stories', '--limit', '1', '--samples', '8', '--out', path.join(ro, 'p.json'), '--quiet'],
    { cwd: repoRoot, encoding: 'utf8', timeout: 120_000, env: { ...process.env, COKV_CACHE_DIR: path.join(ro, 'cache'), HOME: ro } });
    expectUserError({ code: r.status ?? -1, stderr: r.stderr }, /--out .*p\.json\.lock: permission denied \(EACCES, open\)/);
    expect(fs.readdirSync(ro)).toEqual([]);
  });
});

describe('determinism with the default native backend (rows 866 profile_determinism_default, 868 profile_kill9_resume_default)', () => {
  const addon = loadNativeAddon();

  it.skipIf(!addon)('native decode attention is bit-identical for 1 and 2 threads and across repeated calls', () => {
    const nb = new NativeBackend(addon!, { int8Activations: false });
    const rng = new Rng(5);
    const rand = (k: number) => Float32Array.from({ length: k }, () => rng.next() * 2 - 1);
    const before = addon!.setThreads(2);
    try {
      for (const [L, hd, group, L2] of [[8192, 64, 3, 0], [3000, 32, 2, 7], [1500, 32, 4, 300]]) {
        const q = rand(group * hd), k = rand(L * hd), v = rand(L * hd), k2 = rand(Math.max(1, L2) * hd), v2 = rand(Math.max(1, L2) * hd);
        const outs: Float32Array[] = [];
        for (const th of [1, 2, 1, 2]) {
          addon!.setThreads(th);
          for (let rep = 0; rep < 25; rep++) {
            const o = new Float32Array(group * hd);
            nb.attend({ out: o, oOff: 0, oStride: hd, q, qOff: 0, qStride: hd, nq: group, hd, scale: 0.125, k1: k, v1: v, from1: 0, to1: L, count1: null, k2, v2, from2: 0, to2: L2 });
            outs.push(o);
          }
        }
        for (const o of outs) expect(Buffer.from(o.buffer).equals(Buffer.from(outs[0].buffer))).toBe(true);
      }
    } finally {
      addon!.setThreads(before);
    }
  });

  // 2048-token prompts: the decode attention splits over threads (work ≥ 65536), as in the review's runs.
  const P = ['profile', '--model', tiny, '--data', retrieval, '--task', 'retrieval', '--lengths', '2048', '--limit', '1', '--runs', '2', '--seed', '3', '--quiet'];
  const essence = (f: string) => { const p = readJson(f) as ProfileFile; return { values: p.values, records: p.runStates.map((r) => r.records), mae: p.maeHistory }; };

  it.skipIf(!haveAssets || !addon)('default threads = COKV_THREADS=1, bit for bit; kill -9 mid-run + --resume = the uninterrupted run', { timeout: 240_000 }, async () => {
    const dir = tmpDir();
    const a = path.join(dir, 'a.json'), b = path.join(dir, 'b.json'), c = path.join(dir, 'c.json');
    expect(cli({}, ...P, '--samples', '32', '--out', a).code).toBe(0);
    expect(cli({ COKV_THREADS: '1' }, ...P, '--samples', '32', '--out', b).code).toBe(0);
    expect(essence(b)).toEqual(essence(a));
    // Kill -9 once the first checkpoint is on disk, then resume (the dead run's lock is taken over).
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...P, '--samples', '32', '--out', c, '--checkpoint-every', '4'], { cwd: repoRoot, stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    for (let t = 0; t < 600 && !fs.existsSync(c); t++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    await exited;
    expect(fs.existsSync(c)).toBe(true);
    const killedAt = readProfile(c).samples;
    const r = cli({}, ...P, '--samples', '32', '--out', c, '--resume', '--checkpoint-every', '4');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(killedAt).toBeLessThanOrEqual(32);
    expect(essence(c).values).toEqual(essence(a).values);
    expect(essence(c).records).toEqual(essence(a).records);
    expect(fs.readdirSync(dir).sort()).toEqual(['a.json', 'b.json', 'c.json']);
  });
});

describe('budgets with huge values (rows 711 huge_values, 712 huge_values2)', () => {
  it('apportion and the CoKV allocation meet the budget exactly with values near the double limit', () => {
    const cap = new Array<number>(16).fill(100);
    for (const weights of [new Array<number>(16).fill(1e308), [1e308, 1, ...new Array<number>(14).fill(1e308)], [1e308, 1, 1, 1, 5e307, 0, 1e308, 1, 1, 1, 1, 1, 1, 1, 1, 1]]) {
      const a = apportion(weights, 400, cap);
      expect(a.reduce((s, x) => s + x, 0)).toBe(400);
      expect(a.every((x) => x >= 0 && x <= 100)).toBe(true);
    }
    expect(apportion([Infinity, 1, Infinity, -3], 10)).toEqual([5, 0, 5, 0]);
    for (const values of [new Array<number>(16).fill(1e308), [1e308, 1, 1e308, 1, 1e308, 1, 1e308, 1, 1e308, 1, 1e308, 1, 1e308, 1, 1e308, 1]]) {
      const rows = cokvAllocation(values, 0, 4, 4, 24, 500, true);
      expect(rows.flat().reduce((s, x) => s + x, 0)).toBe(24 * 16);
    }
  });
});
