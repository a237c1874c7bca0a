// A results folder with every case the ecosystem review found drawn wrong (docs/findings/ecosystem.md, item 8):
// datasets with different press×budget grids (the empty "Average over N datasets"), sensitivity and quant variants
// (single-point charts), an all-zero dataset (a y axis with only 0), a HeadKV head-score file (query heads), a
// CI past 100, a q8 run beside its f32 twin, and needle grids. Built from test/fixtures/report plus JSON written here.
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot, tmpDir } from './helpers.js';

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value));
}

const base = { model: 'llama3-tiny', protocol: 'question-aware', metric: 'exact_match', n: 20 };

/** Summary entries: a dataset with a different grid, an all-zero one, variants, and a tiny-n CI past 100. */
export const SUMMARY_ENTRIES = [
  { ...base, dataset: 'twohop@512', press: 'full', budget: null, score: 40, ci95: [18.1, 61.9] },
  { ...base, dataset: 'twohop@512', press: 'cokv', budget: 64, score: 35, ci95: [14, 56] },
  { ...base, dataset: 'twohop@512', press: 'snapkv', budget: 64, score: 30, ci95: [10, 50] },
  { ...base, dataset: 'vartrack@512', press: 'cokv', budget: 64, score: 0, ci95: [0, 0] },
  { ...base, dataset: 'tiny-n', press: 'cokv', budget: 64, score: 66.7, n: 3, ci95: [1.3, 132.0] },
  ...['alpha-0', 'alpha-1', 'alpha-2'].flatMap((v, i) => [128, 256].map((b) => (
    { ...base, dataset: `multikey@512 [sensitivity/${v}]`, press: 'cokv', budget: b, score: 50 + 10 * i + b / 64 }))),
  ...['f16', 'q8'].flatMap((v) => [['cokv', 70], ['snapkv', 60]].map(([p, s]) => (
    { ...base, dataset: `multikey@512 [quant/${v}]`, press: p, budget: 64, score: s }))),
];

/** A `cokv head-scores` file: [layers, query heads] with 2 KV heads (the file keeps no schema, only `method`). */
export const HEAD_SCORES = {
  model: { architecture: 'llama', layers: 2, heads: 4, kvHeads: 2, headDim: 16, hash: 'feedbeef00000000' },
  shape: [2, 4],
  method: 'retrieval (needle copy, teacher-forced)',
  scores: [[0.1, 0.8, 0, 0.05], [0.9, 0, 0.3, 0.2]],
};

/** Writes the folder; returns it and the README-flow pair (a runs/ folder whose run names a profile outside it). */
export function writeReportFixture(): { root: string; dir: string; readmeRuns: string; readmeProfile: string } {
  const root = tmpDir('cokv-report-fix-');
  const dir = path.join(root, 'results');
  fs.cpSync(path.join(repoRoot, 'test/fixtures/report'), dir, { recursive: true });
  writeJson(path.join(dir, 'summary.json'), { entries: SUMMARY_ENTRIES });
  writeJson(path.join(dir, 'profiles/llama3-tiny__headkv.json'), HEAD_SCORES);
  // a q8 run beside its f32 twin (the folder name ends in __q8, the KV type is in the settings)
  const q8 = path.join(dir, 'qasper__llama3-tiny__snapkv__64__q8');
  const twin = JSON.parse(fs.readFileSync(path.join(dir, 'qasper__llama3-tiny__snapkv__64/metrics.json'), 'utf8'));
  writeJson(path.join(q8, 'metrics.json'), { ...twin, score: twin.score - 1, settings: { ...twin.settings, kvDtype: 'q8' } });
  // README flow: profile.json outside the runs folder, named by the run's settings
  const readmeRuns = path.join(root, 'runs');
  const readmeProfile = path.join(root, 'profile.json');
  fs.copyFileSync(path.join(dir, 'profiles/llama3-tiny.json'), readmeProfile);
  const run = JSON.parse(fs.readFileSync(path.join(dir, 'qasper__llama3-tiny__cokv__64/metrics.json'), 'utf8'));
  writeJson(path.join(readmeRuns, 'qasper__llama3-tiny__cokv__64/metrics.json'), { ...run, settings: { ...run.settings, profile: readmeProfile } });
  fs.cpSync(path.join(dir, 'needle'), path.join(readmeRuns, 'needle'), { recursive: true });
  return { root, dir, readmeRuns, readmeProfile };
}
