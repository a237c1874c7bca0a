/**
 * A sequence (session): one KV cache with its position, tokens and last logits, on a loaded model — what
 * node-llama-cpp calls a context sequence. Prefill appends to what is cached, a press compresses it, `fork()`
 * copies it (cheap: no re-prefill), `generate()` continues from it, `save()` / `Sequence.load()` keep it on disk.
 *
 * ```ts
 * const doc = await model.createSequence();
 * await doc.prefill(context);
 * await doc.compress(press);
 * for (const q of questions) {
 *   const s = doc.fork();
 *   await s.append(model.encode(q, false));
 *   console.log(await s.generate({ maxTokens: 20 }).complete());
 *   s.dispose();
 * }
 * ```
 *
 * Async calls leave the event loop free: prefill awaits a macrotask after every layer of every chunk, decode
 * between tokens. Sequences of one model share its Transformer (one workspace), so their forward passes are
 * serialized by a per-model lock; the synchronous CokvModel methods (prefill, scoreContinuation, …) do not take
 * it and must not run while a sequence is prefilling.
 *
 * Over 500 lines on purpose: prefill, compress, fork, generate, save/load and shift act on one cache and its invariants (only `advance` moves the position); it is the public session class.
 */
import { DEFAULT_PREFILL_CHUNK, pressChunkSize, type LayerPrefillContext, type Transformer } from '../model/forward.js';
import type { RaggedKVCache, KvDType } from '../cache/ragged.js';
import { CokvError } from '../errors.js';
import { Sampler } from '../generate/sampling.js';
import { TextStream } from '../generate/text-stream.js';
import {
  checkDecodeOptions, Generation, throwIfAborted, type DecodeOptions, type GenerationChunk, type GenerationStats,
} from '../generate/generation.js';
import { peakRssBytes } from '../memory.js';
import type { Press } from '../press/types.js';
import { isFullPress } from '../press/registry.js';
import type { CokvModel } from '../engine.js';
import { readSavedCache, writeSavedCache } from '../cache/save.js';
import { shiftedCache } from './context-shift.js';
import { checkBoundaries } from '../press/boundaries.js';

export interface SequenceOptions {
  /** KV storage: 'f16' (default, half the bytes of F32, as llama.cpp keeps it), 'f32' or 'q8' (see RaggedKVCache). */
  kvDtype?: KvDType;
  /** Entries per head to preallocate (it grows as needed). */
  capacity?: number;
  /** Queries of the last this many prefilled tokens kept for a later `compress()` (default 64, as prefillShared). */
  windowRows?: number;
}

export interface PrefillOptions {
  /**
   * Compress the cache with this press. The prompt is prefilled in chunks; each layer keeps its full K/V until the
   * last chunk (which holds the observation window) and is compressed there, right after that chunk's attention:
   * the exact mode, whose peak memory is the full-cache prefill's (see `chunkSize` for how it relates to one pass).
   */
  press?: Press;
  /**
   * The bounded mode: compress each layer after every chunk, with that chunk's last window, so that a budgeted head
   * holds at most its allocation + window (on average the budget) plus one chunk at any time, whatever the prompt
   * length. Later chunks attend to the compressed cache, so results differ from the exact mode. Needs a press
   * (not `full`) and a chunk size ≥ the press's window; refused otherwise (CokvError kind 'flag').
   */
  prefillEvict?: boolean;
  /** Cancels the prefill between layers (CokvError kind 'aborted'; the sequence is then unusable). */
  signal?: AbortSignal;
  /** Spare slots per head a press keeps for tokens still to come (saves a reallocation; default 0). */
  reserve?: number;
  /** Text prompts: add the tokenizer's special tokens (default: only when the sequence is empty). */
  addSpecial?: boolean;
  /** Text prompts: add BOS (true) or not (false), whatever the file's rule says. */
  addBos?: boolean;
  /**
   * Rows per pass (default 512, raised to the press's window; 0 = one pass). A press prefill in chunks and
   * `prefill` + `compress()` see the same K/V and window queries, so they keep the same entries bit for bit. Against
   * a one-pass prefill (0), chunked K/V and queries are equal up to float rounding on backends whose kernels
   * block rows differently (the kept sets are then equal except where two scores tie within rounding); the TS
   * backend computes every row alike, so there they are bit-identical.
   */
  chunkSize?: number;
  /**
   * Token indices of this prompt (0 = its first token) where a segment begins — chat-template turns, the system
   * prompt, the question — for presses that protect boundary tokens (`protect`, `boundary-snapkv`); integers in
   * [0, prompt length), else CokvError (kind 'flag'). Other presses ignore them.
   */
  boundaries?: readonly number[];
  /**
   * Sequence positions before this prompt (indices into `tokens`) where an earlier segment begins — a chat's
   * earlier messages — for a protecting press, which compresses what is held as well as the new tokens; integers
   * in [0, position), else CokvError (kind 'flag').
   */
  heldBoundaries?: readonly number[];
}

/** What a sequence holds now. */
export interface SequenceStats {
  /** Tokens seen (prefilled or generated, evicted or not). */
  tokens: number;
  /** Generated tokens not yet run through the model (the last one of a generation; fed by the next call). */
  pendingTokens: number;
  kvDtype: KvDType;
  /** K+V bytes held (every layer). */
  kvBytes: number;
  /** K+V bytes an uncompressed cache would hold for the same tokens. */
  kvFullBytes: number;
  /** K+V bytes held by the full-attention layers (the ones presses budget). */
  kvBudgetedBytes: number;
  kvBudgetedFullBytes: number;
  /** Bytes allocated by the cache (spare capacity, Q8 scales and position index included). */
  allocatedBytes: number;
  /** Milliseconds spent in this sequence's prefills (and fed pending tokens) so far. */
  prefillMs: number;
}

/** KV storage of a sequence (and of every engine entry point: generate, chat, the CLI, the server, eval). */
export const DEFAULT_KV_DTYPE: KvDType = 'f16';

/** What a press prefill passes to the forward pass: the hook and how the prompt is cut. */
export interface PressPrefillHook {
  onLayer: (ctx: LayerPrefillContext) => void;
  chunkSize: number;
  hookEveryChunk: boolean;
}

/**
 * Refuse `prefillEvict` without a press (or with `full`), or with a chunk size it cannot honour (0 = one pass,
 * or fewer rows than the press's window): one CokvError line (kind 'flag') naming the option.
 */
export function checkPrefillEvict(press: Press | undefined, opts: { prefillEvict?: boolean; chunkSize?: number }): void {
  if (!opts.prefillEvict) return;
  if (!press || isFullPress(press)) throw new CokvError('prefillEvict: needs a press (with the full cache nothing is evicted)', 'flag');
  const chunk = opts.chunkSize ?? DEFAULT_PREFILL_CHUNK;
  if (chunk === 0) throw new CokvError('prefillEvict: needs a chunked prefill (chunkSize 0 is one pass)', 'flag');
  if (press.window !== undefined && chunk < press.window) {
    throw new CokvError(`prefillEvict: the chunk size ${chunk} is shorter than the press's window ${press.window}`, 'flag');
  }
}

/**
 * The hook of a prefill with `press` that ends at position `end`: in the exact mode the press runs during the last
 * chunk only (made ≥ its window); with `prefillEvict`, after every chunk, keeping room for the next chunk's rows
 * (the last chunk keeps `reserve`).
 */
export function pressPrefillHook(
  press: Press, reserve: number, end: number, opts: { prefillEvict?: boolean; chunkSize?: number; boundaries?: readonly number[] },
): PressPrefillHook {
  checkPrefillEvict(press, opts);
  // `boundaries` are sequence positions here (the callers offset a prompt's indices by where it starts).
  const boundaries = opts.boundaries;
  const compressLayer = (ctx: LayerPrefillContext, r: number): void => press.compressLayer(boundaries ? { ...ctx, boundaries } : ctx, r);
  if (!opts.prefillEvict) {
    return { onLayer: (ctx) => compressLayer(ctx, reserve), chunkSize: pressChunkSize(press.window, opts.chunkSize), hookEveryChunk: false };
  }
  const chunk = opts.chunkSize ?? DEFAULT_PREFILL_CHUNK;
  const w = press.window ?? 0;
  return {
    onLayer: (ctx) => {
      const last = ctx.startPosition + ctx.numTokens >= end;
      // The first chunk takes the remainder: one shorter than the window (only possible after what the sequence
      // already held) is left to the next chunk, which then compresses it too.
      if (!last && ctx.numTokens < w) return;
      compressLayer(ctx, last ? reserve : chunk);
    },
    chunkSize: chunk,
    hookEveryChunk: true,
  };
}

/** One lock per Transformer: its workspace holds a paused pass's hidden states. */
const locks = new WeakMap<Transformer, { tail: Promise<void> }>();

async function exclusive<T>(tf: Transformer, fn: () => Promise<T> | T): Promise<T> {
  let lock = locks.get(tf);
  if (!lock) locks.set(tf, (lock = { tail: Promise.resolve() }));
  const before = lock.tail;
  let release!: () => void;
  lock.tail = new Promise<void>((r) => { release = r; });
  await before;
  try {
    return await fn();
  } finally {
    release();
  }
}

const nextMacrotask = (): Promise<void> => new Promise<void>((r) => setImmediate(r));

export class Sequence {
  private cacheRef: RaggedKVCache | undefined;
  private ids: number[];
  /** Tokens at the end of `ids` accepted but not yet run through the model (a generation's last token). */
  private pending: number[];
  /** Logits after the last token run through the model (undefined while the sequence is empty). */
  private lastLogits: Float32Array | undefined;
  /** Window queries of the last plain prefill, per full-attention layer; dropped by anything that changes the cache. */
  private queries: Float32Array[] | undefined;
  private queryRows = 0;
  private broken: string | undefined;
  /** Set while a forward pass over this sequence is under way (between its pauses). */
  private running = false;
  private totalPrefillMs = 0;
  /** Prefill time not yet reported by a generation's stats. */
  private unreportedPrefillMs = 0;

  private constructor(
    /** The model this sequence runs on. */
    readonly model: CokvModel, cache: RaggedKVCache, ids: number[], pending: number[], logits: Float32Array | undefined,
    private readonly windowRows: number,
  ) {
    this.cacheRef = cache;
    this.ids = ids;
    this.pending = pending;
    this.lastLogits = logits;
  }

  /** An empty sequence (use `model.createSequence`). */
  static create(model: CokvModel, opts: SequenceOptions = {}): Sequence {
    const windowRows = opts.windowRows ?? 64;
    if (!(Number.isSafeInteger(windowRows) && windowRows > 0)) throw new CokvError(`windowRows: ${windowRows} must be a positive integer`, 'flag');
    const capacity = opts.capacity ?? 0;
    if (!(Number.isSafeInteger(capacity) && capacity >= 0)) throw new CokvError(`capacity: ${capacity} must be a non-negative integer`, 'flag');
    return new Sequence(model, model.newCache(capacity, opts.kvDtype ?? DEFAULT_KV_DTYPE), [], [], undefined, windowRows);
  }

  /**
   * A sequence over an already prefilled cache of exactly `ids` whose last position gave `logits` (the engine's
   * `prefilled` option); the sequence takes ownership of the cache.
   */
  static adopt(model: CokvModel, cache: RaggedKVCache, ids: readonly number[], logits: Float32Array, prefillMs = 0): Sequence {
    if (cache.position !== ids.length) throw new Error(`prefilled cache holds ${cache.position} tokens, the prompt has ${ids.length}`);
    const s = new Sequence(model, cache, [...ids], [], logits.slice(), 64);
    s.totalPrefillMs = s.unreportedPrefillMs = prefillMs;
    return s;
  }

  /**
   * Load a sequence saved by `save()`; refuses another model, another `kvDtype` (when given), or a bad file. One
   * saved right after a plain prefill can be compressed (the file keeps the window queries), with the same result
   * as compressing the original.
   */
  static async load(model: CokvModel, file: string, opts: { kvDtype?: KvDType } = {}): Promise<Sequence> {
    const saved = await readSavedCache(model, file, opts.kvDtype);
    const s = new Sequence(model, saved.cache, saved.tokens, saved.tokens.slice(saved.tokens.length - saved.pending), saved.logits, 64);
    // A sequence saved right after a plain prefill keeps its window queries: it can still be compressed.
    if (saved.queries) {
      s.queries = saved.queries.perLayer;
      s.queryRows = saved.queries.rows;
    }
    return s;
  }

  private get cache(): RaggedKVCache {
    if (!this.cacheRef) throw new CokvError('sequence: it was disposed', 'state');
    // A call made without awaiting the previous prefill would see a cache that holds only some layers' tokens.
    if (this.running) throw new CokvError('sequence: a prefill is running on it (await it before the next call)', 'state');
    if (this.broken) throw new CokvError(`sequence: ${this.broken} left it incomplete (fork before an operation you may cancel)`, 'state');
    return this.cacheRef;
  }

  /** Tokens seen so far (prefilled and generated, evicted ones included; their count is the next position). */
  get tokens(): readonly number[] {
    return this.ids;
  }

  /** Next sequence position (= tokens.length). */
  get position(): number {
    return this.ids.length;
  }

  get kvDtype(): KvDType {
    return this.cache.dtype;
  }

  /** Logits predicting the token after the last one run through the model (a copy), or undefined when empty. */
  get logits(): Float32Array | undefined {
    return this.lastLogits?.slice();
  }

  /** Per (layer, KV head), the entries held. */
  lengths(): number[][] {
    return this.cache.lengths();
  }

  /** Original positions of the entries a head holds (a copy). */
  headPositions(layer: number, kvHead: number): Int32Array {
    const h = this.cache.head(layer, kvHead);
    return h.positions.slice(0, h.length);
  }

  get stats(): SequenceStats {
    const c = this.cache;
    return {
      tokens: this.ids.length, pendingTokens: this.pending.length, kvDtype: c.dtype,
      kvBytes: c.bytes(), kvFullBytes: c.fullBytes(), kvBudgetedBytes: c.budgetedBytes(), kvBudgetedFullBytes: c.budgetedFullBytes(),
      allocatedBytes: c.allocatedBytes(), prefillMs: this.totalPrefillMs,
    };
  }

  /** Ids of a prompt appended to this sequence, checked to fit the model's context together with what is held. */
  private inputIds(input: string | readonly number[], opts: PrefillOptions): number[] {
    const first = this.ids.length === 0;
    const ids = this.model.promptIds(input, opts.addSpecial ?? (first ? undefined : false), opts.addBos);
    const ctx = this.model.config.contextLength;
    if (this.ids.length + ids.length >= ctx) {
      throw new CokvError(`prompt: ${ids.length} more tokens after ${this.ids.length} do not fit the model's context of ${ctx} tokens`, 'prompt');
    }
    return ids;
  }

  /**
   * Run `input` (text or ids) through the model after what is cached. With `press`, the cache (everything held,
   * not only the new tokens) is compressed during the last chunk (or after every chunk with `prefillEvict`), as
   * CokvModel.prefill does; without one, the last `windowRows` queries are kept so that `compress()` can follow.
   */
  async prefill(input: string | readonly number[], opts: PrefillOptions = {}): Promise<void> {
    checkPrefillEvict(opts.press, opts);
    const ids = this.inputIds(input, opts);
    const start = this.ids.length;
    let boundaries = opts.boundaries && checkBoundaries(opts.boundaries, ids.length).map((b) => start + b);
    if (opts.heldBoundaries) boundaries = [...checkBoundaries(opts.heldBoundaries, start, 'heldBoundaries'), ...(boundaries ?? [])];
    throwIfAborted(opts.signal, 'prefill');
    await exclusive(this.model.transformer, () => this.run(ids, opts.press, { ...opts, boundaries }));
  }

  /** `prefill` without compression (e.g. a question after a compressed context). */
  async append(input: string | readonly number[], opts: Omit<PrefillOptions, 'press' | 'prefillEvict' | 'boundaries' | 'heldBoundaries'> = {}): Promise<void> {
    return this.prefill(input, { ...opts, press: undefined, prefillEvict: undefined, boundaries: undefined, heldBoundaries: undefined });
  }

  /** The forward pass over pending + `ids`; the caller holds the lock. */
  private async run(ids: readonly number[], press: Press | undefined, opts: Omit<PrefillOptions, 'press'>): Promise<void> {
    const cache = this.cache;
    this.running = true;
    try {
      await this.runPass(cache, ids, press, opts);
    } finally {
      this.running = false;
    }
  }

  private async runPass(cache: RaggedKVCache, ids: readonly number[], press: Press | undefined, opts: Omit<PrefillOptions, 'press'>): Promise<void> {
    const t0 = performance.now();
    const feed = [...this.pending, ...ids];
    const reserve = opts.reserve ?? 0;
    const layers = this.model.config.layers;
    const qDim = this.model.config.numHeads * this.model.config.headDim;
    const queries: Float32Array[] = [];
    let rows = 0;
    const keep = (ctx: LayerPrefillContext): void => {
      rows = Math.min(this.windowRows, ctx.numTokens);
      if (layers[ctx.layer].kind === 'full') queries[ctx.layer] = ctx.queries.slice((ctx.numTokens - rows) * qDim, ctx.numTokens * qDim);
    };
    const hook = press && !isFullPress(press) ? pressPrefillHook(press, reserve, cache.position + feed.length, opts) : undefined;
    const onLayer = hook?.onLayer ?? keep;
    const signal = opts.signal;
    this.queries = undefined;
    let logits: Float32Array;
    try {
      logits = await this.model.transformer.forwardAsync(feed, cache, {
        logits: 'last', onLayer, chunkSize: hook?.chunkSize ?? opts.chunkSize ?? DEFAULT_PREFILL_CHUNK, hookEveryChunk: hook?.hookEveryChunk,
        pause: async () => {
          throwIfAborted(signal, 'prefill');
          await nextMacrotask();
          throwIfAborted(signal, 'prefill');
        },
      });
    } catch (e) {
      // Some layers hold the new tokens and others do not: nothing can continue from this cache.
      this.broken = signal?.aborted ? 'an aborted prefill' : 'a failed prefill';
      throw e;
    }
    this.lastLogits = logits.slice();
    this.ids.push(...ids);
    this.pending = [];
    if (!hook) {
      this.queries = queries;
      this.queryRows = rows;
    }
    const ms = performance.now() - t0;
    this.totalPrefillMs += ms;
    this.unreportedPrefillMs += ms;
  }

  /**
   * Compress the cache with `press`, using the queries kept by the last prefill (which must have been plain and
   * the last thing done): the same cache as prefilling with `press` in the same chunks (bit for bit, when the
   * last chunk held the press's window; see PrefillOptions.chunkSize). `boundaries`: positions in the sequence
   * (indices into `tokens`) where a prompt segment begins, for presses that protect boundary tokens. `scoreMemo`:
   * scores shared with other compressions of copies of this same cache (see LayerPrefillContext.scoreMemo).
   */
  async compress(press: Press, opts: { reserve?: number; boundaries?: readonly number[]; scoreMemo?: Map<string, Float32Array[]> } = {}): Promise<void> {
    const cache = this.cache;
    if (!this.queries) {
      throw new CokvError('compress: needs a plain prefill (no press) just before it: the window queries a press scores with are kept only until the cache changes', 'state');
    }
    if (press.window !== undefined && press.window > this.queryRows) {
      throw new CokvError(`compress: the press's window ${press.window} is longer than the ${this.queryRows} window queries kept (SequenceOptions.windowRows)`, 'flag');
    }
    const queries = this.queries;
    const boundaries = opts.boundaries && checkBoundaries(opts.boundaries, this.ids.length);
    await exclusive(this.model.transformer, () => {
      for (const l of cache.budgetedLayers()) {
        press.compressLayer({ layer: l, queries: queries[l], numTokens: this.queryRows, startPosition: cache.position - this.queryRows, cache, boundaries, scoreMemo: opts.scoreMemo }, opts.reserve ?? 0);
      }
    });
    this.queries = undefined;
  }

  /**
   * An independent copy (deep: the cache's K/V are copied, nothing is re-run) with room for `reserve` more entries
   * per head. A fork of a plain prefill can still be compressed.
   */
  fork(opts: { reserve?: number } = {}): Sequence {
    const s = new Sequence(this.model, this.cache.clone(opts.reserve ?? 0), [...this.ids], [...this.pending], this.lastLogits?.slice(), this.windowRows);
    // Kept query arrays are never written, so forks may share them.
    s.queries = this.queries?.slice();
    s.queryRows = this.queryRows;
    return s;
  }

  /**
   * Generate from the sequence's state (an async iterator of chunks, like CokvModel.generate); the sequence is
   * left extended by the generated tokens (EOS is not added). Options are checked here, before iteration.
   */
  generate(opts: DecodeOptions = {}): Generation {
    const maxTokens = checkDecodeOptions(opts, this.model.config.contextLength);
    if (this.ids.length === 0) throw new CokvError('generate: the sequence is empty (prefill a prompt first)', 'prompt');
    void this.cache; // refuse a disposed or broken sequence now
    return new Generation((g) => this.decode(g, maxTokens, opts));
  }

  /**
   * The decode loop behind `generate` (and CokvModel.generate, which passes the time its prefill started and the
   * prefill time to report).
   */
  async *decode(g: Generation, maxTokens: number, opts: DecodeOptions, timing: { start?: number; prefillMs?: number } = {}): AsyncGenerator<GenerationChunk> {
    const t0 = timing.start ?? performance.now();
    const signal = opts.signal;
    throwIfAborted(signal, 'generate');
    if (this.pending.length > 0) await exclusive(this.model.transformer, () => this.run([], undefined, { signal }));
    const cache = this.cache;
    const t1 = performance.now();
    const promptTokens = this.ids.length;
    const promptKvBytes = cache.bytes();
    const promptFullKvBytes = cache.fullBytes();
    const promptBudgetedKvBytes = cache.budgetedBytes();
    const promptBudgetedFullKvBytes = cache.budgetedFullBytes();
    const prefillMs = timing.prefillMs ?? (timing.start !== undefined ? t1 - t0 : this.unreportedPrefillMs);
    this.unreportedPrefillMs = 0;
    cache.reserveExtra(maxTokens);
    const eos = new Set(opts.eosIds ?? this.model.eosIds);
    const sampler = new Sampler(opts);
    const stream = new TextStream(this.model.tokenizer, this.ids[this.ids.length - 1], opts.stop ?? []);
    let stopReason: GenerationStats['stopReason'] = 'length';
    let tFirst = t1;
    const minTokens = opts.minTokens ?? 0;
    const promptStats = this.stats;
    let finished = false;
    try {
      for (let n = 0; n < maxTokens; n++) {
        // The sampler writes into its logits (repetition penalty): it gets a copy, the sequence keeps the original.
        const logits = this.lastLogits!.slice();
        if (n < minTokens) for (const id of eos) logits[id] = -Infinity;
        const next = sampler.sample(logits, this.ids);
        if (eos.has(next)) { stopReason = 'eos'; break; }
        this.ids.push(next);
        this.pending.push(next);
        this.queries = undefined;
        g.tokens.push(next);
        const text = stream.push(next);
        g.text += text;
        if (n === 0) tFirst = performance.now();
        yield { token: next, text };
        if (stream.stopped) { stopReason = 'stop'; break; }
        if (n + 1 === maxTokens) break;
        throwIfAborted(signal, 'generate');
        // The token is fed now, under the lock, so other sequences' passes interleave between tokens.
        await exclusive(this.model.transformer, () => this.step());
      }
      finished = true;
    } finally {
      // A consumer that breaks out of the stream (or a cancelled or failed step) still gets stats for what was done.
      if (!finished) g.stats ??= stoppedEarlyStats(g, this, promptStats, prefillMs, tFirst);
    }
    const tail = stream.flush();
    g.text += tail;
    const decodeMs = performance.now() - tFirst;
    g.stats = {
      promptTokens,
      generatedTokens: g.tokens.length,
      prefillMs,
      decodeMs,
      decodeTokensPerSecond: g.tokens.length > 1 ? ((g.tokens.length - 1) * 1000) / decodeMs : 0,
      kvDtype: cache.dtype,
      kvBytes: cache.bytes(),
      kvFullBytes: cache.fullBytes(),
      promptKvBytes,
      promptFullKvBytes,
      promptBudgetedKvBytes,
      promptBudgetedFullKvBytes,
      peakRssBytes: peakRssBytes(),
      stopReason,
    };
    if (tail) yield { token: -1, text: tail };
  }

  /** Feed the pending tokens one decode step (synchronous: no pause inside). */
  private step(): void {
    const step = Int32Array.from(this.pending);
    this.lastLogits = this.model.transformer.forward(step, this.cache, { logits: 'last' }).slice();
    this.pending = [];
  }

  /**
   * Teacher-forced log-probabilities of `continuation` after what the sequence holds (the first token is scored
   * from the last logits, the rest by one pass over all but the last token); the sequence is left extended by
   * those tokens. Returns the per-token values and their mean.
   */
  async scoreContinuation(continuation: readonly number[]): Promise<{ logProbs: number[]; mean: number }> {
    if (continuation.length === 0) throw new CokvError('scoreContinuation: the continuation is empty', 'prompt');
    if (this.ids.length === 0) throw new CokvError('scoreContinuation: the sequence is empty (prefill a prompt first)', 'prompt');
    const V = this.model.config.vocabSize;
    for (const id of continuation) {
      if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new CokvError(`scoreContinuation: token id ${id} is outside the vocabulary (0..${V - 1})`, 'prompt');
    }
    if (this.pending.length > 0) await exclusive(this.model.transformer, () => this.run([], undefined, {}));
    const cache = this.cache;
    const logProbs = [logProbAt(this.lastLogits!, 0, continuation[0], V)];
    if (continuation.length > 1) {
      const fed = continuation.slice(0, -1);
      const rest = await exclusive(this.model.transformer, () => this.model.transformer.forward(fed, cache, { logits: 'all' }));
      for (let t = 1; t < continuation.length; t++) logProbs.push(logProbAt(rest, (t - 1) * V, continuation[t], V));
      this.ids.push(...fed);
      this.lastLogits = rest.slice((fed.length - 1) * V, fed.length * V);
      this.queries = undefined;
    }
    return { logProbs, mean: logProbs.reduce((a, b) => a + b, 0) / logProbs.length };
  }

  /**
   * Context shift (llama.cpp's; see src/session/context-shift.ts): drop the tokens at positions [start, end) and
   * move every later entry back by end − start positions, re-rotating its key, so the sequence goes on at
   * `position − (end − start)` with the distances between later tokens unchanged. Only processed positions can be
   * dropped (a pending token is fed after the shift); the last logits stay; the kept window queries are dropped.
   * Refused (CokvError kind 'state') for q8 storage and longrope scaling.
   */
  async shift(start: number, end: number): Promise<void> {
    const cache = this.cache;
    this.cacheRef = await exclusive(this.model.transformer, () => shiftedCache(this.model.config, cache, start, end));
    this.ids.splice(start, end - start);
    this.queries = undefined;
  }

  /**
   * Write the sequence to `file` (atomically; see src/cache/save.ts for the format). A pending token is saved as
   * pending, so a loaded sequence continues exactly where this one would; the window queries of a plain prefill
   * are saved too, so the loaded one can be compressed like this one.
   */
  async save(file: string): Promise<void> {
    const cache = this.cache;
    await exclusive(this.model.transformer, () => writeSavedCache(this.model, file, {
      cache, tokens: this.ids, pending: this.pending.length, logits: this.lastLogits,
      queries: this.queries && { rows: this.queryRows, perLayer: this.queries },
    }));
  }

  /** Release the cache; any later call on this sequence throws. */
  dispose(): void {
    this.cacheRef = undefined;
    this.queries = undefined;
    this.lastLogits = undefined;
  }
}

/** log softmax(logits[off .. off + V))[id]: the log-probability the row at `off` gives token `id`. */
export function logProbAt(logits: Float32Array, off: number, id: number, V: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[off + i] > max) max = logits[off + i];
  let z = 0;
  for (let i = 0; i < V; i++) z += Math.exp(logits[off + i] - max);
  return logits[off + id] - max - Math.log(z);
}

/**
 * Stats of a generation whose decode loop did not reach its end (stopReason 'cancelled'): what was generated, the
 * bytes held now, the prompt's bytes. For drivers that stop early (CokvModel.generate, ChatSession).
 */
export function stoppedEarlyStats(g: Generation, seq: Sequence, prompt: SequenceStats, prefillMs: number, decodeStart: number): GenerationStats {
  let now = prompt;
  try {
    now = seq.stats;
  } catch {
    // A sequence left unusable by a failed step: report the prompt's bytes.
  }
  const decodeMs = performance.now() - decodeStart;
  return {
    promptTokens: prompt.tokens,
    generatedTokens: g.tokens.length,
    prefillMs,
    decodeMs,
    decodeTokensPerSecond: g.tokens.length > 1 && decodeMs > 0 ? ((g.tokens.length - 1) * 1000) / decodeMs : 0,
    kvDtype: now.kvDtype,
    kvBytes: now.kvBytes,
    kvFullBytes: now.kvFullBytes,
    promptKvBytes: prompt.kvBytes,
    promptFullKvBytes: prompt.kvFullBytes,
    promptBudgetedKvBytes: prompt.kvBudgetedBytes,
    promptBudgetedFullKvBytes: prompt.kvBudgetedFullBytes,
    peakRssBytes: peakRssBytes(),
    stopReason: 'cancelled',
  };
}
