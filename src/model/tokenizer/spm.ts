/**
 * SentencePiece-BPE tokenizer as llama.cpp's `llm_tokenizer_spm` (and llama2.c's run.c) run it: the text is split
 * into characters, then the adjacent pair whose concatenation is a vocabulary piece with the highest score is
 * merged, ties going to the leftmost pair, until no pair merges. Characters missing from the vocabulary become
 * byte-fallback tokens `<0xXX>` (one per UTF-8 byte) when the vocabulary has them, else the unknown token.
 */
import type { EncodeOptions, SpecialTokenRule, Tokenizer } from './types.js';

/** llama.cpp token types (tokenizer.ggml.token_type). */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface SpmOptions {
  pieces: readonly string[];
  scores: ArrayLike<number>;
  /** Token types (1..6); when absent every `<0xXX>` piece counts as a byte token and the rest as normal. */
  types?: ArrayLike<number>;
  /** What a space looks like inside pieces: '▁' for SentencePiece/GGUF (default), ' ' for llama2.c tokenizer.bin. */
  spaceSymbol?: string;
  /** Prepend a space to the text (SentencePiece dummy prefix). Default true. */
  addSpacePrefix?: boolean;
  /** Add BOS by default. Default true. */
  addBos?: boolean;
  /** Add EOS by default. Default false. */
  addEos?: boolean;
  bosId?: number;
  eosId?: number;
  unkId?: number;
  /** Where addBos/addEos come from (for `cokv inspect`); default: described as given by the caller. */
  specialRule?: SpecialTokenRule;
  /** Extra ids that end generation (besides eosId). */
  extraEosIds?: number[];
  /** Match control and user-defined token texts in the input as single special tokens. Default false. */
  parseSpecial?: boolean;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

interface Sym {
  start: number;
  len: number;
  prev: number;
  next: number;
}

/** Binary max-heap of bigrams ordered by score desc, then left index asc. */
class BigramHeap {
  private score: number[] = [];
  private left: number[] = [];
  private right: number[] = [];
  private size: number[] = [];
  private n = 0;

  get length(): number {
    return this.n;
  }

  private better(i: number, j: number): boolean {
    return this.score[i] > this.score[j] || (this.score[i] === this.score[j] && this.left[i] < this.left[j]);
  }

  private swap(i: number, j: number): void {
    const a = this.score; [a[i], a[j]] = [a[j], a[i]];
    const b = this.left; [b[i], b[j]] = [b[j], b[i]];
    const c = this.right; [c[i], c[j]] = [c[j], c[i]];
    const d = this.size; [d[i], d[j]] = [d[j], d[i]];
  }

  push(score: number, left: number, right: number, size: number): void {
    let i = this.n++;
    this.score[i] = score; this.left[i] = left; this.right[i] = right; this.size[i] = size;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  pop(): { score: number; left: number; right: number; size: number } {
    const top = { score: this.score[0], left: this.left[0], right: this.right[0], size: this.size[0] };
    this.n--;
    if (this.n > 0) {
      this.swap(0, this.n);
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.n && this.better(l, m)) m = l;
        if (r < this.n && this.better(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

export class SpmTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosIds: number[];
  readonly addBosDefault: boolean;
  readonly addEosDefault: boolean;
  readonly specialRule: SpecialTokenRule;
  readonly eosId: number | undefined;
  readonly unkId: number | undefined;
  private readonly pieces: readonly string[];
  private readonly scores: Float64Array;
  private readonly types: Uint8Array;
  private readonly pieceToId = new Map<string, number>();
  private readonly byteIds: Int32Array;
  private readonly byteOf: Int16Array;
  private readonly space: string;
  private readonly spacePrefix: boolean;
  private readonly parseSpecial: boolean;
  /** Special token texts, longest first. */
  private readonly specials: { text: string; id: number }[] = [];

  constructor(o: SpmOptions) {
    const n = o.pieces.length;
    if (o.scores.length !== n) throw new Error(`SpmTokenizer: ${n} pieces but ${o.scores.length} scores`);
    if (o.types && o.types.length !== n) throw new Error(`SpmTokenizer: ${n} pieces but ${o.types.length} token types`);
    this.pieces = o.pieces;
    this.vocabSize = n;
    this.scores = Float64Array.from(o.scores);
    this.space = o.spaceSymbol ?? '\u2581';
    this.spacePrefix = o.addSpacePrefix ?? true;
    this.parseSpecial = o.parseSpecial ?? false;
    this.types = new Uint8Array(n);
    this.byteIds = new Int32Array(256).fill(-1);
    this.byteOf = new Int16Array(n).fill(-1);
    for (let i = 0; i < n; i++) {
      const p = o.pieces[i];
      const m = BYTE_PIECE.exec(p);
      let t = o.types ? o.types[i] : m ? TOKEN_TYPE.BYTE : TOKEN_TYPE.NORMAL;
      if (!(t >= 1 && t <= 6)) t = TOKEN_TYPE.NORMAL;
      this.types[i] = t;
      if (t === TOKEN_TYPE.BYTE && m) {
        const b = parseInt(m[1], 16);
        this.byteOf[i] = b;
        if (this.byteIds[b] < 0) this.byteIds[b] = i;
      }
      this.pieceToId.set(p, i); // duplicates: the last id wins, as in llama.cpp's token_to_id

    }
    const valid = (id: number | undefined): number | undefined => (id !== undefined && id >= 0 && id < n ? id : undefined);
    if (!o.types) {
      // llama2.c's tokenizer.bin has no types: its BOS/EOS ("\n<s>\n", "\n</s>\n") are control tokens.
      for (const id of [valid(o.bosId), valid(o.eosId)]) if (id !== undefined) this.types[id] = TOKEN_TYPE.CONTROL;
      const unk = valid(o.unkId);
      if (unk !== undefined) this.types[unk] = TOKEN_TYPE.UNKNOWN;
    }
    for (let i = 0; i < n; i++) {
      const t = this.types[i];
      if ((t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.USER_DEFINED) && o.pieces[i].length > 0) {
        this.specials.push({ text: o.pieces[i], id: i });
      }
    }
    this.specials.sort((a, b) => b.text.length - a.text.length);
    this.bosId = valid(o.bosId);
    this.eosId = valid(o.eosId);
    this.unkId = valid(o.unkId);
    this.addBosDefault = (o.addBos ?? true) && this.bosId !== undefined;
    this.addEosDefault = (o.addEos ?? false) && this.eosId !== undefined;
    this.specialRule = o.specialRule ?? {
      addBos: this.addBosDefault, bosReason: 'built-in default', addEos: this.addEosDefault, eosReason: 'built-in default',
    };
    const eos: number[] = [];
    for (const id of [this.eosId, ...(o.extraEosIds ?? [])]) {
      const v = valid(id);
      if (v !== undefined && !eos.includes(v)) eos.push(v);
    }
    this.eosIds = eos;
  }

  /**
   * llama2.c's tokenizer.bin vocabulary (pieces hold plain spaces, ids 0/1/2 = unk/BOS/EOS, byte tokens `<0xXX>`),
   * tokenized as run.c does: dummy space prefix, BOS added by default.
   */
  static fromLlama2c(pieces: readonly string[], scores: ArrayLike<number>): SpmTokenizer {
    return new SpmTokenizer({
      pieces, scores, spaceSymbol: ' ', addSpacePrefix: true, addBos: true, bosId: 1, eosId: 2, unkId: 0,
      specialRule: {
        addBos: true, bosReason: "llama2.c checkpoint: run.c always adds BOS (id 1)",
        addEos: false, eosReason: 'llama2.c checkpoint: run.c adds no EOS',
      },
    });
  }

  tokenText(id: number): string {
    return this.pieces[id] ?? '';
  }

  /** Id of an exact piece, or undefined. */
  pieceId(piece: string): number | undefined {
    return this.pieceToId.get(piece);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    // llama.cpp's tokenize(add_special): BOS/EOS by the rule; addBos/addEos override it.
    const special = opts.addSpecial ?? true;
    const out: number[] = [];
    if ((opts.addBos ?? (special && this.addBosDefault)) && this.bosId !== undefined) out.push(this.bosId);
    const fragments = this.parseSpecial ? this.splitSpecial(text) : [text];
    let prevSpecial = true;
    for (const f of fragments) {
      if (typeof f === 'number') {
        out.push(f);
        prevSpecial = true;
        continue;
      }
      let t = f;
      if (this.spacePrefix && prevSpecial) t = ' ' + t;
      prevSpecial = false;
      if (this.space !== ' ') t = t.split(' ').join(this.space);
      this.encodeRaw(t, out);
    }
    if ((opts.addEos ?? (special && this.addEosDefault)) && this.eosId !== undefined) out.push(this.eosId);
    return out;
  }

  /** Split the input into raw text and special-token ids (longest match first, leftmost). */
  private splitSpecial(text: string): (string | number)[] {
    const out: (string | number)[] = [];
    let start = 0;
    let i = 0;
    while (i < text.length) {
      let hit: { text: string; id: number } | undefined;
      for (const s of this.specials) {
        if (text.startsWith(s.text, i)) {
          hit = s;
          break;
        }
      }
      if (hit) {
        if (i > start) out.push(text.slice(start, i));
        out.push(hit.id);
        i += hit.text.length;
        start = i;
      } else {
        i++;
      }
    }
    if (start < text.length) out.push(text.slice(start));
    return out;
  }

  /** The merge loop over one raw fragment (spaces already replaced by the space symbol). */
  private encodeRaw(text: string, out: number[]): void {
    if (text.length === 0) return;
    const syms: Sym[] = [];
    let off = 0;
    for (const ch of text) {
      const idx = syms.length;
      syms.push({ start: off, len: ch.length, prev: idx - 1, next: -1 });
      if (idx > 0) syms[idx - 1].next = idx;
      off += ch.length;
    }
    const heap = new BigramHeap();
    const tryAdd = (l: number, r: number): void => {
      if (l < 0 || r < 0) return;
      const s = text.slice(syms[l].start, syms[l].start + syms[l].len + syms[r].len);
      const id = this.pieceToId.get(s);
      if (id === undefined) return;
      heap.push(this.scores[id], l, r, s.length);
    };
    for (let i = 1; i < syms.length; i++) tryAdd(i - 1, i);
    while (heap.length > 0) {
      const b = heap.pop();
      const L = syms[b.left];
      const R = syms[b.right];
      if (L.len === 0 || R.len === 0 || L.len + R.len !== b.size) continue;
      L.len += R.len;
      R.len = 0;
      L.next = R.next;
      if (R.next >= 0) syms[R.next].prev = b.left;
      tryAdd(L.prev, b.left);
      tryAdd(b.left, L.next);
    }
    for (let i = 0; i !== -1; i = syms[i].next) {
      const s = syms[i];
      const piece = text.slice(s.start, s.start + s.len);
      const id = this.pieceToId.get(piece);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      // Unknown character: byte fallback (the symbol is a single character here; merges only form known pieces).
      for (const byte of Buffer.from(piece, 'utf8')) {
        const bid = this.byteIds[byte];
        if (bid >= 0) out.push(bid);
        else if (this.unkId !== undefined) {
          out.push(this.unkId);
          break;
        }
      }
    }
  }

  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string {
    const skip = opts?.skipSpecial ?? true;
    const bytes: number[] = [];
    const pushStr = (s: string): void => {
      for (const b of Buffer.from(s, 'utf8')) bytes.push(b);
    };
    // A leading space right after an initial BOS is the dummy prefix: drop it (llama2.c run.c does the same).
    let stripNext = this.spacePrefix && ids.length > 0 && ids[0] === this.bosId;
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) continue;
      const t = this.types[id];
      if (t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNUSED) {
        if (!skip) pushStr(this.pieces[id]);
        continue;
      }
      if (t === TOKEN_TYPE.BYTE && this.byteOf[id] >= 0) {
        const b = this.byteOf[id];
        if (stripNext && b === 0x20) {
          stripNext = false;
          continue;
        }
        stripNext = false;
        bytes.push(b);
        continue;
      }
      let p = this.pieces[id];
      if (t === TOKEN_TYPE.NORMAL || t === TOKEN_TYPE.UNKNOWN) {
        if (this.space !== ' ') p = p.split(this.space).join(' ');
      }
      if (stripNext && p.startsWith(' ')) p = p.slice(1);
      stripNext = false;
      pushStr(p);
    }
    return Buffer.from(bytes).toString('utf8');
  }
}
