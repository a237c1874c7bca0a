/**
 * LongBench protocol (spec §6; THUDM/LongBench `pred.py`/`eval.py` as used by the CoKV reference): dataset config,
 * prompt templates, middle truncation, generation settings and sample files.
 */
import prompts from './data/dataset2prompt.json' with { type: 'json' };
import maxlens from './data/dataset2maxlen.json' with { type: 'json' };
import qwen3Prompts from './data/dataset2prompt_qwen3.json' with { type: 'json' };
import { CokvError } from '../errors.js';
import type { Tokenizer } from '../model/tokenizer/types.js';
import {
  optionalNumberField, optionalStringArrayField, optionalStringField, readJsonl, stringArrayField, stringField,
  type JsonlOptions,
} from './jsonl.js';

/** The 16 English LongBench tasks, in the paper's table order. */
export const LONGBENCH_EN_DATASETS = [
  'narrativeqa', 'qasper', 'multifieldqa_en', 'hotpotqa', '2wikimqa', 'musique', 'gov_report', 'qmsum', 'multi_news',
  'trec', 'triviaqa', 'samsum', 'passage_count', 'passage_retrieval_en', 'lcc', 'repobench-p',
] as const;
export type LongBenchDataset = (typeof LONGBENCH_EN_DATASETS)[number];

/** Metric per English task (eval.py `dataset2metric`). */
export const LONGBENCH_METRIC: Record<LongBenchDataset, 'qa_f1' | 'rouge_l' | 'classification' | 'retrieval' | 'count' | 'code_sim'> = {
  narrativeqa: 'qa_f1', qasper: 'qa_f1', multifieldqa_en: 'qa_f1', hotpotqa: 'qa_f1', '2wikimqa': 'qa_f1',
  musique: 'qa_f1', gov_report: 'rouge_l', qmsum: 'rouge_l', multi_news: 'rouge_l', trec: 'classification',
  triviaqa: 'qa_f1', samsum: 'rouge_l', passage_count: 'count', passage_retrieval_en: 'retrieval', lcc: 'code_sim',
  'repobench-p': 'code_sim',
};

/** Datasets whose prediction is cut to its first line before scoring (eval.py; lsht is Chinese). */
export const FIRST_LINE_DATASETS: ReadonlySet<string> = new Set(['trec', 'triviaqa', 'samsum', 'lsht']);
/** Datasets that never get a chat template in pred.py (few-shot and code tasks). */
export const NO_CHAT_TEMPLATE_DATASETS: ReadonlySet<string> = new Set(['trec', 'triviaqa', 'samsum', 'lsht', 'lcc', 'repobench-p']);
/** Middle-truncation length used by the reference for both Llama-3-8B-Instruct and Mistral-7B (model2maxlen). */
export const DEFAULT_LONGBENCH_MAX_LENGTH = 8000;

/** Prompt templates of all LongBench datasets (verbatim, including the Chinese ones). */
export const DATASET2PROMPT: Readonly<Record<string, string>> = prompts;
/** Maximum new tokens per dataset (verbatim). */
export const DATASET2MAXLEN: Readonly<Record<string, number>> = maxlens;
/** The Qwen3 tree's template overrides (lcc, repobench-p). */
export const DATASET2PROMPT_QWEN3: Readonly<Record<string, string>> = qwen3Prompts;

export function isLongBenchDataset(name: string): name is LongBenchDataset {
  return (LONGBENCH_EN_DATASETS as readonly string[]).includes(name);
}

function requireLongBench(name: string): LongBenchDataset {
  if (!isLongBenchDataset(name)) {
    throw new CokvError(`unknown LongBench dataset '${name}' (known: ${LONGBENCH_EN_DATASETS.join(', ')})`, 'flag');
  }
  return name;
}

/** One LongBench line (fields as in the THUDM/LongBench `data/*.jsonl` files). */
export interface LongBenchSample {
  id: string;
  input: string;
  context: string;
  answers: string[];
  allClasses: string[] | null;
  length?: number;
  /** All fields of the line, for `template.format(**sample)`. */
  fields: Record<string, unknown>;
}

/** Python `str(v)` for the JSON value types a sample can hold. */
function pyStr(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === null) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return String(v);
  return JSON.stringify(v);
}

/**
 * Python `template.format(**fields)` for plain replacement fields: `{name}` is replaced by `str(fields[name])`, `{{`
 * and `}}` are literal braces; substituted text is not re-scanned. Conversions and format specs are not supported.
 */
export function formatTemplate(template: string, fields: Record<string, unknown>): string {
  let out = '';
  let i = 0;
  while (i < template.length) {
    const ch = template[i];
    if (ch === '{') {
      if (template[i + 1] === '{') {
        out += '{';
        i += 2;
        continue;
      }
      const close = template.indexOf('}', i + 1);
      if (close < 0) throw new CokvError("prompt template: expected '}' before end of string", 'format');
      const name = template.slice(i + 1, close);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        throw new CokvError(`prompt template: unsupported replacement field '{${name}}'`, 'format');
      }
      if (!Object.prototype.hasOwnProperty.call(fields, name)) {
        throw new CokvError(`prompt template needs field '${name}', which the sample lacks`, 'format');
      }
      out += pyStr(fields[name]);
      i = close + 1;
    } else if (ch === '}') {
      if (template[i + 1] !== '}') throw new CokvError("prompt template: single '}' encountered", 'format');
      out += '}';
      i += 2;
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

export interface PromptOptions {
  /** Use the CoKV Qwen3 tree's templates (differs for lcc and repobench-p). */
  qwen3?: boolean;
}

/** The prompt template of a dataset. */
export function longBenchTemplate(dataset: string, opts: PromptOptions = {}): string {
  const name = requireLongBench(dataset);
  return (opts.qwen3 ? DATASET2PROMPT_QWEN3[name] : undefined) ?? DATASET2PROMPT[name];
}

/** `prompt_format.format(**json_obj)`. */
export function buildLongBenchPrompt(dataset: string, sample: Pick<LongBenchSample, 'fields'>, opts: PromptOptions = {}): string {
  return formatTemplate(longBenchTemplate(dataset, opts), sample.fields);
}

/** Maximum number of new tokens (`dataset2maxlen`). */
export function longBenchMaxNewTokens(dataset: string): number {
  return DATASET2MAXLEN[requireLongBench(dataset)];
}

/**
 * Whether the prompt gets the model's chat template: only when `requested` (the reference applies none to Llama-3
 * or Mistral, whose names match no `build_chat` rule) and never for trec/triviaqa/samsum/lsht/lcc/repobench-p.
 */
export function useChatTemplate(dataset: string, requested = false): boolean {
  requireLongBench(dataset);
  return requested && !NO_CHAT_TEMPLATE_DATASETS.has(dataset);
}

export interface TruncateResult {
  /** The prompt text after truncation (unchanged when it fits). */
  prompt: string;
  /** The ids of `prompt`, tokenized again like the reference does before generation. */
  ids: number[];
  truncated: boolean;
  /** Token count before truncation. */
  originalLength: number;
}

/**
 * pred.py middle truncation: tokenize (tokenizer's own special-token rule, i.e. HF `tokenizer(prompt)`: BOS for
 * Llama); if longer than `maxLength`, `half = int(maxLength/2)` and the prompt becomes
 * `decode(ids[:half], skip_special) + decode(ids[-half:], skip_special)` (plain concatenation), then it is tokenized
 * again. As in Python, `ids[-0:]` is the whole list, so maxLength < 2 keeps everything after an empty head.
 */
export function truncateMiddle(
  prompt: string, tokenizer: Tokenizer, maxLength = DEFAULT_LONGBENCH_MAX_LENGTH, addSpecial?: boolean,
): TruncateResult {
  const encOpts = addSpecial === undefined ? undefined : { addSpecial };
  const ids = tokenizer.encode(prompt, encOpts);
  if (ids.length <= maxLength) return { prompt, ids, truncated: false, originalLength: ids.length };
  const half = Math.trunc(maxLength / 2);
  const head = ids.slice(0, half);
  const tail = half === 0 ? ids : ids.slice(ids.length - half);
  const text = tokenizer.decode(head, { skipSpecial: true }) + tokenizer.decode(tail, { skipSpecial: true });
  return { prompt: text, ids: tokenizer.encode(text, encOpts), truncated: true, originalLength: ids.length };
}

export interface GenerationSettings {
  maxNewTokens: number;
  /** Token ids that end generation besides the tokenizer's EOS ids (samsum: the id of "\n"). */
  extraStopIds: number[];
  /** Minimum new tokens before EOS may end generation (samsum: `min_length = ctx_len + 1` ⇒ 1). */
  minNewTokens: number;
}

/** pred.py generation settings: greedy, `max_new_tokens = dataset2maxlen`, samsum stops at "\n". */
export function longBenchGeneration(dataset: string, tokenizer: Tokenizer): GenerationSettings {
  const maxNewTokens = longBenchMaxNewTokens(dataset);
  if (dataset === 'samsum') {
    const nl = tokenizer.encode('\n', { addSpecial: false });
    if (nl.length === 0) throw new CokvError('samsum: the tokenizer encodes "\\n" to no tokens', 'format');
    return { maxNewTokens, extraStopIds: [nl[nl.length - 1]], minNewTokens: 1 };
  }
  return { maxNewTokens, extraStopIds: [], minNewTokens: 0 };
}

export interface PreparedPrompt extends TruncateResult {
  dataset: string;
  /** When true the caller must wrap `prompt` in the model's chat template (and tokenize that instead of `ids`). */
  chat: boolean;
  generation: GenerationSettings;
}

export interface PrepareOptions extends PromptOptions {
  /** Middle-truncation length in tokens (default 8000; `Infinity` = none, as the Qwen3 tree does). */
  maxLength?: number;
  /** Ask for the chat template (still refused for the few-shot and code tasks). */
  chat?: boolean;
}

/** Template → middle truncation → chat rule → generation settings, for one sample. */
export function prepareLongBench(
  dataset: string, sample: Pick<LongBenchSample, 'fields'>, tokenizer: Tokenizer, opts: PrepareOptions = {},
): PreparedPrompt {
  const text = buildLongBenchPrompt(dataset, sample, opts);
  const t = truncateMiddle(text, tokenizer, opts.maxLength ?? DEFAULT_LONGBENCH_MAX_LENGTH);
  return { ...t, dataset, chat: useChatTemplate(dataset, opts.chat ?? false), generation: longBenchGeneration(dataset, tokenizer) };
}

/** Parse LongBench records (fields `input`, `context`, `answers`; optional `all_classes`, `length`, `_id`). */
export function readLongBench(file: string, opts: JsonlOptions = {}): LongBenchSample[] {
  return readJsonl(file, opts).map((rec) => {
    const id = optionalStringField(rec, '_id', file) ?? `line${rec.line}`;
    return {
      id,
      input: stringField(rec, 'input', file),
      context: stringField(rec, 'context', file),
      answers: stringArrayField(rec, 'answers', file),
      allClasses: optionalStringArrayField(rec, 'all_classes', file),
      length: optionalNumberField(rec, 'length', file),
      fields: rec.value,
    };
  });
}
