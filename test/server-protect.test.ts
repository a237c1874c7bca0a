/**
 * `cokv serve` and boundary protection / the kvpress preset: the per-request `cokv.protect` and `cokv.preset`
 * fields, the `--protect` / `--preset` server defaults, and the prompt boundaries the server gives a protecting
 * press (0 and each chat message's content start). Requests answer as CokvModel.generate does on the same ids with
 * the same press and boundaries.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import type { PressOptions } from '../src/press/options.js';
import { createPress } from '../src/press/registry.js';
import { repoRoot, runAsync, startServe } from './helpers.js';

const llama = path.join(repoRoot, 'test/fixtures/models/llama3-tiny/hf-bf16');
const runCli = path.join(repoRoot, 'src/cli/run.ts');
const children: ChildProcess[] = [];

/** Start `cokv serve … --port 0` and read the address it prints. */
const serve = (...args: string[]): Promise<string> => startServe(args, (c) => children.push(c));

const messages = [
  { role: 'system' as const, content: 'You are a helpful assistant who answers in one short sentence.' },
  { role: 'user' as const, content: 'My dog is called Max and he likes to run in the green park near the river every morning.' },
  { role: 'assistant' as const, content: 'That sounds like a happy dog.' },
  { role: 'user' as const, content: 'What is the name of my dog and where does he run?' },
];
// Long enough (about 150 tokens) that the kvpress preset's window of 64 leaves something to evict.
const story = Array.from({ length: 6 }, (_, i) => `On day ${i + 1} the dog named Max ran in the big green park with his friends.`).join(' ');

interface Stats { press: string; boundaries?: number[]; reusedPromptTokens: number; prompt_kv_bytes: number }
const statsOf = (r: unknown): Stats => (r as { cokv: Stats }).cokv;

describe('cokv serve: boundary protection and the kvpress preset', () => {
  let plain: OpenAI, defaults: OpenAI;
  let plainUrl: string;
  let model: CokvModel;

  beforeAll(async () => {
    let defaultsUrl: string;
    [plainUrl, defaultsUrl, model] = await Promise.all([
      serve('--model', llama, '--model-name', 'llama3-tiny'),
      // Server defaults: a kvpress-preset SnapKV that protects the default share.
      serve('--model', llama, '--model-name', 'llama3-tiny', '--press', 'snapkv', '--ratio', '0.6', '--preset', 'kvpress', '--protect'),
      loadModel(llama),
    ]);
    plain = new OpenAI({ baseURL: plainUrl, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
    defaults = new OpenAI({ baseURL: defaultsUrl, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  }, 120_000);

  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
  });

  const chatIds = async (): Promise<number[]> => model.encode(await model.applyChatTemplate(messages), false);
  const chat = (client: OpenAI, cokv?: Record<string, unknown>, msgs: OpenAI.ChatCompletionMessageParam[] = messages) =>
    client.chat.completions.create({ model: 'llama3-tiny', messages: msgs, max_tokens: 16, temperature: 0, ...(cokv ? { cokv } : {}) } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const complete = (client: OpenAI, cokv?: Record<string, unknown>) =>
    client.completions.create({ model: 'llama3-tiny', prompt: story, max_tokens: 16, temperature: 0, ...(cokv ? { cokv } : {}) } as OpenAI.CompletionCreateParamsNonStreaming);
  const reference = (ids: number[], name: string, o: PressOptions, boundaries?: number[]) =>
    model.generate(ids, { maxTokens: 16, temperature: 0, press: createPress(name, o, model.config), boundaries });

  it('a boundary-snapkv chat request keeps the first tokens of every message\'s content; plain snapkv is unchanged', async () => {
    const ids = await chatIds();
    const press = { press: 'boundary-snapkv', budget: 24, protect: 0.25 };
    const r = await chat(plain, press);
    const b = statsOf(r).boundaries!;
    // 0, then where each message's content starts: the tokens from there decode to that content.
    expect(b).toHaveLength(messages.length + 1);
    expect(b[0]).toBe(0);
    messages.forEach((m, i) => expect(model.decode(ids.slice(b[i + 1])).startsWith(m.content)).toBe(true));
    // The library on the same ids with these boundaries keeps each segment's first tokens in every KV head ...
    const seq = await model.createSequence();
    await seq.prefill(ids, { press: createPress('boundary-snapkv', { budget: 24, protect: 0.25 }, model.config), boundaries: b });
    for (let l = 0; l < model.config.layers.length; l++) {
      for (let h = 0; h < model.config.numKvHeads; h++) {
        const kept = new Set(seq.headPositions(l, h));
        for (const start of b) expect(kept.has(start), `layer ${l} head ${h} position ${start}`).toBe(true);
      }
    }
    seq.dispose();
    // ... and answers as the server did, which without the boundaries (only the prompt's first tokens protected) it does not.
    const want = reference(ids, 'boundary-snapkv', { budget: 24, protect: 0.25 }, b);
    const without = reference(ids, 'boundary-snapkv', { budget: 24, protect: 0.25 });
    expect(r.choices[0].message.content).toBe(await want.complete());
    expect(await without.complete()).not.toBe(want.text);
    expect(r.usage?.prompt_tokens).toBe(ids.length);

    // SnapKV reads no boundaries: the server gives none and answers as before.
    const s = await chat(plain, { press: 'snapkv', budget: 24 });
    expect(statsOf(s).boundaries).toBeUndefined();
    expect(s.choices[0].message.content).toBe(await reference(ids, 'snapkv', { budget: 24 }).complete());
  }, 120_000);

  it('cokv.protect (true = 0.1) and cokv.preset per request; completions protect the prompt\'s start (boundaries [0])', async () => {
    const ids = model.promptIds(story);
    const p = await complete(plain, { press: 'snapkv', budget: 40, protect: true });
    expect(statsOf(p).boundaries).toEqual([0]);
    const protect = reference(ids, 'snapkv', { budget: 40, protect: 0.1 }, [0]);
    expect(p.choices[0].text).toBe(await protect.complete());
    // ... which protecting changes here: without it SnapKV answers otherwise.
    expect(await reference(ids, 'snapkv', { budget: 40 }).complete()).not.toBe(protect.text);
    // The preset: ratio is the fraction removed (0.3 of the prompt goes), avg pooling, kernel 5, window 64.
    expect(ids.length).toBeGreaterThan(130);
    const k = await complete(plain, { press: 'snapkv', ratio: 0.3, preset: 'kvpress' });
    const kv = reference(ids, 'snapkv', { ratio: 0.3, preset: 'kvpress' });
    expect(k.choices[0].text).toBe(await kv.complete());
    expect(statsOf(k).prompt_kv_bytes).toBe(kv.stats!.promptKvBytes);
    const full = model.generate(ids, { maxTokens: 16, temperature: 0 });
    const kept = reference(ids, 'snapkv', { ratio: 0.3 });
    await Promise.all([full.complete(), kept.complete()]);
    // 70% kept, not 30%.
    expect(kv.stats!.promptKvBytes).toBeGreaterThan(kept.stats!.promptKvBytes);
    expect(kv.stats!.promptKvBytes).toBeLessThan(full.stats!.promptKvBytes);
    // protect: false (or 0) turns boundary-snapkv's protection off: plain SnapKV's answer.
    const off = await chat(plain, { press: 'boundary-snapkv', budget: 24, protect: false });
    expect(statsOf(off).boundaries).toBeUndefined();
    expect(off.choices[0].message.content).toBe(await reference(await chatIds(), 'snapkv', { budget: 24 }).complete());
  }, 120_000);

  it('cokv serve --press snapkv --ratio 0.6 --preset kvpress --protect: the defaults of requests, overridable per request', async () => {
    const ids = await chatIds();
    const r = await chat(defaults);
    const b = statsOf(r).boundaries!;
    expect(b).toHaveLength(messages.length + 1);
    const o: PressOptions = { ratio: 0.6, preset: 'kvpress', protect: 0.1 };
    const want = reference(ids, 'snapkv', o, b);
    expect(r.choices[0].message.content).toBe(await want.complete());
    expect(statsOf(r).prompt_kv_bytes).toBe(want.stats!.promptKvBytes);
    // A request's protect replaces the server's.
    const none = await chat(defaults, { protect: 0 });
    expect(statsOf(none).boundaries).toBeUndefined();
    expect(none.choices[0].message.content).toBe(await reference(ids, 'snapkv', { ...o, protect: 0 }).complete());
    expect(none.choices[0].message.content).not.toBe(r.choices[0].message.content);
  }, 120_000);

  it('prefix reuse with a protecting press: the next turn reuses the first (same boundaries inside it)', async () => {
    // An answer that re-encodes to the tokens generated (as most do; a '\ufffd' piece does not), so that the second
    // rendering extends the first turn's sequence.
    const first: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Tell me about a dog.' }];
    const press = { press: 'boundary-snapkv', budget: 24, protect: 0.25 };
    const r1 = await chat(plain, press, first);
    const next: OpenAI.ChatCompletionMessageParam[] = [...first, { role: 'assistant', content: r1.choices[0].message.content }, { role: 'user', content: 'And where does he run?' }];
    const r2 = await chat(plain, press, next);
    expect(statsOf(r2).reusedPromptTokens).toBeGreaterThan(r1.usage!.prompt_tokens - 1);
    // The first turn's boundaries are the second's inside the first prompt.
    const b1 = statsOf(r1).boundaries!, b2 = statsOf(r2).boundaries!;
    expect(b2.filter((b) => b < r1.usage!.prompt_tokens)).toEqual(b1);
    expect(b2.length).toBe(next.length + 1);
  }, 120_000);

  it('bad cokv.protect, cokv.preset and preset-dependent ratios get a 400 naming the field', async () => {
    const post = async (cokv: unknown): Promise<{ status: number; error: { message: string; param: string | null } }> => {
      const r = await fetch(`${plainUrl}/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ prompt: 'Once', max_tokens: 2, cokv }) });
      return { status: r.status, error: ((await r.json()) as { error: { message: string; param: string | null } }).error };
    };
    const cases: [unknown, string, string][] = [
      [{ press: 'snapkv', budget: 24, protect: 1 }, 'cokv.protect', 'cokv.protect: 1 must be a fraction in [0, 1)'],
      [{ press: 'snapkv', budget: 24, protect: -0.1 }, 'cokv.protect', 'cokv.protect: -0.1 must be a fraction in [0, 1)'],
      [{ press: 'snapkv', budget: 24, protect: 'some' }, 'cokv.protect', 'cokv.protect: "some" is not a number (a fraction in [0, 1), or true for 0.1)'],
      [{ press: 'snapkv', budget: 24, preset: 'nope' }, 'cokv.preset', 'cokv.preset: "nope" must be kvpress'],
      [{ press: 'snapkv', budget: 24, preset: 3 }, 'cokv.preset', 'cokv.preset: 3 is not a string'],
      [{ press: 'snapkv', ratio: 0 }, 'cokv.ratio', 'cokv.ratio: 0 must be in (0, 1]'],
      [{ press: 'snapkv', ratio: 1, preset: 'kvpress' }, 'cokv.ratio', 'cokv.ratio: 1 must be in [0, 1) (with preset kvpress it is the fraction removed)'],
    ];
    for (const [cokv, param, message] of cases) {
      const r = await post(cokv);
      expect(r.status, JSON.stringify(cokv)).toBe(400);
      expect(r.error).toMatchObject({ param, message });
    }
    expect((await plain.models.list()).data).toHaveLength(1);
  }, 60_000);

  it('cokv serve --protect 2 and --preset nope are refused in one line before the model loads', async () => {
    for (const [flags, line] of [
      [['--press', 'snapkv', '--budget', '24', '--protect', '2'], 'cokv: --protect: 2 must be a fraction in [0, 1)'],
      [['--press', 'snapkv', '--budget', '24', '--preset', 'nope'], "cokv: --preset: 'nope' must be kvpress"],
    ] as const) {
      const r = await runAsync(process.execPath, ['--import', 'tsx', runCli, 'serve', '--model', 'no-such-model', ...flags, '--port', '0']);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(line);
      expect(r.stdout).toBe('');
    }
  }, 60_000);
});
