// The report of the bug fixture (test/report-fixture.ts) in headless Chromium: every chart has drawn data marks,
// and the full-page screenshot (test-output/report-bugs.png) is not blank. The same chart check without a browser is
// in report-model.test.ts ("every chart of the fixture report has data").
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { buildReport } from '../src/eval/report.js';
import { repoRoot } from './helpers.js';
import { writeReportFixture } from './report-fixture.js';

/** A Chromium to drive: $COKV_CHROMIUM, Debian's, or one that `npx playwright-core install chromium` fetched. */
function findChromium(): string | undefined {
  const tries = [process.env.COKV_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
  try { tries.push(chromium.executablePath()); } catch { /* no bundled browser */ }
  return tries.find((p): p is string => !!p && fs.existsSync(p));
}

const exe = findChromium();
if (!exe) process.stderr.write('report-browser.test.ts: skipped, no Chromium (set COKV_CHROMIUM or install chromium)\n');

// The callbacks run inside Chromium; the project compiles without the DOM lib, so they use these minimal shapes.
interface Box { width: number; height: number }
interface El { getAttribute(n: string): string | null; getBoundingClientRect(): Box; querySelectorAll(sel: string): Iterable<El> }
interface Ctx2d { drawImage(i: unknown, x: number, y: number): void; getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } }
interface Img { src: string; naturalWidth: number; naturalHeight: number; decode(): Promise<void> }
interface Canvas { width: number; height: number; getContext(k: '2d'): Ctx2d }
interface Doc { querySelectorAll(sel: string): Iterable<El>; createElement(t: 'canvas'): Canvas }

describe.skipIf(!exe)('report screenshot (Chromium)', () => {
  it('every chart has data marks, and the screenshot is not blank', async () => {
    const { root, dir } = writeReportFixture();
    const outDir = path.join(repoRoot, 'test-output');
    fs.mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, 'report-bugs.html');
    fs.writeFileSync(file, buildReport(dir, { warn: () => {}, now: new Date('2025-02-01T12:00:00Z') }));
    const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(file).href);
      const charts = await page.evaluate(() => {
        const doc = (globalThis as unknown as { document: Doc }).document;
        return [...doc.querySelectorAll('svg.ck-chart')].map((svg) => ({
          title: svg.getAttribute('aria-label') ?? '',
          marks: [...svg.querySelectorAll('.ck-data [data-value]')].filter((m) => {
            const b = m.getBoundingClientRect();
            return b.width > 0 && b.height > 0 && Number.isFinite(Number(m.getAttribute('data-value')));
          }).length,
        }));
      });
      expect(charts.length).toBeGreaterThan(15);
      for (const c of charts) expect(c.marks, c.title).toBeGreaterThan(0);
      for (const t of ['Average over 5 datasets', 'HeadKV head scores', 'multikey@512 — sensitivity', 'Needle — Full']) {
        expect(charts.map((c) => c.title)).toContain(t);
      }
      const png = await page.screenshot({ fullPage: true, path: path.join(outDir, 'report-bugs.png') });
      // decode the screenshot in a blank page and count pixels that differ from the most common (background) color
      const blank = await browser.newPage();
      const stats = await blank.evaluate(async (b64) => {
        const g = globalThis as unknown as { document: Doc; Image: new () => Img };
        const img = new g.Image();
        img.src = `data:image/png;base64,${b64}`;
        await img.decode();
        const canvas = g.document.createElement('canvas');
        [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        const counts = new Map<number, number>();
        let n = 0;
        for (let i = 0; i < d.length; i += 16) { const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2]; counts.set(k, (counts.get(k) ?? 0) + 1); n++; }
        const top = Math.max(...counts.values());
        return { width: canvas.width, height: canvas.height, colors: counts.size, nonBackground: 1 - top / n };
      }, png.toString('base64'));
      expect(stats.width).toBe(1280);
      expect(stats.height).toBeGreaterThan(2000);
      expect(stats.colors).toBeGreaterThan(50);
      expect(stats.nonBackground).toBeGreaterThan(0.05);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
