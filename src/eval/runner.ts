/**
 * The evaluation runner: every press × budget on a dataset, with LongBench's protocol, one directory per run
 * (`dataset__model__press__budget/` with predictions.jsonl and metrics.json). Finished runs are skipped; an
 * interrupted run resumes from its predictions file (each line is appended as soon as it is scored).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import type { CokvModel } from '../engine.js';
import type { KvDType } from '../cache/ragged.js';
import type { PressOptions } from '../press/options.js';
import { createPress } from '../press/registry.js';
import { kvScopeLabel } from '../press/scope.js';
import { continuationIds, tokenF1 } from '../game/samples.js';
import { datasetInfo, loadEvalItems, splitItems, type DatasetInfo } from './datasets.js';
import { longBenchGeneration, truncateMiddle, useChatTemplate } from './longbench.js';
import { scoreSample } from './metrics.js';
import type { EvalItem } from './retrieval.js';
import type { JsonlOptions } from './jsonl.js';

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
  /** KV storage type of every run (default f32). */
  kvDtype?: KvDType;
  out: string;
  jsonl?: JsonlOptions;
  onProgress?: (runName: string, done: number, total: number) => void;
}

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
}

export function modelName(modelPath: string): string {
  return path.basename(modelPath.replace(/[/\\]+$/, '')).replace(/\.(gguf|bin|safetensors)$/, '');
}

function runName(dataset: string, model: string, press: string, budget: string, protocol: Protocol, kvDtype = 'f32'): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, '-');
  return [dataset, model, press, budget].map(safe).join('__') + (protocol === 'context-only' ? '__ctx' : '') + (kvDtype === 'f32' ? '' : `__${kvDtype}`);
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
  const tok = model.tokenizer;
  const ctx = model.config.contextLength;
  let ids: number[];
  const maxNew = info.maxNewTokens;
  let stopIds = [...model.eosIds];
  let minTokens = 0;
  // The final prompt text, and whether its ids carry the tokenizer's own special tokens.
  let text: string;
  let addSpecial: boolean;
  if (info.family === 'longbench') {
    const maxLength = Math.min(o.maxLength ?? 8000, ctx - maxNew - 1);
    const t = truncateMiddle(item.prompt, tok, maxLength);
    ({ ids } = t);
    text = t.prompt;
    addSpecial = true;
    if (useChatTemplate(o.dataset, o.chat ?? false)) {
      // Chat templates write their own BOS; encode without adding special tokens (as transformers does).
      text = await model.applyChatTemplate([{ role: 'user', content: t.prompt }]);
      ids = tok.encode(text, { addSpecial: false });
      addSpecial = false;
    }
    const g = longBenchGeneration(o.dataset, tok);
    stopIds = [...stopIds, ...g.extraStopIds];
    minTokens = g.minNewTokens;
  } else {
    text = item.prompt;
    addSpecial = false;
    const enc = tok.encode(item.prompt, { addSpecial: false });
    ids = tok.bosId !== undefined ? [tok.bosId, ...enc] : enc;
  }
  if (info.stopAtNewline) stopIds = [...stopIds, ...nl];
  if (ids.length >= ctx) throw new CokvError(`item ${item.id}: ${ids.length} prompt tokens do not fit the context of ${ctx}`, 'format');
  let contextTokens: number | undefined;
  if (o.protocol === 'context-only') {
    const at = item.question ? text.lastIndexOf(item.question) : -1;
    if (!item.question || at < 0) {
      throw new CokvError(`--protocol context-only: dataset ${o.dataset} items have no separable question`, 'flag');
    }
    const contextIds = tok.encode(text.slice(0, at), { addSpecial });
    const bos = !addSpecial && tok.bosId !== undefined && ids[0] === tok.bosId && contextIds[0] !== tok.bosId ? 1 : 0;
    contextTokens = Math.min(ids.length - 1, contextIds.length + bos);
  }
  return { item, ids, contextTokens, maxNew, stopIds, minTokens };
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

/** Run every press × budget; returns the metrics of every run (finished earlier or now). */
export async function runEval(model: CokvModel, modelPath: string, o: EvalOptions): Promise<RunMetrics[]> {
  const info = datasetInfo(o.dataset);
  const items = selectItems(o);
  if (fs.existsSync(o.out) && !fs.statSync(o.out).isDirectory()) throw new CokvError(`--out ${o.out}: is a file, not a folder`, 'file');
  fs.mkdirSync(o.out, { recursive: true });
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
  for (const r of runs) createPress(r.press, { ...o.pressOptions, budget: r.budget ?? undefined, ratio: r.ratio }, model.config);

  interface RunState {
    press: string; budget: number | null; ratio?: number; dir: string; metricsFile: string; predFile: string;
    instance: ReturnType<typeof createPress>; done: Map<string, Prediction>; finished?: RunMetrics; seconds: number;
  }
  const states: RunState[] = runs.map((r) => {
    const dir = path.join(o.out, runName(o.dataset, name, r.press, r.label, o.protocol, o.kvDtype));
    const metricsFile = path.join(dir, 'metrics.json');
    const st: RunState = {
      ...r, dir, metricsFile, predFile: path.join(dir, 'predictions.jsonl'), done: new Map(), seconds: 0,
      instance: createPress(r.press, { ...o.pressOptions, budget: r.budget ?? undefined, ratio: r.ratio }, model.config),
    };
    if (fs.existsSync(metricsFile)) {
      st.finished = JSON.parse(fs.readFileSync(metricsFile, 'utf8')) as RunMetrics;
      return st;
    }
    fs.mkdirSync(dir, { recursive: true });
    if (fs.existsSync(st.predFile)) {
      for (const line of fs.readFileSync(st.predFile, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          const p = JSON.parse(line) as Prediction;
          st.done.set(p.id, p);
        } catch {
          // A line cut by a kill is redone.
        }
      }
      // Rewrite without any torn last line before appending.
      fs.writeFileSync(st.predFile, [...st.done.values()].map((p) => JSON.stringify(p) + '\n').join(''));
    }
    return st;
  });

  // Item-major: one full prefill per item, shared by every press and budget (compressing a copy of it gives the
  // same cache a press gives during prefill, since prefill attention is always full).
  const windowRows = Math.max(64, o.pressOptions.window ?? 8);
  const label = `${o.dataset} (${states.length} runs)`;
  for (const [k, p] of prepared.entries()) {
    o.onProgress?.(label, k, prepared.length);
    const pending = states.filter((st) => !st.finished && !st.done.has(p.item.id));
    if (pending.length === 0) continue;
    const ctxOnly = p.contextTokens !== undefined;
    const shared = model.prefillShared(ctxOnly ? p.ids.slice(0, p.contextTokens) : p.ids, windowRows, o.kvDtype ?? 'f32');
    const suffix = ctxOnly ? p.ids.slice(p.contextTokens) : undefined;
    const reserve = Math.max(p.maxNew, loglikTokens) + 1;
    let reference: string | undefined;
    const greedy = async (press: ReturnType<typeof createPress>) => {
      const g = model.generate(p.ids, {
        maxTokens: p.maxNew, temperature: 0, eosIds: p.stopIds, minTokens: p.minTokens,
        prefilled: model.fromShared(shared, press, reserve, suffix),
      });
      await g.complete();
      return g;
    };
    for (const st of pending) {
      const t0 = performance.now();
      const g = await greedy(st.instance);
      const s = g.stats!;
      const pred: Prediction = {
        id: p.item.id, prediction: g.text, answers: p.item.answers,
        score: loglik ? 0 : scoreSample(o.dataset, g.text, p.item.answers, p.item.allClasses),
        promptTokens: p.ids.length, keptKvBytes: s.promptBudgetedKvBytes, fullKvBytes: s.promptBudgetedFullKvBytes,
        prefillMs: s.prefillMs, decodeMsPerToken: s.generatedTokens > 1 ? s.decodeMs / (s.generatedTokens - 1) : 0,
      };
      if (loglik) {
        const cont = continuationIds(model.tokenizer, p.item.prompt, p.item.answers[0]).slice(0, loglikTokens);
        const sc = model.scoreContinuation(p.ids, cont, { prefilled: model.fromShared(shared, st.instance, reserve, suffix) });
        pred.logprob = sc.mean;
        pred.score = sc.mean;
        reference ??= st.press === 'full' ? g.text : (await greedy(undefined)).text;
        pred.agreement = tokenF1(g.text, [reference]);
      }
      st.done.set(p.item.id, pred);
      fs.appendFileSync(st.predFile, JSON.stringify(pred) + '\n');
      st.seconds += (performance.now() - t0) / 1000;
    }
  }
  o.onProgress?.(label, prepared.length, prepared.length);

  const results: RunMetrics[] = [];
  for (const st of states) {
    if (st.finished) {
      results.push(st.finished);
      continue;
    }
    const preds = prepared.map((p) => st.done.get(p.item.id)!);
    const { mean, ci } = meanCi(preds.map((p) => p.score), loglik ? 1 : 100, loglik ? 4 : 2);
    const m: RunMetrics = {
      dataset: o.dataset, model: name, modelPath, press: st.press, budget: st.budget, ratio: st.ratio, protocol: o.protocol,
      metric: loglik ? `loglik@${loglikTokens}` : info.metric, score: mean, n: preds.length, ci95: ci,
      agreement: loglik ? meanCi(preds.map((p) => p.agreement ?? 0), 100).mean : undefined,
      keptKvBytes: preds.reduce((a, p) => a + p.keptKvBytes, 0) / preds.length,
      fullKvBytes: preds.reduce((a, p) => a + p.fullKvBytes, 0) / preds.length,
      kvScope: model.config.layers.some((l) => l.kind === 'sliding') ? kvScopeLabel(model.config) : undefined,
      settings: { ...o.pressOptions, kvDtype: o.kvDtype ?? 'f32', split: o.split, splitSeed: o.splitSeed, limit: o.limit, subset: o.subset, lengths: o.lengths, maxLength: o.maxLength, itemIds: preds.map((p) => p.id) },
      timings: {
        prefillMs: preds.reduce((a, p) => a + p.prefillMs, 0) / preds.length,
        decodeMsPerToken: preds.reduce((a, p) => a + p.decodeMsPerToken, 0) / preds.length,
        seconds: st.seconds,
      },
      createdAt: new Date().toISOString(),
    };
    const tmp = `${st.metricsFile}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(m, null, 2) + '\n');
    fs.renameSync(tmp, st.metricsFile);
    results.push(m);
  }
  return results;
}
