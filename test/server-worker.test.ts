/**
 * `cokv serve` runs inference in the model's worker thread (issue 17 item 5): while a long streaming completion is
 * in flight, GET /health and GET /v1/models are answered before it finishes. Structural: the server writes one log
 * line per request when it ends, in the order it ends them, so /health's line must precede the completion's.
 */
import type { ChildProcess } from 'node:child_process';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { asset, haveAssets, startServeProcess } from './helpers.js';

const retrieval = asset('models/cokv-retrieval-tiny');
const KEY = 'worker-key';
const children: ChildProcess[] = [];

async function logLine(log: () => string, re: RegExp): Promise<void> {
  for (let i = 0; i < 3000 && !re.test(log()); i++) await new Promise((r) => setTimeout(r, 10));
  expect(log()).toMatch(re);
}

describe.skipIf(!haveAssets)('cokv serve: inference off the main thread', () => {
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  it('/health and /v1/models answer while a long streaming completion runs', async () => {
    const s = await startServeProcess(['--model', retrieval, '--prefix-cache', '0', '--api-key', KEY], (c) => children.push(c));
    const client = new OpenAI({ baseURL: s.url, apiKey: KEY, maxRetries: 0, timeout: 60_000 });
    const lines: string[] = [];
    for (let i = 0; i < 60; i++) lines.push(`The grass is green and the sky is blue; line ${i} of the story goes on and on.`);
    // About 1800 tokens that the model continues for all of max_tokens (no EOS).
    const prompt = lines.join(' ');
    const stream = await client.completions.create({ model: 'cokv-retrieval-tiny', prompt, max_tokens: 200, temperature: 0, stream: true });
    const it = stream[Symbol.asyncIterator]();
    expect((await it.next()).done).toBe(false); // the completion is under way
    // /health needs no key; /v1/models does.
    const [health, models] = await Promise.all([fetch(s.url.replace(/\/v1$/, '/health')), client.models.list()]);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    expect(models.data.map((m) => m.id)).toEqual(['cokv-retrieval-tiny']);
    let chunks = 1;
    for (let r = await it.next(); !r.done; r = await it.next()) chunks++;
    expect(chunks).toBeGreaterThan(100);
    await logLine(s.log, /POST \/v1\/completions 200 prompt \d+ \+ 200 tokens \(length\)/);
    const log = s.log();
    const end = log.search(/POST \/v1\/completions 200/);
    expect(log.search(/GET \/health 200/)).toBeGreaterThanOrEqual(0);
    expect(log.search(/GET \/health 200/)).toBeLessThan(end);
    expect(log.search(/GET \/v1\/models 200/)).toBeLessThan(end);
  });
});
