/**
 * tokenizer.json tokenizers (BPE / Unigram / WordPiece as written by Hugging Face `tokenizers`), wrapping the
 * pure-JS `@huggingface/tokenizers`. Special-token behaviour follows transformers' fast tokenizers:
 * `encode(text)` applies the post-processor (add_special_tokens=True); an explicit `add_bos_token` /
 * `add_eos_token` in tokenizer_config.json overrides what the post-processor does (as LlamaTokenizerFast's
 * update_post_processor does); `decode` does not clean up tokenization spaces unless the config asks for it.
 */
import * as fs from 'node:fs';
import { Tokenizer as JsTokenizer } from '@huggingface/tokenizers';
import { CokvError } from '../../errors.js';
import type { Tokenizer } from './types.js';

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}

/** Read a JSON object file; `undefined` when the file is absent and `optional` is set. Errors are CokvErrors. */
export function readJsonObject(file: string, optional: true): Json | undefined;
export function readJsonObject(file: string, optional?: false): Json;
export function readJsonObject(file: string, optional = false): Json | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && optional) return undefined;
    throw new CokvError(`${file}: cannot read (${code === 'ENOENT' ? 'no such file' : code ?? firstLine(e)})`, 'file');
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CokvError(`${file}: not valid JSON (${firstLine(e)})`, 'format');
  }
  if (!isObj(v)) throw new CokvError(`${file}: expected a JSON object`, 'format');
  return v;
}

/** A special-token entry of tokenizer_config.json: a string or an AddedToken-like `{content}`. */
export function specialTokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObj(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

export interface HfTokenizerOptions {
  /** File name for error messages. */
  source?: string;
  /** More end-of-generation ids (generation_config.json eos_token_id). */
  extraEosIds?: readonly number[];
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: number[];
  readonly addBosDefault: boolean;
  private readonly tok: JsTokenizer;
  private readonly eosId: number | undefined;
  private readonly postAddsBos: boolean;
  private readonly postAddsEos: boolean;
  private readonly addBosToken: boolean | undefined;
  private readonly addEosToken: boolean | undefined;
  private readonly cleanUpSpaces: boolean;
  private readonly source: string;

  /**
   * @param tokenizerJson parsed tokenizer.json
   * @param tokenizerConfig parsed tokenizer_config.json (or `{}`)
   */
  constructor(tokenizerJson: object, tokenizerConfig: object = {}, opts: HfTokenizerOptions = {}) {
    this.source = opts.source ?? 'tokenizer.json';
    const tj = tokenizerJson as Json;
    if (!isObj(tj) || !isObj(tj.model)) throw new CokvError(`${this.source}: not a tokenizer.json (no "model")`, 'format');
    const cfg: Json = isObj(tokenizerConfig) ? { ...tokenizerConfig } : {};
    // The library reads these as plain strings; transformers also accepts {content: ...}.
    for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
      if (cfg[k] !== undefined) {
        const s = specialTokenString(cfg[k]);
        if (s === undefined) delete cfg[k];
        else cfg[k] = s;
      }
    }
    if (Array.isArray(cfg.additional_special_tokens)) {
      cfg.additional_special_tokens = cfg.additional_special_tokens.map(specialTokenString).filter((s) => s !== undefined);
    }
    // Fill keys the library insists on (tokenizer.json written by `tokenizers` always has them, possibly null).
    const full: Json = { added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...tj };
    try {
      this.tok = new JsTokenizer(full, cfg);
    } catch (e) {
      throw new CokvError(`${this.source}: cannot build tokenizer (${firstLine(e)})`, 'format');
    }
    let maxId = -1;
    for (const id of this.tok.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    if (this.vocabSize <= 0) throw new CokvError(`${this.source}: empty vocabulary`, 'format');

    const idOf = (s: string | undefined): number | undefined => (s === undefined ? undefined : this.tok.token_to_id(s));
    this.bosId = idOf(cfg.bos_token as string | undefined);
    this.eosId = idOf(cfg.eos_token as string | undefined);
    const eos = new Set<number>();
    if (this.eosId !== undefined) eos.add(this.eosId);
    for (const id of opts.extraEosIds ?? []) if (Number.isInteger(id) && id >= 0 && id < this.vocabSize) eos.add(id);
    this.eosIds = [...eos];

    this.addBosToken = typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : undefined;
    this.addEosToken = typeof cfg.add_eos_token === 'boolean' ? cfg.add_eos_token : undefined;
    this.cleanUpSpaces = cfg.clean_up_tokenization_spaces === true;
    let empty: number[];
    try {
      empty = this.tok.encode('', { add_special_tokens: true }).ids;
    } catch (e) {
      throw new CokvError(`${this.source}: tokenizer post-processor failed (${firstLine(e)})`, 'format');
    }
    this.postAddsBos = this.bosId !== undefined && empty.length > 0 && empty[0] === this.bosId;
    this.postAddsEos = this.eosId !== undefined && empty.length > 0 && empty[empty.length - 1] === this.eosId &&
      !(this.postAddsBos && empty.length === 1);
    this.addBosDefault = this.bosId !== undefined && (this.addBosToken ?? this.postAddsBos);
  }

  /** Load tokenizer.json (+ optional tokenizer_config.json) from disk. */
  static fromFiles(tokenizerJsonPath: string, tokenizerConfigPath?: string, opts: Omit<HfTokenizerOptions, 'source'> = {}): HfTokenizer {
    const tj = readJsonObject(tokenizerJsonPath);
    const cfg = tokenizerConfigPath ? readJsonObject(tokenizerConfigPath, true) ?? {} : {};
    return new HfTokenizer(tj, cfg, { ...opts, source: tokenizerJsonPath });
  }

  encode(text: string, opts: { addSpecial?: boolean } = {}): number[] {
    const addSpecial = opts.addSpecial ?? true;
    let ids: number[];
    try {
      ids = this.tok.encode(text, { add_special_tokens: addSpecial }).ids;
    } catch (e) {
      throw new CokvError(`${this.source}: cannot encode text (${firstLine(e)})`, 'prompt');
    }
    if (!addSpecial) return ids;
    if (this.bosId !== undefined && this.addBosToken !== undefined && this.addBosToken !== this.postAddsBos) {
      if (this.addBosToken) ids = [this.bosId, ...ids];
      else if (ids[0] === this.bosId) ids = ids.slice(1);
    }
    if (this.eosId !== undefined && this.addEosToken !== undefined && this.addEosToken !== this.postAddsEos) {
      if (this.addEosToken) ids = [...ids, this.eosId];
      else if (ids[ids.length - 1] === this.eosId) ids = ids.slice(0, -1);
    }
    return ids;
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    // Like the Rust tokenizers, ids outside the vocabulary decode to nothing.
    const valid = ids.filter((id) => Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.tok.id_to_token(id) !== undefined);
    if (valid.length === 0) return '';
    return this.tok.decode(valid, {
      skip_special_tokens: opts.skipSpecial ?? true,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  /** The text of one token as the decoder renders it alone (special tokens shown as their content). */
  tokenText(id: number): string {
    return this.decode([id], { skipSpecial: false });
  }

  /** The vocabulary string of one token (e.g. `Ġis` for byte-level BPE), or undefined. */
  rawPiece(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  /** Id of a token string (e.g. `<|im_end|>`), or undefined. */
  tokenId(piece: string): number | undefined {
    return this.tok.token_to_id(piece);
  }
}
