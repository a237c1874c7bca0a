/**
 * `cokv profile …`: estimate CoKV head values (Sliced Shapley) on validation data; `profile merge`, `profile show`
 * and `profile compare` work on the resulting files.
 */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import type { UtilityKind } from '../game/model-game.js';
import { registerProfileExport } from './profile-export.js';
import { datasetInfo } from '../eval/datasets.js';
import { mergeProfiles } from '../game/profiler.js';
import { prepareProfileOutput, profileRunPrinter, runProfile, type ProfileEstimator } from '../game/profile-run.js';
import { profileLayers, readProfile, writeProfileAtomic } from '../game/profile-file.js';
import { compareValues, topK } from '../game/compare.js';
import { playerName } from '../game/players.js';
import { numberFlag } from './util.js';
import { numberList, stringList } from './lists.js';
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
      const lock = prepareProfileOutput(f.out, { mayExist: true });
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

/** `profile run`: the flags checked and parsed, then the library's runProfile (src/game/profile-run.ts). */
async function profileRun(f: ProfileFlags): Promise<void> {
  datasetInfo(f.task);
  if (!['metric', 'loglik', 'kl'].includes(f.utility)) throw new CokvError(`--utility: '${f.utility}' must be metric, loglik or kl`, 'flag');
  if (!['round-robin', 'random'].includes(f.sizeOrder)) throw new CokvError(`--size-order: '${f.sizeOrder}' must be round-robin or random`, 'flag');
  if (!['test', 'validation', 'all'].includes(f.split)) throw new CokvError(`--split: '${f.split}' must be validation, test or all`, 'flag');
  const utility = f.utility as UtilityKind;
  const samples = numberFlag('--samples', f.samples, { integer: true, min: 1 })!;
  const window = numberFlag('--window', f.window, { integer: true, min: 1 })!;
  const runs = numberFlag('--runs', f.runs, { integer: true, min: 1, max: 8 })!;
  const seed = numberFlag('--seed', f.seed, { integer: true, min: 0 })!;
  const batch = numberFlag('--batch', f.batch, { integer: true, min: 1 })!;
  if (!['sliced', 'loo'].includes(f.estimator)) throw new CokvError(`--estimator: '${f.estimator}' must be sliced or loo`, 'flag');
  if (f.estimator === 'loo' && f.exact) throw new CokvError('--estimator loo: not with --exact (both enumerate their coalitions; pick one)', 'flag');
  const maxNew = numberFlag('--max-new', f.maxNew, { integer: true, min: 1 });
  const limit = numberFlag('--limit', f.limit, { integer: true, min: 1 });
  const shard = parseShard(f.shard, f.shards);
  const subset = stringList('--subset', f.subset, { item: 'sub-task' });
  const lengths = numberList('--lengths', f.lengths, { integer: true, min: 1, item: 'length' });
  // Coalition sizes are checked against the player count by the library (it knows n).
  const sizes = numberList('--sizes', f.sizes, { integer: true, item: 'size' });
  const estimator: ProfileEstimator = f.exact ? 'exact' : (f.estimator as 'sliced' | 'loo');
  const quiet = f.quiet ?? false;
  const printer = profileRunPrinter(quiet);
  const r = await runProfile({
    model: f.model, data: f.data, task: f.task, utility, estimator, samples, window, runs, seed, batch, maxNew, limit, shard,
    out: f.out, resume: f.resume,
    split: f.split as 'test' | 'validation' | 'all', splitSeed: numberFlag('--split-seed', f.splitSeed, { integer: true })!,
    subset, lengths, sizes,
    maxLength: numberFlag('--max-length', f.maxLength, { integer: true, min: 16 }),
    tolerance: numberFlag('--tolerance', f.tolerance, { min: 0 }),
    checkpointEvery: numberFlag('--checkpoint-every', f.checkpointEvery, { integer: true, min: 1 }),
    sSideOnly: f.sSideOnly ?? false, sizeOrder: f.sizeOrder as 'round-robin' | 'random', chat: f.chat,
    ...printer.hooks,
  });
  printer.done(r);
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
