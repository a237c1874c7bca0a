/**
 * Validation samples for the head game, built from the evaluation datasets (src/eval): prompt ids (BOS + prompt
 * for the retrieval suite and stories, the tokenizer's own rule plus middle truncation for LongBench), the
 * references, the reference answer's token ids (for teacher forcing), and the dataset's metric.
 */
import type { Tokenizer } from '../model/tokenizer/types.js';
import { datasetInfo } from '../eval/datasets.js';
import { truncateMiddle } from '../eval/longbench.js';
import { scoreSample } from '../eval/metrics.js';
import type { EvalItem } from '../eval/retrieval.js';
import type { GameSample } from './model-game.js';

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

/** Prompt ids: BOS + prompt for the synthetic suites; LongBench: the tokenizer's rule and middle truncation. */
export function promptIdsFor(dataset: string, item: EvalItem, tok: Tokenizer, maxLength: number): number[] {
  if (datasetInfo(dataset).family === 'longbench') return truncateMiddle(item.prompt, tok, maxLength).ids;
  const ids = tok.encode(item.prompt, { addSpecial: false });
  return tok.bosId !== undefined ? [tok.bosId, ...ids] : ids;
}

export function buildSamples(dataset: string, items: EvalItem[], tok: Tokenizer, maxLength = 8000): GameSample[] {
  return items.map((it) => ({
    id: it.id,
    promptIds: promptIdsFor(dataset, it, tok, maxLength),
    answers: it.answers,
    answerIds: continuationIds(tok, it.prompt, answerText(dataset, it)),
    allClasses: it.allClasses,
  }));
}

/** The dataset's metric on a 0–1 scale, for the `metric` utility. */
export function taskMetric(dataset: string): (prediction: string, answers: string[], allClasses?: string[] | null) => number {
  return (prediction, answers, allClasses) => scoreSample(dataset, prediction, answers, allClasses);
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
