/**
 * Issue 17 item 5: a model in a worker thread (loadModelWorker → RemoteModel). The worker answers exactly as the
 * in-process model; the calling thread's event loop stays free during a long prefill; an AbortSignal stops a
 * prefill within a few layer steps and a generation within one token; dispose() ends the worker; presses cross as
 * descriptors; errors arrive as the same CokvError. Every check is structural (counts, order), never a wall time.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { CokvError } from '../src/errors.js';
import { createPress } from '../src/press/registry.js';
import { Sequence } from '../src/session/sequence.js';
import { loadModelWorker, workerExecArgv, type RemoteModel } from '../src/session/remote-model.js';
import { asset, haveAssets, tmpDir } from './helpers.js';

const stories = asset('models/stories260K');
const retrieval = asset('models/cokv-retrieval-tiny');

async function rejection(p: Promise<unknown>): Promise<CokvError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e, 'expected a CokvError').toBeInstanceOf(CokvError);
  return e as CokvError;
}

/** A long retrieval-style prompt (about 1800 tokens by default). */
function longContext(n = 60): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`The grass is green and the sky is blue; line ${i} of the story goes on and on.`);
  return `${lines.join(' ')}\nThe pass key is`;
}

describe('workerExecArgv', () => {
  it('keeps the parent\'s Node options but those of a main script given as code', () => {
    expect(workerExecArgv(['--import', 'tsx', '--enable-source-maps'])).toEqual(['--import', 'tsx', '--enable-source-maps']);
    expect(workerExecArgv(['--input-type=module', '-e', 'code', '--max-old-space-size=100'])).toEqual(['--max-old-space-size=100']);
    expect(workerExecArgv(['--input-type', 'module', '--eval', 'code', '-p', 'x', '--print', 'y'])).toEqual([]);
  });
});

describe.skipIf(!haveAssets)('RemoteModel (a model in a worker thread)', () => {
  let local: CokvModel;
  let remote: RemoteModel;
  let localR: CokvModel;
  let remoteR: RemoteModel;

  beforeAll(async () => {
    [local, remote, localR, remoteR] = await Promise.all([loadModel(stories), loadModelWorker(stories), loadModel(retrieval), loadModelWorker(retrieval)]);
  });
  afterAll(async () => {
    await Promise.all([remote?.dispose(), remoteR?.dispose()]);
  });

  it('generates the in-process tokens, text and stats shape on both bundled models (greedy, sampled, with a press)', async () => {
    const gen = remote.generate('Once upon a time', { maxTokens: 30, temperature: 0 });
    const chunks: number[] = [];
    for await (const c of gen) if (c.token >= 0) chunks.push(c.token);
    expect(gen.text.startsWith(', there was a little girl named Lily.')).toBe(true);
    const want = local.generate('Once upon a time', { maxTokens: 30, temperature: 0 });
    await want.complete();
    expect(gen.tokens).toEqual(want.tokens);
    expect(chunks).toEqual(want.tokens);
    expect(gen.text).toBe(want.text);
    expect(Object.keys(gen.stats!).sort()).toEqual(Object.keys(want.stats!).sort());
    const { prefillMs: _a, decodeMs: _b, decodeTokensPerSecond: _c, peakRssBytes: _d, ...same } = gen.stats!;
    const { prefillMs: _e, decodeMs: _f, decodeTokensPerSecond: _g, peakRssBytes: _h, ...sameWant } = want.stats!;
    expect(same).toEqual(sameWant);

    const sampled = { maxTokens: 20, temperature: 0.9, topP: 0.9, seed: 7 };
    const a = remote.generate('The dog', sampled);
    const b = local.generate('The dog', sampled);
    expect(await a.complete()).toBe(await b.complete());
    expect(a.tokens).toEqual(b.tokens);

    const prompt = longContext(20);
    const options = { budget: 24 };
    const r = remoteR.generate(prompt, { maxTokens: 16, temperature: 0, press: { name: 'snapkv', options } });
    const l = localR.generate(prompt, { maxTokens: 16, temperature: 0, press: createPress('snapkv', options, localR.config) });
    await Promise.all([r.complete(), l.complete()]);
    expect(r.tokens).toEqual(l.tokens);
    expect(r.stats!.promptKvBytes).toBe(l.stats!.promptKvBytes);
    expect(r.stats!.promptKvBytes).toBeLessThan(r.stats!.promptFullKvBytes);
    expect(await remoteR.encode('is 58213')).toEqual(localR.encode('is 58213'));
    expect(await remoteR.decode(localR.encode('is 58213', false))).toBe(localR.decode(localR.encode('is 58213', false)));
    expect(remoteR.config).toEqual(localR.config);
    expect(remoteR.eosIds).toEqual(localR.eosIds);
  });

  it('sequences: prefill, compress and fork through descriptors answer as in-process ones; save / load cross over', async () => {
    const context = longContext(12);
    const questions = ['\nThe grass is', '\nThe sky is'];
    const rdoc = await remoteR.createSequence();
    await rdoc.prefill(context);
    await rdoc.compress({ name: 'pyramidkv', options: { budget: 20 } });
    const ldoc = await localR.createSequence();
    await ldoc.prefill(context);
    await ldoc.compress(createPress('pyramidkv', { budget: 20 }, localR.config));
    expect(await rdoc.lengths()).toEqual(ldoc.lengths());
    expect(rdoc.tokens).toEqual(ldoc.tokens);
    const { prefillMs: _p, ...rs } = rdoc.stats;
    const { prefillMs: _q, ...ls } = ldoc.stats;
    expect(rs).toEqual(ls);
    for (const q of questions) {
      const rf = await rdoc.fork();
      const lf = ldoc.fork();
      await rf.append(localR.encode(q, false));
      await lf.append(localR.encode(q, false));
      const rg = rf.generate({ maxTokens: 8, temperature: 0 });
      const lg = lf.generate({ maxTokens: 8, temperature: 0 });
      expect(await rg.complete()).toBe(await lg.complete());
      expect(rg.tokens).toEqual(lg.tokens);
      // The mirror follows the generation: the sequence is left extended by what was generated.
      expect(rf.tokens).toEqual(lf.tokens);
      expect(rf.stats.tokens).toBe(lf.stats.tokens);
      rf.dispose();
      lf.dispose();
    }
    // The parent is untouched by its forks.
    expect(rdoc.tokens).toEqual(ldoc.tokens);

    const dir = tmpDir();
    const file = path.join(dir, 'doc.cokv');
    await rdoc.save(file);
    const back = await remoteR.loadSequence(file);
    const inProcess = await Sequence.load(localR, file);
    expect(back.tokens).toEqual(rdoc.tokens);
    const a = back.generate({ maxTokens: 6, temperature: 0 });
    const b = inProcess.generate({ maxTokens: 6, temperature: 0 });
    const c = ldoc.generate({ maxTokens: 6, temperature: 0 });
    await Promise.all([a.complete(), b.complete(), c.complete()]);
    expect(a.tokens).toEqual(c.tokens);
    expect(b.tokens).toEqual(c.tokens);
    fs.writeFileSync(file, 'not a cache');
    const bad = await rejection(remoteR.loadSequence(file));
    const badLocal = await rejection(Sequence.load(localR, file));
    expect(bad.message).toBe(badLocal.message);
    fs.rmSync(dir, { recursive: true, force: true });
    rdoc.dispose();
    back.dispose();
  });

  it('scoreContinuation, headPositions, logits, shift, newlineIds, maxPromptChars and chat messages equal the in-process ones', async () => {
    const prompt = localR.promptIds(longContext(12));
    const continuation = localR.encode(' 4417. The grass is green', false);
    expect(continuation.length).toBeGreaterThan(2);
    const opts = { press: { name: 'snapkv', options: { budget: 20 } }, compressPrefix: prompt.length - 8, kvDtype: 'q8' as const };
    const want = localR.scoreContinuation(prompt, continuation, { ...opts, press: createPress('snapkv', { budget: 20 }, localR.config) });
    expect(await remoteR.scoreContinuation(prompt, continuation, opts)).toEqual(want);
    expect(want.kvBytes).toBeLessThan(want.kvFullBytes);
    const evict = { press: { name: 'snapkv', options: { budget: 16, window: 8 } }, prefillEvict: true };
    const wantEvict = localR.scoreContinuation(prompt, continuation, { ...evict, press: createPress('snapkv', { budget: 16, window: 8 }, localR.config) });
    expect(await remoteR.scoreContinuation(prompt, continuation, evict)).toEqual(wantEvict);
    expect((await rejection(remoteR.scoreContinuation(prompt, []))).message).toBe('scoreContinuation: the continuation is empty');

    const rs = await remoteR.createSequence();
    const ls = await localR.createSequence();
    expect(await rs.logits()).toBeUndefined();
    await rs.prefill(prompt);
    await ls.prefill(prompt);
    expect(await rs.logits()).toEqual(ls.logits);
    await rs.compress({ name: 'adakv', options: { budget: 16 } });
    await ls.compress(createPress('adakv', { budget: 16 }, localR.config));
    const heads = localR.config.numKvHeads;
    let evicted = 0;
    for (let l = 0; l < localR.config.numLayers; l++) {
      for (let h = 0; h < heads; h++) {
        const got = await rs.headPositions(l, h);
        expect(got).toBeInstanceOf(Int32Array);
        expect(got).toEqual(ls.headPositions(l, h));
        evicted += prompt.length - got.length;
      }
    }
    expect(evicted).toBeGreaterThan(0); // the compared positions are a compressed cache's, not 0..n-1 everywhere
    // Boundaries reach a protecting press in the worker as in process.
    const [rb, lb] = [await remoteR.createSequence(), await localR.createSequence()];
    await rb.prefill(prompt);
    await lb.prefill(prompt);
    const boundaries = [0, 40, 90, 150, 210];
    const unprotected = lb.fork();
    const protecting = { budget: 64, protect: 0.5 };
    await rb.compress({ name: 'boundary-snapkv', options: protecting }, { boundaries });
    await lb.compress(createPress('boundary-snapkv', protecting, localR.config), { boundaries });
    await unprotected.compress(createPress('boundary-snapkv', protecting, localR.config));
    let differs = false;
    for (let l = 0; l < localR.config.numLayers; l++) {
      for (let h = 0; h < heads; h++) {
        expect(await rb.headPositions(l, h)).toEqual(lb.headPositions(l, h));
        if (lb.headPositions(l, h).join() !== unprotected.headPositions(l, h).join()) differs = true;
      }
    }
    expect(differs).toBe(true); // the boundaries changed what was kept, so the comparison sees them
    for (const q of [rb, lb, unprotected]) q.dispose();
    const seqScore = await rs.scoreContinuation(continuation);
    expect(seqScore).toEqual(await ls.scoreContinuation(continuation));
    // Left extended by the scored tokens (all but the last, which no pass has seen), as in process.
    expect(rs.tokens).toEqual(ls.tokens);
    expect(rs.tokens).toHaveLength(prompt.length + continuation.length - 1);
    expect(await rs.logits()).toEqual(ls.logits);
    const rg = rs.generate({ maxTokens: 4, temperature: 0 });
    const lg = ls.generate({ maxTokens: 4, temperature: 0 });
    await Promise.all([rg.complete(), lg.complete()]);
    expect(rg.tokens).toEqual(lg.tokens);
    // A context shift: the same tokens and positions, and the same answer after it.
    await rs.shift(3, 40);
    await ls.shift(3, 40);
    expect(rs.tokens).toEqual(ls.tokens);
    expect(rs.stats.tokens).toBe(ls.position);
    expect(await rs.headPositions(0, 0)).toEqual(ls.headPositions(0, 0));
    const ra = rs.generate({ maxTokens: 4, temperature: 0 });
    const la = ls.generate({ maxTokens: 4, temperature: 0 });
    await Promise.all([ra.complete(), la.complete()]);
    expect(ra.tokens).toEqual(la.tokens);
    expect(rs.tokens).toEqual(ls.tokens);
    expect((await rejection(rs.shift(5, 5))).message).toBe(`context shift: shift [5, 5) is not a non-empty range of the ${ls.position - 1} positions processed`);
    rs.dispose();
    ls.dispose();

    expect(await remote.newlineIds()).toEqual(local.newlineIds());
    expect((await remote.newlineIds()).length).toBeGreaterThan(0);
    expect(await remote.maxPromptChars()).toBe(local.maxPromptChars());

    const template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
    const rchat = await remoteR.createChatSession({ template, system: 'Be brief.' });
    const lchat = await localR.createChatSession({ template, system: 'Be brief.' });
    expect(rchat.model).toBe(remoteR);
    await Promise.all([rchat.prompt('The sky is', { maxTokens: 3, temperature: 0 }).complete(), lchat.prompt('The sky is', { maxTokens: 3, temperature: 0 }).complete()]);
    expect(await rchat.messages('And?')).toEqual(lchat.messages('And?'));
    expect(await rchat.messages()).toEqual(lchat.messages());
    expect((await rchat.messages()).map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
    rchat.dispose();
    lchat.dispose();
  });

  it('a chat session in the worker answers, keeps its history and stats, saves and loads as an in-process one', async () => {
    const template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
    const rchat = await remoteR.createChatSession({ template, system: 'Answer briefly.', press: { name: 'snapkv', options: { budget: 32 } } });
    const lchat = await localR.createChatSession({ template, system: 'Answer briefly.', press: createPress('snapkv', { budget: 32 }, localR.config) });
    const qs = ['The grass is green. The sky is blue. The pass key is 4417.', 'What is the pass key? The pass key is'];
    for (const q of qs) {
      const a = rchat.prompt(q, { maxTokens: 8, temperature: 0 });
      const b = lchat.prompt(q, { maxTokens: 8, temperature: 0 });
      expect(await a.complete()).toBe(await b.complete());
      expect(a.tokens).toEqual(b.tokens);
      expect(rchat.turns).toEqual(lchat.turns);
      expect(rchat.stats).toEqual(lchat.stats);
    }
    expect(await rchat.render('And the sky?')).toBe(lchat.render('And the sky?'));
    const dir = tmpDir();
    const file = path.join(dir, 'chat.json');
    await rchat.save(file);
    const again = await remoteR.loadChatSession(file, { press: { name: 'snapkv', options: { budget: 32 } } });
    const a = again.prompt('And the sky?', { maxTokens: 8, temperature: 0 });
    const b = lchat.prompt('And the sky?', { maxTokens: 8, temperature: 0 });
    expect(await a.complete()).toBe(await b.complete());
    expect(again.turns).toEqual(lchat.turns);
    // A cancelled answer stays in the history as far as it got, as in process.
    const ac = new AbortController();
    const cut = again.prompt('Say more.', { maxTokens: 8, temperature: 0, signal: ac.signal });
    const err = await (async () => { for await (const _ of cut) ac.abort(); })().then(() => undefined, (e: unknown) => e);
    expect((err as CokvError).message).toBe('generate: aborted');
    expect(again.turns.at(-1)).toMatchObject({ user: 'Say more.', cancelled: true });
    await again.reset();
    expect(again.turns).toEqual([]);
    expect(again.stats.turns).toBe(0);
    again.dispose();
    rchat.dispose();
    expect(() => rchat.prompt('x')).toThrow(/chat session: it was disposed/);
    lchat.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a 1 ms timer keeps firing during a remote prefill of a long prompt; the in-process synchronous prefill blocks it', async () => {
    const ids = localR.promptIds(longContext());
    expect(ids.length).toBeGreaterThan(1000);
    const ticking = async (run: () => Promise<unknown> | unknown): Promise<number> => {
      let ticks = 0;
      const t = setInterval(() => { ticks++; }, 1);
      try {
        await run();
      } finally {
        clearInterval(t);
      }
      return ticks;
    };
    let steps = 0;
    const seq = await remoteR.createSequence();
    const remoteTicks = await ticking(() => seq.prefill(ids, { onProgress: (p) => { steps = p.steps; } }));
    const blockedTicks = await ticking(() => { localR.prefill(ids, localR.newCache(ids.length)); });
    expect(blockedTicks).toBe(0);
    // Hundreds of layer steps ran in the worker while this thread's timer kept running.
    expect(steps).toBeGreaterThan(50);
    expect(remoteTicks).toBeGreaterThan(3);
    seq.dispose();
  });

  it('an AbortSignal stops a prefill within a few layer steps and a generation within one token', async () => {
    const ids = localR.promptIds(longContext());
    const full = await remoteR.createSequence();
    let fullSteps = 0;
    await full.prefill(ids, { onProgress: (p) => { fullSteps = p.steps; } });
    full.dispose();

    const seq = await remoteR.createSequence();
    const ac = new AbortController();
    let seen = 0;
    const err = await rejection(seq.prefill(ids, { signal: ac.signal, onProgress: (p) => { seen = p.steps; ac.abort(); } }));
    expect(err.kind).toBe('aborted');
    expect(err.message).toBe('prefill: aborted');
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThan(fullSteps / 4);
    // The cancelled prefill left this sequence incomplete (as in process); the model goes on.
    expect(() => seq.stats).toThrow(/aborted prefill left it incomplete/);
    seq.dispose();

    // A progress callback that throws cancels the prefill with its error.
    const thrower = await remoteR.createSequence();
    let calls = 0;
    const boom = await thrower.prefill(ids, { onProgress: () => { calls++; throw new Error('enough'); } }).then(() => undefined, (e: unknown) => e);
    expect((boom as Error).message).toBe('enough');
    expect(() => thrower.stats).toThrow(/aborted prefill left it incomplete/);
    expect(calls).toBe(1);
    thrower.dispose();

    const pre = await remoteR.createSequence();
    const fired = new AbortController();
    fired.abort();
    let any = 0;
    expect((await rejection(pre.prefill(ids, { signal: fired.signal, onProgress: () => { any++; } }))).message).toBe('prefill: aborted');
    expect(any).toBe(0);
    pre.dispose();

    const gac = new AbortController();
    const gen = remote.generate('Once upon a time', { maxTokens: 30, temperature: 0, signal: gac.signal });
    const gerr = await (async () => {
      for await (const _ of gen) gac.abort();
    })().then(() => undefined, (e: unknown) => e);
    expect(gerr).toBeInstanceOf(CokvError);
    expect((gerr as CokvError).message).toBe('generate: aborted');
    expect(gen.stats?.stopReason).toBe('cancelled');
    expect(gen.stats?.generatedTokens).toBe(1);

    // Breaking out of the stream ends the worker's generation too, with stats for what ran.
    const brk = remote.generate('Once upon a time', { maxTokens: 30, temperature: 0 });
    let n = 0;
    for await (const _ of brk) if (++n === 3) break;
    expect(brk.stats?.stopReason).toBe('cancelled');
    expect(brk.stats?.generatedTokens).toBe(3);
    expect(brk.tokens).toHaveLength(3);
    expect(await remote.generate('Once upon a time', { maxTokens: 5, temperature: 0 }).complete()).toBe(', there was a little');
  });

  it('errors from the worker arrive as the same one-line CokvError', async () => {
    const same = async (p: Promise<unknown>, fn: () => unknown): Promise<void> => {
      const e = await rejection(p);
      let want: unknown;
      try {
        await fn();
      } catch (x) {
        want = x;
      }
      expect(want).toBeInstanceOf(CokvError);
      expect(e.message).toBe((want as CokvError).message);
      expect(e.kind).toBe((want as CokvError).kind);
      expect(e.message).not.toContain('\n');
    };
    await same(remote.promptIds(''), () => local.promptIds(''));
    await same(remote.generate('Once', { press: { name: 'snapkvv', options: { budget: 16 } } }).complete(), () => createPress('snapkvv', { budget: 16 }, local.config));
    await same(remote.generate('Once', { press: { name: 'snapkv', options: { budget: 4 } } }).complete(), () => createPress('snapkv', { budget: 4 }, local.config));
    await same(remote.generate('Once', { maxTokens: -1 }).complete(), () => local.generate('Once', { maxTokens: -1 }));
    const s = await remote.createSequence();
    const l = await local.createSequence();
    await same(s.compress({ name: 'snapkv', options: { budget: 16 } }), () => l.compress(createPress('snapkv', { budget: 16 }, local.config)));
    await same(s.prefill([1, 1e6]), () => l.prefill([1, 1e6]));
    s.dispose();
    expect(() => s.stats).toThrow(/sequence: it was disposed/);
    await same(loadModelWorker('no/such/model'), () => loadModel('no/such/model'));
    // The worker is still there after all of these.
    expect(await remote.generate('Once upon a time', { maxTokens: 3, temperature: 0 }).complete()).toBe(', there was');
  });

  it('dispose() ends the worker: a running call and every later call reject with one clear error', async () => {
    const m = await loadModelWorker(retrieval);
    const seq = await m.createSequence();
    const running = seq.prefill(localR.promptIds(longContext()));
    const disposing = m.dispose();
    const e = await rejection(running);
    expect(e.message).toBe('model: it was disposed (its worker has ended: load the model again)');
    await disposing;
    expect(m.disposed).toBe(true);
    expect((await rejection(m.encode('x'))).message).toBe(e.message);
    expect((await rejection(m.createSequence())).message).toBe(e.message);
    expect((await rejection(seq.fork())).message).toBe(e.message);
    expect((await rejection(m.generate('x', { maxTokens: 2 }).complete())).message).toBe(e.message);
    await m.dispose(); // idempotent
    seq.dispose(); // nothing left to free: no error
  });

  it('a worker that dies rejects pending calls with a clear error', async () => {
    const m = await loadModelWorker(retrieval);
    const seq = await m.createSequence();
    const pending = seq.prefill(localR.promptIds(longContext()));
    // No public way to crash it: reach the worker the channel holds.
    const worker = (m as unknown as { channel: { worker: Worker } }).channel.worker;
    void worker.terminate();
    const e = await rejection(pending);
    expect(e.message).toMatch(/^model worker: it exited \(code \d+\) before answering: load the model again$/);
    expect((await rejection(m.encode('x'))).message).toBe(e.message);
    await m.dispose();
  });
});
