/**
 * An OpenAI-compatible HTTP server over one loaded model (`cokv serve`): GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions, streaming as server-sent events, and GET /health. The model runs in its worker
 * thread, so /health and /v1/models answer while a long prefill or generation is under way. Requests run one at a time (one model, one cache)
 * through a bounded queue; a client that disconnects cancels its queued or running request. Every failure is
 * answered as OpenAI-style JSON; nothing a client sends can crash the process or leave a socket hanging.
 *
 * Over 500 lines on purpose: the HTTP handlers, SSE streaming and the prefix-cache wiring around one request flow; request parsing is in protocol.ts, the queue in queue.ts.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { DecodeOptions, Generation, GenerationStats } from '../engine.js';
import { KV_DTYPES, type KvDType } from '../cache/ragged.js';
import { CokvError, sanitize } from '../errors.js';
import { checkDecodeOptions } from '../generate/generation.js';
import { chatBoundaries } from '../model/prompt-boundaries.js';
import type { PressOptions } from '../press/options.js';
import { ScoredPress } from '../press/press.js';
import { createPress, isFullPress } from '../press/registry.js';
import { checkPrefillEvict, DEFAULT_KV_DTYPE, type SequenceStats } from '../session/sequence.js';
import type { PressSpec, RemoteModel, RemoteSequence } from '../session/remote-model.js';
import { ApiError, parseRequest, type ParsedRequest } from './protocol.js';
import { JobQueue } from './queue.js';

export interface ServerOptions {
  /** The model, in its worker (`loadModelWorker`): inference never blocks the server's event loop. */
  model: RemoteModel;
  /** The id clients send as `model` and see in /v1/models. */
  modelId: string;
  /** Require `Authorization: Bearer <apiKey>` on every request. */
  apiKey?: string;
  /** Requests that may wait behind the running one (default 16); more get 429. */
  queue?: number;
  /** Largest request body in bytes (default 8 MiB). */
  maxBody?: number;
  /** Press used when a request's `cokv` field names none (default: full cache). */
  press?: { name: string; options: PressOptions };
  /**
   * Prefill requests that have a press in the bounded mode (PrefillOptions.prefillEvict) unless they say
   * `cokv.prefill_evict: false` (default: the exact mode). Requests without a press are unaffected.
   */
  prefillEvict?: boolean;
  /** KV storage of requests that do not name one (default f16). */
  kvDtype?: KvDType;
  /** One line per request and event (default: none). */
  log?: (line: string) => void;
  /**
   * Finished requests' sequences kept so that a request whose prompt extends one of them (the next turn of a
   * conversation) prefills only the new tokens: at most this many (default 4; 0 turns reuse off).
   */
  prefixCache?: number;
  /** ... and at most this many bytes allocated by their caches together (default 512 MiB). */
  prefixCacheBytes?: number;
}

export interface CokvServer {
  server: http.Server;
  /** Stop accepting, cancel queued and running requests, close every connection. */
  close(): Promise<void>;
}

/** Chat replies without max_tokens stop here (or at the context): the cache is preallocated for them. */
const DEFAULT_CHAT_MAX_TOKENS = 1024;
/** OpenAI's default for /v1/completions. */
const DEFAULT_COMPLETION_MAX_TOKENS = 16;

interface Prepared {
  ids: number[];
  /** Decode options, checked. */
  opts: DecodeOptions;
  /** undefined: the full cache (checked here, built in the model's worker). */
  press: PressSpec | undefined;
  kvDtype: KvDType;
  /** Press and KV settings: a cached sequence is reused only by a request with the same key. */
  settings: string;
  promptTokens: number;
  maxTokens: number;
  pressName: string;
  /** The bounded prefill (only with a press). */
  prefillEvict: boolean;
  /**
   * Where the prompt's segments start (token indices: 0 and, for chat, each message's content), given to the
   * prefill when the press protects boundary tokens; undefined with any other press, which ignores them.
   */
  boundaries: number[] | undefined;
}

/** The prompt a boundary-protecting press compressed in a sequence: its length and its boundaries. */
interface CompressedPrompt {
  end: number;
  boundaries: readonly number[];
}

/** What the prefix cache needs of a sequence (a RemoteSequence in the server; a Sequence does too). */
export interface PrefixSequence {
  readonly tokens: readonly number[];
  readonly stats: SequenceStats;
  dispose(): void;
}

/** A finished request's sequence, kept for prefix reuse (see ServerOptions.prefixCache). */
interface CachedSequence<S> {
  seq: S;
  settings: string;
  bytes: number;
}

/**
 * A small LRU of finished sequences. A prompt that starts with all of a cached sequence's tokens (and asks for the
 * same press and KV settings) can fork it and prefill only the rest; the entry stays for other branches.
 */
export class PrefixCache<S extends PrefixSequence = PrefixSequence> {
  private entries: CachedSequence<S>[] = [];

  /** At most `limit` sequences holding at most `maxBytes` allocated cache bytes together. */
  constructor(readonly limit: number, readonly maxBytes: number) {}

  /** Sequences held now. */
  get size(): number {
    return this.entries.length;
  }

  /**
   * The longest cached sequence whose tokens are a strict prefix of `ids` with the same settings (now most recent).
   * `accept`: a further condition on the sequence (the server's: compressed with the same prompt boundaries).
   */
  lookup(ids: readonly number[], settings: string, accept?: (seq: S) => boolean): S | undefined {
    let best = -1;
    for (let i = 0; i < this.entries.length; i++) {
      const e = this.entries[i];
      const t = e.seq.tokens;
      if (e.settings !== settings || t.length >= ids.length || (best >= 0 && t.length <= this.entries[best].seq.tokens.length)) continue;
      if (isPrefix(t, ids) && (!accept || accept(e.seq))) best = i;
    }
    if (best < 0) return undefined;
    const [e] = this.entries.splice(best, 1);
    this.entries.push(e);
    return e.seq;
  }

  /**
   * Keep `seq` (the cache takes it over): entries it extends are dropped (the conversation moved on), then the
   * least recently used ones until both limits hold. A sequence larger than the byte limit alone is not kept.
   */
  add(seq: S, settings: string): void {
    const bytes = seq.stats.allocatedBytes;
    if (this.limit <= 0 || bytes > this.maxBytes) {
      seq.dispose();
      return;
    }
    this.entries = this.entries.filter((e) => {
      const superseded = e.settings === settings && isPrefix(e.seq.tokens, seq.tokens);
      if (superseded) e.seq.dispose();
      return !superseded;
    });
    this.entries.push({ seq, settings, bytes });
    let total = this.entries.reduce((a, e) => a + e.bytes, 0);
    while (this.entries.length > this.limit || total > this.maxBytes) {
      const old = this.entries.shift()!;
      total -= old.bytes;
      old.seq.dispose();
    }
  }

  /** Dispose every cached sequence. */
  clear(): void {
    for (const e of this.entries) e.seq.dispose();
    this.entries = [];
  }
}

function isPrefix(a: readonly number[], b: readonly number[]): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What a request did, for its log line. */
interface Outcome {
  promptTokens?: number;
  generated?: number;
  finish?: string;
  cancelled?: 'queued' | 'running';
  /** Prompt tokens taken from the prefix cache. */
  reused?: number;
}

export function createCokvServer(o: ServerOptions): CokvServer {
  const queue = new JobQueue(o.queue ?? 16);
  const maxBody = o.maxBody ?? 8 << 20;
  const created = Math.floor(Date.now() / 1000);
  const modelEntry = { id: o.modelId, object: 'model', created, owned_by: 'cokv' };
  const keyHash = o.apiKey !== undefined ? sha256(o.apiKey) : undefined;
  const log = o.log ?? (() => {});
  const prefixes = new PrefixCache<RemoteSequence>(o.prefixCache ?? 4, o.prefixCacheBytes ?? 512 << 20);
  /** Sequences whose prompt a boundary-protecting press compressed (forks inherit their source's). */
  const compressedPrompts = new WeakMap<RemoteSequence, CompressedPrompt>();
  const encoder = { encode: (text: string, addSpecial: boolean) => o.model.encode(text, addSpecial), bosId: o.model.info.bosId };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      // handle() answers its own errors; this is the last guard so a bug costs one request, not the process.
      log(`internal error: ${sanitize(e instanceof Error ? e.message : String(e))}`);
      if (!res.headersSent) sendJson(res, 500, new ApiError(500, 'internal server error', 'server_error').body());
      else res.destroy();
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const ac = new AbortController();
    // 'close' also follows a complete response; only an unfinished one means the client went away.
    res.on('close', () => { if (!res.writableFinished) ac.abort(); });
    res.on('error', () => {});
    const path = pathOf(req.url);
    const outcome: Outcome = {};
    try {
      // /health answers without a key (probes carry none; it tells nothing but that the server is up).
      if (keyHash && path !== '/health' && !authorized(req, keyHash)) {
        throw new ApiError(401, 'missing or incorrect API key (send Authorization: Bearer <key>)', 'invalid_request_error', null, 'invalid_api_key');
      }
      const route = routeOf(path);
      if (!route) throw new ApiError(404, `unknown request URL: ${req.method} ${sanitize(path, 200)}`, 'invalid_request_error', null, 'unknown_url');
      if (req.method !== route.method) {
        res.setHeader('Allow', route.method);
        throw new ApiError(405, `${req.method} is not allowed on ${path} (use ${route.method})`, 'invalid_request_error', null, 'method_not_allowed');
      }
      if (route.kind === 'health') {
        sendJson(res, 200, { status: 'ok' });
      } else if (route.kind === 'models') {
        sendJson(res, 200, { object: 'list', data: [modelEntry] });
      } else if (route.kind === 'model') {
        if (route.id !== o.modelId) throw new ApiError(404, `the model '${sanitize(route.id, 200)}' does not exist (this server serves '${o.modelId}')`, 'invalid_request_error', 'model', 'model_not_found');
        sendJson(res, 200, modelEntry);
      } else {
        const body = await readBody(req, maxBody);
        let json: unknown;
        try {
          json = JSON.parse(body.toString('utf8'));
        } catch (e) {
          throw new ApiError(400, `the request body is not valid JSON (${sanitize((e as Error).message, 200)})`, 'invalid_request_error', null, 'invalid_json');
        }
        const p = parseRequest(route.kind, json);
        const prep = await prepare(p, ac.signal);
        outcome.promptTokens = prep.promptTokens;
        const busy = queue.running;
        const turn = queue.acquire(ac.signal);
        if (!turn) {
          throw new ApiError(429, `the server is busy: ${queue.limit} requests are already waiting (--queue); retry later`, 'requests', null, 'queue_full');
        }
        if (busy) log(`${req.method} ${path} waiting (${queue.length} in the queue)`);
        let release: () => void;
        try {
          release = await turn;
        } catch {
          outcome.cancelled = 'queued';
          return;
        }
        try {
          if (ac.signal.aborted) outcome.cancelled = 'queued';
          else await respond(p, prep, res, ac.signal, outcome);
        } finally {
          release();
        }
      }
    } catch (e) {
      const err = toApiError(e);
      if (err.status >= 500) log(`internal error: ${sanitize(e instanceof Error ? e.stack ?? e.message : String(e))}`);
      if (!res.headersSent && !ac.signal.aborted) {
        // A body we stopped reading may still be arriving: close rather than parse the rest as the next request.
        if (err.code === 'body_too_large') res.setHeader('Connection', 'close');
        sendJson(res, err.status, err.body());
      } else if (!res.writableEnded) {
        res.end();
      }
    } finally {
      const ms = (performance.now() - t0).toFixed(0);
      const what = outcome.cancelled
        ? `cancelled by the client ${outcome.cancelled === 'queued' ? 'while queued' : `after ${outcome.generated ?? 0} tokens`}`
        : outcome.generated !== undefined ? `prompt ${outcome.promptTokens}${outcome.reused ? ` (${outcome.reused} reused)` : ''} + ${outcome.generated} tokens (${outcome.finish})` : '';
      log(`${req.method} ${sanitize(path, 200)} ${res.headersSent ? res.statusCode : '-'}${what ? ` ${what}` : ''} ${ms} ms`);
    }
  }

  /** Check and tokenize a request and build its generation (nothing runs until it is iterated). */
  async function prepare(p: ParsedRequest, signal: AbortSignal): Promise<Prepared> {
    const model = o.model;
    if (p.model !== undefined && p.model !== o.modelId) {
      throw new ApiError(404, `the model '${sanitize(p.model, 200)}' does not exist (this server serves '${o.modelId}')`, 'invalid_request_error', 'model', 'model_not_found');
    }
    let ids: number[];
    let chatText: string | undefined;
    if (p.kind === 'chat') {
      if (!model.info.chatTemplate) {
        throw new ApiError(400, `the model '${o.modelId}' has no chat template: use /v1/completions with a prompt, or serve a model that ships one`, 'invalid_request_error', 'messages', 'no_chat_template');
      }
      let text: string;
      try {
        text = await model.applyChatTemplate(p.messages!);
      } catch (e) {
        // Templates refuse some conversations (raise_exception: roles must alternate, …): the client's input.
        throw new ApiError(400, `messages: the chat template refused them (${sanitize((e as Error).message, 500)})`, 'invalid_request_error', 'messages');
      }
      // Templates write BOS themselves (as CokvModel.chat encodes them).
      ids = await promptIds(text, false, 'messages');
      chatText = text;
    } else {
      ids = await promptIds(p.prompt!, undefined, 'prompt');
    }
    const ctx = model.config.contextLength;
    const room = ctx - ids.length;
    const maxTokens = p.maxTokens ?? Math.min(room, p.kind === 'chat' ? DEFAULT_CHAT_MAX_TOKENS : DEFAULT_COMPLETION_MAX_TOKENS);
    if (maxTokens > room) {
      throw new ApiError(400, `max_tokens: the model's context is ${ctx} tokens; the prompt holds ${ids.length}, so at most ${room} more fit (asked for ${maxTokens})`, 'invalid_request_error', 'max_tokens', 'context_length_exceeded');
    }
    const c = p.cokv;
    const kvDtype = c.kvDtype ?? o.kvDtype ?? DEFAULT_KV_DTYPE;
    if (!(KV_DTYPES as readonly string[]).includes(kvDtype)) throw new ApiError(400, `cokv.kv_dtype: '${sanitize(kvDtype, 50)}' must be one of ${KV_DTYPES.join(', ')}`, 'invalid_request_error', 'cokv.kv_dtype');
    const base = o.press ?? { name: 'full', options: {} };
    const options: PressOptions = { ...base.options };
    // budget and ratio are alternatives: a request giving either replaces the server's.
    if (c.budget !== undefined || c.ratio !== undefined) {
      options.budget = c.budget;
      options.ratio = c.ratio;
    }
    if (c.window !== undefined) options.window = c.window;
    if (c.profile !== undefined) options.profile = c.profile;
    if (c.alpha !== undefined) options.alpha = c.alpha;
    if (c.sink !== undefined) options.sink = c.sink;
    if (c.kernel !== undefined) options.kernel = c.kernel;
    if (c.pool !== undefined) options.pool = c.pool as PressOptions['pool'];
    if (c.headScores !== undefined) options.headScores = c.headScores;
    if (c.protect !== undefined) options.protect = c.protect;
    if (c.preset !== undefined) options.preset = c.preset;
    const pressName = c.press ?? base.name;
    const opts: DecodeOptions = {
      maxTokens,
      // OpenAI's defaults: temperature 1, and without a seed every request draws differently.
      temperature: p.temperature ?? 1,
      topP: p.topP,
      topK: p.topK,
      minP: p.minP,
      repetitionPenalty: p.repetitionPenalty,
      seed: p.seed ?? crypto.randomInt(2 ** 31),
      stop: p.stop,
      // A client that goes away stops its prefill between layers and its decode between tokens.
      signal,
    };
    let press: PressSpec | undefined;
    let prefillEvict = false;
    let protects = false;
    try {
      // Built here to check it (errors name the request's fields); the worker builds its own from the descriptor.
      const made = createPress(pressName, options, model.config);
      press = isFullPress(made) ? undefined : { name: pressName, options };
      protects = made instanceof ScoredPress && (made.options.protect ?? 0) > 0;
      // Asked for in the request, it needs a press; the server's default applies to requests that have one.
      if (c.prefillEvict) checkPrefillEvict(press && made, { prefillEvict: true });
      prefillEvict = press !== undefined && (c.prefillEvict ?? o.prefillEvict ?? false);
      checkPrefillEvict(made, { prefillEvict });
      checkDecodeOptions(opts, model.config.contextLength);
    } catch (e) {
      if (e instanceof CokvError) throw asFieldError(e);
      throw e;
    }
    // The options that shape the compressed cache (a full cache: none but the storage type).
    const settings = JSON.stringify(press ? [pressName, kvDtype, Object.entries(options).filter(([, v]) => v !== undefined).sort(), prefillEvict] : ['full', kvDtype]);
    // Only a protecting press reads boundaries; finding a chat's costs one encoding of the text before each message.
    const boundaries = !protects ? undefined : chatText !== undefined ? await chatBoundaries(encoder, chatText, p.messages!.map((m) => m.content), ids) : [0];
    return { ids, opts, press, kvDtype: kvDtype as KvDType, settings, promptTokens: ids.length, maxTokens, pressName, prefillEvict, boundaries };
  }

  /**
   * The request's sequence, prefilled with its prompt: a fork of a cached sequence its prompt extends (only the new
   * tokens are prefilled, uncompressed) or a fresh one (prefilled, and compressed when the request has a press).
   * Returns it with the number of prompt tokens taken from the cache.
   */
  async function sequenceFor(prep: Prepared, signal: AbortSignal): Promise<{ seq: RemoteSequence; reused: number }> {
    // A prefix compressed by a protecting press is reused only where this prompt has the same boundaries in it.
    const cached = prefixes.lookup(prep.ids, prep.settings, (seq) => sameBoundaries(compressedPrompts.get(seq), prep.boundaries));
    if (cached) {
      const st = cached.stats;
      const reused = st.tokens - st.pendingTokens;
      const seq = await cached.fork({ reserve: prep.ids.length - st.tokens + prep.maxTokens });
      const compressed = compressedPrompts.get(cached);
      if (compressed) compressedPrompts.set(seq, compressed);
      try {
        await seq.append(prep.ids.slice(st.tokens), { signal });
      } catch (e) {
        seq.dispose();
        throw e;
      }
      return { seq, reused };
    }
    // The bounded mode must not preallocate the whole prompt per head: its heads grow by chunks.
    const seq = await o.model.createSequence({ kvDtype: prep.kvDtype, capacity: prep.prefillEvict ? 0 : prep.ids.length + prep.maxTokens });
    try {
      await seq.prefill(prep.ids, { press: prep.press, reserve: prep.maxTokens, signal, prefillEvict: prep.prefillEvict || undefined, boundaries: prep.boundaries });
    } catch (e) {
      seq.dispose();
      throw e;
    }
    if (prep.boundaries) compressedPrompts.set(seq, { end: prep.ids.length, boundaries: prep.boundaries });
    return { seq, reused: 0 };
  }

  async function promptIds(prompt: string | number[], addSpecial: boolean | undefined, param: string): Promise<number[]> {
    try {
      return await o.model.promptIds(prompt, addSpecial);
    } catch (e) {
      if (!(e instanceof CokvError)) throw e;
      const msg = e.message.replace(/^prompt: /, '');
      throw new ApiError(400, `${param}: ${msg}`, 'invalid_request_error', param, /context/.test(msg) ? 'context_length_exceeded' : null);
    }
  }

  /** Run the generation (our turn in the queue) and answer, streaming or in one piece. */
  async function respond(p: ParsedRequest, prep: Prepared, res: http.ServerResponse, signal: AbortSignal, outcome: Outcome): Promise<void> {
    const chat = p.kind === 'chat';
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${crypto.randomUUID()}`;
    const object = chat ? (p.stream ? 'chat.completion.chunk' : 'chat.completion') : 'text_completion';
    const base = { id, object, created: Math.floor(Date.now() / 1000), model: o.modelId, system_fingerprint: null };
    outcome.generated = 0;
    let seq: RemoteSequence;
    let reused: number;
    try {
      ({ seq, reused } = await sequenceFor(prep, signal));
    } catch (e) {
      if (!signal.aborted) throw e;
      outcome.cancelled = 'running';
      return;
    }
    outcome.reused = reused;
    const gen = seq.generate(prep.opts);
    // Only a generation that ran to its end leaves a sequence worth keeping.
    let finished = false;
    try {
      finished = await answer(p, prep, gen, res, signal, outcome, base, reused);
    } finally {
      if (finished && !signal.aborted) prefixes.add(seq, prep.settings);
      else seq.dispose();
    }
  }

  /** Stream or send `gen`'s answer; true when it ran to its end and was answered. */
  async function answer(p: ParsedRequest, prep: Prepared, gen: Generation, res: http.ServerResponse, signal: AbortSignal, outcome: Outcome, base: Record<string, unknown>, reused: number): Promise<boolean> {
    const chat = p.kind === 'chat';
    const usageOf = (n: number): { prompt_tokens: number; completion_tokens: number; total_tokens: number } =>
      ({ prompt_tokens: prep.promptTokens, completion_tokens: n, total_tokens: prep.promptTokens + n });
    if (!p.stream) {
      try {
        for await (const _ of gen) {
          outcome.generated = gen.tokens.length;
          if (signal.aborted) break;
        }
      } catch (e) {
        if (!signal.aborted) throw e;
      }
      if (signal.aborted) {
        outcome.cancelled = 'running';
        return false;
      }
      const s = gen.stats!;
      outcome.finish = finishReason(s);
      const choice = chat
        ? { index: 0, message: { role: 'assistant', content: gen.text, refusal: null }, logprobs: null, finish_reason: outcome.finish }
        : { index: 0, text: gen.text, logprobs: null, finish_reason: outcome.finish };
      sendJson(res, 200, { ...base, choices: [choice], usage: usageOf(s.generatedTokens), cokv: statsOf(s, prep, reused) });
      return true;
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    const usage = p.includeUsage ? { usage: null } : {};
    const event = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<void> =>
      write(res, `data: ${JSON.stringify({ ...base, choices: [choice], ...usage, ...extra })}\n\n`);
    const piece = (text: string, finish: string | null): Record<string, unknown> => chat
      ? { index: 0, delta: finish ? {} : { content: text }, logprobs: null, finish_reason: finish }
      : { index: 0, text, logprobs: null, finish_reason: finish };
    try {
      if (chat) await event({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
      for await (const chunk of gen) {
        outcome.generated = gen.tokens.length;
        if (signal.aborted) break;
        if (chunk.text) await event(piece(chunk.text, null));
      }
    } catch (e) {
      if (signal.aborted) {
        outcome.cancelled = 'running';
        return false;
      }
      // Headers are out: the error goes as an SSE event, which the OpenAI clients raise as an APIError.
      log(`internal error: ${sanitize(e instanceof Error ? e.stack ?? e.message : String(e))}`);
      await write(res, `data: ${JSON.stringify(new ApiError(500, 'internal server error during generation', 'server_error').body())}\n\n`);
      res.end();
      return false;
    }
    if (signal.aborted) {
      outcome.cancelled = 'running';
      return false;
    }
    const s = gen.stats!;
    outcome.finish = finishReason(s);
    await event(piece('', outcome.finish), { cokv: statsOf(s, prep, reused) });
    if (p.includeUsage) await write(res, `data: ${JSON.stringify({ ...base, choices: [], usage: usageOf(s.generatedTokens) })}\n\n`);
    res.end('data: [DONE]\n\n');
    return true;
  }

  function authorized(req: http.IncomingMessage, want: Buffer): boolean {
    const m = /^Bearer\s+(\S.*)$/i.exec(req.headers.authorization ?? '');
    // Hashes compare in constant time whatever the key's length.
    return m !== null && crypto.timingSafeEqual(sha256(m[1].trim()), want);
  }

  return {
    server,
    close: () => new Promise<void>((resolve) => {
      server.close(() => {
        prefixes.clear();
        resolve();
      });
      // Destroyed sockets close their responses, which aborts their queued or running requests.
      server.closeAllConnections();
    }),
  };
}

type Route = { kind: 'health' | 'models'; method: 'GET' } | { kind: 'model'; method: 'GET'; id: string } | { kind: 'completion' | 'chat'; method: 'POST' };

function routeOf(path: string): Route | undefined {
  if (path === '/health') return { kind: 'health', method: 'GET' };
  if (path === '/v1/models') return { kind: 'models', method: 'GET' };
  if (path.startsWith('/v1/models/')) return { kind: 'model', method: 'GET', id: decodeURIComponentSafe(path.slice('/v1/models/'.length)) };
  if (path === '/v1/completions') return { kind: 'completion', method: 'POST' };
  if (path === '/v1/chat/completions') return { kind: 'chat', method: 'POST' };
  return undefined;
}

/** The request's path; a target URL cannot parse from becomes one that routes nowhere (404), not an exception. */
function pathOf(url: string | undefined): string {
  try {
    return new URL(url ?? '/', 'http://localhost').pathname;
  } catch {
    return url ?? '/';
  }
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Whether a cached sequence compressed as `compressed` says (undefined: no protecting press ran) can serve a
 * prompt with `boundaries`: the same ones inside the compressed prompt (those after it fall in the new tokens,
 * which are appended uncompressed).
 */
function sameBoundaries(compressed: CompressedPrompt | undefined, boundaries: readonly number[] | undefined): boolean {
  if (!compressed) return true;
  const inside = (boundaries ?? [0]).filter((b) => b < compressed.end);
  return inside.length === compressed.boundaries.length && inside.every((b, i) => b === compressed.boundaries[i]);
}

function finishReason(s: GenerationStats): string {
  return s.stopReason === 'length' ? 'length' : 'stop';
}

function statsOf(s: GenerationStats, prep: Prepared, reused: number): Record<string, unknown> {
  return {
    press: prep.pressName,
    prefill_evict: prep.prefillEvict,
    // The prompt's segment starts the protecting press kept (only with such a press).
    ...(prep.boundaries ? { boundaries: prep.boundaries } : {}),
    // Prompt tokens taken from a cached earlier sequence (prefix reuse) rather than prefilled for this request.
    reusedPromptTokens: reused,
    prefill_ms: s.prefillMs,
    decode_tokens_per_second: s.decodeTokensPerSecond,
    kv_dtype: s.kvDtype,
    prompt_kv_bytes: s.promptKvBytes,
    prompt_full_kv_bytes: s.promptFullKvBytes,
    kv_bytes: s.kvBytes,
  };
}

function sha256(s: string): Buffer {
  return crypto.createHash('sha256').update(s).digest();
}

/** Library option names (the start of a library error) → the request field that sets them. */
const REQUEST_FIELDS: Record<string, string> = {
  press: 'cokv.press', budget: 'cokv.budget', ratio: 'cokv.ratio', window: 'cokv.window', pool: 'cokv.pool',
  kernel: 'cokv.kernel', alpha: 'cokv.alpha', profile: 'cokv.profile', headScores: 'cokv.head_scores', sink: 'cokv.sink',
  kvDtype: 'cokv.kv_dtype', prefillEvict: 'cokv.prefill_evict', protect: 'cokv.protect', preset: 'cokv.preset', maxTokens: 'max_tokens', temperature: 'temperature', seed: 'seed', stop: 'stop',
  topP: 'top_p', topK: 'top_k', minP: 'min_p', repetitionPenalty: 'repetition_penalty',
};

/**
 * Library errors start with the option's name (`budget: …`, `budget/ratio: …`, `profile FILE: …`); a request sets
 * them as fields (`cokv.budget`, `max_tokens`), which the message and `param` name instead.
 */
function asFieldError(e: CokvError): ApiError {
  const file = /^(profile|headScores) /.exec(e.message);
  if (file) return new ApiError(400, `${REQUEST_FIELDS[file[1]]}${e.message.slice(file[1].length)}`, 'invalid_request_error', REQUEST_FIELDS[file[1]]);
  const lead = /^([A-Za-z]+(?:\/[A-Za-z]+)?):/.exec(e.message);
  const names = lead?.[1].split('/');
  if (lead && names!.every((n) => Object.hasOwn(REQUEST_FIELDS, n))) {
    const fields = names!.map((n) => REQUEST_FIELDS[n]);
    return new ApiError(400, `${fields.join('/')}${e.message.slice(lead[1].length)}`, 'invalid_request_error', fields[0]);
  }
  const field = (flag: string): string => `cokv.${flag.replace(/-/g, '_')}`;
  const msg = e.message.replace(/--([a-z][a-z-]*)/g, (_, f: string) => field(f));
  const first = /--([a-z][a-z-]*)/.exec(e.message);
  return new ApiError(400, msg, 'invalid_request_error', first ? field(first[1]) : null);
}

function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof CokvError) return new ApiError(400, e.message, 'invalid_request_error');
  return new ApiError(500, 'internal server error', 'server_error');
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** Write, waiting for the socket to drain when its buffer is full (a slow reader must not grow our memory). */
function write(res: http.ServerResponse, data: string): Promise<void> {
  if (res.destroyed || res.write(data)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * The request body, at most `max` bytes. A larger one is read to its end and dropped (up to a cap) so the 400 can
 * be delivered instead of a connection reset; past the cap the connection is cut.
 */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const cap = Math.max(64 << 20, 4 * max);
  const tooBig = (): ApiError => new ApiError(400, `the request body is larger than the server's limit of ${max} bytes (--max-body)`, 'invalid_request_error', null, 'body_too_large');
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > cap) {
      reject(tooBig());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let ended = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= max) chunks.push(c);
      else {
        chunks.length = 0;
        if (size > cap) {
          req.destroy();
          reject(tooBig());
        }
      }
    });
    req.on('end', () => {
      ended = true;
      if (size > max) reject(tooBig());
      else resolve(Buffer.concat(chunks, size));
    });
    req.on('error', () => reject(new ApiError(400, 'the request body was cut off', 'invalid_request_error')));
    req.on('close', () => { if (!ended) reject(new ApiError(400, 'the request body was cut off', 'invalid_request_error')); });
  });
}
