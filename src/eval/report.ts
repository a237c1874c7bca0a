/**
 * `cokv report`: one self-contained HTML file (inline SVG, inline CSS, no script, no network) from an eval results
 * folder. Input layout (the contract with the eval runner):
 *
 * - `DIR/<dataset>__<model>__<press>__<budget>/metrics.json` (one run; `predictions.jsonl` beside it is ignored);
 * - `DIR/summary.json`: `{ entries: [...] }`, rows like metrics.json (`task` may stand for `dataset`);
 * - `DIR/profiles/*.json`: CoKV profiles (`cokv-profile/1`, or the minimal `{ shape, scores }` form);
 * - `DIR/needle/*.json`: needle-in-a-haystack grids, `scores[depthIndex][lengthIndex]` in [0, 1];
 * - `DIR/bench/*.json`: `{ model, rows: [{ length, press, budget, prefillMs, decodeMsPerToken, kvBytes, peakRssBytes }] }`.
 *
 * Every file is read defensively: a malformed one is skipped with a warning (stderr by default) and listed at the end
 * of the report. A folder with no usable result at all is an error (CokvError), not an empty page: a typo in the
 * path or a runner that wrote nothing should fail loudly. Sections without data are left out.
 *
 * Colors: series colors are CSS custom properties with a light and a dark palette (`prefers-color-scheme`); every
 * SVG also carries presentation-attribute fallbacks so the chart helpers' output renders on its own.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import { cokvAllocation } from '../press/allocators/cokv.js';

// ---------------------------------------------------------------------------------------------------------------
// Small formatting helpers

/** Escape text for HTML and SVG (element content and attribute values). */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

/** Short number: integers as is (1.2M above a million), others with 3 significant digits. */
export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (Number.isInteger(v)) return String(v);
  if (a >= 100) return v.toFixed(0);
  if (a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

export function fmtBytes(b: number): string {
  if (!Number.isFinite(b)) return '—';
  if (b < 1024) return `${Math.round(b)} B`;
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(1)} KiB`;
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(1)} MiB`;
  return `${(b / 1024 ** 3).toFixed(2)} GiB`;
}

/** The binary unit that suits a byte range: divide by `div` and label with `unit`. */
function byteUnit(max: number): { div: number; unit: string } {
  if (max >= 1024 ** 3) return { div: 1024 ** 3, unit: 'GiB' };
  if (max >= 1024 ** 2) return { div: 1024 ** 2, unit: 'MiB' };
  if (max >= 1024) return { div: 1024, unit: 'KiB' };
  return { div: 1, unit: 'B' };
}

function budgetLabel(b: number | null): string {
  return b === null ? 'full cache' : `B=${b}`;
}

function mean(xs: number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  const out: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/** [lo, hi] widened to round values (a tick step) around the data. */
function niceDomain(lo: number, hi: number, count = 5): [number, number] {
  const t = niceTicks(lo, hi, count);
  if (t.length < 2) return [lo - 1, hi + 1];
  const step = t[1] - t[0];
  return [Math.floor(lo / step + 1e-9) * step, Math.ceil(hi / step - 1e-9) * step];
}

// ---------------------------------------------------------------------------------------------------------------
// Palette: 10 series colors (light / dark), plus a neutral reference color. Classes map to CSS variables in the page;
// the attributes carry the light colors for standalone SVG.

const LIGHT = ['#1f6fc5', '#d1342f', '#2e9a3e', '#e07b00', '#8a4fc7', '#8c5a3c', '#d4449c', '#0f9bb0', '#8f8f00', '#5b6470'];
const DARK = ['#5eaaf5', '#ff6f69', '#5fd16f', '#ffab40', '#b98cff', '#d29a74', '#ff7fc4', '#3fd0e0', '#d4d44a', '#aab4c0'];
const REF_LIGHT = '#2b2f36';
const REF_DARK = '#e8ebf0';
const DASHES = ['', '7 4', '2 3', '9 3 2 3'];

function seriesColor(i: number): { cls: string; hex: string } {
  if (i < 0) return { cls: 'ck-ref', hex: REF_LIGHT };
  const k = i % LIGHT.length;
  return { cls: `ck-c${k}`, hex: LIGHT[k] };
}

/** Marker shape `shape` centred on (x, y), as an SVG element. */
function marker(shape: number, x: number, y: number, cls: string, hex: string, title: string, data = true): string {
  const t = title ? `<title>${esc(title)}</title>` : '';
  const p = (v: number) => v.toFixed(1);
  const attrs = `class="${data ? 'ck-mark ' : ''}ck-fill ${cls}" fill="${hex}"`;
  switch (shape % 4) {
    case 1: return `<rect ${attrs} x="${p(x - 3.6)}" y="${p(y - 3.6)}" width="7.2" height="7.2">${t}</rect>`;
    case 2: return `<path ${attrs} d="M${p(x)} ${p(y - 5)}L${p(x + 5)} ${p(y)}L${p(x)} ${p(y + 5)}L${p(x - 5)} ${p(y)}Z">${t}</path>`;
    case 3: return `<path ${attrs} d="M${p(x)} ${p(y - 5)}L${p(x + 4.6)} ${p(y + 3.6)}L${p(x - 4.6)} ${p(y + 3.6)}Z">${t}</path>`;
    default: return `<circle ${attrs} cx="${p(x)}" cy="${p(y)}" r="4">${t}</circle>`;
  }
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

function svgOpen(w: number, h: number, title: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" class="ck-chart" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(title)}" font-family="system-ui, sans-serif" font-size="12">`;
}

function svgTitle(title: string, subtitle: string | undefined, w: number): string {
  let s = `<text class="ck-title" x="14" y="22" font-size="15" font-weight="600" fill="${REF_LIGHT}">${esc(truncate(title, Math.floor((w - 28) / 8)))}<title>${esc(title)}</title></text>`;
  if (subtitle) s += `<text class="ck-muted" x="14" y="40" font-size="12" fill="#5b6470">${esc(truncate(subtitle, Math.floor((w - 28) / 6.2)))}</text>`;
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Line chart

export interface ChartPoint { x: number; y: number; label?: string }

export interface LineSeries {
  name: string;
  points: (ChartPoint | [number, number])[];
  /** Palette index (default: the series' position); -1 = the neutral reference color. */
  color?: number;
  /** Dash pattern index (0 solid, 1 dashed, 2 dotted, 3 dash-dot). */
  dash?: number;
  /** Marker shape index (0 circle, 1 square, 2 diamond, 3 triangle). */
  marker?: number;
}

/** A horizontal line across the whole plot (e.g. the Full-cache score). */
export interface RefLine { name: string; y: number; color?: number; dash?: number }

export interface LineChartOptions {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** `auto` (default): log2 when all x > 0 and they span a factor of 8 or more. */
  xScale?: 'linear' | 'log2' | 'auto';
  /** Tick positions on x (default: the data's x values on a log2 axis, round values on a linear one). */
  xTicks?: number[];
  yMin?: number;
  yMax?: number;
  formatX?: (v: number) => string;
  formatY?: (v: number) => string;
  refLines?: RefLine[];
}

function toPoint(p: ChartPoint | [number, number]): ChartPoint {
  return Array.isArray(p) ? { x: p[0], y: p[1] } : p;
}

/** An SVG line chart: one line (with markers) per series, optional horizontal reference lines, axes, legend, title. */
export function lineChart(series: LineSeries[], opts: LineChartOptions): string {
  const W = opts.width ?? 640;
  const fx = opts.formatX ?? fmtNum;
  const fy = opts.formatY ?? fmtNum;
  const data = series.map((s) => ({ ...s, pts: s.points.map(toPoint).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x) }));
  const refs = (opts.refLines ?? []).filter((r) => Number.isFinite(r.y));
  const legend = [
    ...data.map((s, i) => ({ name: s.name, color: s.color ?? i, dash: s.dash ?? 0, marker: s.marker ?? 0, ref: false })),
    ...refs.map((r) => ({ name: r.name, color: r.color ?? -1, dash: r.dash ?? 1, marker: -1, ref: true })),
  ];
  const legendChars = Math.min(26, Math.max(4, ...legend.map((l) => l.name.length)));
  const legendW = legend.length > 0 ? 52 + legendChars * 7.2 : 0;
  const top = opts.subtitle ? 56 : 40;
  const H = Math.max(opts.height ?? 340, top + 24 + legend.length * 19);
  const ml = 62;
  const mb = 52;
  const pw = W - ml - 16 - legendW;
  const ph = H - top - mb;
  const allX = data.flatMap((s) => s.pts.map((p) => p.x));
  const allY = [...data.flatMap((s) => s.pts.map((p) => p.y)), ...refs.map((r) => r.y)];
  let s = svgOpen(W, H, opts.title) + svgTitle(opts.title, opts.subtitle, W);
  if (allY.length === 0) {
    return `${s}<text class="ck-muted" x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#5b6470">no data</text></svg>`;
  }
  // x scale
  const xs = [...new Set(allX)].sort((a, b) => a - b);
  const xmin0 = xs.length ? xs[0] : 0;
  const xmax0 = xs.length ? xs[xs.length - 1] : 1;
  const log = opts.xScale === 'log2' ? xmin0 > 0 : opts.xScale === 'linear' ? false : xmin0 > 0 && xmax0 / xmin0 >= 8;
  const tx = (v: number) => (log ? Math.log2(v) : v);
  let xlo: number;
  let xhi: number;
  let xticks: number[];
  if (log) {
    xlo = tx(xmin0);
    xhi = tx(xmax0);
    const pad = xhi > xlo ? (xhi - xlo) * 0.06 : 0.5;
    xlo -= pad;
    xhi += pad;
    xticks = opts.xTicks ?? xs;
  } else {
    [xlo, xhi] = xs.length ? niceDomain(xmin0, xmax0, 6) : [0, 1];
    if (xhi === xlo) { xlo -= 1; xhi += 1; }
    xticks = opts.xTicks ?? niceTicks(xlo, xhi, 6);
  }
  if (xticks.length > 10) { const k = Math.ceil(xticks.length / 10); xticks = xticks.filter((_, i) => i % k === 0); }
  // y scale
  let ylo = Math.min(...allY, opts.yMin ?? Infinity);
  let yhi = Math.max(...allY, opts.yMax ?? -Infinity);
  const ypad = (yhi - ylo) * 0.04;
  [ylo, yhi] = niceDomain(opts.yMin !== undefined ? ylo : ylo - (ylo >= 0 && ylo - ypad < 0 ? ylo : ypad), opts.yMax !== undefined ? yhi : yhi + ypad, 5);
  const yticks = niceTicks(ylo, yhi, 5).filter((v) => v >= ylo - 1e-9 && v <= yhi + 1e-9);
  const X = (v: number) => ml + ((tx(v) - xlo) / (xhi - xlo || 1)) * pw;
  const Y = (v: number) => top + ph - ((v - ylo) / (yhi - ylo || 1)) * ph;
  // grid and axes
  s += '<g class="ck-gridlines">';
  for (const v of yticks) s += `<path class="ck-gl" stroke="#e4e7ec" d="M${ml} ${Y(v).toFixed(1)}H${ml + pw}"/>`;
  s += '</g><g class="ck-axes">';
  s += `<path class="ck-axis" stroke="#8a94a3" fill="none" d="M${ml} ${top}V${top + ph}H${ml + pw}"/>`;
  for (const v of yticks) {
    s += `<text class="ck-tick" x="${ml - 6}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end" fill="#5b6470">${esc(fy(v))}</text>`;
  }
  for (const v of xticks) {
    if (log && !(v > 0)) continue;
    const x = X(v);
    if (x < ml - 1 || x > ml + pw + 1) continue;
    s += `<path class="ck-axis" stroke="#8a94a3" d="M${x.toFixed(1)} ${top + ph}v5"/>`;
    s += `<text class="ck-tick" x="${x.toFixed(1)}" y="${top + ph + 18}" text-anchor="middle" fill="#5b6470">${esc(fx(v))}</text>`;
  }
  s += `<text class="ck-label" x="${ml + pw / 2}" y="${H - 10}" text-anchor="middle" fill="${REF_LIGHT}">${esc(opts.xLabel)}${log ? ' (log scale)' : ''}</text>`;
  s += `<text class="ck-label" transform="translate(16 ${top + ph / 2}) rotate(-90)" text-anchor="middle" fill="${REF_LIGHT}">${esc(opts.yLabel)}</text>`;
  s += '</g><g class="ck-data">';
  // reference lines under the series
  for (const r of refs) {
    const c = seriesColor(r.color ?? -1);
    const y = Y(r.y).toFixed(1);
    s += `<path class="ck-mark ck-line ${c.cls}" stroke="${c.hex}" stroke-width="1.6" stroke-dasharray="${DASHES[(r.dash ?? 1) % 4] || 'none'}" fill="none" d="M${ml} ${y}H${ml + pw}"><title>${esc(`${r.name}: ${fy(r.y)}`)}</title></path>`;
  }
  for (const [i, sr] of data.entries()) {
    const c = seriesColor(sr.color ?? i);
    if (sr.pts.length > 1) {
      const d = sr.pts.map((p, k) => `${k ? 'L' : 'M'}${X(p.x).toFixed(1)} ${Y(p.y).toFixed(1)}`).join('');
      s += `<path class="ck-mark ck-line ${c.cls}" stroke="${c.hex}" stroke-width="2" fill="none" stroke-linejoin="round" stroke-dasharray="${DASHES[(sr.dash ?? 0) % 4] || 'none'}" d="${d}"/>`;
    }
    for (const p of sr.pts) s += marker(sr.marker ?? 0, X(p.x), Y(p.y), c.cls, c.hex, p.label ?? `${sr.name}: ${fx(p.x)} → ${fy(p.y)}`);
  }
  s += '</g>';
  // legend
  if (legend.length > 0) {
    const lx = ml + pw + 18;
    s += '<g class="ck-legend">';
    legend.forEach((l, k) => {
      const y = top + 6 + k * 19;
      const c = seriesColor(l.color);
      s += `<path class="ck-line ${c.cls}" stroke="${c.hex}" stroke-width="2" stroke-dasharray="${DASHES[l.dash % 4] || 'none'}" d="M${lx} ${y}h26"/>`;
      if (l.marker >= 0) s += marker(l.marker, lx + 13, y, c.cls, c.hex, '', false);
      s += `<text class="ck-text" x="${lx + 32}" y="${y + 4}" fill="${REF_LIGHT}">${esc(truncate(l.name, legendChars))}<title>${esc(l.name)}</title></text>`;
    });
    s += '</g>';
  }
  return `${s}</svg>`;
}

// ---------------------------------------------------------------------------------------------------------------
// Heatmap

const VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];
const DIVERGING = ['#2b5fb4', '#5a8fd6', '#9dbfe8', '#dde3ea', '#f0b49b', '#dd6e55', '#b2182b'];

function hexRgb(h: string): [number, number, number] {
  return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)];
}

/** Color at t ∈ [0, 1] along a list of stops. */
function ramp(stops: string[], t: number): string {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = hexRgb(stops[i]);
  const b = hexRgb(stops[i + 1]);
  return `#${a.map((v, k) => Math.round(v + (b[k] - v) * f).toString(16).padStart(2, '0')).join('')}`;
}

function textOn(hex: string): string {
  const [r, g, b] = hexRgb(hex);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 ? '#111111' : '#ffffff';
}

export interface HeatmapOptions {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  /** One label per column / row. */
  xTicks: string[];
  yTicks: string[];
  /** `auto` (default): diverging around 0 when the data has both signs, else sequential. */
  scale?: 'sequential' | 'diverging' | 'auto';
  min?: number;
  max?: number;
  format?: (v: number) => string;
  /** Print the values in the cells (default: when they fit). */
  showValues?: boolean;
  legendLabel: string;
}

/** An SVG heatmap of `values[row][col]` (non-finite cells are drawn hatched as "n/a"), with a color bar. */
export function heatmap(values: (number | null)[][], opts: HeatmapOptions): string {
  const rows = values.length;
  const cols = Math.max(0, ...values.map((r) => r.length));
  const fmt = opts.format ?? fmtNum;
  const finite = values.flat().filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const top = opts.subtitle ? 56 : 40;
  if (rows === 0 || cols === 0 || finite.length === 0) {
    return `${svgOpen(420, 120, opts.title)}${svgTitle(opts.title, opts.subtitle, 420)}<text class="ck-muted" x="210" y="${top + 40}" text-anchor="middle" fill="#5b6470">no data</text></svg>`;
  }
  let lo = opts.min ?? Math.min(...finite);
  let hi = opts.max ?? Math.max(...finite);
  const diverging = opts.scale === 'diverging' || ((opts.scale ?? 'auto') === 'auto' && lo < 0 && hi > 0);
  if (diverging) { const m = Math.max(Math.abs(lo), Math.abs(hi)); lo = -m; hi = m; }
  if (hi === lo) { hi = lo + 1; }
  const stops = diverging ? DIVERGING : VIRIDIS;
  const color = (v: number) => ramp(stops, (v - lo) / (hi - lo));
  const cw = Math.max(12, Math.min(64, Math.floor(440 / cols)));
  const ch = Math.max(9, Math.min(40, Math.floor(340 / rows)));
  const yChars = Math.max(...opts.yTicks.map((t) => t.length), 1);
  const ml = 34 + yChars * 7;
  const gw = cols * cw;
  const gh = rows * ch;
  const barX = ml + gw + 22;
  const W = Math.max(barX + 90, Math.min(640, 14 + opts.title.length * 8.2));
  const H = top + gh + 56;
  const show = opts.showValues ?? (cw >= 30 && ch >= 16);
  let s = svgOpen(W, H, opts.title) + svgTitle(opts.title, opts.subtitle, W);
  s += '<g class="ck-data">';
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = values[r][c];
      const x = ml + c * cw;
      const y = top + r * ch;
      const label = `${opts.yLabel} ${opts.yTicks[r] ?? r}, ${opts.xLabel} ${opts.xTicks[c] ?? c}: `;
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        s += `<rect class="ck-mark ck-na" x="${x}" y="${y}" width="${cw}" height="${ch}" fill="#9aa3ad" fill-opacity="0.35"><title>${esc(label + 'n/a')}</title></rect>`;
        continue;
      }
      const col = color(v);
      s += `<rect class="ck-mark ck-cell" x="${x}" y="${y}" width="${cw}" height="${ch}" fill="${col}"><title>${esc(label + fmt(v))}</title></rect>`;
      if (show) s += `<text x="${x + cw / 2}" y="${y + ch / 2 + 4}" text-anchor="middle" font-size="${cw >= 40 ? 11 : 10}" fill="${textOn(col)}" pointer-events="none">${esc(fmt(v))}</text>`;
    }
  }
  s += '</g><g class="ck-axes">';
  // ticks: thin out labels that would overlap
  const xChars = Math.max(...opts.xTicks.map((t) => t.length), 1);
  const xEvery = Math.max(1, Math.ceil((xChars * 7 + 4) / cw));
  const yEvery = Math.max(1, Math.ceil(14 / ch));
  for (let c = 0; c < cols; c += xEvery) {
    s += `<text class="ck-tick" x="${ml + c * cw + cw / 2}" y="${top + gh + 15}" text-anchor="middle" fill="#5b6470">${esc(opts.xTicks[c] ?? c)}</text>`;
  }
  for (let r = 0; r < rows; r += yEvery) {
    s += `<text class="ck-tick" x="${ml - 6}" y="${top + r * ch + ch / 2 + 4}" text-anchor="end" fill="#5b6470">${esc(opts.yTicks[r] ?? r)}</text>`;
  }
  s += `<path class="ck-axis" stroke="#8a94a3" fill="none" d="M${ml - 0.5} ${top}V${top + gh + 0.5}H${ml + gw}"/>`;
  s += `<text class="ck-label" x="${ml + gw / 2}" y="${H - 12}" text-anchor="middle" fill="${REF_LIGHT}">${esc(opts.xLabel)}</text>`;
  s += `<text class="ck-label" transform="translate(16 ${top + gh / 2}) rotate(-90)" text-anchor="middle" fill="${REF_LIGHT}">${esc(opts.yLabel)}</text>`;
  s += '</g><g class="ck-legend">';
  // color bar: stacked rects, high at the top
  const barH = Math.max(60, Math.min(gh, 220));
  const steps = 24;
  for (let k = 0; k < steps; k++) {
    const t = 1 - (k + 0.5) / steps;
    s += `<rect x="${barX}" y="${(top + (k * barH) / steps).toFixed(2)}" width="14" height="${(barH / steps + 0.4).toFixed(2)}" fill="${ramp(stops, t)}"/>`;
  }
  s += `<rect class="ck-axis" x="${barX}" y="${top}" width="14" height="${barH}" fill="none" stroke="#8a94a3"/>`;
  for (const [t, v] of [[0, hi], [0.5, (lo + hi) / 2], [1, lo]] as [number, number][]) {
    s += `<text class="ck-tick" x="${barX + 19}" y="${(top + t * barH + 4).toFixed(1)}" fill="#5b6470">${esc(fmt(v))}</text>`;
  }
  s += `<text class="ck-label" x="${barX}" y="${top + barH + 18}" fill="${REF_LIGHT}">${esc(truncate(opts.legendLabel, 14))}<title>${esc(opts.legendLabel)}</title></text>`;
  return `${s}</g></svg>`;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the results folder

/** One scored run (a metrics.json, or a summary.json entry). */
export interface RunRow {
  dataset: string;
  model: string;
  press: string;
  budget: number | null;
  ratio?: number;
  protocol: string;
  metric: string;
  score: number;
  n?: number;
  ci95?: [number, number];
  keptKvBytes?: number;
  fullKvBytes?: number;
  /** What the KV bytes cover when the model has sliding layers (the full-attention layers only); see RunMetrics. */
  kvScope?: string;
  prefillMs?: number;
  decodeMsPerToken?: number;
  seconds?: number;
  createdAt?: string;
  source: string;
}

export interface ProfileData {
  file: string;
  model: string;
  shape: [number, number];
  values: number[][];
  /** Model layer of each values row (the player layers); absent = row r is layer r. */
  layers?: number[];
  utility?: string;
  task?: string;
  samples?: number;
  runs?: number;
  converged?: boolean;
  seconds?: number;
  maeHistory: { samples: number; mae: number }[];
}

export interface NeedleData {
  file: string;
  model: string;
  press: string;
  budget: number | null;
  lengths: number[];
  depths: number[];
  scores: (number | null)[][];
}

export interface BenchRow {
  length: number;
  press: string;
  budget: number | null;
  prefillMs?: number;
  decodeMsPerToken?: number;
  kvBytes?: number;
  peakRssBytes?: number;
}

export interface BenchData { file: string; model: string; rows: BenchRow[] }

export interface Results {
  dir: string;
  runs: RunRow[];
  profiles: ProfileData[];
  needles: NeedleData[];
  benches: BenchData[];
  /** "file: problem" for every file or entry that was skipped. */
  skipped: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const optNum = (v: unknown): number | undefined => (finite(v) ? v : undefined);
const optStr = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

class Skip extends Error {}
function need(cond: unknown, problem: string): asserts cond {
  if (!cond) throw new Skip(problem);
}

function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Skip('cannot read the file');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Skip(`not valid JSON (${(e as Error).message})`);
  }
}

function parseBudget(v: unknown, where: string): number | null {
  if (v === null) return null;
  need(finite(v) && v > 0, `${where} must be a positive number or null, got ${JSON.stringify(v)}`);
  return v;
}

/** Budget from a folder-name part: `full`, `null`, `none` → null; a positive number otherwise. */
function budgetFromName(s: string | undefined): number | null | undefined {
  if (s === undefined) return undefined;
  if (/^(full|null|none)$/i.test(s)) return null;
  const v = Number(s);
  return Number.isFinite(v) && v > 0 ? v : undefined;
}

function parseRun(o: unknown, source: string, fallback: { dataset?: string; model?: string; press?: string; budget?: number | null } = {}): RunRow {
  need(isObj(o), 'expected a JSON object');
  const dataset = optStr(o.dataset) ?? optStr(o.task) ?? fallback.dataset;
  const model = optStr(o.model) ?? fallback.model ?? optStr(o.modelPath);
  const press = optStr(o.press) ?? fallback.press;
  need(dataset, 'missing "dataset"');
  need(model, 'missing "model"');
  need(press, 'missing "press"');
  need(finite(o.score), `"score" must be a finite number, got ${JSON.stringify(o.score)}`);
  let budget: number | null;
  if ('budget' in o) budget = parseBudget(o.budget, '"budget"');
  else {
    need(fallback.budget !== undefined, 'missing "budget"');
    budget = fallback.budget;
  }
  if (press.toLowerCase() === 'full') budget = null;
  const promptLength = optNum(o.promptLength);
  const t = isObj(o.timings) ? o.timings : {};
  const ci = Array.isArray(o.ci95) && o.ci95.length === 2 && finite(o.ci95[0]) && finite(o.ci95[1]) ? [o.ci95[0], o.ci95[1]] as [number, number] : undefined;
  return {
    dataset: promptLength !== undefined && !optStr(o.dataset) ? `${dataset}@${promptLength}` : dataset,
    model,
    press,
    budget,
    ratio: optNum(o.ratio),
    protocol: optStr(o.protocol) ?? 'question-aware',
    metric: optStr(o.metric) ?? 'score',
    score: o.score,
    n: optNum(o.n),
    ci95: ci,
    keptKvBytes: optNum(o.keptKvBytes),
    fullKvBytes: optNum(o.fullKvBytes),
    kvScope: optStr(o.kvScope),
    prefillMs: optNum(t.prefillMs),
    decodeMsPerToken: optNum(t.decodeMsPerToken),
    seconds: optNum(t.seconds),
    createdAt: optStr(o.createdAt),
    source,
  };
}

function numberMatrix(m: unknown, rows: number, cols: number, what: string, allowNull: boolean): (number | null)[][] {
  need(Array.isArray(m) && m.length === rows, `"${what}" must have ${rows} rows`);
  return m.map((row, i) => {
    need(Array.isArray(row) && row.length === cols, `"${what}" row ${i} must have ${cols} values`);
    return row.map((v, j) => {
      if (v === null && allowNull) return null;
      need(finite(v), `"${what}"[${i}][${j}] is not a finite number`);
      return v;
    });
  });
}

function parseProfile(o: unknown, file: string): ProfileData {
  need(isObj(o), 'expected a JSON object');
  need(o.schema === undefined || o.schema === 'cokv-profile/1', `not a cokv profile (schema ${JSON.stringify(o.schema)})`);
  const m = o.values ?? o.scores;
  need(Array.isArray(m) && m.length > 0 && Array.isArray(m[0]), 'no "values" matrix');
  let shape: [number, number];
  if (o.shape !== undefined) {
    need(Array.isArray(o.shape) && o.shape.length === 2 && o.shape.every((v) => Number.isInteger(v) && v > 0), '"shape" must be [layers, kvHeads]');
    shape = [o.shape[0] as number, o.shape[1] as number];
  } else {
    shape = [m.length, (m[0] as unknown[]).length];
  }
  need(shape[0] * shape[1] <= 65536, `shape ${shape[0]}×${shape[1]} is too large`);
  const values = numberMatrix(m, shape[0], shape[1], 'values', false) as number[][];
  let layers: number[] | undefined;
  if (o.layers !== undefined) {
    const l = o.layers;
    need(Array.isArray(l) && l.length === shape[0] && l.every((x, i) => Number.isInteger(x) && x >= 0 && (i === 0 || x > (l[i - 1] as number))),
      `"layers" must list the ascending model layer of each of the ${shape[0]} rows`);
    layers = l as number[];
  }
  let model = optStr(o.model);
  if (isObj(o.model)) {
    const f = o.model;
    model = `${optStr(f.architecture) ?? 'model'} ${f.layers ?? shape[0]}L×${f.kvHeads ?? shape[1]}kv${optStr(f.hash) ? ` #${String(f.hash).slice(0, 8)}` : ''}`;
  }
  const modelPath = optStr(o.modelPath);
  const mae = Array.isArray(o.maeHistory)
    ? o.maeHistory.filter((h): h is { samples: number; mae: number } => isObj(h) && finite(h.samples) && finite(h.mae))
    : [];
  return {
    file,
    model: modelPath ? path.basename(modelPath) : (model ?? path.basename(file, '.json')),
    shape,
    values,
    layers,
    utility: optStr(o.utility),
    task: optStr(o.task),
    samples: optNum(o.samples),
    runs: optNum(o.runs),
    converged: typeof o.converged === 'boolean' ? o.converged : undefined,
    seconds: isObj(o.cost) ? optNum(o.cost.seconds) : undefined,
    maeHistory: mae.map((h) => ({ samples: h.samples, mae: h.mae })),
  };
}

function numberList(v: unknown, what: string): number[] {
  need(Array.isArray(v) && v.length > 0 && v.length <= 1000 && v.every(finite), `"${what}" must be a non-empty list of numbers`);
  return v as number[];
}

function parseNeedle(o: unknown, file: string): NeedleData {
  need(isObj(o), 'expected a JSON object');
  const lengths = numberList(o.lengths, 'lengths');
  const depths = numberList(o.depths, 'depths');
  const scores = numberMatrix(o.scores, depths.length, lengths.length, 'scores', true);
  const press = optStr(o.press) ?? 'full';
  return {
    file,
    model: optStr(o.model) ?? 'unknown model',
    press,
    budget: 'budget' in o && press.toLowerCase() !== 'full' ? parseBudget(o.budget, '"budget"') : null,
    lengths,
    depths,
    scores,
  };
}

function parseBench(o: unknown, file: string, warn: (m: string) => void): BenchData {
  need(isObj(o), 'expected a JSON object');
  need(Array.isArray(o.rows), 'missing "rows" list');
  const rows: BenchRow[] = [];
  let bad = 0;
  for (const r of o.rows) {
    if (!isObj(r) || !finite(r.length) || r.length <= 0 || !optStr(r.press) || !(r.budget === null || r.budget === undefined || (finite(r.budget) && r.budget > 0))) {
      bad++;
      continue;
    }
    const press = r.press as string;
    rows.push({
      length: r.length,
      press,
      budget: press.toLowerCase() === 'full' ? null : ((r.budget as number | null | undefined) ?? null),
      prefillMs: optNum(r.prefillMs),
      decodeMsPerToken: optNum(r.decodeMsPerToken),
      kvBytes: optNum(r.kvBytes),
      peakRssBytes: optNum(r.peakRssBytes),
    });
  }
  if (bad > 0) warn(`${file}: skipped ${bad} malformed row${bad > 1 ? 's' : ''}`);
  need(rows.length > 0, 'no usable rows');
  return { file, model: optStr(o.model) ?? 'unknown model', rows };
}

function jsonFiles(dir: string): string[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isFile() && e.name.endsWith('.json'))
      .map((e) => path.join(dir, e.name))
      .sort();
  } catch {
    return [];
  }
}

const SPECIAL_DIRS = new Set(['profiles', 'needle', 'bench']);

function defaultWarn(msg: string): void {
  process.stderr.write(`cokv: warning: ${msg}\n`);
}

/** Read everything usable under `dir`; malformed files are reported through `warn` and listed in `skipped`. */
export function readResults(dir: string, warn: (msg: string) => void = defaultWarn): Results {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new CokvError(`report ${dir}: no such folder`, 'file');
  }
  if (!st.isDirectory()) throw new CokvError(`report ${dir}: not a folder`, 'file');
  const res: Results = { dir: path.resolve(dir), runs: [], profiles: [], needles: [], benches: [], skipped: [] };
  const skip = (file: string, problem: string) => {
    const msg = `${file}: ${problem}`;
    res.skipped.push(msg);
    warn(`${msg} (skipped)`);
  };
  const attempt = <T>(file: string, fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (e) {
      if (e instanceof Skip) { skip(file, e.message); return undefined; }
      throw e;
    }
  };
  const seen = new Set<string>();
  const addRun = (r: RunRow) => {
    const key = JSON.stringify([r.model, r.protocol, r.dataset, r.press, r.budget]);
    if (seen.has(key)) { skip(r.source, `duplicate of an earlier result for ${r.dataset} / ${r.press} / ${budgetLabel(r.budget)}`); return; }
    seen.add(key);
    res.runs.push(r);
  };
  const entries = fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (!e.isDirectory() || SPECIAL_DIRS.has(e.name)) continue;
    const file = path.join(dir, e.name, 'metrics.json');
    if (!fs.existsSync(file)) {
      if (e.name.includes('__')) skip(path.join(dir, e.name), 'no metrics.json (run unfinished?)');
      continue;
    }
    const parts = e.name.split('__');
    const fallback = parts.length === 4 ? { dataset: parts[0], model: parts[1], press: parts[2], budget: budgetFromName(parts[3]) } : {};
    const r = attempt(file, () => parseRun(readJsonFile(file), file, fallback));
    if (r) addRun(r);
  }
  const summary = path.join(dir, 'summary.json');
  if (fs.existsSync(summary)) {
    const list = attempt(summary, () => {
      const o = readJsonFile(summary);
      need(isObj(o) && Array.isArray(o.entries), 'expected { "entries": [...] }');
      return o.entries as unknown[];
    });
    list?.forEach((entry, i) => {
      // Ratio runs (keep a fraction of the prompt) have no per-head budget to plot against; results.md tabulates them.
      if (isObj(entry) && typeof entry.ratio === 'number') return;
      const where = `${summary} entry ${i}`;
      const r = attempt(where, () => parseRun(entry, where));
      if (r) addRun(r);
    });
  }
  for (const file of jsonFiles(path.join(dir, 'profiles'))) {
    const p = attempt(file, () => parseProfile(readJsonFile(file), file));
    if (p) res.profiles.push(p);
  }
  for (const file of jsonFiles(path.join(dir, 'needle'))) {
    const p = attempt(file, () => parseNeedle(readJsonFile(file), file));
    if (p) res.needles.push(p);
  }
  for (const file of jsonFiles(path.join(dir, 'bench'))) {
    const p = attempt(file, () => parseBench(readJsonFile(file), file, warn));
    if (p) res.benches.push(p);
  }
  return res;
}

// ---------------------------------------------------------------------------------------------------------------
// Report sections

/** Known presses in a fixed color order, so a press has the same color in every chart. */
const PRESS_ORDER = ['cokv', 'snapkv', 'pyramidkv', 'adakv', 'ada-pyramidkv', 'headkv', 'streaming', 'random'];

class PressColors {
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

function isFull(press: string): boolean {
  return press.toLowerCase() === 'full';
}

function pressName(press: string): string {
  const names: Record<string, string> = {
    full: 'Full', cokv: 'CoKV', snapkv: 'SnapKV', pyramidkv: 'PyramidKV', adakv: 'AdaKV', 'ada-pyramidkv': 'Ada-PyramidKV',
    headkv: 'HeadKV', streaming: 'StreamingLLM', random: 'Random',
  };
  return names[press.toLowerCase()] ?? press;
}

function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

function figure(svg: string, caption?: string): string {
  return `<figure class="ck-fig">${svg}${caption ? `<figcaption>${caption}</figcaption>` : ''}</figure>`;
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

function scoreLines(rows: RunRow[], colors: PressColors, datasetsNeeded = 1): { series: LineSeries[]; refs: RefLine[] } {
  // rows may cover several datasets: average per (press, budget) where all `datasetsNeeded` datasets have a score
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
      if (scores.length < datasetsNeeded) continue;
      const y = mean(scores);
      if (b === null) refs.push({ name: isFull(p) ? 'Full' : `${pressName(p)} (no budget)`, y, color: colors.get(p), dash: isFull(p) ? 1 : 2 });
      else pts.push({ x: b, y, label: `${pressName(p)} B=${b}: ${y.toFixed(2)}` });
    }
    if (pts.length > 0) {
      const ci = colors.get(p);
      series.push({ name: pressName(p), points: pts, color: ci, marker: Math.max(0, ci) % 4 });
    }
  }
  return { series, refs };
}

function resultsSection(groups: Group[], colors: PressColors): string {
  let html = '';
  for (const [gi, g] of groups.entries()) {
    const datasets = uniq(g.runs.map((r) => r.dataset)).sort();
    const metricOf = (d: string) => uniq(g.runs.filter((r) => r.dataset === d).map((r) => r.metric)).join(', ');
    const budgets = uniq(g.runs.map((r) => r.budget).filter((b): b is number => b !== null)).sort((a, b) => a - b);
    const presses = uniq(g.runs.map((r) => r.press)).sort((a, b) => colors.compare(a, b));
    html += `<h3 id="results-${gi}">${esc(g.model)} <span class="ck-pill">${esc(g.protocol)}</span></h3>`;
    const compressed = presses.filter((p) => !isFull(p)).length;
    const hasFull = presses.some(isFull);
    const plural = (k: number, w: string, ws = `${w}s`) => `${k} ${k === 1 ? w : ws}`;
    html += `<p class="ck-muted">${plural(datasets.length, 'dataset')} × ${plural(compressed, 'press', 'presses')} × ${plural(budgets.length, 'budget')}${hasFull ? ' + Full' : ''} (${plural(g.runs.length, 'run')}).${hasFull ? ' Dashed line: the Full cache.' : ''} Hover a point for its value.</p>`;
    let figs = '';
    for (const d of datasets) {
      const rows = g.runs.filter((r) => r.dataset === d);
      const { series, refs } = scoreLines(rows, colors);
      const n = uniq(rows.map((r) => r.n).filter((v) => v !== undefined));
      figs += figure(lineChart(series, {
        title: d, subtitle: `${metricOf(d)}${n.length ? ` · n = ${n.join('/')}` : ''}`,
        xLabel: 'KV budget B (tokens per head)', yLabel: 'score', xScale: 'log2', refLines: refs, formatY: (v) => fmtNum(v),
      }));
    }
    if (datasets.length > 1) {
      const { series, refs } = scoreLines(g.runs, colors, datasets.length);
      figs = figure(lineChart(series, {
        title: `Average over ${datasets.length} datasets`, subtitle: 'points where every dataset has a score',
        xLabel: 'KV budget B (tokens per head)', yLabel: 'mean score', xScale: 'log2', refLines: refs,
      })) + figs;
    }
    html += `<div class="ck-grid">${figs}</div>`;
    html += relativeTable(g, datasets, presses, budgets);
    html += runsTable(g.runs, colors);
  }
  return html;
}

function relClass(rel: number): string {
  return rel >= 0.95 ? 'ck-hi' : rel >= 0.8 ? 'ck-mid' : 'ck-lo';
}

function relativeTable(g: Group, datasets: string[], presses: string[], budgets: number[]): string {
  const hasNoBudget = g.runs.some((r) => r.budget === null);
  const cols: (number | null)[] = [...budgets, ...(hasNoBudget ? [null] : [])];
  const find = (d: string, p: string, b: number | null) => g.runs.find((r) => r.dataset === d && r.press === p && r.budget === b);
  const fullOf = (d: string) => g.runs.find((r) => r.dataset === d && isFull(r.press));
  const cell = (r: RunRow | undefined, full: RunRow | undefined): string => {
    if (!r) return '<td class="ck-empty">—</td>';
    const rel = full && full.score !== 0 ? r.score / full.score : NaN;
    const kv = r.keptKvBytes !== undefined
      ? `${fmtBytes(r.keptKvBytes)}${r.fullKvBytes ? ` · ${((100 * r.keptKvBytes) / r.fullKvBytes).toFixed(r.keptKvBytes / r.fullKvBytes < 0.1 ? 1 : 0)}%` : ''}`
      : '';
    return `<td><span class="ck-score">${r.score.toFixed(1)}</span>${Number.isFinite(rel) && !isFull(r.press) ? ` <span class="ck-rel ${relClass(rel)}">${(100 * rel).toFixed(0)}%</span>` : ''}${kv ? `<br><span class="ck-kv">${kv}</span>` : ''}</td>`;
  };
  // With sliding layers the kept bytes cover only the budgeted (full-attention) layers: say which.
  const scopes = uniq(g.runs.map((r) => r.kvScope).filter((x): x is string => x !== undefined));
  const scope = scopes.length ? `; kept KV counts ${scopes.map(esc).join(' / ')}` : '';
  let h = `<div class="ck-tablewrap"><table class="ck-table"><caption>Score, score relative to Full (%), and mean kept KV bytes per sample (· % of the full cache)${scope}</caption>`;
  h += `<thead><tr><th>dataset</th><th>press</th>${cols.map((b) => `<th>${b === null ? 'full cache' : `B=${b}`}</th>`).join('')}</tr></thead><tbody>`;
  for (const d of datasets) {
    const ps = presses.filter((p) => g.runs.some((r) => r.dataset === d && r.press === p));
    const full = fullOf(d);
    ps.forEach((p, k) => {
      h += `<tr${k === 0 ? ' class="ck-first"' : ''}>${k === 0 ? `<th rowspan="${ps.length}" class="ck-ds">${esc(d)}</th>` : ''}<td class="ck-press">${esc(pressName(p))}</td>${cols.map((b) => cell(find(d, p, b), full)).join('')}</tr>`;
    });
  }
  if (datasets.length > 1) {
    const ps = presses.filter((p) => !isFull(p));
    ps.forEach((p, k) => {
      const cells = cols.map((b) => {
        const rels: number[] = [];
        const scores: number[] = [];
        for (const d of datasets) {
          const r = find(d, p, b);
          const f = fullOf(d);
          if (r) scores.push(r.score);
          if (r && f && f.score !== 0) rels.push(r.score / f.score);
        }
        if (scores.length === 0) return '<td class="ck-empty">—</td>';
        const partial = scores.length < datasets.length ? `<sup title="${scores.length} of ${datasets.length} datasets">*</sup>` : '';
        const rel = mean(rels);
        return `<td><span class="ck-score">${mean(scores).toFixed(1)}</span>${partial}${rels.length ? ` <span class="ck-rel ${relClass(rel)}">${(100 * rel).toFixed(0)}%</span>` : ''}</td>`;
      });
      h += `<tr class="ck-avg${k === 0 ? ' ck-first' : ''}">${k === 0 ? `<th rowspan="${ps.length}" class="ck-ds">mean over datasets</th>` : ''}<td class="ck-press">${esc(pressName(p))}</td>${cells.join('')}</tr>`;
    });
  }
  return `${h}</tbody></table></div>`;
}

function runsTable(runs: RunRow[], colors: PressColors): string {
  const sorted = [...runs].sort((a, b) => (a.dataset < b.dataset ? -1 : a.dataset > b.dataset ? 1 : 0)
    || colors.compare(a.press, b.press) || (a.budget ?? Infinity) - (b.budget ?? Infinity));
  const opt = (v: number | undefined, f: (v: number) => string) => (v === undefined ? '—' : f(v));
  let h = `<details><summary>All ${runs.length} runs (n, 95% CI, KV bytes, timings, source)</summary><div class="ck-tablewrap"><table class="ck-table ck-runs"><thead><tr>`;
  h += ['dataset', 'press', 'budget', 'metric', 'score', '95% CI', 'n', 'kept KV', 'full KV', 'prefill ms', 'decode ms/tok', 'seconds', 'created', 'source'].map((c) => `<th>${c}</th>`).join('');
  h += '</tr></thead><tbody>';
  for (const r of sorted) {
    h += `<tr><td>${esc(r.dataset)}</td><td>${esc(pressName(r.press))}</td><td>${r.budget ?? (r.ratio !== undefined ? `ratio ${r.ratio}` : '—')}</td><td>${esc(r.metric)}</td>`
      + `<td class="ck-num">${r.score.toFixed(2)}</td><td class="ck-num">${r.ci95 ? `${r.ci95[0].toFixed(1)}–${r.ci95[1].toFixed(1)}` : '—'}</td>`
      + `<td class="ck-num">${opt(r.n, String)}</td><td class="ck-num">${opt(r.keptKvBytes, fmtBytes)}</td><td class="ck-num">${opt(r.fullKvBytes, fmtBytes)}</td>`
      + `<td class="ck-num">${opt(r.prefillMs, (v) => v.toFixed(0))}</td><td class="ck-num">${opt(r.decodeMsPerToken, (v) => v.toFixed(2))}</td><td class="ck-num">${opt(r.seconds, (v) => v.toFixed(0))}</td>`
      + `<td>${esc(r.createdAt ?? '—')}</td><td class="ck-src">${esc(r.source)}</td></tr>`;
  }
  return `${h}</tbody></table></div></details>`;
}

/** Budget and window used for the CoKV allocation heatmap. */
export const REPORT_COKV_BUDGET = 64;
export const REPORT_COKV_WINDOW = 8;

/** Per-head kept tokens (selected + window) of CoKV at `budget`, [layer][kvHead]. */
export function cokvKeptTokens(values: number[][], budget = REPORT_COKV_BUDGET, window = REPORT_COKV_WINDOW): number[][] {
  const [L, H] = [values.length, values[0]?.length ?? 0];
  const n = L * H;
  const alpha = Math.max(1, Math.round((n * 10) / 256));
  const alloc = cokvAllocation(values.flat(), alpha, L, H, budget - window, 1e9, true);
  return alloc.map((row) => row.map((v) => v + window));
}

function profileSection(profiles: ProfileData[], dir: string): string {
  let html = '';
  for (const p of profiles) {
    const [L, H] = p.shape;
    const rel = path.relative(dir, p.file) || p.file;
    const playerLayers = p.layers ?? Array.from({ length: L }, (_, i) => i);
    const partial = playerLayers.some((l, r) => l !== r);
    const facts = [
      partial ? `${L} full-attention layers (${playerLayers.join(', ')}) × ${H} KV heads` : `${L} layers × ${H} KV heads`,
      p.utility && `utility ${p.utility}`,
      p.task && `task ${p.task}`,
      p.samples !== undefined && `${p.samples} samples${p.runs ? ` × ${p.runs} run${p.runs > 1 ? 's' : ''}` : ''}`,
      p.converged !== undefined && (p.converged ? 'converged' : 'not converged'),
      p.seconds !== undefined && `${p.seconds.toFixed(0)} s`,
    ].filter(Boolean).join(' · ');
    html += `<h3>${esc(p.model)} <span class="ck-muted ck-small">${esc(rel)}</span></h3><p class="ck-muted">${esc(facts)}</p>`;
    const kept = cokvKeptTokens(p.values);
    const n = L * H;
    const alpha = Math.max(1, Math.round((n * 10) / 256));
    const layers = playerLayers.map(String);
    const heads = Array.from({ length: H }, (_, i) => String(i));
    let figs = figure(heatmap(p.values, {
      title: 'Head values (Shapley estimate)', subtitle: `${p.model} · ${L}×${H} players`,
      xLabel: 'KV head', yLabel: 'layer', xTicks: heads, yTicks: layers, legendLabel: 'value',
    }));
    figs += figure(heatmap(kept, {
      title: `CoKV budget at B=${REPORT_COKV_BUDGET}`, subtitle: `kept tokens per head (window ${REPORT_COKV_WINDOW} + share of ${(REPORT_COKV_BUDGET - REPORT_COKV_WINDOW) * n}), α = ${alpha}`,
      xLabel: 'KV head', yLabel: 'layer', xTicks: heads, yTicks: layers, scale: 'sequential', legendLabel: 'tokens', format: (v) => String(Math.round(v)),
    }));
    if (p.maeHistory.length > 0) {
      figs += figure(lineChart([{ name: 'MAE vs previous', points: p.maeHistory.map((h) => [h.samples, h.mae]), color: 0 }], {
        title: 'Convergence', subtitle: 'mean absolute change of the values between checkpoints',
        xLabel: 'samples per run', yLabel: 'MAE', xScale: 'linear', yMin: 0,
      }));
    }
    html += `<div class="ck-grid">${figs}</div>`;
  }
  return html;
}

function needleSection(needles: NeedleData[], dir: string, colors: PressColors): string {
  const sorted = [...needles].sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0) || colors.compare(a.press, b.press) || (a.budget ?? Infinity) - (b.budget ?? Infinity));
  let figs = '';
  for (const nd of sorted) {
    const cells = nd.scores.flat().filter((v): v is number => v !== null);
    const label = isFull(nd.press) ? 'Full' : `${pressName(nd.press)} ${budgetLabel(nd.budget)}`;
    figs += figure(heatmap(nd.scores, {
      title: `Needle — ${label}`, subtitle: `${nd.model} · mean ${(100 * mean(cells)).toFixed(1)}%`,
      xLabel: 'context length (tokens)', yLabel: 'needle depth', xTicks: nd.lengths.map(fmtNum), yTicks: nd.depths.map((d) => `${fmtNum(d)}%`),
      scale: 'sequential', min: 0, max: 1, legendLabel: 'score', format: (v) => (100 * v).toFixed(0),
    }), `<span class="ck-src">${esc(path.relative(dir, nd.file))}</span>`);
  }
  return `<p class="ck-muted">Score (%) per needle depth × context length; 100 = the answer recovered exactly.</p><div class="ck-grid">${figs}</div>`;
}

function benchSection(benches: BenchData[], dir: string, colors: PressColors): string {
  let html = '';
  for (const b of benches) {
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
    const kvMax = Math.max(0, ...b.rows.map((r) => r.kvBytes ?? 0));
    const rssMax = Math.max(0, ...b.rows.map((r) => r.peakRssBytes ?? 0));
    const kvU = byteUnit(kvMax);
    const rssU = byteUnit(rssMax);
    const common = { xLabel: 'prompt length (tokens)', yMin: 0 };
    html += `<h3>${esc(b.model)} <span class="ck-muted ck-small">${esc(path.relative(dir, b.file))}</span></h3><div class="ck-grid">`;
    const charts: [LineSeries[], string, string][] = [
      [mk('kvBytes', kvU.div), 'KV cache size', `KV bytes (${kvU.unit})`],
      [mk('decodeMsPerToken'), 'Decode latency', 'decode ms / token'],
      [mk('prefillMs'), 'Prefill time', 'prefill ms'],
      [mk('peakRssBytes', rssU.div), 'Peak memory (RSS)', `peak RSS (${rssU.unit})`],
    ];
    for (const [series, title, yLabel] of charts) {
      if (series.length === 0) continue;
      html += figure(lineChart(series, { ...common, title, subtitle: b.model, yLabel }));
    }
    html += '</div>';
  }
  return html;
}

const CSS = `
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1d2127;--muted:#5b6470;--grid:#e6e9ee;--axis:#8a94a3;--card:#f7f8fa;--border:#dde1e6;
--ref:${REF_LIGHT};--hi:#1d7a35;--mid:#a86200;--lo:#c0302b;--pill:#e8eef8;${LIGHT.map((c, i) => `--c${i}:${c}`).join(';')}}
@media (prefers-color-scheme: dark){:root{--bg:#14171c;--fg:#e8ebf0;--muted:#a0a9b5;--grid:#2c323b;--axis:#6f7a88;--card:#1b1f26;--border:#30363f;
--ref:${REF_DARK};--hi:#5fd16f;--mid:#ffb74d;--lo:#ff7a73;--pill:#263245;${DARK.map((c, i) => `--c${i}:${c}`).join(';')}}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:24px 28px 64px}
header{border-bottom:1px solid var(--border);padding-bottom:12px;margin-bottom:8px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 6px;padding-top:8px;border-top:1px solid var(--border)}h3{font-size:16px;margin:22px 0 4px}
a{color:var(--c0)}
.ck-muted{color:var(--muted)}.ck-small{font-size:12px;font-weight:400}
.ck-meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}.ck-meta dt{color:var(--muted)}.ck-meta dd{margin:0;word-break:break-all}
nav ul{display:flex;flex-wrap:wrap;gap:6px 18px;padding:0;margin:8px 0;list-style:none}
.ck-pill{display:inline-block;background:var(--pill);border-radius:10px;padding:0 8px;font-size:12px;font-weight:500;vertical-align:middle}
.ck-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px;margin:10px 0}
.ck-fig{margin:0;background:var(--card);border:1px solid var(--border);border-radius:8px;padding:6px 6px 4px;overflow:hidden}
.ck-fig figcaption{font-size:12px;color:var(--muted);padding:0 8px 4px}
svg.ck-chart{display:block;max-width:100%;height:auto}
svg .ck-title,svg .ck-label,svg .ck-text{fill:var(--fg)}svg .ck-tick,svg .ck-muted{fill:var(--muted)}
svg .ck-gl{stroke:var(--grid)}svg .ck-axis{stroke:var(--axis)}
svg .ck-cell{stroke:var(--card);stroke-width:.5}
svg .ck-line.ck-ref{stroke:var(--ref)}svg .ck-fill.ck-ref{fill:var(--ref)}
${LIGHT.map((_, i) => `svg .ck-line.ck-c${i}{stroke:var(--c${i})}svg .ck-fill.ck-c${i}{fill:var(--c${i})}`).join('\n')}
svg .ck-fill{stroke:var(--card);stroke-width:1}
.ck-tablewrap{overflow-x:auto;margin:12px 0}
.ck-table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
.ck-table caption{text-align:left;color:var(--muted);padding:4px 0;caption-side:top}
.ck-table th,.ck-table td{border-bottom:1px solid var(--border);padding:4px 10px;text-align:left;vertical-align:top;white-space:nowrap}
.ck-table thead th{position:sticky;top:0;background:var(--bg);border-bottom:2px solid var(--axis)}
.ck-table tr.ck-first>*{border-top:2px solid var(--border)}
.ck-table .ck-ds{background:var(--card)}.ck-table tr.ck-avg td{background:var(--card)}
.ck-score{font-weight:600}.ck-rel{font-size:12px;font-weight:600}.ck-hi{color:var(--hi)}.ck-mid{color:var(--mid)}.ck-lo{color:var(--lo)}
.ck-kv{font-size:11px;color:var(--muted)}.ck-empty{color:var(--muted)}.ck-num{text-align:right}
.ck-src{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11px;color:var(--muted)}
details{margin:8px 0}summary{cursor:pointer;color:var(--muted)}
.ck-warn li{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
`;

export interface ReportOptions {
  /** Where warnings about skipped files go (default: one line each on stderr). */
  warn?: (msg: string) => void;
  /** Timestamp printed in the header (default: now). */
  now?: Date;
}

/**
 * The whole report as one HTML string. Throws CokvError when `dir` is not a folder or holds no usable result;
 * malformed files are skipped (warned and listed at the end of the page).
 */
export function buildReport(dir: string, opts: ReportOptions = {}): string {
  const res = readResults(dir, opts.warn ?? defaultWarn);
  const { runs, profiles, needles, benches } = res;
  if (runs.length + profiles.length + needles.length + benches.length === 0) {
    throw new CokvError(
      `report ${dir}: no results found (expected <dataset>__<model>__<press>__<budget>/metrics.json, summary.json, profiles/*.json, needle/*.json or bench/*.json${res.skipped.length ? `; ${res.skipped.length} file${res.skipped.length > 1 ? 's' : ''} skipped as malformed` : ''})`,
      'file',
    );
  }
  const colors = new PressColors([...runs.map((r) => r.press), ...needles.map((n) => n.press), ...benches.flatMap((b) => b.rows.map((r) => r.press))]);
  const groups = groupRuns(runs);
  const now = (opts.now ?? new Date()).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const created = runs.map((r) => r.createdAt).filter((c): c is string => !!c).sort();
  const models = uniq([...runs.map((r) => r.model), ...profiles.map((p) => p.model), ...needles.map((n) => n.model), ...benches.map((b) => b.model)]);
  const sections: { id: string; title: string; body: string }[] = [];
  if (runs.length) sections.push({ id: 'results', title: 'Score vs KV budget', body: resultsSection(groups, colors) });
  if (profiles.length) sections.push({ id: 'profiles', title: 'Head values and CoKV budgets', body: profileSection(profiles, res.dir) });
  if (needles.length) sections.push({ id: 'needle', title: 'Needle in a haystack', body: needleSection(needles, res.dir, colors) });
  if (benches.length) sections.push({ id: 'bench', title: 'Memory and latency', body: benchSection(benches, res.dir, colors) });
  if (res.skipped.length) {
    sections.push({ id: 'skipped', title: `Skipped files (${res.skipped.length})`, body: `<ul class="ck-warn">${res.skipped.map((s) => `<li>${esc(path.isAbsolute(s) ? path.relative(res.dir, s) : s)}</li>`).join('')}</ul>` });
  }
  const missing = [!runs.length && 'scores', !profiles.length && 'profiles', !needles.length && 'needle grids', !benches.length && 'bench files'].filter(Boolean);
  const counts = [
    runs.length && `${runs.length} runs over ${uniq(runs.map((r) => r.dataset)).length} datasets`,
    profiles.length && `${profiles.length} profile${profiles.length > 1 ? 's' : ''}`,
    needles.length && `${needles.length} needle grid${needles.length > 1 ? 's' : ''}`,
    benches.length && `${benches.length} bench file${benches.length > 1 ? 's' : ''}`,
  ].filter(Boolean).join(' · ');
  const title = `cokv report — ${path.basename(res.dir)}`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><meta name="generator" content="cokv report">
<title>${esc(title)}</title><style>${CSS}</style></head>
<body><main>
<header><h1>${esc(title)}</h1>
<p class="ck-muted">KV-cache compression results: task score against the per-head KV budget for each press, head values from the cooperative-game profiler, needle retrieval and memory/latency.</p>
<dl class="ck-meta"><dt>results</dt><dd>${esc(res.dir)}</dd><dt>generated</dt><dd>${esc(now)}</dd>
${created.length ? `<dt>runs created</dt><dd>${esc(created[0])}${created.length > 1 && created[created.length - 1] !== created[0] ? ` — ${esc(created[created.length - 1])}` : ''}</dd>` : ''}
<dt>models</dt><dd>${models.map(esc).join(', ')}</dd><dt>contents</dt><dd>${esc(counts)}${missing.length ? ` <span class="ck-muted">(no ${esc(missing.join(', '))})</span>` : ''}</dd></dl>
<nav><ul>${sections.map((s) => `<li><a href="#${s.id}">${esc(s.title)}</a></li>`).join('')}</ul></nav></header>
${sections.map((s) => `<section id="${s.id}"><h2>${esc(s.title)}</h2>${s.body}</section>`).join('\n')}
</main></body></html>
`;
}

/**
 * A chart as a standalone .svg file (for docs): the report's stylesheet (light and dark palettes) goes inside the
 * SVG, with a background so it reads on any page.
 */
export function standaloneSvg(svg: string): string {
  const open = svg.indexOf('>') + 1;
  return `${svg.slice(0, open)}<style>${CSS}svg{background:var(--bg)}</style>${svg.slice(open)}`;
}
