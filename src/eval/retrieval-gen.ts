/**
 * Seeded generator of retrieval-suite items (passkey, multikey, kv) in the format of `retrieval-dev.jsonl`, so that
 * cokv-retrieval-tiny can be evaluated on more than the 20 public items per task × length.
 *
 * The templates were read off all 180 passkey/multikey/kv dev items (and the model card):
 *
 * - passkey: half the contexts open with {@link PASSKEY_INTRO}; one needle, either "Remember this: the pass key is N."
 *   or "The pass key is N. Remember it.", N a 5-digit number (10000–99999);
 * - multikey: four needles with four distinct key words and distinct 7-digit numbers, all in one of three variants per
 *   item ("The special magic number for W is N.", the same followed by " Remember it.", or "One of the special magic
 *   numbers for W is N."); the question asks for one of the four;
 * - kv: a block `<header>\nline a-b: REGISTER_CONTENT is N\n…` of ⌊0.6·length/18⌋ lines (17, 34, 68 at 512, 1024,
 *   2048: ~60% of the context), keys are two words drawn independently (the same word twice happens), values distinct
 *   5-digit numbers; the block is set off from the text by newlines; the question asks for one line;
 * - the question (`input`) is, with equal chance, the "Question: … Answer: …" or the short "What is …? …" form;
 * - needles (and the kv block) sit between haystack pieces at piece index ⌊d·n⌋, d uniform in [0, 0.95): a piece
 *   boundary may fall inside a sentence (essay lines), as in the dev items;
 * - key words come from the 145 words seen in the dev items' kv keys (the multikey words are a subset of them).
 *
 * Haystack (held-out text only, model card "all evaluation haystacks come from these"): the 5 held-out Paul Graham
 * essays `needle/PaulGrahamEssays/{founders,love,sun,want,wisdom}.txt` and the multi_news documents at lines
 * {@link HELD_OUT_MULTI_NEWS} (0-based) of `longbench/multi_news.jsonl`: the 18 of the card's 20 held-out documents
 * whose text appears in the dev items (the other two cannot be told apart from the 180 training documents, so they
 * are not used). A document is cut into pieces: its lines (essays: the file's wrapped lines; multi_news: the
 * NEWLINE_CHAR paragraphs), each split after sentence ends and whitespace-collapsed; pieces are joined with one space.
 * The haystack is a run of consecutive pieces from a random start (the documents in the order above, cyclically),
 * passing over pieces that no longer fit; after three of those the rest is filled with random pieces that still fit.
 * That is what the dev items show: runs of consecutive pieces and short odd tails ("… particularly what That way we
 * can avoid See video.", where "seems to be the growing gap between them." was passed over).
 *
 * Length rule: `length` is the length of the whole sequence the model was trained on, BOS + context + "\n" + input +
 * " " + answer + EOS. The prompt the runner builds (BOS + context + "\n" + input, {@link promptTokenCount}) therefore
 * targets `length − |" " + answer| − 1` tokens: length − 7 for passkey and kv (space + 5 digits + EOS), length − 9 for
 * multikey. The generated prompt is at most {@link LENGTH_TOLERANCE} tokens short of that target and never over it
 * (pieces are counted one by one, then the joined prompt is measured and its tail trimmed or topped up). The dev
 * items' prompts lie within [length − 16, length − 3] (passkey length − 7 … − 3, multikey − 14 … − 8, kv − 16 … − 6;
 * their generator's counting was looser); the generated ones (length − 7 … − 9, − 9 … − 11) are within that range.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import { Rng } from '../generate/rng.js';
import type { Tokenizer } from '../model/tokenizer/types.js';
import { readTextFile } from './jsonl.js';
import { retrievalPrompt } from './retrieval.js';

/** Tasks the generator makes (the trained families; vartrack and twohop were not trained). */
export const GEN_TASKS = ['passkey', 'multikey', 'kv'] as const;
export type GenTask = (typeof GEN_TASKS)[number];

/** Largest accepted length (the model's trained context). */
export const GEN_MAX_LENGTH = 2048;
/** Smallest accepted length (the shortest trained length in the final phase; shorter prompts are out of distribution). */
export const GEN_MIN_LENGTH = 256;
/** The generated prompt is within this many tokens below its target (and never above). */
export const LENGTH_TOLERANCE = 2;

/** One generated item; the JSONL line has these fields, readable by `readRetrievalSuite`. */
export interface RetrievalGenItem {
  id: string;
  context: string;
  input: string;
  answers: string[];
  task: GenTask;
  length: number;
}

/** One haystack document. */
export interface HaystackDoc {
  name: string;
  text: string;
}

export const PASSKEY_INTRO = 'There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it.';
const PASSKEY_NEEDLES = [(n: string) => `Remember this: the pass key is ${n}.`, (n: string) => `The pass key is ${n}. Remember it.`];
const PASSKEY_INPUTS = [
  'Question: What is the pass key mentioned in the text above? Answer: The pass key is',
  'What is the pass key? The pass key is',
];
const MULTIKEY_NEEDLES = [
  (w: string, n: string) => `The special magic number for ${w} is ${n}.`,
  (w: string, n: string) => `The special magic number for ${w} is ${n}. Remember it.`,
  (w: string, n: string) => `One of the special magic numbers for ${w} is ${n}.`,
];
const MULTIKEY_INPUTS = [
  (w: string) => `Question: What is the special magic number for ${w} mentioned in the text? Answer: The special magic number for ${w} is`,
  (w: string) => `What is the special magic number for ${w}? The special magic number for ${w} is`,
];
/** Needles in the multikey eval (model card). */
export const MULTIKEY_NEEDLE_COUNT = 4;
const KV_HEADERS = ['Below is a record of lines I want you to remember.', 'Here is a list of registers. Each line has a REGISTER_CONTENT value.'];
const KV_INPUTS = [
  (k: string) => `Question: Tell me the REGISTER_CONTENT in line ${k}. Answer: The REGISTER_CONTENT in line ${k} is`,
  (k: string) => `What is the REGISTER_CONTENT in line ${k}? The REGISTER_CONTENT in line ${k} is`,
];
/** Lines in the kv block: ⌊0.6·length/18⌋ (17, 34, 68 lines at 512, 1024, 2048 in the dev items). */
export function kvLineCount(length: number): number {
  return Math.floor((0.6 * length) / 18);
}
/** Needle depth range: piece index ⌊d·n⌋ with d uniform in [0, MAX_DEPTH). */
const MAX_DEPTH = 0.95;

/** Key words: every word of the dev items' kv keys (the multikey words are among them). */
export const KEY_WORDS: readonly string[] = (
  'anchor apple arrow badge banana barrel basket beacon bell berry blanket blossom bottle bracelet bridge bucket button ' +
  'cabin cactus camera candle canyon carpet castle cherry circle cloud clover coffee comet copper cotton crystal dragon ' +
  'eagle engine falcon feather fiddle forest fossil fountain galaxy garden garlic ginger glacier globe goblet granite ' +
  'guitar hammer harbor helmet honey island ivory jacket jasmine jewel jungle kettle kitten ladder lantern lemon lizard ' +
  'magnet mango marble meadow melon mirror monkey mountain needle nickel ocean olive onion orange orchid otter oyster ' +
  'paddle palace panda parrot pebble pencil pepper piano pillow planet pocket potato puzzle quartz rabbit radio raven ' +
  'ribbon river rocket saddle salmon sandal scarf shadow shell silver spider spoon squirrel statue stone sugar summer ' +
  'sunset swan tablet teapot thunder tiger timber tomato tower trumpet tulip turtle umbrella valley velvet violin ' +
  'volcano wagon walnut whale willow window winter wizard wolf yacht zebra'
).split(' ');

/** The held-out Paul Graham essays (model card), in the order of the haystack stream. */
export const HELD_OUT_ESSAYS = ['founders', 'love', 'sun', 'want', 'wisdom'] as const;
/** 0-based lines of `longbench/multi_news.jsonl` whose documents are held out and appear in the dev items. */
export const HELD_OUT_MULTI_NEWS = [0, 2, 14, 33, 39, 54, 58, 64, 73, 75, 82, 83, 94, 109, 132, 175, 178, 185] as const;

/**
 * Read the held-out haystack documents from a data folder laid out like `../shared/assets/data`
 * (`needle/PaulGrahamEssays/*.txt`, `longbench/multi_news.jsonl`). Multi_news documents become plain text with one
 * paragraph per line (their `Passage k:` headers dropped, `NEWLINE_CHAR` turned into newlines).
 */
export function readHeldOutHaystack(dataDir: string): HaystackDoc[] {
  const docs: HaystackDoc[] = [];
  for (const name of HELD_OUT_ESSAYS) {
    docs.push({ name: `essay:${name}`, text: readTextFile(path.join(dataDir, 'needle', 'PaulGrahamEssays', `${name}.txt`)) });
  }
  const mnFile = path.join(dataDir, 'longbench', 'multi_news.jsonl');
  const lines = readTextFile(mnFile).split('\n');
  for (const k of HELD_OUT_MULTI_NEWS) {
    let rec: unknown;
    try {
      rec = JSON.parse(lines[k] ?? '');
    } catch {
      throw new CokvError(`${mnFile}:${k + 1}: not a multi_news JSON line (expected the LongBench file with 200 lines)`, 'format');
    }
    const ctx = (rec as { context?: unknown }).context;
    if (typeof ctx !== 'string') throw new CokvError(`${mnFile}:${k + 1}: missing string field 'context'`, 'format');
    const text = ctx.split(/\n|NEWLINE_CHAR/).filter((l) => !/^\s*Passage \d+:\s*$/.test(l)).join('\n');
    docs.push({ name: `multi_news:${k}`, text });
  }
  return docs;
}

/** Pieces shorter than this ("A", "It", "3.") never appear in the dev items' text runs. */
const MIN_PIECE_CHARS = 3;

/**
 * Split one document into haystack pieces: its lines, each cut at a space after a sentence end (`.`, `!`, `?`, maybe
 * followed by a quote), whitespace collapsed; pieces without a letter or digit or under {@link MIN_PIECE_CHARS}
 * characters are dropped (the dev items read "heart problems . and he would" for the source's "problems . . . and").
 */
export function haystackPieces(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const l = line.replace(/\s+/g, ' ').trim();
    if (l === '') continue;
    for (const s of l.split(/(?<=[.!?]["'”’]?) /)) if (s.length >= MIN_PIECE_CHARS && /[\p{L}\p{N}]/u.test(s)) out.push(s);
  }
  return out;
}

interface PiecePool {
  pieces: string[];
  /** Tokens of " " + piece (how it is tokenized inside the joined text). */
  counts: number[];
}

const poolCache = new WeakMap<Tokenizer, WeakMap<readonly HaystackDoc[], PiecePool>>();

function piecePool(docs: readonly HaystackDoc[], tok: Tokenizer): PiecePool {
  let byDocs = poolCache.get(tok);
  if (!byDocs) poolCache.set(tok, (byDocs = new WeakMap()));
  let pool = byDocs.get(docs);
  if (!pool) {
    const pieces = docs.flatMap((d) => haystackPieces(d.text));
    if (pieces.length < 50) throw new CokvError(`haystack: only ${pieces.length} text pieces; expected the held-out documents`, 'input');
    pool = { pieces, counts: pieces.map((p) => tok.encode(` ${p}`, { addSpecial: false }).length) };
    byDocs.set(docs, pool);
  }
  return pool;
}

/** Tokens of the prompt the runner builds for an item: BOS + context + "\n" + input. */
export function promptTokenCount(tok: Tokenizer, item: { context: string; input: string }): number {
  return tok.encode(retrievalPrompt(item), { addSpecial: false }).length + (tok.bosId !== undefined ? 1 : 0);
}

/** The prompt length an item of this `length` and answer targets: length − |" " + answer| − 1 (EOS). */
export function targetPromptTokens(tok: Tokenizer, length: number, answer: string): number {
  return length - tok.encode(` ${answer}`, { addSpecial: false }).length - 1;
}

/** 32-bit FNV-1a of a string: the seed of one item's random stream. */
function hashSeed(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

function digits(rng: Rng, n: number): string {
  return String(10 ** (n - 1) + rng.int(9 * 10 ** (n - 1)));
}

/** `count` distinct n-digit numbers. */
function distinctNumbers(rng: Rng, count: number, n: number): string[] {
  const seen = new Set<string>();
  while (seen.size < count) seen.add(digits(rng, n));
  return [...seen];
}

/** What goes into the haystack: needles at depths (passkey, multikey) or one kv block. */
interface Layout {
  intro?: string;
  /** Sentences inserted between pieces (joined with spaces). */
  needles: string[];
  /** A block set off by newlines (kv). */
  block?: string;
  input: string;
  answer: string;
}

function layoutFor(task: GenTask, length: number, rng: Rng): Layout {
  if (task === 'passkey') {
    const n = digits(rng, 5);
    const intro = rng.next() < 0.5 ? PASSKEY_INTRO : undefined;
    return { intro, needles: [pick(rng, PASSKEY_NEEDLES)(n)], input: pick(rng, PASSKEY_INPUTS), answer: n };
  }
  if (task === 'multikey') {
    const words: string[] = [];
    while (words.length < MULTIKEY_NEEDLE_COUNT) {
      const w = pick(rng, KEY_WORDS);
      if (!words.includes(w)) words.push(w);
    }
    const values = distinctNumbers(rng, MULTIKEY_NEEDLE_COUNT, 7);
    const needle = pick(rng, MULTIKEY_NEEDLES);
    const q = rng.int(MULTIKEY_NEEDLE_COUNT);
    return { needles: words.map((w, i) => needle(w, values[i])), input: pick(rng, MULTIKEY_INPUTS)(words[q]), answer: values[q] };
  }
  const nLines = kvLineCount(length);
  const keys: string[] = [];
  while (keys.length < nLines) {
    const k = `${pick(rng, KEY_WORDS)}-${pick(rng, KEY_WORDS)}`;
    if (!keys.includes(k)) keys.push(k);
  }
  const values = distinctNumbers(rng, nLines, 5);
  const header = pick(rng, KV_HEADERS);
  const q = rng.int(nLines);
  const block = [header, ...keys.map((k, i) => `line ${k}: REGISTER_CONTENT is ${values[i]}`)].join('\n');
  return { needles: [], block, input: pick(rng, KV_INPUTS)(keys[q]), answer: values[q] };
}

/** A haystack under construction: its pieces in order and their token counts. */
interface Draft {
  pieces: string[];
  counts: number[];
}

/** Pieces that do not fit and are passed over before the consecutive run gives way to random pieces. */
const RUN_SKIPS = 3;

/**
 * Append consecutive pieces from `start`, passing over those that do not fit; after {@link RUN_SKIPS} of those, fill
 * the rest with random pieces that still fit. Returns the tokens left.
 */
function fill(draft: Draft, pool: PiecePool, budget: number, rng: Rng, start?: number): number {
  let left = budget;
  if (start !== undefined) {
    for (let i = start, skips = 0; skips < RUN_SKIPS && left > 0; i = (i + 1) % pool.pieces.length) {
      if (pool.counts[i] > left) {
        skips++;
        continue;
      }
      draft.pieces.push(pool.pieces[i]);
      draft.counts.push(pool.counts[i]);
      left -= pool.counts[i];
    }
  }
  for (let tries = 0; tries < 2000 && left > 0; tries++) {
    const i = rng.int(pool.pieces.length);
    if (pool.counts[i] > left) continue;
    draft.pieces.push(pool.pieces[i]);
    draft.counts.push(pool.counts[i]);
    left -= pool.counts[i];
  }
  return left;
}

function assemble(lay: Layout, pieces: readonly string[], slots: readonly number[]): string {
  if (lay.block !== undefined) {
    const pre = pieces.slice(0, slots[0]).join(' ');
    const post = pieces.slice(slots[0]).join(' ');
    return `${pre === '' ? '' : `${pre}\n`}${lay.block}\n${post}`;
  }
  const parts: string[] = lay.intro !== undefined ? [lay.intro] : [];
  let k = 0;
  for (let i = 0; i <= pieces.length; i++) {
    while (k < slots.length && slots[k] === i) parts.push(lay.needles[k++]);
    if (i < pieces.length) parts.push(pieces[i]);
  }
  return parts.join(' ');
}

function occurrences(text: string, sub: string): number {
  return text.split(sub).length - 1;
}

/** One item, or undefined when this draw cannot meet the checks (the caller draws again from the same stream). */
function tryItem(task: GenTask, length: number, rng: Rng, tok: Tokenizer, pool: PiecePool): { context: string; input: string; answer: string } | undefined {
  const lay = layoutFor(task, length, rng);
  const target = targetPromptTokens(tok, length, lay.answer);
  const fixed = promptTokenCount(tok, { context: assemble(lay, [], lay.block !== undefined ? [0] : lay.needles.map(() => 0)), input: lay.input });
  const draft: Draft = { pieces: [], counts: [] };
  fill(draft, pool, target - fixed, rng, rng.int(pool.pieces.length));
  if (draft.pieces.length < 2) return undefined;
  const nSlots = lay.block !== undefined ? 1 : lay.needles.length;
  const slots = Array.from({ length: nSlots }, () => Math.floor(rng.next() * MAX_DEPTH * draft.pieces.length)).sort((a, b) => a - b);
  // The pieces were counted one by one; the joined text may tokenize a few tokens differently. Trim or top up the
  // tail (after the last slot) until the prompt is within the tolerance below the target.
  for (let round = 0; round < 20; round++) {
    const context = assemble(lay, draft.pieces, slots);
    const n = promptTokenCount(tok, { context, input: lay.input });
    if (n <= target && n >= target - LENGTH_TOLERANCE) {
      if (occurrences(context, lay.answer) !== 1) return undefined;
      return { context, input: lay.input, answer: lay.answer };
    }
    if (n > target) {
      if (draft.pieces.length <= slots[slots.length - 1] + 1) return undefined;
      draft.pieces.pop();
      draft.counts.pop();
    } else {
      fill(draft, pool, target - n, rng);
    }
  }
  return undefined;
}

export interface RetrievalGenOptions {
  task: GenTask;
  /** Nominal length in tokens (`length` field; see the length rule above). */
  length: number;
  count: number;
  seed: number;
  tokenizer: Tokenizer;
  /** Held-out documents ({@link readHeldOutHaystack}). */
  haystack: readonly HaystackDoc[];
}

/** Item id: `gen-<task>-<length>-<seed>-<i>` (dev items have no id field and read as `<task>-<length>-<k>`). */
export function genItemId(task: string, length: number, seed: number, i: number): string {
  return `gen-${task}-${length}-${seed}-${i}`;
}

/**
 * Generate `count` items of one task and length. Item i depends only on (task, length, seed, i): a smaller count
 * gives a prefix of a larger one.
 */
export function generateRetrievalItems(o: RetrievalGenOptions): RetrievalGenItem[] {
  if (!(GEN_TASKS as readonly string[]).includes(o.task)) throw new CokvError(`task '${o.task}' must be one of ${GEN_TASKS.join(', ')}`, 'flag');
  if (!Number.isInteger(o.length) || o.length < GEN_MIN_LENGTH || o.length > GEN_MAX_LENGTH) {
    throw new CokvError(`length ${o.length} must be an integer from ${GEN_MIN_LENGTH} to ${GEN_MAX_LENGTH}`, 'flag');
  }
  if (!Number.isInteger(o.count) || o.count < 1) throw new CokvError(`count ${o.count} must be a positive integer`, 'flag');
  if (!Number.isInteger(o.seed)) throw new CokvError(`seed ${o.seed} must be an integer`, 'flag');
  const pool = piecePool(o.haystack, o.tokenizer);
  const items: RetrievalGenItem[] = [];
  for (let i = 0; i < o.count; i++) {
    const rng = new Rng(hashSeed(`${o.seed}:${o.task}:${o.length}:${i}`));
    let made: ReturnType<typeof tryItem>;
    for (let attempt = 0; attempt < 50 && made === undefined; attempt++) made = tryItem(o.task, o.length, rng, o.tokenizer, pool);
    if (made === undefined) throw new CokvError(`cannot build ${o.task} item ${i} at length ${o.length} within the length tolerance`, 'input');
    items.push({ id: genItemId(o.task, o.length, o.seed, i), context: made.context, input: made.input, answers: [made.answer], task: o.task, length: o.length });
  }
  return items;
}

/** Write items as JSONL (fields id, context, input, answers, task, length). */
export function writeRetrievalItems(file: string, items: readonly RetrievalGenItem[]): void {
  const dir = path.dirname(file);
  if (dir !== '' && !fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, items.map((it) => JSON.stringify(it)).join('\n') + '\n');
}
