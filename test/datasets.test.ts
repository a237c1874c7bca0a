import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import { datasetInfo, knownDatasets, loadEvalItems, splitIds, splitItems } from '../src/eval/datasets.js';
import { parseJsonl, readJsonl, stringArrayField } from '../src/eval/jsonl.js';
import {
  DATASET2MAXLEN, DATASET2PROMPT, LONGBENCH_EN_DATASETS, buildLongBenchPrompt, formatTemplate, longBenchGeneration,
  longBenchMaxNewTokens, longBenchTemplate, prepareLongBench, readLongBench, truncateMiddle, useChatTemplate,
} from '../src/eval/longbench.js';
import { readLongEval, readRetrievalSuite, readRuler, readStories, retrievalPrompt } from '../src/eval/retrieval.js';
import { asset, haveAssets, tmpDir } from './helpers.js';

/** Character tokenizer: id = code point + 10, BOS = 0 (added by default), EOS = 1. */
function charTokenizer(): Tokenizer {
  return {
    vocabSize: 0x110000 + 10,
    bosId: 0,
    eosIds: [1],
    addBosDefault: true,
    encode: (text, opts) => [...(opts?.addSpecial === false ? [] : [0]), ...Array.from(text, (c) => c.codePointAt(0)! + 10)],
    decode: (ids, opts) => ids.filter((i) => i >= 10 || opts?.skipSpecial === false).map((i) => (i >= 10 ? String.fromCodePoint(i - 10) : `<${i}>`)).join(''),
    tokenText: (id) => (id >= 10 ? String.fromCodePoint(id - 10) : `<${id}>`),
  };
}

describe('jsonl', () => {
  it('names file and line for malformed lines; blank lines are ignored', () => {
    const text = '{"a": 1}\n\n{"a": 2\n[1]\n';
    expect(() => parseJsonl(text, 'p.jsonl')).toThrow(/^p\.jsonl:3: invalid JSON/);
    const warnings: string[] = [];
    const recs = parseJsonl(text, 'p.jsonl', { onBadLine: 'skip', warn: (m) => warnings.push(m) });
    expect(recs.map((r) => r.line)).toEqual([1]);
    expect(warnings).toEqual([expect.stringMatching(/^p\.jsonl:3: invalid JSON .*; line skipped$/), 'p.jsonl:4: expected a JSON object, got an array; line skipped']);
    expect(parseJsonl('\ufeff{"x":1}\r\n', 'f')[0].value).toEqual({ x: 1 });
  });

  it('field errors name the line and field', () => {
    const [rec] = parseJsonl('\n{"answers": "x"}', 'f.jsonl');
    expect(() => stringArrayField(rec, 'answers', 'f.jsonl')).toThrow("f.jsonl:2: field 'answers' must be an array of strings");
    expect(() => stringArrayField(rec, 'other', 'f.jsonl')).toThrow("f.jsonl:2: missing field 'other'");
  });

  it('a missing file is one CokvError line', () => {
    expect(() => readJsonl('/nonexistent/x.jsonl')).toThrow(new CokvError('/nonexistent/x.jsonl: cannot read (no such file)', 'file'));
  });
});

describe('LongBench config and prompts', () => {
  it('has templates and max lengths for all 16 English tasks', () => {
    expect(LONGBENCH_EN_DATASETS).toHaveLength(16);
    const byLen: Record<number, string[]> = {};
    for (const d of LONGBENCH_EN_DATASETS) {
      expect(DATASET2PROMPT[d]).toContain('{context}');
      const p = buildLongBenchPrompt(d, { fields: { context: 'CTX', input: 'INP', answers: [] } });
      expect(p).toContain('CTX');
      expect(p).not.toMatch(/\{(context|input)\}/);
      (byLen[longBenchMaxNewTokens(d)] ??= []).push(d);
    }
    // spec §6
    expect(byLen[32].sort()).toEqual(['2wikimqa', 'hotpotqa', 'musique', 'passage_count', 'passage_retrieval_en', 'triviaqa']);
    expect(byLen[64].sort()).toEqual(['lcc', 'multifieldqa_en', 'repobench-p', 'trec']);
    expect(byLen[128].sort()).toEqual(['narrativeqa', 'qasper', 'samsum']);
    expect(byLen[512].sort()).toEqual(['gov_report', 'multi_news', 'qmsum']);
    expect(DATASET2PROMPT.narrativeqa).toContain('asconcisely'); // original typo kept
  });

  it('matches the shared reference copies verbatim', () => {
    if (!haveAssets) return;
    expect(DATASET2PROMPT).toEqual(JSON.parse(fs.readFileSync(asset('data/longbench/dataset2prompt.json'), 'utf8')));
    expect(DATASET2MAXLEN).toEqual(JSON.parse(fs.readFileSync(asset('data/longbench/dataset2maxlen.json'), 'utf8')));
  });

  it('formats like Python str.format', () => {
    expect(formatTemplate('{context}|{input}', { context: 'a {input} b', input: 'I' })).toBe('a {input} b|I');
    expect(formatTemplate('{{x}} {n}', { n: 5 })).toBe('{x} 5');
    expect(() => formatTemplate('{input}', {})).toThrow(/needs field 'input'/);
    expect(() => formatTemplate('a } b', {})).toThrow(/single '}'/);
    expect(longBenchTemplate('lcc', { qwen3: true })).toContain('Do not include any explanations');
    expect(buildLongBenchPrompt('repobench-p', { fields: { context: 'C', input: 'I' } })).toBe('Please complete the code given below. \nCINext line of code:\n');
  });

  it('unknown dataset names list the known ones', () => {
    expect(() => longBenchMaxNewTokens('dureader')).toThrow(/unknown LongBench dataset 'dureader' \(known: narrativeqa, qasper, .*repobench-p\)/);
    expect(() => datasetInfo('xyz')).toThrow(/unknown dataset 'xyz' \(known: .*retrieval, ruler, longeval, stories\)/);
    expect(knownDatasets()).toHaveLength(20);
    expect(datasetInfo('samsum')).toMatchObject({ metric: 'rouge_l', firstLine: true, maxNewTokens: 128, stopAtNewline: true });
  });

  it('chat template rule', () => {
    expect(useChatTemplate('hotpotqa')).toBe(false);
    expect(useChatTemplate('hotpotqa', true)).toBe(true);
    for (const d of ['trec', 'triviaqa', 'samsum', 'lcc', 'repobench-p']) expect(useChatTemplate(d, true)).toBe(false);
  });

  it('middle truncation: decode(head) + decode(tail), then tokenize again', () => {
    const tok = charTokenizer();
    // ids = [BOS, a..j] (11) > 6 → half 3 → head [BOS, a, b] → "ab", tail [h, i, j] → "hij"
    const t = truncateMiddle('abcdefghij', tok, 6);
    expect(t).toMatchObject({ prompt: 'abhij', truncated: true, originalLength: 11 });
    expect(t.ids).toEqual([0, ...Array.from('abhij', (c) => c.charCodeAt(0) + 10)]);
    expect(truncateMiddle('abcde', tok, 6)).toMatchObject({ prompt: 'abcde', truncated: false });
    // odd max: half = int(7/2) = 3
    expect(truncateMiddle('abcdefghij', tok, 7).prompt).toBe('abhij');
  });

  it('generation settings: samsum stops at the id of "\\n" and needs one token', () => {
    const tok = charTokenizer();
    expect(longBenchGeneration('samsum', tok)).toEqual({ maxNewTokens: 128, extraStopIds: [10 + 10], minNewTokens: 1 });
    expect(longBenchGeneration('gov_report', tok)).toEqual({ maxNewTokens: 512, extraStopIds: [], minNewTokens: 0 });
    const p = prepareLongBench('trec', { fields: { context: 'c', input: 'i' } }, tok, { chat: true });
    expect(p.chat).toBe(false);
    expect(p.prompt).toBe('Please determine the type of the question below. Here are some examples of questions.\n\nc\ni');
  });
});

describe('split', () => {
  const ids = Array.from({ length: 200 }, (_, i) => `id-${i}`);

  it('is deterministic, 15/85, disjoint, order-independent', () => {
    const a = splitIds(ids, 42);
    expect(a.validation).toHaveLength(30);
    expect(a.test).toHaveLength(170);
    expect(new Set([...a.validation, ...a.test]).size).toBe(200);
    expect(splitIds(ids, 42)).toEqual(a);
    const rev = splitIds([...ids].reverse(), 42);
    expect([...rev.validation].sort()).toEqual([...a.validation].sort());
    expect(splitIds(ids, 43).validation).not.toEqual(a.validation);
    // input order is kept inside each part
    expect(a.validation).toEqual([...a.validation].sort((x, y) => Number(x.slice(3)) - Number(y.slice(3))));
  });

  it('edge cases', () => {
    expect(splitIds([], 1)).toEqual({ validation: [], test: [] });
    expect(splitIds(['a', 'b'], 1, 0).validation).toEqual([]);
    expect(() => splitIds(['a', 'a'], 1)).toThrow(/duplicate id 'a'/);
    expect(() => splitIds(['a'], 1.5)).toThrow(CokvError);
    const items = ids.map((id) => ({ id, x: 1 }));
    expect(splitItems(items, 42).validation.map((i) => i.id)).toEqual(splitIds(ids, 42).validation);
  });
});

describe.skipIf(!haveAssets)('shared data files', () => {
  it('multi_news: 200 samples → prompts', () => {
    const file = asset('data/longbench/multi_news.jsonl');
    const samples = readLongBench(file);
    expect(samples).toHaveLength(200);
    expect(new Set(samples.map((s) => s.id)).size).toBe(200);
    const items = loadEvalItems('multi_news', file);
    expect(items[0].prompt.startsWith('You are given several news passages. Write a one-page summary of all news. \n\nNews:\nPassage 1:')).toBe(true);
    expect(items[0].prompt.endsWith('\n\nNow, write a one-page summary of all the news.\n\nSummary:')).toBe(true);
    expect(items[0].answers[0]).toMatch(/^The Occupy LA encampment/);
  });

  it('retrieval suite, RULER, LongEval and stories', () => {
    const r = readRetrievalSuite(asset('data/retrieval-dev.jsonl'));
    expect(r).toHaveLength(300);
    expect(new Set(r.map((i) => i.id)).size).toBe(300);
    expect(r[0]).toMatchObject({ id: 'passkey-512-0', task: 'passkey', length: 512, answers: ['66013'] });
    expect(r[0].prompt.endsWith('\nQuestion: What is the pass key mentioned in the text above? Answer: The pass key is')).toBe(true);
    expect(retrievalPrompt({ context: 'c', input: 'i' })).toBe('c\ni');
    const ruler = readRuler(asset('data/synthetic/ruler_4096_niah_multikey_3.jsonl'));
    expect(ruler).toHaveLength(500);
    expect(ruler[0].answers).toEqual(['1ee34dc4-3b04-4a8b-805b-fdc94e7ed827']);
    const le = readLongEval(asset('data/synthetic/longeval_lines_200.jsonl'));
    expect(le).toHaveLength(50);
    expect(le[0]).toMatchObject({ id: 'torpid-kid', answers: ['2416'] });
    const st = readStories(asset('data/stories/stories-dev.jsonl'));
    expect(st).toHaveLength(60);
    expect(st[0]).toMatchObject({ id: 'stories-2026-0', answers: ["n't want to complete the candy while picking"] });
  });

  it('missing fields are reported with file and line', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'lb.jsonl');
    fs.writeFileSync(f, '{"input":"","context":"c","answers":["a"]}\n{"input":"","answers":["a"]}\n');
    expect(() => readLongBench(f)).toThrow(`${f}:2: missing field 'context'`);
  });
});
