/**
 * Tokenizers from GGUF metadata (`tokenizer.ggml.*`):
 *  - `llama`: SentencePiece-BPE (pieces + scores) → SpmTokenizer;
 *  - `gpt2`: byte-level BPE (tokens + merges). We build a tokenizer.json-shaped object whose pre-tokenizer applies
 *    the same regex sequence llama.cpp picks from `tokenizer.ggml.pre` (llama-vocab.cpp), and let
 *    @huggingface/tokenizers run it, so ids match transformers / llama.cpp.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { CokvError } from '../../errors.js';
import type { GgufValue } from '../loaders/gguf.js';
import { SpmTokenizer, TOKEN_TYPE } from './spm.js';
import type { EncodeOptions, SpecialTokenRule, Tokenizer } from './types.js';

type Meta = ReadonlyMap<string, GgufValue>;

const GPT2_RE = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3_RE =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_RE =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const TEKKEN_RE =
  '[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';

interface PreSpec {
  regexes: string[];
  ignoreMerges: boolean;
}

const PRE_DEFAULT: PreSpec = {
  regexes: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2_RE, '\\p{N}+', '[0-9][0-9][0-9]'],
  ignoreMerges: false,
};

const PRE_GROUPS: [string[], PreSpec][] = [
  [['default'], PRE_DEFAULT],
  [['llama3', 'llama-v3', 'llama-bpe', 'falcon3'], { regexes: [LLAMA3_RE], ignoreMerges: true }],
  [['dbrx', 'smaug-bpe', 'pixtral'], { regexes: [LLAMA3_RE], ignoreMerges: false }],
  [['qwen2', 'deepseek-r1-qwen', 'megrez', 'stablelm2'], { regexes: [QWEN2_RE], ignoreMerges: false }],
  [
    ['smollm', 'starcoder', 'refact', 'command-r', 'codeshell', 'exaone', 'minerva-7b'],
    { regexes: ['\\p{N}', GPT2_RE], ignoreMerges: false },
  ],
  [
    ['gpt-2', 'gpt2', 'phi-2', 'jina-es', 'jina-de', 'gigachat', 'jina-v1-en', 'jina-v2-es', 'jina-v2-de', 'jina-v2-code',
      'roberta-bpe', 'mpt', 'olmo', 'jais', 'trillion', 'exaone4'],
    { regexes: [GPT2_RE], ignoreMerges: false },
  ],
  [['falcon'], { regexes: ['[\\p{P}\\$\\+<=>\\^~\\|`]+', GPT2_RE, '[0-9][0-9][0-9]'], ignoreMerges: false }],
  [['tekken'], { regexes: [TEKKEN_RE], ignoreMerges: true }],
];

/** The pre-tokenizer regexes llama.cpp uses for a `tokenizer.ggml.pre` name (unknown names → 'default', as llama.cpp). */
export function preTokenizerFor(pre: string | undefined): PreSpec {
  if (pre === undefined) return PRE_DEFAULT;
  for (const [names, spec] of PRE_GROUPS) if (names.includes(pre)) return spec;
  return PRE_DEFAULT;
}

/** GPT-2's byte → printable-unicode table (bytes_to_unicode). */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map: string[] = new Array<string>(256);
  for (const b of bs) map[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (map[b] === undefined) map[b] = String.fromCharCode(256 + n++);
  }
  return map;
}

function strArray(m: Meta, key: string, src: string, required: boolean): string[] | undefined {
  const v = m.get(key);
  if (v === undefined) {
    if (required) throw new CokvError(`${src}: missing metadata ${key}`, 'format');
    return undefined;
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new CokvError(`${src}: metadata ${key} should be an array of strings`, 'format');
  }
  return v as string[];
}

function numArray(m: Meta, key: string, src: string, n: number): number[] | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) {
    throw new CokvError(`${src}: metadata ${key} should be an array of numbers`, 'format');
  }
  if (v.length !== n) throw new CokvError(`${src}: metadata ${key} has ${v.length} entries for ${n} tokens`, 'format');
  return v as number[];
}

function optId(m: Meta, key: string, src: string, n: number): number | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new CokvError(`${src}: metadata ${key} should be an integer`, 'format');
  if (v < 0 || v >= n) {
    // openGguf refuses out-of-range ids before a model gets here (a model must not silently lose its BOS); for
    // bare metadata this keeps llama.cpp's reading: absent (it warns), -1 being a common "none".
    return undefined;
  }
  return v;
}

function optBool(m: Meta, key: string): boolean | undefined {
  const v = m.get(key);
  return typeof v === 'boolean' ? v : undefined;
}

/**
 * `tokenizer.ggml.pre` names for which llama.cpp's llama-vocab.cpp sets add_bos = true before reading
 * `tokenizer.ggml.add_bos_token` (every other BPE pre-tokenizer defaults to false).
 */
const BPE_PRE_ADDS_BOS = [
  'llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2', 'jina-v5-nano', 'tekken', 'chameleon',
];

/**
 * The BOS/EOS rule of a GGUF tokenizer, as llama.cpp's llama_vocab::load decides it: the per-model (and, for
 * `gpt2`, per-pre-tokenizer) default, replaced by `tokenizer.ggml.add_bos_token` / `add_eos_token` when the file
 * has them.
 */
export function ggufSpecialRule(meta: Meta, source = 'GGUF'): SpecialTokenRule {
  const model = meta.get('tokenizer.ggml.model');
  const pre = meta.get('tokenizer.ggml.pre');
  // llama.cpp: add_eos defaults to false for SPM and BPE vocabularies (UGM/T5 ones, not read here, default to true).
  const eosDefault = false;
  let bosDefault = false, why: string;
  if (model === 'llama') {
    bosDefault = true;
    why = "llama.cpp's default for tokenizer.ggml.model 'llama'";
  } else if (model === 'gpt2') {
    const p = typeof pre === 'string' ? pre : undefined;
    bosDefault = p !== undefined && BPE_PRE_ADDS_BOS.includes(p);
    why = `llama.cpp's default for tokenizer.ggml.model 'gpt2' with tokenizer.ggml.pre ${p === undefined ? 'absent' : `'${p}'`}`;
  } else {
    why = `llama.cpp's default for tokenizer.ggml.model '${String(model)}'`;
  }
  const one = (key: string, dflt: boolean): { add: boolean; reason: string } => {
    const v = meta.get(key);
    if (v === undefined) return { add: dflt, reason: `${key} absent: ${why}` };
    if (typeof v !== 'boolean') throw new CokvError(`${source}: metadata ${key} should be a bool, not ${typeof v}`, 'format');
    return { add: v, reason: `${key} = ${v}` };
  };
  const b = one('tokenizer.ggml.add_bos_token', bosDefault);
  const e = one('tokenizer.ggml.add_eos_token', eosDefault);
  return { addBos: b.add, bosReason: b.reason, addEos: e.add, eosReason: e.reason };
}

/** The rule with the ids it needs: a rule that adds a token the file has no id for adds nothing (and says so). */
function withIds(r: SpecialTokenRule, bosId: number | undefined, eosId: number | undefined): SpecialTokenRule {
  const out = { ...r };
  if (out.addBos && bosId === undefined) {
    out.addBos = false;
    out.bosReason += ', but the file names no BOS token (tokenizer.ggml.bos_token_id)';
  }
  if (out.addEos && eosId === undefined) {
    out.addEos = false;
    out.eosReason += ', but the file names no EOS token (tokenizer.ggml.eos_token_id)';
  }
  return out;
}

export interface GgufTokenizerOptions {
  /**
   * Match control / user-defined token texts (e.g. `<|im_start|>`, `<s>`) in the input as single tokens, as
   * llama.cpp does for chat prompts and transformers always does. Default true.
   */
  parseSpecial?: boolean;
}

/** Build the tokenizer a GGUF file describes. `source` names the file in errors. */
export function tokenizerFromGguf(meta: Meta, source = 'GGUF', opts: GgufTokenizerOptions = {}): Tokenizer {
  const model = meta.get('tokenizer.ggml.model');
  if (model === undefined) throw new CokvError(`${source}: missing metadata tokenizer.ggml.model`, 'format');
  const tokens = strArray(meta, 'tokenizer.ggml.tokens', source, true) as string[];
  const n = tokens.length;
  if (n === 0) throw new CokvError(`${source}: tokenizer.ggml.tokens is empty`, 'format');
  const types = numArray(meta, 'tokenizer.ggml.token_type', source, n);
  const extraEos: number[] = [];
  for (const k of ['tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    const id = optId(meta, k, source, n);
    if (id !== undefined) extraEos.push(id);
  }
  const parseSpecial = opts.parseSpecial ?? true;
  if (model === 'llama') {
    const scores = numArray(meta, 'tokenizer.ggml.scores', source, n) ?? new Array<number>(n).fill(0);
    // llama.cpp's SentencePiece defaults: BOS 1, EOS 2, UNK 0 when the keys are absent.
    const bosId = meta.has('tokenizer.ggml.bos_token_id') ? optId(meta, 'tokenizer.ggml.bos_token_id', source, n) : 1;
    const eosId = meta.has('tokenizer.ggml.eos_token_id') ? optId(meta, 'tokenizer.ggml.eos_token_id', source, n) : 2;
    const rule = withIds(ggufSpecialRule(meta, source), bosId, eosId);
    return new SpmTokenizer({
      pieces: tokens,
      scores,
      types: types ?? undefined,
      spaceSymbol: '\u2581',
      addSpacePrefix: optBool(meta, 'tokenizer.ggml.add_space_prefix') ?? true,
      addBos: rule.addBos,
      addEos: rule.addEos,
      specialRule: rule,
      bosId,
      eosId,
      unkId: meta.has('tokenizer.ggml.unknown_token_id') ? optId(meta, 'tokenizer.ggml.unknown_token_id', source, n) : 0,
      extraEosIds: extraEos,
      parseSpecial,
    });
  }
  if (model === 'gpt2') {
    const merges = strArray(meta, 'tokenizer.ggml.merges', source, true) as string[];
    const pre = meta.get('tokenizer.ggml.pre');
    const bosId = optId(meta, 'tokenizer.ggml.bos_token_id', source, n);
    const eosId = optId(meta, 'tokenizer.ggml.eos_token_id', source, n);
    const rule = withIds(ggufSpecialRule(meta, source), bosId, eosId);
    return new GgufBpeTokenizer({
      tokens,
      types: types ?? new Array<number>(n).fill(TOKEN_TYPE.NORMAL),
      merges,
      pre: typeof pre === 'string' ? pre : undefined,
      bosId,
      eosId,
      rule,
      extraEosIds: extraEos,
      parseSpecial,
      source,
    });
  }
  throw new CokvError(`${source}: unsupported tokenizer model '${String(model)}' (supported: llama, gpt2)`, 'format');
}

interface BpeSpec {
  tokens: string[];
  types: number[];
  merges: string[];
  pre: string | undefined;
  bosId: number | undefined;
  eosId: number | undefined;
  /** Whether encode adds BOS / EOS by default, and why (ggufSpecialRule). */
  rule: SpecialTokenRule;
  extraEosIds: number[];
  /** When false, control tokens are not matched in input text (user-defined ones still are, as llama.cpp). */
  parseSpecial: boolean;
  source: string;
}

/** Byte-level BPE from GGUF metadata; encoding by @huggingface/tokenizers, decoding done here. */
export class GgufBpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: number[];
  readonly addBosDefault: boolean;
  readonly addEosDefault: boolean;
  readonly specialRule: SpecialTokenRule;
  private readonly eosId: number | undefined;
  private readonly tokens: string[];
  private readonly types: number[];
  private readonly hf: HfTokenizer;
  private readonly byteOf = new Map<string, number>();

  constructor(s: BpeSpec) {
    this.tokens = s.tokens;
    this.types = s.types;
    this.vocabSize = s.tokens.length;
    this.bosId = s.bosId;
    this.eosId = s.eosId;
    this.specialRule = s.rule;
    this.addBosDefault = s.rule.addBos && s.bosId !== undefined;
    this.addEosDefault = s.rule.addEos && s.eosId !== undefined;
    const eos: number[] = [];
    for (const id of [s.eosId, ...s.extraEosIds]) if (id !== undefined && !eos.includes(id)) eos.push(id);
    this.eosIds = eos;
    bytesToUnicode().forEach((ch, b) => this.byteOf.set(ch, b));

    const vocab: Record<string, number> = {};
    s.tokens.forEach((t, i) => {
      vocab[t] = i;
    });
    const merges: [string, string][] = [];
    for (const m of s.merges) {
      const sp = m.indexOf(' ', 1);
      if (sp < 0) throw new CokvError(`${s.source}: malformed merge '${m}' in tokenizer.ggml.merges`, 'format');
      merges.push([m.slice(0, sp), m.slice(sp + 1)]);
    }
    const added = [];
    for (let i = 0; i < s.tokens.length; i++) {
      const t = s.types[i];
      if ((t === TOKEN_TYPE.CONTROL && s.parseSpecial) || t === TOKEN_TYPE.USER_DEFINED) {
        added.push({
          id: i, content: s.tokens[i], single_word: false, lstrip: false, rstrip: false, normalized: false,
          special: t === TOKEN_TYPE.CONTROL,
        });
      }
    }
    const spec = preTokenizerFor(s.pre);
    const tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          ...spec.regexes.map((r) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false })),
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
        ],
      },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: {
        type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: false, byte_fallback: false, ignore_merges: spec.ignoreMerges, vocab, merges,
      },
    };
    try {
      this.hf = new HfTokenizer(tokenizerJson, { clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new CokvError(`${s.source}: cannot build the BPE tokenizer: ${(e as Error).message}`, 'format');
    }
  }

  tokenText(id: number): string {
    return this.tokens[id] ?? '';
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    // llama.cpp's tokenize(add_special): BOS in front and EOS behind by the file's rule; addBos/addEos override it.
    const special = opts.addSpecial ?? true;
    const out: number[] = [];
    if ((opts.addBos ?? (special && this.addBosDefault)) && this.bosId !== undefined) out.push(this.bosId);
    if (text.length > 0) {
      const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
      for (const id of ids) out.push(id);
    }
    if ((opts.addEos ?? (special && this.addEosDefault)) && this.eosId !== undefined) out.push(this.eosId);
    return out;
  }

  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string {
    const skip = opts?.skipSpecial ?? true;
    const bytes: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) continue;
      const t = this.types[id];
      const tok = this.tokens[id];
      if (t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNUSED) {
        if (!skip) for (const b of Buffer.from(tok, 'utf8')) bytes.push(b);
        continue;
      }
      if (t === TOKEN_TYPE.USER_DEFINED) {
        for (const b of Buffer.from(tok, 'utf8')) bytes.push(b);
        continue;
      }
      for (const ch of tok) {
        const b = this.byteOf.get(ch);
        if (b !== undefined) bytes.push(b);
        else for (const x of Buffer.from(ch, 'utf8')) bytes.push(x);
      }
    }
    return Buffer.from(bytes).toString('utf8');
  }
}
