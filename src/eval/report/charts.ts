/**
 * The report's SVG charts: a line chart and a heatmap, pure functions from data to one `<svg>` string (inline styles
 * through classes, with presentation-attribute fallbacks so a chart renders on its own). Every data mark carries
 * `class="ck-mark"` and a `data-value` attribute (its number), which the browser test counts.
 */
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
export function byteUnit(max: number): { div: number; unit: string } {
  if (max >= 1024 ** 3) return { div: 1024 ** 3, unit: 'GiB' };
  if (max >= 1024 ** 2) return { div: 1024 ** 2, unit: 'MiB' };
  if (max >= 1024) return { div: 1024, unit: 'KiB' };
  return { div: 1, unit: 'B' };
}

export function mean(xs: number[]): number {
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
export function niceDomain(lo: number, hi: number, count = 5): [number, number] {
  // one value (a single point, or every score 0): a range around it, never a zero-width axis with one tick
  if (hi === lo) [lo, hi] = lo === 0 ? [0, 1] : lo > 0 ? [lo * 0.9, lo * 1.1] : [lo * 1.1, lo * 0.9];
  const t = niceTicks(lo, hi, count);
  if (t.length < 2) return [lo - 1, hi + 1];
  const step = t[1] - t[0];
  return [Math.floor(lo / step + 1e-9) * step, Math.ceil(hi / step - 1e-9) * step];
}

// ---------------------------------------------------------------------------------------------------------------
// Palette: 10 series colors (light / dark), plus a neutral reference color. Classes map to CSS variables in the page;
// the attributes carry the light colors for standalone SVG.

export const LIGHT = ['#1f6fc5', '#d1342f', '#2e9a3e', '#e07b00', '#8a4fc7', '#8c5a3c', '#d4449c', '#0f9bb0', '#8f8f00', '#5b6470'];
export const DARK = ['#5eaaf5', '#ff6f69', '#5fd16f', '#ffab40', '#b98cff', '#d29a74', '#ff7fc4', '#3fd0e0', '#d4d44a', '#aab4c0'];
export const REF_LIGHT = '#2b2f36';
export const REF_DARK = '#e8ebf0';
const DASHES = ['', '7 4', '2 3', '9 3 2 3'];

function seriesColor(i: number): { cls: string; hex: string } {
  if (i < 0) return { cls: 'ck-ref', hex: REF_LIGHT };
  const k = i % LIGHT.length;
  return { cls: `ck-c${k}`, hex: LIGHT[k] };
}

/** Marker shape `shape` centred on (x, y), as an SVG element. */
/** `data`: the point's value for a data mark (class ck-mark, data-x / data-value); absent for a legend swatch. */
function marker(shape: number, x: number, y: number, cls: string, hex: string, title: string, data?: { x: number; y: number }): string {
  const t = title ? `<title>${esc(title)}</title>` : '';
  const p = (v: number) => v.toFixed(1);
  const attrs = `class="${data ? 'ck-mark ' : ''}ck-fill ${cls}" fill="${hex}"${data ? ` data-x="${data.x}" data-value="${data.y}"` : ''}`;
  switch (shape % 4) {
    case 1: return `<rect ${attrs} x="${p(x - 3.6)}" y="${p(y - 3.6)}" width="7.2" height="7.2">${t}</rect>`;
    case 2: return `<path ${attrs} d="M${p(x)} ${p(y - 5)}L${p(x + 5)} ${p(y)}L${p(x)} ${p(y + 5)}L${p(x - 5)} ${p(y)}Z">${t}</path>`;
    case 3: return `<path ${attrs} d="M${p(x)} ${p(y - 5)}L${p(x + 4.6)} ${p(y + 3.6)}L${p(x - 4.6)} ${p(y + 3.6)}Z">${t}</path>`;
    default: return `<circle ${attrs} cx="${p(x)}" cy="${p(y)}" r="4">${t}</circle>`;
  }
}

export function truncate(s: string, n: number): string {
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
  /** Hard bounds of the y axis (e.g. [0, 100] for a percentage): the rounded range never goes past them. */
  yLimit?: [number, number];
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
  if (opts.yLimit) {
    const [a, b] = opts.yLimit;
    if (ylo < a && Math.min(...allY) >= a) ylo = a;
    if (yhi > b && Math.max(...allY) <= b) yhi = b;
  }
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
  let lastTickX = -Infinity;
  for (const v of xticks) {
    if (log && !(v > 0)) continue;
    const x = X(v);
    if (x < ml - 1 || x > ml + pw + 1) continue;
    // data-value ticks on a log axis can crowd (56 and 64): leave out a label that would touch the previous one
    if (x - lastTickX < 7 * Math.max(fx(v).length, 3) + 6) continue;
    lastTickX = x;
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
    s += `<path class="ck-mark ck-line ${c.cls}" stroke="${c.hex}" stroke-width="1.6" stroke-dasharray="${DASHES[(r.dash ?? 1) % 4] || 'none'}" fill="none" data-value="${r.y}" d="M${ml} ${y}H${ml + pw}"><title>${esc(`${r.name}: ${fy(r.y)}`)}</title></path>`;
  }
  for (const [i, sr] of data.entries()) {
    const c = seriesColor(sr.color ?? i);
    if (sr.pts.length > 1) {
      const d = sr.pts.map((p, k) => `${k ? 'L' : 'M'}${X(p.x).toFixed(1)} ${Y(p.y).toFixed(1)}`).join('');
      s += `<path class="ck-mark ck-line ${c.cls}" stroke="${c.hex}" stroke-width="2" fill="none" stroke-linejoin="round" stroke-dasharray="${DASHES[(sr.dash ?? 0) % 4] || 'none'}" d="${d}"/>`;
    }
    for (const p of sr.pts) s += marker(sr.marker ?? 0, X(p.x), Y(p.y), c.cls, c.hex, p.label ?? `${sr.name}: ${fx(p.x)} → ${fy(p.y)}`, p);
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
      if (l.marker >= 0) s += marker(l.marker, lx + 13, y, c.cls, c.hex, '');
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
  // every cell the same value: one color and one label on the bar (not a made-up range lo…lo+1)
  const flat = hi === lo;
  if (flat) { hi = lo + 1; }
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
      s += `<rect class="ck-mark ck-cell" x="${x}" y="${y}" width="${cw}" height="${ch}" fill="${col}" data-value="${v}"><title>${esc(label + fmt(v))}</title></rect>`;
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
  const barTicks: [number, number][] = flat ? [[1, lo]] : [[0, hi], [0.5, (lo + hi) / 2], [1, lo]];
  for (const [t, v] of barTicks) {
    s += `<text class="ck-tick" x="${barX + 19}" y="${(top + t * barH + 4).toFixed(1)}" fill="#5b6470">${esc(fmt(v))}</text>`;
  }
  s += `<text class="ck-label" x="${barX}" y="${top + barH + 18}" fill="${REF_LIGHT}">${esc(truncate(opts.legendLabel, 14))}<title>${esc(opts.legendLabel)}</title></text>`;
  return `${s}</g></svg>`;
}

