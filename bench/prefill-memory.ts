/**
 * `node --import tsx bench/prefill-memory.ts`: peak RSS and prefill time of a press prefill, per mode — the full
 * cache, a press in the exact mode (chunks, full K/V until the last chunk, compressed there; the default) and in the
 * bounded `prefillEvict` mode (compressed after every chunk) — plus the full cache in F32 for the F16 default's
 * share. Each case runs in its own child process (peak RSS = process.resourceUsage().maxRSS, which also covers
 * loading; the RSS right after loading is printed beside it). Then task quality of the exact vs the bounded mode
 * on retrieval items through `cokv eval` (with and without `--prefill-evict`).
 *
 * Models: cokv-retrieval-tiny (../shared/assets, context 2048) and a random-weight SmolLM2-135M-shaped F16 GGUF
 * made by ../shared/tools/make_shape_gguf.py (Python venv at /tmp/venv; the file is reused when present).
 * Options: --press snapkv --budget 128 --tiny-lengths 1024,2000 --smol-lengths 2048,8192 --models tiny,smollm2
 * --repeats 2 (child processes per case: peak RSS moves by a few MiB between runs with GC timing; every run's
 * peak is printed, the time is the median) --quality-budgets 64,128,256,512 --quality-limit N (first N items; default all 60) --no-quality; --child is internal.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/engine.js';
import { createPress } from '../src/press/registry.js';
import type { KvDType } from '../src/cache/ragged.js';
import { machineLine, markdownTable, median, randomIds } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string, d: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : d; };
const root = path.resolve(import.meta.dirname, '..');
const assets = path.resolve(root, '../shared/assets');
const tinyPath = path.join(assets, 'models/cokv-retrieval-tiny');

type Mode = 'full' | 'full-f32' | 'exact' | 'evict';
interface Case { model: string; label: string; length: number; mode: Mode; press: string; budget: number }
interface Result extends Case {
  backend: string; prefillMs: number; peakRssMiB: number; loadRssMiB: number; promptKvMiB: number; kvDtype: string;
}

async function child(c: Case): Promise<void> {
  const model = await loadModel(c.model);
  const loadRss = process.memoryUsage().rss;
  const ids = randomIds(c.length, model.config.vocabSize, 11).map((id) => Math.max(4, id));
  const kvDtype: KvDType = c.mode === 'full-f32' ? 'f32' : 'f16';
  const press = c.mode === 'exact' || c.mode === 'evict' ? createPress(c.press, { budget: c.budget }, model.config) : undefined;
  const g = model.generate(ids, { press, prefillEvict: c.mode === 'evict', kvDtype, maxTokens: 1, temperature: 0, eosIds: [] });
  await g.complete();
  const s = g.stats!;
  const r: Result = {
    ...c, backend: model.transformer.backend.name, prefillMs: s.prefillMs, kvDtype: s.kvDtype,
    peakRssMiB: (process.resourceUsage().maxRSS * 1024) / 2 ** 20, loadRssMiB: loadRss / 2 ** 20, promptKvMiB: s.promptKvBytes / 2 ** 20,
  };
  process.stdout.write(JSON.stringify(r) + '\n');
}

function runCase(c: Case): Result {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'bench/prefill-memory.ts'), '--child', JSON.stringify(c)], {
    cwd: root, encoding: 'utf8', maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`case ${JSON.stringify(c)} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Result;
}

/** The SmolLM2-135M-shaped random F16 GGUF (made once). */
function smolGguf(): string {
  const file = path.join(os.tmpdir(), 'cokv-bench-smollm2-135m-f16.gguf');
  if (fs.existsSync(file)) return file;
  const python = fs.existsSync('/tmp/venv/bin/python') ? '/tmp/venv/bin/python' : 'python3';
  execFileSync(python, [path.resolve(root, '../shared/tools/make_shape_gguf.py'), path.join(assets, 'tokenizers/SmolLM2-135M-Instruct/tokenizer.json'), file, 'smollm2-135m'], { stdio: 'inherit' });
  return file;
}

interface EvalRun { press: string; budget: number; score: number; n: number; keptKvBytes: number; fullKvBytes: number; timings: { prefillMs: number } }

/** `cokv eval` on retrieval items, exact and --prefill-evict; returns one row per (press, budget, mode). */
function quality(limit: number | undefined, budgets: number[], press: string): (string | number)[][] {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-bench-evict-'));
  const rows: (string | number)[][] = [];
  const base = ['--import', 'tsx', path.join(root, 'src/cli/run.ts'), 'eval', '--model', tinyPath, '--data', path.join(assets, 'data/retrieval-dev.jsonl'),
    '--dataset', 'retrieval', '--subset', 'passkey,multikey,kv', '--lengths', '2048', '--split', 'all', ...(limit ? ['--limit', String(limit)] : []),
    '--presses', `full,${press}`, '--budgets', budgets.join(','), '--out', out, '--quiet', '--json'];
  const runs: Record<string, EvalRun[]> = {};
  for (const mode of ['exact', 'evict']) {
    const r = spawnSync(process.execPath, [...base, ...(mode === 'evict' ? ['--prefill-evict'] : [])], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(`cokv eval (${mode}) failed: ${r.stderr}`);
    runs[mode] = JSON.parse(r.stdout) as EvalRun[];
  }
  const full = runs.exact.find((m) => m.press === 'full')!;
  rows.push(['full', '-', '-', full.score.toFixed(1), full.n, '100.0%', full.timings.prefillMs.toFixed(0)]);
  for (const b of budgets) {
    for (const mode of ['exact', 'evict']) {
      const m = runs[mode].find((x) => x.press === press && x.budget === b)!;
      rows.push([press, b, mode === 'evict' ? '--prefill-evict' : 'exact', m.score.toFixed(1), m.n, `${((100 * m.keptKvBytes) / m.fullKvBytes).toFixed(1)}%`, m.timings.prefillMs.toFixed(0)]);
    }
  }
  fs.rmSync(out, { recursive: true, force: true });
  return rows;
}

async function main(): Promise<void> {
  const ci = args.indexOf('--child');
  if (ci >= 0) return child(JSON.parse(args[ci + 1]) as Case);
  const press = arg('--press', 'snapkv');
  const budget = Number(arg('--budget', '128'));
  const which = arg('--models', 'tiny,smollm2').split(',');
  const models: { label: string; file: string; lengths: number[] }[] = [];
  if (which.includes('tiny')) models.push({ label: 'cokv-retrieval-tiny', file: tinyPath, lengths: arg('--tiny-lengths', '1024,2000').split(',').map(Number) });
  if (which.includes('smollm2')) models.push({ label: 'SmolLM2-135M shape (F16, random)', file: smolGguf(), lengths: arg('--smol-lengths', '2048,8192').split(',').map(Number) });
  const started = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const repeats = Number(arg('--repeats', '2'));
  const results: Result[][] = [];
  for (const m of models) {
    for (const length of m.lengths) {
      for (const mode of ['full-f32', 'full', 'exact', 'evict'] as const) {
        const runs: Result[] = [];
        for (let i = 0; i < repeats; i++) {
          const r = runCase({ model: m.file, label: m.label, length, mode, press, budget });
          process.stderr.write(`${m.label} ${length} ${mode}: peak ${r.peakRssMiB.toFixed(0)} MiB, prefill ${(r.prefillMs / 1000).toFixed(1)} s\n`);
          runs.push(r);
        }
        results.push(runs);
      }
    }
  }
  const name: Record<Mode, string> = {
    'full-f32': 'full cache, `--kv-dtype f32`', full: 'full cache (F16, the default)', exact: `${press} B=${budget}, exact (default)`, evict: `${press} B=${budget}, \`--prefill-evict\``,
  };
  const table = markdownTable(
    ['model', 'prompt tokens', 'case', 'peak RSS MiB (each run)', 'RSS after load MiB', 'prompt KV held MiB', 'prefill s (median)'],
    results.map((runs) => {
      const r = runs[0];
      return [r.label, r.length, name[r.mode], runs.map((x) => x.peakRssMiB.toFixed(0)).join(' / '), r.loadRssMiB.toFixed(0), r.promptKvMiB.toFixed(2),
        (median(runs.map((x) => x.prefillMs)) / 1000).toFixed(2)];
    }),
  );
  process.stdout.write(`Run ${started} UTC, ${machineLine()}, backend ${results[0]?.[0]?.backend ?? '?'}\n\n${table}\n`);
  if (!args.includes('--no-quality')) {
    const limit = args.includes('--quality-limit') ? Number(arg('--quality-limit', '0')) : undefined;
    const q = quality(limit, arg('--quality-budgets', '64,128,256,512').split(',').map(Number), press);
    process.stdout.write(`\nRetrieval quality (cokv-retrieval-tiny, 2048-token items of passkey, multikey and kv${limit ? `, the first ${limit}` : ''}; score = exact match %):\n\n`);
    process.stdout.write(markdownTable(['press', 'budget', 'prefill', 'score', 'n', 'kept KV', 'prefill ms/item'], q) + '\n');
  }
}

await main();
