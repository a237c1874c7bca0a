/**
 * The one results record (src/results): metrics.json → record → summary.json → record keeps every field; the
 * repo's results/summary.json (written before the record existed) still loads; `cokv report` and the summary step
 * read the same records from one folder and show the same tables; malformed files are skipped with one warning.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { buildModel, buildReport, readResults } from '../src/eval/report.js';
import { summary } from '../src/experiments/summary.js';
import {
  SUMMARY_ENTRY_KEYS, readRunRecords, readSummaryFile, recordFromMetrics, resultsDocument, summaryEntry, tagStorageVariants, toHtml, toMarkdown, writeSummaryFile, type RunRecord,
} from '../src/results/index.js';
import { repoRoot, tmpDir } from './helpers.js';

const made: string[] = [];
afterAll(() => { for (const d of made) fs.rmSync(d, { recursive: true, force: true }); });
function dir(): string {
  const d = tmpDir('cokv-results-');
  made.push(d);
  return d;
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value, null, 2));
}

/** A metrics.json as the eval runner writes it. */
function metrics(press: string, budget: number | null, score: number, settings: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    dataset: 'retrieval', model: 'cokv-retrieval-tiny', modelPath: '../shared/assets/models/cokv-retrieval-tiny', press, budget, protocol: 'question-aware',
    metric: 'exact_match', score, n: 17, ci95: [score - 5, score + 5], keptKvBytes: 1000 + (budget ?? 4000), fullKvBytes: 5000, settingsHash: 'ab12',
    settings: { window: 8, kvDtype: 'f32', split: 'test', subset: ['kv'], lengths: [512], itemIds: ['kv-512-0', 'kv-512-1'], ...settings },
    timings: { prefillMs: 12.5, decodeMsPerToken: 0.75, seconds: 0.5 }, createdAt: '2026-12-03T15:00:00.000Z', ...extra,
  };
}

/** An experiments-style runs folder: a main sweep, a quant variant, a baselines variant, a loglik run and a ratio run. */
function writeRuns(root: string): void {
  const main = path.join(root, 'retrieval-kv-512');
  writeJson(path.join(main, 'retrieval__cokv-retrieval-tiny__full__full/metrics.json'), metrics('full', null, 90));
  writeJson(path.join(main, 'retrieval__cokv-retrieval-tiny__snapkv__64/metrics.json'), metrics('snapkv', 64, 70));
  writeJson(path.join(main, 'retrieval__cokv-retrieval-tiny__cokv__64/metrics.json'),
    metrics('cokv', 64, 80, { profile: 'profiles/m__metric.json', headScores: 'profiles/m__headkv-r2.json', alpha: 1.5 }));
  writeJson(path.join(main, 'retrieval__cokv-retrieval-tiny__headkv__64/metrics.json'),
    metrics('headkv', 64, 75, { profile: 'profiles/m__metric.json', headScores: 'profiles/m__headkv-r2.json' }, { kvScope: 'KV of 1 full-attention layer of 6' }));
  writeJson(path.join(main, 'retrieval__cokv-retrieval-tiny__snapkv__r0.25/metrics.json'), { ...metrics('snapkv', null, 60), ratio: 0.25 });
  writeJson(path.join(root, 'quant/f16/retrieval-kv-512/retrieval__cokv-retrieval-tiny__cokv__128__f16/metrics.json'), metrics('cokv', 128, 78, { kvDtype: 'f16', profile: 'p.json' }));
  writeJson(path.join(root, 'baselines/reference/default/retrieval-kv-512/retrieval__cokv-retrieval-tiny__adakv__64/metrics.json'), metrics('adakv', 64, 66));
  writeJson(path.join(root, 'stories/stories__stories260K__full__full/metrics.json'),
    { ...metrics('full', null, -1.2, { subset: undefined, lengths: undefined }), dataset: 'stories', model: 'stories260K', metric: 'loglik@16', agreement: 100 });
}

const withoutSource = (rs: RunRecord[]) => rs.map(({ source: _source, ...r }) => r);

describe('RunRecord', () => {
  it('metrics.json → record → summary.json → record keeps every field', () => {
    const out = dir();
    const runs = path.join(out, 'runs');
    writeRuns(runs);
    const skipped: string[] = [];
    const records = readRunRecords(runs, (f, p) => skipped.push(`${f}: ${p}`));
    expect(skipped).toEqual([]);
    expect(records).toHaveLength(8);
    // every field a summary.json entry can hold is set on some record here, so the round trip checks each one
    const set = new Set(records.flatMap((r) => Object.keys(r)));
    for (const k of SUMMARY_ENTRY_KEYS) expect(set.has(k), k).toBe(true);

    const file = path.join(out, 'summary.json');
    writeSummaryFile(file, records, { quick: false, seed: 3 }, new Date('2026-12-03T16:00:00Z'));
    const back = readSummaryFile(file, (f, p) => skipped.push(`${f}: ${p}`));
    expect(skipped).toEqual([]);
    expect(back?.meta).toEqual({ generatedAt: '2026-12-03T16:00:00.000Z', quick: false, seed: 3 });
    expect(withoutSource(back!.records)).toEqual(withoutSource(records));
    expect(back!.records[0].source).toBe(`${file} entry 0`);
    // summary.json holds no source and none of the run folder's settings (item ids, hashes stay in the folder)
    const text = fs.readFileSync(file, 'utf8');
    for (const s of ['"source"', 'itemIds', 'settingsHash', 'modelPath']) expect(text).not.toContain(s);
  });

  it('derives task, length, variant, items and the files the press read from the settings and the run folder', () => {
    const runs = path.join(dir(), 'runs');
    writeRuns(runs);
    const by = new Map(readRunRecords(runs, () => {}).map((r) => [r.run, r]));
    const cokv = by.get('retrieval-kv-512/retrieval__cokv-retrieval-tiny__cokv__64')!;
    expect(cokv).toMatchObject({ task: 'kv', promptLength: 512, dataset: 'kv@512', suite: 'retrieval', kvDtype: 'f32', profile: 'profiles/m__metric.json', alpha: 1.5, window: 8, items: 'dev-test' });
    expect(cokv.headScores).toBeUndefined(); // CoKV reads no head scores
    expect(cokv.variant).toBeUndefined();
    const headkv = by.get('retrieval-kv-512/retrieval__cokv-retrieval-tiny__headkv__64')!;
    expect(headkv.headScores).toBe('profiles/m__headkv-r2.json');
    expect(headkv.profile).toBeUndefined(); // HeadKV reads no profile
    expect(by.get('quant/f16/retrieval-kv-512/retrieval__cokv-retrieval-tiny__cokv__128__f16')).toMatchObject({ dataset: 'kv@512 [quant/f16]', variant: 'quant/f16', kvDtype: 'f16' });
    expect(by.get('baselines/reference/default/retrieval-kv-512/retrieval__cokv-retrieval-tiny__adakv__64'))
      .toMatchObject({ dataset: 'kv@512 [baselines/reference/default]', items: 'generated' });
    expect(by.get('stories/stories__stories260K__full__full')).toMatchObject({ task: 'stories', dataset: 'stories', budget: null, agreement: 100 });
    expect(by.get('stories/stories__stories260K__full__full')!.promptLength).toBeUndefined();
  });

  it('a run outside any experiment variant that stores KV as q8 is its own cell beside the f32 ones', () => {
    const f32 = ['full', 'snapkv'].map((p) => recordFromMetrics(metrics(p, p === 'full' ? null : 64, 50), `retrieval__m__${p}__64`, 'x'));
    const q8 = recordFromMetrics(metrics('snapkv', 64, 50, { kvDtype: 'q8' }), 'retrieval__m__snapkv__64__q8', 'x');
    const [a, b, r] = tagStorageVariants([...f32, q8]);
    expect(r).toMatchObject({ dataset: 'kv@512 [kv-dtype/q8]', variant: 'kv-dtype/q8', kvDtype: 'q8' });
    expect([a.variant, b.variant, a.dataset]).toEqual([undefined, undefined, 'kv@512']);
  });

  it("a folder of f16 runs (cokv eval's default storage) is the main result, not an f16 variant of absent f32 runs", () => {
    const root = tmpDir();
    for (const [p, b] of [['full', null], ['snapkv', 64], ['cokv', 64]] as const) {
      const dir = path.join(root, `retrieval__m__${p}__${b ?? 'full'}`);
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'metrics.json'), JSON.stringify(metrics(p, b, 40, { kvDtype: 'f16' })));
    }
    const rs = readRunRecords(root, () => { throw new Error('nothing to skip'); });
    expect(rs.map((r) => [r.dataset, r.variant, r.kvDtype])).toEqual([['kv@512', undefined, 'f16'], ['kv@512', undefined, 'f16'], ['kv@512', undefined, 'f16']]);
  });

  it("the repo's results/summary.json (written before the record) loads, and writes back the same entries", () => {
    const file = path.join(repoRoot, 'results/summary.json');
    const old = JSON.parse(fs.readFileSync(file, 'utf8')) as { entries: Record<string, unknown>[] };
    const skipped: string[] = [];
    const read = readSummaryFile(file, (f, p) => skipped.push(`${f}: ${p}`));
    expect(skipped).toEqual([]);
    expect(read!.records).toHaveLength(old.entries.length);
    expect(old.entries.length).toBeGreaterThan(1000);
    read!.records.forEach((r, i) => {
      const { variant, ...entry } = summaryEntry(r) as unknown as Record<string, unknown>;
      // the old entry exactly (same keys in the same order), plus the variant its dataset label names
      expect(JSON.stringify(entry), `entry ${i}`).toBe(JSON.stringify(old.entries[i]));
      if (variant === undefined) expect(r.dataset, `entry ${i}`).not.toMatch(/\]$/);
      else expect(r.dataset.endsWith(` [${variant}]`), `entry ${i}`).toBe(true);
    });
  });
});

describe('one pipeline: the summary step and cokv report', () => {
  it('read the same records from one folder and show the same tables', async () => {
    const out = dir();
    writeRuns(path.join(out, 'runs'));
    const log: string[] = [];
    await summary({ quick: false, out, assets: out, seed: 0, log: (m) => log.push(m) });
    for (const f of ['summary.json', 'results.md', 'report.html']) expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    expect(log).toContain(`summary: 8 runs → ${path.join(out, 'summary.json')}`);
    const walked = readRunRecords(path.join(out, 'runs'), () => {});
    // cokv report on the folder reads summary.json (not runs/ again): the same records
    const res = readResults(out, () => {});
    expect(res.skipped).toEqual([]);
    expect(withoutSource(res.records)).toEqual(withoutSource(walked));
    // …and so the same tables: results.md's blocks are the report's
    const md = fs.readFileSync(path.join(out, 'results.md'), 'utf8');
    expect(md.startsWith('# cokv results (generated by `cokv experiment summary`, ')).toBe(true);
    expect(md.slice(md.indexOf('\n\n') + 2)).toBe(toMarkdown(resultsDocument({ records: walked })));
    expect(buildModel(res).tables).toEqual(resultsDocument({ records: walked }));
    const html = buildReport(out, { warn: () => {} });
    expect(html).toContain(toHtml(resultsDocument({ records: walked })));
    // one table cell each way: snapkv at B=64 on kv@512 scores 70.0
    expect(md).toContain('| snapkv | 70.0 | 60.0 |');
    expect(html).toContain('<tr><td>snapkv</td><td>70.0</td><td>60.0</td></tr>');
    // a report folder of runs (no summary.json) reads the same records with the same reader
    const only = dir();
    writeRuns(only);
    expect(withoutSource(readResults(only, () => {}).records)).toEqual(withoutSource(readRunRecords(only, () => {})));
  });
});

describe('malformed files', () => {
  function captureStderr<T>(fn: () => T): { value: T; lines: string[] } {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const value = fn();
      return { value, lines: spy.mock.calls.map((c) => String(c[0])).join('').split('\n').filter(Boolean) };
    } finally {
      spy.mockRestore();
    }
  }

  it('the summary step skips a metrics.json that is not JSON (or not a run) with one warning line naming it', async () => {
    const out = dir();
    writeRuns(path.join(out, 'runs'));
    const bad = path.join(out, 'runs/retrieval-kv-512/retrieval__cokv-retrieval-tiny__snapkv__16/metrics.json');
    writeJson(bad, '{"dataset": "retrieval", "score": ');
    const noScore = path.join(out, 'runs/retrieval-kv-512/retrieval__cokv-retrieval-tiny__snapkv__32/metrics.json');
    writeJson(noScore, { ...metrics('snapkv', 32, 0), score: 'high' });
    const badMasking = path.join(out, 'masking/m.json');
    writeJson(badMasking, { model: 'm', metric: 'exact_match', full: 1, none: 0, rows: [{ k: 1, top: 'x' }] });
    const log: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    let lines: string[];
    try {
      await summary({ quick: true, out, assets: out, seed: 0, log: (m) => log.push(m) });
    } finally {
      lines = spy.mock.calls.map((c) => String(c[0])).join('').split('\n').filter(Boolean);
      spy.mockRestore();
    }
    expect(lines).toEqual([
      expect.stringMatching(new RegExp(`^cokv: warning: ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid JSON \\(.*\\) \\(skipped\\)$`)),
      `cokv: warning: ${noScore}: "score" must be a finite number, got "high" (skipped)`,
      `cokv: warning: ${badMasking}: "rows"[0] must hold finite k, top, bottom and random (skipped)`,
    ]);
    const entries = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).entries;
    expect(entries).toHaveLength(8);
    expect(fs.readFileSync(path.join(out, 'results.md'), 'utf8')).not.toContain('Head masking');
  });

  it('cokv report skips the same bad metrics.json with one warning line', () => {
    const d = dir();
    writeRuns(d);
    const bad = path.join(d, 'retrieval-kv-512/retrieval__cokv-retrieval-tiny__snapkv__16/metrics.json');
    writeJson(bad, '[1, 2');
    const { value, lines } = captureStderr(() => readResults(d));
    expect(lines).toEqual([expect.stringMatching(/^cokv: warning: .*snapkv__16\/metrics\.json: not valid JSON \(.*\) \(skipped\)$/)]);
    expect(value.records).toHaveLength(8);
    expect(value.skipped).toHaveLength(1);
  });

  it('a summary.json that is not { entries } is skipped with one line; a bad entry is named by its index', () => {
    const d = dir();
    const file = path.join(d, 'summary.json');
    writeJson(file, { entries: 3 });
    const skipped: string[] = [];
    expect(readSummaryFile(file, (f, p) => skipped.push(`${f}: ${p}`))).toBeUndefined();
    writeJson(file, { entries: [{ dataset: 'kv@512', model: 'm', press: 'snapkv', budget: 0, score: 1 }, { task: 'kv', promptLength: 512, model: 'm', press: 'full', budget: null, score: 9 }] });
    const r = readSummaryFile(file, (f, p) => skipped.push(`${f}: ${p}`));
    expect(skipped).toEqual([`${file}: expected { "entries": [...] }`, `${file} entry 0: "budget" must be a positive number or null, got 0`]);
    expect(r!.records.map((x) => [x.dataset, x.task, x.budget])).toEqual([['kv@512', 'kv', null]]);
  });
});
