/**
 * Memory and latency per prompt length × press × budget (what `cokv bench` does), Full as the 1.0 reference in
 * the same run. Each configuration runs in its own child process (src/eval/bench-child.ts) so its peak RSS is its
 * own; the press options travel to it as JSON. Errors name the command-line flag they are about.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type CokvModel } from '../engine.js';
import { CokvError } from '../errors.js';
import { Rng } from '../generate/rng.js';
import { peakRssBytes } from '../memory.js';
import type { PressOptions } from '../press/options.js';
import { createPress, resolvePress } from '../press/registry.js';
import { DEFAULT_KV_DTYPE } from '../session/sequence.js';
import { writeFileAtomic } from '../util/files.js';
import { modelName } from './runner.js';

/** One configuration's measurements. */
export interface BenchRow {
  length: number; press: string; budget: number | null; prefillMs: number; decodeMsPerToken: number;
  /** K+V bytes held after the prefill, every layer (sliding windows included): the memory. */
  kvBytes: number;
  /** The part of kvBytes in the full-attention layers, the ones a press budgets. */
  budgetedKvBytes?: number;
  peakRssBytes: number;
}

/** One configuration: a random prompt of `length` tokens prefilled with the press, then `decode` greedy steps. */
export interface BenchConfig {
  /** Model file or folder. */
  model: string;
  length: number;
  press: string;
  budget: number | null;
  /** Decode steps timed (the median is reported). */
  decode: number;
  /** The press's tuning options (no budget, no ratio). */
  pressOptions: Omit<PressOptions, 'budget' | 'ratio'>;
}

/** Measure one configuration in this process (the child's work; its peak RSS is this process's). */
export async function benchConfig(o: BenchConfig): Promise<BenchRow> {
  const model = await loadModel(o.model);
  const c = model.config;
  const L = o.length, steps = o.decode;
  const press = resolvePress(o.press, { ...o.pressOptions, budget: o.budget ?? undefined }, c);
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
  return {
    length: L, press: o.press, budget: o.budget, prefillMs,
    decodeMsPerToken: times[Math.floor(times.length / 2)], kvBytes, budgetedKvBytes, peakRssBytes: peakRssBytes(),
  };
}

export interface BenchOptions {
  /** Prompt lengths in tokens (each at most the model's context). */
  lengths: number[];
  presses: string[];
  /** Budgets of every press but full. */
  budgets: number[];
  /** Decode steps timed (at most the model's context). */
  decode: number;
  pressOptions: Omit<PressOptions, 'budget' | 'ratio'>;
  /** Also write `<out>/bench/<model>.json` (for cokv report). */
  out?: string;
  /** A length whose decode runs past the trained context (timed anyway). */
  onNote?: (message: string) => void;
  /** After each configuration. */
  onRow?: (row: BenchRow) => void;
}

/** Every configuration of `o` on `model` (loaded from `modelPath`, which the children load again), one child each. */
export async function runBench(model: CokvModel, modelPath: string, o: BenchOptions): Promise<BenchRow[]> {
  const { lengths, decode } = o;
  const ctx = model.config.contextLength;
  // A prompt beyond the context is refused (it would time nothing real, for minutes); decoding a few steps past
  // it only notes so, as generate allows a little past the trained context.
  const over = lengths.find((L) => L > ctx);
  if (over !== undefined) throw new CokvError(`--lengths: ${over} tokens are more than the model's context of ${ctx} tokens`, 'flag');
  if (decode > ctx) throw new CokvError(`--decode: ${decode} steps are more than the model's context of ${ctx} tokens`, 'flag');
  for (const L of lengths) if (L + decode >= ctx) o.onNote?.(`${L} + ${decode} decoded tokens exceed the model's trained context ${ctx} (RoPE still runs; timings only)`);
  const configs = o.presses.flatMap((p) => (p === 'full' ? [{ press: p, budget: null as number | null }] : o.budgets.map((b) => ({ press: p, budget: b as number | null }))));
  for (const cfg of configs) createPress(cfg.press, { ...o.pressOptions, budget: cfg.budget ?? undefined }, model.config);
  if (o.out && fs.existsSync(o.out) && !fs.statSync(o.out).isDirectory()) throw new CokvError(`--out ${o.out}: is a file, not a folder`, 'file');
  const self = fileURLToPath(import.meta.url);
  const entry = path.join(path.dirname(self), self.endsWith('.ts') ? 'bench-child.ts' : 'bench-child.js');
  const nodeArgs = entry.endsWith('.ts') ? ['--import', 'tsx', entry] : [entry];
  const rows: BenchRow[] = [];
  for (const L of lengths) {
    for (const cfg of configs) {
      const config: BenchConfig = { model: modelPath, length: L, press: cfg.press, budget: cfg.budget, decode, pressOptions: o.pressOptions };
      const r = spawnSync(process.execPath, [...nodeArgs, JSON.stringify(config)], { encoding: 'utf8', maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new CokvError(`bench: ${cfg.press} at ${L} tokens failed: ${(r.stderr || '').trim().split('\n').pop()}`, 'internal');
      const row = JSON.parse(r.stdout.trim().split('\n').pop()!) as BenchRow;
      rows.push(row);
      o.onRow?.(row);
    }
  }
  if (o.out) {
    fs.mkdirSync(path.join(o.out, 'bench'), { recursive: true });
    writeFileAtomic(path.join(o.out, 'bench', `${modelName(modelPath)}.json`), JSON.stringify({ model: modelName(modelPath), rows }, null, 1) + '\n');
  }
  return rows;
}

/** The line `cokv bench` prints after each configuration. */
export function benchRowLine(row: BenchRow): string {
  return `bench ${row.length} ${row.press} ${row.budget ?? ''} done`;
}
