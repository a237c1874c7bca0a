/**
 * The report page: one self-contained HTML file (inline SVG, inline CSS, no script, no network) from the report
 * model. Series colors are CSS custom properties with a light and a dark palette (`prefers-color-scheme`); every
 * SVG also carries presentation-attribute fallbacks so a chart renders on its own.
 */
import path from 'node:path';
import { CokvError } from '../../errors.js';
import { DARK, LIGHT, REF_DARK, REF_LIGHT, esc, fmtBytes, heatmap, lineChart, mean } from './charts.js';
import { buildModel, isFull, isPercentMetric, pressName, shownCi, uniq, type ChartSpec, type FigureModel, type ReportModel, type ResultGroupModel } from './model.js';
import { readResults, type RunRow } from './read.js';
import { toHtml } from '../../results/tables.js';
import type { RunRecord } from '../../results/record.js';

export function renderChart(c: ChartSpec): string {
  return c.kind === 'line' ? lineChart(c.series, c.opts) : heatmap(c.values, c.opts);
}

function figure(f: FigureModel): string {
  return `<figure class="ck-fig">${renderChart(f.chart)}${f.caption ? `<figcaption><span class="ck-src">${esc(f.caption)}</span></figcaption>` : ''}</figure>`;
}

const grid = (figs: FigureModel[]) => `<div class="ck-grid">${figs.map(figure).join('')}</div>`;

function resultsSection(groups: ResultGroupModel[]): string {
  let html = '';
  for (const g of groups) {
    html += `<h3 id="${g.id}">${esc(g.model)} <span class="ck-pill">${esc(g.protocol)}</span></h3>`;
    html += `<p class="ck-muted">${esc(g.summary)}</p>`;
    html += grid(g.figures);
    html += relativeTable(g);
    if (g.variantFigures.length) html += `<h4>Experiment variants</h4>${grid(g.variantFigures)}`;
    html += runsTable(g.runs);
  }
  return html;
}

function relClass(rel: number): string {
  return rel >= 0.95 ? 'ck-hi' : rel >= 0.8 ? 'ck-mid' : 'ck-lo';
}

function relativeTable(group: ResultGroupModel): string {
  const { datasets, presses, budgets } = group;
  const g = { runs: group.runs.filter((r) => datasets.includes(r.dataset)) };
  const hasNoBudget = g.runs.some((r) => r.budget === null);
  const cols: (number | null)[] = [...budgets, ...(hasNoBudget ? [null] : [])];
  const find = (d: string, p: string, b: number | null) => g.runs.find((r) => r.dataset === d && r.press === p && r.budget === b);
  const fullOf = (d: string) => g.runs.find((r) => r.dataset === d && isFull(r.press));
  const cell = (r: RunRow | undefined, full: RunRow | undefined): string => {
    if (!r) return '<td class="ck-empty">—</td>';
    // a ratio of log-likelihoods (negative, higher is better) means nothing: only percentage scores get one
    const rel = full && full.score !== 0 && isPercentMetric(r.metric) ? r.score / full.score : NaN;
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
          if (r && f && f.score !== 0 && isPercentMetric(r.metric)) rels.push(r.score / f.score);
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

/** The CI cell: clamped to [0, 100] for a percentage metric, marked with * and the raw interval on hover. */
function ciCell(r: RunRow): string {
  const c = shownCi(r);
  if (!c) return '—';
  const text = `${c.lo.toFixed(1)}–${c.hi.toFixed(1)}`;
  return c.clamped ? `<span title="clamped to [0, 100]; raw ${r.ci95![0].toFixed(1)}–${r.ci95![1].toFixed(1)}">${text}*</span>` : text;
}

function runsTable(sorted: RunRow[]): string {
  const runs = sorted;
  const opt = (v: number | undefined, f: (v: number) => string) => (v === undefined ? '—' : f(v));
  let h = `<details><summary>All ${runs.length} runs (n, 95% CI, KV bytes, timings, source)</summary><div class="ck-tablewrap"><table class="ck-table ck-runs"><thead><tr>`;
  h += ['dataset', 'press', 'budget', 'metric', 'score', '95% CI', 'n', 'kept KV', 'full KV', 'prefill ms', 'decode ms/tok', 'seconds', 'created', 'source'].map((c) => `<th>${c}</th>`).join('');
  h += '</tr></thead><tbody>';
  for (const r of sorted) {
    h += `<tr><td>${esc(r.dataset)}</td><td>${esc(pressName(r.press))}</td><td>${r.budget ?? (r.ratio !== undefined ? `ratio ${r.ratio}` : '—')}</td><td>${esc(r.metric)}</td>`
      + `<td class="ck-num">${r.score.toFixed(2)}</td><td class="ck-num">${ciCell(r)}</td>`
      + `<td class="ck-num">${opt(r.n, String)}</td><td class="ck-num">${opt(r.keptKvBytes, fmtBytes)}</td><td class="ck-num">${opt(r.fullKvBytes, fmtBytes)}</td>`
      + `<td class="ck-num">${opt(r.timings?.prefillMs, (v) => v.toFixed(0))}</td><td class="ck-num">${opt(r.timings?.decodeMsPerToken, (v) => v.toFixed(2))}</td><td class="ck-num">${opt(r.timings?.seconds, (v) => v.toFixed(0))}</td>`
      + `<td>${esc(r.createdAt ?? '—')}</td><td class="ck-src">${esc(r.source)}</td></tr>`;
  }
  const clamped = runs.some((r) => shownCi(r)?.clamped);
  const note = clamped ? '<p class="ck-muted ck-small ck-cinote">* 95% CIs of percentage scores are clamped to [0, 100] (the normal approximation passes the bounds with few items); hover for the raw interval.</p>' : '';
  return `${h}</tbody></table></div>${note}</details>`;
}


function profileSection(m: ReportModel): string {
  return m.profiles.map((p) => `<h3>${esc(p.model)} <span class="ck-muted ck-small">${esc(p.file)}</span>${p.kind === 'head-scores' ? ' <span class="ck-pill">HeadKV head scores</span>' : ''}</h3>`
    + `<p class="ck-muted">${esc(p.facts)}</p>${grid(p.figures)}`).join('');
}

function needleSection(m: ReportModel): string {
  return `<p class="ck-muted">Score (%) per needle depth × context length; 100 = the answer recovered exactly.</p>${grid(m.needles)}`;
}

function benchSection(m: ReportModel): string {
  return m.benches.map((b) => `<h3>${esc(b.model)} <span class="ck-muted ck-small">${esc(b.file)}</span></h3>${grid(b.figures)}`).join('');
}

const CSS = `
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1d2127;--muted:#5b6470;--grid:#e6e9ee;--axis:#8a94a3;--card:#f7f8fa;--border:#dde1e6;
--ref:${REF_LIGHT};--hi:#1d7a35;--mid:#a86200;--lo:#c0302b;--pill:#e8eef8;${LIGHT.map((c, i) => `--c${i}:${c}`).join(';')}}
@media (prefers-color-scheme: dark){:root{--bg:#14171c;--fg:#e8ebf0;--muted:#a0a9b5;--grid:#2c323b;--axis:#6f7a88;--card:#1b1f26;--border:#30363f;
--ref:${REF_DARK};--hi:#5fd16f;--mid:#ffb74d;--lo:#ff7a73;--pill:#263245;${DARK.map((c, i) => `--c${i}:${c}`).join(';')}}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:24px 28px 64px}
header{padding-bottom:4px;margin-bottom:8px}
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
  /** Profile or head-score files to show besides DIR/profiles and the ones the runs name (`cokv report --profile`). */
  profiles?: string[];
  /** Runs already read (the summary step's), instead of reading them from DIR. */
  records?: RunRecord[];
}

/** The page of a report model. */
export function renderPage(m: ReportModel, now: Date = new Date()): string {
  const stamp = now.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const sections: { id: string; title: string; body: string }[] = [];
  if (m.results.length) sections.push({ id: 'results', title: 'Score vs KV budget', body: resultsSection(m.results) });
  if (m.profiles.length) sections.push({ id: 'profiles', title: m.profiles.every((p) => p.kind === 'head-scores') ? 'HeadKV head scores' : 'Head values and CoKV budgets', body: profileSection(m) });
  if (m.needles.length) sections.push({ id: 'needle', title: 'Needle in a haystack', body: needleSection(m) });
  if (m.benches.length) sections.push({ id: 'bench', title: 'Memory and latency', body: benchSection(m) });
  if (m.tables.length) {
    sections.push({ id: 'tables', title: 'Tables', body: `<details><summary>The results tables, as <code>cokv experiment summary</code> writes them to results.md, from the same runs</summary>${toHtml(m.tables, 1)}</details>` });
  }
  if (m.skipped.length) {
    sections.push({ id: 'skipped', title: `Skipped files (${m.skipped.length})`, body: `<ul class="ck-warn">${m.skipped.map((s) => `<li>${esc(path.isAbsolute(s) ? path.relative(m.dir, s) : s)}</li>`).join('')}</ul>` });
  }
  const c = m.created;
  const missing = m.missing.length
    ? `<dt>not in this folder</dt><dd class="ck-muted">${m.missing.map((x) => `${esc(x.what)} (<code>${esc(x.hint)}</code>)`).join('; ')}</dd>` : '';
  const ciNote = m.ciClamped ? '<p class="ck-muted ck-small">95% CIs of percentage scores are clamped to [0, 100] (marked *).</p>' : '';
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><meta name="generator" content="cokv report">
<title>${esc(m.title)}</title><style>${CSS}</style></head>
<body><main>
<header><h1>${esc(m.title)}</h1>
<p class="ck-muted">KV-cache compression results: task score against the per-head KV budget for each press, head values from the cooperative-game profiler, needle retrieval and memory/latency.</p>
<dl class="ck-meta"><dt>results</dt><dd>${esc(m.dir)}</dd><dt>generated</dt><dd>${esc(stamp)}</dd>
${c ? `<dt>runs created</dt><dd>${esc(c[0])}${c[1] !== c[0] ? ` — ${esc(c[1])}` : ''}</dd>` : ''}
<dt>models</dt><dd>${m.models.map(esc).join(', ')}</dd><dt>contents</dt><dd>${esc(m.counts)}</dd>${missing}</dl>${ciNote}
<nav><ul>${sections.map((s) => `<li><a href="#${s.id}">${esc(s.title)}</a></li>`).join('')}</ul></nav></header>
${sections.map((s) => `<section id="${s.id}"><h2>${esc(s.title)}</h2>${s.body}</section>`).join('\n')}
</main></body></html>
`;
}

/**
 * The whole report as one HTML string. Throws CokvError when `dir` is not a folder or holds no usable result;
 * malformed files are skipped (warned and listed at the end of the page).
 */
export function buildReport(dir: string, opts: ReportOptions = {}): string {
  const res = readResults(dir, opts.warn, { extraProfiles: opts.profiles, records: opts.records });
  if (res.runs.length + res.profiles.length + res.needles.length + res.benches.length === 0) {
    throw new CokvError(
      `report ${dir}: no results found (expected <dataset>__<model>__<press>__<budget>/metrics.json, summary.json, profiles/*.json, needle/*.json or bench/*.json${res.skipped.length ? `; ${res.skipped.length} file${res.skipped.length > 1 ? 's' : ''} skipped as malformed` : ''})`,
      'file',
    );
  }
  return renderPage(buildModel(res), opts.now);
}

/**
 * A chart as a standalone .svg file (for docs): the report's stylesheet (light and dark palettes) goes inside the
 * SVG, with a background so it reads on any page.
 */
export function standaloneSvg(svg: string): string {
  const open = svg.indexOf('>') + 1;
  return `${svg.slice(0, open)}<style>${CSS}svg{background:var(--bg)}</style>${svg.slice(open)}`;
}
