/**
 * `cokv bench`: memory and latency per prompt length × press × budget, Full as the 1.0 reference in the same run.
 * Each configuration runs in its own child process so its peak RSS is its own.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { loadModel } from '../engine.js';
import { Rng } from '../generate/rng.js';
import { modelName } from '../eval/runner.js';
import { createPress, resolvePress } from '../press/registry.js';
import { DEFAULT_KV_DTYPE } from '../session/sequence.js';
import { kvScopeLabel } from '../press/scope.js';
import { addPressTuningFlags, pressOptionsFromFlags, type PressFlags } from './press-flags.js';
import { formatBytes, numberFlag } from './util.js';
import { peakRssBytes } from '../memory.js';

interface BenchFlags extends PressFlags { model: string; lengths: string; presses: string; budgets: string; decode: string; out?: string; json?: boolean }

export interface BenchRow {
  length: number; press: string; budget: number | null; prefillMs: number; decodeMsPerToken: number;
  /** K+V bytes held after the prefill, every layer (sliding windows included): the memory. */
  kvBytes: number;
  /** The part of kvBytes in the full-attention layers, the ones a press budgets. */
  budgetedKvBytes?: number;
  peakRssBytes: number;
}

export function registerBench(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const cmd = program
    .command('bench')
    .description('memory and latency per prompt length, press and budget (Full = 1.0 in the same run)')
    .requiredOption('--model <path>', 'model file or folder')
    .option('--lengths <list>', 'prompt lengths in tokens', '1024,2048,4096,8192')
    .option('--presses <list>', 'presses', 'full,snapkv')
    .option('--budgets <list>', 'budgets', '128')
    .option('--decode <n>', 'decode steps timed (median reported)', '16')
    .option('--out <dir>', 'also write <dir>/bench/<model>.json for cokv report')
    .option('--json', 'print the rows as JSON');
  addPressTuningFlags(cmd).action((f: BenchFlags) => run(() => benchCommand(f)));
  // Internal: one configuration, in a child process (prints one JSON row).
  const one = program.command('bench-one', { hidden: true }).requiredOption('--model <path>').requiredOption('--length <n>')
    .requiredOption('--press <p>').option('--budget <n>').requiredOption('--decode <n>');
  addPressTuningFlags(one).action((f: PressFlags & { model: string; length: string; decode: string }) => run(() => benchOne(f)));
}

async function benchOne(f: PressFlags & { model: string; length: string; decode: string }): Promise<void> {
  const model = await loadModel(f.model);
  const c = model.config;
  const L = Number(f.length), steps = Number(f.decode);
  const press = resolvePress(f.press ?? 'full', pressOptionsFromFlags(f), c);
  const rng = new Rng(11);
  const ids = Array.from({ length: L }, (_, i) => (i === 0 && model.tokenizer.bosId !== undefined ? model.tokenizer.bosId : rng.int(c.vocabSize)));
  // The engine's default storage (F16), prefilled in chunks like every press prefill.
  const cache = model.newCache(L + steps + 1, DEFAULT_KV_DTYPE);
  const t0 = performance.now();
  let logits = model.prefill(ids, cache, press, steps + 1);
  const prefillMs = performance.now() - t0;
  const kvBytes = cache.bytes();
  const budgetedKvBytes = cache.budgetedBytes();
  cache.reserveExtra(steps + 1);
  const times: number[] = [];
  const step = [0];
  for (let i = 0; i < steps; i++) {
    let best = 0;
    for (let v = 1; v < c.vocabSize; v++) if (logits[v] > logits[best]) best = v;
    step[0] = best;
    const t = performance.now();
    logits = model.transformer.forward(step, cache);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  const row: BenchRow = {
    length: L, press: f.press ?? 'full', budget: f.budget ? Number(f.budget) : null, prefillMs,
    decodeMsPerToken: times[Math.floor(times.length / 2)], kvBytes, budgetedKvBytes, peakRssBytes: peakRssBytes(),
  };
  process.stdout.write(JSON.stringify(row) + '\n');
}

async function benchCommand(f: BenchFlags): Promise<void> {
  const list = (flag: string, s: string) => s.split(',').map((x) => numberFlag(flag, x.trim(), { integer: true, min: 1 })!);
  const lengths = list('--lengths', f.lengths);
  const budgets = list('--budgets', f.budgets);
  const presses = f.presses.split(',').map((x) => x.trim()).filter(Boolean);
  const decode = numberFlag('--decode', f.decode, { integer: true, min: 1 })!;
  const model = await loadModel(f.model);
  const ctx = model.config.contextLength;
  // A prompt beyond the context is refused (it would time nothing real, for minutes); decoding a few steps past
  // it only notes so, as generate allows a little past the trained context.
  const over = lengths.find((L) => L > ctx);
  if (over !== undefined) throw new CokvError(`--lengths: ${over} tokens are more than the model's context of ${ctx} tokens`, 'flag');
  if (decode > ctx) throw new CokvError(`--decode: ${decode} steps are more than the model's context of ${ctx} tokens`, 'flag');
  for (const L of lengths) if (L + decode >= ctx) process.stderr.write(`cokv: note: ${L} + ${decode} decoded tokens exceed the model's trained context ${ctx} (RoPE still runs; timings only)\n`);
  const configs = presses.flatMap((p) => (p === 'full' ? [{ press: p, budget: null as number | null }] : budgets.map((b) => ({ press: p, budget: b as number | null }))));
  for (const cfg of configs) createPress(cfg.press, { ...pressOptionsFromFlags({ ...f, budget: undefined, ratio: undefined }), budget: cfg.budget ?? undefined }, model.config);
  if (f.out && fs.existsSync(f.out) && !fs.statSync(f.out).isDirectory()) throw new CokvError(`--out ${f.out}: is a file, not a folder`, 'file');
  const entry = path.join(path.dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).endsWith('.ts') ? 'run.ts' : 'run.js');
  const nodeArgs = entry.endsWith('.ts') ? ['--import', 'tsx', entry] : [entry];
  const pass: string[] = [];
  for (const k of ['window', 'pool', 'kernel', 'alpha', 'profile', 'headScores', 'sink', 'preset'] as const) {
    if (f[k] !== undefined) pass.push(`--${k.replace(/[A-Z]/g, (m) => '-' + m.toLowerCase())}`, String(f[k]));
  }
  if (f.protect !== undefined && f.protect !== false) pass.push(f.protect === true ? '--protect' : `--protect=${f.protect}`);
  if (f.redistribute === false) pass.push('--no-redistribute');
  const rows: BenchRow[] = [];
  for (const L of lengths) {
    for (const cfg of configs) {
      const args = [...nodeArgs, 'bench-one', '--model', f.model, '--length', String(L), '--press', cfg.press, '--decode', String(decode), ...pass];
      if (cfg.budget !== null) args.push('--budget', String(cfg.budget));
      const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new CokvError(`bench: ${cfg.press} at ${L} tokens failed: ${(r.stderr || '').trim().split('\n').pop()}`, 'internal');
      rows.push(JSON.parse(r.stdout.trim().split('\n').pop()!) as BenchRow);
      process.stderr.write(`bench ${L} ${cfg.press} ${cfg.budget ?? ''} done\n`);
    }
  }
  if (f.out) {
    fs.mkdirSync(path.join(f.out, 'bench'), { recursive: true });
    fs.writeFileSync(path.join(f.out, 'bench', `${modelName(f.model)}.json`), JSON.stringify({ model: modelName(f.model), rows }, null, 1) + '\n');
  }
  if (f.json) { process.stdout.write(JSON.stringify(rows) + '\n'); return; }
  // With sliding layers, also the budgeted (full-attention) part of the KV, the part a press compresses.
  const sliding = model.config.layers.some((l) => l.kind === 'sliding');
  const lines = [
    `| prompt | press | budget | prefill ms | decode ms/token | × full | KV held | × full |${sliding ? ' budgeted KV | × full |' : ''} peak RSS |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- |${sliding ? ' --- | --- |' : ''} --- |`,
  ];
  for (const r of rows) {
    const full = rows.find((x) => x.length === r.length && x.press === 'full');
    const rel = (a: number, b?: number) => (b ? (a / b).toFixed(3) : '');
    const budgeted = sliding ? ` ${formatBytes(r.budgetedKvBytes ?? 0)} | ${rel(r.budgetedKvBytes ?? 0, full?.budgetedKvBytes)} |` : '';
    lines.push(`| ${r.length} | ${r.press} | ${r.budget ?? '-'} | ${r.prefillMs.toFixed(0)} | ${r.decodeMsPerToken.toFixed(2)} | ${rel(r.decodeMsPerToken, full?.decodeMsPerToken)} | ${formatBytes(r.kvBytes)} | ${rel(r.kvBytes, full?.kvBytes)} |${budgeted} ${formatBytes(r.peakRssBytes)} |`);
  }
  if (sliding) lines.push('', `KV held: every layer; budgeted KV: ${kvScopeLabel(model.config)}`);
  process.stdout.write(lines.join('\n') + '\n');
}
