import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { ChatSession } from '../src/session/chat-session.js';
import { applyChatTemplate } from '../src/model/chat.js';
import { createPress } from '../src/press/registry.js';
import { CokvError } from '../src/errors.js';
import { asset, haveAssets, repoRoot, tmpDir } from './helpers.js';

const LLAMA3_TINY = path.join(repoRoot, 'test/fixtures/models/llama3-tiny/hf-bf16');
const RETRIEVAL = asset('models/cokv-retrieval-tiny');
/** A plain template for a model that ships none. */
const PLAIN = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
/** A template that re-renders every earlier turn when a message is added (the count heads the prompt). */
const COUNTING = "messages {{ messages|length }}\n{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";

const greedy = { temperature: 0, maxTokens: 8 };

/** Greedy tokens of a fresh sequence fed `ids`. */
async function freshAnswer(model: CokvModel, ids: readonly number[], maxTokens: number): Promise<number[]> {
  const s = await model.createSequence();
  await s.prefill(ids);
  const g = s.generate({ temperature: 0, maxTokens });
  await g.complete();
  s.dispose();
  return g.tokens;
}

function render(model: CokvModel, template: string, messages: { role: string; content: string }[]): string {
  return applyChatTemplate(template, messages, { bosToken: model.source.bosToken, eosToken: model.source.eosToken, addGenerationPrompt: true });
}

describe('ChatSession', () => {
  it('a second turn prefills only its new tokens and answers like a fresh sequence fed the whole rendered conversation', async () => {
    const model = await loadModel(LLAMA3_TINY);
    const chat = await model.createChatSession({ system: 'Be brief.' });
    const a1 = chat.prompt('Hello there', greedy);
    await a1.complete();
    const held = chat.stats.tokens;
    expect(chat.stats.lastTurn).toMatchObject({ reusedTokens: 0, reprefilled: false });

    const a2 = chat.prompt('And then?', greedy);
    await a2.complete();
    const conv = render(model, model.source.chatTemplate!, [
      { role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' },
      { role: 'assistant', content: a1.text }, { role: 'user', content: 'And then?' },
    ]);
    const last = chat.stats.lastTurn!;
    expect(last.reprefilled).toBe(false);
    expect(last.reusedTokens).toBe(held);
    // Only the suffix of the rendering beyond the turn-1 rendering and answer is prefilled.
    const turn1Text = render(model, model.source.chatTemplate!, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }]) + a1.text;
    expect(conv.startsWith(turn1Text)).toBe(true);
    const suffix = model.encode(conv.slice(turn1Text.length), false);
    expect(last.prefilledTokens).toBe(suffix.length);
    expect(suffix.length).toBeLessThan(held);

    // The same conversation fed from scratch (turn 1's rendering, its answer's tokens, the new suffix) answers alike.
    const turn1Ids = model.promptIds(render(model, model.source.chatTemplate!, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }]), false);
    const ids = [...turn1Ids, ...a1.tokens, ...suffix];
    expect(model.decode(ids)).toBe(model.decode(model.promptIds(conv, false)));
    expect(a2.tokens).toEqual(await freshAnswer(model, ids, greedy.maxTokens));
    expect(chat.turns.map((t) => t.user)).toEqual(['Hello there', 'And then?']);
    expect(chat.stats.perTurn.map((t) => t.kept)).toEqual([1, 1]);
    chat.dispose();
    expect(() => chat.stats).toThrow(/disposed/);
  });

  it.skipIf(!haveAssets)('a template that re-renders earlier turns falls back to re-prefilling, says so, and answers like a fresh prefill', async () => {
    const model = await loadModel(RETRIEVAL);
    const chat = await ChatSession.create(model, { template: COUNTING });
    const a1 = chat.prompt('The pass key is 123.', greedy);
    await a1.complete();
    const a2 = chat.prompt('What is the pass key?', greedy);
    await a2.complete();
    const last = chat.stats.lastTurn!;
    expect(last.reprefilled).toBe(true);
    expect(last.reprefillReason).toMatch(/does not start with the held text/);
    expect(last.reusedTokens).toBe(0);
    expect(chat.stats.reprefills).toBe(1);
    const conv = render(model, COUNTING, [
      { role: 'user', content: 'The pass key is 123.' }, { role: 'assistant', content: a1.text }, { role: 'user', content: 'What is the pass key?' },
    ]);
    const ids = model.promptIds(conv, false);
    expect(last.prefilledTokens).toBe(ids.length);
    expect(a2.tokens).toEqual(await freshAnswer(model, ids, greedy.maxTokens));
    chat.dispose();
  });

  it.skipIf(!haveAssets)('refuses a model without a chat template unless one is given', async () => {
    const model = await loadModel(RETRIEVAL);
    await expect(model.createChatSession()).rejects.toThrow(/no chat template/);
    await expect(model.createChatSession({ maxHistoryTokens: 10, template: PLAIN })).rejects.toThrow(/maxHistoryTokens: needs a press/);
    const chat = await model.createChatSession({ template: PLAIN, press: createPress('full', {}, model.config) });
    expect(() => chat.prompt('')).toThrow(CokvError);
    await chat.prompt('Hello', greedy).complete();
    expect(chat.stats.compressions).toBe(0);
    chat.dispose();
  });

  it.skipIf(!haveAssets).each(['f32', 'q8'] as const)('save → load → next turn equals never saving (%s KV, SnapKV)', async (kvDtype) => {
    const model = await loadModel(RETRIEVAL);
    const press = createPress('snapkv', { budget: 24 }, model.config)!;
    const dir = tmpDir();
    const file = path.join(dir, 'chat.json');
    const a = await model.createChatSession({ template: PLAIN, system: 'Answer.', kvDtype, press });
    await a.prompt('The grass is green. The sky is blue. The sun is yellow. The pass key is 4417.', greedy).complete();
    await a.save(file);
    expect(fs.existsSync(`${file}.kvc`)).toBe(true);
    const b = await ChatSession.load(model, file, { press });
    expect(b.turns).toEqual(a.turns);
    const ga = a.prompt('What is the pass key? The pass key is', greedy);
    await ga.complete();
    const gb = b.prompt('What is the pass key? The pass key is', greedy);
    await gb.complete();
    expect(gb.tokens).toEqual(ga.tokens);
    expect(b.stats).toEqual(a.stats);
    expect(b.stats.lastTurn!.reprefilled).toBe(false);
    // A chat file whose cache comes from another save is refused.
    fs.copyFileSync(`${file}.kvc`, path.join(dir, 'x.kvc'));
    await b.save(file);
    fs.copyFileSync(path.join(dir, 'x.kvc'), `${file}.kvc`);
    await expect(ChatSession.load(model, file)).rejects.toThrow(/different saves/);
    // A damaged history is refused in one line; a loaded session keeps its cache's storage after reset().
    const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { history: unknown[] };
    fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ ...saved, history: [{ user: 1 }] }));
    fs.copyFileSync(`${file}.kvc`, path.join(dir, 'bad.json.kvc'));
    await expect(ChatSession.load(model, path.join(dir, 'bad.json'))).rejects.toThrow(/damaged history/);
    expect(b.stats.kvDtype).toBe(kvDtype);
    await b.reset();
    expect(b.stats).toMatchObject({ kvDtype, turns: 0, tokens: 0 });
    a.dispose();
    b.dispose();
  });

  it.skipIf(!haveAssets)('a press bounds the history\'s KV and reports which turns it evicted', async () => {
    const model = await loadModel(RETRIEVAL);
    const budget = 32;
    const press = createPress('snapkv', { budget }, model.config)!;
    const chat = await model.createChatSession({ template: PLAIN, press });
    const full = await model.createChatSession({ template: PLAIN });
    const facts = ['The grass is green and the sky is blue.', 'The sun is yellow and the sea is wide.', 'Here we go, there and back again.', 'The pass key is 90210, remember it.'];
    const evictedSoFar: number[] = [];
    for (const [i, fact] of facts.entries()) {
      await chat.prompt(fact, greedy).complete();
      await full.prompt(fact, greedy).complete();
      const s = chat.stats;
      // After each turn's compressed prefill only the answer's tokens come on top of the budget.
      expect(s.heldPerHead).toBeLessThanOrEqual(budget + greedy.maxTokens);
      // Which turns this turn's compression evicted: one count per turn so far, this one included.
      const ev = s.lastTurn!.evicted!;
      expect(ev).toHaveLength(i + 1);
      ev.forEach((n, t) => { evictedSoFar[t] = (evictedSoFar[t] ?? 0) + n; });
      for (const t of s.perTurn) expect(t.held + t.evicted).toBe(t.entries);
      expect(full.stats.lastTurn!.evicted).toBeUndefined();
    }
    const s = chat.stats;
    // The evictions reported turn by turn add up to what each turn has lost; the last compression evicted some of
    // the earlier turns' entries.
    expect(s.perTurn.map((t) => t.evicted)).toEqual(evictedSoFar);
    expect(s.lastTurn!.evicted!.slice(0, -1).some((n) => n > 0)).toBe(true);
    expect(s.perTurn[0].evicted).toBeGreaterThan(0);
    expect(s.tokens).toBeGreaterThan(3 * budget);
    expect(s.kvBytes).toBeLessThan(full.stats.kvBytes / 2);
    expect(s.compressions).toBe(facts.length);
    expect(full.stats.perTurn.every((t) => t.kept === 1)).toBe(true);
    // Older turns lost more than the newest one, which keeps at least its window.
    expect(s.perTurn[0].kept).toBeLessThan(s.perTurn[facts.length - 1].kept);
    expect(s.perTurn[facts.length - 1].kept).toBeGreaterThan(0);
    // The kept fractions account for every entry held in the full-attention layers.
    const heads = model.config.numKvHeads * model.config.layers.filter((l) => l.kind === 'full').length;
    const cached = s.tokens - 1; // the answer's last token is pending
    const entries = s.perTurn.reduce((n, t) => n + t.kept * (Math.min(t.end, cached) - t.start) * heads, 0);
    expect(Math.round(entries)).toBe(Math.round(s.heldPerHead * heads));
    // With a large maxHistoryTokens nothing is compressed.
    const roomy = await model.createChatSession({ template: PLAIN, press, maxHistoryTokens: 10_000 });
    for (const fact of facts.slice(0, 2)) await roomy.prompt(fact, greedy).complete();
    expect(roomy.stats.compressions).toBe(0);
    expect(roomy.stats.perTurn.every((t) => t.kept === 1)).toBe(true);
    for (const c of [chat, full, roomy]) c.dispose();
  });

  it.skipIf(!haveAssets)('a turn that would reach the model\'s context is refused in one line naming the limit; the session goes on as it was', async () => {
    const model = await loadModel(RETRIEVAL);
    const ctx = model.config.contextLength;
    for (const press of [undefined, createPress('snapkv', { budget: 32 }, model.config)!]) {
      const chat = await model.createChatSession({ template: PLAIN, press });
      await chat.prompt('The pass key is 4417.', greedy).complete();
      const before = chat.stats;
      const err = await chat.prompt('word '.repeat(ctx), greedy).complete().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(CokvError);
      const e = err as CokvError;
      expect(e.kind).toBe('prompt');
      expect(e.message).toContain(`the model's context of ${ctx} tokens`);
      expect(e.message).toMatch(new RegExp(`brings the conversation to \\d+ tokens \\(\\d+ new after ${before.tokens}\\)`));
      if (press) expect(e.message).toContain('compressing the history cannot make room');
      expect(e.message).not.toContain('\n');
      // Nothing changed: the next turn reuses the held cache.
      expect(chat.turns).toHaveLength(1);
      expect(chat.stats).toEqual(before);
      await chat.prompt('What is the pass key?', greedy).complete();
      expect(chat.stats.lastTurn).toMatchObject({ reprefilled: false, reusedTokens: before.tokens });
      expect(chat.turns).toHaveLength(2);
      chat.dispose();
    }
  });

  it.skipIf(!haveAssets)('prefillEvict: compressed turns prefill in the bounded mode, as CokvModel.generate with prefillEvict; refused without a press', async () => {
    const model = await loadModel(RETRIEVAL);
    const press = createPress('snapkv', { budget: 32 }, model.config);
    const filler = 'The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ';
    // Over two 512-token chunks, so the bounded mode compresses between chunks (and differs from the exact mode).
    const first = `${filler.repeat(28)}The pass key is 4417. ${filler.repeat(28)}What is the pass key?`;
    const opts = { template: PLAIN, system: 'Answer briefly.', press };
    const bounded = await model.createChatSession({ ...opts, prefillEvict: true });
    const exact = await model.createChatSession(opts);
    const a = bounded.prompt(first, greedy);
    const b = exact.prompt(first, greedy);
    await a.complete();
    await b.complete();
    const text = render(model, PLAIN, [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: first }]);
    expect(model.promptIds(text, false).length).toBeGreaterThan(1024);
    const wantBounded = model.generate(text, { ...greedy, addSpecial: false, press, prefillEvict: true });
    const wantExact = model.generate(text, { ...greedy, addSpecial: false, press });
    await wantBounded.complete();
    await wantExact.complete();
    expect(a.tokens).toEqual(wantBounded.tokens);
    expect(b.tokens).toEqual(wantExact.tokens);
    expect(wantBounded.tokens).not.toEqual(wantExact.tokens); // the two modes are told apart by this prompt
    expect(bounded.stats.lastTurn).toMatchObject({ compressed: true, reprefilled: false });
    expect(bounded.stats.kvBytes).toBeLessThan(bounded.stats.kvFullBytes);
    // A later turn goes on over the kept cache.
    await bounded.prompt('And the sky? The sky is blue, the grass is green, the sun is yellow.', greedy).complete();
    expect(bounded.stats.lastTurn).toMatchObject({ reprefilled: false, compressed: true });
    expect(bounded.turns).toHaveLength(2);
    bounded.dispose();
    exact.dispose();
    for (const p of [undefined, createPress('full', {}, model.config)]) {
      const err = await model.createChatSession({ template: PLAIN, press: p, prefillEvict: true }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(CokvError);
      expect((err as CokvError).kind).toBe('flag');
      expect((err as CokvError).message).toBe('prefillEvict: needs a press (with the full cache nothing is evicted)');
    }
  });

  it.skipIf(!haveAssets)('cokv chat --prefill-evict (piped): answers as a bounded-mode session does; refused without --press in one line', async () => {
    const tpl = path.join(tmpDir(), 'plain.jinja');
    fs.writeFileSync(tpl, PLAIN);
    const run = (args: string[], input: string) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), 'chat', '--model', RETRIEVAL, '--template', tpl, ...args], {
      cwd: repoRoot, encoding: 'utf8', input, timeout: 120_000,
    });
    const filler = 'The grass is green. The sky is blue. ';
    const message = `${filler.repeat(60)}The pass key is 4417. ${filler.repeat(30)}What is the pass key? The pass key is`;
    const model = await loadModel(RETRIEVAL);
    const press = createPress('snapkv', { budget: 32 }, model.config);
    const answers = await Promise.all([true, false].map(async (prefillEvict) => {
      const chat = await model.createChatSession({ template: PLAIN, press, prefillEvict });
      const text = await chat.prompt(message, greedy).complete();
      chat.dispose();
      return text;
    }));
    expect(answers[0]).not.toBe(answers[1]);
    const r = run(['--press', 'snapkv', '--budget', '32', '--prefill-evict', '--max-tokens', String(greedy.maxTokens)], `${message}\n/stats\n/exit\n`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/error/i);
    expect(r.stdout).toContain(`${answers[0]}\n`);
    expect(r.stdout).not.toContain(answers[1]);
    expect(r.stdout).toMatch(/last turn: 0 tokens reused, \d+ prefilled, compressed \(entries evicted: #1 \d+\)/);
    const refused = run(['--prefill-evict'], '/exit\n');
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim()).toBe('cokv: --prefill-evict: needs --press (with the full cache nothing is evicted)');
  });

  it('contextShift: a turn past the context drops the oldest turns after the system message and goes on, as a sequence shifted the same way', async () => {
    const model = await loadModel(LLAMA3_TINY);
    const ctx = model.config.contextLength;
    const turnOpts = { temperature: 0, maxTokens: 16 };
    const system = 'Be brief.';
    const chat = await model.createChatSession({ template: PLAIN, system, contextShift: true });
    const plain = await model.createChatSession({ template: PLAIN, system });
    const ref = await model.createSequence();
    const msg = (i: number): string => `Message ${i}: ${'tell me about the dog and the park. '.repeat(4)}`;
    const history: { role: string; content: string }[] = [{ role: 'system', content: system }];
    let held = '';
    const sysIds = model.encode(render(model, PLAIN, [{ role: 'system', content: system }]).replace(/assistant: $/, ''), false);
    let shifts = 0, refusedPlain = false;
    for (let i = 0; i < 10; i++) {
      const a = chat.prompt(msg(i), turnOpts);
      await a.complete();
      const text = render(model, PLAIN, [...history, { role: 'user', content: msg(i) }]);
      const suffix = i === 0 ? model.promptIds(text, false) : model.encode(text.slice(held.length), false);
      expect(text.startsWith(held)).toBe(true);
      const last = chat.stats.lastTurn!;
      expect(last.reprefilled).toBe(false);
      if (last.shift) {
        shifts++;
        // The kept prefix is the system message's tokens; the dropped part ends at a turn boundary.
        let common = 0;
        while (common < sysIds.length && sysIds[common] === ref.tokens[common]) common++;
        expect(last.shift.start).toBe(common);
        expect(last.shift.start).toBeGreaterThan(0);
        await ref.shift(last.shift.start, last.shift.end);
      }
      await ref.prefill(suffix);
      const b = ref.generate(turnOpts);
      await b.complete();
      expect(a.tokens, `turn ${i}`).toEqual(b.tokens);
      expect(chat.stats.tokens).toBe(ref.position);
      expect(chat.stats.tokens).toBeLessThanOrEqual(ctx);
      held = text + a.text;
      history.push({ role: 'user', content: msg(i) }, { role: 'assistant', content: a.text });
      if (!refusedPlain) {
        const p = plain.prompt(msg(i), turnOpts);
        const err = await p.complete().then(() => undefined, (e: unknown) => e);
        if (err) {
          refusedPlain = true;
          expect((err as CokvError).message).toContain(`the model's context of ${ctx} tokens`);
          expect(shifts).toBe(1); // the turn the plain session refuses is the one the shifting session shifted for
        }
      }
      if (shifts >= 2) break;
    }
    expect(refusedPlain).toBe(true);
    expect(shifts).toBeGreaterThanOrEqual(1);
    const st = chat.stats;
    expect(st.shifts).toBe(shifts);
    expect(st.turns).toBe(history.length / 2 - 0.5);
    expect(st.shiftedTokens).toBeGreaterThan(0);
    expect(st.perTurn[0].shiftedTokens).toBeGreaterThan(0);
    expect(st.perTurn.reduce((n, t) => n + t.shiftedTokens, 0)).toBe(st.shiftedTokens);
    expect(st.perTurn.find((t) => t.entries === 0 && t.shiftedTokens > 0)?.kept ?? 0).toBe(0);
    // Saved and loaded, the shifted session continues exactly as the original.
    const file = path.join(tmpDir(), 'shifted.json');
    await chat.save(file);
    const again = await ChatSession.load(model, file, { contextShift: true });
    expect(again.stats.shifts).toBe(st.shifts);
    const x = chat.prompt('And then?', turnOpts);
    const y = again.prompt('And then?', turnOpts);
    await x.complete();
    await y.complete();
    expect(y.tokens).toEqual(x.tokens);
    for (const c of [chat, plain, again]) c.dispose();
    ref.dispose();
    const q8 = await model.createChatSession({ template: PLAIN, contextShift: true, kvDtype: 'q8' }).then(() => undefined, (e: unknown) => e);
    expect(q8).toBeInstanceOf(CokvError);
    expect((q8 as CokvError).message).toBe('contextShift: not with q8 KV storage (re-rotating int8 keys would quantize them again; use f16 or f32)');
  });

  it('cokv chat --context-shift (piped): a conversation past the context goes on, /stats reports the shifts', () => {
    const lines = `${'Message: tell me about the dog and the park. '.repeat(4)}\n`.repeat(5);
    const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), 'chat', '--model', LLAMA3_TINY, '--system', 'Be brief.', '--max-tokens', '16', ...args], {
      cwd: repoRoot, encoding: 'utf8', input: `${lines}/stats\n/exit\n`, timeout: 120_000,
    });
    const shifted = run(['--context-shift']);
    expect(shifted.status, shifted.stderr).toBe(0);
    expect(shifted.stdout).not.toMatch(/error/i);
    expect(shifted.stdout).toMatch(/turns 5, tokens \d+, .*, context shifts [1-9]\d* \(\d+ tokens dropped\)/);
    expect(shifted.stdout).toMatch(/context shift dropped positions \d+\.\.\d+/);
    expect(shifted.stdout).toMatch(/#1 \d+% \(\d+ tokens shifted out\)/);
    const refused = run([]);
    expect(refused.status).toBe(0); // the chat goes on after a refused message
    expect(refused.stdout).toMatch(/error: prompt: this message brings the conversation to \d+ tokens .* \(or let the contextShift option drop old turns\)/);
    const q8 = run(['--context-shift', '--kv-dtype', 'q8']);
    expect(q8.status).toBe(1);
    expect(q8.stderr.trim()).toBe('cokv: --context-shift: not with --kv-dtype q8 (re-rotating int8 keys would quantize them again; use f16 or f32)');
  });

  it.skipIf(!haveAssets)('a cancelled answer is kept as far as it got; a cancelled prefill leaves the history and re-prefills next turn', async () => {
    const model = await loadModel(RETRIEVAL);
    const chat = await model.createChatSession({ template: PLAIN });
    const ac = new AbortController();
    const g = chat.prompt('Tell me a long story.', { temperature: 0, maxTokens: 50, minTokens: 50, signal: ac.signal });
    let n = 0;
    await expect((async () => { for await (const _ of g) { if (++n === 3) ac.abort(); } })()).rejects.toThrow(/aborted/);
    expect(chat.turns).toEqual([{ user: 'Tell me a long story.', assistant: g.text, cancelled: true }]);
    expect(g.stats?.stopReason).toBe('cancelled');
    expect(g.stats?.generatedTokens).toBe(3);
    // Breaking out of the stream also ends the turn, kept as far as it got.
    const early = chat.prompt('Go on.', { temperature: 0, maxTokens: 50, minTokens: 50 });
    for await (const _ of early) break;
    expect(chat.turns[1]).toEqual({ user: 'Go on.', assistant: early.text, cancelled: true });
    expect(early.stats?.stopReason).toBe('cancelled');
    const aborted = new AbortController();
    aborted.abort();
    await expect(chat.prompt('Again?', { ...greedy, signal: aborted.signal }).complete()).rejects.toThrow(/aborted/);
    expect(chat.turns).toHaveLength(2);
    await chat.prompt('Again?', greedy).complete();
    expect(chat.stats.lastTurn!.reprefilled).toBe(true);
    expect(chat.stats.lastTurn!.reprefillReason).toMatch(/cancelled/);
    expect(chat.turns).toHaveLength(3);
    chat.dispose();
  });
});

const haveTmux = spawnSync('tmux', ['-V']).status === 0;
if (!haveTmux) console.warn('[cokv tests] tmux is absent: the `cokv chat` terminal test is skipped');

/** A `cokv chat` in a detached tmux session; `exitCode()` reads the status the shell wrote when it ended. */
function tmuxChat(tag: string, args = `--model ${JSON.stringify(LLAMA3_TINY)} --max-tokens 6 --system 'Be brief.'`) {
  const name = `cokv-chat-${process.pid}-${tag}`;
  const dir = tmpDir();
  const done = path.join(dir, 'exit-code');
  const tmux = (...args: string[]): string => execFileSync('tmux', args, { encoding: 'utf8' });
  const cmd = `cd ${JSON.stringify(repoRoot)} && node --import tsx src/cli/run.ts chat ${args}; echo $? > ${JSON.stringify(done)}; sleep 60`;
  tmux('new-session', '-d', '-s', name, '-x', '200', '-y', '50', cmd);
  const sleep = (): Promise<void> => new Promise((r) => setTimeout(r, 100));
  return {
    dir,
    keys: (...keys: string[]): void => { tmux('send-keys', '-t', name, ...keys); },
    /** Poll the pane until `re` matches (bounded by a number of polls, not by a clock). */
    async waitFor(re: RegExp): Promise<string> {
      let pane = '';
      for (let i = 0; i < 600; i++) {
        pane = tmux('capture-pane', '-p', '-t', name);
        if (re.test(pane)) return pane;
        await sleep();
      }
      throw new Error(`the chat never showed ${re}; the pane:\n${pane}`);
    },
    async exitCode(): Promise<string> {
      for (let i = 0; i < 300 && !fs.existsSync(done); i++) await sleep();
      return fs.existsSync(done) ? fs.readFileSync(done, 'utf8').trim() : 'still running';
    },
    kill: (): void => { spawnSync('tmux', ['kill-session', '-t', name]); },
  };
}

describe.skipIf(!haveTmux)('cokv chat in a terminal (tmux)', () => {
  it('streams one exchange, answers /stats, /save, /load, /reset, reports a bad /load in one line, exits on /exit', async () => {
    const t = tmuxChat('exchange');
    try {
      // capture-pane drops trailing blanks: the prompt '> ' shows as '>'.
      await t.waitFor(/^>$/m);
      t.keys('Hello there', 'Enter');
      // The answer line follows the user's line, then a new prompt.
      const pane = await t.waitFor(/^> Hello there\n.+\n>$/m);
      expect(pane).not.toMatch(/error/i);
      t.keys('/stats', 'Enter');
      const stats = await t.waitFor(/kept per turn: #1 100%/);
      expect(stats).toMatch(/turns 1, tokens \d+/);
      expect(stats).toMatch(/last turn: 0 tokens reused, \d+ prefilled/);
      t.keys(`/save ${path.join(t.dir, 'c.json')}`, 'Enter');
      await t.waitFor(/saved 1 turns to .*c\.json/);
      t.keys(`/load ${path.join(t.dir, 'c.json')}`, 'Enter');
      await t.waitFor(/loaded 1 turns from .*c\.json/);
      t.keys('/reset', 'Enter');
      await t.waitFor(/conversation cleared/);
      t.keys(`/load ${path.join(t.dir, 'missing.json')}`, 'Enter');
      const err = await t.waitFor(/error: .*missing\.json/);
      expect(err).not.toMatch(/\n\s+at /);
      t.keys('/exit', 'Enter');
      expect(await t.exitCode()).toBe('0');
    } finally {
      t.kill();
    }
  }, 120_000);

  it.skipIf(!haveAssets)('one exchange on the bundled stories260K (no chat template of its own: --template), /stats, /exit', async () => {
    const tpl = path.join(tmpDir(), 'plain.jinja');
    fs.writeFileSync(tpl, PLAIN);
    const t = tmuxChat('stories', `--model ${JSON.stringify(asset('models/stories260K'))} --template ${JSON.stringify(tpl)} --max-tokens 12 --press snapkv --budget 16`);
    try {
      await t.waitFor(/^>$/m);
      t.keys('Once upon a time there was a little girl named Lily.', 'Enter');
      // The answer (stories260K's may span lines) follows the user's line, then a new prompt.
      const pane = await t.waitFor(/^> Once upon a time there was a little girl named Lily\.\n[^>]*\S[^>]*\n>$/m);
      expect(pane).not.toMatch(/error/i);
      t.keys('/stats', 'Enter');
      const stats = await t.waitFor(/kept per turn: #1 \d+%/);
      expect(stats).toMatch(/turns 1, tokens \d+, KV /);
      expect(stats).toMatch(/last turn: 0 tokens reused, \d+ prefilled/);
      t.keys('/exit', 'Enter');
      expect(await t.exitCode()).toBe('0');
    } finally {
      t.kill();
    }
  }, 120_000);

  it.skipIf(!haveAssets)('Ctrl-C during an answer cancels the answer, not the chat', async () => {
    // A 2000-token answer (EOS held off) runs for seconds; Ctrl-C is sent once its first text shows.
    const tpl = path.join(tmpDir(), 'plain.jinja');
    fs.writeFileSync(tpl, PLAIN);
    const t = tmuxChat('cancel', `--model ${JSON.stringify(RETRIEVAL)} --template ${JSON.stringify(tpl)} --max-tokens 2000 --min-tokens 2000`);
    try {
      await t.waitFor(/^>$/m);
      t.keys('Tell me a story', 'Enter');
      await t.waitFor(/^> Tell me a story\n\S/m);
      t.keys('C-c');
      await t.waitFor(/\[cancelled\]\n>$/m);
      t.keys('/stats', 'Enter');
      const stats = await t.waitFor(/kept per turn: #1/);
      const tokens = Number(/turns 1, tokens (\d+)/.exec(stats)?.[1]);
      expect(tokens).toBeLessThan(2000);
      t.keys('/exit', 'Enter');
      expect(await t.exitCode()).toBe('0');
    } finally {
      t.kill();
    }
  }, 120_000);

  it.each([['Ctrl-C', 'C-c'], ['Ctrl-D', 'C-d']])('%s at the prompt ends the chat (exit 0)', async (_label, key) => {
    const t = tmuxChat(key);
    try {
      await t.waitFor(/^>$/m);
      t.keys(key);
      expect(await t.exitCode()).toBe('0');
    } finally {
      t.kill();
    }
  }, 120_000);
});
