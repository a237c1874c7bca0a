/**
 * Regression tests for the eval / CLI rows of the reliability review (docs/findings/reliability.md): eval reruns
 * never answer with another configuration's numbers, resume validates what it reuses, output faults and bad flag
 * values end in one line and exit 1, and big inputs are refused before they cost gigabytes.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { runEval, type EvalOptions } from '../src/eval/runner.js';
import { canonicalJson, modelDigest, settingsDiff } from '../src/eval/run-settings.js';
import { openModel } from '../src/model/load.js';
import { asset, cokv, expectCokvError, expectUserError, haveAssets, repoRoot, tmpDir } from './helpers.js';

const tiny = asset('models/cokv-retrieval-tiny');
const stories = asset('models/stories260K');
const data = asset('data/retrieval-dev.jsonl');
const tmp = tmpDir('cokv-trust-eval-');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// Run folders of the default F16 storage end in __f16.
const SNAP = 'retrieval__cokv-retrieval-tiny__snapkv__32__f16';
const COKV = 'retrieval__cokv-retrieval-tiny__cokv__32__f16';
const evalArgs = (out: string, ...more: string[]) => ['eval', '--model', tiny, '--data', data, '--dataset', 'retrieval', '--subset', 'passkey',
  '--lengths', '512', '--split', 'all', '--limit', '2', '--presses', 'full,snapkv', '--budgets', '32', '--quiet', '--json', '--out', out, ...more];

interface Scored { score: number; n: number; ci95: number[]; keptKvBytes: number }

/** Run eval, expecting success; returns the results (not timings) by press. */
function evalOk(args: string[]): Record<string, Scored> {
  const r = cokv(...args);
  expect(r.code, r.stderr).toBe(0);
  return Object.fromEntries((JSON.parse(r.stdout) as (Scored & { press: string })[])
    .map((m) => [m.press, { score: m.score, n: m.n, ci95: m.ci95, keptKvBytes: m.keptKvBytes }]));
}

describe('settings records', () => {
  it('canonical JSON ignores key order; the diff names nested settings', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, 2], c: undefined } })).toBe(canonicalJson({ a: { d: [1, 2] }, b: 1 }));
    expect(settingsDiff({ lengths: [512], pressOptions: { window: 8, profile: 'x' } }, { lengths: [1024], pressOptions: { window: 8, profile: 'y' } }))
      .toEqual(['lengths', 'pressOptions.profile']);
  });
});

describe('the model part of the settings', () => {
  it('is the content: the same at another path, other after one weight byte or the tokenizer changes; llama2.c folders too', async () => {
    const fixture = path.join(repoRoot, 'test/fixtures/models/qwen3-tiny/hf-bf16');
    const copy = (name: string): string => {
      const d = path.join(tmp, name);
      fs.cpSync(fixture, d, { recursive: true });
      return d;
    };
    const digest = async (d: string) => modelDigest(d, (await openModel(d)).path);
    const want = await digest(fixture);
    expect(await digest(copy('same'))).toEqual(want);
    const weights = copy('weights');
    const st = path.join(weights, 'model.safetensors');
    const b = fs.readFileSync(st);
    b[b.length - 1] ^= 1;
    fs.writeFileSync(st, b);
    expect((await digest(weights)).weights).not.toEqual(want.weights);
    const tok = copy('tokenizer');
    fs.appendFileSync(path.join(tok, 'tokenizer.json'), ' ');
    const t = await digest(tok);
    expect(t.weights).toEqual(want.weights);
    expect(t.files).not.toEqual(want.files);
    if (haveAssets) {
      // A llama2.c folder resolves to its checkpoint; the tokenizer beside it counts as another file.
      const d = await digest(stories);
      expect(d.weights).toMatch(/^md5:[0-9a-f]{32}$/);
      expect(Object.keys(d.files as object)).toEqual(['tok512.bin']);
    }
  });
});

describe.skipIf(!haveAssets)('eval reruns and resume (rows 803-810, 875-877)', () => {
  let base: string;
  let baseScores: Record<string, Scored>;
  beforeAll(() => {
    base = path.join(tmp, 'base');
    baseScores = evalOk(evalArgs(base));
    expect(fs.readdirSync(base).sort()).toEqual(['retrieval__cokv-retrieval-tiny__full__full__f16', SNAP]);
    expect(JSON.parse(fs.readFileSync(path.join(base, SNAP, 'run.json'), 'utf8')).settingsHash).toMatch(/^[0-9a-f]{64}$/);
  }, 120_000);
  const copy = (name: string) => {
    const d = path.join(tmp, name);
    fs.cpSync(base, d, { recursive: true });
    return d;
  };

  it('resume_metrics_corrupt: a corrupt metrics.json is recomputed from the predictions, with a warning', () => {
    const out = copy('corrupt');
    fs.writeFileSync(path.join(out, SNAP, 'metrics.json'), '{not json');
    const r = cokv(...evalArgs(out));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*metrics\.json: not a JSON object; recomputed/);
    expect(JSON.parse(r.stdout)[1].score).toBe(baseScores.snapkv.score);
    expect(JSON.parse(fs.readFileSync(path.join(out, SNAP, 'metrics.json'), 'utf8')).score).toBe(baseScores.snapkv.score);
  });

  it('resume_metrics_empty_obj: metrics.json = {} is not a result; the table prints the recomputed one', () => {
    const out = copy('empty-obj');
    fs.writeFileSync(path.join(out, SNAP, 'metrics.json'), '{}');
    const r = cokv(...evalArgs(out).filter((a) => a !== '--json'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/metrics\.json: incomplete \(no settings hash\); recomputed/);
    expect(r.stdout).toMatch(new RegExp(`snapkv\\s+32\\s+${baseScores.snapkv.score.toFixed(2)} \\(2\\)`));
  });

  it('resume_pred_missing_fields: a prediction line without score/bytes is redone, never scored as null', () => {
    const out = copy('missing-fields');
    fs.rmSync(path.join(out, SNAP, 'metrics.json'));
    const file = path.join(out, SNAP, 'predictions.jsonl');
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    fs.writeFileSync(file, `${JSON.stringify({ id: lines[0].id })}\n${JSON.stringify(lines[1])}\n`);
    const r = cokv(...evalArgs(out));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/predictions\.jsonl: 1 malformed line \(line 1: .*missing.*\) dropped; it is redone/);
    const m = JSON.parse(r.stdout)[1];
    expect(m.score).toBe(baseScores.snapkv.score);
    expect(m.ci95.every((x: unknown) => typeof x === 'number')).toBe(true);
    const again = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(again.map((p) => typeof p.score)).toEqual(['number', 'number']);
  });

  it('resume_pred_is_dir: predictions.jsonl that is a folder is one line, exit 1', () => {
    const out = copy('pred-dir');
    fs.rmSync(path.join(out, SNAP, 'metrics.json'));
    fs.rmSync(path.join(out, SNAP, 'predictions.jsonl'));
    fs.mkdirSync(path.join(out, SNAP, 'predictions.jsonl'));
    expectUserError(cokv(...evalArgs(out)), /--out .*predictions\.jsonl: is a folder, not a file cokv wrote/);
  });

  it('resume_rundir_is_file: a run folder name taken by a file is one line, exit 1', () => {
    const out = path.join(tmp, 'rundir-file');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, SNAP), 'x');
    expectUserError(cokv(...evalArgs(out)), new RegExp(`--out .*${SNAP}: the run folder's name is taken by a file`));
  });

  it('eval_rerun_other_lengths / other_window: another configuration is refused, naming what differs; --overwrite recomputes', () => {
    const out = copy('other');
    const lengths = evalArgs(out).map((a) => (a === '512' ? '1024' : a));
    expectUserError(cokv(...lengths), /holds results for other settings \(different lengths\); use another --out, or --overwrite/);
    expectUserError(cokv(...evalArgs(out, '--window', '16')), new RegExp(`${SNAP}: holds results for other settings \\(different pressOptions\\.window\\)`));
    // The same settings are still reused as they are.
    expect(evalOk(evalArgs(out)).snapkv.score).toBe(baseScores.snapkv.score);
    const fresh = evalOk(lengths.map((a) => (a === out ? path.join(tmp, 'other-fresh') : a)));
    const over = evalOk([...lengths, '--overwrite']);
    expect(over.snapkv).toEqual(fresh.snapkv);
    expect(over.full).toEqual(fresh.full);
    expect(JSON.parse(fs.readFileSync(path.join(out, SNAP, 'run.json'), 'utf8')).settings.lengths).toEqual([1024]);
  });

  it('a cut run is not resumed with other settings, and a second eval on the same folder is refused', () => {
    const out = copy('cut');
    fs.rmSync(path.join(out, SNAP, 'metrics.json'));
    expectUserError(cokv(...evalArgs(out, '--kernel', '5')), new RegExp(`${SNAP}: holds results for other settings \\(different pressOptions\\.kernel\\)`));
    // Another live process (our parent) holds the run's lock.
    fs.writeFileSync(path.join(out, `${SNAP}.lock`), `${process.ppid}\n`);
    expectUserError(cokv(...evalArgs(out)), new RegExp(`--out .*${SNAP}: another cokv process \\(pid ${process.ppid}\\) is writing it`));
    fs.rmSync(path.join(out, `${SNAP}.lock`));
    expect(evalOk(evalArgs(out)).snapkv).toEqual(baseScores.snapkv);
  });

  it('a folder written without a settings record (older cokv) is not trusted', () => {
    const out = copy('legacy');
    for (const d of fs.readdirSync(out)) fs.rmSync(path.join(out, d, 'run.json'));
    for (const d of fs.readdirSync(out)) {
      const f = path.join(out, d, 'metrics.json');
      const m = JSON.parse(fs.readFileSync(f, 'utf8'));
      delete m.settingsHash;
      fs.writeFileSync(f, JSON.stringify(m));
    }
    expectUserError(cokv(...evalArgs(out)), /holds results without a settings record .*--overwrite/);
  });

  it('eval_rerun_other_profile: a profile whose content changed (same path) is another configuration', () => {
    const out = path.join(tmp, 'profile-runs');
    const profile = path.join(tmp, 'profile.json');
    const good = fs.readFileSync(path.join(repoRoot, 'results/profiles/cokv-retrieval-tiny__loglik.json'), 'utf8');
    fs.writeFileSync(profile, good);
    const args = (o: string, ...more: string[]) => evalArgs(o, '--profile', profile, ...more).map((a) => (a === 'full,snapkv' ? 'cokv' : a));
    evalOk(args(out));
    const p = JSON.parse(good);
    p.values = p.values.map((r: number[]) => r.map((v) => -v));
    fs.writeFileSync(profile, JSON.stringify(p));
    expectUserError(cokv(...args(out)), new RegExp(`${COKV}: holds results for other settings \\(different pressOptions\\.profile\\)`));
    expect(evalOk(args(out, '--overwrite')).cokv).toEqual(evalOk(args(path.join(tmp, 'profile-fresh'))).cokv);
  });
});

describe.skipIf(!haveAssets)('eval output faults (rows 685, 693, 881)', () => {
  it('readonly_eval_out: an unwritable --out is one line, exit 1 (as an unprivileged user)', () => {
    const ro = path.join(tmp, 'ro');
    fs.mkdirSync(ro);
    fs.chmodSync(ro, 0o555);
    fs.chmodSync(tmp, 0o755);
    const args = [path.join(repoRoot, 'src/cli/run.ts'), ...evalArgs(path.join(ro, 'runs'))];
    // Root ignores permissions: run as nobody where we are root (setpriv), else as ourselves.
    const root = process.getuid?.() === 0;
    const r = root
      ? spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', 'tsx', ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 })
      : spawnSync(process.execPath, ['--import', 'tsx', ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });
    expectUserError({ code: r.status ?? -1, stderr: r.stderr }, /--out .*ro\/runs: permission denied \(EACCES, mkdir\)/);
  });

  describe('disk full while writing', () => {
    let model: CokvModel;
    beforeAll(async () => {
      model = await loadModel(tiny);
    });
    afterEach(() => {
      vi.restoreAllMocks();
    });
    const opts = (out: string): EvalOptions => ({
      dataset: 'retrieval', data, presses: ['full'], budgets: [], pressOptions: {}, limit: 1, split: 'all', splitSeed: 0,
      subset: ['passkey'], lengths: [512], protocol: 'question-aware', out, warn: () => {},
    });
    const enospc = (file: string) => Object.assign(new Error(`ENOSPC: no space left on device, write '${file}'`), { code: 'ENOSPC', syscall: 'write' });

    it('enospc_eval / enospc_eval_tmp_left: metrics.json on a full disk is one CokvError and leaves no temp file', async () => {
      const out = path.join(tmp, 'enospc');
      const real = fs.writeFileSync;
      // A full disk: the temp file is created, then the write fails (as on the 12 KiB tmpfs of the review).
      vi.spyOn(fs, 'writeFileSync').mockImplementation((file, d, o) => {
        if (String(file).includes('metrics.json.tmp-')) {
          real(file, '', o as fs.WriteFileOptions);
          throw enospc(String(file));
        }
        return real(file, d, o as fs.WriteFileOptions);
      });
      let err: unknown;
      await runEval(model, tiny, opts(out)).catch((e: unknown) => { err = e; });
      expect(() => { throw err; }).toThrow(/--out .*metrics\.json.*no space left on the device \(ENOSPC/);
      const dir = path.join(out, 'retrieval__cokv-retrieval-tiny__full__full__f16');
      expect(fs.readdirSync(dir).sort()).toEqual(['predictions.jsonl', 'run.json']);
      expect(fs.readdirSync(out).filter((f) => f.endsWith('.lock'))).toEqual([]);
      // The predictions survive: the rerun (disk freed) only writes the metrics.
      vi.restoreAllMocks();
      const [m] = await runEval(model, tiny, opts(out));
      expect(m.n).toBe(1);
    }, 60_000);

    it('a prediction append on a full disk names predictions.jsonl', async () => {
      const out = path.join(tmp, 'enospc-append');
      vi.spyOn(fs, 'appendFileSync').mockImplementation(() => { throw enospc(''); });
      let err: unknown;
      await runEval(model, tiny, opts(out)).catch((e: unknown) => { err = e; });
      expect(() => { throw err; }).toThrow(/--out .*predictions\.jsonl: no space left on the device/);
    }, 60_000);
  });
});

describe.skipIf(!haveAssets)('generate / bench flag values (rows 636-648, 831, 832, 852)', () => {
  it('maxtok_1e6 / 1e7_aslimit / 1e8 / 1000000000: more tokens than the context are refused before any allocation', () => {
    for (const n of ['1e6', '10000000', '100000000', '1000000000']) {
      expectUserError(cokv('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', n),
        new RegExp(`--max-tokens: ${Number(n)} is more than the model's context of 512 tokens`));
    }
  });

  it('maxtok_9007199254740993: a non-safe integer is refused', () => {
    expectUserError(cokv('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '9007199254740993'),
      /--max-tokens: '9007199254740993' is not a safe integer/);
  });

  it('rep_pen_0 / seed_huge / stop_empty: refused, naming the flag', () => {
    const g = (...a: string[]) => cokv('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '3', ...a);
    expectUserError(g('--repetition-penalty', '0'), /--repetition-penalty: 0 must be > 0/);
    expectUserError(g('--repetition-penalty', '-1'), /--repetition-penalty: -1 must be > 0/);
    expectUserError(g('--seed', '1e300'), /--seed: '1e300' is not a safe integer/);
    expectUserError(g('--stop', ''), /--stop: a stop string must not be empty/);
  });

  it('the library names the option: maxTokens, repetitionPenalty, seed, stop', async () => {
    const m = await loadModel(stories);
    const ctx = m.config.contextLength;
    expectCokvError(() => m.generate('Once upon a time', { maxTokens: ctx + 1 }), `maxTokens: ${ctx + 1} is more than the model's context of ${ctx}`);
    expectCokvError(() => m.generate('Once upon a time', { maxTokens: 2 ** 53 }), 'maxTokens:');
    expectCokvError(() => m.generate('Once upon a time', { repetitionPenalty: 0 }), 'repetitionPenalty: 0');
    expectCokvError(() => m.generate('Once upon a time', { seed: 1e300 }), 'seed: 1e+300 must be a safe integer');
    expectCokvError(() => m.generate('Once upon a time', { stop: [''] }), 'stop: stop strings must be non-empty');
    // A whole context of new tokens stays allowed (generation may run a little past the trained context).
    const g = m.generate('Once upon a time', { maxTokens: ctx, stop: ['.'] });
    await g.complete();
    expect(g.stats!.stopReason).toBe('stop');
  });

  it('bench_len_over_ctx: --lengths beyond the context is refused at once', () => {
    const t0 = Date.now();
    expectUserError(cokv('bench', '--model', stories, '--lengths', '100000', '--presses', 'full', '--out', path.join(tmp, 'bench')),
      /--lengths: 100000 tokens are more than the model's context of 512 tokens/);
    expect(Date.now() - t0).toBeLessThan(60_000);
  });
});

describe.skipIf(!haveAssets)('big and unreadable inputs (rows 660, 667, 668, 828, 499)', () => {
  it('prompt_huge_file / prompt_file_50MB_nolimit: a 50 MB prompt file is refused without being tokenized', () => {
    const f = path.join(tmp, 'huge.txt');
    fs.writeFileSync(f, 'word '.repeat(10_000_000));
    const t0 = Date.now();
    expectUserError(cokv('generate', '--model', stories, '--prompt-file', f, '--max-tokens', '2'),
      /--prompt-file .*huge\.txt: 50000000 bytes cannot fit the model's context of 512 tokens/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    fs.rmSync(f);
  });

  it('a prompt file through a pipe is read only up to what can fit', () => {
    // A real pipe (spawnSync's own stdin is a socket, which /dev/stdin cannot reopen).
    const cli = `'${process.execPath}' --import tsx '${path.join(repoRoot, 'src/cli/run.ts')}' generate --model '${stories}' --prompt-file /dev/stdin --max-tokens 2`;
    const r = spawnSync('sh', ['-c', `yes word | head -c 10000000 | ${cli}`], { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });
    expectUserError({ code: r.status ?? -1, stderr: r.stderr }, /--prompt-file \/dev\/stdin: more than \d+ bytes cannot fit the model's context of 512 tokens/);
  });

  it('long text prompts are refused by a character bound, then counted piece by piece, before whole tokenizing', async () => {
    const m = await loadModel(tiny);
    const ctx = m.config.contextLength;
    expect(m.maxPromptChars()).toBeGreaterThan(1 << 16);
    const encode = vi.spyOn(m.tokenizer, 'encode');
    expectCokvError(() => m.promptIds('x'.repeat(m.maxPromptChars() + 1)), `characters cannot fit the model's context of ${ctx} tokens`);
    expect(encode).not.toHaveBeenCalled();
    const text = 'the cat sat on the mat.\n'.repeat(Math.ceil((m.maxPromptChars() - 10) / 24)).slice(0, m.maxPromptChars() - 10);
    expectCokvError(() => m.promptIds(text), `already hold more than the ${ctx} tokens of the model's context`);
    // Only one bounded piece was tokenized, never the whole text.
    expect(encode).toHaveBeenCalledTimes(1);
    expect((encode.mock.calls[0][0] as string).length).toBeLessThanOrEqual(1 << 16);
    encode.mockRestore();
    // Short prompts are tokenized exactly as before.
    expect(m.promptIds('the cat sat on the mat.')).toEqual(m.encode('the cat sat on the mat.'));
  });

  it('unreadable_dir / unreadable_file: an unreadable model is one line, exit 1', () => {
    const dir = path.join(tmp, 'noread');
    fs.cpSync(stories, dir, { recursive: true });
    const file = path.join(tmp, 'noread2.bin');
    fs.copyFileSync(path.join(stories, 'stories260K.bin'), file);
    fs.chmodSync(dir, 0o000);
    fs.chmodSync(file, 0o000);
    fs.chmodSync(tmp, 0o755);
    const root = process.getuid?.() === 0;
    const run = (model: string) => {
      const a = ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), 'generate', '--model', model, '--prompt', 'hi', '--max-tokens', '2'];
      const r = root
        ? spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...a], { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 })
        : spawnSync(process.execPath, a, { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });
      return { code: r.status ?? -1, stderr: r.stderr };
    };
    try {
      expectUserError(run(dir), /noread: permission denied \(EACCES, scandir\)/);
      expectUserError(run(file), /noread2\.bin: permission denied \(EACCES, open\)/);
    } finally {
      fs.chmodSync(dir, 0o755);
    }
  });

  it('tok_chat_huge: a looping chat template in a model folder ends in one line, exit 1', () => {
    const d = path.join(tmp, 'chat-loop');
    fs.mkdirSync(d);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'generation_config.json']) fs.copyFileSync(path.join(tiny, f), path.join(d, f));
    const cfg = JSON.parse(fs.readFileSync(path.join(tiny, 'tokenizer_config.json'), 'utf8'));
    cfg.chat_template = '{% for i in range(100000000) %}{{ i }}{% endfor %}';
    fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t0 = Date.now();
    expectUserError(cokv('generate', '--model', d, '--chat', '--prompt', 'hello', '--max-tokens', '2'), /chat template/);
    expect(Date.now() - t0).toBeLessThan(60_000);
  });
});
