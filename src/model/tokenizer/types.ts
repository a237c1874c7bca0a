/**
 * Options of `Tokenizer.encode`.
 *
 * `addSpecial` is llama.cpp's `add_special` / transformers' `add_special_tokens`: true (the default) applies the
 * file's own rule — GGUF `tokenizer.ggml.add_bos_token` / `add_eos_token` (llama.cpp's per-tokenizer defaults
 * when absent), tokenizer.json's post-processor for Hugging Face folders; false adds nothing.
 * `addBos` / `addEos` override that rule for one token (the CLI's `--add-bos` / `--no-bos`): true adds it even
 * when the rule does not (or `addSpecial` is false), false leaves it out.
 */
export interface EncodeOptions {
  addSpecial?: boolean;
  addBos?: boolean;
  addEos?: boolean;
}

/** Whether `encode` adds BOS / EOS by the file's own rule, and which metadata says so (for `cokv inspect`). */
export interface SpecialTokenRule {
  addBos: boolean;
  /** e.g. `tokenizer.ggml.add_bos_token = true`, or the default applied when the key is absent. */
  bosReason: string;
  addEos: boolean;
  eosReason: string;
  /** Metadata that says something else and is not followed (e.g. a tokenizer_config.json flag transformers ignores). */
  notes?: string[];
}

/** What the engine needs from a tokenizer, whatever file it came from. */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Beginning-of-sequence id, if the model uses one. */
  readonly bosId: number | undefined;
  /** Ids that end generation (EOS and, for chat models, end-of-turn tokens). */
  readonly eosIds: number[];
  /** Whether `encode` adds BOS by default (the file's rule; see EncodeOptions). */
  readonly addBosDefault: boolean;
  /** The file's BOS/EOS rule and where it comes from (tokenizers built from model files have it). */
  readonly specialRule?: SpecialTokenRule;
  /** Text to ids; see EncodeOptions. */
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids to text. `skipSpecial` drops control tokens such as BOS/EOS (default true). */
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  /** The raw piece of one token (for debugging and stop-string checks). */
  tokenText(id: number): string;
}

/**
 * Whether BOS goes in front of a prompt: the override (`--add-bos` true, `--no-bos` false) when given, else
 * `fallback` — by default the file's own rule. The one place the CLI's BOS flags are turned into a decision.
 */
export function bosDecision(tok: Tokenizer, override: boolean | undefined, fallback: boolean = tok.addBosDefault): boolean {
  return override ?? fallback;
}

/**
 * Prompt text to ids with the BOS decision above and no other special tokens added: ids of `text` alone, with BOS
 * in front when decided. Used by commands whose prompt protocol fixes BOS (needle, retrieval) and by `--add-bos`
 * / `--no-bos`.
 */
export function encodePrompt(tok: Tokenizer, text: string, override: boolean | undefined, fallback?: boolean): number[] {
  const bos = bosDecision(tok, override, fallback);
  const ids = tok.encode(text, { addSpecial: false });
  return bos && tok.bosId !== undefined ? [tok.bosId, ...ids] : ids;
}

/** One line for `cokv inspect`: "yes (tokenizer.ggml.add_bos_token = true)". */
export function describeRule(add: boolean, reason: string): string {
  return `${add ? 'yes' : 'no'} (${reason})`;
}
