/**
 * The results pipeline (issue #8): every experiment is one seeded, resumable step that writes under `results/`.
 * Profiles and head scores are computed on validation items only; every score comes from test items.
 *
 *   profiles     CoKV profiles (Sliced Shapley, loglik utility, 2 runs) and HeadKV retrieval-head scores
 *   budget       score vs budget for all presses, both protocols (question-aware, context-only), and ratios
 *   generated    the same sweep on fresh retrieval items generated in the dev file's format (`cokv gen-retrieval`,
 *                held-out haystacks, seed + 1): more test items per cell than the dev file's 17
 *   masking      keep the full cache only for the k highest- vs k lowest-valued heads
 *   estimator    convergence of two runs, exact Shapley by enumeration (16 players), cost vs the naive loop
 *   sensitivity  α, window and utility choice
 *   quant        CoKV and SnapKV with F16 and Q8 KV storage at the same bytes as F32
 *   memory       KV bytes, prefill and decode latency, peak RSS on a random SmolLM2-135M-shaped model, 1k–8k tokens
 *   summary      results/summary.json + results/results.md + figures (SVG)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { main } from '../cli/main.js';
import { ProgressBar, formatDuration } from '../cli/progress.js';
import { loadModel, type CokvModel } from '../engine.js';
import { CokvError } from '../errors.js';
import { loadEvalItems, splitItems } from '../eval/datasets.js';
import type { RunMetrics } from '../eval/runner.js';
import { readProfile } from '../game/profile-file.js';
import { compareValues, topK } from '../game/compare.js';
import { ModelGame } from '../game/model-game.js';
import { buildSamples, metricGameOptions } from '../game/samples.js';
import { enumerateGame } from '../game/enumerate.js';
import { defaultSizes } from '../game/sliced-shapley.js';
import { Rng } from '../generate/rng.js';
import { mixSeed } from '../game/sliced-shapley.js';
import { datasetInfo } from '../eval/datasets.js';
import { lineChart, standaloneSvg, type LineSeries } from '../eval/report.js';
import { writeSafetensors } from '../model/loaders/safetensors.js';
import { openModel } from '../model/load.js';
import { equalBytesLength } from '../cache/ragged.js';

export const EXPERIMENTS = ['profiles', 'budget', 'generated', 'baselines', 'masking', 'estimator', 'sensitivity', 'quant', 'memory', 'summary'] as const;
export type ExperimentName = (typeof EXPERIMENTS)[number];

export interface ExperimentOptions {
  quick: boolean;
  /** 'tiny': a smoke-test slice (one item per task, a budget above the prompt length) for the test suite. */
  slice?: 'tiny';
  /** Samples per run for the sensitivity profiles (metric, kl utilities); default: the plan's. */
  sensitivitySamples?: number;
  out: string;
  assets: string;
  seed: number;
  /**
   * No progress bars, no sub-command lines or output (shown only for a step that fails) and no per-loop log lines:
   * only the `== step` lines and where the summary went.
   */
  quiet?: boolean;
  log: (msg: string) => void;
}

const PRESSES = ['full', 'streaming', 'snapkv', 'boundary-snapkv', 'pyramidkv', 'adakv', 'headkv', 'cokv', 'random'];
const TASKS = ['passkey', 'multikey', 'kv'];

interface Plan {
  lengths: number[];
  budgets: number[];
  ratios: number[];
  testLimit?: number;
  profileSamples: number;
  profileLimit?: number;
  storiesLimit?: number;
}

function plan(quick: boolean, slice?: 'tiny'): Plan {
  if (slice === 'tiny') return { lengths: [512], budgets: [16, 1024], ratios: [], testLimit: 1, profileSamples: 8, profileLimit: 2, storiesLimit: 1 };
  return quick
    ? { lengths: [512], budgets: [16, 32, 64, 128], ratios: [], testLimit: 3, profileSamples: 32, profileLimit: 6, storiesLimit: 4 }
    : { lengths: [512, 1024, 2048], budgets: [16, 32, 64, 128, 256], ratios: [0.75, 0.5, 0.25, 0.125], profileSamples: 256 };
}

function paths(o: ExperimentOptions) {
  const a = o.assets;
  return {
    tiny: path.join(a, 'models/cokv-retrieval-tiny'),
    stories: path.join(a, 'models/stories260K'),
    retrievalData: path.join(a, 'data/retrieval-dev.jsonl'),
    storiesData: path.join(a, 'data/stories/stories-dev.jsonl'),
    haystack: path.join(a, 'data/needle/PaulGrahamEssays'),
    profiles: path.join(o.out, 'profiles'),
    runs: path.join(o.out, 'runs'),
  };
}

/**
 * Run `fn` with what it writes to stdout and stderr held back (in order); it is written out after `before()` only
 * when `show(result)` says so or `fn` throws — so a quiet experiment prints a step's output only when it fails.
 */
async function heldBack<T>(fn: () => Promise<T>, show: (r: T) => boolean, before: () => void): Promise<T> {
  const out = process.stdout.write, err = process.stderr.write;
  const held: [NodeJS.WriteStream, string | Uint8Array][] = [];
  const hold = (stream: NodeJS.WriteStream) => ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
    held.push([stream, chunk]);
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as typeof out;
  process.stdout.write = hold(process.stdout);
  process.stderr.write = hold(process.stderr);
  let result: T, failed = true;
  try {
    result = await fn();
    failed = show(result);
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    if (failed) {
      before();
      for (const [stream, chunk] of held) stream.write(chunk);
    }
  }
  return result;
}

/** Commands with a progress bar (and an ETA) that `--quiet` turns off. */
const QUIET_COMMANDS = new Set(['eval', 'profile', 'needle']);

/**
 * Run a CLI command in-process; a failure stops the experiment with the command's own message. Its progress bar
 * is shown unless the experiment runs quiet.
 */
async function cli(args: string[], o: ExperimentOptions): Promise<void> {
  args = args.filter((a) => a !== '--quiet');
  if (o.quiet && QUIET_COMMANDS.has(args[0])) args.push('--quiet');
  // The pipeline owns its output folders: a run folder from an older cokv (no settings record) or from other
  // settings is recomputed; a finished folder with the same settings is still reused.
  if (args[0] === 'eval' && !args.includes('--overwrite')) args.push('--overwrite');
  // docs/results.md was measured with an F32 KV cache (the default then): its eval steps keep F32 unless a step asks
  // for another storage, so finished run folders stay reusable and the numbers reproducible.
  if (args[0] === 'eval' && !args.includes('--kv-dtype')) args.push('--kv-dtype', 'f32');
  const line = `$ cokv ${args.join(' ')}`;
  if (!o.quiet) o.log(line);
  const code = o.quiet ? await heldBack(() => main(args), (c) => c !== 0, () => o.log(line)) : await main(args);
  if (code !== 0) throw new CokvError(`experiment step failed (exit ${code}): cokv ${args.join(' ')}`, 'internal');
}

function profileFile(o: ExperimentOptions, model: string, utility = 'loglik', extra = ''): string {
  return path.join(paths(o).profiles, `${model}__${utility}${extra}.json`);
}
/**
 * The profile each model's CoKV press uses: the `cokv profile` default (metric utility: the greedy answer's exact
 * match) for the retrieval model; loglik for stories260K, whose task is scored by log-likelihood.
 */
function defaultProfile(o: ExperimentOptions, model: string): string {
  return profileFile(o, model, model === 'stories260K' ? 'loglik' : 'metric');
}
/** HeadKV scores: `r2` (HeadKV-R2 as the official code computes it, the default) or `copy` (the earlier needle-copy score). */
function headScoresFile(o: ExperimentOptions, model: string, method: 'r2' | 'copy' = model === 'stories260K' ? 'copy' : 'r2'): string {
  return path.join(paths(o).profiles, method === 'copy' ? `${model}__headkv.json` : `${model}__headkv-${method}.json`);
}

async function profiles(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  fs.mkdirSync(p.profiles, { recursive: true });
  const common = ['--split', 'validation', '--runs', '2', '--seed', String(o.seed), '--samples', String(pl.profileSamples)];
  const lim = pl.profileLimit ? ['--limit', String(pl.profileLimit)] : [];
  const tinyData = ['--model', p.tiny, '--data', p.retrievalData, '--task', 'retrieval', '--subset', TASKS.join(','), ...(o.quick ? ['--lengths', '512'] : [])];
  // The retrieval model: the default (metric) profile, the loglik one (the earlier default, a baseline), and the
  // leave-one-out values under the same utility (single-head ablation: a baseline allocator).
  for (const utility of ['metric', 'loglik']) {
    const f = profileFile(o, 'cokv-retrieval-tiny', utility);
    if (!fs.existsSync(f) || !readProfile(f).converged) {
      await cli(['profile', ...tinyData, '--utility', utility, ...common, ...lim, '--out', f, ...(fs.existsSync(f) ? ['--resume'] : [])], o);
    }
  }
  const loo = profileFile(o, 'cokv-retrieval-tiny', 'metric', '-loo');
  if (!fs.existsSync(loo)) await cli(['profile', ...tinyData, '--utility', 'metric', '--estimator', 'loo', '--split', 'validation', ...lim, '--out', loo], o);
  const storiesProfile = profileFile(o, 'stories260K');
  if (!fs.existsSync(storiesProfile) || !readProfile(storiesProfile).converged) {
    await cli(['profile', '--model', p.stories, '--data', p.storiesData, '--task', 'stories', '--utility', 'loglik', '--max-new', '16',
      ...common, ...(o.quick ? ['--limit', '4'] : []), '--out', storiesProfile, ...(fs.existsSync(storiesProfile) ? ['--resume'] : [])], o);
  }
  for (const [name, model, len] of [['cokv-retrieval-tiny', p.tiny, 512], ['stories260K', p.stories, 256]] as const) {
    const f = headScoresFile(o, name, 'copy');
    if (!fs.existsSync(f)) {
      // `--method copy`: the needle-copy score these experiments were first published with.
      await cli(['head-scores', '--method', 'copy', '--model', model, '--haystack', p.haystack, '--length', String(len), '--samples', o.quick ? '2' : '8',
        '--seed', String(o.seed), '--out', f], o);
    }
  }
  const r2 = headScoresFile(o, 'cokv-retrieval-tiny', 'r2');
  if (!fs.existsSync(r2)) {
    await cli(['head-scores', '--method', 'r2', '--model', p.tiny, '--haystack', p.haystack, '--samples', o.quick ? '2' : '8',
      '--seed', String(o.seed), '--out', r2], o);
  }
}

function pressFlags(o: ExperimentOptions, model: string): string[] {
  return ['--profile', defaultProfile(o, model), '--head-scores', headScoresFile(o, model)];
}

async function budget(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const limit = pl.testLimit ? ['--limit', String(pl.testLimit)] : [];
  for (const task of TASKS) {
    for (const L of pl.lengths) {
      for (const protocol of ['question-aware', 'context-only']) {
        await cli(['eval', '--model', p.tiny, '--data', p.retrievalData, '--dataset', 'retrieval', '--subset', task, '--lengths', String(L),
          '--split', 'test', '--split-seed', String(o.seed), ...limit, '--presses', PRESSES.join(','), '--budgets', pl.budgets.join(','),
          ...(pl.ratios.length ? ['--ratios', pl.ratios.join(',')] : []), '--protocol', protocol, ...pressFlags(o, 'cokv-retrieval-tiny'),
          '--out', path.join(p.runs, `retrieval-${task}-${L}`)], o);
      }
    }
  }
  if (!o.quick) {
    for (const task of ['vartrack', 'twohop']) {
      await cli(['eval', '--model', p.tiny, '--data', p.retrievalData, '--dataset', 'retrieval', '--subset', task, '--lengths', '512',
        '--split', 'test', '--split-seed', String(o.seed), '--presses', 'full,snapkv,cokv', '--budgets', '64', ...pressFlags(o, 'cokv-retrieval-tiny'),
        '--out', path.join(p.runs, `retrieval-${task}-512`)], o);
    }
  }
  await cli(['eval', '--model', p.stories, '--data', p.storiesData, '--dataset', 'stories', '--split', 'test', '--split-seed', String(o.seed),
    ...(pl.storiesLimit ? ['--limit', String(pl.storiesLimit)] : []), '--presses', PRESSES.join(','), '--budgets', (o.slice ? [16, 1024] : o.quick ? [16, 32] : [16, 24, 32, 64]).join(','),
    '--metric', 'loglik', ...pressFlags(o, 'stories260K'), '--out', path.join(p.runs, 'stories')], o);
}

/** Items per task × length of the `generated` step (full mode). */
const GENERATED_PER_CELL = 60;

/**
 * The budget sweep on generated retrieval items (passkey, multikey, kv): the profiler never saw them (it reads the
 * dev file's validation split), and there are more of them per cell than the dev file's test split holds.
 */
async function generated(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const data = path.join(o.out, 'data', 'retrieval-generated.jsonl');
  const count = o.slice ? 1 : o.quick ? 4 : GENERATED_PER_CELL;
  if (!fs.existsSync(data)) {
    fs.mkdirSync(path.dirname(data), { recursive: true });
    await cli(['gen-retrieval', '--model', p.tiny, '--tasks', TASKS.join(','), '--lengths', pl.lengths.join(','), '--count', String(count),
      '--seed', String(o.seed + 1), '--data-dir', path.join(o.assets, 'data'), '--out', data], o);
  }
  for (const task of TASKS) {
    for (const L of pl.lengths) {
      for (const protocol of ['question-aware', 'context-only']) {
        await cli(['eval', '--model', p.tiny, '--data', data, '--dataset', 'retrieval', '--subset', task, '--lengths', String(L), '--split', 'all',
          '--presses', PRESSES.join(','), '--budgets', pl.budgets.join(','), ...(pl.ratios.length ? ['--ratios', pl.ratios.join(',')] : []),
          '--protocol', protocol, ...pressFlags(o, 'cokv-retrieval-tiny'), '--out', path.join(p.runs, 'generated', `retrieval-${task}-${L}`)], o);
      }
    }
  }
}

/**
 * Baselines and allocation rules (issue #19), on the generated items: every per-head press under the references'
 * integer rules without re-sharing (`--no-redistribute`: the HeadKV/CoKV/AdaKV code) beside cokv's default
 * re-sharing (the `generated` step's runs), and the allocator variants — CoKV with the loglik profile (the earlier
 * default) and with leave-one-out values, HeadKV with the needle-copy score — under both rules. Uniform presses
 * (SnapKV, boundary-protected SnapKV, StreamingLLM) give every head the same budget, so the rule does not change
 * them; their runs are the `generated` step's.
 */
const PER_HEAD_PRESSES = ['pyramidkv', 'adakv', 'headkv', 'cokv'];

function baselineVariants(o: ExperimentOptions): { name: string; presses: string[]; flags: string[] }[] {
  const tiny = 'cokv-retrieval-tiny';
  return [
    { name: 'default', presses: PER_HEAD_PRESSES, flags: pressFlags(o, tiny) },
    { name: 'cokv-loglik', presses: ['cokv'], flags: ['--profile', profileFile(o, tiny, 'loglik')] },
    { name: 'cokv-loo', presses: ['cokv'], flags: ['--profile', profileFile(o, tiny, 'metric', '-loo')] },
    { name: 'headkv-copy', presses: ['headkv'], flags: ['--head-scores', headScoresFile(o, tiny, 'copy')] },
  ];
}

async function baselines(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const data = path.join(o.out, 'data', 'retrieval-generated.jsonl');
  if (!fs.existsSync(data)) throw new CokvError(`experiment baselines: ${data} is missing (run the generated step first)`, 'file');
  for (const rule of ['reshare', 'reference'] as const) {
    for (const v of baselineVariants(o)) {
      // The default variant under re-sharing is the generated step's own runs.
      if (rule === 'reshare' && v.name === 'default') continue;
      for (const task of TASKS) {
        for (const L of pl.lengths) {
          for (const protocol of ['question-aware', 'context-only']) {
            await cli(['eval', '--model', p.tiny, '--data', data, '--dataset', 'retrieval', '--subset', task, '--lengths', String(L), '--split', 'all',
              '--presses', v.presses.join(','), '--budgets', pl.budgets.join(','), '--protocol', protocol, ...v.flags,
              ...(rule === 'reference' ? ['--no-redistribute'] : []),
              '--out', path.join(p.runs, 'baselines', rule, v.name, `retrieval-${task}-${L}`)], o);
          }
        }
      }
    }
  }
}

/** Keep the full cache only for the k highest (or lowest) valued heads; every other head keeps the window. */
async function masking(o: ExperimentOptions): Promise<void> {
  const p = paths(o);
  const out = path.join(o.out, 'masking');
  fs.mkdirSync(out, { recursive: true });
  for (const [name, modelPath, dataset, dataPath] of [
    ['cokv-retrieval-tiny', p.tiny, 'retrieval', p.retrievalData], ['stories260K', p.stories, 'stories', p.storiesData],
  ] as const) {
    const file = path.join(out, `${name}.json`);
    if (fs.existsSync(file)) continue;
    const model = await loadModel(modelPath);
    const c = model.config;
    const n = c.numLayers * c.numKvHeads;
    const values = readProfile(defaultProfile(o, name)).values.flat();
    let items = loadEvalItems(dataset, dataPath);
    if (dataset === 'retrieval') items = items.filter((it) => TASKS.includes(it.task ?? '') && it.length === 512);
    items = splitItems(items, o.seed).test.slice(0, o.slice ? 1 : o.quick ? 6 : dataset === 'retrieval' ? 60 : 40);
    const ks = [...new Set([1, 2, Math.round(n / 8), Math.round(n / 4), Math.round(n / 2), Math.round((3 * n) / 4)])].filter((k) => k >= 1 && k < n).sort((a, b) => a - b);
    const score = await maskedScorer(model, dataset, items);
    const rows: { k: number; top: number; bottom: number; random: number }[] = [];
    const bar = new ProgressBar(`masking ${name}`, o.quiet);
    const total = 3 * ks.length + 2;
    for (const k of ks) {
      bar.update(3 * rows.length, total, `k=${k}`);
      const top = topK(values, k), bottom = topK(values.map((v) => -v), k);
      const rng = new Rng(mixSeed(o.seed, k));
      const rnd = topK(values.map(() => rng.next()), k);
      const mask = (set: number[]) => Uint8Array.from({ length: n }, (_, i) => (set.includes(i) ? 1 : 0));
      rows.push({ k, top: await score(mask(top)), bottom: await score(mask(bottom)), random: await score(mask(rnd)) });
      if (!o.quiet) o.log(`masking ${name} k=${k}: top ${rows[rows.length - 1].top.toFixed(3)} bottom ${rows[rows.length - 1].bottom.toFixed(3)}`);
    }
    bar.update(3 * ks.length, total, 'full and window-only');
    const full = await score(new Uint8Array(n).fill(1)), none = await score(new Uint8Array(n));
    bar.update(total, total);
    bar.finish();
    fs.writeFileSync(file, JSON.stringify({ model: name, dataset, n: items.length, metric: dataset === 'stories' ? 'loglik@16' : 'exact_match', window: 8, full, none, rows }, null, 1) + '\n');
  }
}

/**
 * Mean score of items when only the coalition's heads keep the full prompt: the head game's `metric` utility
 * (greedy answer, task metric; the same prompts as `cokv eval`), or `loglik` for stories.
 */
async function maskedScorer(model: CokvModel, dataset: string, items: ReturnType<typeof loadEvalItems>): Promise<(s: Uint8Array) => Promise<number>> {
  const samples = await buildSamples(dataset, items, model);
  const game = dataset === 'stories'
    ? new ModelGame(model, samples, { utility: 'loglik', window: 8, maxNew: 16, batchSize: 16 })
    : new ModelGame(model, samples, { utility: 'metric', window: 8, maxNew: datasetInfo(dataset).maxNewTokens, batchSize: 16, ...metricGameOptions(dataset) });
  return async (s) => game.evaluate([s])[0];
}

async function estimator(o: ExperimentOptions): Promise<void> {
  const p = paths(o);
  const out = path.join(o.out, 'estimator');
  fs.mkdirSync(out, { recursive: true });
  const summary: Record<string, unknown> = {};
  for (const name of ['cokv-retrieval-tiny', 'stories260K']) {
    const prof = readProfile(defaultProfile(o, name));
    const n = prof.shape[0] * prof.shape[1];
    summary[name] = {
      samplesPerRun: prof.samples, converged: prof.converged, maeHistory: prof.maeHistory, cost: prof.cost, n,
      runAgreement: compareValues(prof.runStates[0].values.flat(), prof.runStates[1].values.flat()),
      coreHours: prof.cost.seconds / 3600,
    };
  }
  // Exact Shapley by enumeration on the 16-player retrieval game (few validation items: 2^16 coalitions each).
  const exactFile = path.join(out, 'exact-retrieval-tiny.json');
  if (!fs.existsSync(exactFile)) {
    const model = await loadModel(p.tiny);
    let items = loadEvalItems('retrieval', p.retrievalData).filter((it) => TASKS.includes(it.task ?? '') && it.length === 512);
    items = splitItems(items, o.seed).validation.slice(0, o.quick ? 1 : 2);
    const samples = await buildSamples('retrieval', items, model);
    const game = new ModelGame(model, samples, { utility: 'loglik', window: 8, maxNew: o.quick ? 3 : 6, batchSize: 64 });
    const n = 16;
    // Quick mode: a 10-player sub-game (players 0..9 vary, the other heads held full).
    const sub = o.slice ? 4 : o.quick ? 10 : 16;
    const sizes = defaultSizes(sub);
    const bar = new ProgressBar('exact enumeration (coalitions)', o.quiet);
    const r = enumerateGame(game, { players: sub, sizes, chunk: 512, onProgress: (d, t) => bar.update(d, t) });
    bar.finish();
    if (!o.quiet) o.log(`exact enumeration: ${r.utilities.length} coalitions in ${formatDuration(r.seconds)}`);
    const { shapley, sliced, seconds } = r;
    fs.writeFileSync(exactFile, JSON.stringify({ players: sub, heldFull: n - sub, items: items.map((i) => i.id), utility: 'loglik', sizes, shapley, sliced, seconds }, null, 1) + '\n');
  }
  const exact = JSON.parse(fs.readFileSync(exactFile, 'utf8')) as { players: number; shapley: number[]; sliced: number[] };
  const prof = readProfile(profileFile(o, 'cokv-retrieval-tiny'));
  const est = prof.values.flat().slice(0, exact.players);
  summary.exact = {
    players: exact.players,
    ssvVsExactSliced: compareValues(est, exact.sliced),
    ssvVsExactShapley: compareValues(est, exact.shapley),
    exactSlicedVsShapley: compareValues(exact.sliced, exact.shapley),
    note: exact.players < 16 ? 'quick mode: sub-game of the first players with the other heads held full; the profile values come from the full 16-player game' : 'full 16-player game',
  };
  fs.writeFileSync(path.join(out, 'summary.json'), JSON.stringify(summary, null, 1) + '\n');
}

async function sensitivity(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const out = path.join(p.runs, 'sensitivity');
  const limit = ['--limit', String(o.slice ? 1 : o.quick ? 3 : 12)];
  const base = ['--model', p.tiny, '--data', p.retrievalData, '--dataset', 'retrieval', '--subset', 'multikey', '--lengths', '512',
    '--split', 'test', '--split-seed', String(o.seed), ...limit, '--head-scores', headScoresFile(o, 'cokv-retrieval-tiny')];
  const tinyProfile = defaultProfile(o, 'cokv-retrieval-tiny');
  const budgets = o.quick ? '32' : '128,256';
  for (const alpha of o.slice ? [1] : o.quick ? [0, 1, 4] : [0, 1, 2, 4, 8]) {
    await cli(['eval', ...base, '--presses', 'cokv', '--budgets', budgets, '--alpha', String(alpha), '--profile', tinyProfile,
      '--out', path.join(out, `alpha-${alpha}`)], o);
  }
  for (const w of o.slice ? [8] : [4, 8, 16]) {
    await cli(['eval', ...base, '--presses', 'snapkv,cokv', '--budgets', budgets, '--window', String(w), '--profile', tinyProfile,
      '--out', path.join(out, `window-${w}`)], o);
  }
  // Utility choice: profiles with each utility (same samples budget), then CoKV with each.
  for (const utility of o.quick ? ['loglik', 'kl'] : ['metric', 'loglik', 'kl']) {
    const f = profileFile(o, 'cokv-retrieval-tiny', utility);
    const want = o.sensitivitySamples ?? pl.profileSamples;
    if (!fs.existsSync(f) || (!readProfile(f).converged && readProfile(f).samples < want)) {
      await cli(['profile', '--model', p.tiny, '--data', p.retrievalData, '--task', 'retrieval', '--subset', TASKS.join(','), ...(o.quick ? ['--lengths', '512'] : []),
        '--utility', utility, '--split', 'validation', '--runs', '2', '--seed', String(o.seed), '--samples', String(o.sensitivitySamples ?? pl.profileSamples),
        ...(pl.profileLimit ? ['--limit', String(pl.profileLimit)] : []), '--out', f, ...(fs.existsSync(f) ? ['--resume'] : [])], o);
    }
    await cli(['eval', ...base, '--presses', 'cokv', '--budgets', budgets, '--profile', f, '--out', path.join(out, `utility-${utility}`)], o);
  }
  // Slice sizes H (full mode): one size n/2 (the Qwen3 tree's choice) and one small size n/8, loglik utility.
  if (!o.quick) {
    for (const [label, sizes] of [['H8', '8'], ['H2', '2']] as const) {
      const f = profileFile(o, 'cokv-retrieval-tiny', 'loglik', `-${label}`);
      const want = o.sensitivitySamples ?? pl.profileSamples;
      if (!fs.existsSync(f) || (!readProfile(f).converged && readProfile(f).samples < want)) {
        await cli(['profile', '--model', p.tiny, '--data', p.retrievalData, '--task', 'retrieval', '--subset', TASKS.join(','), '--sizes', sizes,
          '--utility', 'loglik', '--split', 'validation', '--runs', '2', '--seed', String(o.seed), '--samples', String(want), '--out', f,
          ...(fs.existsSync(f) ? ['--resume'] : [])], o);
      }
      await cli(['eval', ...base, '--presses', 'cokv', '--budgets', budgets, '--profile', f, '--out', path.join(out, `sizes-${label}`)], o);
    }
  }
}

async function quant(o: ExperimentOptions): Promise<void> {
  const p = paths(o);
  const out = path.join(p.runs, 'quant');
  const common = ['--model', p.tiny, '--data', p.retrievalData, '--dataset', 'retrieval', '--subset', 'multikey,kv', '--lengths', '512',
    '--split', 'test', '--split-seed', String(o.seed), '--limit', o.slice ? '1' : o.quick ? '3' : '20', '--presses', 'cokv,snapkv', ...pressFlags(o, 'cokv-retrieval-tiny')];
  // Same bytes: F32 at budget B holds as many bytes as F16 at 2B, and at least as many as Q8 at
  // ⌊B · 4·hd/(hd + 4)⌋ (int8 rows plus one F32 scale per K and V row).
  const base = o.quick ? [16, 32] : [16, 32, 64];
  const { headDim } = (await openModel(p.tiny)).config;
  await runEvalCli([...common, '--budgets', base.join(','), '--out', path.join(out, 'f32')], o);
  for (const dtype of ['f16', 'q8'] as const) {
    const budgets = base.map((b) => equalBytesLength(b, dtype, headDim));
    await runEvalCli([...common, '--budgets', budgets.join(','), '--kv-dtype', dtype, '--out', path.join(out, dtype)], o);
  }
}

async function runEvalCli(args: string[], o: ExperimentOptions): Promise<void> {
  await cli(['eval', ...args], o);
}

/**
 * Memory and latency (no quality claim): a random-weight model with SmolLM2-135M's exact shapes and its real
 * tokenizer, written as a Hugging Face folder in a temp dir, measured by `cokv bench` (one process per config).
 */
async function memory(o: ExperimentOptions): Promise<void> {
  const file = path.join(o.out, 'bench', 'smollm2-135m-random.json');
  if (fs.existsSync(file)) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-smollm2-'));
  const modelDir = path.join(dir, 'smollm2-135m-random');
  fs.mkdirSync(modelDir);
  const tokDir = path.join(o.assets, 'tokenizers/SmolLM2-135M-Instruct');
  fs.copyFileSync(path.join(tokDir, 'config.json'), path.join(modelDir, 'config.json'));
  fs.copyFileSync(path.join(tokDir, 'tokenizer.json'), path.join(modelDir, 'tokenizer.json'));
  const c = SMOLLM2_SHAPE;
  const rng = new Rng(o.seed + 1);
  const t = (name: string, rows: number, cols?: number) => {
    const n = rows * (cols ?? 1);
    const data = new Float32Array(n);
    const scale = cols ? 1 / Math.sqrt(cols) : 0;
    for (let i = 0; i < n; i++) data[i] = cols ? (rng.next() * 2 - 1) * scale : 1;
    return { name, shape: cols ? [rows, cols] : [rows], dtype: 'BF16' as const, data };
  };
  const tensors = [t('model.embed_tokens.weight', c.vocab, c.hidden), t('model.norm.weight', c.hidden)];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      t(`${p}input_layernorm.weight`, c.hidden), t(`${p}post_attention_layernorm.weight`, c.hidden),
      t(`${p}self_attn.q_proj.weight`, c.heads * c.headDim, c.hidden), t(`${p}self_attn.k_proj.weight`, c.kvHeads * c.headDim, c.hidden),
      t(`${p}self_attn.v_proj.weight`, c.kvHeads * c.headDim, c.hidden), t(`${p}self_attn.o_proj.weight`, c.hidden, c.heads * c.headDim),
      t(`${p}mlp.gate_proj.weight`, c.ffn, c.hidden), t(`${p}mlp.up_proj.weight`, c.ffn, c.hidden), t(`${p}mlp.down_proj.weight`, c.hidden, c.ffn),
    );
  }
  writeSafetensors(path.join(modelDir, 'model.safetensors'), tensors);
  try {
    await cli(['bench', '--model', modelDir, '--lengths', o.slice ? '256' : o.quick ? '1024,2048' : '1024,2048,4096,8192',
      '--presses', 'full,snapkv,streaming', '--budgets', '128', '--decode', o.slice ? '2' : '16', '--out', o.out], o);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** SmolLM2-135M's dimensions (its config.json in the shared assets). */
const SMOLLM2_SHAPE = { vocab: 49152, hidden: 576, layers: 30, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536 };

/** Collect every run into results/summary.json and write results/results.md with figures. */
async function summary(o: ExperimentOptions): Promise<void> {
  const entries: Record<string, unknown>[] = [];
  const walk = (dir: string) => {
    if (!fs.existsSync(dir)) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const f = path.join(dir, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.name === 'metrics.json') {
        const m = JSON.parse(fs.readFileSync(f, 'utf8')) as RunMetrics;
        const s = m.settings as { lengths?: number[]; subset?: string[]; profile?: string; kvDtype?: string; alpha?: number; window?: number };
        const task = s.subset?.join(',') ?? m.dataset;
        const run = path.relative(path.join(o.out, 'runs'), path.dirname(f));
        const variant = run.startsWith('sensitivity') || run.startsWith('quant') ? ` [${run.split(path.sep).slice(0, 2).join('/')}]`
          : run.startsWith('baselines') ? ` [${run.split(path.sep).slice(0, 3).join('/')}]`
            : run.startsWith('generated') ? ' [generated items]' : '';
        entries.push({
          // `dataset` names the cell for `cokv report` (task@length plus the experiment variant); `suite` is the file's dataset.
          model: m.model, task, dataset: `${task}${s.lengths?.[0] ? `@${s.lengths[0]}` : ''}${variant}`, suite: m.dataset, promptLength: s.lengths?.[0], protocol: m.protocol,
          press: m.press, budget: m.budget, ratio: m.ratio, kvDtype: s.kvDtype ?? 'f32', score: m.score, n: m.n, ci95: m.ci95,
          agreement: m.agreement, keptKvBytes: m.keptKvBytes, fullKvBytes: m.fullKvBytes, metric: m.metric,
          profile: m.press === 'cokv' ? s.profile : undefined, alpha: s.alpha, window: s.window, run,
          // Which test items: the dev file's test split, or items generated in its format (the `generated` step).
          items: run.startsWith('generated') || run.startsWith('baselines') ? 'generated' : 'dev-test',
        });
      }
    }
  };
  walk(path.join(o.out, 'runs'));
  fs.writeFileSync(path.join(o.out, 'summary.json'), JSON.stringify({ generatedAt: new Date().toISOString(), quick: o.quick, seed: o.seed, entries }, null, 1) + '\n');
  o.log(`summary: ${entries.length} runs → ${path.join(o.out, 'summary.json')}`);
  writeFigures(o, entries);
  fs.writeFileSync(path.join(o.out, 'results.md'), resultTables(o, entries));
  o.log(`tables → ${path.join(o.out, 'results.md')}`);
}

type Entry = {
  model: string; task: string; promptLength?: number; protocol: string; press: string; budget: number | null; ratio?: number;
  kvDtype: string; score: number; n: number; ci95?: [number, number]; agreement?: number; keptKvBytes: number; fullKvBytes: number;
  metric: string; alpha?: number; window?: number; run: string; items: string;
};

const fmt = (v: number | undefined, d = 1) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
/** ", 95% CI [a, b]" of a run's score when the runner gave one. */
const ciLabel = (e?: { ci95?: [number, number] }, d = 1) => (e?.ci95 ? `, 95% CI ${fmt(e.ci95[0], d)}–${fmt(e.ci95[1], d)}` : '');

/** Markdown tables of every result (generated; docs/results.md quotes them). */
function resultTables(o: ExperimentOptions, raw: Record<string, unknown>[]): string {
  const es = raw as unknown as Entry[];
  const out: string[] = [`# cokv results (generated by \`cokv experiment summary\`, ${new Date().toISOString().slice(0, 10)}, ${o.quick ? 'quick' : 'full'} mode, seed ${o.seed})`, ''];
  const main = es.filter((e) => !e.run.startsWith('sensitivity') && !e.run.startsWith('quant') && !e.run.startsWith('baselines'));
  const groups = new Map<string, Entry[]>();
  for (const e of main) {
    const k = `${e.model}|${e.task}|${e.promptLength ?? ''}|${e.protocol}|${e.items}`;
    groups.set(k, [...(groups.get(k) ?? []), e]);
  }
  out.push('## Score vs budget', '', 'Scores on test items (exact match ×100 for the retrieval tasks; mean log-prob per token of the first 16 reference tokens for stories, higher is better). `r0.25` = keep 25% of the prompt per head (kvpress compression ratio 0.75). Kept KV is the mean share of the full prompt cache held after compression.', '');
  const min97: string[] = ['| model | task | length | protocol | items | ' + PRESSES.filter((p) => p !== 'full').join(' | ') + ' |', '|' + ' --- |'.repeat(5 + PRESSES.length - 1)];
  for (const [k, list] of [...groups].sort()) {
    const [model, task, len, protocol, items] = k.split('|');
    const itemsLabel = items === 'generated' ? ' · generated test items' : '';
    const full = list.find((e) => e.press === 'full');
    const budgets = [...new Set(list.filter((e) => e.budget !== null).map((e) => e.budget!))].sort((a, b) => a - b);
    const ratios = [...new Set(list.filter((e) => e.ratio !== undefined).map((e) => e.ratio!))].sort((a, b) => b - a);
    const loglik = full?.metric.startsWith('loglik');
    out.push(`### ${model} · ${task}${len ? ` · ${len} tokens` : ''} · ${protocol}${itemsLabel} (n = ${full?.n ?? list[0].n}, Full = ${fmt(full?.score, loglik ? 3 : 1)}${ciLabel(full, loglik ? 3 : 1)})`, '');
    out.push(`| press | ${budgets.map((b) => `B=${b}`).join(' | ')}${ratios.length ? ' | ' + ratios.map((r) => `r${r}`).join(' | ') : ''} |`);
    out.push('|' + ' --- |'.repeat(1 + budgets.length + ratios.length));
    const row97: string[] = [];
    for (const press of PRESSES.filter((p) => p !== 'full')) {
      const cells = budgets.map((b) => list.find((e) => e.press === press && e.budget === b));
      const rcells = ratios.map((r) => list.find((e) => e.press === press && e.ratio === r));
      if (cells.every((c) => !c) && rcells.every((c) => !c)) { row97.push('–'); continue; }
      const show = (e?: Entry) => (e ? `${fmt(e.score, loglik ? 3 : 1)}${loglik && e.agreement !== undefined ? ` (agr ${fmt(e.agreement, 0)})` : ''}` : '–');
      out.push(`| ${press} | ${cells.map(show).join(' | ')}${rcells.length ? ' | ' + rcells.map(show).join(' | ') : ''} |`);
      // Smallest budget keeping ≥ 97% of Full (for log-probs: within 3% of |Full|).
      const ok = (e: Entry) => full !== undefined && (loglik ? e.score >= full.score - 0.03 * Math.abs(full.score) : e.score >= 0.97 * full.score);
      const first = budgets.find((b, i) => cells[i] && ok(cells[i]!));
      row97.push(first === undefined ? `> ${budgets[budgets.length - 1]}` : String(first));
    }
    const kept = budgets.map((b) => { const e = list.find((x) => x.press === 'snapkv' && x.budget === b); return e ? `${fmt((100 * e.keptKvBytes) / e.fullKvBytes)}%` : '–'; });
    out.push(`| kept KV | ${kept.join(' | ')}${ratios.length ? ' | ' + ratios.map((r) => { const e = list.find((x) => x.press === 'snapkv' && x.ratio === r); return e ? `${fmt((100 * e.keptKvBytes) / e.fullKvBytes)}%` : '–'; }).join(' | ') : ''} |`, '');
    min97.push(`| ${model} | ${task} | ${len || '–'} | ${protocol} | ${items} | ${row97.join(' | ')} |`);
  }
  out.push('## Smallest budget keeping ≥ 97% of Full', '', min97.join('\n'), '');
  out.push(...baselineTables(es));
  const mdir = path.join(o.out, 'masking');
  if (fs.existsSync(mdir)) {
    out.push('## Head masking (full cache only for k heads, the rest window-only)', '');
    for (const f of fs.readdirSync(mdir).filter((x) => x.endsWith('.json')).sort()) {
      const m = JSON.parse(fs.readFileSync(path.join(mdir, f), 'utf8')) as { model: string; metric: string; n: number; full: number; none: number; rows: { k: number; top: number; bottom: number; random: number }[] };
      const d = m.metric.startsWith('loglik') ? 3 : 3;
      out.push(`${m.model} (${m.metric}, n = ${m.n}; all heads full ${fmt(m.full, d)}, no head full ${fmt(m.none, d)})`, '', '| k | top-k by CoKV value | bottom-k | random k |', '| --- | --- | --- | --- |');
      for (const r of m.rows) out.push(`| ${r.k} | ${fmt(r.top, d)} | ${fmt(r.bottom, d)} | ${fmt(r.random, d)} |`);
      out.push('');
    }
  }
  const sens = es.filter((e) => e.run.startsWith('sensitivity'));
  if (sens.length) {
    out.push('## Sensitivity (multikey, 512 tokens, test items)', '', '| setting | press | budget | score | n |', '| --- | --- | --- | --- | --- |');
    for (const e of sens.sort((a, b) => a.run.localeCompare(b.run) || a.press.localeCompare(b.press) || (a.budget ?? 0) - (b.budget ?? 0))) {
      out.push(`| ${e.run.split('/')[1]} | ${e.press} | ${e.budget} | ${fmt(e.score)} | ${e.n} |`);
    }
    out.push('');
  }
  const q = es.filter((e) => e.run.startsWith('quant'));
  if (q.length) {
    // Every storage ran the same list of byte budgets, so the i-th smallest budget of each (press, storage) is the
    // same byte tier: rows go press → tier → f32, f16, q8.
    const storages = ['f32', 'f16', 'q8'];
    const tier = new Map<Entry, number>();
    for (const e of q) tier.set(e, q.filter((x) => x.press === e.press && x.kvDtype === e.kvDtype && (x.budget ?? 0) < (e.budget ?? 0)).length);
    out.push('## CoKV with F16 and Q8 KV storage at the same bytes (multikey + kv, 512 tokens)', '',
      'Per press, each f32 row is followed by F16 and Q8 runs holding at most its bytes: F16 at budget 2B, Q8 (int8 + one F32 scale per K/V row) at ⌊B·4·hd/(hd+4)⌋.', '',
      '| press | storage | budget | kept KV bytes | score | n |', '| --- | --- | --- | --- | --- | --- |');
    for (const e of q.sort((a, b) => a.press.localeCompare(b.press) || tier.get(a)! - tier.get(b)! || storages.indexOf(a.kvDtype) - storages.indexOf(b.kvDtype))) {
      out.push(`| ${e.press} | ${e.kvDtype} | ${e.budget} | ${Math.round(e.keptKvBytes)} | ${fmt(e.score)} | ${e.n} |`);
    }
    out.push('');
  }
  const bdir = path.join(o.out, 'bench');
  if (fs.existsSync(bdir)) {
    for (const f of fs.readdirSync(bdir).filter((x) => x.endsWith('.json')).sort()) {
      const b = JSON.parse(fs.readFileSync(path.join(bdir, f), 'utf8')) as { model: string; rows: { length: number; press: string; budget: number | null; prefillMs: number; decodeMsPerToken: number; kvBytes: number; peakRssBytes: number }[] };
      out.push(`## Memory and latency: ${b.model} (cokv bench, native backend, median decode step)`, '', '| prompt | press | budget | prefill s | decode ms/token | × full | KV MiB | × full | peak RSS MiB |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const r of b.rows) {
        const full = b.rows.find((x) => x.length === r.length && x.press === 'full');
        out.push(`| ${r.length} | ${r.press} | ${r.budget ?? '–'} | ${fmt(r.prefillMs / 1000, 2)} | ${fmt(r.decodeMsPerToken, 2)} | ${full ? fmt(r.decodeMsPerToken / full.decodeMsPerToken, 2) : '–'} | ${fmt(r.kvBytes / 2 ** 20, 2)} | ${full ? fmt(r.kvBytes / full.kvBytes, 4) : '–'} | ${fmt(r.peakRssBytes / 2 ** 20, 0)} |`);
      }
      out.push('');
    }
  }
  const est = path.join(o.out, 'estimator', 'summary.json');
  if (fs.existsSync(est)) out.push('## Estimator', '', '```json', fs.readFileSync(est, 'utf8').trim(), '```', '');
  return out.join('\n') + '\n';
}

/** A run's label in the baselines tables: press plus the allocator variant (`baselines/<rule>/<variant>/…` runs). */
function baselineLabel(e: Entry): string {
  const variant = e.run.startsWith('baselines') ? e.run.split('/')[2] : 'default';
  if (variant === 'cokv-loglik') return 'cokv (loglik profile)';
  if (variant === 'cokv-loo') return 'cokv (leave-one-out values)';
  if (variant === 'headkv-copy') return 'headkv (copy score)';
  if (e.press === 'cokv') return 'cokv (default: metric profile)';
  if (e.press === 'headkv') return 'headkv (R2 score)';
  return e.press;
}

/**
 * Baselines × allocation rules on the generated items: per protocol and rule, the mean score over the three tasks
 * at each (prompt length, budget) with budget ≤ 25% of the prompt, and whether the default CoKV is ≥ every other
 * press there. Uniform presses' runs (the generated step's) stand in both rules: the rule changes nothing for them.
 */
function baselineTables(es: Entry[]): string[] {
  const gen = es.filter((e) => e.items === 'generated' && e.model === 'cokv-retrieval-tiny' && e.budget !== null && e.press !== 'full' && e.press !== 'random');
  if (!gen.some((e) => e.run.startsWith('baselines'))) return [];
  const uniform = new Set(['streaming', 'snapkv', 'boundary-snapkv']);
  const ruleOf = (e: Entry): string | undefined => (e.run.startsWith('baselines') ? e.run.split('/')[1] : e.run.startsWith('generated') ? 'reshare' : undefined);
  const out: string[] = ['## Baselines and allocation rules (generated items, mean over passkey, multikey and kv)', '',
    'Columns: prompt length / budget per KV head, for budgets ≤ 25% of the prompt; each cell the mean exact match ×100 over the three tasks (60 items each). ' +
    '"reshare" = cokv\'s default (budget a head cannot use goes to the others); "reference" = the HeadKV/CoKV/AdaKV code\'s integer rules (`--no-redistribute`). ' +
    'SnapKV, boundary-protected SnapKV and StreamingLLM give every head the same budget, so both rules give them the same runs.', ''];
  for (const protocol of ['question-aware', 'context-only']) {
    for (const rule of ['reshare', 'reference']) {
      const cells = gen.filter((e) => e.protocol === protocol && (ruleOf(e) === rule || (uniform.has(e.press) && ruleOf(e) === 'reshare' && !e.run.startsWith('baselines'))));
      const cols = [...new Set(cells.filter((e) => e.budget! <= 0.25 * (e.promptLength ?? 0)).map((e) => `${e.promptLength}/${e.budget}`))]
        .sort((a, b) => Number(a.split('/')[0]) - Number(b.split('/')[0]) || Number(a.split('/')[1]) - Number(b.split('/')[1]));
      if (cols.length === 0) continue;
      const labels = [...new Set(cells.map(baselineLabel))].sort();
      const mean = (label: string, col: string): number | undefined => {
        const [L, B] = col.split('/').map(Number);
        const xs = cells.filter((e) => baselineLabel(e) === label && e.promptLength === L && e.budget === B);
        return xs.length === TASKS.length ? xs.reduce((a, e) => a + e.score, 0) / xs.length : undefined;
      };
      out.push(`### ${protocol} · ${rule}`, '', `| press | ${cols.join(' | ')} |`, '|' + ' --- |'.repeat(cols.length + 1));
      for (const label of labels) out.push(`| ${label} | ${cols.map((c) => fmt(mean(label, c))).join(' | ')} |`);
      const cokv = 'cokv (default: metric profile)';
      out.push(`| **CoKV ≥ all?** | ${cols.map((c) => {
        const mine = mean(cokv, c);
        if (mine === undefined) return '–';
        const above = labels.filter((l) => l !== cokv && (mean(l, c) ?? -Infinity) > mine + 1e-9);
        return above.length === 0 ? 'yes' : `no (${above.join(', ')})`;
      }).join(' | ')} |`, '');
    }
  }
  return out;
}

function writeFigures(o: ExperimentOptions, entries: Record<string, unknown>[]): void {
  const figDir = path.join(o.out, 'figures');
  fs.mkdirSync(figDir, { recursive: true });
  type E = { model: string; task: string; promptLength?: number; protocol: string; press: string; budget: number | null; ratio?: number; kvDtype: string; score: number; run: string; items: string };
  const es = (entries as unknown as E[]).filter((e) => !e.run.startsWith('sensitivity') && !e.run.startsWith('quant') && !e.run.startsWith('baselines') && e.ratio === undefined);
  const groups = new Map<string, E[]>();
  for (const e of es) {
    const key = `${e.model}|${e.task}|${e.promptLength ?? ''}|${e.protocol}|${e.items === 'generated' ? 'generated' : ''}`;
    groups.set(key, [...(groups.get(key) ?? []), e]);
  }
  for (const [key, list] of groups) {
    const [model, task, len, protocol, gen] = key.split('|');
    const full = list.find((e) => e.press === 'full');
    const series: LineSeries[] = PRESSES.filter((p) => p !== 'full').map((press, i) => ({
      name: press, color: i,
      points: list.filter((e) => e.press === press && e.budget !== null).sort((a, b) => a.budget! - b.budget!).map((e) => [e.budget!, e.score] as [number, number]),
    })).filter((s) => s.points.length > 0);
    if (series.length === 0) continue;
    const svg = lineChart(series, {
      title: `${model}: ${task}${len ? ` @ ${len} tokens` : ''} (${protocol}${gen ? ', generated items' : ''})`, xLabel: 'KV budget per head (tokens, window included)',
      yLabel: list[0] && (list[0] as unknown as { metric?: string }).metric?.startsWith('loglik') ? 'mean log-prob' : 'score', xScale: 'log2',
      refLines: full ? [{ name: 'full', y: full.score }] : [],
    });
    fs.writeFileSync(path.join(figDir, `${[model, task, len, protocol, gen].filter(Boolean).join('__').replace(/[^A-Za-z0-9._-]+/g, '-')}.svg`), standaloneSvg(svg));
  }
  const mdir = path.join(o.out, 'masking');
  if (fs.existsSync(mdir)) {
    for (const f of fs.readdirSync(mdir).filter((x) => x.endsWith('.json'))) {
      const m = JSON.parse(fs.readFileSync(path.join(mdir, f), 'utf8')) as { model: string; metric: string; full: number; none: number; rows: { k: number; top: number; bottom: number; random: number }[] };
      const svg = lineChart([
        { name: 'keep top-k heads (highest CoKV value)', color: 0, points: m.rows.map((r) => [r.k, r.top]) },
        { name: 'keep bottom-k heads', color: 1, points: m.rows.map((r) => [r.k, r.bottom]) },
        { name: 'keep k random heads', color: 2, points: m.rows.map((r) => [r.k, r.random]) },
      ], { title: `${m.model}: head masking (others keep only the window)`, xLabel: 'heads with the full cache (k)', yLabel: m.metric, xScale: 'linear',
        refLines: [{ name: 'all full', y: m.full }, { name: 'none full', y: m.none, dash: 2 }] });
      fs.writeFileSync(path.join(figDir, `masking__${m.model}.svg`), standaloneSvg(svg));
    }
  }
}

const STEPS: Record<ExperimentName, (o: ExperimentOptions) => Promise<void>> = { profiles, budget, generated, baselines, masking, estimator, sensitivity, quant, memory, summary };
const NEEDS: Partial<Record<ExperimentName, ExperimentName[]>> = {
  budget: ['profiles'], generated: ['profiles'], baselines: ['profiles', 'generated'], masking: ['profiles'], estimator: ['profiles'], sensitivity: ['profiles'], quant: ['profiles'],
};

export async function runExperiment(name: ExperimentName | 'all', o: ExperimentOptions): Promise<void> {
  if (!fs.existsSync(o.assets)) throw new CokvError(`--assets ${o.assets}: folder not found (the shared assets are needed)`, 'file');
  fs.mkdirSync(o.out, { recursive: true });
  const names: ExperimentName[] = name === 'all' ? [...EXPERIMENTS] : [...(NEEDS[name] ?? []), name];
  for (const [i, n] of names.entries()) {
    const t0 = performance.now();
    o.log(`== step ${i + 1}/${names.length}: ${n}${o.quick ? ' (quick)' : ''}`);
    await STEPS[n](o);
    o.log(`== ${n} done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
}
