import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { completeConfig, type ModelConfig } from '../src/model/config.js';
import { gv, writeLlamaGguf } from '../src/model/loaders/gguf-writer.js';
import { openGguf, readGgufHeader } from '../src/model/loaders/gguf.js';
import { tokenizerFromGguf } from '../src/model/tokenizer/gguf-tokenizer.js';
import { SpmTokenizer } from '../src/model/tokenizer/spm.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tokFile = path.resolve(repoRoot, '../shared/assets/models/stories260K/tok512.bin');
const haveTok = fs.existsSync(tokFile);
if (!haveTok) console.warn(`skipping SPM tok512 tests: ${tokFile} not found`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-spm-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** llama2.c tokenizer.bin: i32 max_token_length, then per token f32 score, i32 len, bytes. */
function readTok(file: string, n: number): { pieces: string[]; scores: number[] } {
  const b = fs.readFileSync(file);
  let p = 4;
  const pieces: string[] = [];
  const scores: number[] = [];
  for (let i = 0; i < n; i++) {
    scores.push(b.readFloatLE(p));
    const len = b.readInt32LE(p + 4);
    pieces.push(b.toString('utf8', p + 8, p + 8 + len));
    p += 8 + len;
  }
  return { pieces, scores };
}

// Worked out with an independent re-implementation of llama2.c run.c's encode() (BOS, dummy " " prefix,
// per-character lookup with byte fallback +3, then repeated best-score pair merges) over tok512.bin.
const PINNED: [string, number[]][] = [
  ['Once upon a time', [1, 403, 407, 261, 378]],
  ["Lily's cat", [1, 317, 439, 419, 280, 294]],
  ['Hello world!\nThe end. 你好 😀', [1, 346, 306, 414, 263, 304, 341, 443, 13, 434, 260, 344, 264, 426, 410, 231, 192, 163, 232, 168, 192, 410, 243, 162, 155, 131]],
];

describe.skipIf(!haveTok)('SentencePiece BPE on the stories260K tok512 vocabulary', () => {
  const { pieces, scores } = haveTok ? readTok(tokFile, 512) : { pieces: [], scores: [] };

  it('llama2.c form (plain spaces) encodes like run.c', () => {
    const tok = SpmTokenizer.fromLlama2c(pieces, scores);
    for (const [text, ids] of PINNED) {
      expect(tok.encode(text)).toEqual(ids);
      expect(tok.decode(ids)).toBe(text);
    }
    expect(tok.encode('Once upon a time', { addSpecial: false })).toEqual([403, 407, 261, 378]);
    expect(tok.bosId).toBe(1);
    expect(tok.eosIds).toEqual([2]);
    // the BOS piece is "\n<s>\n" in tokenizer.bin; it is a control token, skipped on decode
    expect(tok.decode([1, 403, 2])).toBe('Once');
    // without a leading BOS the space of the first piece stays (streamed continuations keep their spaces)
    expect(tok.decode([407, 261])).toBe(' upon a');
  });

  function writeSpmGguf(): string {
    const file = path.join(tmp, 'spm.gguf');
    const gg = pieces.map((p, i) => (i === 0 ? '<unk>' : i === 1 ? '<s>' : i === 2 ? '</s>' : p.split(' ').join('\u2581')));
    const types = gg.map((p, i) => (i === 0 ? 2 : i < 3 ? 3 : /^<0x[0-9A-F]{2}>$/.test(p) ? 6 : 1));
    const c: ModelConfig = completeConfig({
      architecture: 'llama', hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 16, intermediateSize: 64,
      vocabSize: 512, contextLength: 128, ropeTheta: 10000, rmsNormEps: 1e-5, tiedEmbeddings: true, attentionBias: false,
    });
    const z = (n: number): Float32Array => new Float32Array(n).fill(0.01);
    const w: Record<string, Float32Array> = {
      'model.embed_tokens.weight': z(512 * 32), 'model.norm.weight': z(32),
      'model.layers.0.input_layernorm.weight': z(32), 'model.layers.0.post_attention_layernorm.weight': z(32),
      'model.layers.0.self_attn.q_proj.weight': z(32 * 32), 'model.layers.0.self_attn.k_proj.weight': z(16 * 32),
      'model.layers.0.self_attn.v_proj.weight': z(16 * 32), 'model.layers.0.self_attn.o_proj.weight': z(32 * 32),
      'model.layers.0.mlp.gate_proj.weight': z(64 * 32), 'model.layers.0.mlp.up_proj.weight': z(64 * 32),
      'model.layers.0.mlp.down_proj.weight': z(32 * 64),
    };
    writeLlamaGguf(file, {
      config: c, weights: w, dtype: 'f32',
      tokenizer: {
        'tokenizer.ggml.model': gv.str('llama'),
        'tokenizer.ggml.tokens': gv.arr('string', gg),
        'tokenizer.ggml.scores': gv.arr('f32', scores),
        'tokenizer.ggml.token_type': gv.arr('i32', types),
        'tokenizer.ggml.bos_token_id': gv.u32(1),
        'tokenizer.ggml.eos_token_id': gv.u32(2),
        'tokenizer.ggml.unknown_token_id': gv.u32(0),
        'tokenizer.ggml.add_bos_token': gv.bool(true),
        'tokenizer.ggml.add_eos_token': gv.bool(false),
      },
    });
    return file;
  }

  it('GGUF form (▁, token types) encodes like run.c and round-trips', async () => {
    const file = writeSpmGguf();
    const src = openGguf(file);
    expect(src.bosToken).toBe('<s>');
    const tok = await src.loadTokenizer();
    expect(tok.vocabSize).toBe(512);
    expect(tok.addBosDefault).toBe(true);
    for (const [text, ids] of PINNED) {
      expect(tok.encode(text)).toEqual(ids);
      expect(tok.decode(ids)).toBe(text);
    }
    expect(tok.tokenText(403)).toBe('\u2581Once');
    const story = 'One day, a little girl named Lily found a needle in her room. She knew it was difficult to play with it because it was sharp.';
    const ids = tok.encode(story);
    expect(ids.length).toBeLessThan(story.length / 2);
    expect(tok.decode(ids)).toBe(story);
    expect(tok.decode(ids, { skipSpecial: false })).toBe('<s>' + story);
    expect(tok.encode('')).toEqual([1]);
    expect(tok.decode([])).toBe('');
  });

  it('special tokens in text are parsed only with parseSpecial', () => {
    const h = readGgufHeader(writeSpmGguf());
    const withSpecial = tokenizerFromGguf(h.metadata, 'x');
    // after a special token the dummy space prefix applies again, as llama.cpp does
    expect(withSpecial.encode('<s>Once</s>', { addSpecial: false })).toEqual([1, 403, 2]);
    const plain = tokenizerFromGguf(h.metadata, 'x', { parseSpecial: false });
    const ids = plain.encode('<s>Once', { addSpecial: false });
    expect(ids).not.toContain(1);
    expect(plain.decode(ids)).toBe(' <s>Once');
  });
});

describe('SpmTokenizer merge rules on a hand-made vocabulary', () => {
  const pieces = ['<unk>', '<s>', '</s>', '<0x41>', '<0xC3>', '<0xA9>', '▁', 'a', 'b', 'c', 'ab', 'bc', 'abc', '▁a', '▁ab'];
  const scores = [0, 0, 0, 0, 0, 0, -1, -2, -2, -2, -5, -3, -4, -1, -6];
  const tok = new SpmTokenizer({ pieces, scores, bosId: 1, eosId: 2, unkId: 0, addBos: false });

  it('merges the highest-scoring pair first, leftmost on ties', () => {
    // "▁abc": pairs ▁a (-1), ab (-5), bc (-3) → ▁a first; then ▁a+b = ▁ab (-6) vs b+c = bc (-3) → bc; then ▁a+bc absent
    expect(tok.encode('abc').map((i) => pieces[i])).toEqual(['▁a', 'bc']);
    // ties: "bbb" has no merges; "cbc": c+b absent, b+c (-3) → c, bc
    expect(tok.encode('cbc').map((i) => pieces[i])).toEqual(['▁', 'c', 'bc']);
  });

  it('falls back to bytes, then to unk', () => {
    // 'é' = C3 A9 has byte tokens; 'A' is <0x41>; 'Z' has no byte token → unk
    expect(tok.encode('é').map((i) => pieces[i])).toEqual(['▁', '<0xC3>', '<0xA9>']);
    expect(tok.encode('aZ').map((i) => pieces[i])).toEqual(['▁a', '<unk>']);
    expect(tok.decode(tok.encode('éA'))).toBe(' éA');
  });
});
