/**
 * The report model: what the page shows, as data. `buildModel` turns the records read from a results folder
 * (read.ts) into sections of chart specs and table inputs; charts.ts draws the specs and page.ts writes the HTML.
 * Every decision about what goes on a chart (which points, which titles and axis labels, which CI is shown) is made
 * here, so the tests can check it without parsing SVG.
 */
import path from 'node:path';
import { cokvAllocation } from '../../press/allocators/cokv.js';
import { alphaForPlayers, isPressName, pressLabel, type PressName } from '../../press/presses/index.js';
import { fmtNum, mean, byteUnit, type ChartPoint, type HeatmapOptions, type LineChartOptions, type LineSeries, type RefLine } from './charts.js';
import { resultsDocument, type Block } from '../../results/tables.js';
import { budgetLabel, type BenchData, type BenchRow, type NeedleData, type ProfileData, type Results, type RunRow } from './read.js';

export type ChartSpec =
  | { kind: 'line'; series: LineSeries[]; opts: LineChartOptions }
  | { kind: 'heatmap'; values: (number | null)[][]; opts: HeatmapOptions };

/** One figure: a chart and an optional caption (plain text, e.g. the source file). */
export interface FigureModel { chart: ChartSpec; caption?: string }

export interface ResultGroupModel {
  id: string;
  model: string;
  protocol: string;
  /** The datasets proper (not the sensitivity / quant variants), sorted. */
  datasets: string[];
  /** Compressed presses and Full, in color order. */
  presses: string[];
  budgets: number[];
  /** Every run of the group, sorted by dataset, press, budget (the runs table). */
  runs: RunRow[];
  /** One line: datasets × presses × budgets. */
  summary: string;
  /** The average chart (when there are 2+ datasets) first, then one chart per dataset. */
  figures: FigureModel[];
  /** One chart per experiment variant family (`dataset [family/variant]`): sensitivity, quant, … */
  variantFigures: FigureModel[];
}

export interface ProfilePanel { model: string; file: string; kind: ProfileData['kind']; facts: string; figures: FigureModel[] }
export interface BenchPanel { model: string; file: string; figures: FigureModel[] }

export interface ReportModel {
  dir: string;
  title: string;
  models: string[];
  /** First and last `createdAt` of the runs. */
  created?: [string, string];
  /** "26 runs over 2 datasets · 1 profile · …" */
  counts: string;
  /** What the folder lacks, each with how to get it. */
  missing: { what: string; hint: string }[];
  results: ResultGroupModel[];
  profiles: ProfilePanel[];
  needles: FigureModel[];
  benches: BenchPanel[];
  skipped: string[];
  /** The results tables of every run read (as results.md has them; ratio runs too); none without runs. */
  tables: Block[];
  /** Some shown CI was clamped to [0, 100] (the page says so). */
  ciClamped: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Presses: names and a fixed color order

/**
 * Known presses in a fixed color order, so a press has the same color in every chart (the method first; names
 * checked against the registry's).
 */
const PRESS_ORDER: readonly string[] = ['cokv', 'snapkv', 'pyramidkv', 'adakv', 'ada-pyramidkv', 'headkv', 'streaming', 'random'] satisfies readonly PressName[];

export function isFull(press: string): boolean {
  return press.toLowerCase() === 'full';
}

/** A press's display label (its descriptor's `label`, any case of the name); other names as they are. */
export function pressName(press: string): string {
  const name = press.toLowerCase();
  return isPressName(name) ? pressLabel(name) : press;
}

export class PressColors {
  private readonly map = new Map<string, number>();
  constructor(presses: string[]) {
    const known = PRESS_ORDER.filter((p) => presses.some((q) => q.toLowerCase() === p));
    const other = [...new Set(presses.filter((p) => !PRESS_ORDER.includes(p.toLowerCase()) && !isFull(p)))].sort();
    known.forEach((p, i) => this.map.set(p, i));
    let next = known.length;
    for (const p of other) this.map.set(p.toLowerCase(), next++);
  }
  get(press: string): number {
    return isFull(press) ? -1 : (this.map.get(press.toLowerCase()) ?? 0);
  }
  compare(a: string, b: string): number {
    return this.get(a) - this.get(b) || (a < b ? -1 : a > b ? 1 : 0);
  }
}

export function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

const plural = (k: number, w: string, ws = `${w}s`) => `${k} ${k === 1 ? w : ws}`;

// ---------------------------------------------------------------------------------------------------------------
// Scores: percentages, CIs, variants

/** Every task metric is a 0–100 score except the log-likelihood ones (`loglik@N`) and an unnamed `score`. */
export function isPercentMetric(metric: string): boolean {
  return !/^loglik/i.test(metric) && metric !== 'score';
}

/**
 * The CI to print: a normal-approximation interval of a percentage with few items can pass 0 or 100
 * (`1.3–132.0`); it is clamped to [0, 100], and `clamped` says so.
 */
export function shownCi(r: RunRow): { lo: number; hi: number; clamped: boolean } | undefined {
  if (!r.ci95) return undefined;
  const [lo, hi] = r.ci95;
  if (!isPercentMetric(r.metric)) return { lo, hi, clamped: false };
  const c = { lo: Math.min(100, Math.max(0, lo)), hi: Math.min(100, Math.max(0, hi)) };
  return { ...c, clamped: c.lo !== lo || c.hi !== hi };
}

/** `multikey@512 [sensitivity/alpha-2]` → base `multikey@512`, family `sensitivity`, variant `alpha-2`. */
export function datasetVariant(dataset: string): { base: string; family: string; variant: string } | undefined {
  const m = /^(.*?)\s*\[([^\]/]+)\/([^\]]+)\]\s*$/.exec(dataset);
  return m ? { base: m[1], family: m[2], variant: m[3] } : undefined;
}

interface Group { model: string; protocol: string; runs: RunRow[] }

function groupRuns(runs: RunRow[]): Group[] {
  const m = new Map<string, Group>();
  for (const r of runs) {
    const key = `${r.model}\u0000${r.protocol}`;
    if (!m.has(key)) m.set(key, { model: r.model, protocol: r.protocol, runs: [] });
    m.get(key)!.runs.push(r);
  }
  return [...m.values()].sort((a, b) => (a.model + a.protocol < b.model + b.protocol ? -1 : 1));
}

const BUDGET_AXIS = 'KV budget B (tokens per head)';

/**
 * Lines of mean score against budget, one per press (budget-less runs become reference lines). `rows` may cover
 * several datasets: each (press, budget) point is the mean over the datasets that have it; with `datasets` given,
 * a point's label says how many of them that is.
 */
export function scoreLines(rows: RunRow[], colors: PressColors, datasets?: number): { series: LineSeries[]; refs: RefLine[] } {
  const byPress = new Map<string, Map<number | null, number[]>>();
  for (const r of rows) {
    if (!byPress.has(r.press)) byPress.set(r.press, new Map());
    const m = byPress.get(r.press)!;
    if (!m.has(r.budget)) m.set(r.budget, []);
    m.get(r.budget)!.push(r.score);
  }
  const presses = [...byPress.keys()].sort((a, b) => colors.compare(a, b));
  const series: LineSeries[] = [];
  const refs: RefLine[] = [];
  for (const p of presses) {
    const m = byPress.get(p)!;
    const pts: ChartPoint[] = [];
    for (const [b, scores] of m) {
      const y = mean(scores);
      const of = datasets !== undefined ? ` (${scores.length} of ${datasets} datasets)` : '';
      if (b === null) refs.push({ name: isFull(p) ? 'Full' : `${pressName(p)} (no budget)`, y, color: colors.get(p), dash: isFull(p) ? 1 : 2 });
      else pts.push({ x: b, y, label: `${pressName(p)} B=${b}: ${y.toFixed(2)}${of}` });
    }
    if (pts.length > 0) {
      const ci = colors.get(p);
      series.push({ name: pressName(p), points: pts, color: ci, marker: Math.max(0, ci) % 4 });
    }
  }
  return { series, refs };
}

function yAxisFor(rows: RunRow[]): Pick<LineChartOptions, 'yLimit'> {
  return rows.length > 0 && rows.every((r) => isPercentMetric(r.metric)) ? { yLimit: [0, 100] } : {};
}

function resultGroup(g: Group, gi: number, colors: PressColors): ResultGroupModel {
  const all = uniq(g.runs.map((r) => r.dataset)).sort();
  const datasets = all.filter((d) => !datasetVariant(d));
  const main = g.runs.filter((r) => !datasetVariant(r.dataset));
  const budgets = uniq(main.map((r) => r.budget).filter((b): b is number => b !== null)).sort((a, b) => a - b);
  const presses = uniq(main.map((r) => r.press)).sort((a, b) => colors.compare(a, b));
  const compressed = presses.filter((p) => !isFull(p)).length;
  const hasFull = presses.some(isFull);
  const variants = all.length - datasets.length;
  const summary = `${plural(datasets.length, 'dataset')} × ${plural(compressed, 'press', 'presses')} × ${plural(budgets.length, 'budget')}${hasFull ? ' + Full' : ''} (${plural(main.length, 'run')})`
    + `${variants ? `, and ${plural(variants, 'experiment variant')} (${g.runs.length - main.length} runs)` : ''}.`
    + `${hasFull ? ' Dashed line: the Full cache.' : ''} Hover a point for its value.`;
  const figures: FigureModel[] = [];
  if (datasets.length > 1) {
    const { series, refs } = scoreLines(main, colors, datasets.length);
    const cells = uniq(main.map((r) => JSON.stringify([r.press, r.budget])));
    const complete = cells.every((c) => main.filter((r) => JSON.stringify([r.press, r.budget]) === c).length === datasets.length);
    figures.push({ chart: { kind: 'line', series, opts: {
      title: `Average over ${datasets.length} datasets`,
      subtitle: complete ? 'mean score of every dataset' : 'each point: mean over the datasets that have it (hover for how many)',
      xLabel: BUDGET_AXIS, yLabel: 'mean score', xScale: 'log2', refLines: refs, ...yAxisFor(main),
    } } });
  }
  for (const d of datasets) {
    const rows = g.runs.filter((r) => r.dataset === d);
    const { series, refs } = scoreLines(rows, colors);
    const n = uniq(rows.map((r) => r.n).filter((v) => v !== undefined));
    figures.push({ chart: { kind: 'line', series, opts: {
      title: d, subtitle: `${uniq(rows.map((r) => r.metric)).join(', ')}${n.length ? ` · n = ${n.join('/')}` : ''}`,
      xLabel: BUDGET_AXIS, yLabel: 'score', xScale: 'log2', refLines: refs, formatY: (v) => fmtNum(v), ...yAxisFor(rows),
    } } });
  }
  return {
    id: `results-${gi}`, model: g.model, protocol: g.protocol, datasets, presses, budgets,
    runs: [...g.runs].sort((a, b) => (a.dataset < b.dataset ? -1 : a.dataset > b.dataset ? 1 : 0) || colors.compare(a.press, b.press) || (a.budget ?? Infinity) - (b.budget ?? Infinity)),
    summary, figures, variantFigures: variantFigures(g.runs, colors),
  };
}

/** One chart per (base dataset, family): a line per press × variant, colored by variant. */
function variantFigures(runs: RunRow[], colors: PressColors): FigureModel[] {
  const fams = new Map<string, { base: string; family: string; rows: (RunRow & { variant: string })[] }>();
  for (const r of runs) {
    const v = datasetVariant(r.dataset);
    if (!v) continue;
    const key = `${v.family}\u0000${v.base}`;
    if (!fams.has(key)) fams.set(key, { base: v.base, family: v.family, rows: [] });
    fams.get(key)!.rows.push({ ...r, variant: v.variant });
  }
  // KV storage types are compared with the f32 runs of the same dataset and presses
  for (const f of fams.values()) {
    if (f.family !== 'kv-dtype') continue;
    const presses = new Set(f.rows.map((r) => r.press));
    for (const r of runs) if (r.dataset === f.base && presses.has(r.press)) f.rows.push({ ...r, variant: 'f32' });
  }
  const out: FigureModel[] = [];
  for (const f of [...fams.values()].sort((a, b) => (a.family + a.base < b.family + b.base ? -1 : 1))) {
    const vs = uniq(f.rows.map((r) => r.variant)).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    const ps = uniq(f.rows.map((r) => r.press)).sort((a, b) => colors.compare(a, b));
    const series: LineSeries[] = [];
    const refs: RefLine[] = [];
    for (const [pi, p] of ps.entries()) {
      for (const [vi, v] of vs.entries()) {
        const rows = f.rows.filter((r) => r.press === p && r.variant === v);
        const name = `${pressName(p)} · ${v}`;
        for (const r of rows.filter((x) => x.budget === null)) refs.push({ name, y: r.score, color: vi, dash: 1 });
        const pts = rows.filter((r) => r.budget !== null).map((r) => ({ x: r.budget as number, y: r.score, label: `${name} B=${r.budget}: ${r.score.toFixed(2)}` }));
        // past 10 variants the colors repeat: the dash pattern tells them apart
        if (pts.length) series.push({ name, points: pts, color: vi, dash: (pi + Math.floor(vi / 10)) % 4, marker: pi % 4 });
      }
    }
    out.push({ chart: { kind: 'line', series, opts: {
      title: `${f.base} — ${f.family}`, subtitle: `${plural(vs.length, 'variant')}: ${vs.join(', ')} · ${uniq(f.rows.map((r) => r.metric)).join(', ')}`,
      xLabel: BUDGET_AXIS, yLabel: 'score', xScale: 'log2', refLines: refs, ...yAxisFor(f.rows),
    } } });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Profiles and head scores

/** Budget and window used for the CoKV allocation heatmap. */
export const REPORT_COKV_BUDGET = 64;
export const REPORT_COKV_WINDOW = 8;

/** The α the report uses for a model with `players` players (CoKV's default, as `cokv eval` picks it). */
export function reportAlpha(players: number): number {
  return alphaForPlayers(players);
}

/** Per-head kept tokens (selected + window) of CoKV at `budget`, [layer][kvHead]. */
export function cokvKeptTokens(values: number[][], budget = REPORT_COKV_BUDGET, window = REPORT_COKV_WINDOW): number[][] {
  const [L, H] = [values.length, values[0]?.length ?? 0];
  const alloc = cokvAllocation(values.flat(), reportAlpha(L * H), L, H, budget - window, 1e9, true);
  return alloc.map((row) => row.map((v) => v + window));
}

function flatNote(values: number[][]): string {
  const f = values.flat();
  return f.length > 0 && f.every((v) => v === f[0]) ? ` · every cell ${fmtNum(f[0])}` : '';
}

function profilePanel(p: ProfileData, dir: string): ProfilePanel {
  const [L, H] = p.shape;
  const file = path.relative(dir, p.file) || p.file;
  const playerLayers = p.layers ?? Array.from({ length: L }, (_, i) => i);
  const layers = playerLayers.map(String);
  const heads = Array.from({ length: H }, (_, i) => String(i));
  if (p.kind === 'head-scores') {
    const dims = `${L} layers × ${H} query heads${p.kvHeads !== undefined && p.kvHeads !== H ? ` (${p.kvHeads} KV heads)` : ''}`;
    const facts = [dims, p.method && `method ${p.method}`, 'HeadKV head scores (cokv head-scores), not Shapley values'].filter(Boolean).join(' · ');
    return { model: p.model, file, kind: p.kind, facts, figures: [{ chart: { kind: 'heatmap', values: p.values, opts: {
      title: 'HeadKV head scores', subtitle: `${dims}${flatNote(p.values)}`,
      xLabel: 'query head', yLabel: 'layer', xTicks: heads, yTicks: layers, scale: 'sequential', legendLabel: 'head score',
    } } }] };
  }
  const partial = playerLayers.some((l, r) => l !== r);
  const facts = [
    partial ? `${L} full-attention layers (${playerLayers.join(', ')}) × ${H} KV heads` : `${L} layers × ${H} KV heads`,
    p.utility && `utility ${p.utility}`,
    p.task && `task ${p.task}`,
    p.samples !== undefined && `${p.samples} samples${p.runs ? ` × ${p.runs} run${p.runs > 1 ? 's' : ''}` : ''}`,
    p.converged !== undefined && (p.converged ? 'converged' : 'not converged'),
    p.seconds !== undefined && `${p.seconds.toFixed(0)} s`,
  ].filter(Boolean).join(' · ');
  const kept = cokvKeptTokens(p.values);
  const n = L * H;
  const figures: FigureModel[] = [
    { chart: { kind: 'heatmap', values: p.values, opts: {
      title: p.method === 'leave-one-out' ? 'Head values (leave-one-out: U(N) − U(N∖{i}))' : p.method === 'exact sliced' ? 'Head values (exact sliced values)' : 'Head values (Shapley estimate)', subtitle: `${p.model} · ${L}×${H} players${flatNote(p.values)}`,
      xLabel: 'KV head', yLabel: 'layer', xTicks: heads, yTicks: layers, legendLabel: 'value',
    } } },
    { chart: { kind: 'heatmap', values: kept, opts: {
      title: `CoKV budget at B=${REPORT_COKV_BUDGET}`,
      subtitle: `kept tokens per head (window ${REPORT_COKV_WINDOW} + share of ${(REPORT_COKV_BUDGET - REPORT_COKV_WINDOW) * n}), α = ${reportAlpha(n)}${flatNote(kept)}`,
      xLabel: 'KV head', yLabel: 'layer', xTicks: heads, yTicks: layers, scale: 'sequential', legendLabel: 'tokens', format: (v) => String(Math.round(v)),
    } } },
  ];
  if (p.maeHistory.length > 0) {
    figures.push({ chart: { kind: 'line', series: [{ name: 'MAE vs previous', points: p.maeHistory.map((h) => [h.samples, h.mae]), color: 0 }], opts: {
      title: 'Convergence', subtitle: 'mean absolute change of the values between checkpoints',
      xLabel: 'samples per run', yLabel: 'MAE', xScale: 'linear', yMin: 0,
    } } });
  }
  return { model: p.model, file, kind: p.kind, facts, figures };
}

// ---------------------------------------------------------------------------------------------------------------
// Needle grids and bench files

function needleFigures(needles: NeedleData[], dir: string, colors: PressColors): FigureModel[] {
  const sorted = [...needles].sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0) || colors.compare(a.press, b.press) || (a.budget ?? Infinity) - (b.budget ?? Infinity));
  return sorted.map((nd) => {
    const cells = nd.scores.flat().filter((v): v is number => v !== null);
    const label = isFull(nd.press) ? 'Full' : `${pressName(nd.press)} ${budgetLabel(nd.budget)}`;
    return { caption: path.relative(dir, nd.file), chart: { kind: 'heatmap', values: nd.scores, opts: {
      title: `Needle — ${label}`, subtitle: `${nd.model} · mean ${(100 * mean(cells)).toFixed(1)}%`,
      xLabel: 'context length (tokens)', yLabel: 'needle depth', xTicks: nd.lengths.map(fmtNum), yTicks: nd.depths.map((d) => `${fmtNum(d)}%`),
      scale: 'sequential', min: 0, max: 1, legendLabel: 'score', format: (v) => (100 * v).toFixed(0),
    } } };
  });
}

function benchPanel(b: BenchData, dir: string, colors: PressColors): BenchPanel {
  const keys = uniq(b.rows.map((r) => JSON.stringify([r.press, r.budget])))
    .map((k) => JSON.parse(k) as [string, number | null])
    .sort((x, y) => colors.compare(x[0], y[0]) || (x[1] ?? Infinity) - (y[1] ?? Infinity));
  const budgetsOf = (p: string) => keys.filter((k) => k[0] === p).map((k) => k[1]);
  const mk = (field: keyof BenchRow, div = 1): LineSeries[] => keys.map(([p, bud]) => {
    const pts = b.rows.filter((r) => r.press === p && r.budget === bud && r[field] !== undefined)
      .map((r) => ({ x: r.length, y: (r[field] as number) / div }));
    const k = budgetsOf(p).indexOf(bud);
    return { name: isFull(p) ? 'Full' : `${pressName(p)} ${budgetLabel(bud)}`, points: pts, color: colors.get(p), dash: k % 4, marker: k % 4 };
  }).filter((s) => s.points.length > 0);
  const kvU = byteUnit(Math.max(0, ...b.rows.map((r) => r.kvBytes ?? 0)));
  const rssU = byteUnit(Math.max(0, ...b.rows.map((r) => r.peakRssBytes ?? 0)));
  const charts: [LineSeries[], string, string][] = [
    [mk('kvBytes', kvU.div), 'KV cache size', `KV bytes (${kvU.unit})`],
    [mk('decodeMsPerToken'), 'Decode latency', 'decode ms / token'],
    [mk('prefillMs'), 'Prefill time', 'prefill ms'],
    [mk('peakRssBytes', rssU.div), 'Peak memory (RSS)', `peak RSS (${rssU.unit})`],
  ];
  const figures: FigureModel[] = charts.filter(([s]) => s.length > 0).map(([series, title, yLabel]) => (
    { chart: { kind: 'line', series, opts: { xLabel: 'prompt length (tokens)', yMin: 0, title, subtitle: b.model, yLabel } } }));
  return { model: b.model, file: path.relative(dir, b.file), figures };
}

// ---------------------------------------------------------------------------------------------------------------

/** The report model of what `readResults` found. */
export function buildModel(res: Results): ReportModel {
  const { runs, profiles, needles, benches } = res;
  const colors = new PressColors([...runs.map((r) => r.press), ...needles.map((n) => n.press), ...benches.flatMap((b) => b.rows.map((r) => r.press))]);
  const created = runs.map((r) => r.createdAt).filter((c): c is string => !!c).sort();
  const models = uniq([...runs.map((r) => r.model), ...profiles.map((p) => p.model), ...needles.map((n) => n.model), ...benches.map((b) => b.model)]);
  const dirName = path.basename(res.dir);
  const missing = [
    !runs.length && { what: 'scores', hint: 'cokv eval --out DIR' },
    !profiles.length && { what: 'profiles', hint: 'DIR/profiles/*.json, a profile named by the runs, or cokv report --profile FILE' },
    !needles.length && { what: 'needle grids', hint: 'cokv needle --out DIR' },
    !benches.length && { what: 'bench files', hint: 'cokv bench --out DIR' },
  ].filter((x): x is { what: string; hint: string } => !!x);
  const counts = [
    runs.length && `${runs.length} runs over ${uniq(runs.map((r) => r.dataset)).length} datasets`,
    profiles.length && `${profiles.length} profile${profiles.length > 1 ? 's' : ''}`,
    needles.length && `${needles.length} needle grid${needles.length > 1 ? 's' : ''}`,
    benches.length && `${benches.length} bench file${benches.length > 1 ? 's' : ''}`,
  ].filter(Boolean).join(' · ');
  return {
    dir: res.dir,
    title: `cokv report — ${dirName}`,
    models,
    created: created.length ? [created[0], created[created.length - 1]] : undefined,
    counts,
    missing,
    results: groupRuns(runs).map((g, i) => resultGroup(g, i, colors)),
    profiles: profiles.map((p) => profilePanel(p, res.dir)),
    needles: needleFigures(needles, res.dir, colors),
    benches: benches.map((b) => benchPanel(b, res.dir, colors)),
    skipped: res.skipped,
    tables: res.records.length ? resultsDocument({ records: res.records, benches }) : [],
    ciClamped: runs.some((r) => shownCi(r)?.clamped),
  };
}
