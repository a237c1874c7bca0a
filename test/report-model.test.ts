// The report bugs of docs/findings/ecosystem.md item 8, each checked on the report model or the SVG.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModel, buildReport, lineChart, readResults, shownCi, type ChartSpec, type ReportModel } from '../src/eval/report.js';
import { cokv } from './helpers.js';
import { writeReportFixture } from './report-fixture.js';

const fx = writeReportFixture();
afterAll(() => fs.rmSync(fx.root, { recursive: true, force: true }));
const quiet = () => {};
const model: ReportModel = buildModel(readResults(fx.dir, quiet));
const group = model.results.find((g) => g.model === 'llama3-tiny')!;
const line = (c: ChartSpec) => { if (c.kind !== 'line') throw new Error('not a line chart'); return c; };
const byTitle = (title: string) => [...group.figures, ...group.variantFigures].find((f) => f.chart.opts.title === title)?.chart;
const yTicks = (svg: string) => [...svg.matchAll(/<text class="ck-tick" x="56"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);

describe('report model', () => {
  it('the average chart has one point per press × budget, over the datasets that have it', () => {
    const main = group.runs.filter((r) => group.datasets.includes(r.dataset));
    const cells = new Set(main.filter((r) => r.budget !== null).map((r) => `${r.press}:${r.budget}`));
    const avg = line(byTitle(`Average over ${group.datasets.length} datasets`)!);
    const points = avg.series.flatMap((s) => s.points.map((p) => `${s.name}:${Array.isArray(p) ? p[0] : p.x}`));
    expect(points).toHaveLength(cells.size);
    expect(cells.size).toBeGreaterThan(10);
    // CoKV at B=64 is in all 5 datasets (qasper, passage_retrieval_en, twohop, vartrack, tiny-n), B=128 in 2
    const cokv = avg.series.find((s) => s.name === 'CoKV')!.points.map((p) => (Array.isArray(p) ? { x: p[0], label: '' } : p));
    expect(cokv.find((p) => p.x === 64)?.label).toMatch(/\(5 of 5 datasets\)$/);
    expect(cokv.find((p) => p.x === 128)?.label).toMatch(/\(2 of 5 datasets\)$/);
    expect(avg.opts.subtitle).toMatch(/mean over the datasets that have it/);
    expect(lineChart(avg.series, avg.opts)).not.toContain('no data');
  });

  it('sensitivity and quant variants are one chart per family with a line per variant, not one chart per variant', () => {
    expect(group.datasets).not.toContain('multikey@512 [sensitivity/alpha-0]');
    expect(group.datasets).not.toContain('qasper [kv-dtype/q8]');
    const titles = group.variantFigures.map((f) => f.chart.opts.title);
    expect(titles).toEqual(['qasper — kv-dtype', 'multikey@512 — quant', 'multikey@512 — sensitivity']);
    // the q8 run is kept (not dropped as a duplicate of its f32 twin) and drawn beside it
    const kv = line(byTitle('qasper — kv-dtype')!);
    expect(kv.series.map((s) => s.name)).toEqual(['SnapKV · f32', 'SnapKV · q8']);
    const sens = line(byTitle('multikey@512 — sensitivity')!);
    expect(sens.series.map((s) => s.name)).toEqual(['CoKV · alpha-0', 'CoKV · alpha-1', 'CoKV · alpha-2']);
    expect(sens.series.every((s) => s.points.length === 2)).toBe(true);
  });

  it('HeadKV head-score files are titled as head scores, with query-head labels', () => {
    const hk = model.profiles.find((p) => p.kind === 'head-scores')!;
    expect(hk.file).toBe('profiles/llama3-tiny__headkv.json');
    expect(hk.figures).toHaveLength(1); // no CoKV budget from query-head scores
    const c = hk.figures[0].chart;
    expect(c.opts.title).toBe('HeadKV head scores');
    expect(c.kind === 'heatmap' && c.opts.xLabel).toBe('query head');
    expect(c.opts.subtitle).toContain('2 layers × 4 query heads (2 KV heads)');
    expect(hk.facts).not.toMatch(/KV heads ·|Shapley estimate/);
    const shapley = model.profiles.find((p) => p.kind === 'shapley')!;
    expect(shapley.figures[0].chart.opts.title).toBe('Head values (Shapley estimate)');
  });

  it('the y axis spans the data: a single point or all zeros gets a range, not one tick at 0', () => {
    const zero = line(byTitle('vartrack@512')!);
    const ticks = yTicks(lineChart(zero.series, zero.opts)).map(Number);
    expect(ticks.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...ticks)).toBeGreaterThan(0);
    const one = lineChart([{ name: 'a', points: [[64, 35]] }], { title: 't', xLabel: 'x', yLabel: 'y' });
    const t1 = yTicks(one).map(Number);
    expect(t1.length).toBeGreaterThanOrEqual(2);
    expect(Math.min(...t1)).toBeLessThanOrEqual(35);
    expect(Math.max(...t1)).toBeGreaterThanOrEqual(35);
    // a percentage axis stops at 100
    const pct = line(byTitle('qasper')!);
    expect(Math.max(...yTicks(lineChart(pct.series, pct.opts)).map(Number))).toBeLessThanOrEqual(100);
  });

  it('CIs of percentage metrics are clamped to [0, 100], and the page says so', () => {
    const r = group.runs.find((x) => x.dataset === 'tiny-n')!;
    expect(r.ci95).toEqual([1.3, 132]);
    expect(shownCi(r)).toEqual({ lo: 1.3, hi: 100, clamped: true });
    for (const x of group.runs) {
      const c = shownCi(x);
      if (c) expect(c.hi).toBeLessThanOrEqual(100);
    }
    expect(model.ciClamped).toBe(true);
    const html = buildReport(fx.dir, { warn: quiet });
    expect(html).toContain('1.3–100.0*');
    expect(html).not.toContain('132.0</td>');
    expect(html).toContain('clamped to [0, 100]');
  });

  it('a needle section when needle results exist; a hint when they do not', () => {
    expect(model.needles.length).toBe(3);
    expect(buildReport(fx.dir, { warn: quiet })).toContain('<section id="needle"><h2>Needle in a haystack</h2>');
    const noNeedle = path.join(path.dirname(fx.dir), 'no-needle');
    fs.mkdirSync(noNeedle, { recursive: true });
    fs.cpSync(path.join(fx.dir, 'qasper__llama3-tiny__cokv__64'), path.join(noNeedle, 'qasper__llama3-tiny__cokv__64'), { recursive: true });
    const m = buildModel(readResults(noNeedle, quiet));
    expect(m.needles).toEqual([]);
    expect(m.missing.find((x) => x.what === 'needle grids')?.hint).toBe('cokv needle --out DIR');
  });

  it('README flow: the profile a run names (profile.json outside runs/) is shown, not "(no profiles)"', () => {
    const m = buildModel(readResults(fx.readmeRuns, quiet));
    expect(m.profiles).toHaveLength(1);
    expect(m.profiles[0].kind).toBe('shapley');
    expect(m.missing.map((x) => x.what)).not.toContain('profiles');
    expect(buildReport(fx.readmeRuns, { warn: quiet })).toContain('<section id="profiles">');
    // a profile given with --profile is read once, even when the runs name it too
    expect(buildModel(readResults(fx.readmeRuns, quiet, { extraProfiles: [fx.readmeProfile] })).profiles).toHaveLength(1);
  });

  it('cokv report --profile adds a profile file', () => {
    const dir = path.join(path.dirname(fx.dir), 'needle-only');
    fs.cpSync(path.join(fx.dir, 'needle'), path.join(dir, 'needle'), { recursive: true });
    const out = path.join(dir, 'r.html');
    const r = cokv('report', dir, '--out', out, '--profile', fx.readmeProfile);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(out, 'utf8')).toContain('<section id="profiles">');
    expect(cokv('report', dir, '--out', out, '--profile', `${fx.readmeProfile}.missing`).stderr).toMatch(/--profile .*: no such file/);
  });

  it('crowded log-axis labels are thinned; log-likelihood scores get no ratio to Full', () => {
    const svg = lineChart([{ name: 'a', points: [[16, 1], [56, 2], [64, 3], [113, 4], [128, 5], [227, 6]] }], { title: 't', xLabel: 'x', yLabel: 'y' });
    const xt = [...svg.matchAll(/<text class="ck-tick" x="[\d.]+" y="\d+" text-anchor="middle"[^>]*>([^<]*)</g)].map((m) => m[1]);
    expect(xt).toContain('16');
    expect(xt.includes('56') && xt.includes('64')).toBe(false);
    const dir = path.join(path.dirname(fx.dir), 'loglik');
    const run = (press: string, budget: number | null, score: number) => ({ dataset: 'stories', model: 'm', press, budget, protocol: 'question-aware', metric: 'loglik@16', score });
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ entries: [run('full', null, -1.2), run('cokv', 64, -1.3)] }));
    const html = buildReport(dir, { warn: quiet });
    expect(html).toContain('<span class="ck-score">-1.3</span>');
    expect(html).not.toMatch(/class="ck-rel/);
  });

  it('every chart of the fixture report has data: no "no data" placeholder, data marks with values', () => {
    const html = buildReport(fx.dir, { warn: quiet });
    const svgs = html.match(/<svg [\s\S]*?<\/svg>/g) ?? [];
    expect(svgs.length).toBeGreaterThan(15);
    for (const svg of svgs) {
      const title = /aria-label="([^"]*)"/.exec(svg)?.[1];
      expect(svg, title).not.toContain('>no data<');
      expect(svg.match(/class="ck-mark[^"]*"[^>]*data-value="-?[\d.e+-]+"/g)?.length ?? 0, title).toBeGreaterThan(0);
    }
  });
});
