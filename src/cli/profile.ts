/**
 * `cokv profile …`: estimate CoKV head values (Sliced Shapley) on validation data; `profile merge`, `profile show`
 * and `profile compare` work on the resulting files.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError, systemErrorLine } from '../errors.js';
import { lockOutput, writeFileAtomic, type FileLock } from '../util/files.js';
import { loadModel } from '../engine.js';
import { modelFingerprint } from '../model/fingerprint.js';
import { ModelGame, type UtilityKind } from '../game/model-game.js';
import { buildSamples, metricGameOptions } from '../game/samples.js';
import { enumerateGame, leaveOneOut, valuesGrid } from '../game/enumerate.js';
import { registerProfileExport } from './profile-export.js';
import { datasetInfo } from '../eval/datasets.js';
import { dataFile, selectItems } from '../eval/runner.js';
import { readTextFile } from '../eval/jsonl.js';
import { createHash } from 'node:crypto';
import { defaultSizes, valueSizes } from '../game/sliced-shapley.js';
import { mergeProfiles, runProfiler } from '../game/profiler.js';
import { profileLayers, readProfile, writeProfileAtomic, type ProfileSettings } from '../game/profile-file.js';
import { compareValues, topK } from '../game/compare.js';
import { Players, playerName } from '../game/players.js';
import { numberFlag } from './util.js';
import { ProgressBar } from './progress.js';
import { parseShard, SHARDS_HELP } from './shard.js';

interface ProfileFlags {
  model: string;
  data: string;
  task: string;
  utility: string;
  samples: string;
  sizes?: string;
  window: string;
  runs: string;
  seed: string;
  out: string;
  resume?: boolean;
  shard?: string;
  shards?: string;
  tolerance?: string;
  maxNew?: string;
  batch: string;
  limit?: string;
  subset?: string;
  lengths?: string;
  split: string;
  splitSeed: string;
  maxLength?: string;
  checkpointEvery?: string;
  sSideOnly?: boolean;
  sizeOrder: string;
  exact?: boolean;
  estimator: string;
  chat?: boolean;
  quiet?: boolean;
}

type Run = (fn: () => Promise<void>) => Promise<void>;

export function registerProfile(program: Command, run: Run): void {
  const profile = program.command('profile').description('estimate, merge, show, compare and export CoKV head-value profiles');
  registerProfileExport(profile, run);
  profile
    .command('run', { isDefault: true })
    .description('estimate Sliced Shapley values of every KV head of the full-attention layers on validation data')
    .requiredOption('--model <path>', 'model file or folder')
    .requiredOption('--data <path>', 'dataset jsonl, or a folder with <task>.jsonl')
    .option('--task <name>', 'dataset (prompt format and metric): retrieval, stories, a LongBench task, …', 'retrieval')
    .option('--utility <kind>', 'metric (the paper: greedy answer scored by the task metric; exact-match tasks verify the reference in one batched pass), loglik (teacher-forced answer log-prob) or kl', 'metric')
    .option('--samples <n>', 'most samples (coalition pairs) per run', '256')
    .option('--sizes <list>', 'coalition sizes H (default n/8, n/4, 3n/8, n/2)')
    .option('--window <w>', 'tokens a masked head keeps', '8')
    .option('--runs <r>', 'independent estimates run side by side (convergence = their MAE)', '2')
    .option('--seed <s>', 'seed; run r draws sample k from a generator seeded by (seed, r, k)', '1')
    .requiredOption('--out <file>', 'profile JSON (checkpointed atomically)')
    .option('--resume', 'continue the profile in --out')
    .option('--shard <i/k|auto>', 'run only sample indices ≡ i (mod k), or auto (Slurm array task / Kubernetes Indexed Job); merge shards with `cokv profile merge`')
    .option('--shards <n>', SHARDS_HELP)
    .option('--tolerance <t>', 'stop when the runs\' MAE is below this (default |U(N) − U(∅)|/n, the paper\'s 1/n on a 0–1 scale)')
    .option('--max-new <n>', 'answer tokens scored (loglik, kl; default 16) or generated (metric; default the dataset\'s, as cokv eval)')
    .option('--batch <b>', 'coalitions per batched decode', '16')
    .option('--split <part>', 'validation (15%, the default: profile on validation, report on test), test or all', 'validation')
    .option('--split-seed <s>', 'seed of the validation/test split (the same as cokv eval\'s)', '0')
    .option('--limit <n>', 'use only the first n items (after the split)')
    .option('--subset <list>', 'keep items whose sub-task is listed (retrieval: passkey,multikey,kv)')
    .option('--lengths <list>', 'keep items whose nominal length is listed (retrieval: 512,1024,2048)')
    .option('--max-length <n>', 'LongBench middle truncation (default 8000, clipped to the context)')
    .option('--checkpoint-every <k>', 'samples per run between checkpoints')
    .option('--s-side-only', 'count only the S side of each sample (the reference code)')
    .option('--size-order <o>', 'round-robin or random', 'round-robin')
    .option('--exact', 'enumerate all 2^n coalitions instead (n ≤ 16): exact Shapley and sliced values')
    .option('--estimator <kind>', 'sliced (Sliced Shapley, the paper) or loo (leave-one-out: U(N) − U(N∖{i}), single-head ablation)', 'sliced')
    .option('--chat', 'LongBench: wrap prompts in the chat template, as cokv eval --chat')
    .option('--quiet', 'no progress output')
    .action((f: ProfileFlags) => run(() => profileRun(f)));

  profile
    .command('merge')
    .description('merge shard profiles (same settings, disjoint samples) into one')
    .argument('<files...>', 'profile files')
    .requiredOption('--out <file>', 'merged profile')
    .action((files: string[], f: { out: string }) => run(async () => {
      const lock = prepareOutput(f.out, { mayExist: true });
      const merged = mergeProfiles(files);
      writeProfileAtomic(f.out, merged);
      lock.release();
      process.stderr.write(`merged ${files.length} profiles: ${merged.samples} samples per run → ${f.out}\n`);
    }));

  profile
    .command('show')
    .description('layer × KV-head heatmap of a profile, with the top and bottom heads')
    .argument('<file>', 'profile file')
    .option('--json', 'print the values as JSON')
    .action((file: string, f: { json?: boolean }) => run(async () => showProfile(file, f.json ?? false)));

  profile
    .command('compare')
    .description('MAE, Spearman and top-k overlap between two profiles')
    .argument('<a>', 'profile file')
    .argument('<b>', 'profile file')
    .option('--json', 'machine-readable output')
    .action((a: string, b: string, f: { json?: boolean }) => run(async () => {
      const pa = readProfile(a, 'profile compare'), pb = readProfile(b, 'profile compare');
      if (JSON.stringify(pa.shape) !== JSON.stringify(pb.shape)) throw new CokvError(`profile compare: shapes differ (${pa.shape} vs ${pb.shape})`, 'format');
      if (JSON.stringify(profileLayers(pa)) !== JSON.stringify(profileLayers(pb))) {
        throw new CokvError(`profile compare: player layers differ (${profileLayers(pa).join(',')} vs ${profileLayers(pb).join(',')})`, 'format');
      }
      const r = compareValues(pa.values.flat(), pb.values.flat());
      if (f.json) { process.stdout.write(JSON.stringify(r) + '\n'); return; }
      process.stdout.write(`MAE ${r.mae.toPrecision(4)} | Spearman ${r.spearman.toFixed(3)} | ${r.topK.map((t) => `top-${t.k} overlap ${(100 * t.overlap).toFixed(0)}%`).join(' | ')}\n`);
    }));
}

/**
 * Check --out before any work and take its lock: the folder must exist, the path must be a regular file or
 * absent (never a device, folder or link: the atomic rename would replace it), and exist only when `mayExist`.
 */
function prepareOutput(out: string, o: { mayExist: boolean; existsHint?: string }): FileLock {
  const dir = path.dirname(path.resolve(out));
  if (!fs.existsSync(dir)) throw new CokvError(`--out ${out}: folder ${dir} does not exist`, 'file');
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CokvError(`--out ${systemErrorLine(e) ?? `${out}: ${(e as Error).message}`}`, 'file');
  }
  if (st && !st.isFile()) {
    const what = st.isDirectory() ? 'a folder' : st.isSymbolicLink() ? 'a symbolic link' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : st.isFIFO() ? 'a pipe' : 'not a regular file';
    throw new CokvError(`--out ${out}: is ${what}; cokv writes only regular files (choose another path)`, 'file');
  }
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

function parseList(flag: string, s: string): number[] {
  return s.split(',').map((x) => numberFlag(flag, x.trim(), { integer: true })!);
}

async function profileRun(f: ProfileFlags): Promise<void> {
  datasetInfo(f.task);
  if (!['metric', 'loglik', 'kl'].includes(f.utility)) throw new CokvError(`--utility: '${f.utility}' must be metric, loglik or kl`, 'flag');
  if (!['round-robin', 'random'].includes(f.sizeOrder)) throw new CokvError(`--size-order: '${f.sizeOrder}' must be round-robin or random`, 'flag');
  if (!['test', 'validation', 'all'].includes(f.split)) throw new CokvError(`--split: '${f.split}' must be validation, test or all`, 'flag');
  const utility = f.utility as UtilityKind;
  const task = f.task;
  const samplesMax = numberFlag('--samples', f.samples, { integer: true, min: 1 })!;
  const window = numberFlag('--window', f.window, { integer: true, min: 1 })!;
  const runs = numberFlag('--runs', f.runs, { integer: true, min: 1, max: 8 })!;
  const seed = numberFlag('--seed', f.seed, { integer: true, min: 0 })!;
  const batch = numberFlag('--batch', f.batch, { integer: true, min: 1 })!;
  if (!['sliced', 'loo'].includes(f.estimator)) throw new CokvError(`--estimator: '${f.estimator}' must be sliced or loo`, 'flag');
  if (f.estimator === 'loo' && f.exact) throw new CokvError('--estimator loo: not with --exact (both enumerate their coalitions; pick one)', 'flag');
  const maxNew = numberFlag('--max-new', f.maxNew, { integer: true, min: 1 }) ?? (utility === 'metric' ? datasetInfo(task).maxNewTokens : 16);
  const limit = numberFlag('--limit', f.limit, { integer: true, min: 1 });
  const shard = parseShard(f.shard, f.shards);
  if (shard && (f.exact || f.estimator === 'loo')) throw new CokvError(`--shard: not with ${f.exact ? '--exact' : '--estimator loo'} (it evaluates its coalitions in one process)`, 'flag');

  const items = selectItems({
    dataset: task, data: f.data, presses: [], budgets: [], pressOptions: {}, protocol: 'question-aware', out: '',
    split: f.split as 'test' | 'validation' | 'all', splitSeed: numberFlag('--split-seed', f.splitSeed, { integer: true })!,
    subset: f.subset?.split(',').map((x) => x.trim()), limit,
    lengths: f.lengths?.split(',').map((x) => numberFlag('--lengths', x.trim(), { integer: true })!),
  });
  const hash = createHash('sha256').update(readTextFile(dataFile(f.data, task))).digest('hex').slice(0, 16);
  // Before the model load and U(N)/U(∅): a bad --out (device node, unwritable folder, taken by another cokv
  // process, or an existing profile without --resume) is refused at once, and the lock keeps a second
  // writer from interleaving checkpoints with ours.
  const lock = prepareOutput(f.out, { mayExist: (f.resume ?? false) && !f.exact, existsHint: f.exact ? '' : ' (use --resume to continue it, or another --out)' });
  const model = await loadModel(f.model);
  const c = model.config;
  const players = Players.require(c);
  const n = players.n;
  const sizes = f.sizes ? [...new Set(parseList('--sizes', f.sizes))].sort((a, b) => a - b) : defaultSizes(n);
  for (const j of sizes) if (j < 1 || j > n - 1) throw new CokvError(`--sizes: ${j} is outside [1, ${n - 1}] for ${n} players`, 'flag');
  const maxLength = numberFlag('--max-length', f.maxLength, { integer: true, min: 16 }) ?? 8000;
  const samples = await buildSamples(task, items, model, { maxLength, chat: f.chat });
  for (const s of samples) {
    if (s.promptIds.length >= c.contextLength) throw new CokvError(`--data: sample ${s.id} has ${s.promptIds.length} tokens, over the model's context ${c.contextLength}`, 'format');
    if (s.promptIds.length <= window) throw new CokvError(`--data: sample ${s.id} has ${s.promptIds.length} tokens, not more than the window ${window}`, 'format');
  }
  const game = new ModelGame(model, samples, {
    utility, window, maxNew, batchSize: batch, ...metricGameOptions(task),
  });
  const quiet = f.quiet ?? false;

  const P = players.layers.length, G = c.numKvHeads;
  if (f.exact) {
    if (n > 16) throw new CokvError(`--exact: ${n} players means 2^${n} coalitions; exact enumeration is limited to 16 players`, 'flag');
    const bar = new ProgressBar('exact', quiet);
    const r = enumerateGame(game, { sizes, sSideOnly: f.sSideOnly ?? false, onProgress: (d, t) => bar.update(d, t) });
    bar.finish();
    const out = {
      schema: 'cokv-exact/1', model: modelFingerprint(c), modelPath: f.model, shape: [P, G], layers: [...players.layers], utility, task, sizes,
      shapley: valuesGrid(players, r.shapley), values: valuesGrid(players, r.sliced), cost: game.cost,
    };
    writeFileAtomic(f.out, JSON.stringify(out) + '\n', { what: '--out', overwrite: false });
    lock.release();
    process.stderr.write(`exact values of ${n} players from ${r.utilities.length} coalitions → ${f.out}\n`);
    return;
  }
  if (f.estimator === 'loo') {
    const r = leaveOneOut(game);
    const out = {
      schema: 'cokv-loo/1', model: modelFingerprint(c), modelPath: f.model, shape: [P, G], layers: [...players.layers], utility, task,
      sampleIds: samples.map((s) => s.id), full: r.full, values: valuesGrid(players, r.values), cost: game.cost,
    };
    writeFileAtomic(f.out, JSON.stringify(out) + '\n', { what: '--out', overwrite: false });
    lock.release();
    process.stderr.write(`leave-one-out values of ${n} players on ${samples.length} samples (${n + 1} coalitions each) → ${f.out}\n`);
    return;
  }

  const settings: ProfileSettings = {
    model: modelFingerprint(c), shape: [players.layers.length, c.numKvHeads], layers: [...players.layers], window, sizes,
    sizeOrder: f.sizeOrder as 'round-robin' | 'random', sSideOnly: f.sSideOnly ?? false, utility, task, maxNew,
    dataFile: f.data, dataHash: hash, sampleIds: samples.map((s) => s.id), seed, runs,
  };
  // The paper's criterion is MAE < 1/n for a utility on a 0–1 scale; scale it by the game's range U(N) − U(∅)
  // so it means the same for log-likelihoods and KL.
  const [uFull, uEmpty] = game.evaluate([new Uint8Array(n).fill(1), new Uint8Array(n)]);
  const range = Math.abs(uFull - uEmpty) || 1;
  const tolerance = numberFlag('--tolerance', f.tolerance, { min: 0 }) ?? range / n;
  if (!quiet) process.stderr.write(`U(all heads full) = ${uFull.toPrecision(4)}, U(all window-only) = ${uEmpty.toPrecision(4)}; tolerance ${tolerance.toPrecision(3)}\n`);
  const bar = new ProgressBar('profile', quiet);
  const profile = await runProfiler(game, {
    settings, modelPath: f.model, maxSamples: samplesMax, out: f.out, resume: f.resume, shard,
    tolerance,
    checkpointEvery: numberFlag('--checkpoint-every', f.checkpointEvery, { integer: true, min: 1 }),
    onProgress: (p) => bar.update(p.samples, p.maxSamples,
      `${p.samplesPerSecond.toFixed(2)} samples/s${p.mae !== undefined ? ` | MAE ${p.mae.toPrecision(3)}` : ''}`, p.etaSeconds),
  });
  bar.finish();
  lock.release();
  if (!quiet) {
    const perSize = valueSizes(n, sizes, settings.sSideOnly).map((j, k) => `${j}:${Math.min(...profile.runStates[0].counts[k])}`).join(' ');
    process.stderr.write(
      `${profile.samples} samples per run (min count per size ${perSize}) | ${profile.converged ? 'converged' : 'not converged'}` +
      `${profile.maeHistory.length ? ` (MAE ${profile.maeHistory[profile.maeHistory.length - 1].mae.toPrecision(3)}, tolerance ${tolerance.toPrecision(3)})` : ''}` +
      ` | ${profile.cost.prefills} prefills, ${profile.cost.decodeRows} decode rows, ${profile.cost.seconds.toFixed(1)} s → ${f.out}\n`,
    );
  }
}

function showProfile(file: string, json: boolean): void {
  process.stdout.write(profileShowText(file, json));
}

/** What `profile show` prints (exported so tests can run it over many malformed files without a process each). */
export function profileShowText(file: string, json: boolean): string {
  const p = readProfile(file, 'profile show');
  const [L, G] = p.shape;
  const layers = profileLayers(p);
  const flat = p.values.flat();
  // The player layers are printed only when some layer is not a player (a model with sliding layers).
  const partial = layers.some((l, r) => l !== r);
  if (json) return JSON.stringify({ shape: p.shape, values: p.values, ...(partial ? { layers } : {}) }) + '\n';
  const lo = Math.min(...flat), hi = Math.max(...flat);
  const shades = [' ', '░', '▒', '▓', '█'];
  const cell = (v: number) => shades[Math.min(4, Math.floor(((v - lo) / (hi - lo || 1)) * 5))];
  const out: string[] = [];
  out.push(`${file}: ${p.utility} utility on ${p.task} (${p.samples} samples per run × ${p.runs} runs, ${p.converged ? 'converged' : 'not converged'})`);
  if (partial) out.push(`players: the KV heads of full-attention layers ${layers.join(', ')}`);
  out.push(`values from ${lo.toPrecision(3)} (blank) to ${hi.toPrecision(3)} (█)`);
  const num = (v: number) => (v === 0 || Math.abs(v) >= 1e-3 ? v.toFixed(4) : v.toExponential(1)).padStart(9);
  out.push('     ' + Array.from({ length: G }, (_, g) => `H${g}`.padStart(12)).join(''));
  for (let l = 0; l < L; l++) {
    out.push(`L${String(layers[l]).padEnd(4)}` + p.values[l].map((v) => ` ${cell(v).repeat(2)}${num(v)}`).join(''));
  }
  const k = Math.min(5, flat.length);
  const fmt = (i: number) => `${playerName(i, G, layers)} ${flat[i].toPrecision(3)}`;
  out.push(`top ${k}: ${topK(flat, k).map(fmt).join(', ')}`);
  out.push(`bottom ${k}: ${topK(flat.map((v) => -v), k).map(fmt).join(', ')}`);
  return out.join('\n') + '\n';
}
