/**
 * Validation samples for the head game, built from the evaluation datasets (src/eval) with the evaluator's own
 * prompt builder (src/eval/prompts.ts), the references, the reference answer's token ids (for teacher forcing and
 * as the `metric` utility's draft), and the dataset's metric.
 */
import type { Tokenizer } from '../model/tokenizer/types.js';
import { datasetInfo } from '../eval/datasets.js';
import { exactMatchStillPossible, scoreSample } from '../eval/metrics.js';
import { buildPrompt, type PromptModel } from '../eval/prompts.js';
import type { EvalItem } from '../eval/retrieval.js';
import type { GameSample, ModelGameOptions } from './model-game.js';

/** Token ids of `continuation` as it follows `prefix` (so word-start spaces and merges come out as in context). */
export function continuationIds(tok: Tokenizer, prefix: string, continuation: string): number[] {
  const a = tok.encode(prefix, { addSpecial: false });
  const b = tok.encode(prefix + continuation, { addSpecial: false });
  let same = 0;
  while (same < a.length && same < b.length && a[same] === b[same]) same++;
  return b.slice(same);
}

/** The reference answer text as the model should produce it right after the prompt. */
export function answerText(dataset: string, item: EvalItem): string {
  // The retrieval model answers " <digits>" (model card: a lone space token, then the digits).
  return datasetInfo(dataset).family === 'retrieval' ? ` ${item.answers[0]}` : item.answers[0];
}

export interface SampleOptions {
  /** LongBench truncation (pred.py `max_length`); default 8000, clipped to the context minus the answer room. */
  maxLength?: number;
  /** LongBench: the chat template, as `cokv eval --chat`. */
  chat?: boolean;
}

/**
 * Game samples from evaluation items, with the prompts `cokv eval` builds (`buildPrompt`: same truncation, chat
 * template, BOS) and the reference answer tokenized as it follows that prompt.
 */
export async function buildSamples(dataset: string, items: EvalItem[], model: PromptModel & { config?: { contextLength: number } }, o: SampleOptions = {}): Promise<GameSample[]> {
  const tok = model.tokenizer;
  const ctx = model.config?.contextLength ?? Infinity;
  const maxLength = Math.min(o.maxLength ?? 8000, ctx - datasetInfo(dataset).maxNewTokens - 1);
  const out: GameSample[] = [];
  for (const it of items) {
    const p = await buildPrompt(model, dataset, it, { maxLength, chat: o.chat });
    out.push({
      id: it.id,
      promptIds: p.ids,
      answers: it.answers,
      answerIds: continuationIds(tok, p.text, answerText(dataset, it)),
      allClasses: it.allClasses,
      boundaries: p.boundaries,
    });
  }
  return out;
}

/** The dataset's metric on a 0–1 scale, for the `metric` utility. */
export function taskMetric(dataset: string): (prediction: string, answers: string[], allClasses?: string[] | null) => number {
  return (prediction, answers, allClasses) => scoreSample(dataset, prediction, answers, allClasses);
}

/**
 * The `metric` utility's settings for a dataset: its metric, its newline stop, and — for exact-match datasets — the
 * prefix rule that decides most coalitions from the verified draft alone.
 */
export function metricGameOptions(dataset: string): Pick<ModelGameOptions, 'score' | 'stopAtNewline' | 'prefixRule'> {
  const info = datasetInfo(dataset);
  return {
    score: taskMetric(dataset),
    stopAtNewline: info.stopAtNewline,
    prefixRule: info.metric === 'exact_match' && !info.firstLine ? exactMatchStillPossible : undefined,
  };
}

/** Token F1 (multiset overlap of lowercase words), max over references: agreement between two continuations. */
export function tokenF1(prediction: string, answers: string[]): number {
  const words = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}\s]/gu, ' ').split(/\s+/).filter(Boolean);
  const p = words(prediction);
  let best = 0;
  for (const a of answers) {
    const g = words(a);
    if (p.length === 0 && g.length === 0) return 1;
    const counts = new Map<string, number>();
    for (const w of g) counts.set(w, (counts.get(w) ?? 0) + 1);
    let common = 0;
    for (const w of p) {
      const c = counts.get(w) ?? 0;
      if (c > 0) { common++; counts.set(w, c - 1); }
    }
    if (common === 0) continue;
    const prec = common / p.length, rec = common / g.length;
    best = Math.max(best, (2 * prec * rec) / (prec + rec));
  }
  return best;
}
