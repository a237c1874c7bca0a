/**
 * One regression test per "bad" row of docs/findings/reliability.md that the loaders own (categories gguf,
 * safetensors, llama2c, the tokenizer rows and the metadata escape rows): each hostile file now ends in a one-line
 * CokvError naming the file and the problem. Hostile files are the committed fixtures edited byte by byte; the big
 * ones are sparse (ftruncate), so no test writes or allocates more than a few MB.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { applyChatTemplate, CHAT_TEMPLATE_LIMITS } from '../src/model/chat.js';
import { openModel } from '../src/model/load.js';
import { gv, writeGguf } from '../src/model/loaders/gguf-writer.js';
import { GGUF_LIMITS, openGguf, readGgufHeader } from '../src/model/loaders/gguf.js';
import { openSafetensors, writeSafetensors } from '../src/model/loaders/safetensors.js';
import { NATIVE_ADDON_PATH, loadNativeAddon } from '../src/backend/native.js';
import { Rng } from '../src/generate/rng.js';
import { scanNonFinite } from '../src/model/loaders/finite.js';
import { BLOCK, BLOCK_SCALE_OFFSETS, GGML_TYPE, firstNonFinite } from '../src/model/quant.js';
import { HfTokenizer } from '../src/model/tokenizer/hf-tokenizer.js';
import { kv, parseGguf, raw, readStrArray, serializeGguf, tensor, type GgufDoc } from './gguf-edit.js';
import { asset, cokv, expectCokvError, haveAssets, repoRoot, tmpDir } from './helpers.js';

const FIX = path.join(repoRoot, 'test/fixtures/models/llama3-tiny');
const Q8 = path.join(FIX, 'llama3-tiny-q8_0.gguf');
const F32 = path.join(FIX, 'llama3-tiny-f32.gguf');
const HF = path.join(FIX, 'hf-bf16');
const dir = tmpDir('cokv-trust-loaders-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** The fixture `src` edited by `edit`, written to a fresh temp file. */
function edited(src: string, edit: (d: GgufDoc) => void): string {
  const d = parseGguf(fs.readFileSync(src));
  edit(d);
  const f = path.join(dir, `g${n++}.gguf`);
  fs.writeFileSync(f, serializeGguf(d));
  return f;
}

/** Open the model and read its weights and tokenizer (what `generate` does before the first token). */
async function loadAll(file: string): Promise<void> {
  const src = await openModel(file);
  src.loadWeights();
  await src.loadTokenizer();
}

async function expectLoadError(file: string, ...patterns: (RegExp | string)[]): Promise<CokvError> {
  let err: unknown;
  try {
    await loadAll(file);
  } catch (e) {
    err = e;
  }
  return expectCokvError(() => { if (err) throw err; }, file, ...patterns);
}

/** Byte position of element `i` of tensor `name` in the data section (F32 or F16 tensors). */
function elemAt(d: GgufDoc, name: string, i: number, bytes: number): number {
  return Number(tensor(d, name).offset) + i * bytes;
}

describe('GGUF tensor data layout (rows 122-125, 134-141)', () => {
  it('refuses overlapping tensors and names both (off_overlap_norms, off_overlap_q_embd)', async () => {
    const norms = edited(Q8, (d) => { tensor(d, 'output_norm.weight').offset = tensor(d, 'blk.0.attn_norm.weight').offset; });
    expectCokvError(() => openGguf(norms), norms, 'overlap', 'output_norm.weight', 'blk.0.attn_norm.weight');
    const qEmbd = edited(Q8, (d) => { tensor(d, 'blk.1.attn_q.weight').offset = tensor(d, 'token_embd.weight').offset; });
    expectCokvError(() => openGguf(qEmbd), qEmbd, 'overlap', 'blk.1.attn_q.weight', 'token_embd.weight');
    await expectLoadError(qEmbd, 'overlap');
  });

  it.each([['BF16', GGML_TYPE.BF16], ['F32', GGML_TYPE.F32], ['F16', GGML_TYPE.F16], ['Q4_0', GGML_TYPE.Q4_0]])(
    'refuses a type that no longer tiles the data (type_%s_on_q8data)', (name, type) => {
      const f = edited(Q8, (d) => { tensor(d, 'blk.0.attn_q.weight').ggmlType = type; });
      // Larger types overlap the next tensor, smaller ones leave a gap before it: both name attn_q and a neighbour.
      expectCokvError(() => readGgufHeader(f), f, `blk.0.attn_q.weight (${name} `, /overlap|does not start where/);
    });

  it('still opens every committed fixture (all contiguous)', () => {
    for (const f of ['llama3-tiny-q8_0.gguf', 'llama3-tiny-f16.gguf', 'llama3-tiny-f32.gguf']) expect(() => openGguf(path.join(FIX, f))).not.toThrow();
  });
});

describe('GGUF metadata consistency (rows 178-179, 210-211, 235, 239, 258-261)', () => {
  it('requires <arch>.context_length (meta_no_ctx_len)', () => {
    const f = edited(Q8, (d) => { d.kvs = d.kvs.filter((k) => k.key !== 'llama.context_length'); });
    expectCokvError(() => openGguf(f), f, 'missing metadata llama.context_length');
  });

  it('refuses block_count below the layers present (meta_blocks_1)', () => {
    const f = edited(Q8, (d) => { kv(d, 'llama.block_count').raw = raw.u32(1); });
    expectCokvError(() => openGguf(f), f, 'block_count is 1', 'blk.1');
  });

  it.each(['bos', 'unknown', 'eos'])('refuses an out-of-range %s token id (meta_bos_oob, meta_unk_oob)', (which) => {
    const f = edited(Q8, (d) => { kv(d, `tokenizer.ggml.${which}_token_id`).raw = raw.u32(99999); });
    expectCokvError(() => openGguf(f), f, `tokenizer.ggml.${which}_token_id = 99999`, '2048 tokens');
  });

  it('accepts an out-of-range padding id, which cokv never uses (converters write vocab size or -1 for none)', () => {
    const f = edited(Q8, (d) => { kv(d, 'tokenizer.ggml.padding_token_id').raw = raw.u32(2048); });
    expect(openGguf(f).config.vocabSize).toBe(2048);
  });

  it.each([1000, 3048])('refuses %i tokenizer tokens for a 2048-row embedding (vocab_tokens_*)', (count) => {
    const f = edited(Q8, (d) => {
      const e = kv(d, 'tokenizer.ggml.tokens');
      const toks = readStrArray(e);
      e.raw = raw.strArray(count < toks.length ? toks.slice(0, count) : [...toks, ...Array.from({ length: count - toks.length }, (_, i) => `extra${i}`)]);
    });
    expectCokvError(() => openGguf(f), f, `has ${count} tokens but token_embd.weight has 2048 rows`);
  });
});

describe('RoPE factor tensors', () => {
  it('rope_freqs.weight must hold rotary dim/2 positive finite factors', () => {
    const zero = edited(Q8, (d) => { d.data.writeFloatLE(0, elemAt(d, 'rope_freqs.weight', 2, 4)); });
    expectCokvError(() => openGguf(zero), zero, 'rope_freqs.weight holds non-positive or non-finite factors');
    const nan = edited(Q8, (d) => { d.data.writeFloatLE(NaN, elemAt(d, 'rope_freqs.weight', 0, 4)); });
    expectCokvError(() => openGguf(nan), nan, 'rope_freqs.weight holds non-positive or non-finite factors');
  });
});

describe('NaN/Inf weights are refused at load, naming tensor and element (rows 265-279, 381-385, 583-585)', () => {
  it('F32 GGUF: NaN / +Inf in attn_q, NaN in an embedding row', async () => {
    const nan = edited(F32, (d) => { d.data.writeFloatLE(NaN, elemAt(d, 'blk.0.attn_q.weight', 5, 4)); });
    await expectLoadError(nan, 'tensor blk.0.attn_q.weight holds a non-finite weight (NaN) at element 5 (row 0, column 5)');
    // Row 1 of the file is un-permuted to another row at load; the message still gives the file's row.
    const inf = edited(F32, (d) => { d.data.writeFloatLE(Infinity, elemAt(d, 'blk.0.attn_q.weight', 64 + 3, 4)); });
    await expectLoadError(inf, 'blk.0.attn_q.weight holds a non-finite weight (+Inf) at element 67 (row 1, column 3)');
    const embd = edited(F32, (d) => { d.data.writeFloatLE(NaN, elemAt(d, 'token_embd.weight', 5 * 64 + 9, 4)); });
    await expectLoadError(embd, 'token_embd.weight', '(row 5, column 9)');
    const norm = edited(F32, (d) => { d.data.writeFloatLE(-Infinity, elemAt(d, 'output_norm.weight', 2, 4)); });
    await expectLoadError(norm, 'output_norm.weight', '(-Inf) at element 2');
  });

  it('Q8_0 GGUF: a NaN block scale in attn_q, +Inf in an embedding row', async () => {
    const scale = edited(Q8, (d) => { d.data.writeUInt16LE(0x7e00, Number(tensor(d, 'blk.0.attn_q.weight').offset) + 3 * 34); });
    await expectLoadError(scale, 'blk.0.attn_q.weight holds a Q8_0 block with a non-finite scale (NaN) at element 96 (row 1, column 32)');
    const embd = edited(Q8, (d) => { d.data.writeUInt16LE(0x7c00, Number(tensor(d, 'token_embd.weight').offset) + 5 * 2 * 34); });
    await expectLoadError(embd, 'token_embd.weight holds a Q8_0 block with a non-finite scale (+Inf) at element 320 (row 5, column 0)');
  });

  it('F16 GGUF: a NaN half in ffn_down', async () => {
    const f = edited(path.join(FIX, 'llama3-tiny-f16.gguf'), (d) => {
      const t = tensor(d, 'blk.1.ffn_down.weight');
      expect(t.ggmlType).toBe(GGML_TYPE.F16);
      d.data.writeUInt16LE(0xfe00, Number(t.offset) + 2 * 130);
    });
    await expectLoadError(f, 'blk.1.ffn_down.weight holds a non-finite weight (NaN) at element 130');
  });

  /** The HF fixture copied, with its weights rewritten in `dtype` and `patch` applied to the data bytes. */
  function hfCopy(dtype: 'F16' | 'BF16', patch: (data: Buffer, at: (name: string, i: number) => number) => void): string {
    const out = path.join(dir, `hf${n++}`);
    fs.cpSync(HF, out, { recursive: true });
    const st = path.join(out, 'model.safetensors');
    const store = openSafetensors(path.join(HF, 'model.safetensors'));
    writeSafetensors(st, [...store.tensors.values()].map((e) => ({ name: e.name, shape: e.shape, dtype, data: store.read(e.name) })));
    const buf = fs.readFileSync(st);
    const rewritten = openSafetensors(st);
    patch(buf, (name, i) => rewritten.tensors.get(name)!.start + 2 * i);
    fs.writeFileSync(st, buf);
    return out;
  }

  it('safetensors F16/BF16: NaN and +Inf in q_proj, NaN in the final norm (st_nan_q_proj, st_inf_q_proj, st_nan_norm)', async () => {
    const q = 'model.layers.0.self_attn.q_proj.weight';
    const nan = hfCopy('F16', (b, at) => b.writeUInt16LE(0x7e00, at(q, 70)));
    await expectLoadError(nan, `tensor ${q} holds a non-finite weight (NaN) at element 70 (row 1, column 6)`);
    const inf = hfCopy('F16', (b, at) => b.writeUInt16LE(0x7c00, at(q, 0)));
    await expectLoadError(inf, q, '(+Inf) at element 0');
    const norm = hfCopy('BF16', (b, at) => b.writeUInt16LE(0x7fc0, at('model.norm.weight', 11)));
    await expectLoadError(norm, 'model.norm.weight holds a non-finite weight (NaN) at element 11');
  });

  it.skipIf(!haveAssets)('llama2.c: NaN in the BOS embedding row and in layer-0 wq (nan_embd, nan_wq)', async () => {
    const src = asset('models/stories260K');
    // v0 header (28 bytes): dim 64, vocab 512, 5 layers; the embedding comes first, then 5 attention norms, then wq.
    const dim = 64, vocab = 512, layers = 5;
    const copy = (at: number): string => {
      const out = path.join(dir, `l2c${n++}`);
      fs.mkdirSync(out);
      fs.copyFileSync(path.join(src, 'tok512.bin'), path.join(out, 'tok512.bin'));
      const b = fs.readFileSync(path.join(src, 'stories260K.bin'));
      b.writeFloatLE(NaN, at);
      fs.writeFileSync(path.join(out, 'stories260K.bin'), b);
      return path.join(out, 'stories260K.bin');
    };
    await expectLoadError(copy(28 + 4 * (1 * dim)), 'tensor tok_embeddings holds a non-finite weight (NaN) at element 64 (row 1, column 0)');
    await expectLoadError(copy(28 + 4 * (vocab * dim + layers * dim + 3)), 'tensor layers.0.wq holds a non-finite weight (NaN) at element 3 (row 0, column 3)');
  });
});

describe('llama2.c headers that do not match the weights (found by test/fuzz-trust.test.ts)', () => {
  const copyWith = (field: number, v: number): string => {
    const src = asset('models/stories260K');
    const out = path.join(dir, `l2h${n++}`);
    fs.mkdirSync(out);
    fs.copyFileSync(path.join(src, 'tok512.bin'), path.join(out, 'tok512.bin'));
    const b = fs.readFileSync(path.join(src, 'stories260K.bin'));
    b.writeInt32LE(v, 4 * field);
    fs.writeFileSync(path.join(out, 'stories260K.bin'), b);
    return path.join(out, 'stories260K.bin');
  };
  it.skipIf(!haveAssets)('a smaller hidden_dim (172 -> 64) no longer loads shifted weights as a different model', async () => {
    const f = copyWith(1, 64);
    await expectLoadError(f, 'has 1056540 bytes but its header implies');
  });
  it.skipIf(!haveAssets)('2^31-1 layers: clean error before any per-layer list is built (was a heap OOM)', async () => {
    const f = copyWith(2, 2 ** 31 - 1);
    await expectLoadError(f, '2147483647 layers');
  });
});

describe('lying counts in big sparse files (rows 286-288, 290-291)', () => {
  /** A GGUF header with one metadata entry of type `type` whose bytes are `value`, padded with a hole to `size`. */
  function sparseMeta(key: Buffer, type: number, value: Buffer, size: number): string {
    const f = path.join(dir, `sparse${n++}.gguf`);
    const h = Buffer.alloc(24);
    h.write('GGUF', 0, 'latin1');
    h.writeUInt32LE(3, 4);
    h.writeBigUInt64LE(0n, 8);
    h.writeBigUInt64LE(1n, 16);
    const t = Buffer.alloc(4);
    t.writeUInt32LE(type);
    fs.writeFileSync(f, Buffer.concat([h, key, t, value]));
    fs.truncateSync(f, size);
    return f;
  }
  const key = (s: string): Buffer => raw.str(s);
  const arrayHead = (itemType: number, count: number): Buffer => {
    const b = Buffer.alloc(12);
    b.writeUInt32LE(itemType, 0);
    b.writeBigUInt64LE(BigInt(count), 4);
    return b;
  };

  it('a u8 array of 1.5e9 elements in a 1.5 GB file: clean error, nothing allocated (sparse_u8_array_1.5e9)', () => {
    const f = sparseMeta(key('x.big'), 9, arrayHead(0, 1.5e9), 1.5e9 + 200);
    const rss = process.memoryUsage().rss;
    expectCokvError(() => readGgufHeader(f), f, 'x.big', 'array of 1500000000 elements', `${GGUF_LIMITS.arrayElements}`);
    expect(process.memoryUsage().rss - rss).toBeLessThan(256 * 2 ** 20);
  });

  it('2e8 empty strings in a 1.6 GB file (sparse_str_array_2e8)', () => {
    const f = sparseMeta(key('x.strs'), 9, arrayHead(8, 2e8), 1.6e9 + 200);
    expectCokvError(() => readGgufHeader(f), f, 'x.strs', 'array of 200000000 elements');
  });

  it('a metadata key of 2^30 bytes (sparse_key_1GiB), and one string value of 2^30 bytes', () => {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(2n ** 30n);
    const f = sparseMeta(len, 8, Buffer.alloc(0), 2 ** 30 + 4096);
    const rss = process.memoryUsage().rss;
    expectCokvError(() => readGgufHeader(f), f, 'metadata key #0 is 1073741824 bytes long');
    const g = sparseMeta(key('x.s'), 8, len, 2 ** 30 + 4096);
    expectCokvError(() => readGgufHeader(g), g, 'metadata x.s is 1073741824 bytes long');
    expect(process.memoryUsage().rss - rss).toBeLessThan(256 * 2 ** 20);
  });

  /**
   * A 1-layer llama GGUF whose token_embd (last, `rows` × 16 F32) is a hole: an 8-byte placeholder, then the file
   * is extended to the tensor's full size. `tokens` adds a tokenizer vocabulary of that many tokens.
   */
  function sparseModel(rows: number, tokens?: number): string {
    const f = path.join(dir, `big${n++}.gguf`);
    const hidden = 16, heads = 2, kvHeads = 1, headDim = 8, ffn = 32;
    const mat = (name: string, r: number, c: number) => ({ name, shape: [r, c], dtype: 'f32' as const, data: new Float32Array(r * c).fill(0.01) });
    const vec = (name: string, len: number) => ({ name, shape: [len], dtype: 'f32' as const, data: new Float32Array(len).fill(1) });
    writeGguf(f, {
      metadata: {
        'general.architecture': gv.str('llama'), 'llama.context_length': gv.u32(64), 'llama.embedding_length': gv.u32(hidden),
        'llama.block_count': gv.u32(1), 'llama.feed_forward_length': gv.u32(ffn), 'llama.rope.dimension_count': gv.u32(headDim),
        'llama.attention.head_count': gv.u32(heads), 'llama.attention.head_count_kv': gv.u32(kvHeads),
        ...(tokens ? { 'tokenizer.ggml.model': gv.str('llama'), 'tokenizer.ggml.tokens': gv.arr('string', Array.from({ length: tokens }, (_, i) => `t${i}`)) } : {}),
      },
      tensors: [
        vec('blk.0.attn_norm.weight', hidden), mat('blk.0.attn_q.weight', heads * headDim, hidden),
        mat('blk.0.attn_k.weight', kvHeads * headDim, hidden), mat('blk.0.attn_v.weight', kvHeads * headDim, hidden),
        mat('blk.0.attn_output.weight', hidden, heads * headDim), vec('blk.0.ffn_norm.weight', hidden),
        mat('blk.0.ffn_gate.weight', ffn, hidden), mat('blk.0.ffn_up.weight', ffn, hidden), mat('blk.0.ffn_down.weight', hidden, ffn),
        vec('output_norm.weight', hidden),
        { name: 'token_embd.weight', dims: [hidden, rows], ggmlType: GGML_TYPE.F32, raw: new Uint8Array(8) },
      ],
    });
    fs.truncateSync(f, fs.statSync(f).size - 32 + rows * hidden * 4);
    return f;
  }

  it('a 2^32-element (16 GiB) F32 tensor: clean error at load, not "Invalid typed array length" (sparse_embd_16GiB)', async () => {
    const f = sparseModel(2 ** 28);
    const src = await openModel(f); // the header alone is fine: inspect still works
    expect(src.config.vocabSize).toBe(2 ** 28);
    expectCokvError(() => src.loadWeights(), f, 'token_embd.weight', 'more than one typed array can hold');
  });

  it('a 2 GiB embedding with a 2048-token tokenizer: vocabulary mismatch at open (sparse_embd_2GiB)', () => {
    const f = sparseModel(2 ** 25, 2048);
    expectCokvError(() => openGguf(f), f, 'has 2048 tokens but token_embd.weight has 33554432 rows');
  });
});

describe('metadata escapes (rows 829-830): control characters never reach the terminal', () => {
  it('a key with newlines and ESC/OSC sequences and an unknown value type', () => {
    const f = edited(Q8, (d) => { d.kvs.push({ key: 'evil\n\u001b]0;PWNED-TITLE\u0007\u001b[31mRED\u001b[0m\nsecond line', type: 13, raw: Buffer.alloc(8) }); });
    const e = expectCokvError(() => readGgufHeader(f), f, 'unknown value type 13', 'evil\\x0a\\x1b]0;PWNED-TITLE\\x07');
    // eslint-disable-next-line no-control-regex
    expect(e.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });

  it('an architecture with clear-screen and OSC title escapes', () => {
    const f = edited(Q8, (d) => { kv(d, 'general.architecture').raw = raw.str('llama\u001b[2J\u001b]0;x\u0007'); });
    const e = expectCokvError(() => openGguf(f), f, "llama\\x1b[2J\\x1b]0;x\\x07");
    // eslint-disable-next-line no-control-regex
    expect(e.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });
});

describe('tokenizer.json against its model (rows 489-490) and the chat template (row 499)', () => {
  function hfWith(editTok: (t: Record<string, unknown> & { model: Record<string, unknown>; added_tokens: unknown[] }) => void, tplCfg?: (c: Record<string, unknown>) => void): string {
    const out = path.join(dir, `hft${n++}`);
    fs.cpSync(HF, out, { recursive: true });
    const tj = path.join(out, 'tokenizer.json');
    const t = JSON.parse(fs.readFileSync(tj, 'utf8'));
    editTok(t);
    fs.writeFileSync(tj, JSON.stringify(t));
    if (tplCfg) {
      const cj = path.join(out, 'tokenizer_config.json');
      const c = JSON.parse(fs.readFileSync(cj, 'utf8'));
      tplCfg(c);
      fs.writeFileSync(cj, JSON.stringify(c));
    }
    return out;
  }
  const loadTok = async (d: string) => (await openModel(d)).loadTokenizer();
  const tokErr = async (d: string, ...p: (RegExp | string)[]) => {
    let err: unknown;
    try { await loadTok(d); } catch (e) { err = e; }
    return expectCokvError(() => { if (err) throw err; }, path.join(d, 'tokenizer.json'), ...p);
  };

  it('an unknown model.type (tok_model_type)', async () => {
    await tokErr(hfWith((t) => { t.model.type = 'Foo'; }), 'model.type "Foo" is not supported');
  });

  it('a vocabulary cut to 300 entries whose merges use missing tokens (tok_vocab_small)', async () => {
    const d = hfWith((t) => { t.model.vocab = Object.fromEntries(Object.entries(t.model.vocab as Record<string, number>).filter(([, id]) => id < 300)); });
    await tokErr(d, /model\.merges\[\d+\] uses token .* not in model\.vocab/);
  });

  it('ids past the embedding rows (an added token at id 5000 for 2048 rows) are refused; fewer ids are padding', async () => {
    await tokErr(hfWith((t) => { t.added_tokens.push({ id: 5000, content: '<extra>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }); }),
      'ids up to 5000', 'embedding has 2048 rows');
    const tj = JSON.parse(fs.readFileSync(path.join(HF, 'tokenizer.json'), 'utf8')) as object;
    // Qwen2.5 style: the embedding is padded past the tokenizer's ids.
    expect(new HfTokenizer(tj, {}, { embeddingRows: 4096 }).vocabSize).toBe(2048);
    expect((await loadTok(HF)).vocabSize).toBe(2048);
  });

  it('a looping chat template ends in a CokvError, not a heap OOM (tok_chat_huge)', async () => {
    const d = hfWith(() => {}, (c) => { c.chat_template = '{% for i in range(100000000) %}{{ i }}{% endfor %}'; });
    const src = await openModel(d);
    expectCokvError(() => applyChatTemplate(src.chatTemplate, [{ role: 'user', content: 'hello' }], { source: d }), d, 'range() of 100000000');
    const saved = CHAT_TEMPLATE_LIMITS.steps;
    CHAT_TEMPLATE_LIMITS.steps = 20_000;
    try {
      const nested = '{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}';
      expectCokvError(() => applyChatTemplate(nested, [{ role: 'user', content: 'x' }], { source: d }), d, 'more than 20000 steps');
      // A real template stays far below the limit.
      expect(applyChatTemplate((await openModel(HF)).chatTemplate, [{ role: 'user', content: 'hi there' }])).toContain('hi there');
    } finally {
      CHAT_TEMPLATE_LIMITS.steps = saved;
    }
  });
});

describe('the CLI: exit 1 with one line naming the file', () => {
  it('generate on overlapping tensors, inspect on a short block_count, generate on a NaN weight', () => {
    const overlap = edited(Q8, (d) => { tensor(d, 'blk.1.attn_q.weight').offset = tensor(d, 'token_embd.weight').offset; });
    const blocks = edited(Q8, (d) => { kv(d, 'llama.block_count').raw = raw.u32(1); });
    const nan = edited(Q8, (d) => { d.data.writeUInt16LE(0x7e00, Number(tensor(d, 'blk.0.attn_q.weight').offset)); });
    for (const [args, want] of [
      [['generate', '--model', overlap, '--prompt', 'hello world', '--max-tokens', '2'], 'overlap'],
      [['inspect', blocks], 'block_count is 1'],
      [['generate', '--model', nan, '--prompt', 'hello world', '--max-tokens', '2', '--json'], 'non-finite scale'],
    ] as const) {
      const r = cokv(...args);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(args[0] === 'inspect' ? args[1] : args[2]);
      expect(lines[0]).toContain(want);
    }
  }, 60_000);
});

describe('the NaN/Inf scan: native addon and TS fallback agree', () => {
  const types = ['f32', 'f16', 'bf16', ...(Object.keys(BLOCK_SCALE_OFFSETS) as (keyof typeof BLOCK_SCALE_OFFSETS)[])] as const;
  it('a built addon exports the scan (else the comparison below would be TS against TS)', () => {
    const addon = loadNativeAddon();
    if (fs.existsSync(NATIVE_ADDON_PATH)) expect(typeof addon?.firstNonFinite).toBe('function');
  });
  it('big tensors (2^24+ elements, scanned on the thread pool in 2^20-element chunks) give the serial answer', () => {
    const n = 2 ** 24 + 5 * 2 ** 20 + 96;
    const h = new Uint8Array(2 * n).fill(0x3c); // f16 0x3c3c, finite
    const q = new Uint8Array((n / 32) * 34);
    for (let b = 0; b < n / 32; b++) q[b * 34 + 1] = 0x3c; // scale 1.0
    const addon = loadNativeAddon();
    const saved = addon?.info().threads;
    addon?.setThreads(4); // the pool is used with 2+ threads, even on one core
    try {
      expect([scanNonFinite('f16', h, n), scanNonFinite('q8_0', q, n)]).toEqual([-1, -1]);
      for (const at of [n - 1, 2 ** 24 + 7, 2 ** 20, 3]) {
        h[2 * at + 1] = 0x7c;
        q[Math.floor(at / 32) * 34 + 1] = 0x7e;
        expect([scanNonFinite('f16', h, n), scanNonFinite('f16', h, n, false)]).toEqual([at, at]);
        expect([scanNonFinite('q8_0', q, n), scanNonFinite('q8_0', q, n, false)]).toEqual([at - (at % 32), at - (at % 32)]);
      }
    } finally {
      if (saved !== undefined) addon?.setThreads(saved);
    }
  });

  it.each(types)('%s: finite data passes, the first planted NaN/Inf is found (aligned and unaligned, odd lengths)', (dtype) => {
    const rng = new Rng(7);
    const per = dtype === 'f32' || dtype === 'f16' || dtype === 'bf16' ? 1 : BLOCK[dtype as keyof typeof BLOCK_SCALE_OFFSETS].elements;
    const bytesPer = dtype === 'f32' ? 4 : dtype === 'f16' || dtype === 'bf16' ? 2 : BLOCK[dtype as keyof typeof BLOCK_SCALE_OFFSETS].bytes;
    for (const units of [1, 3, 4097, 9001]) {
      const n = units * per;
      for (const shift of dtype === 'f32' ? [0] : [0, 1]) {
        const buf = new Uint8Array(units * bytesPer + shift + 8);
        const data = buf.subarray(shift, shift + units * bytesPer);
        // Random finite values: halves with exponent < 31 (f16) / < 255 (bf16), f32 from floats, block scales 1.0.
        for (let i = 0; i < data.length; i++) data[i] = Math.floor(rng.next() * 256);
        const view = dtype === 'f32' ? new Float32Array(units) : data;
        if (dtype === 'f32') for (let i = 0; i < units; i++) view[i] = rng.next() * 2 - 1;
        const fix = (i: number, h: number): void => { data[2 * i] = h & 255; data[2 * i + 1] = h >> 8; };
        if (dtype === 'f16') for (let i = 0; i < units; i++) if ((data[2 * i + 1] & 0x7c) === 0x7c) data[2 * i + 1] &= 0xbf;
        if (dtype === 'bf16') for (let i = 0; i < units; i++) if ((data[2 * i + 1] & 0x7f) === 0x7f && data[2 * i] & 0x80) data[2 * i] &= 0x7f;
        const offs = BLOCK_SCALE_OFFSETS[dtype as keyof typeof BLOCK_SCALE_OFFSETS] ?? [];
        for (let b = 0; b < units && offs.length; b++) for (const o of offs) fix((b * bytesPer + o) / 2, 0x3c00);
        const both = (): number[] => [scanNonFinite(dtype, view, n, true), scanNonFinite(dtype, view, n, false), firstNonFinite(dtype, view, n)];
        expect(both()).toEqual([-1, -1, -1]);
        for (const [unit, bits] of [[units - 1, 'inf'], [Math.floor(units / 2), 'nan'], [0, 'nan']] as const) {
          if (dtype === 'f32') (view as Float32Array)[unit] = bits === 'inf' ? -Infinity : NaN;
          else if (dtype === 'f16') fix(unit, bits === 'inf' ? 0x7c00 : 0xfe01);
          else if (dtype === 'bf16') fix(unit, bits === 'inf' ? 0xff80 : 0x7fc1);
          else data[unit * bytesPer + offs[offs.length - 1] + 1] = bits === 'inf' ? 0xfc : 0x7e;
          expect(both()).toEqual(Array(3).fill(unit * per));
        }
      }
    }
  });
});
