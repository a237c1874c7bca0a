import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GEN_TASKS, HELD_OUT_ESSAYS, HELD_OUT_MULTI_NEWS, KEY_WORDS, LENGTH_TOLERANCE, MULTIKEY_NEEDLE_COUNT, PASSKEY_INTRO,
  generateRetrievalItems, haystackPieces, kvLineCount, promptTokenCount, readHeldOutHaystack, targetPromptTokens,
  type HaystackDoc, type RetrievalGenItem,
} from '../src/eval/retrieval-gen.js';
import { readRetrievalSuite } from '../src/eval/retrieval.js';
import { openModel } from '../src/model/load.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import { asset, cokv, expectCokvError, expectUserError, haveAssets, tmpDir } from './helpers.js';

const MODEL = asset('models/cokv-retrieval-tiny');

describe('haystack pieces', () => {
  it('cuts lines after sentence ends and drops tiny or punctuation-only pieces', () => {
    const text = 'one two. Three?  four\nfive "six." Seven\n\nheart problems . . . and more\nIt\n3.\nMr. Smith';
    expect(haystackPieces(text)).toEqual(['one two.', 'Three?', 'four', 'five "six."', 'Seven', 'heart problems .', 'and more', 'Mr.', 'Smith']);
  });
  it('the kv block has ⌊0.6·length/18⌋ lines, as in the dev items', () => {
    expect([512, 1024, 2048].map(kvLineCount)).toEqual([17, 34, 68]);
  });
});

describe('reading generated items', () => {
  it('the id field is the item id; dev-style lines get task-length-k; a repeated id is an error', () => {
    const file = path.join(tmpDir('cokv-genret-'), 'mix.jsonl');
    const rec = (id?: string) => JSON.stringify({ ...(id ? { id } : {}), context: 'c', input: 'i', answers: ['1'], task: 'kv', length: 512 });
    fs.writeFileSync(file, [rec('gen-kv-512-1-0'), rec(), rec('gen-kv-512-1-1')].join('\n') + '\n');
    expect(readRetrievalSuite(file).map((i) => i.id)).toEqual(['gen-kv-512-1-0', 'kv-512-1', 'gen-kv-512-1-1']);
    fs.writeFileSync(file, [rec('gen-kv-512-1-0'), rec('gen-kv-512-1-0')].join('\n') + '\n');
    expectCokvError(() => readRetrievalSuite(file), "mix.jsonl:2: duplicate item id 'gen-kv-512-1-0'");
  });
});

describe.skipIf(!haveAssets)('retrieval item generator', () => {
  let tok: Tokenizer;
  let hay: HaystackDoc[];
  const gen = (task: (typeof GEN_TASKS)[number], length: number, count: number, seed: number): RetrievalGenItem[] =>
    generateRetrievalItems({ task, length, count, seed, tokenizer: tok, haystack: hay });

  beforeAll(async () => {
    tok = await (await openModel(MODEL)).loadTokenizer();
    hay = readHeldOutHaystack(asset('data'));
  });

  it('reads only the held-out documents', () => {
    expect(hay.map((d) => d.name)).toEqual([...HELD_OUT_ESSAYS.map((e) => `essay:${e}`), ...HELD_OUT_MULTI_NEWS.map((k) => `multi_news:${k}`)]);
    expect(hay.every((d) => d.text.length > 500 && !d.text.includes('NEWLINE_CHAR') && !/Passage \d+:/.test(d.text))).toBe(true);
  });

  it('is deterministic for a seed; another seed gives other items; a smaller count is a prefix', () => {
    const a = gen('multikey', 512, 3, 1);
    expect(gen('multikey', 512, 3, 1)).toEqual(a);
    expect(gen('multikey', 512, 2, 1)).toEqual(a.slice(0, 2));
    const b = gen('multikey', 512, 3, 2);
    for (let i = 0; i < 3; i++) {
      expect(b[i].context).not.toBe(a[i].context);
      expect(b[i].answers).not.toEqual(a[i].answers);
    }
  });

  it('items have the dev fields, ids that cannot collide with dev ids, and the answer once in the context', () => {
    const dev = readRetrievalSuite(asset('data/retrieval-dev.jsonl'));
    const devIds = new Set(dev.map((d) => d.id));
    for (const task of GEN_TASKS) {
      const items = gen(task, 1024, 4, 7);
      items.forEach((it, i) => {
        expect(Object.keys(it)).toEqual(['id', 'context', 'input', 'answers', 'task', 'length']);
        expect(it).toMatchObject({ id: `gen-${task}-1024-7-${i}`, task, length: 1024 });
        expect(devIds.has(it.id)).toBe(false);
        expect(it.answers).toHaveLength(1);
        expect(it.answers[0]).toMatch(task === 'multikey' ? /^[1-9]\d{6}$/ : /^[1-9]\d{4}$/);
        expect(it.context.split(it.answers[0])).toHaveLength(2);
        expect(it.input).toMatch(/ is$/);
      });
    }
  });

  it('passkey: one needle (two phrasings), optional intro, both question forms', () => {
    const items = gen('passkey', 512, 12, 3);
    for (const it of items) {
      const n = it.answers[0];
      const needles = [`Remember this: the pass key is ${n}.`, `The pass key is ${n}. Remember it.`].filter((s) => it.context.includes(s));
      expect(needles).toHaveLength(1);
      expect(it.context.match(/pass key/g)).toHaveLength(1);
      expect(['Question: What is the pass key mentioned in the text above? Answer: The pass key is', 'What is the pass key? The pass key is']).toContain(it.input);
    }
    expect(new Set(items.map((i) => i.context.startsWith(PASSKEY_INTRO))).size).toBe(2);
  });

  it('multikey: four needles with distinct keys; the key asked for is one of them, with the answer', () => {
    for (const it of gen('multikey', 512, 6, 4)) {
      const needles = [...it.context.matchAll(/(?:The special magic number|One of the special magic numbers) for (\w+) is (\d{7})\./g)];
      expect(needles).toHaveLength(MULTIKEY_NEEDLE_COUNT);
      const keys = needles.map((m) => m[1]);
      expect(new Set(keys).size).toBe(MULTIKEY_NEEDLE_COUNT);
      expect(keys.every((k) => KEY_WORDS.includes(k))).toBe(true);
      const asked = /special magic number for (\w+) is$/.exec(it.input)![1];
      expect(needles.filter((m) => m[1] === asked).map((m) => m[2])).toEqual(it.answers);
    }
  });

  it('kv: a block of ⌊0.6·length/18⌋ lines set off by newlines; the line asked for holds the answer', () => {
    for (const it of gen('kv', 512, 4, 5)) {
      const lines = [...it.context.matchAll(/^line ([a-z]+-[a-z]+): REGISTER_CONTENT is (\d{5})$/gm)];
      expect(lines).toHaveLength(kvLineCount(512));
      expect(it.context).toMatch(/(^|\n)(Below is a record of lines I want you to remember\.|Here is a list of registers\. Each line has a REGISTER_CONTENT value\.)\nline /);
      const asked = /in line ([a-z]+-[a-z]+) is$/.exec(it.input)![1];
      expect(lines.filter((m) => m[1] === asked).map((m) => m[2])).toEqual(it.answers);
    }
  });

  it(`prompt length: at most ${LENGTH_TOLERANCE} tokens under length − |" " + answer| − 1, inside the dev items' range`, () => {
    for (const length of [512, 1024]) {
      for (const task of GEN_TASKS) {
        for (const it of gen(task, length, 3, 11)) {
          const n = promptTokenCount(tok, it);
          const target = targetPromptTokens(tok, length, it.answers[0]);
          expect(target).toBe(length - (task === 'multikey' ? 9 : 7));
          expect(n).toBeLessThanOrEqual(target);
          expect(n).toBeGreaterThanOrEqual(target - LENGTH_TOLERANCE);
          expect(n).toBeGreaterThanOrEqual(length - 16);
        }
      }
    }
  });

  it('rejects bad arguments with one line', () => {
    expectCokvError(() => gen('vartrack' as 'kv', 512, 1, 1), "task 'vartrack' must be one of passkey, multikey, kv");
    expectCokvError(() => gen('kv', 4096, 1, 1), 'length 4096 must be an integer from 256 to 2048');
    expectCokvError(() => gen('kv', 512, 0, 1), 'count 0 must be a positive integer');
  });
});

describe.skipIf(!haveAssets)('cokv gen-retrieval', () => {
  it('writes JSONL that cokv eval reads and scores', () => {
    const dir = tmpDir('cokv-genret-');
    const out = path.join(dir, 'items.jsonl');
    const g = cokv('gen-retrieval', '--model', MODEL, '--data-dir', asset('data'), '--tasks', 'passkey', '--lengths', '512', '--count', '2', '--seed', '9', '--out', out);
    expect(g.stderr).toBe('');
    expect(g.code).toBe(0);
    expect(g.stdout).toMatch(/^2 items \(passkey × 512 × 2, seed 9\) → /);
    const lines = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RetrievalGenItem);
    expect(lines.map((l) => l.id)).toEqual(['gen-passkey-512-9-0', 'gen-passkey-512-9-1']);
    const e = cokv('eval', '--model', MODEL, '--data', out, '--dataset', 'retrieval', '--presses', 'full', '--split', 'all', '--quiet', '--json', '--out', path.join(dir, 'runs'));
    expect(e.code).toBe(0);
    const [res] = JSON.parse(e.stdout) as { press: string; n: number; score: number }[];
    expect(res).toMatchObject({ press: 'full', n: 2 });
    const preds = fs.readFileSync(path.join(dir, 'runs', 'retrieval__cokv-retrieval-tiny__full__full__f16', 'predictions.jsonl'), 'utf8')
      .trim().split('\n').map((l) => JSON.parse(l) as { id: string });
    expect(preds.map((p) => p.id).sort()).toEqual(['gen-passkey-512-9-0', 'gen-passkey-512-9-1']);
  });

  it('bad flags: one line naming the flag, exit 1', () => {
    const out = path.join(tmpDir('cokv-genret-'), 'x.jsonl');
    const base = ['gen-retrieval', '--model', MODEL, '--data-dir', asset('data')];
    expectUserError(cokv(...base, '--tasks', 'passkey,twohop', '--out', out), /^cokv: --tasks: 'twohop' must be one of passkey, multikey, kv\n$/);
    expectUserError(cokv(...base, '--lengths', '512,abc', '--out', out), /^cokv: --lengths: 'abc' is not a number\n$/);
    expectUserError(cokv(...base, '--lengths', '4096', '--out', out), /^cokv: --lengths: 4096 is above the maximum 2048\n$/);
    expectUserError(cokv(...base, '--count', '0', '--out', out), /^cokv: --count: 0 is below the minimum 1\n$/);
    expectUserError(cokv(...base), /--out/);
    expect(fs.existsSync(out)).toBe(false);
  });
});
