/**
 * Non-LongBench evaluation files:
 *
 * - retrieval suite (`retrieval-dev.jsonl`, for cokv-retrieval-tiny, or `cokv gen-retrieval` output): fields `context`,
 *   `input`, `answers`, `task`, `length`, optional `id`; prompt = context + "\n" + input (the caller prepends BOS); exact match after stripping trailing
 *   punctuation and whitespace (model card);
 * - RULER (`ruler_*.jsonl`): fields `index`, `input` (the whole prompt), `outputs`; RULER `string_match_all`
 *   (each reference contained in the prediction, case-insensitive);
 * - LongEval lines (`longeval_lines_*.jsonl`): fields `prompt`, `expected_number`, `correct_line`, `random_idx`;
 *   the expected number must appear in the prediction as a whole number;
 * - stories (`stories-dev.jsonl`): `_id`, `context` (the prompt), `answers` (the reference continuation).
 */
import { CokvError } from '../errors.js';
import {
  numberField, optionalNumberField, optionalStringField, readJsonl, stringArrayField, stringField, where,
  type JsonlOptions, type JsonlRecord,
} from './jsonl.js';

/** One prompt to run and score, whatever file it came from. */
export interface EvalItem {
  /** Stable id (from the file, or derived from task/length/position). */
  id: string;
  /** Dataset / suite name as known to `datasetInfo`. */
  dataset: string;
  /** Sub-task (retrieval suite: passkey, multikey, kv, vartrack, twohop). */
  task?: string;
  /** Nominal length (tokens) as stored in the file. */
  length?: number;
  /** Full prompt text without BOS (the caller tokenizes with BOS). */
  prompt: string;
  /**
   * The trailing part of `prompt` that asks the question (`prompt` ends with it), when the format separates it:
   * the context-only protocol compresses the cache of the text before it.
   */
  question?: string;
  answers: string[];
  allClasses: string[] | null;
}

/** The retrieval suite's task families (`vartrack` and `twohop` were not trained on cokv-retrieval-tiny). */
export const RETRIEVAL_TASKS = ['passkey', 'multikey', 'kv', 'vartrack', 'twohop'] as const;

/** Prompt format of the retrieval suite: context, newline, question with answer cue. */
export function retrievalPrompt(item: { context: string; input: string }): string {
  return `${item.context}\n${item.input}`;
}

/**
 * Read `retrieval-dev.jsonl` (or generated items); ids are the `id` field when present (generated items:
 * `gen-{task}-{length}-{seed}-{i}`), else `{task}-{length}-{k}` (k counts items of that task and length).
 */
export function readRetrievalSuite(file: string, opts: JsonlOptions = {}): EvalItem[] {
  const seen = new Map<string, number>();
  const ids = new Set<string>();
  return readJsonl(file, opts).map((rec) => {
    const context = stringField(rec, 'context', file);
    const input = stringField(rec, 'input', file);
    const task = stringField(rec, 'task', file);
    const length = numberField(rec, 'length', file, true);
    const key = `${task}-${length}`;
    const k = seen.get(key) ?? 0;
    seen.set(key, k + 1);
    const id = optionalStringField(rec, 'id', file) ?? `${key}-${k}`;
    if (ids.has(id)) throw new CokvError(`${where(file, rec)}: duplicate item id '${id}'`, 'format');
    ids.add(id);
    return {
      id, dataset: 'retrieval', task, length, prompt: retrievalPrompt({ context, input }), question: `\n${input}`,
      answers: stringArrayField(rec, 'answers', file), allClasses: null,
    };
  });
}

/** Read a RULER file (`index`, `input`, `outputs`, optional `length`). */
export function readRuler(file: string, opts: JsonlOptions = {}): EvalItem[] {
  return readJsonl(file, opts).map((rec) => ({
    id: String(optionalNumberField(rec, 'index', file, true) ?? rec.line),
    dataset: 'ruler',
    length: optionalNumberField(rec, 'length', file),
    prompt: stringField(rec, 'input', file),
    answers: stringArrayField(rec, 'outputs', file),
    allClasses: null,
  }));
}

function longevalId(rec: JsonlRecord, file: string): string {
  const r = rec.value.random_idx;
  if (Array.isArray(r) && typeof r[0] === 'string') return r[0];
  if (r !== undefined) throw new CokvError(`${where(file, rec)}: field 'random_idx' must be [name, index]`, 'format');
  return `line${rec.line}`;
}

/** Read a LongEval lines file (`prompt`, `expected_number`; id = the asked line's name). */
export function readLongEval(file: string, opts: JsonlOptions = {}): EvalItem[] {
  return readJsonl(file, opts).map((rec) => ({
    id: longevalId(rec, file),
    dataset: 'longeval',
    length: optionalNumberField(rec, 'token_size', file),
    prompt: stringField(rec, 'prompt', file),
    answers: [String(numberField(rec, 'expected_number', file, true))],
    allClasses: null,
  }));
}

/** Read the stories continuation file (`context` is the prompt, `answers` the reference continuation). */
export function readStories(file: string, opts: JsonlOptions = {}): EvalItem[] {
  return readJsonl(file, opts).map((rec) => ({
    id: optionalStringField(rec, '_id', file) ?? `line${rec.line}`,
    dataset: 'stories',
    length: optionalNumberField(rec, 'length', file),
    prompt: stringField(rec, 'context', file) + (optionalStringField(rec, 'input', file) ?? ''),
    answers: stringArrayField(rec, 'answers', file),
    allClasses: null,
  }));
}
