import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tmpDir, cokv } from './helpers.js';

/** Run the CLI from source, like `npx cokv …` after a build. */
function jsonl(lines: (object | string)[]): string {
  const file = path.join(tmpDir('cokv-score-'), 'pred.jsonl');
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

describe('cokv score', () => {
  it('prints dataset, n, score and per-sample scores', () => {
    const classes = ['Human', 'Location', 'Number'];
    const file = jsonl([
      { prediction: '\nLocation\nHuman', answers: ['Location'], all_classes: classes }, // first line → 1
      { prediction: 'Human or Number', answers: ['Human'], all_classes: classes }, // 2 matches → 1/2
      { prediction: 'no idea', answers: ['Number'], all_classes: classes }, // 0
    ]);
    const r = cokv('score', '--dataset', 'trec', '--predictions', file);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // round(100 · 1.5 / 3, 2) = 50
    expect(JSON.parse(r.stdout)).toEqual({ dataset: 'trec', n: 3, score: 50, scores: [1, 0.5, 0] });
  });

  it('accepts LongBench pred files (pred field) and other suites', () => {
    const file = jsonl([{ pred: 'Paragraph 3', answers: ['Paragraph 3'], all_classes: null, length: 100 }, { pred: 'Paragraph 1 or 2', answers: ['Paragraph 2'] }]);
    const r = cokv('score', '--dataset', 'passage_retrieval_en', '--predictions', file);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ n: 2, score: 75, scores: [1, 0.5] });
    const f2 = jsonl([{ prediction: ' 66013.', answers: ['66013'] }, { prediction: ' 6601', answers: ['66013'] }, { prediction: ' 1', answers: ['1'] }]);
    const r2 = cokv('score', '--dataset', 'retrieval', '--predictions', f2);
    expect(JSON.parse(r2.stdout)).toMatchObject({ dataset: 'retrieval', n: 3, score: 66.67 });
  });

  it('a malformed line stops with its line number, or is skipped with --skip-bad-lines', () => {
    const file = jsonl([{ prediction: 'x', answers: ['x'] }, '{"prediction": "b", "answers": [', { prediction: 'c', answers: ['d'] }]);
    const r = cokv('score', '--dataset', 'hotpotqa', '--predictions', file);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^cokv: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: invalid JSON [^\\n]*\\n$`));
    const s = cokv('score', '--dataset', 'hotpotqa', '--predictions', file, '--skip-bad-lines');
    expect(s.code).toBe(0);
    expect(s.stderr).toMatch(/warning: .*:2: invalid JSON .*line skipped/);
    expect(JSON.parse(s.stdout)).toEqual({ dataset: 'hotpotqa', n: 2, score: 50, scores: [1, 0] });
  });

  it('bad input gives one clear line and exit 1', () => {
    const ok = jsonl([{ prediction: 'a', answers: ['a'] }]);
    const unknown = cokv('score', '--dataset', 'nonsense', '--predictions', ok);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^cokv: unknown dataset 'nonsense' \(known: narrativeqa, .*, repobench-p, retrieval, ruler, longeval, stories\)\n$/);

    const missing = cokv('score', '--dataset', 'qasper', '--predictions', jsonl([{ prediction: 'a', answers: ['a'] }, { prediction: 'a' }]));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^cokv: .*pred\.jsonl:2: missing field 'answers'\n$/);

    const badType = cokv('score', '--dataset', 'qasper', '--predictions', jsonl([{ prediction: 3, answers: ['a'] }]));
    expect(badType.stderr).toMatch(/pred\.jsonl:1: field 'prediction' must be a string\n$/);

    const noClasses = cokv('score', '--dataset', 'trec', '--predictions', ok);
    expect(noClasses.code).toBe(1);
    expect(noClasses.stderr).toMatch(/pred\.jsonl:1: missing field 'all_classes' \(needed by trec\)\n$/);

    const noParagraph = cokv('score', '--dataset', 'passage_retrieval_en', '--predictions', ok);
    expect(noParagraph.code).toBe(1);
    expect(noParagraph.stderr).toMatch(/pred\.jsonl:1: retrieval answer 'a' has no 'Paragraph N'\n$/);

    const nofile = cokv('score', '--dataset', 'lcc', '--predictions', '/nonexistent/pred.jsonl');
    expect(nofile.code).toBe(1);
    expect(nofile.stderr).toBe('cokv: /nonexistent/pred.jsonl: cannot read (no such file)\n');

    const empty = cokv('score', '--dataset', 'lcc', '--predictions', jsonl(['']));
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/pred\.jsonl: no predictions\n$/);
  });
});
