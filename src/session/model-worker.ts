/**
 * The model worker: a `node:worker_threads` entry that loads one CokvModel and runs the calls a RemoteModel
 * (src/session/remote-model.ts) posts to it — one call at a time, in arrival order, so a call's forward pass is
 * the only one running while it runs. Abort messages are handled outside that order: the Sequence pauses a
 * macrotask after every layer step, which is when they arrive, so a cancelled pass stops within one layer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadModel, type ChatMessage, type CokvModel, type GenerateOptions } from '../engine.js';
import type { Generation, DecodeOptions, GenerationChunk } from '../generate/generation.js';
import type { KvDType } from '../cache/ragged.js';
import { CokvError } from '../errors.js';
import { createPress, isFullPress } from '../press/registry.js';
import type { Press } from '../press/types.js';
import { Sequence, type PrefillOptions, type SequenceOptions } from './sequence.js';
import { ChatSession, type ChatSessionOptions } from './chat-session.js';
import {
  toWire, type ChatState, type FromWorker, type GenerationStep, type PressSpec, type SequenceState, type ToWorker, type WorkerInit,
} from './worker-protocol.js';

const port = parentPort;
if (!port) throw new Error('model-worker: not started as a worker thread');

function post(m: FromWorker): void {
  port!.postMessage(m);
}

/** Options of remote prefills as they arrive: a press descriptor instead of a press, no signal. */
type WirePrefillOptions = Omit<PrefillOptions, 'press' | 'signal'> & { press?: PressSpec };
type WireGenerateOptions = Omit<GenerateOptions, 'press' | 'prefilled' | 'signal'> & { press?: PressSpec };
type WireChatOptions = Omit<ChatSessionOptions, 'press'> & { press?: PressSpec };
type WireScoreOptions = Omit<NonNullable<Parameters<CokvModel['scoreContinuation']>[2]>, 'press' | 'prefilled'> & { press?: PressSpec };

interface SeqEntry {
  seq: Sequence;
  /** Tokens already reported to the main thread. */
  reported: number;
  disposed: boolean;
}

interface ChatEntry {
  chat: ChatSession;
  disposed: boolean;
}

interface GenEntry {
  gen: Generation;
  it: AsyncIterator<GenerationChunk>;
  seq?: SeqEntry;
  chat?: ChatEntry;
  /** The abort key of the generation (its signal lives until it ends). */
  key?: number;
}

/** What a call runs with: its abort signal and key (a generation keeps both for its later steps). */
interface CallContext {
  signal?: AbortSignal;
  key?: number;
}

class WorkerHost {
  private seqs = new Map<number, SeqEntry>();
  private chats = new Map<number, ChatEntry>();
  private gens = new Map<number, GenEntry>();
  private nextId = 1;
  /** Abort controllers of running calls and generations, by the key the main thread gave them. */
  readonly aborts = new Map<number, AbortController>();
  /** Reports forward-pass steps of the running call (set while a call asked for progress). */
  onStep: (() => void) | undefined;

  constructor(readonly model: CokvModel) {
    // Count the steps of the pass under way: one call runs at a time, so they are the running call's.
    const tf = model.transformer;
    const forwardAsync = tf.forwardAsync.bind(tf);
    tf.forwardAsync = (tokens, cache, opts) => forwardAsync(tokens, cache, {
      ...opts,
      pause: async () => {
        this.onStep?.();
        await opts.pause();
      },
    });
  }

  private press(spec: PressSpec | undefined): Press | undefined {
    if (!spec) return undefined;
    const p = createPress(spec.name, spec.options ?? {}, this.model.config);
    return isFullPress(p) ? undefined : p;
  }

  private seq(id: number): SeqEntry {
    const e = this.seqs.get(id);
    if (!e) throw new CokvError('sequence: it was disposed', 'state');
    return e;
  }

  private addSeq(seq: Sequence): { seq: number; state: SequenceState } {
    const id = this.nextId++;
    const e: SeqEntry = { seq, reported: 0, disposed: false };
    this.seqs.set(id, e);
    return { seq: id, state: this.state(e) };
  }

  private state(e: SeqEntry): SequenceState {
    const tokens = e.seq.tokens;
    const tail = tokens.slice(e.reported);
    e.reported = tokens.length;
    try {
      return { stats: e.seq.stats, tail };
    } catch (err) {
      // Left incomplete by a cancelled or failed prefill: the error its next call would throw.
      return { stats: undefined, tail, unusable: toWire(err) };
    }
  }

  private addGen(gen: Generation, ctx: CallContext, on: { seq?: SeqEntry; chat?: ChatEntry } = {}): { gen: number } {
    const id = this.nextId++;
    this.gens.set(id, { gen, it: gen[Symbol.asyncIterator](), ...on, key: ctx.key });
    return { gen: id };
  }

  private chat(id: number): ChatEntry {
    const e = this.chats.get(id);
    if (!e) throw new CokvError('chat session: it was disposed', 'state');
    return e;
  }

  private addChat(chat: ChatSession): { chat: number; state: ChatState } {
    const id = this.nextId++;
    const e: ChatEntry = { chat, disposed: false };
    this.chats.set(id, e);
    return { chat: id, state: this.chatState(e) };
  }

  private chatState(e: ChatEntry): ChatState {
    try {
      return { stats: e.chat.stats, turns: e.chat.turns };
    } catch {
      return { stats: undefined, turns: e.chat.turns };
    }
  }

  /** The calls, by method name. */
  readonly methods: Record<string, (ctx: CallContext, ...args: never[]) => unknown> = {
    encode: (_s, text: string, addSpecial?: boolean, addBos?: boolean) => this.model.encode(text, addSpecial, addBos),
    decode: (_s, ids: number[]) => this.model.decode(ids),
    promptIds: (_s, prompt: string | number[], addSpecial?: boolean, addBos?: boolean) => this.model.promptIds(prompt, addSpecial, addBos),
    applyChatTemplate: (_s, messages: ChatMessage[]) => this.model.applyChatTemplate(messages),
    newlineIds: () => this.model.newlineIds(),
    maxPromptChars: () => this.model.maxPromptChars(),
    scoreContinuation: (_s, prompt: number[], continuation: number[], opts: WireScoreOptions) =>
      this.model.scoreContinuation(prompt, continuation, { ...opts, press: this.press(opts.press) }),
    generate: (ctx, prompt: string | number[], opts: WireGenerateOptions) =>
      this.addGen(this.model.generate(prompt, { ...opts, press: this.press(opts.press), signal: ctx.signal }), ctx),
    next: async (_s, gen: number): Promise<GenerationStep> => {
      const g = this.gens.get(gen);
      if (!g) throw new CokvError('generate: the generation has ended', 'state');
      // A step that throws (aborted, failed) leaves the entry for the `return` that follows, which reports stats.
      const r = await g.it.next();
      if (!r.done) return { done: false, chunk: r.value };
      return this.endGen(gen, g);
    },
    return: async (_s, gen: number): Promise<GenerationStep> => {
      const g = this.gens.get(gen);
      if (!g) return { done: true, stats: undefined, text: '', tokens: [] };
      await g.it.return?.();
      return this.endGen(gen, g);
    },
    createSequence: (_s, opts: SequenceOptions) => this.addSeq(Sequence.create(this.model, opts)),
    loadSequence: async (_s, file: string, opts: { kvDtype?: KvDType }) => this.addSeq(await Sequence.load(this.model, file, opts)),
    prefill: async ({ signal }, seq: number, input: string | number[], opts: WirePrefillOptions) => {
      const e = this.seq(seq);
      // A failed one appends nothing but may leave the sequence unusable: the caller then asks for its `state`.
      await e.seq.prefill(input, { ...opts, press: this.press(opts.press), signal });
      return this.state(e);
    },
    compress: async (_s, seq: number, press: PressSpec, opts: { reserve?: number; boundaries?: number[] }) => {
      const e = this.seq(seq);
      const p = this.press(press);
      if (p) await e.seq.compress(p, opts);
      return this.state(e);
    },
    // A fork's first state lists all its tokens (its parent's mirror may lag behind a running generation).
    fork: (_s, seq: number, opts: { reserve?: number }) => this.addSeq(this.seq(seq).seq.fork(opts)),
    seqGenerate: (ctx, seq: number, opts: Omit<DecodeOptions, 'signal'>) => {
      const e = this.seq(seq);
      return this.addGen(e.seq.generate({ ...opts, signal: ctx.signal }), ctx, { seq: e });
    },
    state: (_s, seq: number) => this.state(this.seq(seq)),
    save: (_s, seq: number, file: string) => this.seq(seq).seq.save(file),
    lengths: (_s, seq: number) => this.seq(seq).seq.lengths(),
    headPositions: (_s, seq: number, layer: number, kvHead: number) => this.seq(seq).seq.headPositions(layer, kvHead),
    shift: async (_s, seq: number, start: number, end: number) => {
      const e = this.seq(seq);
      await e.seq.shift(start, end);
      // The mirror's tokens are replaced whole: a shift removes some from the middle.
      e.reported = 0;
      return this.state(e);
    },
    logits: (_s, seq: number) => this.seq(seq).seq.logits,
    seqScoreContinuation: async (_s, seq: number, continuation: number[]) => {
      const e = this.seq(seq);
      const score = await e.seq.scoreContinuation(continuation);
      return { score, state: this.state(e) };
    },
    createChatSession: async (_s, opts: WireChatOptions) => this.addChat(await this.model.createChatSession({ ...opts, press: this.press(opts.press) })),
    loadChatSession: async (_s, file: string, opts: WireChatOptions) => this.addChat(await ChatSession.load(this.model, file, { ...opts, press: this.press(opts.press) })),
    chatPrompt: (ctx, chat: number, user: string, opts: Omit<DecodeOptions, 'signal'>) => {
      const e = this.chat(chat);
      return this.addGen(e.chat.prompt(user, { ...opts, signal: ctx.signal }), ctx, { chat: e });
    },
    chatRender: (_s, chat: number, user: string) => this.chat(chat).chat.render(user),
    chatMessages: (_s, chat: number, user?: string) => this.chat(chat).chat.messages(user),
    chatReset: async (_s, chat: number) => {
      const e = this.chat(chat);
      await e.chat.reset();
      return this.chatState(e);
    },
    chatSave: (_s, chat: number, file: string) => this.chat(chat).chat.save(file),
    disposeChat: (_s, chat: number) => {
      const e = this.chats.get(chat);
      if (!e) return;
      e.chat.dispose();
      e.disposed = true;
      this.chats.delete(chat);
    },
    disposeSequence: (_s, seq: number) => {
      const e = this.seqs.get(seq);
      if (!e) return;
      e.seq.dispose();
      e.disposed = true;
      this.seqs.delete(seq);
    },
  };

  /** Forget a generation (and its abort key); its final step, with the sequence's state when it has one. */
  private endGen(id: number, g: GenEntry): GenerationStep {
    this.gens.delete(id);
    if (g.key !== undefined) this.aborts.delete(g.key);
    return {
      done: true, stats: g.gen.stats, text: g.gen.text, tokens: g.gen.tokens,
      seq: g.seq && !g.seq.disposed ? this.state(g.seq) : undefined,
      chat: g.chat && !g.chat.disposed ? this.chatState(g.chat) : undefined,
    };
  }
}

/** Calls whose abort key belongs to the generation they start (its steps, `next` and `return`, carry none). */
const GENERATION_CALLS = new Set(['generate', 'seqGenerate', 'chatPrompt']);

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  let host: WorkerHost;
  try {
    host = new WorkerHost(await loadModel(init.path, { backend: init.backend }));
  } catch (e) {
    post({ type: 'failed', error: toWire(e) });
    return;
  }
  const m = host.model;
  post({
    type: 'ready',
    info: { path: m.source.path, config: m.config, eosIds: m.eosIds, chatTemplate: m.source.chatTemplate, bosToken: m.source.bosToken, eosToken: m.source.eosToken, bosId: m.tokenizer.bosId },
  });
  // One call at a time, in arrival order (see the file comment); aborts are handled as they arrive.
  let tail = Promise.resolve();
  port!.on('message', (msg: ToWorker) => {
    if (msg.type === 'abort') {
      host.aborts.get(msg.abortKey)?.abort();
      return;
    }
    const ctx: CallContext = {};
    if (msg.abortKey !== undefined) {
      let ac = host.aborts.get(msg.abortKey);
      if (!ac) host.aborts.set(msg.abortKey, (ac = new AbortController()));
      if (msg.aborted) ac.abort();
      ctx.signal = ac.signal;
      ctx.key = msg.abortKey;
    }
    tail = tail.then(async () => {
      const fn = host.methods[msg.method];
      let steps = 0;
      host.onStep = msg.progress ? () => post({ type: 'progress', id: msg.id, steps: ++steps }) : undefined;
      try {
        if (!fn) throw new Error(`model worker: unknown call '${msg.method}'`);
        const value = await (fn as (c: CallContext, ...a: unknown[]) => unknown)(ctx, ...msg.args);
        post({ type: 'result', id: msg.id, value });
      } catch (e) {
        post({ type: 'error', id: msg.id, error: toWire(e) });
      } finally {
        host.onStep = undefined;
        // A prefill's key ends with its call; a generation's ends with the generation (endGen).
        if (msg.abortKey !== undefined && !GENERATION_CALLS.has(msg.method)) host.aborts.delete(msg.abortKey);
      }
    });
  });
}

void main();
