import { describe, expect, it } from 'vitest';
import {
  ROUGE_RECON_FRAME_LIMIT, aggregateScores, classificationScore, codeSimScore, countScore, exactMatchScore, firstLine,
  fuzzRatio, normalizeAnswer, numberMatchScore, pyRound, pySplit, qaF1Score, retrievalScore, rougeL, rougeScore,
  scoreDataset, scoreSample, sequenceMatcherRatio, substringMatchScore,
} from '../src/eval/metrics.js';
import { CokvError } from '../src/errors.js';

// Every expected value below was worked out by hand (arithmetic in the comments) and cross-checked against
// LongBench metrics.py + rouge 1.0.1 + fuzzywuzzy 0.18.0 (pure difflib) on CPython 3.11.

describe('python helpers', () => {
  it('pySplit uses Python whitespace (0x1c-0x1f, U+0085 yes; U+FEFF no)', () => {
    expect(pySplit('  a\x1cb\u0085c\u3000d  ')).toEqual(['a', 'b', 'c', 'd']);
    expect(pySplit('a\ufeffb')).toEqual(['a\ufeffb']);
    expect(pySplit('')).toEqual([]);
  });

  it('pyRound rounds the exact binary value, ties to even', () => {
    expect(pyRound(0.125, 2)).toBe(0.12); // exact tie 12.5/100 → even 12
    expect(pyRound(0.375, 2)).toBe(0.38); // exact tie → even 38
    expect(pyRound(12.125, 2)).toBe(12.12);
    expect(pyRound(2.675, 2)).toBe(2.67); // 2.675 is 2.67499999… in binary
    expect(pyRound(1.005, 2)).toBe(1); // 1.00499999…
    expect(pyRound(33.33333, 2)).toBe(33.33);
    expect(pyRound(12.5)).toBe(12);
    expect(pyRound(37.5)).toBe(38);
    expect(pyRound(0.5)).toBe(0);
    expect(pyRound(9.52)).toBe(10);
  });
});

describe('qa_f1', () => {
  it('normalises like normalize_answer', () => {
    expect(normalizeAnswer('The Cat, sat on a mat!')).toBe('cat sat on mat');
    // Python's \b is Unicode-aware: "a" after "é" is inside a word and stays.
    expect(normalizeAnswer('éa b')).toBe('éa b');
    // "_" and "-" are in string.punctuation, so they are deleted before articles are looked for.
    expect(normalizeAnswer('a_b the-end')).toBe('ab theend');
  });

  it('token F1', () => {
    // pred → "cat sat on mat" (4), gt → "cat sat on hat" (4); common 3; P = R = 3/4; F1 = 0.75
    expect(qaF1Score('The cat sat on the mat.', 'A cat sat on a hat')).toBe(0.75);
    // multiset: common = min(3,1) = 1; P = 1/3, R = 1/2; F1 = 2·(1/6)/(5/6) = 0.4
    expect(qaF1Score('cat cat cat', 'cat dog')).toBeCloseTo(0.4, 15);
    // unicode lower-casing: "ångström units" vs "ångström": common 1, P = 1/2, R = 1 → 2/3
    expect(qaF1Score('Ångström units', 'ångström')).toBeCloseTo(2 / 3, 15);
  });

  it('empty and punctuation-only predictions score 0', () => {
    expect(qaF1Score('', 'x')).toBe(0);
    expect(qaF1Score('?!.', 'x')).toBe(0);
    expect(qaF1Score('the', 'the')).toBe(0); // both normalise to "" → no tokens in common
  });
});

describe('rouge_l (pltrdy rouge 1.0.1)', () => {
  it('summary-level union LCS over "."-split sentences', () => {
    // hyp sentences: "the cat sat", "on the mat"; ref: "the cat is on the mat".
    // m = |{the,cat,is,on,mat}| = 5, n = |{the,cat,sat,on,mat}| = 5
    // LCS(ref, s1) = the cat; LCS(ref, s2) = on the mat; union {the,cat,on,mat} = 4
    // R = P = 0.8; F = 2·0.64/(1.6 + 1e-8)
    expect(rougeScore('the cat sat. on the mat', 'the cat is on the mat')).toBe(2 * ((0.8 * 0.8) / (0.8 + 0.8 + 1e-8)));
    const r = rougeL('the cat sat. on the mat', 'the cat is on the mat');
    expect(r.p).toBe(0.8);
    expect(r.r).toBe(0.8);
  });

  it('is case-sensitive', () => {
    // {The,cat} vs {the,cat}: LCS "cat" → 1; R = P = 1/2; F = 2·0.25/(1 + 1e-8)
    expect(rougeScore('The cat', 'the cat')).toBe(2 * (0.25 / (1 + 1e-8)));
  });

  it('empty hypotheses raise inside rouge → 0', () => {
    expect(rougeScore('', 'a b')).toBe(0); // no sentences → "Hypothesis is empty."
    expect(rougeScore('...', 'a b')).toBe(0); // only empty pieces
    expect(rougeScore('a b', '')).toBe(0); // "Reference is empty."
    // " . " keeps two whitespace pieces that normalise to "": hyp words {""}, nothing in common → 0 (no error)
    expect(rougeScore(' . ', 'a b')).toBe(0);
    expect(rougeScore(' . ', ' . ')).toBeCloseTo(1, 7); // "" matches "": R = P = 1, F = 2/(2+1e-8)
  });

  it('reproduces the recursion-limit failure of the recursive LCS reconstruction', () => {
    const sentence = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`).join(' ');
    // 990 words vs "w0": backtracking walks 990 steps left → 991 frames: fits. m = 1, n = 990, llcs = 1
    // R = 1, P = 1/990, F = 2·(1/990)/(1 + 1/990 + 1e-8)
    expect(ROUGE_RECON_FRAME_LIMIT).toBe(991);
    expect(rougeScore(sentence(990), 'w0')).toBe(2 * ((1 / 990) / (1 / 990 + 1 + 1e-8)));
    // one word more → RecursionError in Python → 0
    expect(rougeScore(sentence(991), 'w0')).toBe(0);
    // the same words split into sentences are fine
    expect(rougeScore(sentence(991).replace(/ w5/g, '. w5'), 'w0')).toBeGreaterThan(0);
  });
});

describe('classification', () => {
  it('replicates removing from the list while iterating over it', () => {
    // matches = [A, AB, ABC] (all substrings of "ABC"). i=0: "A" ⊂ gt, ≠ gt → removed → [AB, ABC];
    // i=1 now looks at "ABC" (= gt, kept), so "AB" is skipped and survives → 1/len([AB, ABC]) = 0.5
    expect(classificationScore('ABC', 'ABC', ['A', 'AB', 'ABC'])).toBe(0.5);
    expect(classificationScore('ABC', 'ABC', ['ABC', 'AB', 'A'])).toBe(0.5); // i=1 removes AB, i=2 out of range, A stays
    expect(classificationScore('Location', 'Human', ['Human', 'Location'])).toBe(0);
    expect(classificationScore('', 'Human', ['Human'])).toBe(0);
    expect(classificationScore('Human', 'Human', ['Human', 'Location'])).toBe(1);
  });
});

describe('retrieval and count', () => {
  it('share of numbers equal to the paragraph id', () => {
    // numbers [12, 3]; one equals 12 → 1/2
    expect(retrievalScore('Paragraph 12, not paragraph 3', 'Paragraph 12')).toBe(0.5);
    expect(retrievalScore('none', 'Paragraph 1')).toBe(0);
    // Python \d matches Arabic-Indic digits, but "١٢" ≠ "12"
    expect(retrievalScore('Paragraph ١٢', 'Paragraph 12')).toBe(0);
    expect(() => retrievalScore('1', 'no id')).toThrow(CokvError);
  });

  it('count: numbers equal to the answer', () => {
    // numbers [7, 17]; 17 ≠ 7 (whole-number compare) → 1/2
    expect(countScore('There are 7 unique paragraphs out of 17', '7')).toBe(0.5);
    expect(countScore('seven', '7')).toBe(0);
  });
});

describe('code_sim (fuzz.ratio over difflib)', () => {
  it('first line without ` # // and the ratio', () => {
    // line = "x = foo(1)" vs "x = foo(2)": blocks "x = foo(" (8) + ")" (1) = 9; ratio = 18/20 → 90 → 0.9
    expect(codeSimScore('```python\n# comment\nx = foo(1)\n', 'x = foo(2)')).toBe(0.9);
    expect(codeSimScore('', '')).toBe(1); // equal strings → 100 even when empty
    expect(codeSimScore('# only comment', 'abc')).toBe(0); // line "" → 0
    expect(codeSimScore('\n\ny = 2', 'y = 2')).toBe(1); // leading newlines stripped
  });

  it('rounds 100·ratio half to even', () => {
    // 1 matching char of 16: 2/16 = 0.125 → 12.5 → 12
    expect(fuzzRatio('abcdefgh', 'aXXXXXXX')).toBe(12);
    // 3 of 16: 6/16 = 0.375 → 37.5 → 38
    expect(fuzzRatio('abcdefgh', 'abcXXXXX')).toBe(38);
  });

  it('autojunk drops popular characters of b when b has ≥ 200 chars', () => {
    // b = "a"×200: "a" occurs 200 > 200//100 + 1 = 3 times → popular → no match can start; "b" ≠ "a" blocks the
    // extension from (0, 0) → 0 matches → 0
    expect(codeSimScore(`b${'a'.repeat(10)}`, 'a'.repeat(200))).toBe(0);
    // 199 chars: no autojunk; 10 matches; 20/210 = 0.0952 → 9.52 → 10
    expect(codeSimScore(`b${'a'.repeat(10)}`, 'a'.repeat(199))).toBe(0.1);
    // a popular char can still extend a match found from (0,0): "a"×10 vs "a"×200 → 10 matches → 20/210 → 10
    expect(fuzzRatio('a'.repeat(10), 'a'.repeat(200))).toBe(10);
    expect(sequenceMatcherRatio(`b${'a'.repeat(10)}`, 'a'.repeat(200), false)).toBeCloseTo(20 / 211, 15);
  });

  it('counts code points, not UTF-16 units', () => {
    // [😀, a] vs [😀, b]: 1 match of 4 → 0.5 (UTF-16 would give 4/6)
    expect(codeSimScore('😀a', '😀b')).toBe(0.5);
  });
});

describe('other suites', () => {
  it('exact match strips leading space and trailing punctuation', () => {
    expect(exactMatchScore(' 66013.', '66013')).toBe(1);
    expect(exactMatchScore(' 66013\nQuestion', '66013')).toBe(1);
    expect(exactMatchScore(' 6601', '66013')).toBe(0);
    expect(exactMatchScore(' FOYA BIWR VCRZ MJSO', 'FOYA BIWR VCRZ MJSO')).toBe(1);
  });

  it('substring and number match', () => {
    expect(substringMatchScore('The uuid is ABC-1.', 'abc-1')).toBe(1);
    expect(substringMatchScore('', 'x')).toBe(0);
    expect(numberMatchScore('<REGISTER_CONTENT> is <2416>', '2416')).toBe(1);
    expect(numberMatchScore('24160', '2416')).toBe(0);
  });
});

describe('scoreDataset (eval.py scorer)', () => {
  it('first-line rule and max over answers', () => {
    // trec: "\n\nLocation\nHuman" → "Location" → 1; "Human" vs answers [Location, Human] → max(0, 1) = 1 → 100
    const r = scoreDataset('trec', ['\n\nLocation\nHuman', 'Human'], [['Location'], ['Location', 'Human']], ['Human', 'Location']);
    expect(r).toEqual({ score: 100, scores: [1, 1] });
    // without the rule (narrativeqa keeps every line): "x\ny" vs "x" → P = 1/2, R = 1 → 2/3
    expect(scoreSample('narrativeqa', 'x\ny', ['x'])).toBeCloseTo(2 / 3, 15);
    expect(scoreSample('triviaqa', 'x\ny', ['x'])).toBe(1);
    expect(firstLine('\n\na\nb')).toBe('a');
  });

  it('round(100·total/n, 2) with Python tie rounding', () => {
    // 32 numbers, one right → 1/32; 24 more samples at 0; 100·(1/32)/25 = 0.125 exactly → round half even → 0.12
    const preds = [`7${' 0'.repeat(31)}`, ...Array(24).fill('0')];
    const r = scoreDataset('passage_count', preds, preds.map(() => ['7']));
    expect(r.scores[0]).toBe(1 / 32);
    expect(r.score).toBe(0.12);
    // 1/3 → 33.33
    expect(scoreDataset('lcc', ['x', 'y', 'z'], [['x'], ['q'], ['r']]).score).toBe(33.33);
    expect(aggregateScores([1, 0])).toBe(50);
  });

  it('per-sample all_classes and errors', () => {
    expect(scoreDataset('trec', ['A', 'B'], [['A'], ['B']], [['A'], ['B']]).score).toBe(100);
    expect(() => scoreDataset('trec', ['A'], [['A']])).toThrow(/all_classes/);
    expect(() => scoreDataset('nope', ['A'], [['A']])).toThrow(/unknown dataset 'nope' \(known: narrativeqa, qasper/);
    expect(() => scoreDataset('lcc', ['A'], [])).toThrow(CokvError);
    expect(() => scoreDataset('lcc', [], [])).toThrow(/no predictions/);
  });
});
