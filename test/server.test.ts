/**
 * `cokv serve` end to end: the server runs as a child process on a free loopback port and is driven with the
 * official `openai` client (plain fetch and a raw socket for bodies the client cannot send).
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { createPress } from '../src/press/registry.js';
import { PrefixCache } from '../src/server/server.js';
import { asset, cokv, haveAssets, repoRoot, startServeProcess, type ServeProcess } from './helpers.js';

const stories = asset('models/stories260K');
const llama = path.join(repoRoot, 'test/fixtures/models/llama3-tiny/hf-bf16');
const KEY = 'test-key-123';

const children: ChildProcess[] = [];

/** Start `cokv serve … --port 0` and read the address it prints. */
const serve = (...args: string[]): Promise<ServeProcess> => startServeProcess(args, (c) => children.push(c));

/** Wait (bounded) until the server's log matches `re`. */
async function logLine(s: ServeProcess, re: RegExp): Promise<RegExpExecArray> {
  for (let i = 0; i < 500; i++) {
    const m = re.exec(s.log());
    if (m) return m;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no log line matching ${re} in:\n${s.log()}`);
}

function generateJson(...args: string[]): { text: string; tokens: number[]; stats: { promptTokens: number; generatedTokens: number } } {
  const r = cokv('generate', ...args, '--json');
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** An error body in OpenAI's shape. */
function expectError(body: unknown, param: string | null, code?: string | null): void {
  const e = (body as { error: Record<string, unknown> }).error;
  expect(typeof e.message).toBe('string');
  expect(typeof e.type).toBe('string');
  expect(e.param).toBe(param);
  if (code !== undefined) expect(e.code).toBe(code);
}

describe.skipIf(!haveAssets)('PrefixCache', () => {
  it('finds the longest strict prefix with the same settings, drops superseded entries, and holds its count and byte limits', async () => {
    const model = await loadModel(stories);
    const seqOf = async (ids: number[]) => {
      const q = await model.createSequence();
      await q.prefill(ids);
      return q;
    };
    const base = model.promptIds('Once upon a time');
    const c = new PrefixCache(2, 1 << 30);
    const a = await seqOf(base);
    c.add(a, 'full');
    const longer = [...base, 5, 6, 7];
    expect(c.lookup(base, 'full')).toBeUndefined(); // equal, not a strict prefix: nothing new to prefill
    expect(c.lookup([...base, 9], 'snapkv')).toBeUndefined(); // other settings
    expect(c.lookup([...base.slice(0, -1), 9, 9], 'full')).toBeUndefined(); // diverges inside
    expect(c.lookup([...base, 9], 'full', () => false)).toBeUndefined(); // refused by the caller's condition
    expect(c.lookup([...base, 9], 'full', (q) => q === a)).toBe(a);
    const b = await seqOf(longer);
    c.add(b, 'full'); // extends a: a is dropped and disposed
    expect(c.size).toBe(1);
    expect(() => a.stats).toThrow(/disposed/);
    expect(c.lookup([...longer, 1], 'full')).toBe(b);
    const other = await seqOf(model.promptIds('The dog'));
    const third = await seqOf(model.promptIds('One day'));
    c.add(other, 'full');
    c.add(third, 'full'); // over the count: the least recently used (b) goes
    expect(c.size).toBe(2);
    expect(() => b.stats).toThrow(/disposed/);
    expect(c.lookup([...model.promptIds('The dog'), 1], 'full')).toBe(other);
    // A byte limit below one sequence keeps nothing; one fitting a single sequence keeps the newest.
    const tight = new PrefixCache(4, other.stats.allocatedBytes + 1);
    const x = await seqOf(model.promptIds('The sun'));
    const y = await seqOf(model.promptIds('The cat'));
    tight.add(x, 'full');
    tight.add(y, 'full');
    expect(tight.size).toBe(1);
    expect(() => x.stats).toThrow(/disposed/);
    const none = new PrefixCache(0, 1 << 30);
    const z = await seqOf(base);
    none.add(z, 'full');
    expect(none.size).toBe(0);
    c.clear();
    expect(c.size).toBe(0);
    expect(() => third.stats).toThrow(/disposed/);
  });
});

describe.skipIf(!haveAssets)('cokv serve', () => {
  let S: ServeProcess, L: ServeProcess, F: ServeProcess;
  let s: OpenAI, l: OpenAI, f: OpenAI;

  beforeAll(async () => {
    [S, L, F] = await Promise.all([
      serve('--model', stories, '--api-key', KEY, '--queue', '8', '--max-body', '65536'),
      // A default press, so a request's `cokv` field is seen to override it.
      serve('--model', llama, '--model-name', 'llama3-tiny', '--press', 'snapkv', '--budget', '12'),
      // A server that never reuses a prefix: what every request answers fresh.
      serve('--model', stories, '--prefix-cache', '0'),
    ]);
    // No retries: a 429 or a dropped connection must reach the test as it happened.
    s = new OpenAI({ baseURL: S.url, apiKey: KEY, maxRetries: 0, timeout: 30_000 });
    l = new OpenAI({ baseURL: L.url, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
    f = new OpenAI({ baseURL: F.url, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
  });

  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
  });

  const post = (url: string, body: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> =>
    fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, ...headers }, signal });

  it('GET /v1/models lists the one model', async () => {
    const page = await s.models.list();
    expect(page.data.map((m) => m.id)).toEqual(['stories260K']);
    expect((await l.models.retrieve('llama3-tiny')).id).toBe('llama3-tiny');
  });

  it('greedy completion equals cokv generate, with usage and finish_reason; streaming gives the same text', async () => {
    const want = generateJson('--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '30', '--temperature', '0');
    const r = await s.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0].text).toBe(want.text);
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.usage).toEqual({ prompt_tokens: want.stats.promptTokens, completion_tokens: 30, total_tokens: want.stats.promptTokens + 30 });
    // The same prompt as token ids.
    const ids = (await loadModel(stories)).promptIds('Once upon a time');
    const byIds = await s.completions.create({ model: 'stories260K', prompt: ids, max_tokens: 30, temperature: 0 });
    expect(byIds.choices[0].text).toBe(want.text);

    const stream = await s.completions.create({
      model: 'stories260K', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    let text = '', chunks = 0, finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      chunks++;
      if (c.choices[0]) {
        text += c.choices[0].text;
        finish = c.choices[0].finish_reason ?? finish;
      }
      if (c.usage) usage = c.usage;
    }
    expect(chunks).toBeGreaterThan(10);
    expect(text).toBe(want.text);
    expect(finish).toBe('length');
    expect(usage?.completion_tokens).toBe(30);
  });

  it('stop ends the text before the stop string; a seed reproduces cokv generate\'s sample', async () => {
    const r = await s.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: ['Lily'] });
    expect(r.choices[0].text).toBe(', there was a little girl named ');
    expect(r.choices[0].finish_reason).toBe('stop');
    const want = generateJson('--model', stories, '--prompt', 'Once', '--max-tokens', '20', '--temperature', '0.9', '--top-p', '0.9', '--seed', '5');
    const a = await s.completions.create({ model: 'stories260K', prompt: 'Once', max_tokens: 20, temperature: 0.9, top_p: 0.9, seed: 5 });
    expect(a.choices[0].text).toBe(want.text);
  });

  it('a press per request (cokv field) matches cokv generate with the same press', async () => {
    const prompt = 'Once upon a time there was a dog named Max who liked to run in the big green park every day';
    const want = generateJson('--model', stories, '--prompt', prompt, '--max-tokens', '12', '--temperature', '0', '--press', 'snapkv', '--budget', '12');
    const body = { model: 'stories260K', prompt, max_tokens: 12, temperature: 0, cokv: { press: 'snapkv', budget: 12 } };
    const r = await s.completions.create(body as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.choices[0].text).toBe(want.text);
    const st = (r as unknown as { cokv: { press: string; prompt_kv_bytes: number; prompt_full_kv_bytes: number } }).cokv;
    expect(st.press).toBe('snapkv');
    expect(st.prompt_kv_bytes).toBeLessThan(st.prompt_full_kv_bytes);
  });

  it('chat: greedy replies equal cokv generate --chat (server default press, and a request overriding it); streaming too', async () => {
    const user = 'Tell me a story about a dog named Max who runs in the park every single day.';
    const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: user }];
    const args = ['--model', llama, '--chat', '--system', 'Be brief.', '--prompt', user, '--max-tokens', '24', '--temperature', '0'];
    const pressed = generateJson(...args, '--press', 'snapkv', '--budget', '12');
    const full = generateJson(...args);
    expect(pressed.tokens).not.toEqual(full.tokens);

    const r = await l.chat.completions.create({ model: 'llama3-tiny', messages, max_tokens: 24, temperature: 0 });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message).toMatchObject({ role: 'assistant', content: pressed.text });
    expect(r.usage?.prompt_tokens).toBe(pressed.stats.promptTokens);
    expect(r.usage?.completion_tokens).toBe(pressed.stats.generatedTokens);
    expect((r as unknown as { cokv: { press: string } }).cokv.press).toBe('snapkv');

    const body = { model: 'llama3-tiny', messages, max_tokens: 24, temperature: 0, cokv: { press: 'full' }, stream: true };
    const stream = await l.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = '', role: string | undefined, finish: string | null = null;
    for await (const c of stream) {
      role ??= c.choices[0]?.delta.role;
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(role).toBe('assistant');
    expect(text).toBe(full.text);
    expect(finish).toBe(full.stats.generatedTokens === 24 ? 'length' : 'stop');
    // A conversation over the context (256 tokens) is refused before it runs.
    const long = await fetch(`${L.url}/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'user', content: user.repeat(20) }] }) });
    expect(long.status).toBe(400);
    expectError(await long.json(), 'messages', 'context_length_exceeded');
  });

  /** The `cokv` object of a response. */
  const cokvOf = (r: unknown): { press: string; reusedPromptTokens: number; prompt_kv_bytes: number } =>
    (r as { cokv: { press: string; reusedPromptTokens: number; prompt_kv_bytes: number } }).cokv;

  it('prefix reuse (full cache): a completion extending an earlier one reuses its tokens and answers exactly as a fresh server', async () => {
    const model = await loadModel(stories);
    const first = model.promptIds('Once upon a time there was a dog named Max who liked');
    const ask = (c: OpenAI, prompt: number[], max: number) =>
      c.completions.create({ model: 'stories260K', prompt, max_tokens: max, temperature: 0 });
    const r1 = await ask(s, first, 20);
    expect(r1.choices[0].finish_reason).toBe('length');
    const g1 = model.generate(first, { maxTokens: 20, temperature: 0 });
    await g1.complete();
    expect(r1.choices[0].text).toBe(g1.text);
    // The next turn: the first prompt, its answer, then new text.
    const second = [...first, ...g1.tokens, ...model.encode(' The next day, Max', false)];
    const r2 = await ask(s, second, 30);
    // Every token of the first request but its last generated one (never run through the model) is reused.
    expect(cokvOf(r2).reusedPromptTokens).toBe(first.length + 20 - 1);
    const fresh = await ask(f, second, 30);
    expect(cokvOf(fresh).reusedPromptTokens).toBe(0);
    expect(r2.choices[0].text).toBe(fresh.choices[0].text);
    expect(r2.usage).toEqual(fresh.usage);
    expect(cokvOf(r2).prompt_kv_bytes).toBe(cokvOf(fresh).prompt_kv_bytes);
    // A third turn extends the second one's sequence.
    const g2 = model.generate(second, { maxTokens: 30, temperature: 0 });
    expect(await g2.complete()).toBe(r2.choices[0].text);
    const third = [...second, ...g2.tokens, ...model.encode(' Then', false)];
    const r3 = await ask(s, third, 10);
    const f3 = await ask(f, third, 10);
    expect(cokvOf(r3).reusedPromptTokens).toBe(second.length + 30 - 1);
    expect(r3.choices[0].text).toBe(f3.choices[0].text);
    // A prompt that is not an extension (it diverges inside the cached tokens) is prefilled from scratch.
    const diverged = [...first.slice(0, -1), ...model.encode(' cat', false)];
    expect(cokvOf(await ask(s, diverged, 5)).reusedPromptTokens).toBe(0);
  });

  it('prefix reuse with a press: the earlier compressed prefix plus the new tokens uncompressed (the context-only protocol); other settings do not reuse', async () => {
    const model = await loadModel(stories);
    const first = model.promptIds('Once upon a time there was a dog named Max who liked to run in the big green park every day');
    const cokvField = { press: 'snapkv', budget: 12 };
    const ask = (prompt: number[], max: number, field: Record<string, unknown> = cokvField) =>
      s.completions.create({ model: 'stories260K', prompt, max_tokens: max, temperature: 0, cokv: field } as OpenAI.CompletionCreateParamsNonStreaming);
    const press = () => createPress('snapkv', { budget: 12 }, model.config);
    const r1 = await ask(first, 16);
    const g1 = model.generate(first, { maxTokens: 16, temperature: 0, press: press() });
    await g1.complete();
    expect(r1.choices[0].text).toBe(g1.text);
    const second = [...first, ...g1.tokens, ...model.encode(' The next day, Max', false)];
    // Another budget is another compressed cache: nothing to reuse.
    expect(cokvOf(await ask(second, 8, { press: 'snapkv', budget: 16 })).reusedPromptTokens).toBe(0);
    const r2 = await ask(second, 24);
    expect(cokvOf(r2).reusedPromptTokens).toBe(first.length + 16 - 1);
    // Exactly the context-only protocol with the first prompt as the compressed context.
    const want = model.generate(second, { maxTokens: 24, temperature: 0, press: press(), compressPrefix: first.length });
    await want.complete();
    expect(r2.choices[0].text).toBe(want.text);
    expect(cokvOf(r2).prompt_kv_bytes).toBe(want.stats!.promptKvBytes);
    // ... which is not what compressing the whole second prompt gives (the full-cache server default differs too).
    const whole = model.generate(second, { maxTokens: 24, temperature: 0, press: press() });
    await whole.complete();
    expect(whole.stats!.promptKvBytes).toBeLessThan(want.stats!.promptKvBytes);
  });

  it('prefix reuse in chat: the second turn reuses the first and replies as a fresh prefill does', async () => {
    const model = await loadModel(llama);
    const m1 = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Tell me about a dog.' }];
    const chat = (messages: OpenAI.ChatCompletionMessageParam[]) =>
      l.chat.completions.create({ model: 'llama3-tiny', messages, max_tokens: 16, temperature: 0, cokv: { press: 'full' } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const r1 = await chat(m1);
    const m2: OpenAI.ChatCompletionMessageParam[] = [...m1, { role: 'assistant', content: r1.choices[0].message.content }, { role: 'user', content: 'And a cat?' }];
    const r2 = await chat(m2);
    expect(cokvOf(r2).reusedPromptTokens).toBeGreaterThan(r1.usage!.prompt_tokens);
    const fresh = await model.chat(m2 as { role: string; content: string }[], { maxTokens: 16, temperature: 0 });
    await fresh.complete();
    expect(r2.choices[0].message.content).toBe(fresh.text);
    expect(r2.usage?.prompt_tokens).toBe(fresh.stats!.promptTokens);
  });

  it('chat on a model without a chat template is a clear 400', async () => {
    const err = await s.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
    expect((err as Error).message).toMatch(/no chat template/);
  });

  it('8 concurrent requests all complete, each with its own sequential answer', async () => {
    const prompts = ['Once', 'The dog', 'Lily had', 'One day', 'The sun', 'Tom and', 'A little', 'The cat'];
    const ask = (p: string): Promise<string> =>
      s.completions.create({ model: 'stories260K', prompt: p, max_tokens: 25, temperature: 0 }).then((r) => r.choices[0].text);
    const seq: string[] = [];
    for (const p of prompts) seq.push(await ask(p));
    expect(await Promise.all(prompts.map(ask))).toEqual(seq);
  });

  it('a full queue answers 429 (--queue 8: one running, eight waiting)', async () => {
    const body = JSON.stringify({ prompt: 'Once upon a time', max_tokens: 400, temperature: 0 });
    const rs = await Promise.all(Array.from({ length: 12 }, () => post(`${S.url}/completions`, body)));
    const statuses = rs.map((r) => r.status);
    const bodies = await Promise.all(rs.map((r) => r.json() as Promise<{ usage: { completion_tokens: number } }>));
    expect(statuses.filter((x) => x === 200).length).toBeGreaterThanOrEqual(9);
    expect(statuses.filter((x) => x === 429).length).toBeGreaterThanOrEqual(1);
    expect(statuses.every((x) => x === 200 || x === 429)).toBe(true);
    bodies.forEach((b, i) => {
      if (statuses[i] === 429) expectError(b, null, 'queue_full');
      else expect(b.usage.completion_tokens).toBe(400);
    });
  });

  it('a disconnected stream is cancelled and frees the queue', async () => {
    const stream = await s.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 500, temperature: 0, stream: true });
    const it = stream[Symbol.asyncIterator]();
    expect((await it.next()).done).toBe(false);
    await it.return!(); // closes the connection, as a client that goes away does
    const m = await logLine(S, /POST \/v1\/completions 200 cancelled by the client after (\d+) tokens/);
    expect(Number(m[1])).toBeLessThan(500);
    const r = await s.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
    expect(r.choices[0].text).toBe(', there was a little girl named Lily. She loved to play outsid');
  });

  it('a request abandoned while queued never runs', async () => {
    const before = S.log().length;
    const since = (): string => S.log().slice(before);
    // The stream holds the model (its first chunk is out) while the second request waits behind it.
    const stream = await s.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 500, temperature: 0, stream: true });
    const it = stream[Symbol.asyncIterator]();
    expect((await it.next()).done).toBe(false);
    const ac = new AbortController();
    const abandoned = post(`${S.url}/completions`, JSON.stringify({ prompt: 'The dog', max_tokens: 20, temperature: 0 }), {}, ac.signal).catch((e: Error) => e);
    await logLine({ ...S, log: since }, /POST \/v1\/completions waiting/);
    ac.abort();
    expect(await abandoned).toBeInstanceOf(Error);
    await logLine({ ...S, log: since }, /POST \/v1\/completions - cancelled by the client while queued/);
    let n = 1;
    while (!(await it.next()).done) n++;
    expect(n).toBeGreaterThan(100);
    await logLine({ ...S, log: since }, /POST \/v1\/completions 200 prompt 5 \+ 500 tokens \(length\)/);
  });

  it('bad inputs get OpenAI-style errors with the right status, and the server keeps serving', async () => {
    const cases: [string, string, number, string | null, string | null][] = [
      ['/completions', '{"prompt": "Once", ', 400, null, 'invalid_json'],
      ['/completions', '[1, 2]', 400, null, null],
      ['/completions', JSON.stringify({ prompt: 'x'.repeat(70_000) }), 400, null, 'body_too_large'],
      ['/completions', JSON.stringify({ prompt: 'Once upon a time '.repeat(200) }), 400, 'prompt', 'context_length_exceeded'],
      ['/completions', JSON.stringify({ prompt: 'Once', max_tokens: 600 }), 400, 'max_tokens', 'context_length_exceeded'],
      ['/completions', JSON.stringify({ prompt: 'Once', max_tokens: -1 }), 400, 'max_tokens', null],
      ['/completions', JSON.stringify({ prompt: 'Once', temperature: 'hot' }), 400, 'temperature', null],
      ['/completions', JSON.stringify({ prompt: 'Once', n: 2 }), 400, 'n', null],
      ['/completions', JSON.stringify({ max_tokens: 5 }), 400, 'prompt', null],
      ['/completions', JSON.stringify({ prompt: 'Once', stop: [''] }), 400, 'stop', null],
      ['/completions', JSON.stringify({ prompt: 'Once', cokv: { press: 'nope', budget: 12 } }), 400, 'cokv.press', null],
      ['/completions', JSON.stringify({ prompt: 'Once', cokv: { budgt: 12 } }), 400, 'cokv.budgt', null],
      ['/completions', JSON.stringify({ prompt: 'Once', cokv: { press: 'snapkv' } }), 400, 'cokv.budget', null],
      ['/completions', JSON.stringify({ prompt: 'Once', model: 'gpt-4' }), 404, 'model', 'model_not_found'],
      ['/chat/completions', JSON.stringify({ messages: [] }), 400, 'messages', null],
      ['/nope', '{}', 404, null, 'unknown_url'],
    ];
    for (const [route, body, status, param, code] of cases) {
      const r = await post(`${S.url}${route}`, body);
      expect(r.status, `${route} ${body.slice(0, 60)}`).toBe(status);
      expectError(await r.json(), param, code);
    }
    const g = await fetch(`${S.url}/completions`, { headers: { Authorization: `Bearer ${KEY}` } });
    expect(g.status).toBe(405);
    expect(g.headers.get('allow')).toBe('POST');
    expectError(await g.json(), null, 'method_not_allowed');
    // A body cut off mid-way (the client goes away) must not take the server down.
    const port = Number(new URL(S.url).port);
    await new Promise<void>((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1', () => {
        sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Length: 100\r\n\r\n{"prompt"`);
        setTimeout(() => { sock.destroy(); resolve(); }, 50);
      });
      sock.on('error', reject);
    });
    expect((await s.models.list()).data).toHaveLength(1);
    expect(S.child.exitCode).toBeNull();
  });

  it('--api-key is enforced on every route', async () => {
    const wrong = new OpenAI({ baseURL: S.url, apiKey: 'wrong', maxRetries: 0 });
    const err = await wrong.models.list().catch((e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(401);
    const none = await fetch(`${S.url}/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once' }) });
    expect(none.status).toBe(401);
    expectError(await none.json(), null, 'invalid_api_key');
    expect((await fetch(`${S.url}/models`)).status).toBe(401);
  });

  it('cokv generate --json-stream: one JSON line per chunk, then the --json object', () => {
    const r = cokv('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '12', '--stop', 'Lily', '--json-stream');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((x) => JSON.parse(x));
    const last = lines.pop();
    expect(last.text).toBe(', there was a little girl named ');
    expect(last.stats.stopReason).toBe('stop');
    expect(lines.filter((c) => 'token' in c).map((c) => c.token)).toEqual(last.tokens);
    expect(lines.map((c) => c.text).join('')).toBe(last.text);
  });

  it('SIGTERM stops the server cleanly (exit 0)', async () => {
    process.kill(L.child.pid!, 'SIGTERM');
    const code = await Promise.race([L.exited, new Promise((r) => setTimeout(() => r('timeout'), 10_000))]);
    expect(code).toBe(0);
  });
});
