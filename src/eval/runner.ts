/**
 * The evaluation runner: every press × budget on a dataset, with LongBench's protocol, one directory per run
 * (`dataset__model__press__budget/` with run.json, predictions.jsonl and metrics.json). run.json records the
 * run's settings and their hash (run-settings.ts); a rerun with the same settings skips finished runs and resumes
 * an interrupted one from its predictions file (each line is appended as soon as it is scored, and every reused
 * line and metrics file is validated first). A folder holding other settings — or none, from an older cokv — is
 * refused, or replaced with `overwrite`; it is never answered with its stored numbers.
 *
 * Over 500 lines on purpose: run settings, resume validation, sharding and the item loop are one protocol over one folder layout; prompts come from prompts.ts, settings hashes from run-settings.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError, systemErrorLine } from '../errors.js';
import { lockOutput, writeFileAtomic, type FileLock } from '../util/files.js';
import type { CokvModel } from '../engine.js';
import type { KvDType } from '../cache/ragged.js';
import { DEFAULT_PREFILL_CHUNK } from '../model/forward.js';
import { checkPrefillEvict, DEFAULT_KV_DTYPE, Sequence } from '../session/sequence.js';
import type { PressOptions } from '../press/options.js';
import { createPress, resolvePress } from '../press/registry.js';
import { kvScopeLabel } from '../press/scope.js';
import { continuationIds, tokenF1 } from '../game/samples.js';
import { datasetInfo, loadEvalItems, splitItems, type DatasetInfo } from './datasets.js';
import { useChatTemplate } from './longbench.js';
import { buildPrompt, requireContextSplit } from './prompts.js';
import { scoreSample } from './metrics.js';
import type { EvalItem } from './retrieval.js';
import type { JsonlOptions } from './jsonl.js';
import { fileDigest, modelDigest, pressSettings, RUN_SETTINGS_VERSION, settingsDiff, settingsHash } from './run-settings.js';

export type Protocol = 'question-aware' | 'context-only';

export interface EvalOptions {
  dataset: string;
  /** A jsonl file, or a folder holding `<dataset>.jsonl`. */
  data: string;
  presses: string[];
  budgets: number[];
  ratios?: number[];
  pressOptions: Omit<PressOptions, 'budget' | 'ratio'>;
  limit?: number;
  split: 'test' | 'validation' | 'all';
  splitSeed: number;
  /** Keep items whose sub-task is listed (retrieval suite). */
  subset?: string[];
  /** Keep items whose nominal length is listed. */
  lengths?: number[];
  /** LongBench middle truncation (default 8000, clipped to the model's context). */
  maxLength?: number;
  /** Wrap LongBench prompts in the model's chat template (never for trec, triviaqa, samsum, lsht, lcc, repobench-p). */
  chat?: boolean;
  protocol: Protocol;
  /** `loglik`: score = mean log-prob of the first `loglikTokens` reference tokens, plus greedy agreement. */
  metric?: 'default' | 'loglik';
  loglikTokens?: number;
  /** KV storage type of every run (default f16; run folders of other types than f32 end in `__<type>`). */
  kvDtype?: KvDType;
  /**
   * The bounded prefill (`--prefill-evict`): each press run prefills its items itself, compressing after every
   * chunk, instead of compressing a copy of one shared full prefill (the exact mode). Recorded in the settings;
   * its folders end in `__evict`. The full-cache run is the same in both modes.
   */
  prefillEvict?: boolean;
  out: string;
  /**
   * Do only part `index` of `count` of the work (`cokv eval --shard i/k`): the (run, item) pairs in item-major
   * order are cut into `count` contiguous blocks, and this process scores block `index` into its own `out`
   * (predictions and a shard.json per run folder, no metrics.json); `mergeEvalShards` joins the shards' folders
   * into the results one unsharded run gives. runEval returns no metrics for a shard.
   */
  shard?: { index: number; count: number };
  /** Replace run folders that hold results for other settings (default: refuse them). */
  overwrite?: boolean;
  /** Where warnings go (re-done prediction lines, recomputed metrics); default one line on stderr. */
  warn?: (message: string) => void;
  jsonl?: JsonlOptions;
  onProgress?: (runName: string, done: number, total: number) => void;
}

/** What a run's metrics.json holds; every results reader turns it into a `RunRecord` (src/results/record.ts). */
export interface RunMetrics {
  dataset: string;
  model: string;
  modelPath: string;
  press: string;
  budget: number | null;
  ratio?: number;
  protocol: Protocol;
  metric: string;
  score: number;
  n: number;
  ci95: [number, number];
  agreement?: number;
  /**
   * Mean K+V bytes per sample of the budgeted (full-attention) layers after compression, and in a full cache;
   * sliding layers hold their window either way and are not counted (see `kvScope`).
   */
  keptKvBytes: number;
  fullKvBytes: number;
  /**
   * What keptKvBytes / fullKvBytes cover when the model has sliding layers, e.g. "KV of 1 full-attention layer of 6;
   * sliding layers hold their 512-token window"; absent when every layer is budgeted.
   */
  kvScope?: string;
  settings: Record<string, unknown>;
  /** Hash of everything the run was computed with (the folder's run.json holds the settings themselves). */
  settingsHash?: string;
  timings: { prefillMs: number; decodeMsPerToken: number; seconds: number };
  createdAt: string;
}

interface Prediction {
  id: string;
  prediction: string;
  answers: string[];
  score: number;
  promptTokens: number;
  keptKvBytes: number;
  fullKvBytes: number;
  prefillMs: number;
  decodeMsPerToken: number;
  logprob?: number;
  agreement?: number;
}

interface Prepared {
  item: EvalItem;
  ids: number[];
  /** Tokens of the context part (context-only protocol compresses only these). */
  contextTokens?: number;
  maxNew: number;
  stopIds: number[];
  minTokens: number;
  /** Token indices where the prompt's segments start (see `buildPrompt`). */
  boundaries: number[];
}

export function modelName(modelPath: string): string {
  return path.basename(modelPath.replace(/[/\\]+$/, '')).replace(/\.(gguf|bin|safetensors)$/, '');
}

function runName(dataset: string, model: string, press: string, budget: string, protocol: Protocol, kvDtype = 'f32', evict = false): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, '-');
  return [dataset, model, press, budget].map(safe).join('__') + (protocol === 'context-only' ? '__ctx' : '') + (kvDtype === 'f32' ? '' : `__${kvDtype}`) + (evict ? '__evict' : '');
}

/** Resolve the data file for a dataset: the file itself, or `<dir>/<dataset>.jsonl`. */
export function dataFile(data: string, dataset: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(data);
  } catch {
    throw new CokvError(`--data ${data}: no such file or folder`, 'file');
  }
  if (!st.isDirectory()) return data;
  const f = path.join(data, `${dataset}.jsonl`);
  if (!fs.existsSync(f)) throw new CokvError(`--data ${data}: folder has no ${dataset}.jsonl`, 'file');
  return f;
}

/** Items of the requested split and filters. */
export function selectItems(o: EvalOptions): EvalItem[] {
  let items = loadEvalItems(o.dataset, dataFile(o.data, o.dataset), o.jsonl);
  if (o.subset) items = items.filter((it) => it.task !== undefined && o.subset!.includes(it.task));
  if (o.lengths) items = items.filter((it) => it.length !== undefined && o.lengths!.includes(it.length));
  if (o.split !== 'all') items = splitItems(items, o.splitSeed)[o.split];
  if (o.limit !== undefined) items = items.slice(0, o.limit);
  if (items.length === 0) throw new CokvError(`--data ${o.data}: no items left for dataset ${o.dataset} after the split and filters`, 'flag');
  return items;
}

async function prepareItem(model: CokvModel, info: DatasetInfo, item: EvalItem, o: EvalOptions, nl: number[]): Promise<Prepared> {
  const ctx = model.config.contextLength;
  const maxLength = Math.min(o.maxLength ?? 8000, ctx - info.maxNewTokens - 1);
  const p = await buildPrompt(model, o.dataset, item, { maxLength, chat: o.chat, newlineIds: nl });
  if (p.ids.length >= ctx) throw new CokvError(`item ${item.id}: ${p.ids.length} prompt tokens do not fit the context of ${ctx}`, 'format');
  const contextTokens = o.protocol === 'context-only' ? requireContextSplit(p, o.dataset) : undefined;
  return { item, ids: p.ids, contextTokens, maxNew: p.maxNew, stopIds: p.stopIds, minTokens: p.minTokens, boundaries: p.boundaries };
}

/** Mean and normal-approximation 95% interval of `xs`·scale, rounded to `digits` decimals (LongBench: 2 on 0–100). */
function meanCi(xs: number[], scale: number, digits = 2): { mean: number; ci: [number, number] } {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  const h = (1.96 * sd) / Math.sqrt(n);
  const r = (x: number) => Math.round(x * scale * 10 ** digits) / 10 ** digits;
  return { mean: r(mean), ci: [r(mean - h), r(mean + h)] };
}

/** One run's folder and what is known of it. */
interface RunState {
  press: string; budget: number | null; ratio?: number; dir: string; metricsFile: string; predFile: string;
  instance: ReturnType<typeof resolvePress>; done: Map<string, Prediction>; finished?: RunMetrics; seconds: number;
  settings: Record<string, unknown>; hash: string;
  /** A shard's items of this run (undefined: every item), and what its metrics will say besides. */
  assigned?: Set<string>;
  base?: RunBase;
  /** Seconds a resumed shard had spent before. */
  shardSeconds?: number;
  runIndex?: number;
}

const RECORD_FILE = 'run.json';
/** A shard's record in each of its run folders (see {@link EvalOptions.shard}). */
export const SHARD_FILE = 'shard.json';
export const SHARD_SCHEMA = 'cokv-eval-shard/1';

/**
 * Everything of a run's metrics.json but what its predictions give: recorded by each shard, so that a merge
 * writes the very metrics one unsharded run writes.
 */
export interface RunBase {
  dataset: string; model: string; modelPath: string; press: string; budget: number | null; ratio?: number;
  protocol: Protocol; metric: string; loglik: boolean; kvScope?: string; settingsHash: string;
  /** metrics.json's `settings` without `itemIds`. */
  settings: Record<string, unknown>;
  /** Every item of the run, in order. */
  itemIds: string[];
}

/** The record a shard keeps in each run folder. */
export interface ShardRecord {
  schema: string;
  shard: string;
  /** The run's place in the run list (full, then each press × budget, then ratios): merges keep that order. */
  run: number;
  /** This shard's items of the run, in run order. */
  items: string[];
  complete: boolean;
  seconds: number;
  base: RunBase;
}

/** A run's metrics from its base and its predictions, in item order (the unsharded run and merges share it). */
export function runMetrics(b: RunBase, preds: Prediction[], seconds: number): RunMetrics {
  const { mean, ci } = meanCi(preds.map((p) => p.score), b.loglik ? 1 : 100, b.loglik ? 4 : 2);
  return {
    dataset: b.dataset, model: b.model, modelPath: b.modelPath, press: b.press, budget: b.budget, ratio: b.ratio, protocol: b.protocol,
    metric: b.metric, score: mean, n: preds.length, ci95: ci,
    agreement: b.loglik ? meanCi(preds.map((p) => p.agreement ?? 0), 100).mean : undefined,
    keptKvBytes: preds.reduce((a, p) => a + p.keptKvBytes, 0) / preds.length,
    fullKvBytes: preds.reduce((a, p) => a + p.fullKvBytes, 0) / preds.length,
    kvScope: b.kvScope,
    settingsHash: b.settingsHash,
    settings: { ...b.settings, itemIds: preds.map((p) => p.id) },
    timings: {
      prefillMs: preds.reduce((a, p) => a + p.prefillMs, 0) / preds.length,
      decodeMsPerToken: preds.reduce((a, p) => a + p.decodeMsPerToken, 0) / preds.length,
      seconds,
    },
    createdAt: new Date().toISOString(),
  };
}

/** A CokvError for a failed file operation on the results folder, naming the file. */
function outputError(file: string, e: unknown): CokvError {
  if (e instanceof CokvError) return e;
  const err = e as NodeJS.ErrnoException;
  const line = systemErrorLine(err.path ? err : Object.assign(err, { path: file }));
  return new CokvError(`--out ${line ?? `${file}: ${(e as Error).message}`}`, 'file');
}

/** 'none', 'file' (regular), 'dir', or what else the path is. */
function entryKind(p: string): string {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    throw outputError(p, e);
  }
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file';
}

/** The text of a file of a run folder, which must be a regular file when present (undefined when absent). */
function readRunFile(file: string): string | undefined {
  const kind = entryKind(file);
  if (kind === 'none') return undefined;
  if (kind !== 'file') throw new CokvError(`--out ${file}: is ${kind === 'dir' ? 'a folder' : kind}, not a file cokv wrote (remove it)`, 'file');
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw outputError(file, e);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);
const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

/**
 * Make `st.dir` a run folder for `st.settings`: a fresh one, or an existing one recorded with the same settings
 * hash. A folder with other (or unknown) settings is refused, or emptied with `overwrite`.
 */
function openRunFolder(st: RunState, overwrite: boolean): void {
  const record = path.join(st.dir, RECORD_FILE);
  const kind = entryKind(st.dir);
  if (kind !== 'none' && kind !== 'dir') {
    throw new CokvError(`--out ${st.dir}: the run folder's name is taken by ${kind === 'file' ? 'a file' : `something that is ${kind}`} (remove it or choose another --out)`, 'file');
  }
  let recorded: { hash?: string; settings?: unknown; problem?: string } | undefined;
  if (kind === 'dir') {
    const text = readRunFile(record);
    if (text !== undefined) {
      const r = parseJson(text);
      recorded = isObject(r) && typeof r.settingsHash === 'string' ? { hash: r.settingsHash, settings: r.settings } : { problem: `${record} is not a cokv run record` };
    } else if (entryKind(st.metricsFile) !== 'none' || entryKind(st.predFile) !== 'none') {
      // A folder from before run records: its settings cannot be checked, so it is not trusted.
      const m = parseJson(readRunFile(st.metricsFile) ?? '');
      recorded = isObject(m) && typeof m.settingsHash === 'string' ? { hash: m.settingsHash }
        : { problem: 'holds results without a settings record (an older cokv?), so cokv cannot tell whether they match' };
    }
  }
  if (recorded && recorded.hash !== st.hash) {
    if (!overwrite) {
      const diff = recorded.settings !== undefined ? settingsDiff(recorded.settings, st.settings) : [];
      const why = recorded.problem ?? `holds results for other settings${diff.length ? ` (different ${diff.join(', ')})` : ''}`;
      throw new CokvError(`--out ${st.dir}: ${why}; use another --out, or --overwrite to replace it`, 'file');
    }
    // Only files cokv wrote are removed; anything else in their place stops the run.
    for (const f of [st.metricsFile, st.predFile, record, path.join(st.dir, SHARD_FILE)]) {
      const k = entryKind(f);
      if (k === 'none') continue;
      if (k !== 'file') throw new CokvError(`--out ${f}: is ${k === 'dir' ? 'a folder' : k}, not a file cokv wrote (remove it)`, 'file');
      try {
        fs.rmSync(f);
      } catch (e) {
        throw outputError(f, e);
      }
    }
    recorded = undefined;
  }
  try {
    fs.mkdirSync(st.dir, { recursive: true });
  } catch (e) {
    throw outputError(st.dir, e);
  }
  if (!recorded || readRunFile(record) === undefined) {
    writeFileAtomic(record, JSON.stringify({ settingsHash: st.hash, settings: st.settings }, null, 2) + '\n', { what: '--out' });
  }
}

/** The run's metrics.json when it is complete and was computed with these settings for these items. */
function readFinished(st: RunState, itemIds: string[], warn: (m: string) => void): RunMetrics | undefined {
  const text = readRunFile(st.metricsFile);
  if (text === undefined) return undefined;
  const m = parseJson(text);
  let problem: string | undefined;
  if (!isObject(m)) problem = 'not a JSON object';
  else if (typeof m.settingsHash !== 'string') problem = 'incomplete (no settings hash)';
  else if (m.settingsHash !== st.hash) problem = 'computed with other settings';
  else if (m.press !== st.press || m.budget !== st.budget || m.ratio !== st.ratio) problem = 'for another press or budget';
  else if (!isNum(m.score) || m.n !== itemIds.length || !Array.isArray(m.ci95) || m.ci95.length !== 2 || !m.ci95.every(isNum)) problem = 'score, n or ci95 missing or malformed';
  else if (!isNum(m.keptKvBytes) || !isNum(m.fullKvBytes) || typeof m.metric !== 'string' || !isObject(m.timings)) problem = 'fields missing or malformed';
  else if (!isObject(m.settings) || !Array.isArray(m.settings.itemIds) || m.settings.itemIds.join('\u0000') !== itemIds.join('\u0000')) problem = 'for other items';
  if (problem === undefined) return m as unknown as RunMetrics;
  warn(`${st.metricsFile}: ${problem}; recomputed from predictions.jsonl`);
  return undefined;
}

/** Why a predictions.jsonl value cannot be reused, or undefined when it can. */
function predictionProblem(p: unknown, ids: ReadonlySet<string>, loglik: boolean): string | undefined {
  if (!isObject(p)) return 'not a JSON object';
  if (typeof p.id !== 'string' || !ids.has(p.id)) return 'unknown or missing id';
  if (typeof p.prediction !== 'string' || !Array.isArray(p.answers) || !p.answers.every((a) => typeof a === 'string')) return 'prediction or answers missing';
  for (const k of ['score', 'keptKvBytes', 'fullKvBytes', 'prefillMs', 'decodeMsPerToken', ...(loglik ? ['logprob', 'agreement'] : [])]) {
    if (!isNum(p[k])) return `'${k}' missing or not a number`;
  }
  if (!(Number.isInteger(p.promptTokens) && (p.promptTokens as number) > 0)) return "'promptTokens' missing or not a positive integer";
  return undefined;
}

/**
 * Load the predictions of an interrupted run: every valid line is reused; a line cut by a kill, or one that is
 * malformed (redone, with a warning), is dropped, and the file is rewritten without it before appending.
 */
function readPredictions(st: RunState, ids: ReadonlySet<string>, loglik: boolean, warn: (m: string) => void): void {
  const text = readRunFile(st.predFile);
  if (text === undefined) return;
  const lines = text.split('\n');
  let bad = 0;
  let first = '';
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const p = parseJson(line);
    const problem = predictionProblem(p, ids, loglik);
    if (problem === undefined) {
      const pred = p as unknown as Prediction;
      if (!st.done.has(pred.id)) st.done.set(pred.id, pred);
    } else if (!(i === lines.length - 1 && p === undefined)) {
      // (A last line without its newline that does not parse was cut by a kill: redone silently.)
      bad++;
      first ||= `line ${i + 1}: ${problem}`;
    }
  });
  if (bad > 0) warn(`${st.predFile}: ${bad} malformed line${bad > 1 ? 's' : ''} (${first}) dropped; ${bad > 1 ? 'they are' : 'it is'} redone`);
  writeFileAtomic(st.predFile, [...st.done.values()].map((p) => JSON.stringify(p) + '\n').join(''), { what: '--out' });
}

/** A run folder's shard record, validated (undefined when there is none). */
function readShardRecord(file: string, what = '--out'): ShardRecord | undefined {
  const text = readRunFile(file);
  if (text === undefined) return undefined;
  const r = parseJson(text);
  const strings = (x: unknown): x is string[] => Array.isArray(x) && x.every((v) => typeof v === 'string');
  const ok = isObject(r) && r.schema === SHARD_SCHEMA && typeof r.shard === 'string' && /^\d+\/\d+$/.test(r.shard) && strings(r.items)
    && typeof r.complete === 'boolean' && isNum(r.seconds) && Number.isSafeInteger(r.run) && (r.run as number) >= 0 && isObject(r.base) && typeof r.base.settingsHash === 'string' && strings(r.base.itemIds)
    && isObject(r.base.settings) && typeof r.base.press === 'string' && typeof r.base.metric === 'string' && typeof r.base.loglik === 'boolean';
  if (!ok) throw new CokvError(`${what} ${file}: not a cokv eval shard record (remove it, or the run folder)`, 'format');
  const rec = r as unknown as ShardRecord;
  const [i, k] = rec.shard.split('/').map(Number);
  if (!(k >= 2 && i < k)) throw new CokvError(`${what} ${file}: shard ${rec.shard} is not i/k with 0 ≤ i < k, k ≥ 2`, 'format');
  return rec;
}

function writeShardRecord(st: RunState, o: EvalOptions, complete: boolean): void {
  const items = st.base!.itemIds.filter((id) => st.assigned!.has(id));
  const rec: ShardRecord = {
    schema: SHARD_SCHEMA, shard: `${o.shard!.index}/${o.shard!.count}`, run: st.runIndex!, items, complete, seconds: (st.shardSeconds ?? 0) + st.seconds, base: st.base!,
  };
  writeFileAtomic(path.join(st.dir, SHARD_FILE), JSON.stringify(rec, null, 2) + '\n', { what: '--out' });
}

function defaultWarn(message: string): void {
  process.stderr.write(`cokv: warning: ${message}\n`);
}

/** Run every press × budget; returns the metrics of every run (finished earlier or now). */
export async function runEval(model: CokvModel, modelPath: string, o: EvalOptions): Promise<RunMetrics[]> {
  const info = datasetInfo(o.dataset);
  const items = selectItems(o);
  if (fs.existsSync(o.out) && !fs.statSync(o.out).isDirectory()) throw new CokvError(`--out ${o.out}: is a file, not a folder`, 'file');
  try {
    fs.mkdirSync(o.out, { recursive: true });
  } catch (e) {
    throw outputError(o.out, e);
  }
  const warn = o.warn ?? defaultWarn;
  const nl = info.stopAtNewline ? model.newlineIds() : [];
  const prepared: Prepared[] = [];
  for (const it of items) prepared.push(await prepareItem(model, info, it, o, nl));
  const name = modelName(modelPath);
  const loglik = o.metric === 'loglik';
  const loglikTokens = o.loglikTokens ?? 16;

  const runs: { press: string; budget: number | null; ratio?: number; label: string }[] = [];
  if (o.presses.includes('full')) runs.push({ press: 'full', budget: null, label: 'full' });
  for (const press of o.presses.filter((p) => p !== 'full')) {
    for (const b of o.budgets) runs.push({ press, budget: b, label: String(b) });
    for (const r of o.ratios ?? []) runs.push({ press, budget: null, ratio: r, label: `r${r}` });
  }
  // Validate every press before the first run starts.
  for (const r of runs) {
    const press = createPress(r.press, { ...o.pressOptions, budget: r.budget ?? undefined, ratio: r.ratio }, model.config);
    if (o.prefillEvict && r.press !== 'full') {
      try {
        checkPrefillEvict(press, { prefillEvict: true });
      } catch (e) {
        // Named as the eval flag (e.g. a --window longer than the 512-token chunk).
        throw e instanceof CokvError ? new CokvError(e.message.replace(/^prefillEvict: /, '--prefill-evict: '), e.kind) : e;
      }
    }
  }
  if (o.prefillEvict && !runs.some((r) => r.press !== 'full')) {
    throw new CokvError('--prefill-evict: needs a press other than full in --presses (with the full cache nothing is evicted)', 'flag');
  }

  // Every setting that changes a run's results; a folder holding other settings is never reused (see run-settings.ts).
  const common: Record<string, unknown> = {
    version: RUN_SETTINGS_VERSION, dataset: o.dataset, model: modelDigest(modelPath, model.source.path),
    data: fileDigest(dataFile(o.data, o.dataset), '--data').sha256,
    subset: o.subset, lengths: o.lengths, split: o.split, splitSeed: o.split === 'all' ? undefined : o.splitSeed, limit: o.limit,
    skipBadLines: o.jsonl?.onBadLine === 'skip' ? true : undefined,
    maxLength: info.family === 'longbench' ? Math.min(o.maxLength ?? 8000, model.config.contextLength - info.maxNewTokens - 1) : undefined,
    chat: info.family === 'longbench' && useChatTemplate(o.dataset, o.chat ?? false) ? true : undefined,
    protocol: o.protocol, metric: loglik ? `loglik@${loglikTokens}` : info.metric, kvDtype: o.kvDtype ?? DEFAULT_KV_DTYPE,
  };
  const itemIds = prepared.map((p) => p.item.id);

  const states: RunState[] = runs.map((r) => {
    const evict = o.prefillEvict === true && r.press !== 'full';
    const dir = path.join(o.out, runName(o.dataset, name, r.press, r.label, o.protocol, o.kvDtype ?? DEFAULT_KV_DTYPE, evict));
    const settings = {
      ...common, press: r.press, budget: r.budget, ratio: r.ratio, pressOptions: pressSettings(r.press, o.pressOptions), ...(evict ? { prefillEvict: true } : {}),
    };
    return {
      ...r, dir, metricsFile: path.join(dir, 'metrics.json'), predFile: path.join(dir, 'predictions.jsonl'), done: new Map(), seconds: 0,
      instance: resolvePress(r.press, { ...o.pressOptions, budget: r.budget ?? undefined, ratio: r.ratio }, model.config),
      settings, hash: settingsHash(settings),
    };
  });
  // Check every folder before the first run starts, so a bad one does not cost the runs before it; each is locked
  // so a second eval on the same --out is refused instead of interleaving lines.
  if (o.shard && o.shard.count > 1) {
    const { index, count } = o.shard;
    // Item-major pairs (the order runs are computed in, one shared prefill per item), cut into contiguous blocks:
    // at most one item per shard boundary is prefilled twice.
    const total = itemIds.length * states.length;
    const lo = Math.floor((index * total) / count), hi = Math.floor(((index + 1) * total) / count);
    for (const [r, st] of states.entries()) {
      st.runIndex = r;
      st.assigned = new Set();
      st.base = runBase(model, modelPath, o, info, st, itemIds);
    }
    for (let j = lo; j < hi; j++) states[j % states.length].assigned!.add(itemIds[Math.floor(j / states.length)]);
  }
  const locks: FileLock[] = [];
  try {
    for (const st of states) {
      locks.push(lockOutput(st.dir, '--out'));
      openRunFolder(st, o.overwrite ?? false);
      const shardRecord = readShardRecord(path.join(st.dir, SHARD_FILE));
      if (st.assigned) {
        const label = `${o.shard!.index}/${o.shard!.count}`;
        if (entryKind(st.metricsFile) !== 'none') {
          throw new CokvError(`--out ${st.dir}: holds a whole (unsharded) run; give each shard its own --out`, 'file');
        }
        const items = itemIds.filter((id) => st.assigned!.has(id));
        if (shardRecord && (shardRecord.shard !== label || shardRecord.items.join('\u0000') !== items.join('\u0000'))) {
          throw new CokvError(`--out ${st.dir}: holds shard ${shardRecord.shard}${shardRecord.shard === label ? ' of other items' : ''}, not ${label}; give each shard its own --out`, 'file');
        }
        st.shardSeconds = shardRecord?.seconds ?? 0;
        readPredictions(st, st.assigned, loglik, warn);
        writeShardRecord(st, o, false);
      } else {
        if (shardRecord) {
          throw new CokvError(`--out ${st.dir}: holds shard ${shardRecord.shard} of a sharded eval; join the shards with \`cokv eval merge\`, or use another --out`, 'file');
        }
        st.finished = readFinished(st, itemIds, warn);
        if (!st.finished) readPredictions(st, new Set(itemIds), loglik, warn);
      }
    }
    return await computeRuns(model, modelPath, o, info, prepared, states);
  } finally {
    for (const l of locks) l.release();
  }
}

/** Score every pending item of every run, then write each run's metrics. */
async function computeRuns(model: CokvModel, modelPath: string, o: EvalOptions, info: DatasetInfo, prepared: Prepared[], states: RunState[]): Promise<RunMetrics[]> {
  const loglik = o.metric === 'loglik';
  const loglikTokens = o.loglikTokens ?? 16;

  // Item-major: one full prefill per item (a Sequence keeping its window queries), shared by every press and
  // budget: each run compresses a fork of it, which gives the same cache a press gives during prefill, since
  // prefill attention is always full.
  const windowRows = Math.max(64, o.pressOptions.window ?? 8);
  const label = `${o.dataset} (${states.length} runs)`;
  for (const [k, p] of prepared.entries()) {
    o.onProgress?.(label, k, prepared.length);
    const pending = states.filter((st) => !st.finished && (!st.assigned || st.assigned.has(p.item.id)) && !st.done.has(p.item.id));
    if (pending.length === 0) continue;
    const ctxOnly = p.contextTokens !== undefined;
    const kvDtype = o.kvDtype ?? DEFAULT_KV_DTYPE;
    const head = ctxOnly ? p.ids.slice(0, p.contextTokens) : p.ids;
    const suffix = ctxOnly ? p.ids.slice(p.contextTokens) : [];
    const reserve = Math.max(p.maxNew, loglikTokens) + 1;
    const room = reserve + suffix.length;
    // Segment starts inside the compressed part (the question's start lies past it in the context-only protocol).
    const boundaries = p.boundaries.filter((b) => b < head.length);
    // Every run compresses a fork of this one prefill with the same window queries: a scorer runs once per layer
    // and its scores serve every press and budget that shares its settings.
    const scoreMemo = new Map<string, Float32Array[]>();
    const doc = Sequence.create(model, { kvDtype, capacity: head.length, windowRows });
    const tDoc = performance.now();
    // Chunks of at least the window, so that the last one holds every window query.
    await doc.prefill(head, { chunkSize: Math.max(DEFAULT_PREFILL_CHUNK, Math.min(windowRows, head.length)) });
    const docMs = performance.now() - tDoc;
    let reference: string | undefined;
    // The sequence a run decodes from: a compressed fork of the shared prefill, or with --prefill-evict the run's
    // own bounded prefill of the compressed part; then the suffix over it (the context-only protocol). Its
    // prefill time counts the shared prefill (it stands for one prefill with the press).
    const prepare = async (press: ReturnType<typeof resolvePress>): Promise<{ seq: Sequence; prefillMs: number }> => {
      const t0 = performance.now();
      let seq: Sequence;
      if (o.prefillEvict && press) {
        seq = Sequence.create(model, { kvDtype });
        await seq.prefill(head, { press, prefillEvict: true, reserve: room, boundaries });
      } else {
        seq = doc.fork({ reserve: room });
        if (press) await seq.compress(press, { reserve: room, boundaries, scoreMemo });
      }
      if (suffix.length > 0) await seq.append(suffix);
      return { seq, prefillMs: (o.prefillEvict && press ? 0 : docMs) + performance.now() - t0 };
    };
    const greedy = async (press: ReturnType<typeof resolvePress>) => {
      const { seq, prefillMs } = await prepare(press);
      try {
        const g = seq.generate({ maxTokens: p.maxNew, temperature: 0, eosIds: p.stopIds, minTokens: p.minTokens });
        await g.complete();
        return { g, prefillMs };
      } finally {
        seq.dispose();
      }
    };
    try {
      for (const st of pending) {
        const t0 = performance.now();
        const { g, prefillMs } = await greedy(st.instance);
        const s = g.stats!;
        const pred: Prediction = {
          id: p.item.id, prediction: g.text, answers: p.item.answers,
          score: loglik ? 0 : scoreSample(o.dataset, g.text, p.item.answers, p.item.allClasses),
          promptTokens: p.ids.length, keptKvBytes: s.promptBudgetedKvBytes, fullKvBytes: s.promptBudgetedFullKvBytes,
          prefillMs, decodeMsPerToken: s.generatedTokens > 1 ? s.decodeMs / (s.generatedTokens - 1) : 0,
        };
        if (loglik) {
          const cont = continuationIds(model.tokenizer, p.item.prompt, p.item.answers[0]).slice(0, loglikTokens);
          const { seq } = await prepare(st.instance);
          try {
            const sc = await seq.scoreContinuation(cont);
            pred.logprob = sc.mean;
            pred.score = sc.mean;
          } finally {
            seq.dispose();
          }
          reference ??= st.press === 'full' ? g.text : (await greedy(undefined)).g.text;
          pred.agreement = tokenF1(g.text, [reference]);
        }
        st.done.set(p.item.id, pred);
        try {
          fs.appendFileSync(st.predFile, JSON.stringify(pred) + '\n');
        } catch (e) {
          throw outputError(st.predFile, e);
        }
        st.seconds += (performance.now() - t0) / 1000;
      }
    } finally {
      doc.dispose();
    }
  }
  o.onProgress?.(label, prepared.length, prepared.length);

  const results: RunMetrics[] = [];
  for (const st of states) {
    if (st.assigned) {
      // A shard: its predictions are its result; the record says it is complete (and what a merge needs).
      writeShardRecord(st, o, true);
      continue;
    }
    if (st.finished) {
      results.push(st.finished);
      continue;
    }
    const preds = prepared.map((p) => st.done.get(p.item.id)!);
    const m = runMetrics(runBase(model, modelPath, o, info, st, prepared.map((p) => p.item.id)), preds, st.seconds);
    writeFileAtomic(st.metricsFile, JSON.stringify(m, null, 2) + '\n', { what: '--out' });
    results.push(m);
  }
  return results;
}

/** The run's metrics fields that do not come from its predictions. */
function runBase(model: CokvModel, modelPath: string, o: EvalOptions, info: DatasetInfo, st: RunState, itemIds: string[]): RunBase {
  const loglik = o.metric === 'loglik';
  return {
    dataset: o.dataset, model: modelName(modelPath), modelPath, press: st.press, budget: st.budget, ratio: st.ratio, protocol: o.protocol,
    metric: loglik ? `loglik@${o.loglikTokens ?? 16}` : info.metric, loglik,
    kvScope: model.config.layers.some((l) => l.kind === 'sliding') ? kvScopeLabel(model.config) : undefined,
    settingsHash: st.hash,
    settings: { ...o.pressOptions, kvDtype: o.kvDtype ?? DEFAULT_KV_DTYPE, ...(o.prefillEvict && st.press !== 'full' ? { prefillEvict: true } : {}), split: o.split, splitSeed: o.splitSeed, limit: o.limit, subset: o.subset, lengths: o.lengths, maxLength: o.maxLength },
    itemIds,
  };
}

/**
 * `cokv eval merge DIR… --out OUT`: join the folders of the shards of one sharded eval (`--shard i/k`, every i
 * once) into the run folders one unsharded run writes: the same run.json, the predictions in item order and the
 * metrics computed by the same code (only timings and createdAt differ). Everything is checked before anything is
 * written: the same runs in every folder, the same settings (hash), every shard once and complete, every item in
 * exactly one shard with its prediction. An existing OUT run folder is replaced only when it holds the same
 * settings (a merge retried), never another run's results.
 */
export function mergeEvalShards(dirs: string[], out: string): RunMetrics[] {
  const W = 'eval merge';
  if (dirs.length === 0) throw new CokvError(`${W}: give the shards' --out folders`, 'flag');
  const runNames = dirs.map((d) => {
    if (entryKind(d) !== 'dir') throw new CokvError(`${W} ${d}: not a folder`, 'file');
    let names: string[];
    try {
      names = fs.readdirSync(d).sort();
    } catch (e) {
      throw outputError(d, e);
    }
    const shards = names.filter((n) => entryKind(path.join(d, n, SHARD_FILE)) === 'file');
    if (shards.length === 0) {
      const whole = names.some((n) => entryKind(path.join(d, n, RECORD_FILE)) === 'file');
      throw new CokvError(`${W} ${d}: no shard run folders${whole ? ' (it holds unsharded runs)' : ''}; give the --out folders of cokv eval --shard i/k`, 'file');
    }
    return shards;
  });
  runNames.forEach((names, i) => {
    const a = new Set(runNames[0]), b = new Set(names);
    const extra = names.filter((n) => !a.has(n)), lack = runNames[0].filter((n) => !b.has(n));
    if (extra.length || lack.length) {
      throw new CokvError(`${W} ${dirs[i]}: other runs than ${dirs[0]} (${lack.length ? `lacks ${lack.join(', ')}` : ''}${lack.length && extra.length ? '; ' : ''}${extra.length ? `has ${extra.join(', ')}` : ''}): shards of one eval share its presses and budgets`, 'format');
    }
  });
  let merged: { name: string; run: number; record: string; preds: Prediction[]; metrics: RunMetrics }[] = [];
  for (const name of runNames[0]) {
    const at = (i: number) => path.join(dirs[i], name);
    const recs = dirs.map((_, i) => readShardRecord(path.join(at(i), SHARD_FILE), W)!);
    const runJson = dirs.map((_, i) => {
      const text = readRunFile(path.join(at(i), RECORD_FILE));
      const r = parseJson(text ?? '');
      if (!isObject(r) || r.settingsHash !== recs[i].base.settingsHash) throw new CokvError(`${W} ${at(i)}: ${RECORD_FILE} is missing or does not match ${SHARD_FILE}`, 'format');
      return { text: text!, settings: r.settings };
    });
    const first = recs[0];
    const count = Number(first.shard.split('/')[1]);
    const byIndex = new Map<number, number>();
    recs.forEach((r, i) => {
      if (r.base.settingsHash !== first.base.settingsHash) {
        const diff = settingsDiff(runJson[0].settings, runJson[i].settings);
        throw new CokvError(`${W} ${at(i)}: other settings than ${at(0)}${diff.length ? ` (different ${diff.join(', ')})` : ''}`, 'format');
      }
      const [idx, k] = r.shard.split('/').map(Number);
      if (k !== count) throw new CokvError(`${W} ${at(i)}: shard ${r.shard}, but ${at(0)} is shard ${first.shard} (shards of one split share k)`, 'format');
      const dup = byIndex.get(idx);
      if (dup !== undefined) throw new CokvError(`${W} ${at(i)}: shard ${r.shard} appears twice (also ${dirs[dup]}; overlapping shards?)`, 'format');
      byIndex.set(idx, i);
      if (!r.complete) throw new CokvError(`${W} ${at(i)}: shard ${r.shard} is unfinished (rerun the same command to complete it)`, 'format');
      if (r.base.itemIds.join('\u0000') !== first.base.itemIds.join('\u0000') || r.base.loglik !== first.base.loglik || r.run !== first.run) {
        throw new CokvError(`${W} ${at(i)}: the run's items differ from ${at(0)}'s (other data, split or filters)`, 'format');
      }
    });
    const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
    if (missing.length) {
      throw new CokvError(`${W}: shard${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${count}`).join(', ')} of ${name} missing; an incomplete shard set would give results that look complete`, 'format');
    }
    const owner = new Map<string, number>();
    recs.forEach((r, i) => r.items.forEach((id) => {
      const o = owner.get(id);
      if (o !== undefined) throw new CokvError(`${W} ${name}: item ${id} is in shard ${recs[o].shard} and ${r.shard} (overlapping shards)`, 'format');
      owner.set(id, i);
    }));
    const uncovered = first.base.itemIds.filter((id) => !owner.has(id));
    const foreign = [...owner.keys()].filter((id) => !first.base.itemIds.includes(id));
    if (uncovered.length || foreign.length) {
      throw new CokvError(`${W} ${name}: ${uncovered.length ? `item ${uncovered[0]} is in no shard` : `item ${foreign[0]} is not one of the run's items`} (shards of another split?)`, 'format');
    }
    const preds = new Map<string, Prediction>();
    recs.forEach((r, i) => {
      const mine = new Set(r.items);
      const file = path.join(at(i), 'predictions.jsonl');
      for (const line of (readRunFile(file) ?? '').split('\n')) {
        if (!line.trim()) continue;
        const p = parseJson(line);
        const problem = predictionProblem(p, mine, first.base.loglik);
        if (problem) throw new CokvError(`${W} ${file}: ${problem} (a line of another shard, or edited)`, 'format');
        const pred = p as unknown as Prediction;
        if (!preds.has(pred.id)) preds.set(pred.id, pred);
      }
      const lack = r.items.find((id) => !preds.has(id));
      if (lack !== undefined) throw new CokvError(`${W} ${file}: no prediction for item ${lack} of shard ${r.shard} (rerun the shard)`, 'format');
    });
    const ordered = first.base.itemIds.map((id) => preds.get(id)!);
    const seconds = recs.reduce((a, r) => a + r.seconds, 0);
    merged.push({ name, run: first.run, record: runJson[0].text, preds: ordered, metrics: runMetrics(first.base, ordered, seconds) });
  }
  merged = merged.sort((a, b) => a.run - b.run);
  // Write: OUT may hold earlier merges of the same runs (same settings hash), nothing else.
  const outKind = entryKind(out);
  if (outKind !== 'none' && outKind !== 'dir') throw new CokvError(`--out ${out}: is ${outKind === 'file' ? 'a file' : outKind}, not a folder`, 'file');
  const locks: FileLock[] = [];
  try {
    fs.mkdirSync(out, { recursive: true });
    for (const m of merged) {
      const dir = path.join(out, m.name);
      locks.push(lockOutput(dir, '--out'));
      const kind = entryKind(dir);
      if (kind !== 'none' && kind !== 'dir') throw new CokvError(`--out ${dir}: the run folder's name is taken by something that is not a folder`, 'file');
      if (kind === 'dir') {
        if (entryKind(path.join(dir, SHARD_FILE)) !== 'none') throw new CokvError(`--out ${dir}: holds a shard; merge into another --out`, 'file');
        const r = parseJson(readRunFile(path.join(dir, RECORD_FILE)) ?? '');
        const hasResults = entryKind(path.join(dir, 'metrics.json')) !== 'none' || entryKind(path.join(dir, 'predictions.jsonl')) !== 'none';
        if ((hasResults || r !== undefined) && !(isObject(r) && r.settingsHash === m.metrics.settingsHash)) {
          throw new CokvError(`--out ${dir}: holds results for other settings; merge into another --out`, 'file');
        }
      }
    }
    for (const m of merged) {
      const dir = path.join(out, m.name);
      fs.mkdirSync(dir, { recursive: true });
      writeFileAtomic(path.join(dir, RECORD_FILE), m.record, { what: '--out' });
      writeFileAtomic(path.join(dir, 'predictions.jsonl'), m.preds.map((p) => JSON.stringify(p) + '\n').join(''), { what: '--out' });
      writeFileAtomic(path.join(dir, 'metrics.json'), JSON.stringify(m.metrics, null, 2) + '\n', { what: '--out' });
    }
  } catch (e) {
    throw outputError(out, e);
  } finally {
    for (const l of locks) l.release();
  }
  return merged.map((m) => m.metrics);
}
