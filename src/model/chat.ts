/**
 * Chat templates: the Jinja `chat_template` shipped in tokenizer_config.json (or GGUF `tokenizer.chat_template`),
 * rendered with `@huggingface/jinja` and the variables transformers' apply_chat_template passes.
 */
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { CokvError } from '../errors.js';

export interface ChatTurn {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  bosToken?: string;
  eosToken?: string;
  /** Open the assistant's turn at the end (default false, as in transformers). */
  addGenerationPrompt?: boolean;
  /** More template variables (e.g. `tools`, `date_string`). */
  extra?: Record<string, unknown>;
  /** Named in error messages (the model path). */
  source?: string;
}

const cache = new Map<string, Template>();

/**
 * Bounds on one rendering. The jinja runtime has none, so a template from an untrusted model folder
 * (`{% for i in range(100000000) %}`) would run the process out of heap; real templates take a few hundred steps
 * per message.
 */
export const CHAT_TEMPLATE_LIMITS = { steps: 1_000_000, range: 1_000_000 };

/** jinja's range() with the length bounded before the list is built. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() step must not be zero');
  const n = Math.max(0, Math.ceil((stop - start) / step));
  if (!(n <= CHAT_TEMPLATE_LIMITS.range)) throw new Error(`range() of ${n} numbers is more than the ${CHAT_TEMPLATE_LIMITS.range} allowed`);
  return Array.from({ length: n }, (_, i) => start + i * step);
}

type Method = (...args: unknown[]) => unknown;

/**
 * Run `render` with every interpreter step counted (jinja evaluates each node through Interpreter.evaluate) and
 * the runtime's global range() replaced by boundedRange (globals are declared through Environment.set, and a
 * render variable cannot shadow one). Rendering is synchronous, so the patch never leaks to other code.
 */
function withLimits<T>(render: () => T): T {
  const interp = Interpreter.prototype as unknown as { evaluate: Method };
  const env = Environment.prototype as unknown as { set: Method };
  const evaluate = interp.evaluate, set = env.set;
  let steps = 0;
  interp.evaluate = function (this: unknown, ...args: unknown[]): unknown {
    if (++steps > CHAT_TEMPLATE_LIMITS.steps) throw new Error(`rendering took more than ${CHAT_TEMPLATE_LIMITS.steps} steps (endless loop?)`);
    return evaluate.apply(this, args);
  };
  env.set = function (this: unknown, name: unknown, value: unknown): unknown {
    return set.call(this, name, name === 'range' ? boundedRange : value);
  };
  try {
    return render();
  } finally {
    interp.evaluate = evaluate;
    env.set = set;
  }
}

function compile(template: string, where: string): Template {
  let t = cache.get(template);
  if (t) return t;
  try {
    t = new Template(template);
  } catch (e) {
    throw new CokvError(`${where}: chat template does not parse (${oneLine(e)})`, 'format');
  }
  if (cache.size > 16) cache.clear();
  cache.set(template, t);
  return t;
}

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ').trim();
}

/** The template, or a CokvError saying the model has none (for `--chat` on a model without one). */
export function requireChatTemplate(template: string | undefined, modelPath: string): string {
  if (template === undefined || template.trim() === '') {
    throw new CokvError(`${modelPath}: this model has no chat template (drop --chat or use a model that ships one)`, 'flag');
  }
  return template;
}

/**
 * Render `messages` with a Jinja chat template. Variables: messages, bos_token, eos_token, add_generation_prompt
 * (plus the jinja runtime's raise_exception / strftime_now / range). A template's raise_exception becomes a
 * CokvError.
 */
export function applyChatTemplate(
  template: string | undefined,
  messages: readonly ChatTurn[],
  opts: ChatTemplateOptions = {},
): string {
  const where = opts.source ?? 'chat template';
  const tpl = compile(requireChatTemplate(template, opts.source ?? 'model'), where);
  for (const m of messages) {
    if (typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new CokvError(`${where}: each chat message needs a string role and content`, 'prompt');
    }
  }
  try {
    return withLimits(() => tpl.render({
      ...opts.extra,
      messages: messages.map((m) => ({ ...m })),
      bos_token: opts.bosToken ?? '',
      eos_token: opts.eosToken ?? '',
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    }));
  } catch (e) {
    throw new CokvError(`${where}: chat template failed: ${oneLine(e)}`, 'prompt');
  }
}
