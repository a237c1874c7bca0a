/**
 * `npm run bench:load`: peak resident memory while loading a big GGUF, against the bytes of weights kept.
 *
 * Makes a random-weight GGUF with a real model's shapes (../shared/tools/make_shape_gguf.py: F16, SmolLM2's
 * 49152-token vocabulary; Q8_0 from it with llama.cpp's llama-quantize when that is built), then loads each file
 * in a fresh child process twice — the weights alone (openModel + loadWeights) and the whole engine
 * (loadModel: tokenizer, weights, backend) — and prints a markdown table: file size, bytes of weights kept in
 * memory, peak RSS during the load above the child's RSS before it, and their ratio (1.0 = no transient copies).
 *
 * Options: --shape llama32-1b | qwen25-05b | smollm2-135m (default llama32-1b), --dtypes f16,q8_0,
 * --dir DIR (default $TMPDIR/cokv-load-memory; files are kept there for reruns), --python, --gguf-py, --quantize.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { machineLine, markdownTable } from './common.js';

const args = process.argv.slice(2);
const arg = (name: string, d: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : d; };
const here = import.meta.dirname;
const shared = path.resolve(here, '../../shared');

interface ChildResult {
  fileBytes: number;
  keptBytes: number;
  rssBefore: number;
  peakRss: number;
  rssAfter: number;
  ms: number;
}

/** Bytes of every distinct typed array reachable from `v` (tied embeddings count once). */
function keptBytes(v: unknown, seen = new Set<unknown>()): number {
  if (v === null || typeof v !== 'object' || seen.has(v)) return 0;
  seen.add(v);
  if (ArrayBuffer.isView(v)) return v.byteLength;
  let n = 0;
  for (const x of Array.isArray(v) ? v : Object.values(v)) n += keptBytes(x, seen);
  return n;
}

async function child(file: string, mode: 'weights' | 'engine'): Promise<void> {
  const { peakRssBytes } = await import('../src/memory.js');
  const { openModel } = await import('../src/model/load.js');
  const { loadModel } = await import('../src/engine.js');
  const before = process.memoryUsage().rss;
  const t0 = performance.now();
  let kept: number;
  if (mode === 'weights') {
    const w = (await openModel(file)).loadWeights();
    kept = keptBytes(w);
  } else {
    const m = await loadModel(file);
    kept = keptBytes(m.transformer.weights);
  }
  const ms = performance.now() - t0;
  const r: ChildResult = {
    fileBytes: fs.statSync(file).size, keptBytes: kept, rssBefore: before, peakRss: peakRssBytes(), rssAfter: process.memoryUsage().rss, ms,
  };
  process.stdout.write(JSON.stringify(r) + '\n');
}

function run(cmd: string, argv: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status ?? r.signal})`);
}

function measure(file: string, mode: 'weights' | 'engine'): ChildResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'load-memory.ts'), '--child', file, '--mode', mode], {
    encoding: 'utf8', maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`measuring ${file} (${mode}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

const gib = (b: number): string => (b / 2 ** 30).toFixed(2);

async function main(): Promise<void> {
  if (args[0] === '--child') return child(args[1], arg('--mode', 'weights') as 'weights' | 'engine');
  const shape = arg('--shape', 'llama32-1b');
  const dtypes = arg('--dtypes', 'f16,q8_0').split(',');
  const dir = arg('--dir', path.join(os.tmpdir(), 'cokv-load-memory'));
  const python = arg('--python', '/tmp/venv/bin/python');
  const ggufPy = arg('--gguf-py', '/tmp/llama.cpp/gguf-py');
  const quantize = arg('--quantize', '/tmp/llama.cpp/build/bin/llama-quantize');
  fs.mkdirSync(dir, { recursive: true });
  const f16 = path.join(dir, `${shape}-f16.gguf`);
  if (!fs.existsSync(f16)) {
    const tok = path.join(shared, 'assets/tokenizers/SmolLM2-135M-Instruct/tokenizer.json');
    run(python, [path.join(shared, 'tools/make_shape_gguf.py'), tok, f16, shape], { ...process.env, PYTHONPATH: ggufPy });
  }
  const files: [string, string][] = [];
  for (const d of dtypes) {
    if (d === 'f16') files.push([d, f16]);
    else if (d === 'q8_0') {
      const q8 = path.join(dir, `${shape}-q8_0.gguf`);
      if (!fs.existsSync(q8)) {
        if (!fs.existsSync(quantize)) {
          process.stderr.write(`skipping q8_0: ${quantize} not found (build llama.cpp or pass --quantize)\n`);
          continue;
        }
        run(quantize, [f16, q8, 'Q8_0']);
      }
      files.push([d, q8]);
    } else throw new Error(`--dtypes: unknown dtype ${d} (f16, q8_0)`);
  }
  const rows: (string | number)[][] = [];
  for (const [d, file] of files) {
    for (const mode of ['weights', 'engine'] as const) {
      const r = measure(file, mode);
      const grew = r.peakRss - r.rssBefore;
      rows.push([
        `${shape} ${d}`, mode === 'weights' ? 'openModel + loadWeights' : 'loadModel', gib(r.fileBytes), gib(r.keptBytes),
        gib(r.rssBefore), gib(r.peakRss), gib(grew), (grew / r.keptBytes).toFixed(2), (r.ms / 1000).toFixed(1),
      ]);
    }
  }
  process.stdout.write(`${machineLine()}\n\n`);
  process.stdout.write(markdownTable(
    ['model', 'load', 'file GiB', 'weights kept GiB', 'RSS before GiB', 'peak RSS GiB', 'peak − before GiB', 'ratio', 'load s'],
    rows,
  ) + '\n');
}

await main();
