/**
 * A model that runs in a worker thread: `loadModelWorker(path)` starts one `node:worker_threads` Worker that
 * loads the model and runs every forward pass, so the calling thread's event loop stays free however long a
 * prefill or generation takes (an HTTP server keeps answering, timers keep firing).
 *
 * ```ts
 * const model = await loadModelWorker('../shared/assets/models/stories260K');
 * for await (const chunk of model.generate('Once upon a time', { maxTokens: 20, temperature: 0 })) process.stdout.write(chunk.text);
 * const doc = await model.createSequence();
 * await doc.prefill('Once upon a time, there was a little girl named Lily.');
 * await doc.compress({ name: 'snapkv', options: { budget: 12 } });
 * const s = await doc.fork();
 * console.log(await s.generate({ maxTokens: 10, temperature: 0 }).complete());
 * await model.dispose();
 * ```
 *
 * The API mirrors CokvModel and Sequence, with three differences: every call is async (sequence `fork` too);
 * presses cross the thread boundary as descriptors (`PressSpec`: the registry name and options `createPress`
 * takes), not Press objects; and a generation's options are checked when it is first iterated. Errors reach the
 * caller as the CokvError the model threw (same message and kind). An AbortSignal is forwarded to the worker,
 * which stops a prefill at its next layer step and a generation before its next token. `dispose()` ends the
 * worker and frees the model's memory. Getters that would copy bulky data on every call are methods here
 * (`sequence.logits()`, `headPositions()`, `lengths()`, `chat.messages()`).
 *
 * What does not cross, and why: everything that hands out or takes the worker's own objects — `source`,
 * `tokenizer`, `transformer`, `newCache()`, the cache-level `prefill(ids, cache)`, `prefillShared` / `fromShared`,
 * the `prefilled` option of `generate` and `scoreContinuation`, and `Sequence.adopt` / `Sequence.decode` (a cache,
 * a Transformer or a Generation lives in the worker's memory and a copy would not be the same object: the sequence
 * API — prefill, compress, fork, scoreContinuation, shift — does what they are for without moving a cache); and
 * `Sequence.create(model)`, which is `model.createSequence()` here.
 *
 * Over 500 lines on purpose: it mirrors the in-process model, sequence and chat-session API, one proxy method per call of the worker protocol (worker-protocol.ts); the worker side is model-worker.ts.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { BackendKind } from '../backend/select.js';
import type { KvDType } from '../cache/ragged.js';
import type { ChatMessage, CokvModel, GenerateOptions } from '../engine.js';
import { CokvError } from '../errors.js';
import { Generation, type DecodeOptions, type GenerationChunk } from '../generate/generation.js';
import type { ModelConfig } from '../model/config.js';
import type { PrefillOptions, SequenceOptions, SequenceStats } from './sequence.js';
import type { ChatExchange, ChatSessionOptions, ChatSessionStats } from './chat-session.js';
import {
  fromWire, type ChatState, type FromWorker, type GenerationStep, type PressSpec, type RemoteModelInfo, type SequenceState,
  type ToWorker, type WireError, type WorkerInit,
} from './worker-protocol.js';

export type { PressSpec, RemoteModelInfo } from './worker-protocol.js';

export interface WorkerLoadOptions {
  /** The worker's backend: 'auto' (default: native if built, else wasm, else ts), 'native', 'wasm' or 'ts'. */
  backend?: BackendKind;
}

/** GenerateOptions across the thread boundary: `press` is a descriptor; a `prefilled` cache cannot cross. */
export type RemoteGenerateOptions = Omit<GenerateOptions, 'press' | 'prefilled'> & { press?: PressSpec };

/** Progress of a remote prefill: forward-pass steps done so far (a layer's attention or FFN, a KV head's part). */
export interface PrefillProgress {
  steps: number;
}

/** PrefillOptions across the thread boundary: `press` is a descriptor; `onProgress` hears every layer step. */
export type RemotePrefillOptions = Omit<PrefillOptions, 'press'> & {
  press?: PressSpec;
  /**
   * Called (on this thread) after each forward-pass step of the prefill, as the worker reports it. One that throws
   * cancels the prefill (the worker stops at its next step) and the prefill rejects with its error.
   */
  onProgress?: (p: PrefillProgress) => void;
};

/** CokvModel.scoreContinuation's options across the thread boundary: `press` is a descriptor; no `prefilled` cache. */
export type RemoteScoreOptions = Omit<NonNullable<Parameters<CokvModel['scoreContinuation']>[2]>, 'press' | 'prefilled'> & { press?: PressSpec };

/** What CokvModel.scoreContinuation returns: per-token log-probabilities, their mean, the KV bytes after the prefill. */
export type ContinuationScore = ReturnType<CokvModel['scoreContinuation']>;

/** ChatSessionOptions across the thread boundary: `press` is a descriptor. */
export type RemoteChatSessionOptions = Omit<ChatSessionOptions, 'press'> & { press?: PressSpec };

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  onProgress?: (p: PrefillProgress) => void;
  abortKey?: number;
}

interface CallExtra {
  signal?: AbortSignal;
  /** A key chosen by the caller (generations keep theirs); default: the call's own. */
  abortKey?: number;
  onProgress?: (p: PrefillProgress) => void;
}

/** @internal The worker and its calls in flight (shared by a RemoteModel and its sequences). */
export class ModelChannel {
  private pending = new Map<number, Pending>();
  private nextId = 1;
  /** Why no call can be made any more: the model was disposed, or the worker died. */
  private closed: (() => Error) | undefined;

  constructor(private readonly worker: Worker) {
    worker.on('message', (m: FromWorker) => this.receive(m));
    worker.on('error', (e: Error) => this.fail(() => new CokvError(`model worker: it failed (${e.message})`, 'worker')));
    worker.on('exit', (code) => this.fail(() => new CokvError(`model worker: it exited (code ${code}) before answering: load the model again`, 'worker')));
    worker.unref();
  }

  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  newKey(): number {
    return this.nextId++;
  }

  post(m: ToWorker): void {
    if (!this.closed) this.worker.postMessage(m);
  }

  /** Run `method` in the worker (see the methods of src/session/model-worker.ts). */
  call<T>(method: string, args: unknown[], extra: CallExtra = {}): Promise<T> {
    if (this.closed) return Promise.reject(this.closed());
    const id = this.nextId++;
    const { signal, onProgress } = extra;
    // A call with a signal or a progress callback can be cancelled (by the signal, or by a callback that throws).
    const abortKey = extra.abortKey ?? (signal || onProgress ? id : undefined);
    // Only the call's own key is forwarded from here; a generation forwards its signal itself (it spans calls).
    const onAbort = signal && extra.abortKey === undefined ? (): void => this.post({ type: 'abort', abortKey: abortKey! }) : undefined;
    if (onAbort) signal!.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      if (onAbort) signal!.removeEventListener('abort', onAbort);
      this.pending.delete(id);
      if (this.pending.size === 0 && !this.closed) this.worker.unref();
    };
    return new Promise<T>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, {
        resolve: (v) => { done(); resolve(v as T); },
        reject: (e) => { done(); reject(e); },
        onProgress,
        abortKey,
      });
      this.worker.postMessage({ type: 'call', id, method, args, abortKey, aborted: signal?.aborted, progress: onProgress !== undefined } satisfies ToWorker);
    });
  }

  private receive(m: FromWorker): void {
    if (m.type === 'progress') {
      const p = this.pending.get(m.id);
      try {
        p?.onProgress?.({ steps: m.steps });
      } catch (e) {
        // A callback that throws cancels its call with that error (the worker stops at its next step).
        if (p!.abortKey !== undefined) this.post({ type: 'abort', abortKey: p!.abortKey });
        p!.reject(e instanceof Error ? e : new Error(String(e)));
      }
      return;
    }
    if (m.type !== 'result' && m.type !== 'error') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'result') p.resolve(m.value);
    else p.reject(fromWire(m.error));
  }

  /** Refuse every call from now on with `why()`, pending ones included. */
  fail(why: () => Error): void {
    if (this.closed) return;
    this.closed = why;
    for (const p of [...this.pending.values()]) p.reject(why());
    this.pending.clear();
  }

  async terminate(): Promise<void> {
    await this.worker.terminate();
  }
}

/** The error every call on a disposed remote model rejects with (worded as CokvModel's). */
function disposedError(): CokvError {
  return new CokvError('model: it was disposed (its worker has ended: load the model again)', 'state');
}

/**
 * A model loaded in its own worker thread (see `loadModelWorker`). Its methods mirror CokvModel's, all async.
 * Calls run in the worker one at a time, in the order they are made.
 */
export class RemoteModel {
  private disposing: Promise<void> | undefined;

  private constructor(private readonly channel: ModelChannel, /** The model's shape and chat settings. */ readonly info: RemoteModelInfo) {}

  /** Start a worker that loads `modelPath` (use `loadModelWorker`). */
  static async start(modelPath: string, opts: WorkerLoadOptions = {}): Promise<RemoteModel> {
    const worker = startWorker({ path: modelPath, backend: opts.backend });
    const info = await new Promise<RemoteModelInfo>((resolve, reject) => {
      const onMessage = (m: FromWorker): void => {
        if (m.type === 'ready') resolve(m.info);
        else if (m.type === 'failed') reject(fromWire(m.error));
        else return;
        off();
      };
      const onError = (e: Error): void => { off(); reject(new CokvError(`model worker: it failed while loading ${modelPath} (${e.message})`, 'worker')); };
      const onExit = (code: number): void => { off(); reject(new CokvError(`model worker: it exited (code ${code}) while loading ${modelPath}`, 'worker')); };
      const off = (): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    }).catch(async (e: unknown) => {
      await worker.terminate();
      throw e;
    });
    return new RemoteModel(new ModelChannel(worker), info);
  }

  get config(): ModelConfig {
    return this.info.config;
  }

  /** Ids that stop generation by default. */
  get eosIds(): number[] {
    return [...this.info.eosIds];
  }

  /** True once `dispose()` has been called. */
  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  /** Text to ids (CokvModel.encode). */
  encode(text: string, addSpecial?: boolean, addBos?: boolean): Promise<number[]> {
    return this.channel.call('encode', [text, addSpecial, addBos]);
  }

  /** Ids to text (CokvModel.decode). */
  decode(ids: readonly number[]): Promise<string> {
    return this.channel.call('decode', [[...ids]]);
  }

  /** Encode a prompt and check it fits the model (CokvModel.promptIds). */
  promptIds(prompt: string | readonly number[], addSpecial?: boolean, addBos?: boolean): Promise<number[]> {
    return this.channel.call('promptIds', [typeof prompt === 'string' ? prompt : [...prompt], addSpecial, addBos]);
  }

  /** Apply the model's chat template to `messages`, with the assistant turn opened (CokvModel.applyChatTemplate). */
  applyChatTemplate(messages: ChatMessage[]): Promise<string> {
    return this.channel.call('applyChatTemplate', [messages]);
  }

  /**
   * Generate from a text prompt or ids (CokvModel.generate), in the worker: iterate the Generation for chunks;
   * `stats`, `text` and `tokens` are complete after iteration (also after breaking out early). Options are checked
   * by the worker when iteration starts, so a bad option throws from the first step.
   */
  generate(prompt: string | readonly number[], opts: RemoteGenerateOptions = {}): Generation {
    const { signal, ...wire } = opts;
    const input = typeof prompt === 'string' ? prompt : [...prompt];
    return remoteGeneration(this.channel, signal, (extra) => this.channel.call('generate', [input, wire], extra));
  }

  /** Template the messages, then generate the assistant's reply (CokvModel.chat). */
  async chat(messages: ChatMessage[], opts: RemoteGenerateOptions = {}): Promise<Generation> {
    const prompt = await this.applyChatTemplate(messages);
    return this.generate(prompt, { addSpecial: false, ...opts });
  }

  /** Ids of every token whose text contains a newline (CokvModel.newlineIds). */
  newlineIds(): Promise<number[]> {
    return this.channel.call('newlineIds', []);
  }

  /** Most UTF-16 code units a prompt that fits the context can have (CokvModel.maxPromptChars). */
  maxPromptChars(): Promise<number> {
    return this.channel.call('maxPromptChars', []);
  }

  /**
   * Teacher-forced log-probabilities of `continuation` after `prompt`, the prompt's cache compressed by the press
   * `opts.press` describes (CokvModel.scoreContinuation; a `prefilled` cache cannot cross: use a sequence's
   * `scoreContinuation` instead).
   */
  scoreContinuation(prompt: readonly number[], continuation: readonly number[], opts: RemoteScoreOptions = {}): Promise<ContinuationScore> {
    return this.channel.call('scoreContinuation', [[...prompt], [...continuation], opts]);
  }

  /** An empty sequence in the worker (CokvModel.createSequence). */
  async createSequence(opts: SequenceOptions = {}): Promise<RemoteSequence> {
    const r = await this.channel.call<{ seq: number; state: SequenceState }>('createSequence', [opts]);
    return new RemoteSequence(this, this.channel, r.seq, r.state);
  }

  /** A sequence saved by `save()` (Sequence.load): refuses another model, another `kvDtype` (when given), a bad file. */
  async loadSequence(file: string, opts: { kvDtype?: KvDType } = {}): Promise<RemoteSequence> {
    const r = await this.channel.call<{ seq: number; state: SequenceState }>('loadSequence', [file, opts]);
    return new RemoteSequence(this, this.channel, r.seq, r.state);
  }

  /** A multi-turn chat over one kept sequence in the worker (CokvModel.createChatSession). */
  async createChatSession(opts: RemoteChatSessionOptions = {}): Promise<RemoteChatSession> {
    const r = await this.channel.call<{ chat: number; state: ChatState }>('createChatSession', [opts]);
    return new RemoteChatSession(this, this.channel, r.chat, r.state);
  }

  /** A chat session saved by `save(file)` (ChatSession.load); `opts` gives the press, and may override the rest. */
  async loadChatSession(file: string, opts: RemoteChatSessionOptions = {}): Promise<RemoteChatSession> {
    const r = await this.channel.call<{ chat: number; state: ChatState }>('loadChatSession', [file, opts]);
    return new RemoteChatSession(this, this.channel, r.chat, r.state);
  }

  /**
   * End the worker: the model's weights, workspace and every sequence's cache are freed. Calls still running
   * reject, and so does every later call (CokvError kind 'state'). Idempotent.
   */
  dispose(): Promise<void> {
    if (!this.disposing) {
      this.channel.fail(disposedError);
      this.disposing = this.channel.terminate();
    }
    return this.disposing;
  }
}

/**
 * A sequence (session) held by a RemoteModel's worker: Sequence's API, all async. `tokens` and `stats` are kept
 * here as of the last call that finished (a generation updates them when it ends).
 */
export class RemoteSequence {
  private ids: number[] = [];
  private st: SequenceStats | undefined;
  private unusable: WireError | undefined;
  private id: number | undefined;

  /** @internal Use `model.createSequence()`, `fork()` or `RemoteSequence.load()`. */
  constructor(readonly model: RemoteModel, private readonly channel: ModelChannel, id: number, state: SequenceState) {
    this.id = id;
    this.apply(state);
  }

  /** Load a sequence saved by `save()` into `model`'s worker (Sequence.load). */
  static load(model: RemoteModel, file: string, opts: { kvDtype?: KvDType } = {}): Promise<RemoteSequence> {
    return model.loadSequence(file, opts);
  }

  private apply(s: SequenceState): void {
    this.ids.push(...s.tail);
    this.st = s.stats;
    this.unusable = s.unusable;
  }

  private get handle(): number {
    if (this.id === undefined) throw new CokvError('sequence: it was disposed', 'state');
    return this.id;
  }

  /** Tokens seen so far (prefilled and generated, evicted ones included). */
  get tokens(): readonly number[] {
    return this.ids;
  }

  /** Next sequence position (= tokens.length). */
  get position(): number {
    return this.ids.length;
  }

  get kvDtype(): KvDType {
    return this.stats.kvDtype;
  }

  /** What the sequence holds, as of the last call that finished; throws as Sequence.stats on a disposed or broken one. */
  get stats(): SequenceStats {
    void this.handle;
    if (this.unusable || !this.st) throw fromWire(this.unusable ?? { name: 'CokvError', message: 'sequence: it is unusable', kind: 'state' });
    return this.st;
  }

  /** Run `input` (text or ids) through the model after what is cached (Sequence.prefill). */
  async prefill(input: string | readonly number[], opts: RemotePrefillOptions = {}): Promise<void> {
    const { signal, onProgress, ...wire } = opts;
    const id = this.handle;
    try {
      this.apply(await this.channel.call<SequenceState>('prefill', [id, typeof input === 'string' ? input : [...input], wire], { signal, onProgress }));
    } catch (e) {
      // A cancelled or failed pass may have left the sequence unusable: fetch what it is now.
      if (!this.channel.isClosed) this.apply(await this.channel.call<SequenceState>('state', [id]));
      throw e;
    }
  }

  /** `prefill` without compression (Sequence.append). */
  append(input: string | readonly number[], opts: Omit<RemotePrefillOptions, 'press' | 'prefillEvict'> = {}): Promise<void> {
    return this.prefill(input, { ...opts, press: undefined, prefillEvict: undefined });
  }

  /**
   * Compress the cache with the press `press` describes, using the last plain prefill's queries (Sequence.compress;
   * `boundaries`: where prompt segments begin, for presses that protect boundary tokens).
   */
  async compress(press: PressSpec, opts: { reserve?: number; boundaries?: readonly number[] } = {}): Promise<void> {
    const wire = { reserve: opts.reserve, boundaries: opts.boundaries && [...opts.boundaries] };
    this.apply(await this.channel.call<SequenceState>('compress', [this.handle, press, wire]));
  }

  /** An independent copy with room for `reserve` more entries per head (Sequence.fork). */
  async fork(opts: { reserve?: number } = {}): Promise<RemoteSequence> {
    const r = await this.channel.call<{ seq: number; state: SequenceState }>('fork', [this.handle, opts]);
    return new RemoteSequence(this.model, this.channel, r.seq, r.state);
  }

  /**
   * Generate from the sequence's state (Sequence.generate); it is left extended by the generated tokens. Options
   * are checked by the worker when iteration starts.
   */
  generate(opts: DecodeOptions = {}): Generation {
    const { signal, ...wire } = opts;
    const id = this.handle;
    return remoteGeneration(this.channel, signal, (extra) => this.channel.call('seqGenerate', [id, wire], extra), (end) => { if (end.seq) this.apply(end.seq); });
  }

  /** Write the sequence to `file`, atomically (Sequence.save). */
  async save(file: string): Promise<void> {
    await this.channel.call('save', [this.handle, file]);
  }

  /** Per (layer, KV head), the entries held. */
  lengths(): Promise<number[][]> {
    return this.channel.call('lengths', [this.handle]);
  }

  /** Original positions of the entries a head holds (Sequence.headPositions). */
  headPositions(layer: number, kvHead: number): Promise<Int32Array> {
    return this.channel.call('headPositions', [this.handle, layer, kvHead]);
  }

  /** Drop positions [start, end) and move the later entries back, re-rotating their keys (Sequence.shift). */
  async shift(start: number, end: number): Promise<void> {
    const state = await this.channel.call<SequenceState>('shift', [this.handle, start, end]);
    this.ids = [];
    this.apply(state);
  }

  /**
   * Logits predicting the token after the last one run through the model, or undefined when empty (Sequence's
   * `logits` getter; a method here, since a vocabulary's floats are fetched from the worker only when asked).
   */
  logits(): Promise<Float32Array | undefined> {
    return this.channel.call('logits', [this.handle]);
  }

  /**
   * Teacher-forced log-probabilities of `continuation` after what the sequence holds; it is left extended by those
   * tokens (Sequence.scoreContinuation).
   */
  async scoreContinuation(continuation: readonly number[]): Promise<{ logProbs: number[]; mean: number }> {
    const r = await this.channel.call<{ score: { logProbs: number[]; mean: number }; state: SequenceState }>('seqScoreContinuation', [this.handle, [...continuation]]);
    this.apply(r.state);
    return r.score;
  }

  /** Release the cache in the worker; any later call on this sequence throws. */
  dispose(): void {
    if (this.id === undefined) return;
    const id = this.id;
    this.id = undefined;
    if (!this.channel.isClosed) this.channel.call('disposeSequence', [id]).catch(() => {});
  }
}

/**
 * A chat session held by a RemoteModel's worker: ChatSession's API, all async. `turns` and `stats` are kept here as
 * of the last call that finished (a turn updates them when its answer ends).
 */
export class RemoteChatSession {
  private history: ChatExchange[] = [];
  private st: ChatSessionStats | undefined;
  private id: number | undefined;

  /** @internal Use `model.createChatSession()` or `model.loadChatSession()`. */
  constructor(/** The model the session runs on. */ readonly model: RemoteModel, private readonly channel: ModelChannel, id: number, state: ChatState) {
    this.id = id;
    this.apply(state);
  }

  private apply(s: ChatState): void {
    this.history = s.turns;
    this.st = s.stats;
  }

  private get handle(): number {
    if (this.id === undefined) throw new CokvError('chat session: it was disposed', 'state');
    return this.id;
  }

  /** The exchanges so far (copies). */
  get turns(): ChatExchange[] {
    return this.history.map((t) => ({ ...t }));
  }

  /** What the session holds, as of the last call that finished (ChatSession.stats). */
  get stats(): ChatSessionStats {
    void this.handle;
    if (!this.st) throw new CokvError('chat session: it is unusable', 'state');
    return this.st;
  }

  /**
   * Ask `user` (ChatSession.prompt): the answer streams from the Generation and joins the history when it ends
   * (also when cancelled through `opts.signal`). Options and the message are checked when iteration starts.
   */
  prompt(user: string, opts: DecodeOptions = {}): Generation {
    const { signal, ...wire } = opts;
    const id = this.handle;
    return remoteGeneration(this.channel, signal, (extra) => this.channel.call('chatPrompt', [id, user, wire], extra), (end) => { if (end.chat) this.apply(end.chat); });
  }

  /** The conversation as chat messages (system first), optionally with a new user message (ChatSession.messages). */
  messages(user?: string): Promise<ChatMessage[]> {
    return this.channel.call('chatMessages', [this.handle, user]);
  }

  /** The conversation with `user` appended, rendered with the template (ChatSession.render). */
  render(user: string): Promise<string> {
    return this.channel.call('chatRender', [this.handle, user]);
  }

  /** Forget the conversation (the system message stays) and free the cache (ChatSession.reset). */
  async reset(): Promise<void> {
    this.apply(await this.channel.call<ChatState>('chatReset', [this.handle]));
  }

  /** Write the history to `file` and the sequence to `<file>.kvc` (ChatSession.save). */
  async save(file: string): Promise<void> {
    await this.channel.call('chatSave', [this.handle, file]);
  }

  /** Free the session's cache in the worker; later calls throw. */
  dispose(): void {
    if (this.id === undefined) return;
    const id = this.id;
    this.id = undefined;
    if (!this.channel.isClosed) this.channel.call('disposeChat', [id]).catch(() => {});
  }
}

/**
 * A Generation whose chunks come from the worker one step at a time (each pulled when the consumer asks, as an
 * in-process generation computes each token when asked). `start` creates it in the worker; `onEnd` receives its
 * last step (with the state of the sequence or chat session it ran on).
 */
function remoteGeneration(
  channel: ModelChannel, signal: AbortSignal | undefined, start: (extra: { abortKey: number; signal?: AbortSignal }) => Promise<{ gen: number }>,
  onEnd?: (end: Extract<GenerationStep, { done: true }>) => void,
): Generation {
  return new Generation((g) => steps(g));
  async function* steps(g: Generation): AsyncGenerator<GenerationChunk> {
    // One abort key for the whole generation: its signal is forwarded whichever step is running.
    const abortKey = channel.newKey();
    const onAbort = (): void => channel.post({ type: 'abort', abortKey });
    signal?.addEventListener('abort', onAbort, { once: true });
    let gen: number | undefined;
    let end: Extract<GenerationStep, { done: true }> | undefined;
    try {
      ({ gen } = await start({ abortKey, signal }));
      for (;;) {
        const step = await channel.call<GenerationStep>('next', [gen]);
        if (step.done) {
          end = step;
          break;
        }
        if (step.chunk.token >= 0) g.tokens.push(step.chunk.token);
        g.text += step.chunk.text;
        yield step.chunk;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // Broken out of, cancelled or failed: the worker ends its side and reports the stats of what was done.
      if (!end && gen !== undefined && !channel.isClosed) end = await channel.call<GenerationStep & { done: true }>('return', [gen]).catch(() => undefined);
      if (end?.stats) {
        g.stats = end.stats;
        g.text = end.text;
        g.tokens = end.tokens;
      }
      if (end) onEnd?.(end);
    }
  }
}

/**
 * Start the worker. From the compiled package it is dist/session/model-worker.js; from the TypeScript sources
 * (vitest, tsx) the worker registers tsx's loader first and imports model-worker.ts.
 */
function startWorker(init: WorkerInit): Worker {
  const here = import.meta.url;
  const ts = here.endsWith('.ts');
  const entry = ts
    ? `import(${JSON.stringify(tsxApi())}).then((m) => { m.register(); return import(${JSON.stringify(new URL('./model-worker.ts', here).href)}); })`
    : new URL('./model-worker.js', here);
  const start = (execArgv?: string[]): Worker => new Worker(entry, { eval: ts, workerData: init, execArgv });
  // The worker inherits the parent's Node options, except those meant for a main script given as code.
  const execArgv = workerExecArgv(process.execArgv);
  if (execArgv.length === process.execArgv.length) return start();
  try {
    return start(execArgv);
  } catch (e) {
    // Given explicitly, per-process options (--max-old-space-size, …) are refused: start with none then.
    if ((e as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw e;
    return start([]);
  }
}

/**
 * Node options without those that only make sense for a main script given as code: `--input-type` (a worker
 * started from a file refuses it) and `-e`/`-p` with their code.
 */
export function workerExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--input-type' || a === '-e' || a === '--eval' || a === '-p' || a === '--print') i++;
    else if (!a.startsWith('--input-type=')) out.push(a);
  }
  return out;
}

/** File URL of tsx's ESM API (`tsx/esm/api`, import condition), which registers its loader in the worker. */
function tsxApi(): string {
  const require = createRequire(import.meta.url);
  const pkgFile = require.resolve('tsx/package.json');
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8')) as { exports?: Record<string, { import?: { default?: string } | string }> };
  const exp = pkg.exports?.['./esm/api']?.import;
  const rel = typeof exp === 'string' ? exp : exp?.default;
  if (!rel) throw new CokvError(`model worker: cannot find tsx's esm/api in ${pkgFile} (needed to run the worker from TypeScript sources)`, 'worker');
  return pathToFileURL(path.join(path.dirname(pkgFile), rel)).href;
}

/**
 * Load a model in a worker thread of its own (see RemoteModel): the weights live there and every forward pass
 * runs there, so this thread's event loop is never blocked by inference. Call `dispose()` to end the worker.
 */
export function loadModelWorker(modelPath: string, opts: WorkerLoadOptions = {}): Promise<RemoteModel> {
  return RemoteModel.start(modelPath, opts);
}
