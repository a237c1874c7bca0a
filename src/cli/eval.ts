/** `cokv eval`: run presses × budgets on a dataset with the LongBench protocol; one folder per run. */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { loadModel } from '../engine.js';
import { datasetInfo } from '../eval/datasets.js';
import { mergeEvalShards, runEval, type Protocol, type RunMetrics } from '../eval/runner.js';
import { addPressTuningFlags, pressOptionsFromFlags, type PressFlags } from './press-flags.js';
import { ProgressBar } from './progress.js';
import { parseShard, shardText, SHARDS_HELP } from './shard.js';
import { KV_DTYPE_HELP, kvDtypeFlag, numberFlag } from './util.js';
import { numberList, stringList } from './lists.js';
import { PRESS_NAMES } from '../press/registry.js';

interface EvalFlags extends PressFlags {
  model: string;
  data: string;
  dataset: string;
  presses: string;
  budgets: string;
  ratios?: string;
  limit?: string;
  split: string;
  splitSeed: string;
  subset?: string;
  lengths?: string;
  maxLength?: string;
  protocol: string;
  metric: string;
  loglikTokens: string;
  skipBadLines?: boolean;
  kvDtype: string;
  chat?: boolean;
  out: string;
  overwrite?: boolean;
  quiet?: boolean;
  json?: boolean;
  prefillEvict?: boolean;
  shard?: string;
  shards?: string;
}

export function registerEval(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const evalCmd = program.command('eval').description('score presses × budgets on a dataset (LongBench protocol); merge sharded evals');
  const cmd = evalCmd
    .command('run', { isDefault: true })
    .description('score presses × budgets on a dataset (LongBench protocol); resumable, one folder per run')
    .requiredOption('--model <path>', 'model file or folder')
    .requiredOption('--data <path>', 'dataset jsonl, or a folder with <dataset>.jsonl')
    .requiredOption('--dataset <name>', 'LongBench task name, retrieval, ruler, longeval or stories')
    .option('--presses <list>', 'comma-separated presses', 'full,snapkv,pyramidkv,adakv,headkv,cokv')
    .option('--budgets <list>', 'comma-separated budgets (tokens per KV head, window included)', '64,128,256,512,1024')
    .option('--ratios <list>', 'also run these kept fractions (0, 1] of the prompt (with --preset kvpress: kvpress compression ratios, the fraction removed)')
    .option('--limit <n>', 'only the first n items (after the split)')
    .option('--split <part>', 'test (85%), validation (15%) or all', 'test')
    .option('--split-seed <s>', 'seed of the validation/test split', '0')
    .option('--subset <list>', 'keep items whose sub-task is listed (retrieval: passkey,multikey,kv,…)')
    .option('--lengths <list>', 'keep items whose nominal length is listed (retrieval: 512,1024,2048)')
    .option('--max-length <n>', 'LongBench middle truncation in tokens (default 8000, clipped to the context)')
    .option('--chat', 'wrap LongBench prompts in the model\'s chat template (the reference does not for Llama-3/Mistral; never for few-shot/code tasks)')
    .option('--protocol <p>', 'question-aware (the paper) or context-only (kvpress)', 'question-aware')
    .option('--metric <m>', 'default (the dataset\'s metric) or loglik (teacher-forced reference log-prob + greedy agreement)', 'default')
    .option('--loglik-tokens <n>', 'reference tokens scored by --metric loglik', '16')
    .option('--kv-dtype <t>', KV_DTYPE_HELP, 'f16')
    .option('--prefill-evict', 'bounded prefill: each press run compresses after every 512-token chunk (KV held ≤ budget + chunk per head) instead of compressing one full prefill at its end; folders end in __evict')
    .option('--skip-bad-lines', 'skip malformed jsonl lines with a warning instead of stopping')
    .requiredOption('--out <dir>', 'results folder: one folder per run, recording every setting that changes its results (run.json); a rerun with the same settings reuses finished runs and resumes cut ones')
    .option('--overwrite', 'replace run folders that hold results for other settings (default: refuse them, naming what differs)')
    .option('--shard <i/k|auto>', 'score only part i of k of the (run, item) pairs, into this shard\'s own --out; join the shards with `cokv eval merge` (auto: the Slurm array task or Kubernetes Indexed Job completion index)')
    .option('--shards <n>', SHARDS_HELP)
    .option('--quiet', 'no progress output')
    .option('--json', 'print the metrics of every run as JSON');
  addPressTuningFlags(cmd).action((f: EvalFlags) => run(() => evalCommand(f)));

  evalCmd
    .command('merge')
    .description('join the --out folders of the shards of one eval (--shard i/k, every i once) into the results of one unsharded run')
    .argument('<dirs...>', 'the shards\' --out folders')
    .requiredOption('--out <dir>', 'results folder (the run folders one unsharded cokv eval writes)')
    .option('--json', 'print the metrics of every run as JSON')
    .action((dirs: string[], f: { out: string; json?: boolean }) => run(async () => {
      const results = mergeEvalShards(dirs, f.out);
      if (f.json) {
        process.stdout.write(JSON.stringify(results) + '\n');
        return;
      }
      process.stderr.write(`merged ${dirs.length} shards: ${results.length} runs → ${f.out}\n`);
      printTable(results);
    }));
}

async function evalCommand(f: EvalFlags): Promise<void> {
  datasetInfo(f.dataset);
  if (!['test', 'validation', 'all'].includes(f.split)) throw new CokvError(`--split: '${f.split}' must be test, validation or all`, 'flag');
  if (!['question-aware', 'context-only'].includes(f.protocol)) throw new CokvError(`--protocol: '${f.protocol}' must be question-aware or context-only`, 'flag');
  if (!['default', 'loglik'].includes(f.metric)) throw new CokvError(`--metric: '${f.metric}' must be default or loglik`, 'flag');
  const kvDtype = kvDtypeFlag(f.kvDtype);
  const presses = stringList('--presses', f.presses, { allowed: PRESS_NAMES, item: 'press' });
  const budgets = numberList('--budgets', f.budgets, { integer: true, min: 1, item: 'budget' });
  const ratios = numberList('--ratios', f.ratios, { min: 0, max: 1, item: 'ratio' });
  const subset = stringList('--subset', f.subset, { item: 'sub-task' });
  const lengths = numberList('--lengths', f.lengths, { integer: true, min: 1, item: 'length' });
  const shard = parseShard(f.shard, f.shards);
  const model = await loadModel(f.model);
  const bar = new ProgressBar('eval', f.quiet ?? false);
  const results = await runEval(model, f.model, {
    dataset: f.dataset, data: f.data, presses, budgets, ratios,
    pressOptions: pressOptionsFromFlags({ ...f, budget: undefined, ratio: undefined }),
    limit: numberFlag('--limit', f.limit, { integer: true, min: 1 }),
    split: f.split as 'test' | 'validation' | 'all',
    splitSeed: numberFlag('--split-seed', f.splitSeed, { integer: true })!,
    subset,
    lengths,
    maxLength: numberFlag('--max-length', f.maxLength, { integer: true, min: 16 }),
    protocol: f.protocol as Protocol,
    chat: f.chat ?? false,
    metric: f.metric as 'default' | 'loglik',
    loglikTokens: numberFlag('--loglik-tokens', f.loglikTokens, { integer: true, min: 1 }),
    kvDtype,
    prefillEvict: f.prefillEvict ?? false,
    jsonl: { onBadLine: f.skipBadLines ? 'skip' : 'error' },
    out: f.out,
    overwrite: f.overwrite ?? false,
    shard,
    onProgress: (name, done, total) => bar.update(done, total, name),
  });
  bar.finish();
  if (shard && shard.count > 1) {
    const line = `shard ${shardText(shard)} done → ${f.out} (join every shard's --out with \`cokv eval merge DIR… --out DIR\`)`;
    if (f.json) process.stdout.write(JSON.stringify({ shard: shardText(shard), out: f.out }) + '\n');
    else process.stderr.write(line + '\n');
    return;
  }
  if (f.json) {
    process.stdout.write(JSON.stringify(results) + '\n');
    return;
  }
  printTable(results);
}

function printTable(results: RunMetrics[]): void {
  const full = results.find((r) => r.press === 'full');
  const w = Math.max(...results.map((r) => r.press.length), 5);
  process.stdout.write(`${'press'.padEnd(w)}  budget  ${results[0]?.metric ?? ''}  (n)   vs full   kept KV\n`);
  for (const r of results) {
    const b = r.budget ?? (r.ratio !== undefined ? `r${r.ratio}` : '-');
    const rel = full && full.score !== 0 ? `${((100 * r.score) / full.score).toFixed(1)}%` : '';
    process.stdout.write(`${r.press.padEnd(w)}  ${String(b).padStart(6)}  ${r.score.toFixed(2).padStart(7)} (${r.n})  ${rel.padStart(7)}  ${(100 * r.keptKvBytes / Math.max(1, r.fullKvBytes)).toFixed(1)}%\n`);
  }
  // Kept KV covers the budgeted layers; say so when sliding layers are left out of it.
  const scope = results.find((r) => r.kvScope)?.kvScope;
  if (scope) process.stdout.write(`kept KV: ${scope}\n`);
}
