/**
 * BOS / EOS follow each model file's own metadata (GGUF tokenizer.ggml.add_bos_token / add_eos_token with
 * llama.cpp's defaults; tokenizer.json's post-processor as transformers 5 applies it), the two forms of
 * cokv-retrieval-tiny encode identically under the same BOS decision, and the CLI's --add-bos / --no-bos override.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { readGgufHeader, type GgufValue } from '../src/model/loaders/gguf.js';
import { gv, writeGguf, writeLlamaGguf, type GgufMetaValue } from '../src/model/loaders/gguf-writer.js';
import { openSafetensorsFolder } from '../src/model/loaders/safetensors.js';
import { openModel } from '../src/model/load.js';
import { tokenizerFromGguf } from '../src/model/tokenizer/gguf-tokenizer.js';
import { HfTokenizer } from '../src/model/tokenizer/hf-tokenizer.js';
import { encodePrompt, type Tokenizer } from '../src/model/tokenizer/types.js';
import { asset, cokv, expectUserError, haveAssets, tmpDir } from './helpers.js';

const dir = asset('models/cokv-retrieval-tiny');
const ggufF32 = path.join(dir, 'cokv-retrieval-tiny-f32.gguf');
const ggufQ8 = path.join(dir, 'cokv-retrieval-tiny-q8_0.gguf');
const present = haveAssets && fs.existsSync(ggufF32);

const TEXTS = [
  'The pass key is 58213. Remember it. What is the pass key? The pass key is',
  "Hello,   world?? It's 3:45pm -- don't PANIC!!\n\nNew paragraph\twith tab\r\nand CRLF.   ",
  'café naïve Zürich 你好，世界 😀👍🏽 — “quotes”',
  'line apple-violin: REGISTER_CONTENT is 40912\nWhat is the REGISTER_CONTENT in line apple-violin?',
  '<s>already a BOS in the text</s>',
  ' ',
];

/** The tokenizer.* metadata of a GGUF, typed again for the writer (string/number/bool scalars and arrays). */
function tokenizerMeta(file: string): Record<string, GgufMetaValue> {
  const out: Record<string, GgufMetaValue> = {};
  for (const [k, v] of readGgufHeader(file).metadata) {
    if (!k.startsWith('tokenizer.')) continue;
    out[k] = typed(k, v);
  }
  return out;
}

function typed(key: string, v: GgufValue): GgufMetaValue {
  if (typeof v === 'string') return gv.str(v);
  if (typeof v === 'boolean') return gv.bool(v);
  if (typeof v === 'number') return gv.u32(v);
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string')) return gv.arr('string', v as string[]);
    if (key.endsWith('scores')) return gv.arr('f32', v as number[]);
    return gv.arr('i32', v as number[]);
  }
  throw new Error(`unexpected metadata ${key}`);
}

/** A tokenizer-only GGUF (one dummy tensor) with retrieval-tiny's tokenizer metadata, edited. */
function writeTokenizerGguf(file: string, edit: (m: Record<string, GgufMetaValue>) => void): Tokenizer {
  const meta: Record<string, GgufMetaValue> = { 'general.architecture': gv.str('llama'), ...tokenizerMeta(ggufF32) };
  edit(meta);
  writeGguf(file, { metadata: meta, tensors: [{ name: 'x', shape: [4], dtype: 'f32', data: new Float32Array(4) }] });
  return tokenizerFromGguf(readGgufHeader(file).metadata, file);
}

/** The real retrieval-tiny weights (from the HF folder) as a full GGUF with edited tokenizer metadata. */
async function writeModelGguf(file: string, edit: (m: Record<string, GgufMetaValue>) => void): Promise<void> {
  const store = openSafetensorsFolder(dir);
  const weights: Record<string, Float32Array> = {};
  for (const name of store.tensors.keys()) weights[name] = store.read(name);
  const tokenizer = tokenizerMeta(ggufF32);
  edit(tokenizer);
  writeLlamaGguf(file, { config: (await openModel(dir)).config, weights, tokenizer, dtype: 'f32' });
}

const hfTokenizer = (tokJson: object, cfg: object): HfTokenizer => new HfTokenizer(tokJson, cfg);
const readJson = (f: string): Record<string, unknown> => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;
/** retrieval-tiny's tokenizer.json with a post-processor that adds <s> (what the GGUF's add_bos_token = true says). */
function bosTokenizerJson(): Record<string, unknown> {
  return {
    ...readJson(path.join(dir, 'tokenizer.json')),
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] } },
    },
  };
}

describe.skipIf(!present)('cokv-retrieval-tiny: what each file says about BOS', () => {
  it('the shipped files disagree: GGUF add_bos_token = true, tokenizer.json post-processor "$A" adds nothing', async () => {
    for (const f of [ggufF32, ggufQ8]) {
      const g = await (await openModel(f)).loadTokenizer();
      expect(g.addBosDefault).toBe(true);
      expect(g.specialRule).toMatchObject({ addBos: true, bosReason: 'tokenizer.ggml.add_bos_token = true', addEos: false, eosReason: 'tokenizer.ggml.add_eos_token = false' });
    }
    const h = await (await openModel(dir)).loadTokenizer();
    expect(h.addBosDefault).toBe(false);
    expect(h.specialRule?.bosReason).toBe('tokenizer.json post_processor TemplateProcessing "$A" adds no BOS');
    expect(h.specialRule?.addEos).toBe(false);
    // tokenizer_config.json has no add_bos_token key at all (transformers 5 drops it on save).
    expect(readJson(path.join(dir, 'tokenizer_config.json'))).not.toHaveProperty('add_bos_token');
    expect(h.specialRule?.notes).toBeUndefined();
  });

  it('under the same BOS decision both forms give the same ids (and the reference prompts\' ids)', async () => {
    const g = await (await openModel(ggufF32)).loadTokenizer();
    const h = await (await openModel(dir)).loadTokenizer();
    const refs = [0, 1, 2].map((i) => readJson(path.join(dir, `reference/prompt${i}.json`)) as { prompt: string; input_ids: number[] });
    for (const text of [...TEXTS, ...refs.map((r) => r.prompt)]) {
      const plain = h.encode(text, { addSpecial: false });
      expect(g.encode(text, { addSpecial: false })).toEqual(plain);
      // Defaults differ by exactly the BOS the GGUF adds.
      expect(g.encode(text)).toEqual([0, ...plain]);
      expect(h.encode(text)).toEqual(plain);
      // Overrides make them agree either way.
      expect(h.encode(text, { addBos: true })).toEqual(g.encode(text));
      expect(g.encode(text, { addBos: false })).toEqual(h.encode(text));
      expect(h.encode(text, { addSpecial: false, addBos: true })).toEqual([0, ...plain]);
      expect(encodePrompt(h, text, undefined)).toEqual(plain);
      expect(encodePrompt(h, text, true)).toEqual([0, ...plain]);
      expect(encodePrompt(g, text, false)).toEqual(plain);
    }
    // The GGUF's own rule reproduces the transformers reference ids (BOS + prompt, as the model card says).
    for (const r of refs) expect(g.encode(r.prompt)).toEqual(r.input_ids);
  });

  it('an HF folder whose tokenizer.json adds <s> encodes exactly as the GGUF (the metadata agree)', async () => {
    const g = await (await openModel(ggufF32)).loadTokenizer();
    const h = hfTokenizer(bosTokenizerJson(), readJson(path.join(dir, 'tokenizer_config.json')));
    expect(h.specialRule.bosReason).toBe('tokenizer.json post_processor TemplateProcessing "<s> $A" adds <s>');
    for (const text of TEXTS) {
      expect(h.encode(text)).toEqual(g.encode(text));
      expect(h.encode(text, { addBos: false })).toEqual(g.encode(text, { addBos: false }));
      expect(h.encode(text, { addSpecial: false })).toEqual(g.encode(text, { addSpecial: false }));
    }
  });

  it('tokenizer_config.json add_bos_token is reported but not followed (transformers 5 ignores it beside tokenizer.json)', () => {
    const t = tmpDir('cokv-bos-hf-');
    fs.copyFileSync(path.join(dir, 'tokenizer.json'), path.join(t, 'tokenizer.json'));
    fs.writeFileSync(path.join(t, 'tokenizer_config.json'), JSON.stringify({ ...readJson(path.join(dir, 'tokenizer_config.json')), add_bos_token: true, add_eos_token: true }));
    const h = HfTokenizer.fromFiles(path.join(t, 'tokenizer.json'), path.join(t, 'tokenizer_config.json'));
    expect(h.addBosDefault).toBe(false);
    expect(h.encode('The pass key is')).toEqual(h.encode('The pass key is', { addSpecial: false }));
    expect(h.specialRule.notes).toEqual([
      'tokenizer_config.json add_bos_token = true is not followed: transformers 5 ignores it when tokenizer.json exists (its post_processor decides)',
      'tokenizer_config.json add_eos_token = true is not followed: transformers 5 ignores it when tokenizer.json exists (its post_processor decides)',
    ]);
    // A folder with no post-processor adds nothing either (transformers rebuilds an empty template).
    const none = hfTokenizer({ ...readJson(path.join(dir, 'tokenizer.json')), post_processor: null }, { bos_token: '<s>', eos_token: '</s>' });
    expect(none.addBosDefault).toBe(false);
    expect(none.specialRule.bosReason).toBe('tokenizer.json has no post_processor: transformers adds no special tokens');
  });
});

describe.skipIf(!present)('GGUF tokenizer.ggml.add_bos_token false / true / absent (files written by gguf-writer)', () => {
  const t = present ? tmpDir('cokv-bos-gguf-') : '';
  const text = 'The pass key is 58213.';
  const plain = (tok: Tokenizer): number[] => tok.encode(text, { addSpecial: false });

  it('false: no BOS; true: BOS; --add-bos / --no-bos style overrides win either way', () => {
    const off = writeTokenizerGguf(path.join(t, 'off.gguf'), (m) => { m['tokenizer.ggml.add_bos_token'] = gv.bool(false); });
    expect(off.encode(text)).toEqual(plain(off));
    expect(off.specialRule?.bosReason).toBe('tokenizer.ggml.add_bos_token = false');
    expect(off.encode(text, { addBos: true })).toEqual([0, ...plain(off)]);
    const on = writeTokenizerGguf(path.join(t, 'on.gguf'), (m) => { m['tokenizer.ggml.add_bos_token'] = gv.bool(true); });
    expect(on.encode(text)).toEqual([0, ...plain(on)]);
    expect(on.encode(text, { addBos: false })).toEqual(plain(on));
    expect(on.encode(text, { addSpecial: false })).toEqual(plain(on));
  });

  it('absent: llama.cpp\'s default for the tokenizer type (gpt2: by pre-tokenizer; llama: BOS)', () => {
    const drop = (m: Record<string, GgufMetaValue>): void => { delete m['tokenizer.ggml.add_bos_token']; delete m['tokenizer.ggml.add_eos_token']; };
    const smollm = writeTokenizerGguf(path.join(t, 'smollm.gguf'), drop);
    expect(smollm.encode(text)).toEqual(plain(smollm));
    expect(smollm.specialRule?.bosReason).toBe("tokenizer.ggml.add_bos_token absent: llama.cpp's default for tokenizer.ggml.model 'gpt2' with tokenizer.ggml.pre 'smollm'");
    // llama-vocab.cpp sets add_bos = true for the llama3 family (llama-bpe) and tekken.
    for (const pre of ['llama-bpe', 'tekken']) {
      const tok = writeTokenizerGguf(path.join(t, `${pre}.gguf`), (m) => { drop(m); m['tokenizer.ggml.pre'] = gv.str(pre); });
      expect(tok.addBosDefault, pre).toBe(true);
      expect(tok.encode('x')[0]).toBe(0);
    }
    // SentencePiece ('llama'): BOS by default, and BOS id 1 when the id key is absent too.
    const pieces = ['<unk>', '<s>', '</s>', '▁a', 'a', '▁'];
    const spm = writeTokenizerGguf(path.join(t, 'spm.gguf'), (m) => {
      for (const k of Object.keys(m)) if (k.startsWith('tokenizer.')) delete m[k];
      m['tokenizer.ggml.model'] = gv.str('llama');
      m['tokenizer.ggml.tokens'] = gv.arr('string', pieces);
      m['tokenizer.ggml.scores'] = gv.arr('f32', pieces.map((_, i) => -i));
      m['tokenizer.ggml.token_type'] = gv.arr('i32', [2, 3, 3, 1, 1, 1]);
    });
    expect(spm.encode('a')).toEqual([1, 3]);
    expect(spm.specialRule?.bosReason).toBe("tokenizer.ggml.add_bos_token absent: llama.cpp's default for tokenizer.ggml.model 'llama'");
    expect(spm.encode('a', { addBos: false })).toEqual([3]);
  });

  it('add_eos_token true appends EOS; a rule without a BOS id adds nothing and says so; a non-bool flag is an error', () => {
    const eos = writeTokenizerGguf(path.join(t, 'eos.gguf'), (m) => { m['tokenizer.ggml.add_eos_token'] = gv.bool(true); });
    expect(eos.encode(text)).toEqual([0, ...plain(eos), 1]);
    expect(eos.encode(text, { addEos: false })).toEqual([0, ...plain(eos)]);
    const noId = writeTokenizerGguf(path.join(t, 'noid.gguf'), (m) => { delete m['tokenizer.ggml.bos_token_id']; });
    expect(noId.addBosDefault).toBe(false);
    expect(noId.encode(text)).toEqual(plain(noId));
    expect(noId.specialRule?.bosReason).toMatch(/add_bos_token = true, but the file names no BOS token/);
    let err: unknown;
    try {
      writeTokenizerGguf(path.join(t, 'bad.gguf'), (m) => { m['tokenizer.ggml.add_bos_token'] = gv.u32(1); });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CokvError);
    expect((err as Error).message).toMatch(/bad\.gguf: metadata tokenizer\.ggml\.add_bos_token should be a bool/);
  });
});

describe.skipIf(!present)('CLI: --add-bos / --no-bos and inspect', () => {
  const t = present ? tmpDir('cokv-bos-cli-') : '';
  const prompt = 'The pass key is 58213. Remember it. The pass key is';
  const gen = (model: string, ...extra: string[]): { promptTokens: number; tokens: number[] } => {
    const r = cokv('generate', '--model', model, '--prompt', prompt, '--max-tokens', '6', '--json', ...extra);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout) as { tokens: number[]; stats: { promptTokens: number } };
    return { promptTokens: o.stats.promptTokens, tokens: o.tokens };
  };

  it('generate: each form follows its file; --add-bos on the HF form and --no-bos on the GGUF make them agree', () => {
    const hf = gen(dir), gg = gen(ggufF32);
    expect(gg.promptTokens).toBe(hf.promptTokens + 1);
    const hfBos = gen(dir, '--add-bos'), ggNoBos = gen(ggufF32, '--no-bos');
    expect(hfBos).toEqual(gg);
    expect(ggNoBos).toEqual(hf);
    // With and without BOS the tiny model continues differently (short prompts are out of its distribution).
    expect(hf.tokens).not.toEqual(gg.tokens);
  });

  it('bad flag combinations and --add-bos on a model without a BOS token are one-line errors', async () => {
    expectUserError(cokv('generate', '--model', dir, '--prompt', 'x', '--add-bos', '--no-bos'), /--add-bos\/--no-bos: give at most one of them/);
    expectUserError(cokv('generate', '--model', dir, '--prompt', 'x', '--chat', '--no-bos'), /--add-bos\/--no-bos: not with --chat/);
    const noBos = path.join(t, 'no-bos-id.gguf');
    await writeModelGguf(noBos, (m) => { delete m['tokenizer.ggml.bos_token_id']; });
    expectUserError(cokv('generate', '--model', noBos, '--prompt', 'x', '--add-bos'), /--add-bos: .*no-bos-id\.gguf has no BOS token/);
  });

  it('needle: --no-bos is its own run (file tag and field); both flags at once are refused', () => {
    const out = tmpDir('cokv-bos-needle-');
    const args = ['needle', '--model', dir, '--haystack', asset('data/needle/PaulGrahamEssays'), '--lengths', '200', '--depths', '1',
      '--presses', 'full', '--out', out, '--quiet'];
    const r = cokv(...args, '--no-bos');
    expect(r.code, r.stderr).toBe(0);
    const grid = JSON.parse(fs.readFileSync(path.join(out, 'needle', 'cokv-retrieval-tiny__full__full__nobos.json'), 'utf8'));
    expect(grid.bos).toBe(false);
    expect(fs.existsSync(path.join(out, 'needle', 'cokv-retrieval-tiny__full__full.json'))).toBe(false);
    expectUserError(cokv(...args, '--no-bos', '--add-bos'), /--add-bos\/--no-bos: give at most one of them/);
  });

  it('a GGUF written with add_bos_token false generates as the HF folder does; inspect says what each file does', async () => {
    const off = path.join(t, 'add-bos-false.gguf');
    await writeModelGguf(off, (m) => { m['tokenizer.ggml.add_bos_token'] = gv.bool(false); });
    expect(gen(off)).toEqual(gen(dir));
    const text = (m: string): string => {
      const r = cokv('inspect', m);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    expect(text(ggufF32)).toMatch(/^adds BOS +yes \(tokenizer\.ggml\.add_bos_token = true\); BOS token "<s>" \(id 0\)$/m);
    expect(text(ggufF32)).toMatch(/^adds EOS +no \(tokenizer\.ggml\.add_eos_token = false\); EOS "<\/s>" \(id 1\)$/m);
    expect(text(off)).toMatch(/^adds BOS +no \(tokenizer\.ggml\.add_bos_token = false\)/m);
    expect(text(dir)).toMatch(/^adds BOS +no \(tokenizer\.json post_processor TemplateProcessing "\$A" adds no BOS\); BOS token "<s>" \(id 0\)$/m);
    const r = cokv('inspect', dir, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tokenizer).toEqual({
      bos: { add: false, reason: 'tokenizer.json post_processor TemplateProcessing "$A" adds no BOS', id: 0, token: '<s>' },
      eos: { add: false, reason: 'tokenizer.json post_processor TemplateProcessing "$A" adds no EOS', ids: [1], tokens: ['</s>'] },
      notes: [],
    });
    const g = JSON.parse(cokv('inspect', ggufQ8, '--json').stdout).tokenizer;
    expect(g.bos).toEqual({ add: true, reason: 'tokenizer.ggml.add_bos_token = true', id: 0, token: '<s>' });
  });
});
