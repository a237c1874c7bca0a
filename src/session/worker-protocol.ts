/**
 * The messages between a RemoteModel (main thread, src/session/remote-model.ts) and its model worker
 * (src/session/model-worker.ts). Everything here is structured-clonable: presses travel as descriptors
 * (`PressSpec`), AbortSignals as abort keys, errors as their name, message and kind.
 */
import { CokvError } from '../errors.js';
import type { BackendKind } from '../backend/select.js';
import type { ModelConfig } from '../model/config.js';
import type { PressOptions } from '../press/options.js';
import type { GenerationChunk, GenerationStats } from '../generate/generation.js';
import type { SequenceStats } from './sequence.js';
import type { ChatExchange, ChatSessionStats } from './chat-session.js';

/**
 * A press as it crosses the thread boundary: the registry name and options `createPress(name, options, config)`
 * takes (e.g. `{ name: 'snapkv', options: { budget: 64 } }`); the worker builds the press from it for each call.
 * `{ name: 'full' }` (or no press) is the full cache.
 */
export interface PressSpec {
  name: string;
  options?: PressOptions;
}

/** What the worker is started with. */
export interface WorkerInit {
  path: string;
  backend?: BackendKind;
}

/** What a loaded model tells the main thread once (the model's shape and chat settings). */
export interface RemoteModelInfo {
  /** The path the model was loaded from. */
  path: string;
  config: ModelConfig;
  /** Ids that stop generation by default. */
  eosIds: number[];
  /** The model's chat template (Jinja source), when it ships one. */
  chatTemplate?: string;
  bosToken?: string;
  eosToken?: string;
  /** The tokenizer's BOS id, when it has one (to turn text offsets into token indices, see model/prompt-boundaries.ts). */
  bosId?: number;
}

/** A sequence's state after a call: its stats (undefined when it was left unusable) and the tokens it gained. */
export interface SequenceState {
  stats: SequenceStats | undefined;
  /** Tokens appended since the last state sent for this sequence. */
  tail: number[];
  /** Why the sequence cannot be used any more (e.g. a cancelled prefill left it incomplete). */
  unusable?: WireError;
}

/** A chat session's state after a call: its stats (undefined once unusable) and its exchanges. */
export interface ChatState {
  stats: ChatSessionStats | undefined;
  turns: ChatExchange[];
}

/** One step of a remote generation; the last carries the state of the sequence or chat session it ran on. */
export type GenerationStep =
  | { done: false; chunk: GenerationChunk }
  | { done: true; stats: GenerationStats | undefined; text: string; tokens: number[]; seq?: SequenceState; chat?: ChatState };

/** main → worker */
export type ToWorker =
  | { type: 'call'; id: number; method: string; args: unknown[]; abortKey?: number; aborted?: boolean; progress?: boolean }
  | { type: 'abort'; abortKey: number };

/** An error as it crosses the boundary. */
export interface WireError {
  name: string;
  message: string;
  kind?: string;
}

/** worker → main */
export type FromWorker =
  | { type: 'ready'; info: RemoteModelInfo }
  | { type: 'failed'; error: WireError }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; error: WireError }
  | { type: 'progress'; id: number; steps: number };

export function toWire(e: unknown): WireError {
  if (e instanceof CokvError) return { name: 'CokvError', message: e.message, kind: e.kind };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

/** The error a WireError stands for: a CokvError with the same message and kind, else an Error with its message. */
export function fromWire(w: WireError): Error {
  if (w.name === 'CokvError') return new CokvError(w.message, w.kind);
  const e = new Error(w.message);
  e.name = w.name;
  return e;
}
