import { describe, expect, it } from 'vitest';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import {
  DEFAULT_ANSWER, NeedleBuilder, buildHaystack, contextLengths, depthPercents, gridResult, linspaceRound, needleScore,
  readHaystackFiles,
} from '../src/eval/needle.js';
import { asset, haveAssets } from './helpers.js';

/**
 * Deterministic word tokenizer: a token is a run of letters/digits or one other character, with the whitespace
 * before it attached (trailing whitespace is its own token). Ids are handed out on first sight; decode is exact.
 */
function wordTokenizer(): Tokenizer & { pieces: string[] } {
  const pieces: string[] = ['<s>', '</s>'];
  const ids = new Map<string, number>();
  const id = (p: string): number => {
    let i = ids.get(p);
    if (i === undefined) {
      i = pieces.length;
      pieces.push(p);
      ids.set(p, i);
    }
    return i;
  };
  return {
    pieces,
    get vocabSize() { return pieces.length; },
    bosId: 0,
    eosIds: [1],
    addBosDefault: true,
    encode: (text, opts) => [...(opts?.addSpecial === false ? [] : [0]), ...(text.match(/\s*(?:[A-Za-z0-9']+|[^\sA-Za-z0-9'])|\s+$/g) ?? []).map(id)],
    decode: (list, opts) => list.filter((i) => i > 1 || opts?.skipSpecial === false).map((i) => pieces[i]).join(''),
    tokenText: (i) => pieces[i],
  };
}

const HAY = 'One two three. Four five six. Seven eight nine. Ten eleven twelve.';

describe('needle grid axes', () => {
  it('depths = round(linspace(0, 100, n)) with half-to-even', () => {
    expect(depthPercents()).toEqual([0, 11, 22, 33, 44, 56, 67, 78, 89, 100]);
    // 12.5 → 12, 37.5 → 38, 62.5 → 62, 87.5 → 88 (numpy rounds half to even)
    expect(depthPercents(9)).toEqual([0, 12, 25, 38, 50, 62, 75, 88, 100]);
    expect(linspaceRound(0, 100, 1)).toEqual([0]);
    expect(() => depthPercents(0)).toThrow(/positive integer/);
  });

  it('lengths = arange(start, end + 1, step)', () => {
    expect(contextLengths(1000, 31000, 1000)).toHaveLength(31);
    expect(contextLengths(1000, 31000, 2500)).toEqual([1000, 3500, 6000, 8500, 11000, 13500, 16000, 18500, 21000, 23500, 26000, 28500, 31000]);
  });
});

describe('needle builder (word tokenizer)', () => {
  it('repeats the texts until there are enough tokens', () => {
    const tok = wordTokenizer();
    // HAY is 16 tokens; 40 tokens need 3 copies
    expect(buildHaystack([HAY], tok, 40)).toBe(HAY.repeat(3));
  });

  it('trims to length − margin − |needle| and moves the needle back to a period', () => {
    const tok = wordTokenizer();
    const b = new NeedleBuilder(tok, buildHaystack([HAY], tok, 20), {
      needle: '\nThe needle.\n', question: 'Q?', template: '[{context}] {question}', margin: 4,
    });
    // haystack trimmed to 20 tokens; needle = "\nThe", " needle", ".", "\n" (4); budget 20 − 4 = 16 → 12 context
    // tokens: One two three . Four five six . Seven eight nine .
    // depth 50: ⌊12 · 0.5⌋ = 6; tokens 5 ("five") and 4 ("Four") are not periods, token 3 is → insert at 4
    const c = b.build(20, 50);
    expect(c.insertionPoint).toBe(4);
    expect(c.contextTokens).toBe(16);
    expect(c.context).toBe('One two three.\nThe needle.\n Four five six. Seven eight nine.');
    expect(c.prompt).toBe('[One two three.\nThe needle.\n Four five six. Seven eight nine.] Q?');
    expect(b.build(20, 0).context).toBe('\nThe needle.\nOne two three. Four five six. Seven eight nine.');
    expect(b.build(20, 100).context).toBe('One two three. Four five six. Seven eight nine.\nThe needle.\n');
    // depth 95: ⌊12 · 0.95⌋ = 11 → back to 8 (after the second ".")
    expect(b.build(20, 95).insertionPoint).toBe(8);
  });

  it('the grid is depth-major and the default prompt follows the reference', () => {
    const tok = wordTokenizer();
    const b = new NeedleBuilder(tok, buildHaystack([HAY], tok, 400), { margin: 10 });
    const lengths = [60, 100];
    const depths = depthPercents(3);
    const g = b.grid(lengths, depths);
    expect(g).toHaveLength(3);
    expect(g[1].map((c) => [c.depth, c.length])).toEqual([[50, 60], [50, 100]]);
    for (const row of g) for (const c of row) expect(c.contextTokens).toBeLessThanOrEqual(c.length - 10);
    expect(g[0][0].prompt.startsWith('<|im_start|> This is a very long story book: <book> \nThe best thing to do in San Francisco')).toBe(true);
    expect(g[0][0].prompt.endsWith(' </book>.\n Based on the content of the book, Question: The best thing to do in San Francisco is: \nAnswer:')).toBe(true);
  });

  it('rejects bad arguments', () => {
    const tok = wordTokenizer();
    const b = new NeedleBuilder(tok, HAY);
    expect(() => b.build(0, 10)).toThrow(/positive integer/);
    expect(() => b.build(100, 101)).toThrow(/depth/);
    expect(() => new NeedleBuilder(tok, HAY, { template: 'no context' })).toThrow(/\{context\}/);
  });
});

describe('needle score (word overlap)', () => {
  it('matches the reference formula', () => {
    // answer words (lowercased, as a set): eat a sandwich and sit in dolores park on sunny day. → 11
    expect(needleScore(' Eat a sandwich and sit in Dolores Park on a sunny day. Then go home.')).toBe(1);
    // only the first len(answer) = 54 characters count: {eat, a, sandwich} → 3/11
    expect(needleScore('eat a sandwich')).toBeCloseTo(3 / 11, 15);
    // "day" ≠ "day."
    expect(needleScore('day')).toBe(0);
    expect(needleScore('   ')).toBe(0);
    expect(needleScore(`${'x'.repeat(54)} eat`)).toBe(0);
    expect(needleScore('blue', 'Blue')).toBe(1);
    expect(DEFAULT_ANSWER).toHaveLength(54);
  });

  it('grid result structure', () => {
    const r = gridResult([1000, 2000], [0, 50, 100], (d, l) => (d === 0 ? 1 : l * 0.5));
    expect(r.scores).toEqual([[1, 1], [0, 0.5], [0, 0.5]]);
    expect(r.mean).toBe(0.5);
    expect(r.meanByLength).toEqual([1 / 3, 2 / 3]);
    expect(r.meanByDepth).toEqual([1, 0.25, 0.25]);
  });
});

describe.skipIf(!haveAssets)('Paul Graham haystack', () => {
  it('reads the essays in name order and builds a case', () => {
    const texts = readHaystackFiles(asset('data/needle/PaulGrahamEssays'));
    expect(texts.length).toBeGreaterThanOrEqual(40);
    const tok = wordTokenizer();
    const b = new NeedleBuilder(tok, buildHaystack(texts, tok, 3000));
    const c = b.build(3000, 56);
    expect(c.contextTokens).toBeLessThanOrEqual(2800);
    expect(c.context).toContain('\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n');
    // the needle follows a period
    expect(c.context.slice(0, c.context.indexOf('\nThe best thing')).trimEnd().endsWith('.')).toBe(true);
  });
});
