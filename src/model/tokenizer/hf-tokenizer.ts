/**
 * tokenizer.json tokenizers (BPE / Unigram / WordPiece as written by Hugging Face `tokenizers`), wrapping the
 * pure-JS `@huggingface/tokenizers`. Special tokens follow transformers 5 (checked against 5.18): `encode(text)`
 * applies tokenizer.json's post-processor (add_special_tokens=True) and nothing else — when tokenizer.json
 * exists, transformers drops tokenizer_config.json's `add_bos_token` / `add_eos_token` before building the
 * tokenizer (tokenization_utils_base.py), so a flag there that disagrees with the post-processor is reported in
 * `specialRule.notes`, not followed (transformers 4's LlamaTokenizerFast did follow it). `decode` does not clean
 * up tokenization spaces unless the config asks for it.
 */
import * as fs from 'node:fs';
import { Tokenizer as JsTokenizer } from '@huggingface/tokenizers';
import { CokvError } from '../../errors.js';
import type { EncodeOptions, SpecialTokenRule, Tokenizer } from './types.js';

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

/** A post-processor for messages: `TemplateProcessing "<s> $A"`, `RobertaProcessing`, … */
function describePost(post: Json): string {
  const type = typeof post.type === 'string' ? post.type : 'untyped';
  if (type === 'TemplateProcessing' && Array.isArray(post.single)) {
    const parts = post.single.map((p: unknown) => {
      if (isObj(p) && isObj(p.SpecialToken) && typeof p.SpecialToken.id === 'string') return p.SpecialToken.id;
      if (isObj(p) && isObj(p.Sequence) && typeof p.Sequence.id === 'string') return `$${p.Sequence.id}`;
      return '?';
    });
    return `${type} "${parts.join(' ')}"`;
  }
  if (type === 'Sequence' && Array.isArray(post.processors)) {
    return `Sequence [${post.processors.map((p: unknown) => (isObj(p) ? describePost(p) : '?')).join(', ')}]`;
  }
  return type;
}

export interface HfTokenizerOptions {
  /** File name for error messages. */
  source?: string;
  /** More end-of-generation ids (generation_config.json eos_token_id). */
  extraEosIds?: readonly number[];
  /** Rows of the model's embedding: a tokenizer with ids at or above it is refused (fewer ids is padding, fine). */
  embeddingRows?: number;
}

const MODEL_TYPES = ['BPE', 'Unigram', 'WordPiece'];

/**
 * Refuse what the Rust `tokenizers` (and so transformers) refuses but the JS library would guess around: an unknown
 * `model.type`, vocabulary ids that are not non-negative integers, and BPE merges whose parts or result are not in
 * the vocabulary (MergeTokenOutOfVocabulary) — such a vocabulary was cut or edited and encodes text wrongly.
 */
function checkModel(model: Json, source: string): void {
  const type = model.type;
  if (type !== undefined && (typeof type !== 'string' || !MODEL_TYPES.includes(type))) {
    throw new CokvError(`${source}: model.type ${JSON.stringify(type)?.slice(0, 60)} is not supported (supported: ${MODEL_TYPES.join(', ')})`, 'format');
  }
  const vocab = model.vocab;
  if (!isObj(vocab)) return; // Unigram keeps a [piece, score] list; the library checks it
  for (const [tok, id] of Object.entries(vocab)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw new CokvError(`${source}: model.vocab entry ${JSON.stringify(tok).slice(0, 60)} has id ${JSON.stringify(id)?.slice(0, 40)}, not a non-negative integer`, 'format');
    }
  }
  if (type !== 'BPE' && !(type === undefined && Array.isArray(model.merges))) return;
  const merges = model.merges;
  if (merges === undefined || merges === null) return;
  if (!Array.isArray(merges)) throw new CokvError(`${source}: model.merges is not a list`, 'format');
  const prefix = typeof model.continuing_subword_prefix === 'string' ? model.continuing_subword_prefix : '';
  const has = (t: string): boolean => Object.hasOwn(vocab, t);
  for (let i = 0; i < merges.length; i++) {
    const m: unknown = merges[i];
    let a: string | undefined, b: string | undefined;
    if (typeof m === 'string') {
      const sp = m.indexOf(' ');
      if (sp > 0) [a, b] = [m.slice(0, sp), m.slice(sp + 1)];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      [a, b] = m as [string, string];
    }
    if (a === undefined || b === undefined) throw new CokvError(`${source}: model.merges[${i}] is not a pair of tokens`, 'format');
    for (const t of [a, b, a + b.slice(prefix.length)]) {
      if (!has(t)) {
        throw new CokvError(`${source}: model.merges[${i}] uses token ${JSON.stringify(t).slice(0, 60)}, which is not in model.vocab (cut or edited vocabulary?)`, 'format');
      }
    }
  }
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: number[];
  readonly addBosDefault: boolean;
  readonly addEosDefault: boolean;
  readonly specialRule: SpecialTokenRule;
  private readonly tok: JsTokenizer;
  private readonly eosId: number | undefined;
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
    checkModel(tj.model, this.source);
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
    if (opts.embeddingRows !== undefined && this.vocabSize > opts.embeddingRows) {
      throw new CokvError(
        `${this.source}: the vocabulary (with added tokens) has ids up to ${this.vocabSize - 1} but the model's embedding has ${opts.embeddingRows} rows`,
        'format');
    }

    const idOf = (s: string | undefined): number | undefined => (s === undefined ? undefined : this.tok.token_to_id(s));
    this.bosId = idOf(cfg.bos_token as string | undefined);
    this.eosId = idOf(cfg.eos_token as string | undefined);
    const eos = new Set<number>();
    if (this.eosId !== undefined) eos.add(this.eosId);
    for (const id of opts.extraEosIds ?? []) if (Number.isInteger(id) && id >= 0 && id < this.vocabSize) eos.add(id);
    this.eosIds = [...eos];
    this.cleanUpSpaces = cfg.clean_up_tokenization_spaces === true;

    const { before, after } = this.postProcessorTokens();
    const post = isObj(full.post_processor) ? full.post_processor : undefined;
    const postName = post ? `tokenizer.json post_processor ${describePost(post)}` : undefined;
    this.addBosDefault = this.bosId !== undefined && before.length > 0 && before[0] === this.bosId;
    this.addEosDefault = this.eosId !== undefined && after.length > 0 && after[after.length - 1] === this.eosId;
    const piece = (id: number): string => this.tok.id_to_token(id) ?? String(id);
    const extra = (ids: number[], where: string): string => (ids.length > 0 ? `; it adds ${ids.map(piece).join(' ')} ${where}` : '');
    const reason = (what: 'BOS' | 'EOS', add: boolean, key: 'bos_token' | 'eos_token', id: number | undefined, others: number[], where: string): string => {
      if (id === undefined) return `tokenizer_config.json names no ${key}${postName ? extra(others, where) : ''}`;
      if (!postName) return 'tokenizer.json has no post_processor: transformers adds no special tokens';
      return add ? `${postName} adds ${piece(id)}` : `${postName} adds no ${what}${extra(others, where)}`;
    };
    const notes: string[] = [];
    for (const [key, add] of [['add_bos_token', this.addBosDefault], ['add_eos_token', this.addEosDefault]] as const) {
      const v = cfg[key];
      if (typeof v === 'boolean' && v !== add) {
        notes.push(`tokenizer_config.json ${key} = ${v} is not followed: transformers 5 ignores it when tokenizer.json exists (its post_processor decides)`);
      }
    }
    this.specialRule = {
      addBos: this.addBosDefault,
      bosReason: reason('BOS', this.addBosDefault, 'bos_token', this.bosId, this.addBosDefault ? [] : before, 'in front'),
      addEos: this.addEosDefault,
      eosReason: reason('EOS', this.addEosDefault, 'eos_token', this.eosId, this.addEosDefault ? [] : after, 'at the end'),
      ...(notes.length > 0 ? { notes } : {}),
    };
  }

  /** The ids the post-processor puts before and after a text (found by encoding a probe with and without them). */
  private postProcessorTokens(): { before: number[]; after: number[] } {
    let withSpecial: number[], plain: number[];
    try {
      withSpecial = this.tok.encode('a', { add_special_tokens: true }).ids;
      plain = this.tok.encode('a', { add_special_tokens: false }).ids;
    } catch (e) {
      throw new CokvError(`${this.source}: tokenizer post-processor failed (${firstLine(e)})`, 'format');
    }
    for (let at = 0; at + plain.length <= withSpecial.length; at++) {
      if (plain.every((id, i) => withSpecial[at + i] === id)) {
        return { before: withSpecial.slice(0, at), after: withSpecial.slice(at + plain.length) };
      }
    }
    return { before: withSpecial, after: [] };
  }

  /** Load tokenizer.json (+ optional tokenizer_config.json) from disk. */
  static fromFiles(tokenizerJsonPath: string, tokenizerConfigPath?: string, opts: Omit<HfTokenizerOptions, 'source'> = {}): HfTokenizer {
    const tj = readJsonObject(tokenizerJsonPath);
    const cfg = tokenizerConfigPath ? readJsonObject(tokenizerConfigPath, true) ?? {} : {};
    return new HfTokenizer(tj, cfg, { ...opts, source: tokenizerJsonPath });
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const special = opts.addSpecial ?? true;
    let ids: number[];
    try {
      ids = this.tok.encode(text, { add_special_tokens: special }).ids;
    } catch (e) {
      throw new CokvError(`${this.source}: cannot encode text (${firstLine(e)})`, 'prompt');
    }
    // Overrides: the post-processor's BOS sits at index 0 and its EOS last whenever it adds them.
    const hasBos = special && this.addBosDefault, hasEos = special && this.addEosDefault;
    if (opts.addBos !== undefined && opts.addBos !== hasBos && this.bosId !== undefined) {
      ids = opts.addBos ? [this.bosId, ...ids] : ids.slice(1);
    }
    if (opts.addEos !== undefined && opts.addEos !== hasEos && this.eosId !== undefined) {
      ids = opts.addEos ? [...ids, this.eosId] : ids.slice(0, -1);
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
