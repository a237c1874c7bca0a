/**
 * The experiments' sub-steps, each a library call (runEval, runProfile, computeHeadScores, generateRetrievalFile,
 * runBench) with the options the equivalent `cokv …` command would run with. Before each, the equivalent command
 * line is logged for the reader (`$ cokv eval …`); a quiet experiment holds a step's output back and shows it, with
 * that line, only when the step fails. A failing step stops the experiment: its error on one `cokv: …` line, then
 * `experiment step failed (exit 1): cokv …`.
 */
import { loadModel } from '../engine.js';
import { CokvError, systemErrorLine } from '../errors.js';
import { runBench, benchRowLine, type BenchRow } from '../eval/bench-run.js';
import { computeHeadScores, headScoresSummary, type HeadScoresOptions } from '../eval/head-scores-run.js';
import { generateRetrievalFile, retrievalFileSummary, type RetrievalFileOptions } from '../eval/retrieval-gen-run.js';
import { runEval, type Protocol, type RunMetrics } from '../eval/runner.js';
import { profileRunPrinter, runProfile, type ProfileRunOptions, type ProfileRunResult } from '../game/profile-run.js';
import type { KvDType } from '../cache/ragged.js';
import type { PressOptions } from '../press/options.js';
import { pressesReading } from '../press/registry.js';
import { ProgressBar } from '../util/progress.js';
import type { ExperimentOptions } from './plan.js';

/** What a sub-step needs of the experiment's options. */
type StepContext = Pick<ExperimentOptions, 'quiet' | 'log'>;

/**
 * Run `fn` with what it writes to stdout and stderr held back (in order); it is written out after `before()` only
 * when `fn` throws — so a quiet experiment prints a step's output only when it fails.
 */
async function heldBack<T>(fn: () => Promise<T>, before: () => void): Promise<T> {
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
  let failed = true;
  try {
    const result = await fn();
    failed = false;
    return result;
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    if (failed) {
      before();
      for (const [stream, chunk] of held) stream.write(chunk);
    }
  }
}

/** A shell word as typed: plain when it needs no quotes, else single-quoted. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Run one sub-step: log its command line (`args`, as `cokv` would be called), run `work`; see the module comment.
 * A CokvError (or a system error: disk full, permission) is reported as the command would report it and stops
 * the experiment with a CokvError; any other error is passed on as it is (an internal error).
 */
async function step<T>(args: string[], o: StepContext, work: () => Promise<T>): Promise<T> {
  const line = `$ cokv ${args.map(shellWord).join(' ')}`;
  if (!o.quiet) o.log(line);
  try {
    return o.quiet ? await heldBack(work, () => o.log(line)) : await work();
  } catch (err) {
    const sys = systemErrorLine(err);
    if (!(err instanceof CokvError) && !sys) throw err;
    process.stderr.write(`cokv: ${sys ?? (err as Error).message}\n`);
    throw new CokvError(`experiment step failed (exit 1): cokv ${args.map(shellWord).join(' ')}`, 'internal');
  }
}

/** `--flag value` when the value is set (lists comma-joined), nothing otherwise. */
function flag(name: string, v: string | number | readonly (string | number)[] | undefined): string[] {
  if (v === undefined) return [];
  return [name, Array.isArray(v) ? v.join(',') : String(v)];
}

/** The press tuning options an experiment sets; the rest keep `cokv eval`'s defaults (see tuningOptions). */
export interface PressTuning {
  profile?: string;
  headScores?: string;
  alpha?: number;
  window?: number;
  /** false: the reference code's integer rules (`--no-redistribute`). */
  redistribute?: boolean;
}

/** The one default the presses reading `key` share (what `cokv eval --help` shows as the flag's default). */
function sharedDefault<K extends 'window' | 'pool' | 'kernel' | 'sink'>(key: K): PressOptions[K] {
  const values = [...new Set(pressesReading(key).map((d) => d.options[key]).filter((v) => v !== null && v !== undefined && typeof v !== 'function'))];
  if (values.length !== 1) throw new Error(`experiments: the presses reading ${key} have ${values.length} defaults; the experiments need one`);
  return values[0] as PressOptions[K];
}

/**
 * The press options `cokv eval` and `cokv bench` run with when only `t`'s flags are given: every flag's default
 * (window, pool, kernel and sink as the presses reading them default them; re-sharing on), then `t`. The run
 * folders record these options, so they must equal the command's for finished runs to be reused.
 */
export function tuningOptions(t: PressTuning = {}): Omit<PressOptions, 'budget' | 'ratio'> {
  return {
    window: t.window ?? sharedDefault('window'), pool: sharedDefault('pool'), kernel: sharedDefault('kernel'),
    alpha: t.alpha, profile: t.profile, headScores: t.headScores, sink: sharedDefault('sink'), redistribute: t.redistribute ?? true,
  };
}

/** One `cokv eval` of an experiment: the flags it sets, typed. */
export interface EvalStep extends PressTuning {
  model: string;
  data: string;
  dataset: string;
  subset?: string[];
  lengths?: number[];
  /** Default test. */
  split?: 'test' | 'validation' | 'all';
  /** Default 0. */
  splitSeed?: number;
  limit?: number;
  presses: string[];
  budgets: number[];
  ratios?: number[];
  /** Default question-aware. */
  protocol?: Protocol;
  /** Default the dataset's metric. */
  metric?: 'default' | 'loglik';
  /**
   * Default f32: docs/results.md was measured with an F32 KV cache (the default then), so the eval steps keep F32
   * unless a step asks for another storage; finished run folders stay reusable and the numbers reproducible.
   */
  kvDtype?: KvDType;
  out: string;
}

function evalArgs(e: EvalStep): string[] {
  return ['eval', ...flag('--model', e.model), ...flag('--data', e.data), ...flag('--dataset', e.dataset), ...flag('--subset', e.subset),
    ...flag('--lengths', e.lengths), ...flag('--split', e.split), ...flag('--split-seed', e.splitSeed), ...flag('--limit', e.limit),
    ...flag('--presses', e.presses), ...flag('--budgets', e.budgets), ...flag('--ratios', e.ratios?.length ? e.ratios : undefined),
    ...flag('--protocol', e.protocol), ...flag('--metric', e.metric), ...flag('--alpha', e.alpha), ...flag('--window', e.window),
    ...flag('--profile', e.profile), ...flag('--head-scores', e.headScores), ...(e.redistribute === false ? ['--no-redistribute'] : []),
    ...flag('--out', e.out),
    // The pipeline owns its output folders: a run folder from an older cokv (no settings record) or from other
    // settings is recomputed; a finished folder with the same settings is still reused.
    '--overwrite', ...flag('--kv-dtype', e.kvDtype ?? 'f32')];
}

/** Score presses × budgets as `cokv eval` does (runEval); one folder per run under `e.out`. */
export async function evalStep(e: EvalStep, o: StepContext): Promise<RunMetrics[]> {
  return step(evalArgs(e), o, async () => {
    const model = await loadModel(e.model);
    const bar = new ProgressBar('eval', o.quiet ?? false);
    const results = await runEval(model, e.model, {
      dataset: e.dataset, data: e.data, presses: e.presses, budgets: e.budgets, ratios: e.ratios?.length ? e.ratios : undefined,
      pressOptions: tuningOptions(e), limit: e.limit, split: e.split ?? 'test', splitSeed: e.splitSeed ?? 0, subset: e.subset, lengths: e.lengths,
      protocol: e.protocol ?? 'question-aware', chat: false, metric: e.metric ?? 'default', loglikTokens: 16, kvDtype: e.kvDtype ?? 'f32',
      prefillEvict: false, jsonl: { onBadLine: 'error' }, out: e.out, overwrite: true,
      onProgress: (name, done, total) => bar.update(done, total, name),
    });
    bar.finish();
    return results;
  });
}

/** One `cokv profile` of an experiment (the library's options; no callbacks). */
export type ProfileStep = Omit<ProfileRunOptions, 'onRange' | 'onEnumerate' | 'onProgress'>;

function profileArgs(p: ProfileStep): string[] {
  return ['profile', ...flag('--model', p.model), ...flag('--data', p.data), ...flag('--task', p.task), ...flag('--subset', p.subset),
    ...flag('--lengths', p.lengths), ...flag('--sizes', p.sizes), ...flag('--utility', p.utility),
    ...(p.estimator === 'exact' ? ['--exact'] : flag('--estimator', p.estimator)), ...flag('--max-new', p.maxNew), ...flag('--split', p.split),
    ...flag('--runs', p.runs), ...flag('--seed', p.seed), ...flag('--samples', p.samples), ...flag('--limit', p.limit), ...flag('--out', p.out),
    ...(p.resume ? ['--resume'] : [])];
}

/** Estimate head values as `cokv profile` does (runProfile), printing what it prints. */
export async function profileStep(p: ProfileStep, o: StepContext): Promise<ProfileRunResult> {
  return step(profileArgs(p), o, async () => {
    const printer = profileRunPrinter(o.quiet ?? false);
    const r = await runProfile({ ...p, ...printer.hooks });
    printer.done(r);
    return r;
  });
}

/** Compute HeadKV head scores as `cokv head-scores` does (computeHeadScores). */
export async function headScoresStep(h: HeadScoresOptions, o: StepContext): Promise<void> {
  const args = ['head-scores', ...flag('--method', h.method), ...flag('--model', h.model), ...flag('--haystack', h.haystack), ...flag('--length', h.lengths),
    ...flag('--samples', h.samples), ...flag('--needles-per-kind', h.needlesPerKind), ...flag('--needle', h.needleTokens), ...flag('--seed', h.seed), ...flag('--out', h.out)];
  await step(args, o, async () => {
    process.stderr.write(headScoresSummary(await computeHeadScores(h)) + '\n');
  });
}

/** Generate retrieval items as `cokv gen-retrieval` does (generateRetrievalFile). */
export async function genRetrievalStep(g: RetrievalFileOptions, o: StepContext): Promise<void> {
  const args = ['gen-retrieval', ...flag('--model', g.model), ...flag('--tasks', g.tasks), ...flag('--lengths', g.lengths), ...flag('--count', g.count),
    ...flag('--seed', g.seed), ...flag('--data-dir', g.dataDir), ...flag('--out', g.out)];
  await step(args, o, async () => {
    process.stdout.write(retrievalFileSummary(g, await generateRetrievalFile(g)) + '\n');
  });
}

/** One `cokv bench` of an experiment (default press options). */
export interface BenchStep {
  model: string;
  lengths: number[];
  presses: string[];
  budgets: number[];
  decode: number;
  /** Writes `<out>/bench/<model>.json`. */
  out: string;
}

/** Measure memory and latency as `cokv bench` does (runBench: one child process per configuration). */
export async function benchStep(b: BenchStep, o: StepContext): Promise<BenchRow[]> {
  const args = ['bench', ...flag('--model', b.model), ...flag('--lengths', b.lengths), ...flag('--presses', b.presses), ...flag('--budgets', b.budgets),
    ...flag('--decode', b.decode), ...flag('--out', b.out)];
  return step(args, o, async () => {
    const model = await loadModel(b.model);
    return runBench(model, b.model, {
      lengths: b.lengths, presses: b.presses, budgets: b.budgets, decode: b.decode, out: b.out, pressOptions: tuningOptions(),
      onNote: (m) => process.stderr.write(`cokv: note: ${m}\n`),
      onRow: (r) => process.stderr.write(benchRowLine(r) + '\n'),
    });
  });
}
