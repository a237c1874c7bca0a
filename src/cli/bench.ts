/**
 * `cokv bench`: memory and latency per prompt length × press × budget, Full as the 1.0 reference in the same run.
 * The work is the library's runBench (src/eval/bench-run.ts, one child process per configuration); this file
 * parses the flags and prints the table.
 */
import type { Command } from 'commander';
import { loadModel } from '../engine.js';
import { benchRowLine, runBench, type BenchRow } from '../eval/bench-run.js';
import { kvScopeLabel } from '../press/scope.js';
import { addPressTuningFlags, pressOptionsFromFlags, type PressFlags } from './press-flags.js';
import { formatBytes, numberFlag } from './util.js';
import { numberList, stringList } from './lists.js';
import { PRESS_NAMES } from '../press/registry.js';

export type { BenchRow };

interface BenchFlags extends PressFlags { model: string; lengths: string; presses: string; budgets: string; decode: string; out?: string; json?: boolean }

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
}

async function benchCommand(f: BenchFlags): Promise<void> {
  const lengths = numberList('--lengths', f.lengths, { integer: true, min: 1, item: 'length' });
  const budgets = numberList('--budgets', f.budgets, { integer: true, min: 1, item: 'budget' });
  const presses = stringList('--presses', f.presses, { allowed: PRESS_NAMES, item: 'press' });
  const decode = numberFlag('--decode', f.decode, { integer: true, min: 1 })!;
  const model = await loadModel(f.model);
  const rows = await runBench(model, f.model, {
    lengths, presses, budgets, decode, out: f.out,
    pressOptions: pressOptionsFromFlags({ ...f, budget: undefined, ratio: undefined }),
    onNote: (m) => process.stderr.write(`cokv: note: ${m}\n`),
    onRow: (r) => process.stderr.write(benchRowLine(r) + '\n'),
  });
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
