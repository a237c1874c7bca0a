/**
 * ChatSession with a boundary-protecting press: every compression is given where each message's content starts
 * (the held turns' too), so the first tokens of every message stay in every KV head however many turns follow.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { createPress } from '../src/press/registry.js';
import type { ChatSession } from '../src/session/chat-session.js';
import type { Sequence } from '../src/session/sequence.js';
import { repoRoot, tmpDir } from './helpers.js';

const LLAMA3_TINY = path.join(repoRoot, 'test/fixtures/models/llama3-tiny/hf-bf16');
const SYSTEM = 'You are a helpful assistant who answers briefly.';
const USERS = ['Tell me about a dog named Max who runs in the park.', 'Where does he run every morning?', 'What colour is the big park?'];

/** The session's sequence (private: read here only to see what it holds). */
const seqOf = (chat: ChatSession): Sequence => (chat as unknown as { seq: Sequence }).seq;

/** Where each message's content starts in the held tokens, found by decoding (independently of the session's own rule). */
function contentStarts(model: CokvModel, tokens: readonly number[], contents: readonly string[]): number[] {
  const out: number[] = [];
  let p = 0;
  for (const c of contents) {
    while (p < tokens.length && !model.decode(tokens.slice(p)).startsWith(c)) p++;
    expect(p, `content ${JSON.stringify(c)} not found`).toBeLessThan(tokens.length);
    out.push(p);
  }
  return out;
}

/** Per full-attention layer and KV head, the positions among `positions` it no longer holds. */
function missing(model: CokvModel, seq: Sequence, positions: readonly number[]): string[] {
  const out: string[] = [];
  model.config.layers.forEach((spec, l) => {
    if (spec.kind !== 'full') return;
    for (let h = 0; h < model.config.numKvHeads; h++) {
      const held = new Set(seq.headPositions(l, h));
      for (const p of positions) if (!held.has(p)) out.push(`layer ${l} head ${h} position ${p}`);
    }
  });
  return out;
}

async function converse(model: CokvModel, chat: ChatSession, users: readonly string[]): Promise<void> {
  for (const u of users) await chat.prompt(u, { temperature: 0, maxTokens: 8 }).complete();
}

const contentsOf = (chat: ChatSession): string[] => chat.messages().map((m) => m.content);

describe('ChatSession with a protecting press', () => {
  // Budget 48, protect 0.25: 12 protected entries per head, at least one for each of the 7 message starts and position 0.
  it('keeps the first tokens of every message, earlier turns included, in every KV head; plain SnapKV does not', async () => {
    const model = await loadModel(LLAMA3_TINY);
    const protecting = await model.createChatSession({ system: SYSTEM, press: createPress('boundary-snapkv', { budget: 48, protect: 0.25 }, model.config) });
    await converse(model, protecting, USERS);
    const st = protecting.stats;
    expect(st.compressions).toBe(USERS.length);
    expect(st.reprefills).toBe(0);
    const seq = seqOf(protecting);
    const starts = contentStarts(model, seq.tokens, contentsOf(protecting));
    expect(starts).toHaveLength(1 + 2 * USERS.length);
    expect(missing(model, seq, [0, ...starts])).toEqual([]);

    // The same budget without protection evicts some of them.
    const plain = await model.createChatSession({ system: SYSTEM, press: createPress('snapkv', { budget: 48 }, model.config) });
    await converse(model, plain, USERS);
    const plainSeq = seqOf(plain);
    expect(missing(model, plainSeq, contentStarts(model, plainSeq.tokens, contentsOf(plain))).length).toBeGreaterThan(0);
    protecting.dispose();
    plain.dispose();
  });

  it('after a context shift the held messages\' starts move with their tokens and stay protected', async () => {
    const model = await loadModel(LLAMA3_TINY);
    // protect 0.25: 12 protected entries per head, one or two per held message (more would keep them by their share alone).
    const chat = await model.createChatSession({ system: SYSTEM, contextShift: true, press: createPress('boundary-snapkv', { budget: 48, protect: 0.25 }, model.config) });
    const msg = (i: number): string => `Message ${i}: ${'tell me about the dog and the park. '.repeat(3)}`;
    let i = 0;
    for (; i < 12 && chat.stats.shifts < 1; i++) await converse(model, chat, [msg(i)]);
    expect(chat.stats.shifts).toBe(1);
    // One more turn compresses the shifted cache.
    await converse(model, chat, [msg(i)]);
    expect(chat.stats.lastTurn!.compressed).toBe(true);
    const seq = seqOf(chat);
    // The system message and the turns after the dropped ones, in the held tokens (the dropped turns are gone).
    const all = chat.messages();
    const kept = [all[0], ...all.slice(-4)].map((m) => m.content);
    const starts = contentStarts(model, seq.tokens, kept);
    expect(missing(model, seq, [0, ...starts])).toEqual([]);
    chat.dispose();
  });

  it('Sequence.prefill refuses held boundaries outside what the sequence holds, in one line', async () => {
    const model = await loadModel(LLAMA3_TINY);
    const seq = await model.createSequence();
    await seq.prefill(model.encode('Hello there, how are you?', true));
    const n = seq.position;
    const press = createPress('boundary-snapkv', { budget: 12 }, model.config);
    const err = await seq.prefill(model.encode(' I am fine, thank you.', false), { press, heldBoundaries: [n] }).catch((e: unknown) => e);
    expect((err as Error).message).toBe(`heldBoundaries: ${n} is past the end of the ${n}-token prompt`);
    seq.dispose();
  });

  it('a saved and loaded session goes on protecting the held messages', async () => {
    const model = await loadModel(LLAMA3_TINY);
    const press = () => createPress('boundary-snapkv', { budget: 48, protect: 0.25 }, model.config);
    const chat = await model.createChatSession({ system: SYSTEM, press: press() });
    await converse(model, chat, USERS.slice(0, 2));
    const file = path.join(tmpDir(), 'chat.json');
    await chat.save(file);
    chat.dispose();
    const loaded = await (await import('../src/session/chat-session.js')).ChatSession.load(model, file, { press: press() });
    await converse(model, loaded, USERS.slice(2));
    const seq = seqOf(loaded);
    expect(missing(model, seq, [0, ...contentStarts(model, seq.tokens, contentsOf(loaded))])).toEqual([]);
    loaded.dispose();
  });
});
