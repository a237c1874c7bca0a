/** Sequences: prefill / compress / fork / generate / save / load, abort, and event-loop responsiveness. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { CokvError } from '../src/errors.js';
import { KV_DTYPES } from '../src/cache/ragged.js';
import { createPress } from '../src/press/registry.js';
import type { Press } from '../src/press/types.js';
import { Sequence } from '../src/session/sequence.js';
import { asset, cokv, haveAssets, tmpDir } from './helpers.js';

const dir = tmpDir('cokv-sequence-');

/** The first `n` retrieval-dev items: a context (< 512 tokens, so one prefill pass) and its question. */
function items(n: number): { context: string; input: string }[] {
  return fs.readFileSync(asset('data/retrieval-dev.jsonl'), 'utf8').split('\n').slice(0, n).map((l) => JSON.parse(l) as { context: string; input: string });
}

async function expectRejects(p: Promise<unknown>, kind: string, ...patterns: (string | RegExp)[]): Promise<CokvError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a CokvError').toBeInstanceOf(CokvError);
  const e = err as CokvError;
  expect(e.kind).toBe(kind);
  for (const pat of patterns) {
    if (typeof pat === 'string') expect(e.message).toContain(pat);
    else expect(e.message).toMatch(pat);
  }
  expect(e.message).not.toContain('\n');
  return e;
}

async function greedy(s: Sequence, maxTokens = 8): Promise<number[]> {
  const g = s.generate({ maxTokens, temperature: 0 });
  await g.complete();
  return g.tokens;
}

describe.skipIf(!haveAssets)('Sequence on cokv-retrieval-tiny', () => {
  let model: CokvModel;
  let ctx: number[];
  let question: number[];
  let profile: string;
  const presses = (): [string, Press | undefined][] => [
    ['full', undefined],
    ['snapkv', createPress('snapkv', { budget: 48 }, model.config)],
    ['cokv', createPress('cokv', { budget: 48, profile, alpha: 2 }, model.config)],
  ];

  beforeAll(async () => {
    model = await loadModel(asset('models/cokv-retrieval-tiny'));
    const it0 = items(1)[0];
    ctx = model.encode(it0.context);
    question = model.encode(`\n${it0.input}`, false);
    expect(ctx.length).toBeGreaterThan(200);
    expect(ctx.length).toBeLessThan(512);
    profile = path.join(dir, 'profile.json');
    const c = model.config;
    fs.writeFileSync(profile, JSON.stringify({
      shape: [c.numLayers, c.numKvHeads],
      scores: Array.from({ length: c.numLayers }, (_, l) => Array.from({ length: c.numKvHeads }, (_, h) => ((l * 7 + h * 3) % 5) + 0.5)),
    }));
  });

  it('a plain sequence generates what CokvModel.generate does, and is left extended by the tokens', async () => {
    const want = model.generate([...ctx, ...question], { maxTokens: 6, temperature: 0 });
    await want.complete();
    const s = await model.createSequence();
    await s.prefill([...ctx, ...question]);
    const g = s.generate({ maxTokens: 6, temperature: 0 });
    await g.complete();
    expect(g.tokens).toEqual(want.tokens);
    expect(g.stats!.promptTokens).toBe(want.stats!.promptTokens);
    expect(g.stats!.promptKvBytes).toBe(want.stats!.promptKvBytes);
    expect(g.stats!.kvBytes).toBe(want.stats!.kvBytes);
    expect(s.tokens).toEqual([...ctx, ...question, ...want.tokens]);
    // The last token is fed by the next call: continuing equals one longer generation.
    expect(s.stats.pendingTokens).toBe(1);
    const more = await greedy(s, 4);
    const long = model.generate([...ctx, ...question], { maxTokens: 10, temperature: 0 });
    await long.complete();
    expect([...want.tokens, ...more]).toEqual(long.tokens);
  });

  it('compress once, ask many: each fork answers exactly like a fresh full run with the same press (context-only)', async () => {
    const qs = items(4).map((x) => model.encode(`\n${x.input}`, false));
    for (const [name, press] of presses()) {
      if (!press) continue;
      const doc = await model.createSequence();
      await doc.prefill(ctx);
      await doc.compress(press);
      expect(doc.stats.kvBudgetedBytes, name).toBeLessThan(doc.stats.kvBudgetedFullBytes);
      const held = doc.stats.kvBytes;
      for (const q of qs) {
        const s = doc.fork();
        await s.append(q);
        const got = await greedy(s, 6);
        const fresh = model.generate([...ctx, ...q], { maxTokens: 6, temperature: 0, press, compressPrefix: ctx.length });
        await fresh.complete();
        expect(got, name).toEqual(fresh.tokens);
        s.dispose();
      }
      // The forks never touched the document's cache.
      expect(doc.stats.kvBytes).toBe(held);
      expect(doc.tokens).toEqual(ctx);
    }
  });

  it('a fork answers exactly like a fresh sequence compressed the same way, and forks are independent', async () => {
    const press = createPress('snapkv', { budget: 40 }, model.config)!;
    const doc = await model.createSequence({ kvDtype: 'q8' });
    await doc.prefill(ctx);
    // A fork of the plain prefill can be compressed on its own; the document stays full.
    const early = doc.fork();
    await doc.compress(press);
    await early.compress(press);
    const fresh = await model.createSequence({ kvDtype: 'q8' });
    await fresh.prefill(ctx, { press });
    expect(doc.lengths()).toEqual(fresh.lengths());
    expect(early.lengths()).toEqual(fresh.lengths());
    const a = doc.fork(), b = doc.fork();
    await a.append(question);
    await b.append(question);
    await fresh.append(question);
    const ta = await greedy(a, 8);
    expect(ta).toEqual(await greedy(fresh, 8));
    // `a` went on generating; `b`, forked before that, still answers the same.
    await greedy(a, 4);
    expect(await greedy(b, 8)).toEqual(ta);
    await early.append(question);
    expect(await greedy(early, 8)).toEqual(ta);
  });

  it('compress needs a plain prefill just before it; a disposed sequence refuses every call', async () => {
    const s = await model.createSequence();
    await expectRejects(s.compress(createPress('snapkv', { budget: 16 }, model.config)!), 'state', 'plain prefill');
    await s.prefill(ctx, { press: createPress('snapkv', { budget: 16 }, model.config) });
    await expectRejects(s.compress(createPress('snapkv', { budget: 16 }, model.config)!), 'state', 'plain prefill');
    s.dispose();
    expect(() => s.fork()).toThrow(/disposed/);
    await expectRejects(s.append(question), 'state', 'disposed');
  });

  for (const dtype of KV_DTYPES) {
    it(`${dtype}: save → load → continue gives the tokens of never saving (full, snapkv, cokv; before and after a generation)`, async () => {
      for (const [name, press] of presses()) {
        const s = await model.createSequence({ kvDtype: dtype });
        await s.prefill([...ctx, ...question], { press });
        const file = path.join(dir, `${dtype}-${name}.kvc`);
        await s.save(file);
        const want = await greedy(s.fork(), 10);
        const loaded = await Sequence.load(model, file, { kvDtype: dtype });
        expect(loaded.kvDtype).toBe(dtype);
        expect(loaded.lengths()).toEqual(s.lengths());
        expect(loaded.stats.kvBytes).toBe(s.stats.kvBytes);
        expect(await greedy(loaded, 10), `${dtype} ${name}`).toEqual(want);
        // Saved mid-conversation (a generated token still pending): the loaded copy goes on like the original.
        const first = await greedy(s, 4);
        expect(first).toEqual(want.slice(0, 4));
        await s.save(file);
        const again = await Sequence.load(model, file);
        expect(again.stats.pendingTokens).toBe(1);
        expect(await greedy(again, 6)).toEqual(want.slice(4));
      }
    });
  }

  it('a sequence saved after a plain prefill loads compressible: load → compress equals compress of the original (every dtype, snapkv and cokv)', async () => {
    for (const dtype of KV_DTYPES) {
      const s = await model.createSequence({ kvDtype: dtype });
      await s.prefill(ctx);
      const file = path.join(dir, `plain-${dtype}.kvc`);
      await s.save(file);
      for (const [name, press] of presses().filter(([, p]) => p !== undefined)) {
        const a = s.fork();
        await a.compress(press!);
        const b = await Sequence.load(model, file, { kvDtype: dtype });
        await b.compress(press!);
        expect(b.lengths(), `${dtype} ${name}`).toEqual(a.lengths());
        for (let l = 0; l < model.config.numLayers; l++) {
          for (let g = 0; g < model.config.numKvHeads; g++) expect(b.headPositions(l, g)).toEqual(a.headPositions(l, g));
        }
        expect(b.stats.kvBytes).toBe(a.stats.kvBytes);
        await a.append(question);
        await b.append(question);
        expect(b.logits, `${dtype} ${name}`).toEqual(a.logits);
        expect(await greedy(b, 8)).toEqual(await greedy(a, 8));
      }
    }
  });

  it('scoreContinuation on a compressed fork equals CokvModel.scoreContinuation prefilling with that press', async () => {
    const cont = question.slice(0, 12);
    const press = createPress('snapkv', { budget: 48 }, model.config)!;
    const doc = await model.createSequence();
    await doc.prefill(ctx);
    const s = doc.fork();
    await s.compress(press);
    const got = await s.scoreContinuation(cont);
    const want = model.scoreContinuation(ctx, cont, { press });
    expect(got.logProbs).toEqual(want.logProbs);
    expect(got.mean).toBe(want.mean);
    expect(s.position).toBe(ctx.length + cont.length - 1);
    await expectRejects(s.scoreContinuation([]), 'prompt', 'empty');
    doc.dispose();
    s.dispose();
  });

  it('a version 1 file (no window queries) still loads and continues; compressing it is refused in one line', async () => {
    const s = await model.createSequence();
    await s.prefill(ctx, { press: createPress('snapkv', { budget: 32 }, model.config) });
    const file = path.join(dir, 'v2.kvc');
    await s.save(file);
    const bytes = fs.readFileSync(file);
    expect(bytes.readUInt32LE(8)).toBe(2);
    // A press prefill keeps no window queries, so its body is what version 1 wrote: rewrite the version and digest.
    const v1 = Buffer.from(bytes);
    v1.writeUInt32LE(1, 8);
    createHash('sha256').update(v1.subarray(0, v1.length - 32)).digest().copy(v1, v1.length - 32);
    const old = path.join(dir, 'v1.kvc');
    fs.writeFileSync(old, v1);
    const loaded = await Sequence.load(model, old);
    expect(loaded.lengths()).toEqual(s.lengths());
    expect(await greedy(loaded, 6)).toEqual(await greedy(s.fork(), 6));
    await expectRejects((await Sequence.load(model, old)).compress(createPress('snapkv', { budget: 16 }, model.config)), 'state', 'plain prefill');
    const v9 = Buffer.from(bytes);
    v9.writeUInt32LE(9, 8);
    fs.writeFileSync(old, v9);
    await expectRejects(Sequence.load(model, old), 'format', 'version 9', 'versions 1 and 2');
  });

  it('load refuses another model (shape or weights), another dtype, and truncated or corrupt files, in one line naming the file', async () => {
    const s = await model.createSequence();
    await s.prefill(ctx, { press: createPress('snapkv', { budget: 32 }, model.config) });
    const file = path.join(dir, 'good.kvc');
    await s.save(file);
    const bytes = fs.readFileSync(file);

    const stories = await loadModel(asset('models/stories260K'));
    await expectRejects(Sequence.load(stories, file), 'model', file, 'saved for another model');
    // Same shape, other weight bytes (the Q8_0 GGUF of this model): refused by the weights hash.
    const q8gguf = await loadModel(asset('models/cokv-retrieval-tiny/cokv-retrieval-tiny-q8_0.gguf'));
    await expectRejects(Sequence.load(q8gguf, file), 'model', file, 'other weights');
    // Sequences default to F16 storage.
    await expectRejects(Sequence.load(model, file, { kvDtype: 'f32' }), 'model', file, 'holds a f16 cache, f32 was asked');

    const cut = path.join(dir, 'cut.kvc');
    fs.writeFileSync(cut, bytes.subarray(0, bytes.length - 1000));
    await expectRejects(Sequence.load(model, cut), 'format', cut, 'truncated');
    fs.writeFileSync(cut, bytes.subarray(0, 20));
    await expectRejects(Sequence.load(model, cut), 'format', cut, 'truncated');
    const flipped = Buffer.from(bytes);
    flipped[bytes.length - 5000] ^= 0x10;
    const bad = path.join(dir, 'bad.kvc');
    fs.writeFileSync(bad, flipped);
    await expectRejects(Sequence.load(model, bad), 'format', bad, 'checksum mismatch');
    const notOurs = path.join(dir, 'not.kvc');
    fs.writeFileSync(notOurs, 'hello world, this is not a cache file at all');
    await expectRejects(Sequence.load(model, notOurs), 'format', notOurs, 'not a cokv saved cache');
    await expectRejects(Sequence.load(model, path.join(dir, 'absent.kvc')), 'file', 'absent.kvc', 'no such file');
  });

  it('an AbortSignal cancels prefill between layers and generation between tokens', async () => {
    const long = Array.from({ length: 1500 }, (_, i) => ctx[i % ctx.length]);
    const s = await model.createSequence();
    const before = new AbortController();
    before.abort();
    await expectRejects(s.prefill(long, { signal: before.signal }), 'aborted', 'prefill: aborted');
    expect(s.position).toBe(0); // refused before any work: still usable
    const mid = new AbortController();
    setTimeout(() => mid.abort(), 5);
    const t0 = performance.now();
    await expectRejects(s.prefill(long, { signal: mid.signal }), 'aborted', 'prefill: aborted');
    expect(performance.now() - t0).toBeLessThan(150);
    await expectRejects(s.append(question), 'state', 'aborted prefill');

    const g2 = await model.createSequence();
    await g2.prefill(ctx);
    const stop = new AbortController();
    const gen = g2.generate({ maxTokens: 50, temperature: 0, signal: stop.signal });
    let n = 0;
    await expectRejects((async () => {
      for await (const _ of gen) if (++n === 3) stop.abort();
    })(), 'aborted', 'generate: aborted');
    expect(n).toBe(3);
    // The sequence holds the 3 tokens and can go on.
    expect(g2.position).toBe(ctx.length + 3);
    expect((await greedy(g2, 2)).length).toBe(2);
    // CokvModel.generate takes the signal too.
    const cancelled = new AbortController();
    cancelled.abort();
    await expectRejects(model.generate(ctx, { maxTokens: 4, signal: cancelled.signal }).complete(), 'aborted');
  });

  it('a sequence refuses fork/compress/save while its own prefill is running; prefills queued on it run in order', async () => {
    const long = Array.from({ length: 1500 }, (_, i) => ctx[i % ctx.length]);
    const s = await model.createSequence();
    const running = s.prefill(long);
    await new Promise((r) => setTimeout(r, 5));
    expect(() => s.fork()).toThrow(/a prefill is running/);
    await expectRejects(s.save(path.join(dir, 'busy.kvc')), 'state', 'a prefill is running');
    const next = s.append(question); // queued behind the running one
    await running;
    await next;
    expect(s.tokens).toEqual([...long, ...question]);
    const ref = await model.createSequence();
    await ref.prefill(long);
    await ref.append(question);
    expect(await greedy(s, 4)).toEqual(await greedy(ref, 4));
  });

  // The < 50 ms target is a speed claim measured on an idle machine (README); a timed test on a shared CI core
  // would be flaky, so the test checks the structure: the prefill gives the event loop many turns and never one
  // stretch longer than a quarter of the whole prefill.
  it('the event loop stays responsive during a 1500-token prefill (many timer turns, no long blocking stretch)', async () => {
    const long = Array.from({ length: 1500 }, (_, i) => ctx[i % ctx.length]);
    const s = await model.createSequence();
    let last = performance.now(), worst = 0, ticks = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
      ticks++;
    }, 5);
    const t0 = performance.now();
    await s.prefill(long);
    const ms = performance.now() - t0;
    clearInterval(timer);
    worst = Math.max(worst, performance.now() - last);
    expect(s.position).toBe(1500);
    expect(ticks, `${ticks} timer turns over a ${ms.toFixed(0)} ms prefill`).toBeGreaterThanOrEqual(Math.min(10, Math.floor(ms / 40)));
    expect(worst, `worst timer gap ${worst.toFixed(1)} ms over a ${ms.toFixed(0)} ms prefill`).toBeLessThan(Math.max(50, ms / 4));
  });

  it('two sequences prefill and generate concurrently with the results of running alone', async () => {
    const qs = items(2).map((x) => model.encode(x.context));
    const alone = [];
    for (const q of qs) {
      const s = await model.createSequence();
      await s.prefill(q);
      alone.push(await greedy(s, 6));
    }
    const both = await Promise.all(qs.map(async (q) => {
      const s = await model.createSequence();
      await s.prefill(q);
      return greedy(s, 6);
    }));
    expect(both).toEqual(alone);
  });

  it('cokv generate --save-cache then --load-cache continues like one run', async () => {
    const m = asset('models/cokv-retrieval-tiny');
    const file = path.join(dir, 'cli.kvc');
    const it0 = items(1)[0];
    const saved = cokv('generate', '--model', m, '--prompt', it0.context, '--max-tokens', '0', '--press', 'snapkv', '--budget', '48', '--save-cache', file);
    expect(saved.code, saved.stderr).toBe(0);
    expect(fs.existsSync(file)).toBe(true);
    const loaded = cokv('generate', '--model', m, '--load-cache', file, '--prompt', `\n${it0.input}`, '--max-tokens', '6', '--json');
    expect(loaded.code, loaded.stderr).toBe(0);
    const fresh = model.generate([...ctx, ...question], { maxTokens: 6, temperature: 0, press: createPress('snapkv', { budget: 48 }, model.config), compressPrefix: ctx.length });
    await fresh.complete();
    expect((JSON.parse(loaded.stdout) as { tokens: number[] }).tokens).toEqual(fresh.tokens);
    const wrong = cokv('generate', '--model', m, '--load-cache', file, '--prompt', 'x', '--kv-dtype', 'q8');
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('holds a f16 cache'); // the default storage
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
    // That file is compressed: a press cannot score it again (no window queries left).
    const pressed = cokv('generate', '--model', m, '--load-cache', file, '--prompt', 'x', '--press', 'snapkv', '--budget', '16');
    expect(pressed.code).toBe(1);
    expect(pressed.stderr.trim()).toBe(`cokv: --press: cannot compress ${file}: it is compressed already, and a compressed cache keeps no window queries (save it with --save-cache and no --press, then compress it with --load-cache --press)`);

    // Saved right after a plain prefill, then loaded and compressed: the tokens of compressing after a fresh
    // prefill, and (saved again after the question) the same cache, byte for byte.
    const full = path.join(dir, 'cli-full.kvc');
    const plain = cokv('generate', '--model', m, '--prompt', it0.context, '--max-tokens', '0', '--save-cache', full);
    expect(plain.code, plain.stderr).toBe(0);
    const after = path.join(dir, 'cli-after.kvc');
    const compressed = cokv('generate', '--model', m, '--load-cache', full, '--press', 'snapkv', '--budget', '48', '--prompt', `\n${it0.input}`, '--max-tokens', '6', '--json', '--save-cache', after);
    expect(compressed.code, compressed.stderr).toBe(0);
    const out = JSON.parse(compressed.stdout) as { tokens: number[]; stats: { promptKvBytes: number; promptFullKvBytes: number } };
    expect(out.tokens).toEqual(fresh.tokens);
    expect(out.stats.promptKvBytes).toBeLessThan(out.stats.promptFullKvBytes);
    const ref = await model.createSequence();
    await ref.prefill(ctx);
    await ref.compress(createPress('snapkv', { budget: 48 }, model.config));
    await ref.append(question);
    const refFile = path.join(dir, 'ref-after.kvc');
    await ref.save(refFile);
    expect(fs.readFileSync(after).equals(fs.readFileSync(refFile))).toBe(true);
    ref.dispose();

    const longWindow = cokv('generate', '--model', m, '--load-cache', full, '--press', 'snapkv', '--budget', '128', '--window', '100', '--prompt', 'x');
    expect(longWindow.code).toBe(1);
    expect(longWindow.stderr.trim()).toBe(`cokv: --window: 100 is longer than the 64 window queries ${full} keeps`);
    const evict = cokv('generate', '--model', m, '--load-cache', full, '--press', 'snapkv', '--budget', '48', '--prefill-evict', '--prompt', 'x');
    expect(evict.code).toBe(1);
    expect(evict.stderr.trim()).toBe('cokv: --prefill-evict: not with --load-cache (the loaded cache is prefilled already; --press compresses it as it was saved)');
    // A version 1 file keeps no window queries whatever it holds (rewritten from the compressed one, as above).
    const v1 = Buffer.from(fs.readFileSync(file));
    v1.writeUInt32LE(1, 8);
    createHash('sha256').update(v1.subarray(0, v1.length - 32)).digest().copy(v1, v1.length - 32);
    const old = path.join(dir, 'cli-v1.kvc');
    fs.writeFileSync(old, v1);
    const oldPressed = cokv('generate', '--model', m, '--load-cache', old, '--prompt', 'x', '--press', 'snapkv', '--budget', '16');
    expect(oldPressed.code).toBe(1);
    expect(oldPressed.stderr.trim()).toBe(`cokv: --press: cannot compress ${old}: its format (version 1) keeps no window queries (save it with --save-cache and no --press, then compress it with --load-cache --press)`);
  });

  it('compress refuses a press whose window is longer than the queries kept, in one line', async () => {
    const s = await model.createSequence({ windowRows: 16 });
    await s.prefill(ctx);
    await expectRejects(s.compress(createPress('snapkv', { budget: 48, window: 32 }, model.config)), 'flag', "compress: the press's window 32 is longer than the 16 window queries kept");
    await s.compress(createPress('snapkv', { budget: 48, window: 16 }, model.config));
    expect(s.stats.kvBudgetedBytes).toBeLessThan(s.stats.kvBudgetedFullBytes);
    s.dispose();
  });
});
