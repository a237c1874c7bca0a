/**
 * Validation samples for the head game: prompt ids, references and the reference answer's token ids, built from a
 * jsonl data file by task:
 *  - `retrieval` (cokv-retrieval-tiny's format): BOS + context + "\n" + input; answer " <digits>"; exact match
 *    after stripping trailing punctuation; generation stops at a newline.
 *  - `stories` (stories260K): BOS + context; answer = the reference continuation; token F1.
 *  - `qa`: any jsonl with context/input/answers: BOS + context + "\n" + input; token F1.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { CokvError } from '../errors.js';
import type { Tokenizer } from '../model/tokenizer/types.js';
import type { GameSample } from './model-game.js';

export const GAME_TASKS = ['retrieval', 'stories', 'qa'] as const;
export type GameTask = (typeof GAME_TASKS)[number];

export interface RawItem {
  id: string;
  context: string;
  input: string;
  answers: string[];
  fields: Record<string, unknown>;
}

/** Read a jsonl data file; every line must be an object with `context` and a non-empty `answers` list. */
export function readItems(file: string): { items: RawItem[]; hash: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new CokvError(`--data ${file}: cannot read the file`, 'file');
  }
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 16);
  const items: RawItem[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new CokvError(`${file}:${i + 1}: not valid JSON`, 'format');
    }
    if (!o || typeof o !== 'object' || Array.isArray(o)) throw new CokvError(`${file}:${i + 1}: expected a JSON object`, 'format');
    if (typeof o.context !== 'string') throw new CokvError(`${file}:${i + 1}: missing "context"`, 'format');
    const answers = o.answers;
    if (!Array.isArray(answers) || answers.length === 0 || !answers.every((a) => typeof a === 'string')) {
      throw new CokvError(`${file}:${i + 1}: sample has no references ("answers" must be a non-empty list of strings)`, 'format');
    }
    const id = typeof o._id === 'string' ? o._id : typeof o.id === 'string' ? o.id : `line-${i + 1}`;
    items.push({ id, context: o.context, input: typeof o.input === 'string' ? o.input : '', answers: answers as string[], fields: o });
  });
  if (items.length === 0) throw new CokvError(`--data ${file}: the file has no samples`, 'format');
  return { items, hash };
}

/** Token ids of `continuation` as it follows `prefix` (so word-start spaces and merges come out as in context). */
export function continuationIds(tok: Tokenizer, prefix: string, continuation: string): number[] {
  const a = tok.encode(prefix, { addSpecial: false });
  const b = tok.encode(prefix + continuation, { addSpecial: false });
  let same = 0;
  while (same < a.length && same < b.length && a[same] === b[same]) same++;
  // A merge across the boundary changes the last prefix token; start from there.
  return b.slice(Math.min(same, a.length));
}

function withBos(tok: Tokenizer, ids: number[]): number[] {
  return tok.bosId !== undefined && ids[0] !== tok.bosId ? [tok.bosId, ...ids] : ids;
}

export function promptText(task: GameTask, item: RawItem): string {
  if (task === 'stories') return item.context;
  return item.input ? `${item.context}\n${item.input}` : item.context;
}

export function buildSamples(task: GameTask, items: RawItem[], tok: Tokenizer): GameSample[] {
  return items.map((it) => {
    const text = promptText(task, it);
    const promptIds = withBos(tok, tok.encode(text, { addSpecial: false }));
    const answer = task === 'retrieval' ? ` ${it.answers[0]}` : it.answers[0];
    return { id: it.id, promptIds, answers: it.answers, answerIds: continuationIds(tok, text, answer) };
  });
}

/** Exact match after trimming and stripping trailing punctuation (the retrieval model card's rule). */
export function exactMatch(prediction: string, answers: string[]): number {
  const norm = (s: string) => s.trim().replace(/[\s.,;:!?'"]+$/u, '').trim();
  const p = norm(prediction);
  return answers.some((a) => norm(a) === p) ? 1 : 0;
}

/** Token F1 (multiset overlap of lowercase words), max over references. */
export function tokenF1(prediction: string, answers: string[]): number {
  const words = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}\s]/gu, ' ').split(/\s+/).filter(Boolean);
  const p = words(prediction);
  let best = 0;
  for (const a of answers) {
    const g = words(a);
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

export function taskMetric(task: GameTask): (prediction: string, answers: string[]) => number {
  return task === 'retrieval' ? exactMatch : tokenF1;
}
