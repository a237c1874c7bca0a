/**
 * Chat templates: the Jinja `chat_template` shipped in tokenizer_config.json (or GGUF `tokenizer.chat_template`),
 * rendered with `@huggingface/jinja` and the variables transformers' apply_chat_template passes.
 */
import { Template } from '@huggingface/jinja';
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
    return tpl.render({
      ...opts.extra,
      messages: messages.map((m) => ({ ...m })),
      bos_token: opts.bosToken ?? '',
      eos_token: opts.eosToken ?? '',
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    });
  } catch (e) {
    throw new CokvError(`${where}: chat template failed: ${oneLine(e)}`, 'prompt');
  }
}
