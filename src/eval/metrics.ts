/**
 * LongBench metrics, reproducing THUDM/LongBench `metrics.py` + `eval.py` as run with `rouge==1.0.1` and
 * `fuzzywuzzy==0.18.0` without python-Levenshtein (pure `difflib`), Python 3.x string semantics:
 *
 * - strings are compared and measured in Unicode code points (Python `len`, slicing), not UTF-16 units;
 * - `str.split()` without arguments splits on Python's whitespace set (which differs slightly from JS `\s`);
 * - `\d` and `\b` in Python `re` are Unicode-aware;
 * - `round` is Python's correctly rounded, ties-to-even rounding.
 *
 * Every function returns a number in [0, 1] (LongBench multiplies by 100 only for the dataset score).
 */
import { CokvError } from '../errors.js';
import { datasetInfo } from './datasets.js';

// ---------------------------------------------------------------------------------------------------------------
// Python string helpers

/** Python's `str.isspace()` characters (ASCII controls 0x1c-0x1f and U+0085 included; U+FEFF excluded, unlike JS). */
const PY_WS = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_WS_RUN = new RegExp(`[${PY_WS}]+`, 'u');

/** Python `s.split()` (no separator): split on runs of whitespace, dropping empty pieces. */
export function pySplit(s: string): string[] {
  return s.split(PY_WS_RUN).filter((p) => p.length > 0);
}

/** Python `s.strip()` (no argument). */
export function pyStrip(s: string): string {
  return s.replace(PY_WS_EDGES, '');
}
const PY_WS_EDGES = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'gu');
const PY_WS_LEADING = new RegExp(`^[${PY_WS}]+`, 'u');
const PY_WS_CHAR = new RegExp(`^[${PY_WS}]$`, 'u');

/** ASCII `string.punctuation`. */
export const ASCII_PUNCTUATION = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';
const PUNCT_SET = new Set(ASCII_PUNCTUATION);

/**
 * Python `round(x)` / `round(x, ndigits)` for floats: the exact binary value is rounded, exact ties go to even.
 * `toFixed` already rounds the exact value correctly but breaks exact ties upwards. x is exactly halfway between two
 * multiples of 10^-n iff x = q / 2^(n+1) with q odd (the 5^n part of the denominator must cancel), which is tested
 * exactly since multiplying by a power of two is exact.
 */
export function pyRound(x: number, ndigits = 0): number {
  if (!Number.isFinite(x)) return x;
  const q = x * 2 ** (ndigits + 1);
  if (Number.isInteger(q) && Math.abs(q) % 2 === 1 && Math.abs(q) < 2 ** 53) {
    const scaled = (q * 5 ** ndigits) / 2; // x·10^n = m + 1/2 exactly
    const lo = Math.floor(scaled);
    const even = lo % 2 === 0 ? lo : lo + 1;
    return ndigits === 0 ? even : Number((even / 10 ** ndigits).toFixed(ndigits));
  }
  return ndigits === 0 ? Math.round(x) : Number(x.toFixed(ndigits));
}

/** Split into code points (Python indexing unit). */
function codePoints(s: string): string[] {
  return Array.from(s);
}

// ---------------------------------------------------------------------------------------------------------------
// qa_f1

const WORD = '[\\p{L}\\p{N}_]'; // Python `\w` for str patterns: isalnum() or '_'
const ARTICLES = new RegExp(`(?<!${WORD})(?:a|an|the)(?!${WORD})`, 'gu');

/** LongBench `normalize_answer`: lowercase, drop ASCII punctuation, articles → " ", collapse whitespace. */
export function normalizeAnswer(s: string): string {
  const lower = s.toLowerCase();
  let noPunc = '';
  for (const ch of lower) if (!PUNCT_SET.has(ch)) noPunc += ch;
  const noArticles = noPunc.replace(ARTICLES, ' ');
  return pySplit(noArticles).join(' ');
}

/** Multiset token F1 (`f1_score`): 0 when nothing overlaps. */
export function tokenF1(prediction: readonly string[], groundTruth: readonly string[]): number {
  const counts = new Map<string, number>();
  for (const t of groundTruth) counts.set(t, (counts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of prediction) {
    const c = counts.get(t) ?? 0;
    if (c > 0) {
      same++;
      counts.set(t, c - 1);
    }
  }
  if (same === 0) return 0;
  const precision = (1.0 * same) / prediction.length;
  const recall = (1.0 * same) / groundTruth.length;
  return (2 * precision * recall) / (precision + recall);
}

/** `qa_f1_score`. */
export function qaF1Score(prediction: string, groundTruth: string): number {
  return tokenF1(pySplit(normalizeAnswer(prediction)), pySplit(normalizeAnswer(groundTruth)));
}

// ---------------------------------------------------------------------------------------------------------------
// rouge_l (pltrdy rouge 1.0.1, summary-level ROUGE-L, exclusive sets)

/**
 * `rouge 1.0.1` reconstructs each LCS with a recursive function; Python's default recursion limit (1000) makes
 * that raise `RecursionError` (caught by LongBench's bare `except` → score 0) when the backtracking path needs more
 * frames than are left. Measured with LongBench `eval.py`'s call stack on CPython 3.11: 991 frames of `_recon` fit,
 * 992 do not (a 990-word hypothesis sentence whose only match is its first word against a 1-word reference works).
 */
export const ROUGE_RECON_FRAME_LIMIT = 991;

class RougeError extends Error {}

/** rouge's sentence split: pieces of `text.split(".")` with len > 0, each whitespace-normalised (may become ""). */
function rougeSentences(text: string): string[] {
  return text.split('.').filter((p) => p.length > 0).map((p) => pySplit(p).join(' '));
}

/** Words of one normalised sentence (`sentence.split(" ")`, so "" gives [""]). */
function words(sentence: string): string[] {
  return sentence.split(' ');
}

/** Distinct words of the LCS of x (reference) and y (hypothesis), reconstructed like `_recon_lcs`. */
function reconLcsWords(x: readonly string[], y: readonly string[], into: Set<string>): void {
  const n = x.length;
  const m = y.length;
  const w = m + 1;
  const table = new Int32Array((n + 1) * w);
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= m; j++) {
      table[i * w + j] = x[i - 1] === y[j - 1]
        ? table[(i - 1) * w + j - 1] + 1
        : Math.max(table[(i - 1) * w + j], table[i * w + j - 1]);
    }
  }
  let i = n;
  let j = m;
  let frames = 1;
  const found: string[] = [];
  while (i !== 0 && j !== 0) {
    if (x[i - 1] === y[j - 1]) {
      found.push(x[i - 1]);
      i--;
      j--;
    } else if (table[(i - 1) * w + j] > table[i * w + j - 1]) {
      i--;
    } else {
      j--;
    }
    frames++;
  }
  if (frames > ROUGE_RECON_FRAME_LIMIT) throw new RougeError('maximum recursion depth exceeded');
  for (const f of found) into.add(f);
}

/** `Rouge().get_scores([hyp], [ref], avg=True)["rouge-l"]` (f, p, r); throws RougeError where rouge raises. */
export function rougeL(hypothesis: string, reference: string): { f: number; p: number; r: number } {
  const hyp = rougeSentences(hypothesis);
  const ref = rougeSentences(reference);
  // rouge-1 and rouge-2 run first and raise "Hypothesis is empty." / "Reference is empty." on no sentences.
  if (hyp.length === 0) throw new RougeError('Hypothesis is empty.');
  if (ref.length === 0) throw new RougeError('Reference is empty.');
  const refWords = ref.flatMap(words);
  const hypWords = hyp.flatMap(words);
  const m = new Set(refWords).size;
  const n = new Set(hypWords).size;
  const union = new Set<string>();
  const hypSplit = hyp.map(words);
  for (const r of ref) {
    const rw = words(r);
    for (const hw of hypSplit) reconLcsWords(rw, hw, union);
  }
  const llcs = union.size;
  const r = llcs / m;
  const p = llcs / n;
  const f = 2.0 * ((p * r) / (p + r + 1e-8));
  return { f, p, r };
}

/** `rouge_score`: ROUGE-L F, 0 where the rouge library raises. */
export function rougeScore(prediction: string, groundTruth: string): number {
  try {
    return rougeL(prediction, groundTruth).f;
  } catch (err) {
    if (err instanceof RougeError) return 0;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// classification, retrieval, count

/**
 * `classification_score`, including the reference's removal from the list it is iterating over (Python's list
 * iterator advances an index, so the element after each removed one is skipped).
 */
export function classificationScore(prediction: string, groundTruth: string, allClasses: readonly string[]): number {
  const matches: string[] = [];
  for (const c of allClasses) if (prediction.includes(c)) matches.push(c);
  for (let idx = 0; idx < matches.length; idx++) {
    const t = matches[idx];
    if (groundTruth.includes(t) && t !== groundTruth) matches.splice(matches.indexOf(t), 1);
  }
  return matches.includes(groundTruth) ? 1.0 / matches.length : 0.0;
}

const DIGITS = /\p{Nd}+/gu; // Python `\d` on str is any Unicode decimal digit

function numberShare(prediction: string, target: string): number {
  const numbers: string[] = prediction.match(DIGITS) ?? [];
  let right = 0;
  for (const num of numbers) if (num === target) right++;
  return numbers.length === 0 ? 0.0 : right / numbers.length;
}

/** `retrieval_score`: share of numbers in the prediction equal to the paragraph id in `Paragraph N` of the answer. */
export function retrievalScore(prediction: string, groundTruth: string): number {
  const m = /Paragraph (\p{Nd}+)/u.exec(groundTruth);
  // The reference raises IndexError here; we make it a clear input error.
  if (!m) throw new CokvError(`retrieval answer '${groundTruth.slice(0, 60)}' has no 'Paragraph N'`, 'format');
  return numberShare(prediction, m[1]);
}

/** `count_score`: share of numbers in the prediction equal to the answer. */
export function countScore(prediction: string, groundTruth: string): number {
  return numberShare(prediction, groundTruth);
}

// ---------------------------------------------------------------------------------------------------------------
// code_sim: fuzz.ratio over difflib.SequenceMatcher

/** Python `difflib.SequenceMatcher(None, a, b).ratio()` with autojunk (b ≥ 200 code points) on code points. */
export function sequenceMatcherRatio(a: string, b: string, autojunk = true): number {
  const A = codePoints(a);
  const B = codePoints(b);
  const total = A.length + B.length;
  if (total === 0) return 1.0;
  return (2.0 * matchingCharacters(A, B, autojunk)) / total;
}

/** Sum of the sizes of `get_matching_blocks()` (the only thing `ratio` needs). */
function matchingCharacters(a: readonly string[], b: readonly string[], autojunk: boolean): number {
  // __chain_b: index positions of each element of b; with autojunk, drop "popular" elements (> 1% + 1).
  const b2j = new Map<string, number[]>();
  b.forEach((elt, i) => {
    const list = b2j.get(elt);
    if (list) list.push(i);
    else b2j.set(elt, [i]);
  });
  const n = b.length;
  if (autojunk && n >= 200) {
    const ntest = Math.floor(n / 100) + 1;
    for (const [elt, idxs] of [...b2j]) if (idxs.length > ntest) b2j.delete(elt);
  }
  // No isjunk function: bjunk is empty, so the junk-extension passes of find_longest_match never run and every
  // element of b counts as non-junk in the first extension pass (popular elements included).
  const nothing: number[] = [];
  const findLongest = (alo: number, ahi: number, blo: number, bhi: number): [number, number, number] => {
    let besti = alo;
    let bestj = blo;
    let bestsize = 0;
    let j2len = new Map<number, number>();
    for (let i = alo; i < ahi; i++) {
      const newj2len = new Map<number, number>();
      for (const j of b2j.get(a[i]) ?? nothing) {
        if (j < blo) continue;
        if (j >= bhi) break;
        const k = (j2len.get(j - 1) ?? 0) + 1;
        newj2len.set(j, k);
        if (k > bestsize) {
          besti = i - k + 1;
          bestj = j - k + 1;
          bestsize = k;
        }
      }
      j2len = newj2len;
    }
    while (besti > alo && bestj > blo && a[besti - 1] === b[bestj - 1]) {
      besti--;
      bestj--;
      bestsize++;
    }
    while (besti + bestsize < ahi && bestj + bestsize < bhi && a[besti + bestsize] === b[bestj + bestsize]) bestsize++;
    return [besti, bestj, bestsize];
  };
  let matches = 0;
  const queue: [number, number, number, number][] = [[0, a.length, 0, b.length]];
  while (queue.length > 0) {
    const [alo, ahi, blo, bhi] = queue.pop()!;
    const [i, j, k] = findLongest(alo, ahi, blo, bhi);
    if (k) {
      matches += k;
      if (alo < i && blo < j) queue.push([alo, i, blo, j]);
      if (i + k < ahi && j + k < bhi) queue.push([i + k, ahi, j + k, bhi]);
    }
  }
  return matches;
}

/** fuzzywuzzy 0.18.0 `fuzz.ratio` (pure-Python path): 100 if equal, 0 if either is empty, else round(100·ratio). */
export function fuzzRatio(s1: string, s2: string): number {
  if (s1 === s2) return 100;
  if (s1.length === 0 || s2.length === 0) return 0;
  return pyRound(100 * sequenceMatcherRatio(s1, s2));
}

/** `code_sim_score`: first line with no "`", "#" or "//" (else ""), fuzz.ratio / 100 against the answer. */
export function codeSimScore(prediction: string, groundTruth: string): number {
  const lines = lstripNewlines(prediction).split('\n');
  let line = '';
  for (const l of lines) {
    if (!l.includes('`') && !l.includes('#') && !l.includes('//')) {
      line = l;
      break;
    }
  }
  return fuzzRatio(line, groundTruth) / 100;
}

// ---------------------------------------------------------------------------------------------------------------
// other suites (not LongBench)

/** Strip leading whitespace, keep the first line, strip trailing whitespace and ASCII punctuation. */
export function normalizeExact(s: string): string {
  const first = s.replace(PY_WS_LEADING, '').split('\n')[0];
  let end = first.length;
  while (end > 0) {
    const ch = first[end - 1];
    if (PUNCT_SET.has(ch) || PY_WS_CHAR.test(ch)) end--;
    else break;
  }
  return first.slice(0, end);
}

/**
 * Exact match for the retrieval suite (cokv-retrieval-tiny model card): the prediction's first line, without leading
 * whitespace and trailing whitespace/punctuation, equals the answer (normalised the same way). 1 or 0.
 */
export function exactMatchScore(prediction: string, groundTruth: string): number {
  return normalizeExact(prediction) === normalizeExact(groundTruth) ? 1 : 0;
}

/**
 * Whether some continuation of `prefix` can still exact-match one of `answers` (after `normalizeExact`); false
 * means every prediction that starts with `prefix` scores 0. With Q = `prefix` without leading whitespace: if Q
 * already holds a newline, the first line is fixed; otherwise the final normalized text is either Q with its trailing
 * whitespace/punctuation stripped (everything after it is stripped too) or Q followed by more. A prefix with a
 * U+FFFD (an incomplete UTF-8 sequence that later bytes may complete) is never ruled out.
 */
export function exactMatchStillPossible(prefix: string, answers: readonly string[]): boolean {
  if (prefix.includes('\uFFFD')) return true;
  const q = prefix.replace(PY_WS_LEADING, '');
  if (q.includes('\n')) return answers.some((a) => exactMatchScore(prefix, a) === 1);
  const stripped = normalizeExact(q);
  return answers.some((a) => {
    const na = normalizeExact(a);
    return na === stripped || (na.length > q.length && na.startsWith(q));
  });
}

/** RULER `string_match_all` for one reference: the reference occurs in the prediction, case-insensitively. */
export function substringMatchScore(prediction: string, groundTruth: string): number {
  return prediction.toLowerCase().includes(groundTruth.toLowerCase()) ? 1 : 0;
}

/** LongEval lines: the expected number occurs in the prediction as a whole number (not inside a longer one). */
export function numberMatchScore(prediction: string, groundTruth: string): number {
  const numbers: string[] = prediction.match(DIGITS) ?? [];
  return numbers.includes(groundTruth.trim()) ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// dataset scoring (eval.py `scorer`)

export type MetricName =
  | 'qa_f1' | 'rouge_l' | 'classification' | 'retrieval' | 'count' | 'code_sim'
  | 'exact_match' | 'substring_match' | 'number_match';

export const METRIC_NAMES: readonly MetricName[] = [
  'qa_f1', 'rouge_l', 'classification', 'retrieval', 'count', 'code_sim', 'exact_match', 'substring_match', 'number_match',
];

/** One sample's score against one answer with the named metric (no first-line rule). */
export function metricScore(metric: MetricName, prediction: string, answer: string, allClasses?: readonly string[] | null): number {
  switch (metric) {
    case 'qa_f1': return qaF1Score(prediction, answer);
    case 'rouge_l': return rougeScore(prediction, answer);
    case 'classification':
      if (!allClasses) throw new CokvError('classification needs all_classes', 'format');
      return classificationScore(prediction, answer, allClasses);
    case 'retrieval': return retrievalScore(prediction, answer);
    case 'count': return countScore(prediction, answer);
    case 'code_sim': return codeSimScore(prediction, answer);
    case 'exact_match': return exactMatchScore(prediction, answer);
    case 'substring_match': return substringMatchScore(prediction, answer);
    case 'number_match': return numberMatchScore(prediction, answer);
  }
}

/** Python `s.lstrip('\n')`. */
function lstripNewlines(s: string): string {
  let i = 0;
  while (i < s.length && s[i] === '\n') i++;
  return s.slice(i);
}

/** The first-line rule of eval.py: `pred.lstrip('\n').split('\n')[0]`. */
export function firstLine(prediction: string): string {
  return lstripNewlines(prediction).split('\n')[0];
}

/** Score of one sample: max over answers (starting from 0), after the dataset's first-line rule. */
export function scoreSample(
  dataset: string, prediction: string, answers: readonly string[], allClasses?: readonly string[] | null,
): number {
  const info = datasetInfo(dataset);
  const pred = info.firstLine ? firstLine(prediction) : prediction;
  let score = 0;
  for (const a of answers) score = Math.max(score, metricScore(info.metric, pred, a, allClasses));
  return score;
}

export interface DatasetScore {
  /** `round(100 · mean, 2)` as in LongBench eval.py. */
  score: number;
  /** Per-sample scores in [0, 1]. */
  scores: number[];
}

/**
 * eval.py `scorer`: per-sample max over answers, `round(100 * total / n, 2)`. `allClasses` is either one list for
 * the whole dataset (LongBench stores the same list on every trec/lsht line) or one entry per sample.
 */
export function scoreDataset(
  dataset: string,
  predictions: readonly string[],
  answers: readonly (readonly string[])[],
  allClasses?: readonly string[] | null | readonly (readonly string[] | null | undefined)[],
): DatasetScore {
  if (predictions.length !== answers.length) {
    throw new CokvError(`${dataset}: ${predictions.length} predictions but ${answers.length} answer lists`, 'format');
  }
  if (predictions.length === 0) throw new CokvError(`${dataset}: no predictions to score`, 'format');
  const perSample = Array.isArray(allClasses) && allClasses.length > 0 && allClasses.every((c) => c == null || Array.isArray(c));
  const scores: number[] = [];
  let total = 0.0;
  predictions.forEach((p, i) => {
    const cls = perSample
      ? ((allClasses as readonly (readonly string[] | null | undefined)[])[i] ?? null)
      : ((allClasses as readonly string[] | null | undefined) ?? null);
    const s = scoreSample(dataset, p, answers[i], cls);
    scores.push(s);
    total += s;
  });
  return { score: pyRound((100 * total) / predictions.length, 2), scores };
}

/** eval.py's dataset score from per-sample scores: `round(100 * total / n, 2)`, summing in order. */
export function aggregateScores(scores: readonly number[]): number {
  if (scores.length === 0) throw new CokvError('no scores to aggregate', 'format');
  let total = 0.0;
  for (const s of scores) total += s;
  return pyRound((100 * total) / scores.length, 2);
}
