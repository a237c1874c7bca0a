/**
 * Needle-in-a-haystack prompts for head scoring, built the way HeadKV's detection script builds them
 * (FYYFU/HeadKV `Important_Head/retrieval_head_detection_r2.py`): the haystack is cut to the context length, the
 * needle is inserted at a depth percentage, moved back to the nearest sentence end, and the question follows.
 *
 * What differs from the official data, and why:
 * - Needles and questions use the templates cokv-retrieval-tiny was trained on (pass key, special magic number; the
 *   model answers digits, not sentences), where the official R2 file has two English needles about John and Mary.
 * - The reasoning needle keeps the official shape — the answer sentence beside a distractor sentence of the same
 *   form, plus a fact that says which one is asked for — but the selector is a word link ("The chosen word is W")
 *   instead of an age comparison, and the answer is the number, not the whole sentence.
 * - The prompt is BOS + context + "\n" + question ending in the answer cue (the model card's format), not
 *   "Based on the content of the book, Question: …\nAnswer:".
 * - The needle span (the tokens of the answer sentence, `real_needle`) is known by construction: the needle is
 *   tokenized sentence by sentence and spliced into the haystack's tokens, where the official code decodes the
 *   context to text, re-encodes it and searches for the span with the largest token overlap.
 * - The haystack is whatever text the caller passes (the CLI: Paul Graham essays), trimmed so the whole prompt has
 *   the requested length; the official code leaves a 200-token buffer for the question.
 */
import type { CokvModel } from '../../engine.js';
import { Rng } from '../../generate/rng.js';

/** Retrieval needles hold one fact; reasoning needles need two (the selector and the fact it selects). */
export type NeedleKind = 'retrieval' | 'reasoning';

/** One needle, in the fields of HeadKV's `needles.jsonl`. */
export interface NeedleSpec {
  kind: NeedleKind;
  /** The needle's sentences, inserted together; `answerSentence` indexes the one holding the answer. */
  sentences: string[];
  /** Index in `sentences` of the answer sentence (the official `real_needle`). */
  answerSentence: number;
  /** Question ending in the answer cue (the model continues with " " + answer). */
  question: string;
  /** Reference answer for the F1 filter. */
  answer: string;
}

/** A built prompt. */
export interface NeedlePrompt {
  ids: number[];
  /** Index in `ids` of the needle's first token (after a sentence end of the haystack, or at its start). */
  needleAt: number;
  /** [start, end) of the answer sentence's tokens in `ids`. */
  span: [number, number];
  /** Tokens of " " + answer: the generation length, as the official `len(answer_tokens)`. */
  answerTokens: number;
  needle: NeedleSpec;
  length: number;
  depthPercent: number;
}

const WORDS = ('apple arrow banana basket bell bridge cabin candle castle cloud coffee copper dragon eagle falcon ' +
  'forest garden guitar hammer harbor island jacket kettle ladder lantern lemon magnet meadow mirror ocean olive ' +
  'orange panda parrot pencil piano planet pocket rabbit radio river rocket silver spider stone summer tiger tower ' +
  'turtle valley violin wagon whale window winter wizard zebra').split(' ');

function digits(rng: Rng, n: number): string {
  let s = String(1 + rng.int(9));
  while (s.length < n) s += String(rng.int(10));
  return s;
}

/**
 * `count` needles of each kind from `seed`. Retrieval: a pass key, or one special magic number (with its own
 * question). Reasoning: two special magic numbers for two words and a sentence naming the chosen word; the question
 * asks for the chosen word's number without naming it, so the answer needs both the link and the fact.
 */
export function makeNeedles(seed: number, count: number): NeedleSpec[] {
  const rng = new Rng(seed);
  const out: NeedleSpec[] = [];
  for (let i = 0; i < count; i++) {
    if (i % 2 === 0) {
      const n = digits(rng, 5);
      out.push({ kind: 'retrieval', sentences: [`The pass key is ${n}.`, 'Remember it.'], answerSentence: 0,
        question: 'Question: What is the pass key mentioned in the text above? Answer: The pass key is', answer: n });
    } else {
      const w = WORDS[rng.int(WORDS.length)], n = digits(rng, 7);
      out.push({ kind: 'retrieval', sentences: [`The special magic number for ${w} is ${n}.`], answerSentence: 0,
        question: `Question: What is the special magic number for ${w} mentioned in the text? Answer: The special magic number for ${w} is`, answer: n });
    }
  }
  for (let i = 0; i < count; i++) {
    const a = WORDS[rng.int(WORDS.length)];
    let b = a;
    while (b === a) b = WORDS[rng.int(WORDS.length)];
    const na = digits(rng, 7), nb = digits(rng, 7);
    const chosen = rng.int(2);
    const facts = [`The special magic number for ${a} is ${na}.`, `The special magic number for ${b} is ${nb}.`];
    out.push({ kind: 'reasoning', sentences: [...facts, `The chosen word is ${chosen === 0 ? a : b}.`], answerSentence: chosen,
      question: 'Question: What is the special magic number for the chosen word mentioned in the text? Answer: The special magic number for the chosen word is',
      answer: chosen === 0 ? na : nb });
  }
  return out;
}

/** `n` depth percentages spread evenly over [0, 100] (the official `np.round(np.linspace(0, 100, n))`). */
export function depthGrid(n: number): number[] {
  if (n === 1) return [0];
  return Array.from({ length: n }, (_, i) => Math.round((100 * i) / (n - 1)));
}

/**
 * The prompt for `needle` at `depthPercent` in a prompt of `length` tokens cut from `haystackIds` at `offset`
 * (wrapping around). Throws when `length` cannot hold the needle and question.
 */
export function buildNeedlePrompt(
  model: CokvModel, haystackIds: readonly number[], needle: NeedleSpec, length: number, depthPercent: number, offset = 0,
): NeedlePrompt {
  const tok = model.tokenizer;
  const bos = tok.bosId !== undefined ? [tok.bosId] : [];
  const pieces = needle.sentences.map((s) => tok.encode(` ${s}`, { addSpecial: false }));
  const question = tok.encode(`\n${needle.question}`, { addSpecial: false });
  const answerTokens = tok.encode(` ${needle.answer}`, { addSpecial: false }).length;
  const needleLen = pieces.reduce((a, p) => a + p.length, 0);
  const contextLen = length - bos.length - needleLen - question.length;
  if (contextLen < 16) throw new Error(`a prompt of ${length} tokens cannot hold the needle (${needleLen} tokens) and the question (${question.length})`);
  if (haystackIds.length < 16) throw new Error(`the haystack has only ${haystackIds.length} tokens`);
  const hay = Array.from({ length: contextLen }, (_, i) => haystackIds[(offset + i) % haystackIds.length]);
  let at = depthPercent >= 100 ? contextLen : Math.floor((contextLen * depthPercent) / 100);
  // Back to the nearest sentence end (the official loop over period tokens); the start of the text counts as one.
  while (at > 0 && !/[.!?]\s*$/.test(tok.tokenText(hay[at - 1]))) at--;
  const before = [...bos, ...hay.slice(0, at)];
  let spanStart = before.length;
  for (let s = 0; s < needle.answerSentence; s++) spanStart += pieces[s].length;
  const ids = [...before, ...pieces.flat(), ...hay.slice(at), ...question];
  return { ids, needleAt: before.length, span: [spanStart, spanStart + pieces[needle.answerSentence].length], answerTokens, needle, length, depthPercent };
}
