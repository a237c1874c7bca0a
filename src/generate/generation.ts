/**
 * The streaming result of a generation (`CokvModel.generate`, `Sequence.generate`) and the options every decode
 * loop shares. Kept apart from the engine so that the engine and sessions can both use it without an import cycle.
 */
import { CokvError } from '../errors.js';
import type { SamplingOptions } from './sampling.js';
import type { KvDType } from '../cache/ragged.js';

/** Options of a decode loop: sampling, stopping and cancellation. */
export interface DecodeOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Stop when any of these strings appears in the output (not included in the text). */
  stop?: string[];
  /** Ids that end generation; default: the model's EOS ids. */
  eosIds?: number[];
  /** EOS cannot end generation before this many tokens (transformers' min_new_tokens). */
  minTokens?: number;
  /** Cancels prefill (between layers) and generation (between tokens): iteration throws CokvError kind 'aborted'. */
  signal?: AbortSignal;
}

export interface GenerationChunk {
  /** The token just generated. */
  token: number;
  /** New text that can be shown (may be empty while a UTF-8 sequence or stop string is pending). */
  text: string;
}

export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  /** Generated tokens after the first, per second of decode time. */
  decodeTokensPerSecond: number;
  /** KV storage of the cache (the engine's default is f16). */
  kvDtype: KvDType;
  /** K+V bytes held by the cache at the end (every layer; see RaggedKVCache.bytes). */
  kvBytes: number;
  /** K+V bytes an uncompressed cache would hold for the same tokens (see RaggedKVCache.fullBytes). */
  kvFullBytes: number;
  /** K+V bytes held right after the prompt's prefill (and compression). */
  promptKvBytes: number;
  /** K+V bytes a full cache holds for the prompt. */
  promptFullKvBytes: number;
  /**
   * Like promptKvBytes / promptFullKvBytes but over the full-attention layers only, the ones a press budgets
   * (sliding layers hold their window either way): kept fractions are promptBudgetedKvBytes / promptBudgetedFullKvBytes.
   */
  promptBudgetedKvBytes: number;
  promptBudgetedFullKvBytes: number;
  /** Process peak resident set size, bytes. */
  peakRssBytes: number;
  /**
   * Why decoding ended: EOS, a stop string, maxTokens, or 'cancelled' — the consumer broke out of the iteration,
   * the signal fired, or the decode failed (the stats then cover the tokens generated so far).
   */
  stopReason: 'eos' | 'stop' | 'length' | 'cancelled';
}

/**
 * A running generation: iterate it for chunks; `stats`, `text` and `tokens` are complete after iteration, also
 * after breaking out of it early (`CokvModel.generate`: stopReason 'cancelled').
 */
export class Generation implements AsyncIterable<GenerationChunk> {
  stats: GenerationStats | undefined;
  text = '';
  tokens: number[] = [];
  private started = false;

  /** `run` produces the chunks, filling in `text`, `tokens` and finally `stats` of the Generation it is given. */
  constructor(private readonly run: (g: Generation) => Iterator<GenerationChunk> | AsyncIterator<GenerationChunk>) {}

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    if (this.started) throw new Error('a Generation can be iterated only once');
    this.started = true;
    const it = this.run(this);
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) {
        yield r.value;
        // Let other tasks (I/O, timers) run between tokens.
        await new Promise<void>((res) => setImmediate(res));
      }
    } finally {
      // A consumer that breaks out still ends the producer (its cleanup runs).
      await it.return?.();
    }
  }

  /** Run to the end and return the whole text. */
  async complete(): Promise<string> {
    for await (const _ of this) {
      // drain
    }
    return this.text;
  }
}

/** Throw CokvError kind 'aborted' if `signal` has fired; `what` says what was cancelled. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new CokvError(`${what}: aborted`, 'aborted');
}

/** Check decode options before anything runs; each error names the option. */
export function checkDecodeOptions(o: DecodeOptions, contextLength: number): number {
  const maxTokens = o.maxTokens ?? 256;
  if (!(Number.isSafeInteger(maxTokens) && maxTokens >= 0)) throw new CokvError(`maxTokens: ${maxTokens} is not a non-negative integer`, 'flag');
  // The cache is preallocated for prompt + maxTokens: more than a whole context is refused rather than
  // allocated (or run for hours), while a little past the trained context stays allowed.
  if (maxTokens > contextLength) throw new CokvError(`maxTokens: ${maxTokens} is more than the model's context of ${contextLength} tokens`, 'flag');
  if (o.repetitionPenalty !== undefined && !(Number.isFinite(o.repetitionPenalty) && o.repetitionPenalty > 0)) {
    throw new CokvError(`repetitionPenalty: ${o.repetitionPenalty} must be a number > 0 (1 = off)`, 'flag');
  }
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new CokvError(`seed: ${o.seed} must be a safe integer`, 'flag');
  for (const s of o.stop ?? []) {
    if (typeof s !== 'string' || s.length === 0) throw new CokvError('stop: stop strings must be non-empty', 'flag');
  }
  return maxTokens;
}
