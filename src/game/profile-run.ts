/**
 * One profile run (what `cokv profile run` does, as a library function): select the items, build the game's
 * samples, take the output's lock, then estimate the head values — Sliced Shapley (checkpointed, resumable,
 * shardable, stopped at a tolerance), exact enumeration, or leave-one-out — and write the profile file.
 * Errors name the command-line flag they are about (`--out …`, `--data: …`, `--sizes: …`), as the CLI prints them.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadModel } from '../engine.js';
import { CokvError } from '../errors.js';
import { datasetInfo } from '../eval/datasets.js';
import { readTextFile } from '../eval/jsonl.js';
import { dataFile, selectItems } from '../eval/runner.js';
import { modelFingerprint } from '../model/fingerprint.js';
import { checkOutputFile, lockOutput, writeFileAtomic, type FileLock } from '../util/files.js';
import { ProgressBar } from '../util/progress.js';
import { enumerateGame, leaveOneOut, valuesGrid } from './enumerate.js';
import { ModelGame, type UtilityKind } from './model-game.js';
import { Players } from './players.js';
import { runProfiler, type ProgressInfo } from './profiler.js';
import type { ProfileFile, ProfileSettings } from './profile-file.js';
import { buildSamples, metricGameOptions } from './samples.js';
import { defaultSizes, valueSizes } from './sliced-shapley.js';

/** How the head values are estimated. */
export type ProfileEstimator = 'sliced' | 'loo' | 'exact';

export interface ProfileRunOptions {
  /** Model file or folder. */
  model: string;
  /** Dataset jsonl, or a folder with `<task>.jsonl`. */
  data: string;
  /** Dataset (prompt format and metric): retrieval, stories, a LongBench task, … */
  task: string;
  utility: UtilityKind;
  /** sliced (Sliced Shapley, the paper; default), loo (leave-one-out) or exact (all 2^n coalitions, n ≤ 16). */
  estimator?: ProfileEstimator;
  /** Most samples (coalition pairs) per run (default 256). */
  samples?: number;
  /** Coalition sizes H (default n/8, n/4, 3n/8, n/2); sorted and deduplicated here. */
  sizes?: number[];
  /** Tokens a masked head keeps (default 8). */
  window?: number;
  /** Independent estimates run side by side (default 2). */
  runs?: number;
  /** Run r draws sample k from a generator seeded by (seed, r, k) (default 1). */
  seed?: number;
  /** Profile JSON, checkpointed atomically. */
  out: string;
  /** Continue the profile in `out`. */
  resume?: boolean;
  /** Run only sample indices ≡ index (mod count); sliced only. */
  shard?: { index: number; count: number };
  /** Stop when the runs' MAE is below this (default |U(N) − U(∅)|/n). */
  tolerance?: number;
  /** Answer tokens scored (loglik, kl; default 16) or generated (metric; default the dataset's). */
  maxNew?: number;
  /** Coalitions per batched decode (default 16). */
  batch?: number;
  split?: 'test' | 'validation' | 'all';
  /** Seed of the validation/test split (default 0, as cokv eval's). */
  splitSeed?: number;
  limit?: number;
  subset?: string[];
  lengths?: number[];
  /** LongBench middle truncation (default 8000, clipped to the context). */
  maxLength?: number;
  checkpointEvery?: number;
  /** Count only the S side of each sample (the reference code). */
  sSideOnly?: boolean;
  sizeOrder?: 'round-robin' | 'random';
  /** LongBench: wrap prompts in the chat template. */
  chat?: boolean;
  /** Sliced: called once U(N), U(∅) and the tolerance are known, before sampling. */
  onRange?: (r: { uFull: number; uEmpty: number; tolerance: number }) => void;
  /** Exact: coalitions done of total. */
  onEnumerate?: (done: number, total: number) => void;
  /** Sliced: after each batch of samples. */
  onProgress?: (p: ProgressInfo) => void;
}

/** What a profile run wrote. */
export type ProfileRunResult =
  | { estimator: 'exact'; out: string; players: number; coalitions: number }
  | { estimator: 'loo'; out: string; players: number; samples: number }
  | { estimator: 'sliced'; out: string; players: number; sizes: number[]; sSideOnly: boolean; tolerance: number; profile: ProfileFile };

/**
 * Check `out` before any work and take its lock: the folder must exist, the path must be a regular file or absent
 * (never a device, folder or link: the atomic rename would replace it), and exist only when `mayExist`.
 */
export function prepareProfileOutput(out: string, o: { mayExist: boolean; existsHint?: string }): FileLock {
  const st = checkOutputFile(out);
  const lock = lockOutput(out, '--out');
  removeStaleTemps(out);
  if (st && !o.mayExist) {
    lock.release();
    throw new CokvError(`--out ${out}: file exists${o.existsHint ?? ''}`, 'file');
  }
  return lock;
}

/** Temp files of `out` left by writers that were killed mid-write (kill -9, power loss); ours holds the lock. */
function removeStaleTemps(out: string): void {
  const dir = path.dirname(path.resolve(out)), base = path.basename(out);
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(`.${base}.tmp-`)) continue;
    const pid = Number(name.slice(base.length + 6));
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** Estimate the head values of `o.model` on `o.task` and write them to `o.out`; see the module comment. */
export async function runProfile(o: ProfileRunOptions): Promise<ProfileRunResult> {
  const estimator = o.estimator ?? 'sliced';
  const { utility, task } = o;
  const window = o.window ?? 8, runs = o.runs ?? 2, seed = o.seed ?? 1, batch = o.batch ?? 16;
  const maxNew = o.maxNew ?? (utility === 'metric' ? datasetInfo(task).maxNewTokens : 16);
  if (o.shard && estimator !== 'sliced') throw new CokvError(`--shard: not with ${estimator === 'exact' ? '--exact' : '--estimator loo'} (it evaluates its coalitions in one process)`, 'flag');
  const items = selectItems({
    dataset: task, data: o.data, presses: [], budgets: [], pressOptions: {}, protocol: 'question-aware', out: '',
    split: o.split ?? 'validation', splitSeed: o.splitSeed ?? 0, subset: o.subset, limit: o.limit, lengths: o.lengths,
  });
  const hash = createHash('sha256').update(readTextFile(dataFile(o.data, task))).digest('hex').slice(0, 16);
  // Before the model load and U(N)/U(∅): a bad --out (device node, unwritable folder, taken by another cokv
  // process, or an existing profile without --resume) is refused at once, and the lock keeps a second
  // writer from interleaving checkpoints with ours.
  const exact = estimator === 'exact';
  const lock = prepareProfileOutput(o.out, { mayExist: (o.resume ?? false) && !exact, existsHint: exact ? '' : ' (use --resume to continue it, or another --out)' });
  const model = await loadModel(o.model);
  const c = model.config;
  const players = Players.require(c);
  const n = players.n;
  const sizes = o.sizes ? [...new Set(o.sizes)].sort((a, b) => a - b) : defaultSizes(n);
  for (const j of sizes) if (j < 1 || j > n - 1) throw new CokvError(`--sizes: ${j} is outside [1, ${n - 1}] for ${n} players`, 'flag');
  const samples = await buildSamples(task, items, model, { maxLength: o.maxLength ?? 8000, chat: o.chat });
  for (const s of samples) {
    if (s.promptIds.length >= c.contextLength) throw new CokvError(`--data: sample ${s.id} has ${s.promptIds.length} tokens, over the model's context ${c.contextLength}`, 'format');
    if (s.promptIds.length <= window) throw new CokvError(`--data: sample ${s.id} has ${s.promptIds.length} tokens, not more than the window ${window}`, 'format');
  }
  const game = new ModelGame(model, samples, { utility, window, maxNew, batchSize: batch, ...metricGameOptions(task) });
  const P = players.layers.length, G = c.numKvHeads;
  if (exact) {
    if (n > 16) throw new CokvError(`--exact: ${n} players means 2^${n} coalitions; exact enumeration is limited to 16 players`, 'flag');
    const r = enumerateGame(game, { sizes, sSideOnly: o.sSideOnly ?? false, onProgress: o.onEnumerate });
    const out = {
      schema: 'cokv-exact/1', model: modelFingerprint(c), modelPath: o.model, shape: [P, G], layers: [...players.layers], utility, task, sizes,
      shapley: valuesGrid(players, r.shapley), values: valuesGrid(players, r.sliced), cost: game.cost,
    };
    writeFileAtomic(o.out, JSON.stringify(out) + '\n', { what: '--out', overwrite: false });
    lock.release();
    return { estimator, out: o.out, players: n, coalitions: r.utilities.length };
  }
  if (estimator === 'loo') {
    const r = leaveOneOut(game);
    const out = {
      schema: 'cokv-loo/1', model: modelFingerprint(c), modelPath: o.model, shape: [P, G], layers: [...players.layers], utility, task,
      sampleIds: samples.map((s) => s.id), full: r.full, values: valuesGrid(players, r.values), cost: game.cost,
    };
    writeFileAtomic(o.out, JSON.stringify(out) + '\n', { what: '--out', overwrite: false });
    lock.release();
    return { estimator, out: o.out, players: n, samples: samples.length };
  }

  const settings: ProfileSettings = {
    model: modelFingerprint(c), shape: [players.layers.length, c.numKvHeads], layers: [...players.layers], window, sizes,
    sizeOrder: o.sizeOrder ?? 'round-robin', sSideOnly: o.sSideOnly ?? false, utility, task, maxNew,
    dataFile: o.data, dataHash: hash, sampleIds: samples.map((s) => s.id), seed, runs,
  };
  // The paper's criterion is MAE < 1/n for a utility on a 0–1 scale; scale it by the game's range U(N) − U(∅)
  // so it means the same for log-likelihoods and KL.
  const [uFull, uEmpty] = game.evaluate([new Uint8Array(n).fill(1), new Uint8Array(n)]);
  const range = Math.abs(uFull - uEmpty) || 1;
  const tolerance = o.tolerance ?? range / n;
  o.onRange?.({ uFull, uEmpty, tolerance });
  const profile = await runProfiler(game, {
    settings, modelPath: o.model, maxSamples: o.samples ?? 256, out: o.out, resume: o.resume, shard: o.shard,
    tolerance, checkpointEvery: o.checkpointEvery, onProgress: o.onProgress,
  });
  lock.release();
  return { estimator, out: o.out, players: n, sizes, sSideOnly: settings.sSideOnly, tolerance, profile };
}

/** The line `cokv profile run` prints when a run is done (the sliced one only when not quiet). */
export function profileRunSummary(r: ProfileRunResult): string {
  if (r.estimator === 'exact') return `exact values of ${r.players} players from ${r.coalitions} coalitions → ${r.out}`;
  if (r.estimator === 'loo') return `leave-one-out values of ${r.players} players on ${r.samples} samples (${r.players + 1} coalitions each) → ${r.out}`;
  const { profile, tolerance } = r;
  const perSize = valueSizes(r.players, r.sizes, r.sSideOnly).map((j, k) => `${j}:${Math.min(...profile.runStates[0].counts[k])}`).join(' ');
  return `${profile.samples} samples per run (min count per size ${perSize}) | ${profile.converged ? 'converged' : 'not converged'}` +
    `${profile.maeHistory.length ? ` (MAE ${profile.maeHistory[profile.maeHistory.length - 1].mae.toPrecision(3)}, tolerance ${tolerance.toPrecision(3)})` : ''}` +
    ` | ${profile.cost.prefills} prefills, ${profile.cost.decodeRows} decode rows, ${profile.cost.seconds.toFixed(1)} s → ${r.out}`;
}

/** The line `cokv profile run` prints before sampling (when not quiet). */
export function profileRangeLine(r: { uFull: number; uEmpty: number; tolerance: number }): string {
  return `U(all heads full) = ${r.uFull.toPrecision(4)}, U(all window-only) = ${r.uEmpty.toPrecision(4)}; tolerance ${r.tolerance.toPrecision(3)}`;
}

/**
 * What `cokv profile run` prints on stderr while a run goes (the range line, progress bars with ETA, started where
 * the work they time starts: after the model load, after U(N) and U(∅)) and when it ends (the summary line): the
 * run's hooks, and `done` to call with its result. The command and the experiments' profile step both use it.
 */
export function profileRunPrinter(quiet: boolean): {
  hooks: Pick<ProfileRunOptions, 'onEnumerate' | 'onRange' | 'onProgress'>;
  done: (r: ProfileRunResult) => void;
} {
  let exactBar: ProgressBar | undefined, bar: ProgressBar | undefined;
  return {
    hooks: {
      onEnumerate: (d, t) => (exactBar ??= new ProgressBar('exact', quiet)).update(d, t),
      onRange: (range) => {
        if (!quiet) process.stderr.write(profileRangeLine(range) + '\n');
        bar = new ProgressBar('profile', quiet);
      },
      onProgress: (p) => bar?.update(p.samples, p.maxSamples,
        `${p.samplesPerSecond.toFixed(2)} samples/s${p.mae !== undefined ? ` | MAE ${p.mae.toPrecision(3)}` : ''}`, p.etaSeconds),
    },
    done: (r) => {
      exactBar?.finish();
      bar?.finish();
      if (r.estimator !== 'sliced' || !quiet) process.stderr.write(profileRunSummary(r) + '\n');
    },
  };
}
