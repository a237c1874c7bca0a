/**
 * `npm run bench:llamacpp` (issues #7, #13): cokv's CLI against llama.cpp (through node-llama-cpp 3.22.1, CPU only)
 * on the same GGUF files and prompt tokens, side by side in one run, each engine in its own process.
 *
 * Models (--models, keys `<shape>-<type>`): random-weight GGUFs with the real shapes of Llama-3.2-1B (`llama32-1b`),
 * Qwen2.5-0.5B (`qwen25-05b`) and SmolLM2-135M (`smollm2-135m`), SmolLM2's tokenizer, as written by
 * `../shared/tools/make_shape_gguf.py` (F16, context_length 33024 = 32768 + 256) and shrunk by llama.cpp's own
 * `llama-quantize` (types `q4_k_m`, `q8_0`; `f16` is the script's output itself). They are cached in --model-dir
 * (default /tmp/cokv-bench-models) and reused; a missing one is made there (python with numpy + gguf, then
 * llama-quantize, see ../shared/docs/llamacpp-tools.md), or, without those tools, skipped with one line saying what is
 * missing. `tiny-q8_0` / `tiny-f32` are the cokv-retrieval-tiny GGUFs (trained context 2048).
 *
 * Prompts (--prompts): Paul Graham essay text trimmed to exactly N tokens of the model's tokenizer; a length is
 * skipped where prompt + generated tokens do not fit the file's context_length.
 * Caches (--caches): cokv runs `full`, `snapkv` and/or `cokv` at --budget B (default 128); llama.cpp always keeps its
 * full cache, measured once per (model, prompt) and compared with every cokv cache row. CoKV needs a head-value profile
 * per model: --cokv-profile FILE, else <model-dir>/<model>.cokv-profile.json, made when missing by a quick
 * `cokv profile run` on retrieval-dev (few samples: random weights have no meaningful head values, so the profile only
 * exercises CoKV's non-uniform per-head budgets; its speed, not its accuracy, is what is measured).
 * Several grids run in one invocation: --grid 'MODELS:PROMPTS:CACHES' (repeatable, comma lists), e.g.
 * `--grid smollm2-135m-q8_0,qwen25-05b-q8_0:8192:full,snapkv`; without --grid, one grid of --models × --prompts × --caches.
 *
 * Each repeat runs, for one (model, prompt), every cokv cache and llama.cpp at every --llama-threads count, in an order
 * that alternates between repeats (the VM is noisy); rates are the best over --repeats (default 2) and peak RSS the
 * largest. Rates are in-process: cokv's `--json` stats (prefill = prompt tokens / prefill ms, compression included;
 * decode = tokens after the first / the time after the first), and the llama.cpp child's own clock the same way
 * (prefill = evaluate() until the first token). Peak RSS is each process's VmHWM (src/memory.ts). Both engines keep
 * an F16 KV cache by default; llama.cpp runs with node-llama-cpp's defaults otherwise (batch size, no flash attention),
 * contextSize = prompt + decode + 8 rounded up to 256. cokv runs with COKV_THREADS = --threads (default 2).
 *
 * Options: --models, --prompts (default 512,2048), --caches (default full), --grid (repeatable), --budget 128,
 * --decode-tokens 64, --repeats 2, --threads 2, --llama-threads 1,2, --model-dir DIR, --python PY, --quantize BIN,
 * --cokv-profile FILE, --out FILE (raw results as JSON, rewritten after every (model, prompt)), --report A.json,B.json (only
 * print the tables of saved runs, merged), --no-build (skip `npm run build`).
 * Needs `node-llama-cpp`, which `npm run bench:llamacpp` installs on demand (--no-save) rather than as a
 * devDependency: with it in package.json, `npm ci` fails here (EUSAGE, lock file out of sync: the registry this
 * project builds from has node-llama-cpp's Linux binary packages but not its macOS/Windows optional ones, checked
 * 2026-11-28), and every `npm ci` would download ~670 MB of prebuilt Linux binaries that only this benchmark uses.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readGgufHeader } from '../src/model/loaders/gguf.js';
import { tokenizerFromGguf } from '../src/model/tokenizer/gguf-tokenizer.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import { peakRssBytes } from '../src/memory.js';
import { machineLine, markdownTable } from './common.js';

/** Held in a variable so TypeScript does not try to resolve the (optional) package. */
const LLAMA_PKG = 'node-llama-cpp';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SHARED = path.resolve(ROOT, '../shared');
const ASSETS = `${SHARED}/assets`;
const SMOL_TOKENIZER = `${ASSETS}/tokenizers/SmolLM2-135M-Instruct/tokenizer.json`;
const MAKE_SHAPE = `${SHARED}/tools/make_shape_gguf.py`;
const TINY_DIR = `${ASSETS}/models/cokv-retrieval-tiny`;
const ESSAYS = `${ASSETS}/data/needle/PaulGrahamEssays`;
const RETRIEVAL_DEV = `${ASSETS}/data/retrieval-dev.jsonl`;

const args = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const argAll = (name: string): string[] => args.flatMap((a, i) => (a === name && i + 1 < args.length ? [args[i + 1]] : []));
const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter((x) => x.length > 0);

// ---------------------------------------------------------------------------------------------------------------
// Child mode: one llama.cpp generation, timed from inside.
// ---------------------------------------------------------------------------------------------------------------

interface ChildJob {
  modelPath: string;
  ids: number[];
  promptText: string;
  maxTokens: number;
  contextSize: number;
  threads: number;
}

interface ChildResult {
  tokens: number[];
  stopReason: 'eos' | 'length';
  loadMs: number;
  prefillMs: number;
  decodeMs: number;
  /** llama.cpp's own tokenization of the prompt text (BOS added by the model's rule) equals the ids evaluated. */
  tokenizeAgrees: boolean;
  llamaPromptTokens: number;
  peakRssBytes: number;
}

async function child(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as ChildJob;
  // Untyped on purpose: the package is installed on demand, so type-checking must not need it.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const { getLlama, LlamaLogLevel } = (await import(LLAMA_PKG)) as any;
  const t0 = performance.now();
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: job.modelPath });
  const ctx = await model.createContext({ contextSize: job.contextSize, threads: job.threads });
  const seq = ctx.getSequence();
  const t1 = performance.now();
  const own = model.tokenize(job.promptText);
  const bos = model.tokens.bos;
  const llamaIds = model.tokens.shouldPrependBosToken && bos !== null ? [bos, ...own] : [...own];
  const tokenizeAgrees = llamaIds.length === job.ids.length && llamaIds.every((t, i) => t === job.ids[i]);
  const tokens: number[] = [];
  let stopReason: ChildResult['stopReason'] = 'length';
  const t1b = performance.now();
  let t2 = t1b;
  if (job.maxTokens > 0) {
    for await (const t of seq.evaluate(job.ids as Parameters<typeof seq.evaluate>[0], { temperature: 0 })) {
      if (tokens.length === 0) t2 = performance.now();
      if (model.isEogToken(t)) { stopReason = 'eos'; break; }
      tokens.push(t);
      if (tokens.length >= job.maxTokens) break;
    }
  }
  const t3 = performance.now();
  const res: ChildResult = {
    tokens, stopReason, loadMs: t1 - t0, prefillMs: t2 - t1b, decodeMs: t3 - t2, tokenizeAgrees, llamaPromptTokens: llamaIds.length,
    peakRssBytes: peakRssBytes(),
  };
  process.stdout.write(JSON.stringify(res) + '\n');
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
}

// ---------------------------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------------------------

const SHAPES: Record<string, string> = {
  'llama32-1b': 'Llama-3.2-1B shape',
  'qwen25-05b': 'Qwen2.5-0.5B shape',
  'smollm2-135m': 'SmolLM2-135M shape',
};
const QUANT_TYPES: Record<string, string> = { q4_k_m: 'Q4_K_M', q8_0: 'Q8_0' };
const DEFAULT_MODELS = ['llama32-1b-q4_k_m', 'llama32-1b-q8_0', 'qwen25-05b-q4_k_m', 'qwen25-05b-q8_0', 'smollm2-135m-q8_0', 'smollm2-135m-q4_k_m'];

const modelDir = arg('--model-dir') ?? path.join(os.tmpdir(), 'cokv-bench-models');
const python = arg('--python') ?? (fs.existsSync('/tmp/venv/bin/python') ? '/tmp/venv/bin/python' : 'python3');
const quantizer = arg('--quantize') ?? '/tmp/llama.cpp/build/bin/llama-quantize';
const GGUF_PY = '/tmp/llama.cpp/gguf-py';

interface ModelInfo {
  key: string;
  label: string;
  weights: string;
  file: string;
  contextLength: number;
  tok: Tokenizer;
  /** Prompts are cached per tokenizer. */
  tokKey: string;
}

function parseKey(key: string): { shape: string; type: string } | undefined {
  const m = /^(.*)-(q4_k_m|q8_0|f16)$/.exec(key);
  return m && SHAPES[m[1]] ? { shape: m[1], type: m[2] } : undefined;
}

let pythonProblem: string | null | undefined;
/** Why python cannot run make_shape_gguf.py here, or null when it can. */
function pythonMissing(): string | null {
  if (pythonProblem !== undefined) return pythonProblem;
  if (!fs.existsSync(MAKE_SHAPE)) return (pythonProblem = `${MAKE_SHAPE} not found`);
  const r = spawnSync(python, ['-c', 'import numpy, gguf'], { env: pyEnv(), encoding: 'utf8' });
  pythonProblem = r.status === 0 ? null : `${python} cannot import numpy and gguf (${(r.error?.message ?? r.stderr ?? '').trim().split('\n').pop()})`;
  return pythonProblem;
}

function pyEnv(): NodeJS.ProcessEnv {
  const extra = fs.existsSync(GGUF_PY) ? GGUF_PY : '';
  return { ...process.env, PYTHONPATH: [extra, process.env.PYTHONPATH ?? ''].filter((x) => x).join(path.delimiter) };
}

/** The shape file for `key`, made (and cached) when missing; or a reason it cannot be. */
function ensureShapeFile(key: string): { file: string } | { missing: string } {
  const file = path.join(modelDir, `${key}.gguf`);
  if (fs.existsSync(file)) return { file };
  const k = parseKey(key)!;
  fs.mkdirSync(modelDir, { recursive: true });
  const f16 = path.join(modelDir, `${k.shape}-f16.gguf`);
  if (!fs.existsSync(f16)) {
    const why = pythonMissing();
    if (why) return { missing: `${f16} (to make it: ${why})` };
    console.error(`making ${f16} (random weights, ${SHAPES[k.shape]}) ...`);
    const r = spawnSync(python, [MAKE_SHAPE, SMOL_TOKENIZER, `${f16}.tmp`, k.shape], { env: pyEnv(), encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) return { missing: `${f16} (make_shape_gguf.py failed: ${(r.stderr ?? '').trim().split('\n').pop()})` };
    fs.renameSync(`${f16}.tmp`, f16);
  }
  if (k.type === 'f16') return { file };
  if (!fs.existsSync(quantizer)) return { missing: `${file} (to make it: llama-quantize not found at ${quantizer}; see ../shared/docs/llamacpp-tools.md, or pass --quantize BIN)` };
  console.error(`making ${file} (llama-quantize ${QUANT_TYPES[k.type]}) ...`);
  const r = spawnSync(quantizer, [f16, `${file}.tmp`, QUANT_TYPES[k.type]], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) return { missing: `${file} (llama-quantize failed: ${(r.stderr ?? '').trim().split('\n').pop()})` };
  fs.renameSync(`${file}.tmp`, file);
  return { file };
}

/** Tensor types of a GGUF, e.g. "Q4_K 16, Q5_0 166, …" (K-quants fall back per tensor where rows are not a multiple of 256). */
function tensorTypes(file: string): string {
  const h = readGgufHeader(file);
  const counts = new Map<string, number>();
  for (const t of h.tensors) {
    const name = String(t.dtype).toUpperCase();
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts].filter(([n]) => n !== 'F32').map(([n, c]) => `${n} ×${c}`).join(', ');
}

const modelCache = new Map<string, ModelInfo | null>();
function loadModelInfo(key: string): ModelInfo | null {
  if (modelCache.has(key)) return modelCache.get(key)!;
  let info: ModelInfo | null = null;
  const tiny = /^tiny-(q8_0|f32)$/.exec(key);
  const shape = parseKey(key);
  if (tiny) {
    const file = `${TINY_DIR}/cokv-retrieval-tiny-${tiny[1]}.gguf`;
    if (!fs.existsSync(file)) console.error(`skipping ${key}: ${file} is missing`);
    else {
      const h = readGgufHeader(file);
      info = { key, label: 'cokv-retrieval-tiny', weights: tiny[1].toUpperCase(), file, contextLength: 2048, tok: tokenizerFromGguf(h.metadata, key), tokKey: 'tiny' };
    }
  } else if (shape) {
    const r = ensureShapeFile(key);
    if ('missing' in r) console.error(`skipping ${key}: missing ${r.missing}`);
    else {
      const h = readGgufHeader(r.file);
      const ctx = Number(h.metadata.get('llama.context_length') ?? 0);
      info = { key, label: SHAPES[shape.shape], weights: shape.type.toUpperCase(), file: r.file, contextLength: ctx,
        tok: tokenizerFromGguf(h.metadata, key), tokKey: 'smollm2' };
    }
  } else {
    throw new Error(`unknown model ${key}: use <shape>-<type> with shape ${Object.keys(SHAPES).join(' | ')} and type q4_k_m | q8_0 | f16, or tiny-q8_0 / tiny-f32`);
  }
  modelCache.set(key, info);
  return info;
}

// ---------------------------------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------------------------------

let essayText: string | undefined;
function essays(): string {
  essayText ??= fs.readdirSync(ESSAYS).filter((f) => f.endsWith('.txt')).sort()
    .map((f) => fs.readFileSync(path.join(ESSAYS, f), 'utf8').trim()).join('\n\n');
  return essayText;
}

/** The longest essay prefix whose encoding (with the tokenizer's default specials) has at most `n` tokens. */
function promptOf(tok: Tokenizer, n: number): { text: string; ids: number[] } {
  const all = essays();
  let hi = Math.min(all.length, n * 6);
  while (tok.encode(all.slice(0, hi)).length <= n) {
    if (hi === all.length) throw new Error(`essay text has fewer than ${n + 1} tokens`);
    hi = Math.min(all.length, Math.ceil(hi * 1.25));
  }
  let lo = Math.floor(hi / 1.25) - 1; // count(prefix(lo)) <= n < count(prefix(hi))
  while (lo > 1 && tok.encode(all.slice(0, lo)).length > n) lo = Math.floor(lo / 1.25);
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (tok.encode(all.slice(0, mid)).length <= n) lo = mid; else hi = mid;
  }
  const text = all.slice(0, lo);
  return { text, ids: tok.encode(text) };
}

// ---------------------------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------------------------

interface Run {
  wallMs: number;
  tokens: number[];
  prefillTokS: number;
  decodeTokS: number;
  peakRssBytes: number;
  backend?: string;
  kvDtype?: string;
  extra?: ChildResult;
}

const threads = Number(arg('--threads') ?? 2);
const llamaThreads = list(arg('--llama-threads') ?? '1,2').map(Number).filter((x, i, a) => a.indexOf(x) === i);
const budget = Number(arg('--budget') ?? 128);
const decodeTokens = Number(arg('--decode-tokens') ?? 64);

function cokvRun(model: string, promptFile: string, press: string[]): Run {
  const argv = [path.join(ROOT, 'bin/cokv.js'), 'generate', '--model', model, '--prompt-file', promptFile,
    '--max-tokens', String(decodeTokens + 1), '--temperature', '0', '--json', ...press];
  const t0 = performance.now();
  const r = spawnSync(process.execPath, argv, { env: { ...process.env, COKV_THREADS: String(threads) }, encoding: 'utf8', maxBuffer: 1 << 26 });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`cokv generate failed (${r.status ?? r.signal}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    tokens: number[];
    stats: { promptTokens: number; prefillMs: number; decodeTokensPerSecond: number; peakRssBytes: number; backend?: string; kvDtype?: string };
  };
  return {
    wallMs, tokens: j.tokens, prefillTokS: (j.stats.promptTokens * 1000) / j.stats.prefillMs, decodeTokS: j.stats.decodeTokensPerSecond,
    peakRssBytes: j.stats.peakRssBytes, backend: j.stats.backend, kvDtype: j.stats.kvDtype,
  };
}

function llamaRun(tmp: string, job: ChildJob): Run {
  const jobFile = path.join(tmp, 'job.json');
  fs.writeFileSync(jobFile, JSON.stringify(job));
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', jobFile],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`llama.cpp child failed (${r.status ?? r.signal}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
  const n = res.tokens.length;
  return {
    wallMs, tokens: res.tokens, prefillTokS: (job.ids.length * 1000) / res.prefillMs,
    decodeTokS: n > 1 ? ((n - 1) * 1000) / res.decodeMs : 0, peakRssBytes: res.peakRssBytes, extra: res,
  };
}

interface Group {
  m: ModelInfo;
  promptTokens: number;
  caches: string[];
}

/** One (model, prompt) measured: serializable, so --out keeps it and --report renders saved runs. */
interface GroupRecord {
  model: string;
  label: string;
  weights: string;
  file: string;
  types: string;
  promptTokens: number;
  promptIds: number;
  caches: string[];
  budget: number;
  cokv: Record<string, Run[]>;
  /** Keyed by llama.cpp thread count. */
  llama: Record<string, Run[]>;
  errors: string[];
}

function pressArgs(m: ModelInfo, cache: string): string[] {
  if (cache === 'full') return [];
  if (cache === 'snapkv') return ['--press', 'snapkv', '--budget', String(budget)];
  if (cache === 'cokv') return ['--press', 'cokv', '--budget', String(budget), '--profile', cokvProfile(m)];
  throw new Error(`unknown cache ${cache}: full | snapkv | cokv`);
}

/** A CoKV profile for the model: --cokv-profile, else one cached per model, made by a quick `cokv profile run`. */
function cokvProfile(m: ModelInfo): string {
  const given = arg('--cokv-profile');
  if (given) return given;
  const file = path.join(modelDir, `${m.key}.cokv-profile.json`);
  if (fs.existsSync(file)) return file;
  console.error(`making a quick CoKV profile ${file} (retrieval-dev, 512 tokens, 8 samples, 1 run; random weights: the values only shape the per-head budgets) ...`);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/cokv.js'), 'profile', 'run', '--model', m.file, '--data', RETRIEVAL_DEV,
    '--task', 'retrieval', '--lengths', '512', '--limit', '4', '--samples', '8', '--runs', '1', '--out', `${file}.tmp`, '--quiet'],
  { env: { ...process.env, COKV_THREADS: String(threads) }, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`cokv profile run failed (${r.status ?? r.signal}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
  fs.renameSync(`${file}.tmp`, file);
  return file;
}

const promptCache = new Map<string, { file: string; text: string; ids: number[] }>();
function promptFor(tmp: string, m: ModelInfo, n: number): { file: string; text: string; ids: number[] } {
  const key = `${m.tokKey}:${n}`;
  let p = promptCache.get(key);
  if (!p) {
    const { text, ids } = promptOf(m.tok, n);
    const file = path.join(tmp, `prompt-${m.tokKey}-${n}.txt`);
    fs.writeFileSync(file, text);
    p = { file, text, ids };
    promptCache.set(key, p);
  }
  return p;
}

const loadStr = (): string => os.loadavg().map((x) => x.toFixed(2)).join(' ');

function measure(tmp: string, g: Group, repeats: number): GroupRecord {
  const p = promptFor(tmp, g.m, g.promptTokens);
  const res: GroupRecord = {
    model: g.m.key, label: g.m.label, weights: g.m.weights, file: g.m.file, types: tensorTypes(g.m.file), promptTokens: g.promptTokens,
    promptIds: p.ids.length, caches: g.caches, budget, cokv: Object.fromEntries(g.caches.map((c) => [c, []])),
    llama: Object.fromEntries(llamaThreads.map((t) => [String(t), []])), errors: [],
  };
  const contextSize = Math.min(g.m.contextLength, Math.ceil((p.ids.length + decodeTokens + 8) / 256) * 256);
  const cokvSteps = g.caches.map((c) => () => {
    const r = cokvRun(g.m.file, p.file, pressArgs(g.m, c));
    res.cokv[c].push(r);
    return `cokv ${c} pre ${r.prefillTokS.toFixed(0)} dec ${r.decodeTokS.toFixed(1)} ${(r.peakRssBytes / 2 ** 20).toFixed(0)}M`;
  });
  const llamaSteps = llamaThreads.map((t) => () => {
    const r = llamaRun(tmp, { modelPath: g.m.file, ids: p.ids, promptText: p.text, maxTokens: decodeTokens + 1, contextSize, threads: t });
    res.llama[String(t)].push(r);
    return `llama ${t}t pre ${r.prefillTokS.toFixed(0)} dec ${r.decodeTokS.toFixed(1)} ${(r.peakRssBytes / 2 ** 20).toFixed(0)}M`;
  });
  for (let rep = 0; rep < repeats; rep++) {
    // Alternate which engine goes first, and interleave them: cokv, llama.cpp, cokv, llama.cpp, …
    const a = rep % 2 === 0 ? cokvSteps : llamaSteps, b = rep % 2 === 0 ? llamaSteps : cokvSteps;
    const steps: (() => string)[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i < a.length) steps.push(a[i]);
      if (i < b.length) steps.push(b[i]);
    }
    const parts: string[] = [];
    for (const s of steps) {
      try {
        parts.push(s());
      } catch (e) {
        const msg = (e as Error).message;
        res.errors.push(msg);
        parts.push(`FAILED: ${msg}`);
      }
    }
    console.error(`  ${g.m.key} ${g.promptTokens} rep ${rep + 1}: ${parts.join('; ')}; load ${loadStr()}`);
  }
  if (p.ids.length !== g.promptTokens) console.error(`  note: prompt has ${p.ids.length} tokens`);
  return res;
}

function agreement(a: number[], b: number[]): string {
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  const same = a.length === b.length && k === a.length;
  return same ? `identical (${a.length})` : `first ${k} of ${Math.max(a.length, b.length)} equal`;
}

const best = (rs: Run[], f: (r: Run) => number): number => (rs.length ? Math.max(...rs.map(f)) : NaN);
const fmt = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : '–');
const mib = (b: number): string => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : '–');
/** Shortest whole-process wall time in seconds (NaN where none was recorded). */
function minWallS(rs: Run[]): number {
  const w = rs.map((x) => x.wallMs).filter(Number.isFinite);
  return w.length ? Math.min(...w) / 1000 : NaN;
}

// ---------------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------------

interface Grid { models: string[]; prompts: number[]; caches: string[] }

function parseGrids(): Grid[] {
  const nums = (s: string): number[] => list(s).map((x) => {
    const n = Number(x);
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`prompt length ${x}: give positive integers, e.g. 512,2048`);
    return n;
  });
  const grids = argAll('--grid').map((s) => {
    const parts = s.split(':');
    if (parts.length !== 3) throw new Error(`--grid ${s}: give MODELS:PROMPTS:CACHES, e.g. smollm2-135m-q8_0:8192:full,snapkv`);
    return { models: list(parts[0]), prompts: nums(parts[1]), caches: list(parts[2]) };
  });
  if (grids.length === 0 || args.includes('--models') || args.includes('--prompts') || args.includes('--caches')) {
    grids.unshift({ models: list(arg('--models') ?? DEFAULT_MODELS.join(',')), prompts: nums(arg('--prompts') ?? '512,2048'), caches: list(arg('--caches') ?? 'full') });
  }
  return grids;
}

/** A run's settings and groups, as --out writes them (after every group, so an interrupted run keeps what it measured). */
interface RunFile {
  machine: string;
  startedAt: string;
  load0: number[];
  load1: number[];
  minutes: number;
  threads: number;
  llamaThreads: number[];
  decodeTokens: number;
  repeats: number;
  exactActivations?: string;
  groups: GroupRecord[];
}

function render(files: RunFile[]): string {
  const lt = [...new Set(files.flatMap((f) => f.llamaThreads))].sort((a, b) => a - b);
  const mainRows: (string | number)[][] = [];
  const detailRows: (string | number)[][] = [];
  const verdicts: string[] = [];
  const backends = new Set<string>(), kvDtypes = new Set<string>();
  const out: string[] = [];
  const la = (l: number[]): string => l.map((x) => x.toFixed(2)).join(', ');
  files.forEach((f, i) => {
    out.push(`${files.length > 1 ? `Run ${i + 1}: ` : ''}Machine: ${f.machine}; started ${f.startedAt}, ${f.minutes.toFixed(1)} min; ` +
      `load average (1, 5, 15 min) at start ${la(f.load0)}, at end ${la(f.load1)}; best of ${f.repeats} interleaved runs per engine ` +
      `and thread count; ${f.decodeTokens} decode tokens after the first; cokv COKV_THREADS=${f.threads}` +
      `${f.exactActivations ? `, COKV_EXACT_ACTIVATIONS=${f.exactActivations}` : ''}; llama.cpp at ${f.llamaThreads.join(' and ')} thread(s).`);
  });
  const groups = files.flatMap((f) => f.groups);
  for (const r of groups) {
    const lRuns = lt.map((t) => r.llama[String(t)] ?? []);
    const lPre = lRuns.map((rs) => best(rs, (x) => x.prefillTokS));
    const lDec = lRuns.map((rs) => best(rs, (x) => x.decodeTokS));
    const lRss = Math.max(...lRuns.flat().map((x) => x.peakRssBytes));
    const bestPre = Math.max(...lPre.filter(Number.isFinite)), bestDec = Math.max(...lDec.filter(Number.isFinite));
    const l0 = lRuns.flat().find((x) => x.tokens.length > 0);
    for (const c of r.caches) {
      const runs = r.cokv[c] ?? [];
      for (const x of runs) { if (x.backend) backends.add(x.backend); if (x.kvDtype) kvDtypes.add(x.kvDtype); }
      const cPre = best(runs, (x) => x.prefillTokS), cDec = best(runs, (x) => x.decodeTokS);
      const cRss = runs.length ? Math.max(...runs.map((x) => x.peakRssBytes)) : NaN;
      const cacheLabel = c === 'full' ? 'full' : `${c} B=${r.budget}`;
      mainRows.push([r.label, r.weights, r.promptTokens, cacheLabel,
        fmt(cPre), lPre.map((x) => fmt(x)).join(' / '), fmt(cPre / bestPre, 2),
        fmt(cDec), lDec.map((x) => fmt(x)).join(' / '), fmt(cDec / bestDec, 2),
        `${mib(cRss)} / ${mib(lRss)}`, fmt(cRss / lRss, 2)]);
      detailRows.push([r.model, r.promptTokens, cacheLabel, `${runs.length} / ${lRuns.map((rs) => rs.length).join(' / ')}`,
        fmt(minWallS(runs)), lRuns.map((rs) => fmt(minWallS(rs))).join(' / '),
        runs[0]?.tokens.length && l0 ? `${runs[0].tokens.length} / ${l0.tokens.length}` : '–',
        l0?.extra ? (l0.extra.tokenizeAgrees ? 'yes' : `no (${l0.extra.llamaPromptTokens})`) : '–',
        runs[0]?.tokens.length && l0 ? agreement(runs[0].tokens, l0.tokens) : '–']);
      const name = `${r.label} ${r.weights} ${r.promptTokens} ${cacheLabel}`;
      const met = (ok: boolean): string => (ok ? 'met' : 'NOT met');
      if (c === 'full' && (r.promptTokens === 512 || r.promptTokens === 2048)) {
        verdicts.push(`${name}: decode ${fmt(cDec / bestDec, 2)}× (target ≥ 1.0: ${met(cDec / bestDec >= 1)}), prefill ${fmt(cPre / bestPre, 2)}× (≥ 0.9: ${met(cPre / bestPre >= 0.9)}), ` +
          `peak RSS ${fmt(cRss / lRss, 2)}× (≤ 1.05: ${met(cRss / lRss <= 1.05)})`);
      } else if (c !== 'full' && r.promptTokens >= 32768) {
        verdicts.push(`${name}: decode ${fmt(cDec / bestDec, 2)}× llama.cpp's full-cache decode (target ≥ 5: ${met(cDec / bestDec >= 5)}), peak RSS ${fmt(cRss / lRss, 2)}× (≤ 1.05: ${met(cRss / lRss <= 1.05)})`);
      } else {
        verdicts.push(`${name}: peak RSS ${fmt(cRss / lRss, 2)}× (target ≤ 1.05: ${met(cRss / lRss <= 1.05)})`);
      }
    }
  }
  out.push(`cokv: backend ${[...backends].join('/') || '?'}, KV ${[...kvDtypes].join('/') || '?'}; llama.cpp: node-llama-cpp 3.22.1 CPU build, F16 KV, ` +
    'default batch size, contextSize = prompt + decode + 8 rounded up to 256. Rates from each process\'s own clock (prefill: prompt tokens / ' +
    'time to the first token, compression included; decode: tokens after the first / time after the first); peak RSS = VmHWM, largest of the runs.');
  out.push('');
  out.push(markdownTable(['model', 'weights', 'prompt', 'cokv cache', 'cokv prefill tok/s', `llama.cpp prefill tok/s (${lt.map((t) => `${t}t`).join(' / ')})`,
    'prefill cokv / best', 'cokv decode tok/s', `llama.cpp decode tok/s (${lt.map((t) => `${t}t`).join(' / ')})`, 'decode cokv / best',
    'peak RSS MiB (cokv / llama.cpp)', 'RSS ratio'], mainRows));
  out.push('\nRuns, whole-process wall times (load included), greedy agreement (random weights) and prompt tokenization:\n');
  out.push(markdownTable(['model', 'prompt', 'cokv cache', `runs (cokv / ${lt.map((t) => `${t}t`).join(' / ')})`, 'cokv wall s (min)',
    `llama.cpp wall s (${lt.map((t) => `${t}t`).join(' / ')})`, 'tokens (cokv / llama.cpp)', 'llama.cpp tokenizes the same', 'greedy tokens cokv vs llama.cpp'], detailRows));
  const types = [...new Map(groups.map((g) => [g.model, g.types]))].map(([k, t]) => `${k}: ${t}`);
  out.push(`\nTensor types (besides F32 norms): ${types.join('; ')}.`);
  out.push('\nTargets (issue #13):\n');
  for (const v of verdicts) out.push(`- ${v}`);
  const errs = groups.flatMap((r) => r.errors.map((e) => `${r.model} ${r.promptTokens}: ${e}`));
  if (errs.length) {
    out.push('\nFailed runs:\n');
    for (const e of errs) out.push(`- ${e}`);
  }
  return out.join('\n');
}

async function main(): Promise<void> {
  const reportFiles = arg('--report');
  if (reportFiles) {
    console.log(render(list(reportFiles).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as RunFile)));
    return;
  }
  try {
    await import(LLAMA_PKG);
  } catch (e) {
    console.error(`node-llama-cpp is not installed (npm run bench:llamacpp installs it without saving): ${(e as Error).message}`);
    process.exit(1);
  }
  const grids = parseGrids();
  for (const g of grids) for (const c of g.caches) if (!['full', 'snapkv', 'cokv'].includes(c)) throw new Error(`unknown cache ${c}: full | snapkv | cokv`);
  if (!args.includes('--no-build')) {
    console.error('npm run build ...');
    const b = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8', shell: process.platform === 'win32' });
    if (b.status !== 0) console.error(`warning: npm run build failed (${b.status}; tsc still emits what it can)\n${b.stdout}${b.stderr}`);
  }
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  const repeats = Number(arg('--repeats') ?? 2);

  // Groups: one per (model, prompt), with every cokv cache asked for it, in the order given.
  const groups: Group[] = [];
  for (const grid of grids) {
    for (const key of grid.models) {
      const m = loadModelInfo(key);
      if (!m) continue;
      for (const n of grid.prompts) {
        if (n + decodeTokens + 1 > m.contextLength) {
          console.error(`skipping ${key} at ${n} tokens: prompt + ${decodeTokens + 1} generated > context_length ${m.contextLength}`);
          continue;
        }
        const g = groups.find((x) => x.m.key === key && x.promptTokens === n);
        if (g) for (const c of grid.caches) { if (!g.caches.includes(c)) g.caches.push(c); }
        else groups.push({ m, promptTokens: n, caches: [...grid.caches] });
      }
    }
  }
  if (groups.length === 0) throw new Error('nothing to measure');

  const t0 = Date.now();
  const run: RunFile = {
    machine: machineLine(), startedAt: new Date(t0).toISOString().slice(0, 16).replace('T', ' ') + ' UTC', load0: os.loadavg(), load1: os.loadavg(),
    minutes: 0, threads, llamaThreads, decodeTokens, repeats, exactActivations: process.env.COKV_EXACT_ACTIVATIONS, groups: [],
  };
  const outFile = arg('--out');
  const save = (): void => {
    run.load1 = os.loadavg();
    run.minutes = (Date.now() - t0) / 60000;
    if (outFile) {
      fs.writeFileSync(`${outFile}.tmp`, JSON.stringify(run));
      fs.renameSync(`${outFile}.tmp`, outFile);
    }
  };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-bench-llamacpp-'));
  try {
    for (const g of groups) {
      console.error(`${g.m.key}, ${g.promptTokens}-token prompt, cokv caches ${g.caches.join(', ')}, llama.cpp full at ${llamaThreads.join(', ')} thread(s) ...`);
      run.groups.push(measure(tmp, g, repeats));
      save();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  save();
  console.log(render([run]));
}

if (args[0] === '--child') await child(args[1]);
else await main();
