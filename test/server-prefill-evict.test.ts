/**
 * `cokv serve --prefill-evict` and the per-request `cokv.prefill_evict` field: the bounded prefill as a server
 * default for requests with a press, turned off or on per request; requests answer as CokvModel.generate does in
 * the same mode, and bad combinations get a 400 naming the field.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { createPress } from '../src/press/registry.js';
import { asset, haveAssets, repoRoot, runAsync, startServe } from './helpers.js';

const retrieval = asset('models/cokv-retrieval-tiny');
const runCli = path.join(repoRoot, 'src/cli/run.ts');

let child: ChildProcess | undefined;

/** Start `cokv serve … --port 0` and read the address it prints. */
const serve = (...args: string[]): Promise<string> => startServe(args, (c) => { child = c; });

/** A prompt over two 512-token prefill chunks, so the bounded mode compresses between chunks. */
function longPrompt(): string {
  const filler = 'The grass is green. The sky is blue. ';
  return `${filler.repeat(60)}The pass key is 4417. ${filler.repeat(30)}What is the pass key? The pass key is`;
}

describe.skipIf(!haveAssets)('cokv serve --prefill-evict', () => {
  let url: string;
  let client: OpenAI;
  let model: CokvModel;

  beforeAll(async () => {
    [url, model] = await Promise.all([serve('--model', retrieval, '--press', 'snapkv', '--budget', '32', '--prefill-evict'), loadModel(retrieval)]);
    client = new OpenAI({ baseURL: url, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  }, 120_000);
  afterAll(() => {
    if (child?.pid) process.kill(child.pid, 'SIGTERM');
  });

  const complete = async (cokv: Record<string, unknown> | undefined): Promise<{ text: string; cokv: { press: string; prefill_evict: boolean; prompt_kv_bytes: number; prompt_full_kv_bytes: number } }> => {
    const body = { prompt: longPrompt(), max_tokens: 8, temperature: 0, ...(cokv ? { cokv } : {}) };
    const r = await client.completions.create(body as OpenAI.CompletionCreateParamsNonStreaming);
    return { text: r.choices[0].text, cokv: (r as unknown as { cokv: never }).cokv };
  };
  const reference = async (opts: { prefillEvict?: boolean; press?: boolean }): Promise<string> => {
    const press = opts.press === false ? undefined : createPress('snapkv', { budget: 32 }, model.config);
    return model.generate(longPrompt(), { maxTokens: 8, temperature: 0, press, prefillEvict: opts.prefillEvict }).complete();
  };

  it('the server default prefills requests with a press in the bounded mode; prefill_evict: false gives the exact mode', async () => {
    expect(model.promptIds(longPrompt()).length).toBeGreaterThan(1024);
    const [bounded, exact] = await Promise.all([reference({ prefillEvict: true }), reference({})]);
    expect(bounded).not.toBe(exact); // this prompt tells the two modes apart
    const d = await complete(undefined);
    expect(d.text).toBe(bounded);
    expect(d.cokv).toMatchObject({ press: 'snapkv', prefill_evict: true });
    expect(d.cokv.prompt_kv_bytes).toBeLessThan(d.cokv.prompt_full_kv_bytes);
    const off = await complete({ prefill_evict: false });
    expect(off.text).toBe(exact);
    expect(off.cokv.prefill_evict).toBe(false);
    const on = await complete({ prefill_evict: true, budget: 32 });
    expect(on.text).toBe(bounded);
    // A request without a press is not affected by the default.
    const full = await complete({ press: 'full' });
    expect(full.text).toBe(await reference({ press: false }));
    expect(full.cokv).toMatchObject({ press: 'full', prefill_evict: false });
  }, 120_000);

  it('prefix reuse keeps the modes apart: a request extending a bounded-mode one reuses it only in the same mode', async () => {
    const first = await complete(undefined);
    const next = `${longPrompt()}${first.text} And the pass key is`;
    const ask = async (cokv?: Record<string, unknown>): Promise<number> => {
      const r = await client.completions.create({ prompt: next, max_tokens: 2, temperature: 0, ...(cokv ? { cokv } : {}) } as OpenAI.CompletionCreateParamsNonStreaming);
      return (r as unknown as { cokv: { reusedPromptTokens: number } }).cokv.reusedPromptTokens;
    };
    expect(await ask({ prefill_evict: false })).toBe(0);
    expect(await ask()).toBeGreaterThan(1024);
  }, 120_000);

  it('bad combinations are a 400 naming cokv.prefill_evict', async () => {
    const post = async (cokv: unknown): Promise<{ status: number; error: { message: string; param: string | null } }> => {
      const r = await fetch(`${url}/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ prompt: 'The pass key is', max_tokens: 2, cokv }) });
      return { status: r.status, error: ((await r.json()) as { error: { message: string; param: string | null } }).error };
    };
    const noPress = await post({ press: 'full', prefill_evict: true });
    expect(noPress.status).toBe(400);
    expect(noPress.error).toMatchObject({ param: 'cokv.prefill_evict', message: 'cokv.prefill_evict: needs a press (with the full cache nothing is evicted)' });
    const notBool = await post({ prefill_evict: 'yes' });
    expect(notBool.status).toBe(400);
    expect(notBool.error).toMatchObject({ param: 'cokv.prefill_evict', message: 'cokv.prefill_evict: "yes" is not a boolean' });
    const wide = await post({ budget: 700, window: 600 });
    expect(wide.status).toBe(400);
    expect(wide.error).toMatchObject({ param: 'cokv.prefill_evict', message: "cokv.prefill_evict: the chunk size 512 is shorter than the press's window 600" });
    // The server still answers.
    expect((await client.models.list()).data).toHaveLength(1);
  }, 60_000);

  it('cokv serve --prefill-evict without --press is refused in one line before it loads the model', async () => {
    const r = await runAsync(process.execPath, ['--import', 'tsx', runCli, 'serve', '--model', retrieval, '--prefill-evict', '--port', '0']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('cokv: --prefill-evict: needs --press (with the full cache nothing is evicted)');
    expect(r.stdout).toBe('');
  });
});
