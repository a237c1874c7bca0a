/**
 * Needle-in-a-haystack (spec §8; CoKV `experiments/Needle/.../needle_in_haystack_sv.py`, after gkamradt's
 * LLMNeedleHaystackTester):
 *
 * 1. haystack = all essay files concatenated, repeated until it has at least max(lengths) tokens;
 * 2. per context length L: trim the haystack to L tokens (decode of the first L ids);
 * 3. per depth d: re-tokenize, cut to L − margin − |needle| tokens, insert the needle at ⌊n·d/100⌋ moved back to just
 *    after a period token (d = 100: at the end), decode;
 * 4. prompt = template with {context} and {question}; greedy, 30 new tokens, stop at EOS or "\n";
 * 5. score = word overlap of the first |answer| characters of the stripped response with the answer.
 *
 * Differences from the reference, on purpose: files are read in name order (the reference uses `glob` order, which
 * is file-system dependent), and the context/needle are tokenized without special tokens (the reference's
 * `enc.encode` adds a BOS to both, which then appears as text inside the context).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import type { Tokenizer } from '../model/tokenizer/types.js';
import { pyRound, pySplit, pyStrip } from './metrics.js';

export const DEFAULT_NEEDLE = '\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n';
export const DEFAULT_QUESTION = 'The best thing to do in San Francisco is: ';
export const DEFAULT_ANSWER = 'eat a sandwich and sit in Dolores Park on a sunny day.';
/** Prompt of needle_in_haystack_sv.py:220 (`{context}` and `{question}` are replaced). */
export const DEFAULT_NEEDLE_TEMPLATE =
  '<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the content of the book, Question: {question}\nAnswer:';
/** Tokens left off each context for the question and answer. */
export const DEFAULT_MARGIN = 200;
/** Generation settings of the reference. */
export const NEEDLE_MAX_NEW_TOKENS = 30;

/** numpy `np.round(np.linspace(lo, hi, n)).astype(int)` (round half to even). */
export function linspaceRound(lo: number, hi: number, n: number): number[] {
  if (!Number.isInteger(n) || n < 1) throw new CokvError(`needle: number of depths must be a positive integer, got ${n}`, 'flag');
  if (n === 1) return [pyRound(lo)];
  const step = (hi - lo) / (n - 1);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(pyRound(i === n - 1 ? hi : i * step + lo));
  return out;
}

/** Default depth grid: `round(linspace(0, 100, n))`. */
export function depthPercents(n = 10): number[] {
  return linspaceRound(0, 100, n);
}

/** Context lengths `start, start+step, …, ≤ end` (numpy `arange(start, end + 1, step)`). */
export function contextLengths(start: number, end: number, step: number): number[] {
  if (!(step > 0)) throw new CokvError(`needle: length step must be positive, got ${step}`, 'flag');
  const out: number[] = [];
  for (let l = start; l < end + 1; l += step) out.push(l);
  return out;
}

/** The essay texts of a haystack folder (`*.txt`, in name order). */
export function readHaystackFiles(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.txt')).sort();
  } catch {
    throw new CokvError(`${dir}: cannot read the haystack folder`, 'file');
  }
  if (names.length === 0) throw new CokvError(`${dir}: no .txt files for the haystack`, 'file');
  return names.map((n) => fs.readFileSync(path.join(dir, n), 'utf8'));
}

/** `read_context_files`: append all texts, again and again, until the text has at least `minTokens` tokens. */
export function buildHaystack(texts: readonly string[], tokenizer: Tokenizer, minTokens: number): string {
  const all = texts.join('');
  if (all.length === 0) throw new CokvError('needle: the haystack texts are empty', 'format');
  let context = '';
  while (tokenizer.encode(context, { addSpecial: false }).length < minTokens) context += all;
  return context;
}

export interface NeedleOptions {
  needle?: string;
  question?: string;
  answer?: string;
  template?: string;
  /** Tokens left off each context (default 200). */
  margin?: number;
  /**
   * Ids after which the needle may be inserted. Default: the ids of `encode(".")` plus every token whose text is
   * exactly "." once leading whitespace markers are removed (e.g. "▁." in SentencePiece vocabularies).
   */
  periodIds?: readonly number[];
}

export interface NeedleCase {
  length: number;
  depth: number;
  /** The haystack with the needle, as text. */
  context: string;
  /** Full prompt (without BOS; the caller tokenizes with BOS). */
  prompt: string;
  /** Token index in the context where the needle starts. */
  insertionPoint: number;
  /** Number of context tokens (haystack + needle) before decoding. */
  contextTokens: number;
}

function defaultPeriodIds(tokenizer: Tokenizer): Set<number> {
  const ids = new Set(tokenizer.encode('.', { addSpecial: false }));
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    let t: string;
    try {
      t = tokenizer.tokenText(id);
    } catch {
      continue;
    }
    if (t.replace(/^(?:▁|Ġ| )+/u, '') === '.') ids.add(id);
  }
  return ids;
}

function fillTemplate(template: string, context: string, question: string): string {
  // Single pass so that braces inside the context are never re-read as fields.
  return template.replace(/\{(context|question)\}/g, (_, k: string) => (k === 'context' ? context : question));
}

/** Builds needle contexts for one tokenizer and haystack, caching the trimmed haystack per length. */
export class NeedleBuilder {
  readonly needle: string;
  readonly question: string;
  readonly answer: string;
  readonly template: string;
  readonly margin: number;
  private readonly periods: Set<number>;
  private readonly needleIds: number[];
  private readonly trimmed = new Map<number, number[]>();

  constructor(private readonly tokenizer: Tokenizer, private readonly haystack: string, opts: NeedleOptions = {}) {
    this.needle = opts.needle ?? DEFAULT_NEEDLE;
    this.question = opts.question ?? DEFAULT_QUESTION;
    this.answer = opts.answer ?? DEFAULT_ANSWER;
    this.template = opts.template ?? DEFAULT_NEEDLE_TEMPLATE;
    this.margin = opts.margin ?? DEFAULT_MARGIN;
    if (!this.template.includes('{context}')) throw new CokvError('needle: the prompt template has no {context}', 'flag');
    if (!Number.isInteger(this.margin) || this.margin < 0) throw new CokvError(`needle: margin must be a non-negative integer, got ${this.margin}`, 'flag');
    this.periods = opts.periodIds ? new Set(opts.periodIds) : defaultPeriodIds(tokenizer);
    this.needleIds = tokenizer.encode(this.needle, { addSpecial: false });
  }

  /** `encode_and_trim` then the tokenization `insert_needle` starts from (cached per length). */
  private contextIds(length: number): number[] {
    let ids = this.trimmed.get(length);
    if (!ids) {
      const enc = (s: string): number[] => this.tokenizer.encode(s, { addSpecial: false });
      const all = enc(this.haystack);
      const text = all.length > length ? this.tokenizer.decode(all.slice(0, length), { skipSpecial: false }) : this.haystack;
      ids = enc(text);
      this.trimmed.set(length, ids);
    }
    return ids;
  }

  /** One (length, depth) case. */
  build(length: number, depth: number): NeedleCase {
    if (!Number.isInteger(length) || length <= 0) throw new CokvError(`needle: context length must be a positive integer, got ${length}`, 'flag');
    if (!(depth >= 0 && depth <= 100)) throw new CokvError(`needle: depth must be in [0, 100], got ${depth}`, 'flag');
    let ctx = this.contextIds(length);
    const budget = length - this.margin;
    if (ctx.length + this.needleIds.length > budget) ctx = ctx.slice(0, Math.max(0, budget - this.needleIds.length));
    let point: number;
    let ids: number[];
    if (depth === 100) {
      point = ctx.length;
      ids = [...ctx, ...this.needleIds];
    } else {
      point = Math.trunc(ctx.length * (depth / 100));
      while (point > 0 && !this.periods.has(ctx[point - 1])) point--;
      ids = [...ctx.slice(0, point), ...this.needleIds, ...ctx.slice(point)];
    }
    const context = this.tokenizer.decode(ids, { skipSpecial: false });
    return {
      length, depth, context, prompt: fillTemplate(this.template, context, this.question), insertionPoint: point,
      contextTokens: ids.length,
    };
  }

  /** All cases of a grid, depth-major: `cases[d][l]`. */
  grid(lengths: readonly number[], depths: readonly number[]): NeedleCase[][] {
    return depths.map((d) => lengths.map((l) => this.build(l, d)));
  }

  /** Score a response against this builder's answer. */
  score(response: string): number {
    return needleScore(response, this.answer);
  }
}

/**
 * The reference's score: strip the response; 0 if empty; else take its first len(answer) characters, lowercase,
 * split on whitespace, and return |set ∩ set(answer.lower().split())| / |set(answer words)|.
 */
export function needleScore(response: string, answer = DEFAULT_ANSWER): number {
  const r = Array.from(pyStrip(response));
  if (r.length === 0) return 0;
  const head = r.slice(0, Array.from(answer).length).join('').toLowerCase();
  const expected = new Set(pySplit(answer.toLowerCase()));
  if (expected.size === 0) throw new CokvError('needle: the answer has no words', 'flag');
  const got = new Set(pySplit(head));
  let common = 0;
  for (const w of got) if (expected.has(w)) common++;
  return common / expected.size;
}

export interface NeedleGridResult {
  lengths: number[];
  depths: number[];
  /** `scores[d][l]`: score at depths[d] and lengths[l]. */
  scores: number[][];
  /** Mean over all cells (the SSV utility of the reference). */
  mean: number;
  /** Mean per length (over depths) and per depth (over lengths). */
  meanByLength: number[];
  meanByDepth: number[];
}

/** Collect a grid of scores (`score(depthIndex, lengthIndex)`) into the result structure. */
export function gridResult(
  lengths: readonly number[], depths: readonly number[], scoreAt: (d: number, l: number) => number,
): NeedleGridResult {
  const scores = depths.map((_, d) => lengths.map((_l, l) => scoreAt(d, l)));
  const cells = scores.flat();
  const mean = cells.length === 0 ? 0 : cells.reduce((a, b) => a + b, 0) / cells.length;
  const meanByLength = lengths.map((_, l) => scores.reduce((a, row) => a + row[l], 0) / Math.max(1, depths.length));
  const meanByDepth = scores.map((row) => row.reduce((a, b) => a + b, 0) / Math.max(1, lengths.length));
  return { lengths: [...lengths], depths: [...depths], scores, mean, meanByLength, meanByDepth };
}
