/**
 * Prompt boundaries from text (src/model/prompt-boundaries.ts): message contents found in order in a rendered chat
 * (trimmed when the template trims them), and text offsets turned into token indices of the prompt.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { chatBoundaries, contentOffsets, prefixTokenCount } from '../src/model/prompt-boundaries.js';
import { repoRoot } from './helpers.js';

describe('contentOffsets', () => {
  it('finds each content after the previous one, trimmed when needed; empty or missing ones give no offset', () => {
    const text = '<s>[sys] hi\n[user] hi there\n[user] bye\n';
    // The second "hi" is searched after the first match, so it is the user's, not the system's again.
    expect(contentOffsets(text, ['hi', 'hi there', 'bye'])).toEqual([9, 19, 35]);
    expect(contentOffsets(text, ['  hi there \n', 'bye'])).toEqual([19, 35]); // a trimming template
    expect(contentOffsets(text, ['', 'nowhere', 'bye'])).toEqual([35]);
    // Order matters: a content only found before the previous match is not taken.
    expect(contentOffsets(text, ['bye', 'hi'])).toEqual([35]);
  });
});

describe('prefixTokenCount', () => {
  it('is the prefix length, plus an explicit BOS the prompt has and the prefix lacks, at most the last index', () => {
    expect(prefixTokenCount([5, 6], [5, 6, 7, 8], false, 1)).toBe(2);
    expect(prefixTokenCount([5, 6], [1, 5, 6, 7], false, 1)).toBe(3); // BOS put before the text
    expect(prefixTokenCount([1, 5, 6], [1, 5, 6, 7], true, 1)).toBe(3); // the tokenizer's own BOS, in both
    expect(prefixTokenCount([5, 6, 7, 8], [5, 6, 7], false, undefined)).toBe(2);
  });
});

describe('chatBoundaries', () => {
  it('gives 0 and the token index where each message\'s content starts in a real chat template', async () => {
    const model = await loadModel(path.join(repoRoot, 'test/fixtures/models/llama3-tiny/hf-bf16'));
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Tell me about a dog named Max.' },
      { role: 'assistant', content: 'Max is a dog.' },
      { role: 'user', content: 'Where does he run?' },
    ];
    const text = await model.applyChatTemplate(messages);
    const ids = model.encode(text, false);
    const enc = { encode: (t: string, a: boolean) => model.encode(t, a), bosId: model.tokenizer.bosId };
    const b = await chatBoundaries(enc, text, messages.map((m) => m.content), ids);
    expect(b).toHaveLength(messages.length + 1);
    expect(b[0]).toBe(0);
    for (let i = 0; i < messages.length; i++) {
      // The content starts at its boundary: the tokens before it do not hold any of it.
      expect(model.decode(ids.slice(b[i + 1])).startsWith(messages[i].content)).toBe(true);
      expect(model.decode(ids.slice(b[i + 1] - 1)).startsWith(messages[i].content)).toBe(false);
    }
  });
});
