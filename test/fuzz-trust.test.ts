/**
 * Seeded, bounded fuzzing of every file cokv reads from users: GGUF models, Hugging Face folders (safetensors,
 * config.json, tokenizer.json), llama2.c checkpoints, profile JSON and JSONL datasets. Every mutated input must
 * either load (and a model that loads must give finite logits) or fail with a one-line CokvError; any other
 * exception, a multi-line message or a non-finite logit fails the test and names the case (seed and mutation) so it
 * can be replayed. The case counts keep the whole file well under a minute on two cores.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TsBackend } from '../src/backend/ts.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { CokvError } from '../src/errors.js';
import { parseJsonl } from '../src/eval/jsonl.js';
import { readProfile } from '../src/game/profile-file.js';
import { Rng } from '../src/generate/rng.js';
import { Transformer } from '../src/model/forward.js';
import { openModel } from '../src/model/load.js';
import { readGgufHeader } from '../src/model/loaders/gguf.js';
import { SAFETENSORS_SINGLE } from '../src/model/loaders/safetensors.js';
import { parseGguf, raw, serializeGguf } from './gguf-edit.js';
import { asset, haveAssets, repoRoot, tmpDir } from './helpers.js';

const dir = tmpDir('cokv-fuzz-trust-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

type Outcome = 'ok' | 'error';

/** Run `fn`; a one-line CokvError is the "error" outcome, anything else thrown fails naming `label`. */
async function classify(label: string, fn: () => unknown): Promise<Outcome> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    if (e instanceof CokvError && !e.message.includes('\n') && e.message.length > 0) return 'error';
    throw new Error(`${label}: expected success or a one-line CokvError, got ${e instanceof Error ? `${e.name}: ${e.stack}` : String(e)}`);
  }
}

/** Open, read weights and tokenizer, and run three tokens through the model: every logit must be finite. */
async function loadAndRun(label: string, file: string): Promise<void> {
  const src = await openModel(file);
  const weights = src.loadWeights();
  const tok = await src.loadTokenizer();
  const c = src.config;
  const tf = new Transformer(c, weights, new TsBackend());
  const ids = [1, 2, 3].map((i) => Math.min(i, c.vocabSize - 1, tok.vocabSize - 1));
  const logits = tf.forward(ids, new RaggedKVCache(c.numLayers, c.numKvHeads, c.headDim), { logits: 'all' });
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) throw new Error(`${label}: loaded, but logit ${i} is ${logits[i]}`);
  }
  tok.decode(tok.encode('hello world'));
}

const INTERESTING_U64 = [0n, 1n, 2n, 31n, 255n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n, 2n ** 32n + 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

/**
 * One byte-level mutation of `b` (a copy): truncation, an interesting u64 written over 8 bytes, or 1-4 flipped
 * bytes; `hot` bytes at the start (the header) get 80% of the hits. Returns the bytes and a description.
 */
function mutateBytes(b: Buffer, hot: number, rng: Rng): { bytes: Buffer; what: string } {
  const pick = (): number => (rng.next() < 0.8 ? Math.floor(rng.next() * hot) : Math.floor(rng.next() * b.length));
  const r = rng.next();
  if (r < 0.2) {
    const at = pick();
    return { bytes: Buffer.from(b.subarray(0, at)), what: `truncated to ${at}` };
  }
  const out = Buffer.from(b);
  if (r < 0.35) {
    const at = Math.min(pick(), out.length - 8);
    const v = INTERESTING_U64[Math.floor(rng.next() * INTERESTING_U64.length)];
    out.writeBigUInt64LE(v, at);
    return { bytes: out, what: `u64 ${v} at ${at}` };
  }
  const flips: string[] = [];
  for (let k = 1 + Math.floor(rng.next() * 4); k > 0; k--) {
    const at = pick();
    const v = Math.floor(rng.next() * 256);
    out[at] = v;
    flips.push(`${at}=${v}`);
  }
  return { bytes: out, what: `bytes ${flips.join(',')}` };
}

const pickOf = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng.next() * xs.length)];

/**
 * One structural GGUF mutation through the editor: a tensor's type, a dimension or its offset, or a metadata
 * value replaced by a number, a string or an array of another type.
 */
function mutateGguf(b: Buffer, rng: Rng): { bytes: Buffer; what: string } {
  const d = parseGguf(b);
  const r = rng.next();
  let what: string;
  if (r < 0.5) {
    const t = pickOf(rng, d.tensors);
    const k = rng.next();
    if (k < 0.4) {
      t.ggmlType = pickOf(rng, [0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23, 30, 9999]);
      what = `${t.name} type ${t.ggmlType}`;
    } else if (k < 0.7) {
      const dim = Math.floor(rng.next() * t.dims.length);
      t.dims[dim] = pickOf(rng, [1n, 2n, 31n, 32n, 64n, 2048n, 2n ** 32n, t.dims[dim] * 2n]);
      what = `${t.name} dim ${dim} = ${t.dims[dim]}`;
    } else {
      t.offset = pickOf(rng, [0n, 32n, pickOf(rng, d.tensors).offset, t.offset + 32n, 2n ** 40n]);
      what = `${t.name} offset ${t.offset}`;
    }
  } else {
    const e = pickOf(rng, d.kvs);
    const v = rng.next();
    if (v < 0.5) {
      e.type = 4;
      e.raw = raw.u32(pickOf(rng, [0, 1, 2, 3, 7, 64, 2047, 2048, 99999, 2 ** 31, 2 ** 32 - 1]));
      what = `${e.key} = u32 ${e.raw.readUInt32LE(0)}`;
    } else if (v < 0.75) {
      e.type = 8;
      e.raw = raw.str(pickOf(rng, ['', 'llama', 'qwen2', 'gpt2', 'x'.repeat(300), '\u001b[2J']));
      what = `${e.key} = string`;
    } else {
      e.type = 9;
      e.raw = pickOf(rng, [raw.i32Array([1, 2, 3]), raw.strArray(['a', 'b']), raw.i32Array([])]);
      what = `${e.key} = array`;
    }
  }
  return { bytes: serializeGguf(d), what };
}

/** Counts per outcome, so a suite that never loads (or never fails) is visible and asserted. */
function tally(): { ok: number; error: number; add(o: Outcome): void } {
  return { ok: 0, error: 0, add(o) { this[o]++; } };
}

describe('fuzz: mutated files load or fail with one clean line', () => {
  it.each([
    ['llama3-tiny/llama3-tiny-q8_0.gguf', 500, 20261203],
    ['qwen2-tiny/qwen2-tiny-f16.gguf', 200, 4242],
  ] as const)('GGUF (%s): %i byte-level and structural mutations', async (name, cases, seed) => {
    const file = path.join(repoRoot, 'test/fixtures/models', name);
    const src = fs.readFileSync(file);
    const hot = readGgufHeader(file).dataOffset;
    const rng = new Rng(seed);
    const t = tally();
    for (let i = 0; i < cases; i++) {
      const { bytes, what } = rng.next() < 0.3 ? mutateGguf(src, rng) : mutateBytes(src, hot, rng);
      const f = path.join(dir, `f${i}.gguf`);
      fs.writeFileSync(f, bytes);
      t.add(await classify(`gguf case ${i} (${what})`, () => loadAndRun(`gguf case ${i} (${what})`, f)));
      fs.rmSync(f);
    }
    expect(t.ok).toBeGreaterThan(cases / 25);
    expect(t.error).toBeGreaterThan(cases / 2.5);
  }, 60_000);

  it('Hugging Face folder (qwen2-tiny F16): 250 mutations of safetensors, config.json and tokenizer.json', async () => {
    const base = path.join(repoRoot, 'test/fixtures/models/qwen2-tiny/hf-f16');
    const files = { st: SAFETENSORS_SINGLE, config: 'config.json', tok: 'tokenizer.json' } as const;
    const orig = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, fs.readFileSync(path.join(base, v))])) as Record<keyof typeof files, Buffer>;
    const hot = 8 + Number(orig.st.readBigUInt64LE(0));
    const rng = new Rng(7);
    const t = tally();
    const jsonValues = [null, 0, -1, 1e308, 2 ** 53, 0.5, '', 'x', [], {}, true, 'Foo'];
    for (let i = 0; i < 250; i++) {
      const d = path.join(dir, `hf${i}`);
      fs.cpSync(base, d, { recursive: true });
      const r = rng.next();
      let what: string;
      if (r < 0.5) {
        const m = mutateBytes(orig.st, hot, rng);
        fs.writeFileSync(path.join(d, files.st), m.bytes);
        what = `safetensors ${m.what}`;
      } else {
        // A JSON file with one value replaced (a random key of the top level or of tokenizer.json's model).
        const which = r < 0.75 ? 'config' : 'tok';
        const j = JSON.parse(orig[which].toString('utf8')) as Record<string, unknown>;
        const obj = which === 'tok' && rng.next() < 0.6 ? (j.model as Record<string, unknown>) : j;
        const keys = Object.keys(obj);
        const key = keys[Math.floor(rng.next() * keys.length)];
        const v = jsonValues[Math.floor(rng.next() * jsonValues.length)];
        obj[key] = v;
        fs.writeFileSync(path.join(d, files[which]), JSON.stringify(j));
        what = `${files[which]} ${key} = ${JSON.stringify(v)}`;
      }
      t.add(await classify(`hf case ${i} (${what})`, () => loadAndRun(`hf case ${i} (${what})`, d)));
      fs.rmSync(d, { recursive: true, force: true });
    }
    expect(t.ok).toBeGreaterThan(20);
    expect(t.error).toBeGreaterThan(60);
  }, 60_000);

  it.skipIf(!haveAssets)('llama2.c checkpoint (stories260K): 200 mutations of header and weights', async () => {
    const srcDir = asset('models/stories260K');
    const orig = fs.readFileSync(path.join(srcDir, 'stories260K.bin'));
    const rng = new Rng(99);
    const t = tally();
    const d = path.join(dir, 'l2c');
    fs.mkdirSync(d);
    fs.copyFileSync(path.join(srcDir, 'tok512.bin'), path.join(d, 'tok512.bin'));
    for (let i = 0; i < 200; i++) {
      const out = Buffer.from(orig);
      let what: string;
      if (rng.next() < 0.5) {
        // Header ints: dims, layers, heads, vocab (sign = shared classifier), seq_len.
        const field = Math.floor(rng.next() * 7);
        const v = [0, -1, 1, 2, 3, 7, 64, 512, 513, 2 ** 31 - 1, -(2 ** 31)][Math.floor(rng.next() * 11)];
        out.writeInt32LE(v, 4 * field);
        what = `header int ${field} = ${v}`;
      } else {
        // A weight float set to a special value (NaN/Inf must be refused, huge finite values must stay finite).
        const at = 28 + 4 * Math.floor(rng.next() * ((orig.length - 28) / 4));
        const v = [NaN, Infinity, -Infinity, 3.4e38, 0, -1e-45][Math.floor(rng.next() * 6)];
        out.writeFloatLE(v, at);
        what = `float ${v} at ${at}`;
      }
      fs.writeFileSync(path.join(d, 'stories260K.bin'), out);
      const outcome = await classify(`llama2c case ${i} (${what})`, async () => {
        try {
          await loadAndRun(`llama2c case ${i} (${what})`, path.join(d, 'stories260K.bin'));
        } catch (e) {
          // 3.4e38 in a weight can overflow activations: that is not a loader's bug, and the logit check says so.
          if (/logit \d+ is/.test((e as Error).message) && what.includes('3.4e+38')) return;
          throw e;
        }
      });
      t.add(outcome);
    }
    expect(t.ok).toBeGreaterThan(20);
    expect(t.error).toBeGreaterThan(40);
  }, 60_000);

  it('profile JSON: 400 structural and byte mutations read back or fail cleanly', async () => {
    const base = path.join(repoRoot, 'results/profiles/cokv-retrieval-tiny__loglik-H8.json');
    const text = fs.readFileSync(base, 'utf8');
    const f0 = path.join(dir, 'p-base.json');
    fs.writeFileSync(f0, text);
    expect(await classify('profile base', () => readProfile(f0))).toBe('ok');
    const rng = new Rng(5);
    const t = tally();
    const values = [null, 0, -1, 1e308, -1e308, 2 ** 53 + 1, 0.5, '', 'zz', [], [[]], {}, true, [1e308, 1], [[1, 2], [3]]];
    for (let i = 0; i < 400; i++) {
      let what: string, out: string;
      if (rng.next() < 0.3) {
        const m = mutateBytes(Buffer.from(text), text.length, rng);
        out = m.bytes.toString('utf8');
        what = m.what;
      } else {
        // Replace or delete one value somewhere in the tree (walk down a random path).
        const j = JSON.parse(text) as unknown;
        let node = j as Record<string, unknown> | unknown[];
        const trail: string[] = [];
        for (;;) {
          const keys = Array.isArray(node) ? node.map((_, k) => String(k)) : Object.keys(node);
          if (keys.length === 0) break;
          const k = keys[Math.floor(rng.next() * keys.length)];
          trail.push(k);
          const child = (node as Record<string, unknown>)[k];
          if (child !== null && typeof child === 'object' && rng.next() < 0.6) node = child as Record<string, unknown>;
          else {
            const v = rng.next() < 0.15 ? undefined : values[Math.floor(rng.next() * values.length)];
            if (v === undefined && !Array.isArray(node)) delete (node as Record<string, unknown>)[k];
            else (node as Record<string, unknown>)[k] = v ?? null;
            what = `${trail.join('.')} = ${v === undefined ? '(deleted)' : JSON.stringify(v)}`;
            break;
          }
        }
        what ??= 'unchanged';
        out = JSON.stringify(j);
      }
      const f = path.join(dir, `p${i}.json`);
      fs.writeFileSync(f, out);
      t.add(await classify(`profile case ${i} (${what})`, () => readProfile(f)));
    }
    expect(t.error).toBeGreaterThan(100);
  }, 60_000);

  it('JSONL dataset: 400 mutations parse or fail with file:line', async () => {
    const lines = fs.existsSync(asset('data/retrieval-dev.jsonl'))
      ? fs.readFileSync(asset('data/retrieval-dev.jsonl'), 'utf8').split('\n').slice(0, 12).join('\n')
      : Array.from({ length: 12 }, (_, i) => JSON.stringify({ id: `x${i}`, context: 'a '.repeat(50), answers: ['a'] })).join('\n');
    const rng = new Rng(11);
    const t = tally();
    const inserts = ['\u0000', '\ufeff', '\r', '\n', '{', '}', '"', '\\', '[', ']', ',', '\ud800', 'null', '1e999', '{"a":'];
    for (let i = 0; i < 400; i++) {
      let text: string, what: string;
      if (rng.next() < 0.5) {
        const m = mutateBytes(Buffer.from(lines), lines.length, rng);
        text = m.bytes.toString('utf8');
        what = m.what;
      } else {
        const at = Math.floor(rng.next() * lines.length);
        const s = inserts[Math.floor(rng.next() * inserts.length)];
        text = lines.slice(0, at) + s + lines.slice(at);
        what = `insert ${JSON.stringify(s)} at ${at}`;
      }
      const outcome = await classify(`jsonl case ${i} (${what})`, () => {
        try {
          parseJsonl(text, 'data.jsonl');
        } catch (e) {
          if (e instanceof CokvError) expect(e.message).toMatch(/^data\.jsonl:\d+: /);
          throw e;
        }
      });
      t.add(outcome);
    }
    expect(t.ok).toBeGreaterThan(20);
    expect(t.error).toBeGreaterThan(100);
  });
});
