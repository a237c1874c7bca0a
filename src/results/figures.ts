/**
 * The results figures (results/figures/*.svg) from run records and head-masking files: score vs budget per
 * (model, task, length, protocol, items), one line per press with Full as a reference line, and the masking curves.
 */
import { lineChart, type LineSeries } from '../eval/report/charts.js';
import { standaloneSvg } from '../eval/report/page.js';
import { PRESSES } from '../experiments/plan.js';
import type { MaskingData } from './read.js';
import type { RunRecord } from './record.js';

/** One standalone SVG file: its name (no folder) and its text. */
export interface FigureFile { name: string; svg: string }

const fileName = (parts: string[]) => `${parts.filter(Boolean).join('__').replace(/[^A-Za-z0-9._-]+/g, '-')}.svg`;

/** Every figure of the records (budget runs of the main sweeps; no variants, no ratio runs) and the masking files. */
export function resultFigures(records: RunRecord[], masking: MaskingData[] = []): FigureFile[] {
  const out: FigureFile[] = [];
  const es = records.filter((e) => !e.run.startsWith('sensitivity') && !e.run.startsWith('quant') && !e.run.startsWith('baselines') && e.ratio === undefined);
  const groups = new Map<string, RunRecord[]>();
  for (const e of es) {
    const key = `${e.model}|${e.task}|${e.promptLength ?? ''}|${e.protocol}|${e.items === 'generated' ? 'generated' : ''}`;
    groups.set(key, [...(groups.get(key) ?? []), e]);
  }
  for (const [key, list] of groups) {
    const [model, task, len, protocol, gen] = key.split('|');
    const full = list.find((e) => e.press === 'full');
    const series: LineSeries[] = PRESSES.filter((p) => p !== 'full').map((press, i) => ({
      name: press, color: i,
      points: list.filter((e) => e.press === press && e.budget !== null).sort((a, b) => a.budget! - b.budget!).map((e) => [e.budget!, e.score] as [number, number]),
    })).filter((s) => s.points.length > 0);
    if (series.length === 0) continue;
    const svg = lineChart(series, {
      title: `${model}: ${task}${len ? ` @ ${len} tokens` : ''} (${protocol}${gen ? ', generated items' : ''})`, xLabel: 'KV budget per head (tokens, window included)',
      yLabel: list[0]?.metric.startsWith('loglik') ? 'mean log-prob' : 'score', xScale: 'log2',
      refLines: full ? [{ name: 'full', y: full.score }] : [],
    });
    out.push({ name: fileName([model, task, len, protocol, gen]), svg: standaloneSvg(svg) });
  }
  for (const m of masking) {
    const svg = lineChart([
      { name: 'keep top-k heads (highest CoKV value)', color: 0, points: m.rows.map((r) => [r.k, r.top]) },
      { name: 'keep bottom-k heads', color: 1, points: m.rows.map((r) => [r.k, r.bottom]) },
      { name: 'keep k random heads', color: 2, points: m.rows.map((r) => [r.k, r.random]) },
    ], { title: `${m.model}: head masking (others keep only the window)`, xLabel: 'heads with the full cache (k)', yLabel: m.metric, xScale: 'linear',
      refLines: [{ name: 'all full', y: m.full }, { name: 'none full', y: m.none, dash: 2 }] });
    out.push({ name: `masking__${m.model}.svg`, svg: standaloneSvg(svg) });
  }
  return out;
}
