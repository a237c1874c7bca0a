/**
 * Registry of evaluation datasets (metric, first-line rule, generation length, file reader) and the seeded
 * validation/test split.
 */
import { CokvError } from '../errors.js';
import type { MetricName } from './metrics.js';
import type { JsonlOptions } from './jsonl.js';
import {
  DATASET2MAXLEN, FIRST_LINE_DATASETS, LONGBENCH_EN_DATASETS, LONGBENCH_METRIC, buildLongBenchPrompt, formatTemplate,
  longBenchTemplate, readLongBench, type LongBenchSample,
} from './longbench.js';

/**
 * The part of a LongBench prompt after the context (the question and answer cue), or undefined when the template
 * asks the question before the context (then no context-only split exists).
 */
function longBenchQuestion(dataset: string, s: LongBenchSample): string | undefined {
  const t = longBenchTemplate(dataset);
  const c = t.indexOf('{context}');
  const q = t.indexOf('{input}');
  if (c < 0 || (q >= 0 && q < c)) return undefined;
  return formatTemplate(t.slice(c + '{context}'.length), s.fields);
}
import { readLongEval, readRetrievalSuite, readRuler, readStories, type EvalItem } from './retrieval.js';

export type DatasetFamily = 'longbench' | 'retrieval' | 'ruler' | 'longeval' | 'stories';

export interface DatasetInfo {
  name: string;
  family: DatasetFamily;
  metric: MetricName;
  /** Score only the first line of the prediction (`pred.lstrip('\n').split('\n')[0]`). */
  firstLine: boolean;
  /** Most new tokens to generate. */
  maxNewTokens: number;
  /** Stop generation at a newline (samsum in LongBench; the retrieval suite). */
  stopAtNewline: boolean;
}

const OTHER: readonly DatasetInfo[] = [
  // Model card: greedy, stop at </s> or a newline token; answers are ≤ 7 digits or 4 short words.
  { name: 'retrieval', family: 'retrieval', metric: 'exact_match', firstLine: false, maxNewTokens: 24, stopAtNewline: true },
  // RULER generates up to 128 tokens for NIAH tasks.
  { name: 'ruler', family: 'ruler', metric: 'substring_match', firstLine: false, maxNewTokens: 128, stopAtNewline: false },
  { name: 'longeval', family: 'longeval', metric: 'number_match', firstLine: false, maxNewTokens: 32, stopAtNewline: false },
  { name: 'stories', family: 'stories', metric: 'rouge_l', firstLine: false, maxNewTokens: 32, stopAtNewline: false },
];

const REGISTRY: ReadonlyMap<string, DatasetInfo> = new Map([
  ...LONGBENCH_EN_DATASETS.map((name): [string, DatasetInfo] => [name, {
    name, family: 'longbench', metric: LONGBENCH_METRIC[name], firstLine: FIRST_LINE_DATASETS.has(name),
    maxNewTokens: DATASET2MAXLEN[name], stopAtNewline: name === 'samsum',
  }]),
  ...OTHER.map((d): [string, DatasetInfo] => [d.name, d]),
]);

/** All dataset names `datasetInfo` accepts (16 LongBench English tasks, then the other suites). */
export function knownDatasets(): string[] {
  return [...REGISTRY.keys()];
}

/** Facts about a dataset, or a CokvError listing the known names. */
export function datasetInfo(name: string): DatasetInfo {
  const info = REGISTRY.get(name);
  if (!info) throw new CokvError(`unknown dataset '${name}' (known: ${knownDatasets().join(', ')})`, 'flag');
  return info;
}

/** Read a dataset file into prompts + answers (LongBench prompts are templated but not yet truncated). */
export function loadEvalItems(dataset: string, file: string, opts: JsonlOptions = {}): EvalItem[] {
  const info = datasetInfo(dataset);
  switch (info.family) {
    case 'longbench':
      return readLongBench(file, opts).map((s) => ({
        id: s.id, dataset, length: s.length, prompt: buildLongBenchPrompt(dataset, s), answers: s.answers,
        allClasses: s.allClasses, question: longBenchQuestion(dataset, s),
      }));
    case 'retrieval': return readRetrievalSuite(file, opts);
    case 'ruler': return readRuler(file, opts);
    case 'longeval': return readLongEval(file, opts);
    case 'stories': return readStories(file, opts);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// seeded split

/** FNV-1a over UTF-16 units, then the murmur3 finaliser: a well-mixed 32-bit hash. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface Split {
  validation: string[];
  test: string[];
}

/**
 * Deterministic validation/test split. Each id gets the key `hash32(seed + "\0" + id)`; the `round(fraction · n)`
 * ids with the smallest keys (ties by id) form the validation part, the rest the test part. Both parts keep the
 * input order. The result does not depend on the order of `ids`, only on the set, the seed and the fraction, so the
 * same seed gives the same split on every machine. Ids must be unique.
 */
export function splitIds(ids: readonly string[], seed: number, fraction = 0.15): Split {
  if (!Number.isInteger(seed)) throw new CokvError(`split seed must be an integer, got ${seed}`, 'flag');
  if (!(fraction >= 0 && fraction <= 1)) throw new CokvError(`split fraction must be in [0, 1], got ${fraction}`, 'flag');
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) throw new CokvError(`split: duplicate id '${id}'`, 'format');
    seen.add(id);
  }
  const nVal = Math.round(fraction * ids.length);
  const keyed = ids.map((id) => ({ id, key: hash32(`${seed}\u0000${id}`) }));
  keyed.sort((a, b) => a.key - b.key || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const val = new Set(keyed.slice(0, nVal).map((k) => k.id));
  return { validation: ids.filter((id) => val.has(id)), test: ids.filter((id) => !val.has(id)) };
}

/** Split items by id (see `splitIds`). */
export function splitItems<T extends { id: string }>(items: readonly T[], seed: number, fraction = 0.15): { validation: T[]; test: T[] } {
  const s = splitIds(items.map((i) => i.id), seed, fraction);
  const val = new Set(s.validation);
  return { validation: items.filter((i) => val.has(i.id)), test: items.filter((i) => !val.has(i.id)) };
}
