/**
 * `npm run bench:llamacpp` (issue #7): cokv's CLI against llama.cpp (through node-llama-cpp, CPU only) on the same
 * GGUF files and prompt tokens, measured the way a user sees it — whole processes, start-up included.
 *
 * Models: a random-weight GGUF with SmolLM2-135M's exact shapes and its real tokenizer (gpt2 BPE metadata from
 * tokenizer.json, pre-tokenizer `smollm`) in Q8_0 / F16 / F32, written to a temp dir; and the cokv-retrieval-tiny
 * GGUFs. Prompts: Paul Graham essay text trimmed to exactly N tokens of the model's tokenizer (512 and 2048; and 8192
 * for the SmolLM2-shaped Q8_0 file, where cokv runs `--press snapkv --budget 128` against llama.cpp's full cache).
 * retrieval-tiny was trained on up to 2048 tokens: its long prompt has 2047 (cokv requires room for one generated
 * token inside the trained context), and both engines then generate past it.
 *
 * Decode rate = (n65 − n1) / (wall(65 tokens) − wall(1 token)) with n the tokens actually generated (64 unless EOS
 * came first), wall = the whole process: `node bin/cokv.js generate --json` for cokv, and a child Node process that
 * loads the model in node-llama-cpp, evaluates the same prompt ids and samples greedily, for llama.cpp. Each wall
 * time is the minimum over --repeats runs. Prefill tok/s comes from cokv's `--json` stats (and, for llama.cpp, from
 * the child's own clock). The in-process decode rates (cokv's stats; the child's clock after the first token) are
 * printed as a cross-check. Peak RSS = the process's maximum resident set (cokv's `--json` stats; the child's
 * VmHWM, see src/memory.ts), from the 65-token runs.
 *
 * Options: --prompts 512,2048 (prompt lengths of the full-cache rows), --repeats N (those runs, default 2), --repeats-long N (8192-token runs, default 1), --threads N
 * (default 2), --dtypes q8_0,f16,f32, --no-long (skip the 8192-token rows), --full-long (add cokv full cache at
 * 8192), --llama-threads 2,1 (llama.cpp thread counts; default: --threads and 1), --no-build (do not run
 * `npm run build` first). Needs `node-llama-cpp`, which `npm run bench:llamacpp` installs on demand (--no-save)
 * rather than as a devDependency: with it in package.json, `npm ci` fails here (EUSAGE, lock file out of sync: the
 * registry this project builds from has node-llama-cpp's Linux binary packages but not its macOS/Windows optional
 * ones, checked 2026-11-28), and every `npm ci` would download ~670 MB of prebuilt Linux binaries (CUDA, Vulkan,
 * ARM) that only this benchmark uses.
 *
 * The SmolLM2-shaped files declare context_length 8320 (not 8192) so that an 8192-token prompt leaves room for
 * 65 generated tokens in both engines; nothing else depends on it (no RoPE scaling).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelConfig } from '../src/model/config.js';
import { readGgufHeader, type GgufValue } from '../src/model/loaders/gguf.js';
import { gv, writeLlamaGguf, type GgufMetaValue, type GgufWriteDType } from '../src/model/loaders/gguf-writer.js';
import { tokenizerFromGguf } from '../src/model/tokenizer/gguf-tokenizer.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import { peakRssBytes } from '../src/memory.js';
import { SMOLLM2_135M, machineLine, markdownTable, median, randomModelWeights } from './common.js';

/** Held in a variable so TypeScript does not try to resolve the (optional) package. */
const LLAMA_PKG = 'node-llama-cpp';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ASSETS = '/work/shared/assets';
const SMOL_TOKENIZER = `${ASSETS}/tokenizers/SmolLM2-135M-Instruct/tokenizer.json`;
const TINY_DIR = `${ASSETS}/models/cokv-retrieval-tiny`;
const ESSAYS = `${ASSETS}/data/needle/PaulGrahamEssays`;

const args = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

// ---------------------------------------------------------------------------------------------------------------
// Child mode: one llama.cpp generation, timed from inside (the parent times the whole process).
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
  let t2 = t1;
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
    tokens, stopReason, loadMs: t1 - t0, prefillMs: t2 - t1, decodeMs: t3 - t2, tokenizeAgrees, llamaPromptTokens: llamaIds.length,
    peakRssBytes: peakRssBytes(),
  };
  process.stdout.write(JSON.stringify(res) + '\n');
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
}

// ---------------------------------------------------------------------------------------------------------------
// Parent mode
// ---------------------------------------------------------------------------------------------------------------

/** tokenizer.ggml.* metadata for SmolLM2's tokenizer.json, as llama.cpp's converter writes a gpt2 BPE vocab. */
function smolTokenizerMeta(): Record<string, GgufMetaValue> {
  const tj = JSON.parse(fs.readFileSync(SMOL_TOKENIZER, 'utf8')) as {
    added_tokens: { id: number; content: string; special: boolean }[];
    model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  };
  const n = SMOLLM2_135M.vocabSize;
  const tokens = new Array<string>(n);
  const types = new Array<number>(n).fill(1); // NORMAL
  for (const [t, id] of Object.entries(tj.model.vocab)) tokens[id] = t;
  for (const a of tj.added_tokens) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? 3 : 4; // CONTROL : USER_DEFINED
  }
  for (let i = 0; i < n; i++) if (tokens[i] === undefined) throw new Error(`tokenizer.json: no token for id ${i}`);
  const merges = tj.model.merges.map((m) => (typeof m === 'string' ? m : m.join(' ')));
  return {
    'tokenizer.ggml.model': gv.str('gpt2'),
    'tokenizer.ggml.pre': gv.str('smollm'),
    'tokenizer.ggml.tokens': gv.arr('string', tokens),
    'tokenizer.ggml.token_type': gv.arr('i32', types),
    'tokenizer.ggml.merges': gv.arr('string', merges),
    'tokenizer.ggml.bos_token_id': gv.u32(1),
    'tokenizer.ggml.eos_token_id': gv.u32(2),
    'tokenizer.ggml.unknown_token_id': gv.u32(0),
    'tokenizer.ggml.padding_token_id': gv.u32(2),
    'tokenizer.ggml.add_bos_token': gv.bool(false),
  };
}

function metaMap(meta: Record<string, GgufMetaValue>): Map<string, GgufValue> {
  const m = new Map<string, GgufValue>();
  for (const [k, v] of Object.entries(meta)) m.set(k, (v.type === 'array' ? [...v.value] : v.value) as GgufValue);
  return m;
}

/** Random SmolLM2-135M-shaped weights under their Hugging Face names. */
function smolHfWeights(c: ModelConfig): Record<string, Float32Array> {
  const w = randomModelWeights(c);
  const d = (x: { data: unknown }): Float32Array => x.data as Float32Array;
  const out: Record<string, Float32Array> = { 'model.embed_tokens.weight': d(w.tokenEmbedding), 'model.norm.weight': w.finalNorm };
  w.layers.forEach((l, i) => {
    const p = `model.layers.${i}.`;
    out[`${p}input_layernorm.weight`] = l.attnNorm;
    out[`${p}self_attn.q_proj.weight`] = d(l.wq);
    out[`${p}self_attn.k_proj.weight`] = d(l.wk);
    out[`${p}self_attn.v_proj.weight`] = d(l.wv);
    out[`${p}self_attn.o_proj.weight`] = d(l.wo);
    out[`${p}post_attention_layernorm.weight`] = l.ffnNorm;
    out[`${p}mlp.gate_proj.weight`] = d(l.wGate);
    out[`${p}mlp.up_proj.weight`] = d(l.wUp);
    out[`${p}mlp.down_proj.weight`] = d(l.wDown);
  });
  return out;
}

let essayText: string | undefined;
function essays(): string {
  essayText ??= fs.readdirSync(ESSAYS).filter((f) => f.endsWith('.txt')).sort()
    .map((f) => fs.readFileSync(path.join(ESSAYS, f), 'utf8').trim()).join('\n\n');
  return essayText;
}

/** The longest essay prefix whose encoding (with the tokenizer's default specials) has at most `n` tokens. */
function promptOf(tok: Tokenizer, n: number): { text: string; ids: number[] } {
  const all = essays();
  let hi = Math.min(all.length, n * 8);
  while (tok.encode(all.slice(0, hi)).length <= n) {
    if (hi === all.length) throw new Error(`essay text has fewer than ${n + 1} tokens`);
    hi = Math.min(all.length, hi * 2);
  }
  let lo = 1; // count(prefix(lo)) <= n < count(prefix(hi))
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (tok.encode(all.slice(0, mid)).length <= n) lo = mid; else hi = mid;
  }
  const text = all.slice(0, lo);
  return { text, ids: tok.encode(text) };
}

interface Run {
  wallMs: number;
  tokens: number[];
  prefillTokS: number;
  /** In-process decode rate (tokens after the first per second). */
  decodeTokS: number;
  peakRssBytes: number;
  extra?: ChildResult;
}

const threads = Number(arg('--threads') ?? 2);

function cokvRun(model: string, promptFile: string, maxTokens: number, press: string[]): Run {
  const argv = [path.join(ROOT, 'bin/cokv.js'), 'generate', '--model', model, '--prompt-file', promptFile,
    '--max-tokens', String(maxTokens), '--temperature', '0', '--json', ...press];
  const t0 = performance.now();
  const r = spawnSync(process.execPath, argv, { env: { ...process.env, COKV_THREADS: String(threads) }, encoding: 'utf8', maxBuffer: 1 << 26 });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`cokv generate failed (${r.status}): ${r.stderr}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    tokens: number[]; stats: { promptTokens: number; prefillMs: number; decodeTokensPerSecond: number; peakRssBytes: number };
  };
  return {
    wallMs, tokens: j.tokens, prefillTokS: (j.stats.promptTokens * 1000) / j.stats.prefillMs, decodeTokS: j.stats.decodeTokensPerSecond,
    peakRssBytes: j.stats.peakRssBytes,
  };
}

function llamaRun(tmp: string, job: ChildJob): Run {
  const jobFile = path.join(tmp, 'job.json');
  fs.writeFileSync(jobFile, JSON.stringify(job));
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', jobFile],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`llama.cpp child failed (${r.status}): ${r.stderr}`);
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
  const n = res.tokens.length;
  return {
    wallMs, tokens: res.tokens, prefillTokS: (job.ids.length * 1000) / res.prefillMs,
    decodeTokS: n > 1 ? ((n - 1) * 1000) / res.decodeMs : 0, peakRssBytes: res.peakRssBytes, extra: res,
  };
}

interface Case {
  model: string;
  weights: string;
  file: string;
  tok: Tokenizer;
  promptTokens: number;
  press: string[];
  cacheLabel: string;
  contextSize: number;
  repeats: number;
}

interface Measured {
  c: Case;
  cokv1: Run[];
  cokv65: Run[];
  /** Per llama.cpp thread count: runs with 1 and with 65 tokens. */
  llama: Map<number, { r1: Run[]; r65: Run[] }>;
}

/** llama.cpp thread counts: `threads` (the comparison) and, by default, 1 as well (see the note printed). */
const llamaThreads = (arg('--llama-threads') ?? `${threads},1`).split(',').map(Number).filter((x, i, a) => a.indexOf(x) === i);

const minWall = (rs: Run[]): Run => rs.reduce((a, b) => (b.wallMs < a.wallMs ? b : a));
/** (n65 − n1) / (wall65 − wall1), minimum walls. */
function subtractRate(r1: Run[], r65: Run[]): number {
  const a = minWall(r1), b = minWall(r65);
  return ((b.tokens.length - a.tokens.length) * 1000) / (b.wallMs - a.wallMs);
}

function measure(tmp: string, c: Case, promptCache: Map<string, { file: string; text: string; ids: number[] }>): Measured {
  const key = `${c.model}:${c.promptTokens}`;
  let p = promptCache.get(key);
  if (!p) {
    const { text, ids } = promptOf(c.tok, c.promptTokens);
    const file = path.join(tmp, `prompt-${promptCache.size}.txt`);
    fs.writeFileSync(file, text);
    p = { file, text, ids };
    promptCache.set(key, p);
  }
  const m: Measured = { c, cokv1: [], cokv65: [], llama: new Map(llamaThreads.map((t) => [t, { r1: [], r65: [] }])) };
  for (let r = 0; r < c.repeats; r++) {
    m.cokv1.push(cokvRun(c.file, p.file, 1, c.press));
    m.cokv65.push(cokvRun(c.file, p.file, 65, c.press));
    let line = `  ${c.model} ${c.weights} ${c.promptTokens} ${c.cacheLabel} rep ${r + 1}: cokv ${m.cokv1[r].wallMs.toFixed(0)}/${m.cokv65[r].wallMs.toFixed(0)} ms`;
    for (const [t, l] of m.llama) {
      const job = (maxTokens: number): ChildJob => ({ modelPath: c.file, ids: p.ids, promptText: p.text, maxTokens, contextSize: c.contextSize, threads: t });
      l.r1.push(llamaRun(tmp, job(1)));
      l.r65.push(llamaRun(tmp, job(65)));
      line += `, llama.cpp ${t}t ${l.r1[r].wallMs.toFixed(0)}/${l.r65[r].wallMs.toFixed(0)} ms`;
    }
    console.error(`${line} (1/65 tokens); load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  }
  if (p.ids.length !== c.promptTokens) console.error(`  note: prompt has ${p.ids.length} tokens`);
  return m;
}

function agreement(a: number[], b: number[]): string {
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  const same = a.length === b.length && k === a.length;
  return same ? `identical (${a.length} tokens)` : `first ${k} of ${Math.max(a.length, b.length)} tokens equal`;
}

async function main(): Promise<void> {
  try {
    await import(LLAMA_PKG);
  } catch (e) {
    console.error(`node-llama-cpp is not installed (npm run bench:llamacpp installs it without saving): ${(e as Error).message}`);
    process.exit(1);
  }
  if (!args.includes('--no-build')) {
    console.error('npm run build ...');
    const b = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8', shell: process.platform === 'win32' });
    if (b.status !== 0) console.error(`warning: npm run build failed (${b.status}); using the existing dist/\n${b.stdout}${b.stderr}`);
  }
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  const load0 = os.loadavg();
  const repeats = Number(arg('--repeats') ?? 2);
  const promptLengths = (arg('--prompts') ?? '512,2048').split(',').map(Number);
  if (promptLengths.some((n) => !(Number.isInteger(n) && n > 0 && n <= 8192))) throw new Error('--prompts: give prompt lengths 1..8192, e.g. 512,2048');
  const repeatsLong = Number(arg('--repeats-long') ?? 1);
  const dtypes = (arg('--dtypes') ?? 'q8_0,f16,f32').split(',') as GgufWriteDType[];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-bench-llamacpp-'));
  try {
    // ---- models ----
    const smolConfig: ModelConfig = { ...SMOLLM2_135M, contextLength: 8320 };
    const smolMeta = smolTokenizerMeta();
    const smolTok = tokenizerFromGguf(metaMap(smolMeta), 'SmolLM2 tokenizer');
    console.error('writing random SmolLM2-135M-shaped GGUFs ...');
    const hf = smolHfWeights(smolConfig);
    const smolFiles = new Map<GgufWriteDType, string>();
    for (const dt of dtypes) {
      const f = path.join(tmp, `smollm2-135m-random-${dt}.gguf`);
      writeLlamaGguf(f, { config: smolConfig, weights: hf, tokenizer: smolMeta, dtype: dt, name: 'SmolLM2-135M-shape-random' });
      smolFiles.set(dt, f);
    }
    const tinyTok = tokenizerFromGguf(readGgufHeader(`${TINY_DIR}/cokv-retrieval-tiny-q8_0.gguf`).metadata, 'retrieval-tiny');

    const cases: Case[] = [];
    // llama.cpp's context holds the prompt and the 65 generated tokens.
    const contextFor = (n: number): number => Math.ceil((n + 72) / 256) * 256;
    for (const n of promptLengths) {
      for (const dt of ['q8_0', 'f32'] as const) {
        // Its trained context is 2048 and cokv needs the prompt to leave room for one token: 2048 → 2047.
        const nTiny = Math.min(n, 2047);
        cases.push({ model: 'cokv-retrieval-tiny', weights: dt.toUpperCase(), file: `${TINY_DIR}/cokv-retrieval-tiny-${dt}.gguf`, tok: tinyTok,
          promptTokens: nTiny, press: [], cacheLabel: 'full', contextSize: contextFor(nTiny), repeats });
      }
      for (const dt of dtypes) {
        cases.push({ model: 'SmolLM2-135M shape (random)', weights: dt.toUpperCase(), file: smolFiles.get(dt)!, tok: smolTok,
          promptTokens: n, press: [], cacheLabel: 'full', contextSize: contextFor(n), repeats });
      }
    }
    if (!args.includes('--no-long') && smolFiles.has('q8_0')) {
      const base = { model: 'SmolLM2-135M shape (random)', weights: 'Q8_0', file: smolFiles.get('q8_0')!, tok: smolTok, promptTokens: 8192, contextSize: 8320, repeats: repeatsLong };
      if (args.includes('--full-long')) cases.push({ ...base, press: [], cacheLabel: 'full' });
      cases.push({ ...base, press: ['--press', 'snapkv', '--budget', '128'], cacheLabel: 'snapkv B=128' });
    }

    // ---- runs ----
    const promptCache = new Map<string, { file: string; text: string; ids: number[] }>();
    const results: Measured[] = [];
    for (const c of cases) {
      console.error(`${c.model} ${c.weights}, ${c.promptTokens}-token prompt, cokv cache ${c.cacheLabel} ...`);
      results.push(measure(tmp, c, promptCache));
    }
    const load1 = os.loadavg();

    // ---- report ----
    const lt = llamaThreads;
    const rows = results.map(({ c, cokv1, cokv65, llama }) => {
      const cd = subtractRate(cokv1, cokv65);
      const lds = lt.map((t) => subtractRate(llama.get(t)!.r1, llama.get(t)!.r65));
      const pre = median([...cokv1, ...cokv65].map((r) => r.prefillTokS));
      const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
      return [c.model, c.weights, c.promptTokens, c.cacheLabel === 'full' ? 'full / full' : `${c.cacheLabel} / full`,
        pre.toFixed(1), cd.toFixed(1), ...lds.map((x) => x.toFixed(1)), (cd / lds[0]).toFixed(2), (cd / Math.max(...lds)).toFixed(2),
        `${mib(Math.max(...cokv65.map((r) => r.peakRssBytes)))} / ${mib(Math.max(...llama.get(lt[0])!.r65.map((r) => r.peakRssBytes)))}`];
    });
    const crossRows = results.map(({ c, cokv65, llama }) => {
      const cd = median(cokv65.map((r) => r.decodeTokS));
      const lds = lt.map((t) => median(llama.get(t)!.r65.map((r) => r.decodeTokS)));
      const lps = lt.map((t) => median(llama.get(t)!.r65.map((r) => r.prefillTokS)));
      return [c.model, c.weights, c.promptTokens, c.cacheLabel, cd.toFixed(1), ...lds.map((x) => x.toFixed(1)), (cd / lds[0]).toFixed(2),
        ...lps.map((x) => x.toFixed(1)), `${minWall(cokv65).tokens.length} / ${lt.map((t) => minWall(llama.get(t)!.r65).tokens.length).join(' / ')}`];
    });
    const agreeRows = results.map(({ c, cokv65, llama }) => {
      const l65 = llama.get(lt[0])!.r65[0];
      return [c.model, c.weights, c.promptTokens, c.cacheLabel,
        l65.extra!.tokenizeAgrees ? 'yes' : `no (llama.cpp: ${l65.extra!.llamaPromptTokens} tokens)`,
        agreement(cokv65[0].tokens, l65.tokens)];
    });

    const la = (l: number[]): string => l.map((x) => x.toFixed(2)).join(', ');
    const out: string[] = [];
    out.push(`Machine: ${machineLine()}; threads ${threads} (cokv: COKV_THREADS, native backend as \`--backend auto\` picks it; llama.cpp: node-llama-cpp, CPU build, contextSize = prompt + 72 rounded up to 256, 8192→8320).`);
    out.push(`Load average (1, 5, 15 min) at start: ${la(load0)}; at end: ${la(load1)}.`);
    out.push(`Wall times: minimum over ${repeats} runs (${promptLengths.join(', ')}-token prompts) / ${repeatsLong} (8192-token prompts).`);
    if (lt.length > 1) {
      out.push(`llama.cpp also runs at ${lt.slice(1).join(', ')} thread(s): its ggml thread pool spin-waits at every op barrier, so on a shared ` +
        'machine one descheduled thread stalls the other; one thread avoids that and shows what llama.cpp reaches without it.');
    }
    out.push('');
    out.push(markdownTable(['model', 'weights', 'prompt tokens', 'cache (cokv / llama.cpp)', 'cokv prefill tok/s', `cokv decode tok/s (${threads}t)`,
      ...lt.map((t) => `llama.cpp decode tok/s (${t}t)`), `cokv / llama.cpp ${lt[0]}t`, 'cokv / best llama.cpp', `peak RSS MiB (cokv / llama.cpp ${lt[0]}t)`], rows));
    out.push('\nCross-check, rates from inside each process (cokv `--json` stats; the child\'s clock after the first token):\n');
    out.push(markdownTable(['model', 'weights', 'prompt tokens', 'cokv cache', 'cokv decode tok/s', ...lt.map((t) => `llama.cpp decode tok/s (${t}t)`),
      `ratio (${lt[0]}t)`, ...lt.map((t) => `llama.cpp prefill tok/s (${t}t)`), `tokens generated (cokv / ${lt.map((t) => `llama.cpp ${t}t`).join(' / ')})`], crossRows));
    out.push('\nGreedy agreement (65 tokens, temperature 0) and prompt tokenization:\n');
    out.push(markdownTable(['model', 'weights', 'prompt tokens', 'cokv cache', 'llama.cpp tokenizes the prompt the same', 'greedy tokens cokv vs llama.cpp'], agreeRows));
    console.log(out.join('\n'));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (args[0] === '--child') await child(args[1]);
else await main();
