/**
 * The public engine: load a model from any supported file, then generate (streaming), complete or chat.
 *
 * ```ts
 * const model = await loadModel('../shared/assets/models/stories260K');
 * const gen = model.generate('Once upon a time', { maxTokens: 40 });
 * for await (const chunk of gen) process.stdout.write(chunk.text);
 * console.log(gen.stats);
 * ```
 */
import { createBackend, type BackendKind, BACKEND_KINDS } from './backend/select.js';
import type { Backend } from './backend/types.js';
import { RaggedKVCache, type KvDType } from './cache/ragged.js';
import { CokvError } from './errors.js';
import type { ModelConfig } from './model/config.js';
import { DEFAULT_PREFILL_CHUNK, Transformer } from './model/forward.js';
import { openModel } from './model/load.js';
import type { ModelSource } from './model/source.js';
import type { Tokenizer } from './model/tokenizer/types.js';
import { checkDecodeOptions, Generation, type DecodeOptions, type GenerationChunk } from './generate/generation.js';
import {
  checkPrefillEvict, DEFAULT_KV_DTYPE, logProbAt, pressPrefillHook, Sequence, stoppedEarlyStats, type SequenceOptions,
} from './session/sequence.js';
import type { Press } from './press/types.js';
import { isFullPress } from './press/registry.js';
import { bindModelSource } from './model/fingerprint.js';
import { checkBoundaries } from './press/boundaries.js';

export { Generation } from './generate/generation.js';
export type { DecodeOptions, GenerationChunk, GenerationStats } from './generate/generation.js';

export interface GenerateOptions extends DecodeOptions {
  /** Add the tokenizer's special tokens (BOS/EOS by the file's rule) when encoding a text prompt; default true. */
  addSpecial?: boolean;
  /** Add BOS (true) or leave it out (false) when encoding a text prompt, whatever the file's rule says. */
  addBos?: boolean;
  /**
   * KV-cache compression. The prompt is prefilled in chunks and each layer is compressed during the last one
   * (the exact mode: peak memory as the full cache's). Default: none (full cache).
   */
  press?: Press;
  /**
   * The bounded mode (`--prefill-evict`): compress each layer after every prefill chunk with that chunk's last
   * window, so a budgeted head holds at most its allocation + window plus one chunk (see PrefillOptions.prefillEvict).
   * Needs a press; not with `prefilled`.
   */
  prefillEvict?: boolean;
  /**
   * Compress only the first `compressPrefix` prompt tokens (e.g. the context), then prefill the rest (e.g. the
   * question) over the compressed cache without compression — kvpress's "context-only" protocol. Default: the
   * whole prompt is compressed in one prefill (the CoKV paper's protocol).
   */
  compressPrefix?: number;
  /**
   * KV storage: 'f16' (default: half the bytes of F32, what llama.cpp keeps), 'f32', or 'q8' (int8 rows with one F32
   * scale per row: 2 × (headDim + 4) bytes per entry and head instead of 8 × headDim).
   */
  kvDtype?: KvDType;
  /**
   * Start from an already prefilled (and possibly compressed) cache of exactly these prompt ids, with the logits
   * of the last prompt position (see `prefillShared` / `fromShared`); `press` and `compressPrefix` are then unused.
   */
  prefilled?: { cache: RaggedKVCache; logits: Float32Array; prefillMs?: number };
  /**
   * Prompt token indices where a segment begins (chat-template turns, system prompt, question), for presses that
   * protect boundary tokens (see PrefillOptions.boundaries). With `compressPrefix`, those inside the prefix count.
   */
  boundaries?: readonly number[];
}

/**
 * A full-cache prefill kept for reuse. Prefill attention is always full, so the hidden states — and every layer's
 * keys, values and window queries — do not depend on the press: compressing a copy of this cache afterwards gives
 * exactly the cache a press applied during prefill gives. Sweeps over presses and budgets prefill once.
 */
export interface SharedPrefill {
  ids: number[];
  cache: RaggedKVCache;
  logits: Float32Array;
  /** Per full-attention layer, the post-RoPE queries of the last `windowRows` prompt tokens (sliding layers: none). */
  queries: Float32Array[];
  windowRows: number;
  prefillMs: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

export interface LoadOptions {
  /** A backend object, or a kind: 'auto' (default: native if built, else wasm, else ts), 'native', 'wasm', 'ts'. */
  backend?: Backend | BackendKind;
}

/** The backend for `loadModel`: the option, else $COKV_BACKEND, else 'auto'. */
export function resolveBackend(opt?: Backend | BackendKind): Backend {
  if (opt && typeof opt === 'object') return opt;
  const kind = opt ?? (process.env.COKV_BACKEND as BackendKind | undefined) ?? 'auto';
  if (!BACKEND_KINDS.includes(kind)) throw new CokvError(`backend: '${kind}' must be one of ${BACKEND_KINDS.join(', ')}`, 'flag');
  try {
    return createBackend(kind);
  } catch (e) {
    throw new CokvError(`backend ${kind}: ${(e as Error).message}`, 'flag');
  }
}

export class CokvModel {
  private tf: Transformer | undefined;

  constructor(
    readonly source: ModelSource,
    readonly tokenizer: Tokenizer,
    backend: Backend,
  ) {
    this.tf = new Transformer(source.config, source.loadWeights(), backend);
    // Profiles read for this model are checked against its weight files, not just its shape.
    bindModelSource(source.config, source.path);
  }

  /** The forward pass (weights and workspace); throws CokvError kind 'state' after `dispose()`. */
  get transformer(): Transformer {
    return this.live('the forward pass');
  }

  /** True once `dispose()` has run. */
  get disposed(): boolean {
    return this.tf === undefined;
  }

  /**
   * Release the weights and the workspace (kept until now by the model's Transformer). Every later call that runs
   * the model — on it or on its sequences — throws CokvError kind 'state'; encode/decode still work. Idempotent.
   */
  dispose(): void {
    this.tf = undefined;
    this.newlineIdCache = undefined;
  }

  private live(what: string): Transformer {
    if (!this.tf) throw new CokvError(`model: it was disposed (${what} needs a loaded model: load it again)`, 'state');
    return this.tf;
  }

  get config(): ModelConfig {
    return this.source.config;
  }

  /** Ids of every token whose text contains a newline (stop tokens for tasks that answer on one line). */
  newlineIds(): number[] {
    if (!this.newlineIdCache) {
      this.newlineIdCache = [];
      for (let id = 0; id < this.config.vocabSize; id++) if (this.tokenizer.tokenText(id).includes('\n')) this.newlineIdCache.push(id);
    }
    return this.newlineIdCache;
  }

  private newlineIdCache: number[] | undefined;

  /** Ids that stop generation by default. */
  get eosIds(): number[] {
    const ids = new Set<number>([...this.tokenizer.eosIds, ...(this.source.generation?.eosIds ?? [])]);
    return [...ids];
  }

  /** Text to ids: the file's BOS/EOS rule unless `addSpecial` is false; `addBos` overrides BOS either way. */
  encode(text: string, addSpecial?: boolean, addBos?: boolean): number[] {
    return this.tokenizer.encode(text, { addSpecial, addBos });
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids);
  }

  /**
   * A fresh, empty cache for this model (sliding layers' heads preallocate only their window plus a chunk). The raw
   * cache keeps F32 unless told: the engine's entry points (sequences, generate, chat, eval, the CLI and the
   * server) default to F16, and the profiler's coalition batches read an F32 prompt cache.
   */
  newCache(capacity = 0, dtype: KvDType = 'f32'): RaggedKVCache {
    this.live('a cache');
    const c = this.config;
    return new RaggedKVCache(c.numLayers, c.numKvHeads, c.headDim, capacity, dtype, c.layers);
  }

  /**
   * Prefill `ids` into `cache` (full attention) in chunks, compressing each layer with `press` if given during the
   * last chunk (the exact mode; `opts.prefillEvict`: after every chunk). Returns the last position's logits (a copy).
   * `opts.boundaries`: indices into `ids` where a prompt segment begins (see PrefillOptions.boundaries).
   */
  prefill(
    ids: readonly number[], cache: RaggedKVCache, press?: Press, reserve = 0,
    opts: { prefillEvict?: boolean; chunkSize?: number; boundaries?: readonly number[] } = {},
  ): Float32Array {
    if (isFullPress(press)) press = undefined;
    checkPrefillEvict(press, opts);
    const start = cache.position;
    const boundaries = opts.boundaries && checkBoundaries(opts.boundaries, ids.length).map((b) => start + b);
    const hook = press ? pressPrefillHook(press, reserve, cache.position + ids.length, { ...opts, boundaries }) : undefined;
    return this.transformer.forward(ids, cache, {
      logits: 'last', onLayer: hook?.onLayer, chunkSize: hook?.chunkSize ?? opts.chunkSize ?? DEFAULT_PREFILL_CHUNK, hookEveryChunk: hook?.hookEveryChunk,
    }).slice();
  }

  /**
   * Teacher-forced log-probabilities of `continuation` after `prompt`, with the prompt's cache compressed by
   * `press` (the first continuation token is predicted from the prefill itself). Returns the per-token values and
   * their mean, plus the KV bytes held after the prefill.
   */
  scoreContinuation(
    prompt: readonly number[], continuation: readonly number[],
    opts: {
      press?: Press; compressPrefix?: number; prefilled?: { cache: RaggedKVCache; logits: Float32Array };
      /** KV storage of the prompt's cache (default f16); unused with `prefilled`. */
      kvDtype?: KvDType;
      prefillEvict?: boolean;
    } = {},
  ): { logProbs: number[]; mean: number; kvBytes: number; kvFullBytes: number } {
    if (continuation.length === 0) throw new CokvError('scoreContinuation: the continuation is empty', 'prompt');
    const dtype = opts.kvDtype ?? DEFAULT_KV_DTYPE;
    const evict = { prefillEvict: opts.prefillEvict };
    const ids = this.promptIds(prompt);
    // The bounded mode grows its heads by chunks instead of preallocating the whole prompt.
    const capacity = opts.prefillEvict ? 0 : ids.length + continuation.length;
    let cache: RaggedKVCache;
    let first: Float32Array;
    const k = opts.compressPrefix;
    if (opts.prefilled) {
      ({ cache, logits: first } = opts.prefilled);
    } else if (k !== undefined && k > 0 && k < ids.length) {
      cache = this.newCache(capacity, dtype);
      this.prefill(ids.slice(0, k), cache, opts.press, ids.length - k + continuation.length, evict);
      first = this.transformer.forward(ids.slice(k), cache, { logits: 'last' }).slice();
    } else {
      cache = this.newCache(capacity, dtype);
      first = this.prefill(ids, cache, opts.press, continuation.length, evict);
    }
    const kvBytes = cache.bytes();
    const kvFullBytes = cache.fullBytes();
    const V = this.config.vocabSize;
    const logp = (logits: Float32Array, off: number, id: number): number => logProbAt(logits, off, id, V);
    const logProbs = [logp(first, 0, continuation[0])];
    if (continuation.length > 1) {
      const rest = this.transformer.forward(continuation.slice(0, -1), cache, { logits: 'all' });
      for (let t = 1; t < continuation.length; t++) logProbs.push(logp(rest, (t - 1) * V, continuation[t]));
    }
    return { logProbs, mean: logProbs.reduce((a, b) => a + b, 0) / logProbs.length, kvBytes, kvFullBytes };
  }

  /**
   * Prefill `ids` with the full cache and keep what presses need to compress copies of it later. The prefill goes
   * in chunks (at least `windowRows` long), like a press prefill in the exact mode, so a copy compressed by
   * `fromShared` equals the cache `generate` with that press builds.
   */
  prefillShared(ids: readonly number[], windowRows = 64, dtype: KvDType = DEFAULT_KV_DTYPE): SharedPrefill {
    const t0 = performance.now();
    const cache = this.newCache(ids.length, dtype);
    const rows = Math.min(windowRows, ids.length);
    const qDim = this.config.numHeads * this.config.headDim;
    const queries: Float32Array[] = [];
    const layers = this.config.layers;
    const logits = this.transformer.forward(ids, cache, {
      logits: 'last', chunkSize: Math.max(DEFAULT_PREFILL_CHUNK, rows),
      // Only full-attention layers are ever compressed, so only theirs are kept (sliding entries stay empty).
      onLayer: (ctx) => {
        if (layers[ctx.layer].kind === 'full') queries[ctx.layer] = ctx.queries.slice((ctx.numTokens - rows) * qDim, ctx.numTokens * qDim);
      },
    }).slice();
    return { ids: [...ids], cache, logits, queries, windowRows: rows, prefillMs: performance.now() - t0 };
  }

  /**
   * A compressed copy of a shared prefill (`press` undefined = full), with room for `reserve` more tokens; if
   * `suffix` is given it is prefilled over the compressed cache (the context-only protocol) and its last logits
   * are returned instead. `boundaries`: indices into `shared.ids` where a prompt segment begins (see
   * PrefillOptions.boundaries).
   */
  fromShared(
    shared: SharedPrefill, press: Press | undefined, reserve: number, suffix?: readonly number[], boundaries?: readonly number[],
  ): { cache: RaggedKVCache; logits: Float32Array; prefillMs: number } {
    const t0 = performance.now();
    const checked = boundaries && checkBoundaries(boundaries, shared.ids.length);
    const cache = shared.cache.clone(reserve + (suffix?.length ?? 0));
    if (press) {
      for (const l of cache.budgetedLayers()) {
        press.compressLayer({
          layer: l, queries: shared.queries[l], numTokens: shared.windowRows, startPosition: cache.position - shared.windowRows, cache, boundaries: checked,
        }, reserve + (suffix?.length ?? 0));
      }
    }
    let logits = shared.logits;
    if (suffix && suffix.length > 0) logits = this.transformer.forward(suffix, cache, { logits: 'last' }).slice();
    return { cache, logits, prefillMs: shared.prefillMs + performance.now() - t0 };
  }

  /** Apply the model's chat template to `messages` (with the assistant turn opened). */
  applyChatTemplate(messages: ChatMessage[]): Promise<string> {
    return import('./model/chat.js').then(({ applyChatTemplate }) => {
      if (!this.source.chatTemplate) {
        throw new CokvError(`${this.source.path}: this model has no chat template (drop --chat or use a model that ships one)`, 'flag');
      }
      return applyChatTemplate(this.source.chatTemplate, messages, {
        bosToken: this.source.bosToken,
        eosToken: this.source.eosToken,
        addGenerationPrompt: true,
      });
    });
  }

  /** Chat: template the messages, then generate the assistant's reply. */
  async chat(messages: ChatMessage[], opts: GenerateOptions = {}): Promise<Generation> {
    const prompt = await this.applyChatTemplate(messages);
    // Templates write BOS themselves; transformers encodes chat prompts without adding special tokens.
    return this.generate(prompt, { addSpecial: false, ...opts });
  }

  /**
   * Most UTF-16 code units a prompt that fits the context can have: each token covers at most its own text plus
   * one character (a stripped leading space), and normalizers shorten text by well under 4× (e.g. NFC composes 3
   * Hangul jamo into one syllable), so the bound is contextLength × (longest token + 1) × 4. It assumes the
   * tokenizer does not delete input (no LLM tokenizer cokv reads does); longer text cannot fit and is refused
   * before tokenizing.
   */
  maxPromptChars(): number {
    if (this.maxPromptCharsCache === undefined) {
      let longest = 1;
      for (let id = 0; id < this.tokenizer.vocabSize; id++) longest = Math.max(longest, this.tokenizer.tokenText(id).length);
      this.maxPromptCharsCache = this.config.contextLength * (longest + 1) * 4;
    }
    return this.maxPromptCharsCache;
  }

  private maxPromptCharsCache: number | undefined;

  /**
   * Refuse a long text prompt that cannot fit the context without tokenizing it whole (a 50 MB prompt would need
   * gigabytes): first the character bound above, then token counts of bounded pieces cut at line or space
   * boundaries, stopping once they exceed the context by more than the few tokens a cut can add or merge away.
   * Prompts that pass are then tokenized whole, so the ids never depend on the pieces.
   */
  private checkPromptSize(text: string): void {
    const ctx = this.config.contextLength;
    if (text.length <= PROMPT_PIECE_CHARS) return;
    const max = this.maxPromptChars();
    if (text.length > max) throw new CokvError(`prompt: ${text.length} characters cannot fit the model's context of ${ctx} tokens (at most ${max} can)`, 'prompt');
    let tokens = 0;
    let cuts = 0;
    for (let at = 0; at < text.length; cuts++) {
      const end = pieceEnd(text, at);
      tokens += this.tokenizer.encode(text.slice(at, end), { addSpecial: false }).length;
      at = end;
      if (tokens - PIECE_CUT_SLACK * cuts > ctx) {
        throw new CokvError(`prompt: the first ${at} of ${text.length} characters already hold more than the ${ctx} tokens of the model's context`, 'prompt');
      }
    }
  }

  /** Encode a prompt and check it fits the model. */
  promptIds(prompt: string | readonly number[], addSpecial?: boolean, addBos?: boolean): number[] {
    if (typeof prompt === 'string' && prompt.length === 0) throw new CokvError('prompt: the prompt is empty', 'prompt');
    if (typeof prompt === 'string') this.checkPromptSize(prompt);
    const ids = typeof prompt === 'string' ? this.encode(prompt, addSpecial, addBos) : [...prompt];
    if (ids.length === 0) throw new CokvError('prompt: the prompt encodes to no tokens', 'prompt');
    if (ids.length >= this.config.contextLength) {
      throw new CokvError(
        `prompt: ${ids.length} tokens do not fit the model's context of ${this.config.contextLength} tokens`,
        'prompt',
      );
    }
    for (const id of ids) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.config.vocabSize)) {
        throw new CokvError(`prompt: token id ${id} is outside the vocabulary (0..${this.config.vocabSize - 1})`, 'prompt');
      }
    }
    return ids;
  }

  /**
   * An empty sequence (session) on this model: prefill, compress, fork, generate, save (see src/session/sequence.ts).
   * Async so that a later version can place it on a worker without changing callers.
   */
  async createSequence(opts: SequenceOptions = {}): Promise<Sequence> {
    this.live('createSequence');
    return Sequence.create(this, opts);
  }

  /** A multi-turn chat over one kept sequence (see src/session/chat-session.ts). */
  async createChatSession(opts: import('./session/chat-session.js').ChatSessionOptions = {}): Promise<import('./session/chat-session.js').ChatSession> {
    return (await import('./session/chat-session.js')).ChatSession.create(this, opts);
  }

  /**
   * Generate from a text prompt or prompt ids: a one-shot Sequence (prefill with `press`, or the context-only
   * protocol with `compressPrefix`, or the given `prefilled` cache), then its decode loop. Validation errors are
   * thrown here, before iteration.
   */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): Generation {
    this.live('generate');
    // createPress('full') is no press: the full cache, prefilled in chunks as without one.
    if (isFullPress(opts.press)) opts = { ...opts, press: undefined };
    checkPrefillEvict(opts.press, opts);
    if (opts.prefillEvict && opts.prefilled) throw new CokvError('prefillEvict: not with prefilled (that cache is prefilled already)', 'flag');
    const ids = this.promptIds(prompt, opts.addSpecial, opts.addBos);
    if (opts.boundaries) checkBoundaries(opts.boundaries, ids.length);
    // Like transformers, generation may run past the trained context (RoPE positions keep counting); only the
    // prompt must fit. The retrieval model's 2048-token items need a few answer tokens beyond position 2048.
    const maxTokens = checkDecodeOptions(opts, this.config.contextLength);
    return new Generation((g) => this.run(g, ids, maxTokens, opts));
  }

  private async *run(g: Generation, ids: number[], room: number, opts: GenerateOptions): AsyncGenerator<GenerationChunk> {
    const t0 = performance.now();
    const k = opts.compressPrefix;
    let seq: Sequence;
    const p = opts.prefilled;
    if (p) {
      seq = Sequence.adopt(this, p.cache, ids, p.logits, p.prefillMs);
    } else {
      // The bounded mode must not preallocate the whole prompt per head: its heads grow by chunks.
      seq = Sequence.create(this, { kvDtype: opts.kvDtype, capacity: opts.prefillEvict ? 0 : ids.length + room });
      const signal = opts.signal;
      const prefillEvict = opts.prefillEvict;
      if (k !== undefined && k > 0 && k < ids.length) {
        const boundaries = opts.boundaries?.filter((b) => b < k);
        await seq.prefill(ids.slice(0, k), { press: opts.press, reserve: room + ids.length - k, signal, prefillEvict, boundaries });
        await seq.append(ids.slice(k), { signal });
      } else {
        await seq.prefill(ids, { press: opts.press, reserve: room, signal, prefillEvict, boundaries: opts.boundaries });
      }
    }
    const t1 = performance.now();
    const prompt = seq.stats;
    try {
      yield* seq.decode(g, room, opts, p ? { prefillMs: p.prefillMs } : { start: t0 });
    } finally {
      // A consumer that breaks out early (or a cancelled or failed decode) still gets stats, for what was done.
      if (!g.stats) g.stats = stoppedEarlyStats(g, seq, prompt, p ? p.prefillMs ?? 0 : t1 - t0, t1);
      seq.dispose();
    }
  }
}

/** Prompts longer than this are counted piece by piece before being tokenized whole (see checkPromptSize). */
const PROMPT_PIECE_CHARS = 1 << 16;
/** Tokens one cut between pieces may add (an extra prefix space, a split word) beyond the whole text's count. */
const PIECE_CUT_SLACK = 16;

/**
 * End of the piece of `text` starting at `at`: after the last newline in the next PROMPT_PIECE_CHARS characters,
 * else before a space, else a hard cut (never inside a surrogate pair).
 */
function pieceEnd(text: string, at: number): number {
  const limit = at + PROMPT_PIECE_CHARS;
  if (limit >= text.length) return text.length;
  const nl = text.lastIndexOf('\n', limit - 1);
  if (nl >= at + PROMPT_PIECE_CHARS / 2) return nl + 1;
  const sp = text.lastIndexOf(' ', limit - 1);
  if (sp > at + PROMPT_PIECE_CHARS / 2) return sp;
  const c = text.charCodeAt(limit - 1);
  return c >= 0xd800 && c < 0xdc00 ? limit + 1 : limit;
}

/** Load a model (GGUF file, Hugging Face folder, or llama2.c checkpoint) with its tokenizer. */
export async function loadModel(modelPath: string, opts: LoadOptions = {}): Promise<CokvModel> {
  const source = await openModel(modelPath);
  const tokenizer = await source.loadTokenizer();
  return new CokvModel(source, tokenizer, resolveBackend(opts.backend));
}
