/**
 * The OpenAI request bodies the server accepts, checked field by field into one shape. A field the server cannot
 * honour (n > 1, logprobs, tools, penalties, …) is refused with a 400 naming it rather than silently ignored, since
 * ignoring it would change what the client gets; fields that do not change the output (user, metadata) pass.
 */
import type { ChatMessage } from '../engine.js';
import { DEFAULT_PROTECT, PRESS_PRESETS, type PressPreset } from '../press/options.js';

/** An OpenAI-style error: `{ error: { message, type, param, code } }` with this HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Per-request press settings (the `cokv` field), in the library's option names. */
export interface RequestPress {
  press?: string;
  budget?: number;
  ratio?: number;
  window?: number;
  profile?: string;
  alpha?: number;
  sink?: number;
  kernel?: number;
  pool?: string;
  headScores?: string;
  kvDtype?: string;
  /** The bounded prefill (PrefillOptions.prefillEvict); undefined: the server's default. */
  prefillEvict?: boolean;
  /** Boundary protection's share of each head's budget, [0, 1) (PressOptions.protect; `true` in the request: 0.1, `false`: 0). */
  protect?: number;
  /** The press conventions (PressOptions.preset). */
  preset?: PressPreset;
}

export interface ParsedRequest {
  kind: 'completion' | 'chat';
  model?: string;
  /** Completions: text or token ids. */
  prompt?: string | number[];
  /** Chat: messages with their content flattened to text. */
  messages?: ChatMessage[];
  /** Undefined: the endpoint's default. */
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  /** stream_options.include_usage: a last chunk with `usage` and no choices. */
  includeUsage: boolean;
  cokv: RequestPress;
}

type Body = Record<string, unknown>;

const bad = (param: string, message: string): ApiError => new ApiError(400, `${param}: ${message}`, 'invalid_request_error', param);

/** JSON null counts as absent, as the OpenAI API treats optional fields. */
function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function num(b: Body, key: string, o: { min?: number; max?: number; integer?: boolean; above?: number }, param = key): number | undefined {
  const v = b[key];
  if (!present(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(param, `${JSON.stringify(v)} is not a number`);
  if (o.integer && !Number.isSafeInteger(v)) throw bad(param, `${v} is not an integer`);
  if (o.min !== undefined && v < o.min) throw bad(param, `${v} is below the minimum ${o.min}`);
  if (o.above !== undefined && !(v > o.above)) throw bad(param, `${v} must be greater than ${o.above}`);
  if (o.max !== undefined && v > o.max) throw bad(param, `${v} is above the maximum ${o.max}`);
  return v;
}

function str(b: Body, key: string, param = key): string | undefined {
  const v = b[key];
  if (!present(v)) return undefined;
  if (typeof v !== 'string') throw bad(param, `${JSON.stringify(v)} is not a string`);
  return v;
}

function bool(b: Body, key: string, param = key): boolean | undefined {
  const v = b[key];
  if (!present(v)) return undefined;
  if (typeof v !== 'boolean') throw bad(param, `${JSON.stringify(v)} is not a boolean`);
  return v;
}

/** Refuse a field that is set to anything but its no-op value(s). */
function unsupported(b: Body, key: string, ok: (v: unknown) => boolean, why: string): void {
  if (present(b[key]) && !ok(b[key])) throw bad(key, `not supported by cokv serve (${why})`);
}

const MAX_STOP = 16;

function stopList(b: Body): string[] {
  const v = b.stop;
  if (!present(v)) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw bad('stop', 'must be a string or an array of strings');
  if (list.length > MAX_STOP) throw bad('stop', `at most ${MAX_STOP} stop strings`);
  if (list.some((s) => s === '')) throw bad('stop', 'stop strings must not be empty');
  return list as string[];
}

const PRESS_FIELDS = ['press', 'budget', 'ratio', 'window', 'profile', 'alpha', 'sink', 'kernel', 'pool', 'head_scores', 'kv_dtype', 'prefill_evict', 'protect', 'preset'];

/** `cokv.protect`: a fraction in [0, 1), or true (the default share) / false (off), as `--protect [fraction]`. */
function protectField(c: Body): number | undefined {
  const v = c.protect;
  if (!present(v)) return undefined;
  if (typeof v === 'boolean') return v ? DEFAULT_PROTECT : 0;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad('cokv.protect', `${JSON.stringify(v)} is not a number (a fraction in [0, 1), or true for ${DEFAULT_PROTECT})`);
  if (!(v >= 0 && v < 1)) throw bad('cokv.protect', `${v} must be a fraction in [0, 1)`);
  return v;
}

function presetField(c: Body): PressPreset | undefined {
  const v = str(c, 'preset', 'cokv.preset');
  if (v !== undefined && !(PRESS_PRESETS as readonly string[]).includes(v)) throw bad('cokv.preset', `${JSON.stringify(v.slice(0, 50))} must be ${PRESS_PRESETS.join(' or ')}`);
  return v as PressPreset | undefined;
}

function pressFields(b: Body): RequestPress {
  const v = b.cokv;
  if (!present(v)) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw bad('cokv', 'must be an object like {"press": "snapkv", "budget": 64}');
  const c = v as Body;
  // Our own namespace, so a misspelt key is an error rather than a setting silently not applied.
  for (const k of Object.keys(c)) if (!PRESS_FIELDS.includes(k)) throw bad(`cokv.${k}`, `unknown field (known: ${PRESS_FIELDS.join(', ')})`);
  return {
    press: str(c, 'press', 'cokv.press'),
    budget: num(c, 'budget', { integer: true, min: 1 }, 'cokv.budget'),
    // The press checks the range: (0, 1] kept, or with preset kvpress [0, 1) removed.
    ratio: num(c, 'ratio', { min: 0, max: 1 }, 'cokv.ratio'),
    window: num(c, 'window', { integer: true, min: 1 }, 'cokv.window'),
    profile: str(c, 'profile', 'cokv.profile'),
    alpha: num(c, 'alpha', { integer: true, min: 0 }, 'cokv.alpha'),
    sink: num(c, 'sink', { integer: true, min: 0 }, 'cokv.sink'),
    kernel: num(c, 'kernel', { integer: true, min: 1 }, 'cokv.kernel'),
    pool: str(c, 'pool', 'cokv.pool'),
    headScores: str(c, 'head_scores', 'cokv.head_scores'),
    kvDtype: str(c, 'kv_dtype', 'cokv.kv_dtype'),
    prefillEvict: bool(c, 'prefill_evict', 'cokv.prefill_evict'),
    protect: protectField(c),
    preset: presetField(c),
  };
}

function promptField(b: Body): string | number[] {
  const v = b.prompt;
  if (!present(v)) throw bad('prompt', 'is required');
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    if (v.length > 0 && v.every((x) => typeof x === 'number')) {
      if (!v.every((x) => Number.isSafeInteger(x))) throw bad('prompt', 'token ids must be integers');
      return v as number[];
    }
    // A batch of one is the same request; larger batches would need one generation each.
    if (v.length === 1 && (typeof v[0] === 'string' || Array.isArray(v[0]))) return promptField({ prompt: v[0] });
    if (v.length > 1) throw bad('prompt', 'batches of prompts are not supported by cokv serve (send one request per prompt)');
  }
  throw bad('prompt', 'must be a string or an array of token ids');
}

const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'];

function messagesField(b: Body): ChatMessage[] {
  const v = b.messages;
  if (!Array.isArray(v) || v.length === 0) throw bad('messages', 'must be a non-empty array of {role, content}');
  return v.map((m, i) => {
    const p = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw bad(p, 'must be an object {role, content}');
    const role = (m as Body).role;
    if (typeof role !== 'string' || !ROLES.includes(role)) throw bad(`${p}.role`, `must be one of ${ROLES.join(', ')}`);
    if (present((m as Body).tool_calls)) throw bad(`${p}.tool_calls`, 'not supported by cokv serve (no tool calling)');
    const c = (m as Body).content;
    let content: string;
    if (typeof c === 'string') content = c;
    else if (Array.isArray(c)) {
      // Text parts are joined; images and audio have nowhere to go in a text-only model.
      content = c.map((part, j) => {
        const pp = part as Body;
        if (typeof part !== 'object' || part === null || pp.type !== 'text' || typeof pp.text !== 'string') {
          throw bad(`${p}.content[${j}]`, 'only {"type": "text", "text": …} parts are supported');
        }
        return pp.text;
      }).join('');
    } else throw bad(`${p}.content`, 'must be a string or an array of text parts');
    return { role, content };
  });
}

/** Check a parsed JSON body for /v1/completions or /v1/chat/completions. Throws ApiError (400) naming the field. */
export function parseRequest(kind: 'completion' | 'chat', body: unknown): ParsedRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, 'the request body must be a JSON object');
  const b = body as Body;
  unsupported(b, 'n', (v) => v === 1, 'one choice per request');
  unsupported(b, 'best_of', (v) => v === 1, 'one choice per request');
  unsupported(b, 'echo', (v) => v === false, 'the prompt is not echoed');
  unsupported(b, 'logprobs', (v) => v === false || v === 0, 'no log-probabilities');
  unsupported(b, 'top_logprobs', (v) => v === 0, 'no log-probabilities');
  unsupported(b, 'suffix', (v) => v === '', 'no insertion');
  unsupported(b, 'presence_penalty', (v) => v === 0, 'use repetition_penalty');
  unsupported(b, 'frequency_penalty', (v) => v === 0, 'use repetition_penalty');
  unsupported(b, 'logit_bias', (v) => typeof v === 'object' && Object.keys(v as object).length === 0, 'no logit bias');
  unsupported(b, 'tools', (v) => Array.isArray(v) && v.length === 0, 'no tool calling');
  unsupported(b, 'functions', (v) => Array.isArray(v) && v.length === 0, 'no tool calling');
  unsupported(b, 'tool_choice', (v) => v === 'none', 'no tool calling');
  unsupported(b, 'function_call', (v) => v === 'none', 'no tool calling');
  unsupported(b, 'response_format', (v) => typeof v === 'object' && (v as Body).type === 'text', 'text output only');
  const so = b.stream_options;
  if (present(so) && (typeof so !== 'object' || Array.isArray(so))) throw bad('stream_options', 'must be an object');
  const includeUsage = present(so) ? bool(so as Body, 'include_usage') ?? false : false;
  // The chat API renamed max_tokens; both are accepted, not both at once.
  const maxA = num(b, 'max_tokens', { integer: true, min: 0 });
  const maxB = kind === 'chat' ? num(b, 'max_completion_tokens', { integer: true, min: 0 }) : undefined;
  if (maxA !== undefined && maxB !== undefined) throw bad('max_completion_tokens', 'give max_tokens or max_completion_tokens, not both');
  return {
    kind,
    model: str(b, 'model'),
    prompt: kind === 'completion' ? promptField(b) : undefined,
    messages: kind === 'chat' ? messagesField(b) : undefined,
    maxTokens: maxA ?? maxB,
    temperature: num(b, 'temperature', { min: 0, max: 2 }),
    topP: num(b, 'top_p', { min: 0, max: 1 }),
    topK: num(b, 'top_k', { integer: true, min: 0 }),
    minP: num(b, 'min_p', { min: 0, max: 1 }),
    repetitionPenalty: num(b, 'repetition_penalty', { above: 0 }),
    seed: num(b, 'seed', { integer: true }),
    stop: stopList(b),
    stream: bool(b, 'stream') ?? false,
    includeUsage,
    cokv: pressFields(b),
  };
}
