/**
 * A chat session: a conversation over one kept `Sequence`. Each turn renders the whole conversation with the chat
 * template and prefills only the tokens beyond what the sequence already holds; when the rendering no longer
 * starts with the held tokens (a template that re-renders earlier turns, or an answer whose text re-encodes to
 * other tokens) the conversation is prefilled again from scratch, and `stats` says so. With a press, the history is
 * compressed when its KV grows past the budget, `stats.perTurn` reports how much of each turn's KV is kept, and
 * `stats.lastTurn.evicted` which turns' entries the last compression evicted. A press that protects boundary tokens
 * (`protect`, `boundary-snapkv`) is given where each message's content starts (and position 0), the held turns'
 * included, so every compression keeps the first tokens of every message.
 *
 * The model's context bounds the positions, and evicted tokens keep theirs (keys are stored rotated), so no press
 * can make room in it: a turn whose prompt would reach the context is refused (CokvError kind 'prompt', naming
 * the limit) before anything changes, and the session goes on as it was (`reset()` to start over).
 *
 * ```ts
 * const chat = await model.createChatSession({ system: 'You are terse.' });
 * const answer = chat.prompt('Hello!', { maxTokens: 40 });
 * for await (const chunk of answer) process.stdout.write(chunk.text);
 * console.log(chat.stats.lastTurn);
 * ```
 *
 * Over 500 lines on purpose: rendering, held-token bookkeeping, compression, context shift and save/load all read and update one record of the held messages.
 */
import fs from 'node:fs';
import type { CokvModel, ChatMessage } from '../engine.js';
import type { KvDType } from '../cache/ragged.js';
import { CokvError } from '../errors.js';
import {
  Generation, checkDecodeOptions, type DecodeOptions, type GenerationChunk,
} from '../generate/generation.js';
import { applyChatTemplate } from '../model/chat.js';
import { contentOffsets, prefixTokenCount } from '../model/prompt-boundaries.js';
import { ScoredPress } from '../press/press.js';
import type { Press } from '../press/types.js';
import { writeFileAtomic } from '../util/files.js';
import { isFullPress } from '../press/registry.js';
import { checkPrefillEvict, DEFAULT_KV_DTYPE, Sequence, stoppedEarlyStats, type SequenceStats } from './sequence.js';
import { contextShiftProblem } from './context-shift.js';

export interface ChatSessionOptions {
  /** Compress the history with this press when its KV exceeds the budget (see `maxHistoryTokens`). */
  press?: Press;
  /** A system message put first in every rendering. */
  system?: string;
  /** KV storage of the session's sequence: 'f16' (default), 'f32' or 'q8'. */
  kvDtype?: KvDType;
  /**
   * With `press`: compress only once the entries held per budgeted KV head (on average, the new turn included)
   * would exceed this many. Default: every turn is prefilled with the press, which itself evicts nothing while
   * the cache is within its `budget` (a `ratio` press then shrinks the history every turn: give this bound).
   */
  maxHistoryTokens?: number;
  /** A Jinja chat template to use instead of the model's own (required for a model that ships none). */
  template?: string;
  /**
   * With `press`: prefill each compressed turn in the bounded mode (PrefillOptions.prefillEvict: compress after
   * every chunk, so a long message never holds its full K/V). Needs a press whose window fits one chunk.
   */
  prefillEvict?: boolean;
  /**
   * When a message would not fit the model's context (with room for `maxTokens` of answer), drop the oldest turns'
   * tokens after the system message's and move the rest back (Sequence.shift, llama.cpp's context shift), so the
   * conversation goes on; the history keeps every turn. Default false: such a message is refused.
   */
  contextShift?: boolean;
}

/** One exchange of the conversation. */
export interface ChatExchange {
  user: string;
  /** The answer's text (what was generated, also when it was cancelled). */
  assistant: string;
  /** True when the answer was cancelled or failed part-way (the text is what came before). */
  cancelled?: boolean;
}

/** How one turn's KV fares in the cache. */
export interface ChatTurnStats {
  /** Sequence positions [start, end) of the turn's tokens (its prompt part, then its answer; turn 0 includes the system message). */
  start: number;
  end: number;
  /** Of this turn's entries, the fraction still held, over every KV head of the full-attention layers (1 = none evicted). */
  kept: number;
  /**
   * Entries the turn put in the full-attention layers' KV heads (its tokens run through the model × those heads),
   * how many are still held, and how many presses evicted (entries = held + evicted).
   */
  entries: number;
  held: number;
  evicted: number;
  /** Of the turn's tokens, how many context shifts dropped (not counted in `entries`). */
  shiftedTokens: number;
}

/** What the last `prompt()` did before generating. */
export interface ChatPrefillStats {
  /** Tokens held from earlier turns and reused as they are. */
  reusedTokens: number;
  /** Tokens run through the model for this turn's prompt. */
  prefilledTokens: number;
  /** True when the rendered conversation did not extend the held tokens, so everything was prefilled again. */
  reprefilled: boolean;
  /** Why it was prefilled again (undefined when it was not). */
  reprefillReason?: string;
  /** True when the press ran over the cache during this turn's prefill. */
  compressed: boolean;
  /**
   * When it ran: per turn (the history's, then this one's prompt), the entries of the full-attention layers' KV
   * heads this compression evicted (0 where it evicted none of that turn's).
   */
  evicted?: number[];
  /** The positions [start, end) a context shift dropped before this turn's prefill (undefined: none). */
  shift?: { start: number; end: number };
}

export interface ChatSessionStats {
  /** Finished exchanges in the history. */
  turns: number;
  /** Positions used (tokens seen, evicted ones included). */
  tokens: number;
  /** KV storage of the session's sequence. */
  kvDtype: KvDType;
  /** K+V bytes held, and what an uncompressed cache would hold for the same tokens. */
  kvBytes: number;
  kvFullBytes: number;
  /** Average entries held per KV head of the full-attention layers. */
  heldPerHead: number;
  /** Times the press ran, and times the conversation was prefilled again from scratch. */
  compressions: number;
  reprefills: number;
  /** Context shifts made, and the tokens they dropped. */
  shifts: number;
  shiftedTokens: number;
  /** Per history turn, its positions and kept fraction. */
  perTurn: ChatTurnStats[];
  /** The last turn's prefill (undefined before the first turn). */
  lastTurn: ChatPrefillStats | undefined;
}

/** The file `save()` writes next to the sequence's saved cache (`<path>.kvc`). */
interface SavedChat {
  format: 'cokv-chat';
  version: 1;
  system?: string;
  template?: string;
  history: ChatExchange[];
  spans: [number, number][];
  tokens: number;
  heldText?: string;
  compressions: number;
  reprefills: number;
  /** Context shift state: tokens dropped (in order, after the first `shiftKeep`), per turn, and the shift count. */
  shiftDropped?: number[];
  shiftKeep?: number;
  shiftedPerTurn?: number[];
  shifts?: number;
  /** Positions where the held messages' contents start (only with a protecting press). */
  boundaries?: number[];
}

/** The chat template a session renders with: the option, else the model's own. */
function resolveTemplate(model: CokvModel, template: string | undefined): string {
  const t = template ?? model.source.chatTemplate;
  if (t === undefined || t.trim() === '') {
    throw new CokvError(`template: ${model.source.path} has no chat template of its own (pass one as the template option)`, 'flag');
  }
  return t;
}

export class ChatSession {
  private seq: Sequence | undefined;
  private history: ChatExchange[] = [];
  /** Per history turn, its positions [start, end) in the sequence. */
  private spans: [number, number][] = [];
  private busy = false;
  private disposed = false;
  private compressions = 0;
  private reprefills = 0;
  private last: ChatPrefillStats | undefined;
  /** Set when the sequence had to be emptied (a cancelled prefill): why the next turn prefills everything. */
  private rebuild: string | undefined;
  /** The text of the held tokens (the last rendering plus its answer), when known. */
  private heldText: string | undefined;
  private readonly template: string;
  /** Tokens context shifts dropped, in order: the held conversation is tokens[0, shiftKeep) + these + the rest. */
  private shiftDropped: number[] = [];
  private shiftKeep = 0;
  /** Per history turn, its tokens dropped by context shifts. */
  private shiftedPerTurn: number[] = [];
  private shifts = 0;
  /**
   * With a protecting press: the positions where the held messages' contents start (ascending; 0 is implied), given
   * to every compression so that it keeps the earlier messages' first tokens too.
   */
  private boundaries: number[] = [];

  private constructor(
    /** The model the session runs on. */
    readonly model: CokvModel,
    private readonly opts: ChatSessionOptions,
    seq: Sequence,
  ) {
    this.template = resolveTemplate(model, opts.template);
    this.seq = seq;
    const m = opts.maxHistoryTokens;
    if (m !== undefined && !(Number.isSafeInteger(m) && m > 0)) throw new CokvError(`maxHistoryTokens: ${m} must be a positive integer`, 'flag');
    if (m !== undefined && (!opts.press || isFullPress(opts.press))) throw new CokvError('maxHistoryTokens: needs a press (it says when the press compresses the history)', 'flag');
    checkPrefillEvict(isFullPress(opts.press) ? undefined : opts.press, { prefillEvict: opts.prefillEvict });
    const shiftProblem = opts.contextShift ? contextShiftProblem(model.config, opts.kvDtype ?? DEFAULT_KV_DTYPE) : undefined;
    if (shiftProblem) throw new CokvError(`contextShift: ${shiftProblem}`, 'flag');
  }

  /** A new, empty session (use `model.createChatSession`). */
  static async create(model: CokvModel, opts: ChatSessionOptions = {}): Promise<ChatSession> {
    resolveTemplate(model, opts.template);
    return new ChatSession(model, { ...opts }, await model.createSequence({ kvDtype: opts.kvDtype }));
  }

  /**
   * A session saved by `save(file)`: its history and its sequence's cache (`<file>.kvc`), so the next turn
   * continues exactly as it would have. `opts` gives what a file cannot hold (the press) and may override the
   * saved system message and template (a different rendering then prefills again).
   */
  static async load(model: CokvModel, file: string, opts: ChatSessionOptions = {}): Promise<ChatSession> {
    let saved: SavedChat;
    try {
      saved = JSON.parse(fs.readFileSync(file, 'utf8')) as SavedChat;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code) throw e;
      throw new CokvError(`${file}: not a saved chat (${(e as Error).message})`, 'format');
    }
    if (saved?.format !== 'cokv-chat' || saved.version !== 1) throw new CokvError(`${file}: not a saved chat of this cokv version`, 'format');
    const okTurn = (t: ChatExchange): boolean => typeof t?.user === 'string' && typeof t.assistant === 'string';
    const okSpan = (p: [number, number]): boolean => Array.isArray(p) && p.length === 2 && p.every((x) => Number.isSafeInteger(x) && x >= 0);
    if (!Array.isArray(saved.history) || !Array.isArray(saved.spans) || saved.spans.length !== saved.history.length
      || !saved.history.every(okTurn) || !saved.spans.every(okSpan) || !Number.isSafeInteger(saved.tokens)
      || (saved.system !== undefined && typeof saved.system !== 'string') || (saved.template !== undefined && typeof saved.template !== 'string')) {
      throw new CokvError(`${file}: a saved chat with a damaged history`, 'format');
    }
    const seq = await Sequence.load(model, `${file}.kvc`, { kvDtype: opts.kvDtype });
    if (seq.position !== saved.tokens) {
      seq.dispose();
      throw new CokvError(`${file}: its cache ${file}.kvc holds ${seq.position} tokens, the chat ${saved.tokens} (files from different saves)`, 'format');
    }
    // Later sequences (reset, re-prefill) keep the loaded cache's storage.
    const merged: ChatSessionOptions = { ...opts, system: opts.system ?? saved.system, template: opts.template ?? saved.template, kvDtype: seq.kvDtype };
    let s: ChatSession;
    try {
      s = new ChatSession(model, merged, seq);
    } catch (e) {
      seq.dispose();
      throw e;
    }
    s.history = saved.history.map((t) => ({ ...t }));
    s.spans = saved.spans.map(([a, b]) => [a, b]);
    s.heldText = typeof saved.heldText === 'string' ? saved.heldText : undefined;
    s.compressions = Number.isSafeInteger(saved.compressions) ? saved.compressions : 0;
    s.reprefills = Number.isSafeInteger(saved.reprefills) ? saved.reprefills : 0;
    const okIds = (a: unknown): a is number[] => Array.isArray(a) && a.every((x) => Number.isSafeInteger(x) && x >= 0);
    if (saved.shiftDropped !== undefined) {
      if (!okIds(saved.shiftDropped) || !Number.isSafeInteger(saved.shiftKeep) || !okIds(saved.shiftedPerTurn) || saved.shiftedPerTurn.length !== saved.history.length) {
        seq.dispose();
        throw new CokvError(`${file}: a saved chat with a damaged context-shift record`, 'format');
      }
      s.shiftDropped = [...saved.shiftDropped];
      s.shiftKeep = saved.shiftKeep!;
      s.shiftedPerTurn = [...saved.shiftedPerTurn];
      s.shifts = Number.isSafeInteger(saved.shifts) ? saved.shifts! : 0;
    } else {
      s.shiftedPerTurn = saved.history.map(() => 0);
    }
    // Older saves have none: later compressions then protect only the messages still to come (and position 0).
    if (okIds(saved.boundaries) && saved.boundaries.every((b) => b < saved.tokens)) s.boundaries = [...saved.boundaries];
    return s;
  }

  private get sequence(): Sequence {
    if (this.disposed || !this.seq) throw new CokvError('chat session: it was disposed', 'state');
    return this.seq;
  }

  /** The exchanges so far (copies). */
  get turns(): ChatExchange[] {
    return this.history.map((t) => ({ ...t }));
  }

  /** The conversation as chat messages (system first), optionally with a new user message. */
  messages(user?: string): ChatMessage[] {
    const m: ChatMessage[] = [];
    if (this.opts.system !== undefined) m.push({ role: 'system', content: this.opts.system });
    for (const t of this.history) m.push({ role: 'user', content: t.user }, { role: 'assistant', content: t.assistant });
    if (user !== undefined) m.push({ role: 'user', content: user });
    return m;
  }

  /** The conversation with `user` appended, rendered with the template (assistant turn opened). */
  render(user: string): string {
    return applyChatTemplate(this.template, this.messages(user), {
      bosToken: this.model.source.bosToken, eosToken: this.model.source.eosToken, addGenerationPrompt: true, source: this.model.source.path,
    });
  }

  /**
   * Ask `user`: the answer streams from the returned Generation and is appended to the history when it ends
   * (also when it is cancelled through `opts.signal`: the part generated is kept). One turn at a time.
   */
  prompt(user: string, opts: DecodeOptions = {}): Generation {
    void this.sequence;
    if (this.busy) throw new CokvError('chat session: a turn is running (finish or cancel it first)', 'state');
    if (typeof user !== 'string' || user.length === 0) throw new CokvError('prompt: the message is empty', 'prompt');
    const maxTokens = checkDecodeOptions(opts, this.model.config.contextLength);
    const text = this.render(user);
    return new Generation((g) => this.turn(g, user, text, maxTokens, opts));
  }

  private async *turn(g: Generation, user: string, text: string, maxTokens: number, opts: DecodeOptions): AsyncGenerator<GenerationChunk> {
    if (this.busy) throw new CokvError('chat session: a turn is running (finish or cancel it first)', 'state');
    this.busy = true;
    let prompt: SequenceStats | undefined;
    let finished = false;
    let start = 0;
    const t0 = performance.now();
    let t1 = t0;
    try {
      start = await this.prefillTurn(user, text, maxTokens, opts.signal);
      prompt = this.sequence.stats;
      // The answer is the next message: its content starts at the first generated token.
      if (this.protects) this.boundaries.push(this.sequence.position);
      t1 = performance.now();
      yield* this.sequence.decode(g, maxTokens, opts);
      finished = true;
    } finally {
      this.busy = false;
      if (prompt && this.seq) {
        const cancelled = !finished || g.stats?.stopReason === 'cancelled';
        g.stats ??= stoppedEarlyStats(g, this.seq, prompt, t1 - t0, t1);
        this.history.push({ user, assistant: g.text, ...(cancelled ? { cancelled: true } : {}) });
        this.spans.push([start, this.seq.position]);
        this.shiftedPerTurn.push(0);
        // The held tokens are the rendering plus the answer's tokens, whose text is g.text unless a stop string
        // (generated, then cut from the text) or a cancellation (text still buffered) came between.
        this.heldText = !cancelled && g.stats.stopReason !== 'stop' ? text + g.text : undefined;
      }
    }
  }

  /**
   * Prefill what the rendered conversation `text` adds to what is held (or all of it again); returns the turn's
   * first position. The held part is compared as text when its text is known (the answer's tokens are kept as
   * generated, not re-encoded), else as tokens.
   */
  private async prefillTurn(user: string, text: string, maxTokens: number, signal: AbortSignal | undefined): Promise<number> {
    let seq = this.sequence;
    let reason = this.rebuild;
    let suffix: number[] | undefined;
    // Where the suffix starts in the rendering: after this much of its text, or as the tail of these tokens.
    let from: { text: number } | { ids: readonly number[] } | undefined;
    if (reason === undefined && seq.position > 0) {
      if (this.heldText !== undefined) {
        if (text.length > this.heldText.length && text.startsWith(this.heldText)) {
          suffix = this.model.encode(text.slice(this.heldText.length), false);
          from = { text: this.heldText.length };
        } else reason = 'the rendered conversation does not start with the held text (the template renders earlier turns differently)';
      } else {
        const ids = this.model.promptIds(text, false);
        from = { ids };
        const held = this.heldIds(seq);
        if (held.length >= ids.length) reason = `the rendered conversation (${ids.length} tokens) is not longer than the ${held.length} held`;
        for (let i = 0; reason === undefined && i < held.length; i++) {
          if (held[i] !== ids[i]) reason = `the rendered conversation re-encodes to other tokens than the held ones at position ${i}`;
        }
        if (reason === undefined) suffix = ids.slice(held.length);
      }
    }
    // Templates write BOS themselves (as in CokvModel.chat).
    if (!suffix) {
      suffix = this.model.promptIds(text, false);
      from = { ids: suffix };
    }
    if (suffix.length === 0) throw new CokvError('prompt: the message adds no tokens to the conversation', 'prompt');
    const shift = reason === undefined ? this.shiftFor(seq, suffix.length, maxTokens) : undefined;
    if (!shift) this.checkContext(reason === undefined ? seq.position : 0, suffix.length, reason !== undefined);
    else await this.shiftOut(seq, shift);
    let start = seq.position;
    if (reason !== undefined) {
      if (seq.position > 0) {
        seq.dispose();
        this.seq = seq = await this.model.createSequence({ kvDtype: this.opts.kvDtype });
      }
      this.reprefills++;
      this.rebuild = undefined;
      const n = this.history.length;
      const at = Array.from({ length: n + 1 }, (_, i) => (i === 0 ? 0 : this.renderedLength(i)));
      this.spans = this.history.map((_, i) => [at[i], at[i + 1]]);
      this.clearShifts();
      start = at[n];
    }
    if (reason !== undefined) this.boundaries = [];
    const base = seq.position;
    const held = this.boundaries.filter((b) => b < base);
    const boundaries = this.protects ? this.suffixBoundaries(this.messages(user).map((m) => m.content), text, suffix, from!) : undefined;
    const press = this.pressFor(seq, suffix.length);
    this.last = {
      reusedTokens: seq.position, prefilledTokens: suffix.length, reprefilled: reason !== undefined, reprefillReason: reason, compressed: press !== undefined,
      ...(shift ? { shift } : {}),
    };
    // For the eviction report: what each turn held before, and which positions this pass feeds.
    const fedFrom = seq.position - seq.stats.pendingTokens;
    const before = press ? heldBySpan(seq, this.spans) : undefined;
    try {
      await seq.prefill(suffix, { press, reserve: maxTokens, signal, prefillEvict: press && this.opts.prefillEvict, ...(press && boundaries ? { boundaries, heldBoundaries: held } : {}) });
    } catch (e) {
      // The sequence is incomplete now: the next turn starts from an empty one (the history is kept).
      seq.dispose();
      this.seq = await this.model.createSequence({ kvDtype: this.opts.kvDtype });
      this.rebuild = 'the previous prefill was cancelled or failed';
      throw e;
    }
    this.heldText = text;
    if (boundaries) this.boundaries = [...held, ...boundaries.map((b) => base + b)];
    if (press && before) {
      this.compressions++;
      const spans: [number, number][] = [...this.spans, [start, seq.position]];
      const after = heldBySpan(seq, spans);
      const H = budgetedHeads(this.model);
      const fed = spans.map(([a, b]) => Math.max(0, Math.min(b, seq.position) - Math.max(a, fedFrom)) * H);
      this.last.evicted = spans.map((_, i) => (before[i] ?? 0) + fed[i] - after[i]);
    }
    return start;
  }

  /** Whether the press reads boundaries (it protects boundary tokens). */
  private get protects(): boolean {
    const p = this.opts.press;
    return p instanceof ScoredPress && (p.options.protect ?? 0) > 0;
  }

  /**
   * Indices into `suffix` (the tokens a turn prefills) where one of `contents` (the rendered messages') starts in
   * `text`: those found after `from.text` characters (the held text, which `suffix` encodes the rest of), or, with
   * `from.ids` (the whole rendering's tokens, which `suffix` ends), those in its tail. Text offsets become token
   * indices by encoding the text before them (model/prompt-boundaries.ts).
   */
  private suffixBoundaries(contents: readonly string[], text: string, suffix: readonly number[], from: { text: number } | { ids: readonly number[] }): number[] {
    const bos = this.model.tokenizer.bosId;
    const out = new Set<number>();
    for (const at of contentOffsets(text, contents)) {
      if ('text' in from) {
        if (at >= from.text) out.add(prefixTokenCount(this.model.encode(text.slice(from.text, at), false), suffix, false, bos));
      } else if (at > 0) {
        const b = prefixTokenCount(this.model.encode(text.slice(0, at), false), from.ids, false, bos) - (from.ids.length - suffix.length);
        if (b >= 0) out.add(b);
      }
    }
    return [...out].sort((a, b) => a - b);
  }

  /**
   * Refuse (before anything changes) a prompt of `n` tokens after `held` that would leave no position for the
   * answer in the model's context: evicted tokens keep their positions, so compressing cannot help.
   */
  private checkContext(held: number, n: number, reprefill: boolean): void {
    const ctx = this.model.config.contextLength;
    if (held + n < ctx) return;
    const what = reprefill ? `the conversation prefilled again is ${n} tokens` : `this message brings the conversation to ${held + n} tokens (${n} new after ${held})`;
    const press = this.opts.contextShift ? (reprefill ? ' (a conversation prefilled again is not shifted)' : ' (even a context shift dropping every earlier turn cannot make room)')
      : this.opts.press && !isFullPress(this.opts.press) ? ' (compressing the history cannot make room: evicted tokens keep their positions; the contextShift option drops old turns instead)' : '';
    throw new CokvError(`prompt: ${what}, which leaves no room for an answer in the model's context of ${ctx} tokens${press}; reset the chat or start a new one${this.opts.contextShift ? '' : ' (or let the contextShift option drop old turns)'}`, 'prompt');
  }

  /**
   * With `contextShift`, the positions to drop so that `n` new tokens and `maxTokens` of answer fit the context
   * (or, when the answer cannot fit whatever is dropped, at least the message): the oldest whole turns after the
   * system message's tokens. Undefined when it fits already, or when no shift is on or can make room.
   */
  private shiftFor(seq: Sequence, n: number, maxTokens: number): { start: number; end: number } | undefined {
    const ctx = this.model.config.contextLength;
    const held = seq.position;
    if (!this.opts.contextShift || held + n < ctx) return undefined;
    const keep = this.systemTokens(seq);
    const cached = held - seq.stats.pendingTokens;
    const need = (room: number): number | undefined => {
      // Turn boundaries after the kept prefix, oldest first; the last candidate drops everything processed.
      for (const end of [...this.spans.map(([a]) => a).filter((a) => a > keep), cached]) {
        if (end <= cached && held - (end - keep) + n + room <= ctx) return end;
      }
      return undefined;
    };
    const end = need(maxTokens) ?? need(1);
    return end !== undefined && end > keep ? { start: keep, end } : undefined;
  }

  /**
   * Tokens of the system message's rendering that the held ones start with (the part a context shift keeps): the
   * template rendered with the system message alone, as far as its tokens match the held ones.
   */
  private systemTokens(seq: Sequence): number {
    if (this.shiftDropped.length > 0) return this.shiftKeep;
    const keep = this.history;
    this.history = [];
    let text: string;
    try {
      text = applyChatTemplate(this.template, this.messages(), {
        bosToken: this.model.source.bosToken, eosToken: this.model.source.eosToken, addGenerationPrompt: false, source: this.model.source.path,
      });
    } finally {
      this.history = keep;
    }
    const ids = text ? this.model.encode(text, false) : [];
    const held = seq.tokens;
    let k = 0;
    while (k < ids.length && k < held.length && ids[k] === held[k]) k++;
    return k;
  }

  /** Drop positions [start, end) from the sequence (Sequence.shift) and move the turns' spans with them. */
  private async shiftOut(seq: Sequence, { start, end }: { start: number; end: number }): Promise<void> {
    const dropped = seq.tokens.slice(start, end);
    await seq.shift(start, end);
    const delta = end - start;
    const at = (p: number): number => (p < start ? p : p < end ? start : p - delta);
    this.spans = this.spans.map(([a, b], t) => {
      this.shiftedPerTurn[t] += Math.max(0, Math.min(b, end) - Math.max(a, start));
      return [at(a), at(b)];
    });
    this.shiftDropped.push(...dropped);
    this.shiftKeep = start;
    this.shifts++;
    // A dropped message's start goes with it; the later ones move back with their tokens.
    this.boundaries = this.boundaries.filter((b) => b < start || b >= end).map(at);
  }

  /** The held conversation's tokens, the ones context shifts dropped included. */
  private heldIds(seq: Sequence): readonly number[] {
    if (this.shiftDropped.length === 0) return seq.tokens;
    const t = seq.tokens;
    return [...t.slice(0, this.shiftKeep), ...this.shiftDropped, ...t.slice(this.shiftKeep)];
  }

  private clearShifts(): void {
    this.shiftDropped = [];
    this.shiftKeep = 0;
    this.shiftedPerTurn = this.history.map(() => 0);
  }

  /** Tokens of the rendering of history turns [0, n) (no assistant turn opened): where turn n starts. */
  private renderedLength(n: number): number {
    const keep = this.history;
    this.history = keep.slice(0, n);
    try {
      const text = applyChatTemplate(this.template, this.messages(), {
        bosToken: this.model.source.bosToken, eosToken: this.model.source.eosToken, addGenerationPrompt: false, source: this.model.source.path,
      });
      return this.model.encode(text, false).length;
    } finally {
      this.history = keep;
    }
  }

  /** The press to prefill `n` new tokens with, or undefined when the history stays as it is. */
  private pressFor(seq: Sequence, n: number): Press | undefined {
    const press = this.opts.press;
    if (!press || isFullPress(press)) return undefined;
    // A scored press needs at least its observation window of new rows; a shorter turn is compressed later.
    const window = (press as { window?: unknown }).window;
    const fed = n + seq.stats.pendingTokens;
    if (typeof window === 'number' && fed < window) return undefined;
    const max = this.opts.maxHistoryTokens;
    if (max !== undefined && heldPerHead(seq) + fed <= max) return undefined;
    return press;
  }

  get stats(): ChatSessionStats {
    const seq = this.sequence;
    const s = seq.stats;
    const cached = seq.position - s.pendingTokens;
    const counts = heldBySpan(seq, this.spans);
    const H = budgetedHeads(this.model);
    const perTurn = this.spans.map(([a, b], t) => {
      const n = Math.max(0, Math.min(b, cached) - a) * H;
      const shiftedTokens = this.shiftedPerTurn[t] ?? 0;
      return { start: a, end: b, kept: n > 0 ? counts[t] / n : shiftedTokens > 0 ? 0 : 1, entries: n, held: counts[t], evicted: n - counts[t], shiftedTokens };
    });
    return {
      turns: this.history.length, tokens: seq.position, kvDtype: s.kvDtype, kvBytes: s.kvBytes, kvFullBytes: s.kvFullBytes,
      heldPerHead: heldPerHead(seq), compressions: this.compressions, reprefills: this.reprefills,
      shifts: this.shifts, shiftedTokens: this.shiftDropped.length, perTurn,
      lastTurn: this.last ? { ...this.last, ...(this.last.evicted ? { evicted: [...this.last.evicted] } : {}), ...(this.last.shift ? { shift: { ...this.last.shift } } : {}) } : undefined,
    };
  }

  /** Forget the conversation (the system message stays) and free the cache. */
  async reset(): Promise<void> {
    if (this.busy) throw new CokvError('chat session: a turn is running (finish or cancel it first)', 'state');
    this.sequence.dispose();
    this.seq = await this.model.createSequence({ kvDtype: this.opts.kvDtype });
    this.history = [];
    this.spans = [];
    this.last = undefined;
    this.rebuild = undefined;
    this.heldText = undefined;
    this.compressions = this.reprefills = 0;
    this.clearShifts();
    this.shifts = 0;
    this.boundaries = [];
  }

  /** Write the history to `file` and the sequence to `<file>.kvc` (both atomically; see Sequence.save). */
  async save(file: string): Promise<void> {
    if (this.busy) throw new CokvError('chat session: a turn is running (finish or cancel it first)', 'state');
    const seq = this.sequence;
    await seq.save(`${file}.kvc`);
    const saved: SavedChat = {
      format: 'cokv-chat', version: 1, system: this.opts.system, template: this.opts.template, history: this.history, spans: this.spans,
      tokens: seq.position, heldText: this.heldText, compressions: this.compressions, reprefills: this.reprefills,
      ...(this.shifts > 0 ? { shiftDropped: this.shiftDropped, shiftKeep: this.shiftKeep, shiftedPerTurn: this.shiftedPerTurn, shifts: this.shifts } : {}),
      ...(this.boundaries.length > 0 ? { boundaries: this.boundaries.filter((b) => b < seq.position) } : {}),
    };
    writeFileAtomic(file, `${JSON.stringify(saved)}\n`, { what: 'save' });
  }

  /** Free the cache; later calls throw. */
  dispose(): void {
    this.seq?.dispose();
    this.seq = undefined;
    this.disposed = true;
  }
}

/** KV heads of the full-attention layers (layers × KV heads): the entries one token puts in them. */
function budgetedHeads(model: CokvModel): number {
  return model.config.layers.filter((l) => l.kind === 'full').length * model.config.numKvHeads;
}

/** Per span [start, end) of positions, the entries held in the full-attention layers' KV heads. */
function heldBySpan(seq: Sequence, spans: readonly [number, number][]): number[] {
  const counts = spans.map(() => 0);
  seq.model.config.layers.forEach((spec, l) => {
    if (spec.kind !== 'full') return;
    for (let h = 0; h < seq.model.config.numKvHeads; h++) {
      for (const p of seq.headPositions(l, h)) {
        // Spans are few and ordered: a linear scan per entry is cheap next to the attention it describes.
        for (let t = 0; t < spans.length; t++) {
          if (p >= spans[t][0] && p < spans[t][1]) { counts[t]++; break; }
        }
      }
    }
  });
  return counts;
}

/** Average entries held per KV head of the full-attention layers. */
function heldPerHead(seq: Sequence): number {
  const layers = seq.model.config.layers;
  let n = 0, heads = 0;
  seq.lengths().forEach((row, l) => {
    if (layers[l].kind !== 'full') return;
    for (const len of row) { n += len; heads++; }
  });
  return heads > 0 ? n / heads : 0;
}

