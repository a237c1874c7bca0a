import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import { cokvAllocation } from '../src/press/allocators/cokv.js';
import { buildReport, cokvKeptTokens, esc, heatmap, lineChart, niceTicks, readResults } from '../src/eval/report.js';
import { repoRoot, tmpDir, cokv } from './helpers.js';

const fixture = path.join(repoRoot, 'test/fixtures/report');
const now = new Date('2025-02-01T12:00:00Z');

function build(dir: string): { html: string; warnings: string[] } {
  const warnings: string[] = [];
  const html = buildReport(dir, { warn: (m) => warnings.push(m), now });
  return { html, warnings };
}

function copyFixture(): string {
  const dir = path.join(tmpDir('cokv-report-'), 'results');
  fs.cpSync(fixture, dir, { recursive: true });
  return dir;
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
}

const count = (s: string, re: RegExp) => (s.match(re) ?? []).length;

describe('chart helpers', () => {
  it('niceTicks gives round steps covering the range', () => {
    expect(niceTicks(0, 100, 5)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(0.013, 0.049, 4)).toEqual([0.02, 0.03, 0.04]);
    expect(niceTicks(5, 5).length).toBeGreaterThan(1);
  });

  it('lineChart draws lines, markers, a reference line, axis labels, a legend and a title', () => {
    const svg = lineChart(
      [{ name: 'CoKV', points: [[64, 40], [128, 45], [256, 48]] }, { name: 'a<b&c>', points: [{ x: 64, y: 30 }, { x: 256, y: 41 }] }],
      { title: 'qasper & co', xLabel: 'budget', yLabel: 'score', xScale: 'log2', refLines: [{ name: 'Full', y: 50 }] },
    );
    expect(svg).toMatch(/^<svg [^>]*viewBox="0 0 \d+ \d+"/);
    expect(svg.endsWith('</svg>')).toBe(true);
    expect(count(svg, /<circle class="ck-mark/g)).toBe(5);
    expect(count(svg, /<path class="ck-mark ck-line/g)).toBe(3); // 2 series + the Full line
    expect(svg).toContain('stroke-dasharray="7 4"');
    for (const t of ['qasper &amp; co', '>budget (log scale)<', '>score<', '>CoKV<', '>Full<', 'a&lt;b&amp;c&gt;']) expect(svg).toContain(t);
    expect(svg).not.toContain('a<b&c>');
    // tick labels at the budgets on a log axis
    for (const t of ['>64<', '>128<', '>256<']) expect(svg).toContain(t);
  });

  it('lineChart without data says so', () => {
    expect(lineChart([], { title: 't', xLabel: 'x', yLabel: 'y' })).toContain('no data');
  });

  it('heatmap draws one rect per cell, n/a cells, values, a color bar and labels', () => {
    const svg = heatmap([[0.1, -0.2], [0.3, NaN]], {
      title: 'values <L>', xLabel: 'KV head', yLabel: 'layer', xTicks: ['0', '1'], yTicks: ['0', '1'], legendLabel: 'value',
    });
    expect(count(svg, /class="ck-mark ck-cell"/g)).toBe(3);
    expect(count(svg, /class="ck-mark ck-na"/g)).toBe(1);
    expect(svg).toContain('values &lt;L&gt;');
    expect(svg).toContain('>KV head<');
    expect(svg).toContain('>layer<');
    expect(svg).toContain('>-0.2<'); // the value printed in its cell
    expect(svg).toContain('>-0.3<'); // diverging scale: symmetric around 0
    expect(count(svg, /<rect x=/g)).toBe(24); // color bar
  });

  it('esc escapes the HTML specials', () => {
    expect(esc(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
  });

  it('cokvKeptTokens is cokvAllocation at B=64, w=8 plus the window', () => {
    const values = [[0.5, 0.1, -0.2, 0.05], [0.3, 0.02, 0.9, 0.0]];
    const kept = cokvKeptTokens(values);
    const alloc = cokvAllocation(values.flat(), 1, 2, 4, 56, 1e9, true);
    expect(kept).toEqual(alloc.map((r) => r.map((v) => v + 8)));
    expect(kept.flat().reduce((a, b) => a + b, 0)).toBe(64 * 8);
  });
});

describe('buildReport on the fixture folder', () => {
  const { html, warnings } = build(fixture);

  it('reads every file without warnings', () => {
    expect(warnings).toEqual([]);
    const res = readResults(fixture, () => {});
    expect(res.runs).toHaveLength(26); // 2 datasets × (4 presses × 3 budgets + Full)
    expect(res.profiles).toHaveLength(1);
    expect(res.needles).toHaveLength(3);
    expect(res.benches).toHaveLength(1);
    expect(res.runs.filter((r) => r.press === 'full').every((r) => r.budget === null)).toBe(true);
  });

  it('is one self-contained HTML page with a header', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain('prefers-color-scheme: dark');
    expect(html).not.toMatch(/<script|<link|<img|@import|url\(/i);
    // the only URL is the SVG namespace
    expect(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, '')).not.toMatch(/https?:/);
    expect(html).toContain('<h1>cokv report — report</h1>');
    expect(html).toContain(fixture);
    expect(html).toContain('2025-02-01 12:00:00 UTC');
    expect(html).toContain('2025-01-15T10:01:00Z');
    expect(html).toContain('26 runs over 2 datasets · 1 profile · 3 needle grids · 1 bench file');
  });

  it('has every section, each chart titled and labelled', () => {
    for (const id of ['results', 'profiles', 'needle', 'bench']) expect(html).toContain(`<section id="${id}">`);
    expect(html).not.toContain('id="skipped"');
    // 3 score charts (2 datasets + average), 3 profile charts, 3 needle grids, 4 bench charts
    expect(count(html, /<figure class="ck-fig">/g)).toBe(13);
    expect(count(html, /<svg /g)).toBe(13);
    for (const t of ['>Average over 2 datasets<', '>qasper<', '>passage_retrieval_en<', 'Head values (Shapley estimate)', 'CoKV budget at B=64',
      '>Convergence<', 'Needle — CoKV B=64', 'Needle — Full', '>KV cache size<', '>Decode latency<', '>Prefill time<']) {
      expect(html).toContain(t);
    }
    expect(html).toContain('KV budget B (tokens per head) (log scale)');
    expect(html).toContain('>decode ms / token<');
    expect(html).toContain('>KV bytes (MiB)<');
  });

  it('shows the scores, relative-to-Full ratios and kept KV bytes', () => {
    // passage_retrieval_en: Full 68.0; CoKV B=64 63.92 → 94%; 256 KiB kept of 13.3 MiB
    expect(html).toMatch(/<span class="ck-score">68\.0<\/span>/);
    expect(html).toMatch(/<span class="ck-score">63\.9<\/span> <span class="ck-rel ck-mid">94%<\/span><br><span class="ck-kv">256\.0 KiB · 1\.9%<\/span>/);
    expect(html).toContain('>mean over datasets<');
    expect(html).toContain('>63.92<'); // the full-precision run table
    expect(html).toContain('>B=128<');
    expect(html).toContain('>full cache<');
  });

  it('the CoKV budget heatmap holds the allocation of the profile', () => {
    const prof = JSON.parse(fs.readFileSync(path.join(fixture, 'profiles/llama3-tiny.json'), 'utf8'));
    const kept = cokvKeptTokens(prof.values);
    for (const [l, row] of kept.entries()) {
      for (const [h, v] of row.entries()) expect(html).toContain(`layer ${l}, KV head ${h}: ${v}</title>`);
    }
  });
});

describe('buildReport on bad input', () => {
  it('skips malformed files with a warning and lists them', () => {
    const dir = copyFixture();
    writeJson(path.join(dir, 'qasper__m__snapkv__32/metrics.json'), '{not json');
    writeJson(path.join(dir, 'qasper__m__snapkv__16/metrics.json'), { dataset: 'qasper', model: 'm', press: 'snapkv', budget: 16, score: 'high' });
    fs.mkdirSync(path.join(dir, 'qasper__m__snapkv__8'));
    writeJson(path.join(dir, 'profiles/other.json'), { schema: 'something-else/2', values: [[1]] });
    writeJson(path.join(dir, 'profiles/ragged.json'), { schema: 'cokv-profile/1', shape: [2, 2], values: [[1, 2], [3]] });
    writeJson(path.join(dir, 'needle/bad.json'), { model: 'm', press: 'full', budget: null, lengths: [1, 2], depths: [0], scores: [[1]] });
    writeJson(path.join(dir, 'bench/empty.json'), { model: 'm', rows: [{ press: 'full' }] });
    writeJson(path.join(dir, 'summary.json'), { entries: [
      { model: 'other-model', task: 'niah', promptLength: 4096, protocol: 'context-only', press: 'cokv', budget: 64, score: 55.5, n: 10, keptKvBytes: 1000 },
      { model: 'other-model', task: 'niah', press: 'cokv', budget: -3, score: 1 },
    ] });
    const { html, warnings } = build(dir);
    const expected = ['qasper__m__snapkv__32/metrics.json: not valid JSON', 'qasper__m__snapkv__16/metrics.json: "score" must be a finite number',
      'qasper__m__snapkv__8: no metrics.json', 'other.json: not a cokv profile', 'ragged.json: "values" row 1 must have 2 values',
      'needle/bad.json: "scores" row 0 must have 2 values', 'bench/empty.json: skipped 1 malformed row', 'bench/empty.json: no usable rows',
      'summary.json entry 1: "budget" must be a positive number'];
    for (const e of expected) expect(warnings.some((w) => w.includes(e)), e).toBe(true);
    expect(warnings).toHaveLength(expected.length);
    expect(html).toContain('<section id="skipped"><h2>Skipped files (8)</h2>');
    // the good data is all there, plus the summary entry as its own model/protocol group
    expect(count(html, /<figure class="ck-fig">/g)).toBe(14);
    expect(html).toContain('other-model <span class="ck-pill">context-only</span>');
    expect(html).toContain('>niah@4096<');
    expect(html).toContain('>55.50<');
  });

  it('escapes names everywhere', () => {
    const dir = tmpDir('cokv-report-esc-');
    const bad = '<script>alert("x")</script>&';
    writeJson(path.join(dir, 'run1/metrics.json'), { dataset: `ds<${bad}>`, model: `m&${bad}`, press: `p<${bad}>`, budget: 64, score: 12.5, metric: bad, protocol: bad });
    writeJson(path.join(dir, 'run2/metrics.json'), { dataset: `ds<${bad}>`, model: `m&${bad}`, press: 'full', budget: null, score: 20, metric: bad, protocol: bad });
    writeJson(path.join(dir, 'needle/n.json'), { model: bad, press: bad, budget: 8, lengths: [100], depths: [50], scores: [[0.5]] });
    writeJson(path.join(dir, 'bench/b.json'), { model: bad, rows: [{ length: 10, press: bad, budget: 8, kvBytes: 100, decodeMsPerToken: 1 }] });
    writeJson(path.join(dir, 'profiles/p.json'), { schema: 'cokv-profile/1', modelPath: `/x/${bad}`, task: bad, shape: [1, 2], values: [[0.1, 0.2]] });
    const { html, warnings } = build(dir);
    expect(warnings).toEqual([]);
    expect(html).not.toContain('<script');
    expect(html).not.toContain('alert("x")');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;');
    expect(html).toContain('>12.5<');
    expect(html).toContain('<span class="ck-rel ck-lo">63%</span>');
  });

  it('an empty folder, or one with nothing usable, is a CokvError', () => {
    const empty = tmpDir('cokv-report-empty-');
    expect(() => build(empty)).toThrow(CokvError);
    expect(() => build(empty)).toThrow(/no results found/);
    writeJson(path.join(empty, 'a__b__c__64/metrics.json'), '[]');
    expect(() => build(empty)).toThrow(/no results found .*1 file skipped as malformed/);
    expect(() => build(path.join(empty, 'nope'))).toThrow(/no such folder/);
    expect(() => build(path.join(empty, 'a__b__c__64/metrics.json'))).toThrow(/not a folder/);
  });

  it('takes missing names from the folder name and reports needle/bench-only folders', () => {
    const dir = tmpDir('cokv-report-min-');
    writeJson(path.join(dir, 'qasper__tiny__snapkv__128/metrics.json'), { score: 10 });
    writeJson(path.join(dir, 'qasper__tiny__full__full/metrics.json'), { score: 20 });
    const res = readResults(dir, () => {});
    expect(res.runs.map((r) => [r.dataset, r.model, r.press, r.budget])).toEqual([['qasper', 'tiny', 'full', null], ['qasper', 'tiny', 'snapkv', 128]]);
    const only = tmpDir('cokv-report-bench-');
    writeJson(path.join(only, 'bench/b.json'), { model: 'tiny', rows: [{ length: 128, press: 'full', budget: null, kvBytes: 2048 }] });
    const { html } = build(only);
    expect(html).toContain('<section id="bench">');
    expect(html).not.toContain('<section id="results">');
    expect(html).toMatch(/<dt>not in this folder<\/dt><dd class="ck-muted">scores \(<code>cokv eval --out DIR<\/code>\); profiles \(.*\); needle grids \(<code>cokv needle --out DIR<\/code>\)<\/dd>/);
  });
});

/** Run the CLI from source, like `npx cokv …` after a build. */
describe('cokv report (CLI)', () => {
  const dir = tmpDir('cokv-report-cli-');

  it('writes the report and exits 0', () => {
    const out = path.join(dir, 'report.html');
    const r = cokv('report', fixture, '--out', out);
    expect(r.stderr).toMatch(/^wrote .*report\.html \(\d+ KiB\)\n$/);
    expect(r.code).toBe(0);
    const html = fs.readFileSync(out, 'utf8');
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain('<section id="needle">');
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('warns about malformed files on stderr and still writes the report', () => {
    const results = copyFixture();
    writeJson(path.join(results, 'needle/broken.json'), '{');
    const out = path.join(dir, 'warned.html');
    const r = cokv('report', results, '--out', out);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^cokv: warning: .*needle\/broken\.json: not valid JSON .*\(skipped\)$/m);
    expect(fs.existsSync(out)).toBe(true);
  });

  it('--out defaults to DIR/report.html', () => {
    const results = copyFixture();
    expect(cokv('report', results).code).toBe(0);
    expect(fs.existsSync(path.join(results, 'report.html'))).toBe(true);
  });

  const file = path.join(dir, 'plain.txt');
  fs.writeFileSync(file, 'x');
  const cases: [string, string[], RegExp][] = [
    ['missing folder', ['report', path.join(dir, 'nope'), '--out', path.join(dir, 'a.html')], /^cokv: report .*nope: no such folder\n$/],
    ['a file, not a folder', ['report', file, '--out', path.join(dir, 'a.html')], /^cokv: report .*plain\.txt: not a folder\n$/],
    ['empty folder', ['report', tmpDir('cokv-report-e-'), '--out', path.join(dir, 'a.html')], /^cokv: report .*: no results found [^\n]*\n$/],
    ['--out in a missing folder', ['report', fixture, '--out', path.join(dir, 'missing/r.html')], /^cokv: --out .*r\.html: folder .*missing does not exist\n$/],
    ['--out is a folder', ['report', fixture, '--out', dir], /^cokv: --out .*: is a folder\n$/],
  ];
  for (const [name, args, re] of cases) {
    it(`${name}: exit 1, one line`, () => {
      const r = cokv(...args);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(re);
      expect(fs.existsSync(path.join(dir, 'a.html'))).toBe(false);
    });
  }
});

const chromiumPath = '/usr/bin/chromium';

// The callbacks below run inside Chromium. The project compiles without the DOM lib, so they use these minimal shapes.
interface Box { left: number; right: number; top: number; bottom: number; width: number; height: number }
interface El {
  textContent: string | null;
  firstChild: El | null;
  querySelector(sel: string): El | null;
  querySelectorAll(sel: string): Iterable<El> & { length: number };
  getBoundingClientRect(): Box;
}
interface Win {
  document: { body: El; querySelector(sel: string): El | null; querySelectorAll(sel: string): Iterable<El> };
  getComputedStyle(e: El): { backgroundColor: string; stroke: string; fill: string };
}

describe.skipIf(!fs.existsSync(chromiumPath))('report in a browser (Chromium)', () => {
  it('renders without errors, every chart has marks, in light and dark mode', async () => {
    const outDir = path.join(repoRoot, 'test-output');
    fs.mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, 'report-fixture.html');
    fs.writeFileSync(file, buildReport(fixture, { warn: () => {}, now }));
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    try {
      const colors: Record<string, string[]> = {};
      for (const scheme of ['light', 'dark'] as const) {
        const context = await browser.newContext({ colorScheme: scheme, viewport: { width: 1280, height: 900 } });
        const page = await context.newPage();
        const errors: string[] = [];
        page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`); });
        page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
        page.on('request', (r) => { if (!r.url().startsWith('file:')) errors.push(`network: ${r.url()}`); });
        await page.goto(pathToFileURL(file).href);
        await page.waitForLoadState('load');
        const figs = await page.$$eval('figure.ck-fig', (els) => (els as unknown as El[]).map((fig) => {
          const svg = fig.querySelector('svg');
          const box = svg?.getBoundingClientRect();
          const marks = [...(svg?.querySelectorAll('.ck-mark') ?? [])].filter((m) => {
            const b = m.getBoundingClientRect();
            return b.width > 0 && b.height > 0;
          });
          // text that would be cut off at the edges of the chart
          const clipped = [...(svg?.querySelectorAll('text') ?? [])].filter((t) => {
            const b = t.getBoundingClientRect();
            return box !== undefined && (b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1 || b.bottom > box.bottom + 1);
          }).map((t) => t.textContent);
          return {
            title: svg?.querySelector('.ck-title')?.firstChild?.textContent ?? '',
            drawn: svg?.querySelectorAll('path, rect, circle, polyline').length ?? 0,
            marks: marks.length,
            labels: svg?.querySelectorAll('.ck-label').length ?? 0,
            clipped,
          };
        }));
        expect(figs).toHaveLength(13);
        for (const f of figs) {
          expect(f.title, 'chart title').not.toBe('');
          expect(f.drawn, f.title).toBeGreaterThan(0);
          expect(f.marks, f.title).toBeGreaterThan(0);
          expect(f.labels, f.title).toBeGreaterThanOrEqual(2);
          expect(f.clipped, f.title).toEqual([]);
        }
        // series colors stand out from the chart background in this scheme
        const c = await page.evaluate(() => {
          const { document, getComputedStyle } = globalThis as unknown as Win;
          const rgb = (s: string) => (s.match(/\d+(\.\d+)?/g) ?? []).slice(0, 3).map(Number);
          const lum = (s: string) => {
            const [r, g, b] = rgb(s).map((v) => { const x = v / 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b;
          };
          const contrast = (a: string, b: string) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
          const card = getComputedStyle(document.querySelector('figure.ck-fig')!).backgroundColor;
          const lines = [...document.querySelectorAll('svg .ck-line')].map((e) => getComputedStyle(e).stroke);
          const text = getComputedStyle(document.querySelector('svg .ck-title')!).fill;
          return {
            bg: getComputedStyle(document.body).backgroundColor,
            strokes: [...new Set(lines)],
            minContrast: Math.min(...lines.map((l) => contrast(l, card))),
            textContrast: contrast(text, card),
          };
        });
        colors[scheme] = c.strokes;
        expect(c.bg).toBe(scheme === 'dark' ? 'rgb(20, 23, 28)' : 'rgb(255, 255, 255)');
        expect(c.minContrast).toBeGreaterThan(2.5);
        expect(c.textContrast).toBeGreaterThan(7);
        await page.screenshot({ path: path.join(outDir, `report-${scheme}.png`), fullPage: true });
        for (const id of ['header', '#results', '#profiles', '#needle', '#bench']) {
          await page.locator(id).screenshot({ path: path.join(outDir, `report-${scheme}-${id.replace('#', '')}.png`) });
        }
        expect(errors).toEqual([]);
        await context.close();
      }
      expect(colors.dark).not.toEqual(colors.light);
    } finally {
      await browser.close();
    }
  });
});
