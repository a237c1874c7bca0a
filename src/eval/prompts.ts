/**
 * One prompt builder per dataset family, used by everything that turns an evaluation item into model input — the
 * evaluator (`cokv eval`, experiments), the profiler (`cokv profile`, head games) — so that a profile is estimated
 * on exactly the prompts it is judged on: the same truncation, chat template, BOS rule, stop tokens and answer cue.
 *
 *  - longbench: pred.py middle truncation to `maxLength` with the tokenizer's own special-token rule, then the
 *    chat template when asked for (and the dataset allows it; the template writes its own BOS);
 *  - retrieval, ruler, longeval, stories (the synthetic suites): BOS + the prompt text, no template.
 *
 * Besides the ids it says where the prompt's segments start (`boundaries`: the first token, the chat template's
 * user content, the question), which boundary-protecting presses keep, and where the question starts for the
 * context-only protocol.
 */
import { CokvError } from '../errors.js';
import { prefixTokenCount } from '../model/prompt-boundaries.js';
import type { Tokenizer } from '../model/tokenizer/types.js';
import { datasetInfo } from './datasets.js';
import { longBenchGeneration, truncateMiddle, useChatTemplate } from './longbench.js';
import type { EvalItem } from './retrieval.js';

/** What the builders need from a model (CokvModel and RemoteModel both have it). */
export interface PromptModel {
  readonly tokenizer: Tokenizer;
  readonly eosIds: readonly number[];
  applyChatTemplate(messages: { role: string; content: string }[]): Promise<string> | string;
}

export interface PromptOptions {
  /** LongBench: truncate the prompt to this many tokens (pred.py `max_length`), before the template. */
  maxLength: number;
  /** LongBench: wrap in the model's chat template (never for the datasets pred.py leaves bare). */
  chat?: boolean;
  /** Token ids whose text contains a newline (stop tokens of the datasets that stop at a newline). */
  newlineIds?: readonly number[];
}

export interface BuiltPrompt {
  /** The model input. */
  ids: number[];
  /** Its text (after truncation and template). */
  text: string;
  /** Whether `ids` carry the tokenizer's own special tokens (the LongBench rule) rather than an explicit BOS. */
  addSpecial: boolean;
  /**
   * Token indices where a segment of the prompt begins, ascending: 0 (the first token: BOS or the template's
   * start), the chat template's user content, the question (when the item separates it).
   */
  boundaries: number[];
  /**
   * Tokens before the question (the context the context-only protocol compresses), when the item separates its
   * question and the question is found in the final text; else undefined.
   */
  contextTokens?: number;
  /** Greedy generation settings of the dataset. */
  maxNew: number;
  stopIds: number[];
  minTokens: number;
}

/** Tokens of `text.slice(0, at)` as a prefix of the prompt's ids (counting a BOS the ids start with). */
function prefixTokens(tok: Tokenizer, text: string, at: number, addSpecial: boolean, ids: number[]): number {
  return prefixTokenCount(tok.encode(text.slice(0, at), { addSpecial }), ids, addSpecial, tok.bosId);
}

/** Build the model input of one evaluation item the way every part of cokv does (see the file comment). */
export async function buildPrompt(model: PromptModel, dataset: string, item: EvalItem, o: PromptOptions): Promise<BuiltPrompt> {
  const info = datasetInfo(dataset);
  const tok = model.tokenizer;
  let ids: number[];
  let text: string;
  let addSpecial: boolean;
  let stopIds = [...model.eosIds];
  let minTokens = 0;
  const boundaries = [0];
  if (info.family === 'longbench') {
    const t = truncateMiddle(item.prompt, tok, o.maxLength);
    ({ ids } = t);
    text = t.prompt;
    addSpecial = true;
    if (useChatTemplate(dataset, o.chat ?? false)) {
      // Chat templates write their own BOS; encode without adding special tokens (as transformers does).
      const content = t.prompt;
      text = await model.applyChatTemplate([{ role: 'user', content }]);
      ids = tok.encode(text, { addSpecial: false });
      addSpecial = false;
      const at = text.indexOf(content);
      if (at > 0) boundaries.push(prefixTokens(tok, text, at, addSpecial, ids));
    }
    const g = longBenchGeneration(dataset, tok);
    stopIds = [...stopIds, ...g.extraStopIds];
    minTokens = g.minNewTokens;
  } else {
    text = item.prompt;
    addSpecial = false;
    const enc = tok.encode(item.prompt, { addSpecial: false });
    ids = tok.bosId !== undefined ? [tok.bosId, ...enc] : enc;
  }
  if (info.stopAtNewline) stopIds = [...stopIds, ...(o.newlineIds ?? [])];
  let contextTokens: number | undefined;
  const at = item.question ? text.lastIndexOf(item.question) : -1;
  if (item.question && at >= 0) {
    contextTokens = prefixTokens(tok, text, at, addSpecial, ids);
    boundaries.push(contextTokens);
  }
  const sorted = [...new Set(boundaries)].filter((b) => b >= 0 && b < ids.length).sort((a, b) => a - b);
  return { ids, text, addSpecial, boundaries: sorted, contextTokens, maxNew: info.maxNewTokens, stopIds, minTokens };
}

/** `buildPrompt`'s context split, or the one-line error of a protocol that needs it. */
export function requireContextSplit(p: BuiltPrompt, dataset: string): number {
  if (p.contextTokens === undefined) {
    throw new CokvError(`--protocol context-only: dataset ${dataset} items have no separable question`, 'flag');
  }
  return p.contextTokens;
}
