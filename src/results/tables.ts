/**
 * The results tables (results/results.md, and the report's "Tables" section) from run records: score vs budget,
 * the smallest budget keeping ≥ 97% of Full, baselines × allocation rules, head masking, sensitivity, quant, memory
 * and latency, the estimator. Built once as blocks (headings, text, tables, code), then written as markdown
 * (`toMarkdown`) or HTML (`toHtml`), so both show the same numbers.
 */
import { esc } from '../eval/report/charts.js';
import { PRESSES, TASKS } from '../experiments/plan.js';
import { PRESS_DESCRIPTORS } from '../press/presses/index.js';
import type { BenchData, MaskingData } from './read.js';
import type { RunRecord } from './record.js';

/** One piece of the results document. Text may hold markdown `code` and **bold** spans. */
export type Block =
  | { kind: 'heading'; level: 1 | 2 | 3; text: string }
  | { kind: 'text'; text: string }
  | { kind: 'table'; head: string[]; rows: string[][] }
  | { kind: 'code'; lang: string; text: string };

const heading = (level: 1 | 2 | 3, text: string): Block => ({ kind: 'heading', level, text });
const text = (t: string): Block => ({ kind: 'text', text: t });
const table = (head: string[], rows: string[][]): Block => ({ kind: 'table', head, rows });

const fmt = (v: number | undefined, d = 1) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
/** An optional number as an operand (missing → NaN, printed '–'). */
const num = (v: number | undefined) => v ?? NaN;
/** ", 95% CI a–b" of a run's score when the runner gave one. */
const ciLabel = (e?: { ci95?: [number, number] }, d = 1) => (e?.ci95 ? `, 95% CI ${fmt(e.ci95[0], d)}–${fmt(e.ci95[1], d)}` : '');
const isVariantRun = (e: RunRecord) => e.run.startsWith('sensitivity') || e.run.startsWith('quant') || e.run.startsWith('baselines');

/** What the document covers besides the records. */
export interface DocumentInputs {
  /** The `#` title line; none in the report (its page has one). */
  title?: string;
  records: RunRecord[];
  masking?: MaskingData[];
  benches?: BenchData[];
  /** The estimator step's summary.json, as text. */
  estimator?: string;
}

/** The results document: every table the records (and the masking, bench and estimator files) give. */
export function resultsDocument(inp: DocumentInputs): Block[] {
  const es = inp.records;
  const out: Block[] = inp.title ? [heading(1, inp.title)] : [];
  out.push(...budgetTables(es));
  out.push(...baselineTables(es));
  for (const [i, m] of (inp.masking ?? []).entries()) {
    if (i === 0) out.push(heading(2, 'Head masking (full cache only for k heads, the rest window-only)'));
    const d = 3;
    out.push(text(`${m.model} (${m.metric}, n = ${m.n}; all heads full ${fmt(m.full, d)}, no head full ${fmt(m.none, d)})`),
      table(['k', 'top-k by CoKV value', 'bottom-k', 'random k'], m.rows.map((r) => [String(r.k), fmt(r.top, d), fmt(r.bottom, d), fmt(r.random, d)])));
  }
  const sens = es.filter((e) => e.run.startsWith('sensitivity'));
  if (sens.length) {
    const sorted = [...sens].sort((a, b) => a.run.localeCompare(b.run) || a.press.localeCompare(b.press) || (a.budget ?? 0) - (b.budget ?? 0));
    out.push(heading(2, 'Sensitivity (multikey, 512 tokens, test items)'),
      table(['setting', 'press', 'budget', 'score', 'n'], sorted.map((e) => [e.run.split('/')[1], e.press, String(e.budget), fmt(e.score), String(e.n)])));
  }
  out.push(...quantTable(es));
  for (const b of inp.benches ?? []) {
    out.push(heading(2, `Memory and latency: ${b.model} (cokv bench, native backend, median decode step)`),
      table(['prompt', 'press', 'budget', 'prefill s', 'decode ms/token', '× full', 'KV MiB', '× full', 'peak RSS MiB'], b.rows.map((r) => {
        const full = b.rows.find((x) => x.length === r.length && x.press === 'full');
        return [String(r.length), r.press, String(r.budget ?? '–'), fmt(num(r.prefillMs) / 1000, 2), fmt(r.decodeMsPerToken, 2),
          full ? fmt(num(r.decodeMsPerToken) / num(full.decodeMsPerToken), 2) : '–', fmt(num(r.kvBytes) / 2 ** 20, 2),
          full ? fmt(num(r.kvBytes) / num(full.kvBytes), 4) : '–', fmt(num(r.peakRssBytes) / 2 ** 20, 0)];
      })));
  }
  if (inp.estimator !== undefined) out.push(heading(2, 'Estimator'), { kind: 'code', lang: 'json', text: inp.estimator.trim() });
  return out;
}

/** Score vs budget per (model, task, length, protocol, items) and the smallest budget keeping ≥ 97% of Full. */
function budgetTables(es: RunRecord[]): Block[] {
  const groups = new Map<string, RunRecord[]>();
  for (const e of es.filter((x) => !isVariantRun(x))) {
    const k = `${e.model}|${e.task}|${e.promptLength ?? ''}|${e.protocol}|${e.items}`;
    groups.set(k, [...(groups.get(k) ?? []), e]);
  }
  const out: Block[] = [heading(2, 'Score vs budget'), text('Scores on test items (exact match ×100 for the retrieval tasks; mean log-prob per token of the first 16 reference tokens for stories, higher is better). `r0.25` = keep 25% of the prompt per head (kvpress compression ratio 0.75). Kept KV is the mean share of the full prompt cache held after compression.')];
  const compressed = PRESSES.filter((p) => p !== 'full');
  const min97: string[][] = [];
  for (const [k, list] of [...groups].sort()) {
    const [model, task, len, protocol, items] = k.split('|');
    const itemsLabel = items === 'generated' ? ' · generated test items' : '';
    const full = list.find((e) => e.press === 'full');
    const budgets = [...new Set(list.filter((e) => e.budget !== null).map((e) => e.budget!))].sort((a, b) => a - b);
    const ratios = [...new Set(list.filter((e) => e.ratio !== undefined).map((e) => e.ratio!))].sort((a, b) => b - a);
    const loglik = full?.metric.startsWith('loglik');
    out.push(heading(3, `${model} · ${task}${len ? ` · ${len} tokens` : ''} · ${protocol}${itemsLabel} (n = ${full?.n ?? list[0].n}, Full = ${fmt(full?.score, loglik ? 3 : 1)}${ciLabel(full, loglik ? 3 : 1)})`));
    const rows: string[][] = [];
    const row97: string[] = [];
    for (const press of compressed) {
      const cells = budgets.map((b) => list.find((e) => e.press === press && e.budget === b));
      const rcells = ratios.map((r) => list.find((e) => e.press === press && e.ratio === r));
      if (cells.every((c) => !c) && rcells.every((c) => !c)) { row97.push('–'); continue; }
      const show = (e?: RunRecord) => (e ? `${fmt(e.score, loglik ? 3 : 1)}${loglik && e.agreement !== undefined ? ` (agr ${fmt(e.agreement, 0)})` : ''}` : '–');
      rows.push([press, ...cells.map(show), ...rcells.map(show)]);
      // Smallest budget keeping ≥ 97% of Full (for log-probs: within 3% of |Full|).
      const ok = (e: RunRecord) => full !== undefined && (loglik ? e.score >= full.score - 0.03 * Math.abs(full.score) : e.score >= 0.97 * full.score);
      const first = budgets.find((b, i) => cells[i] && ok(cells[i]!));
      row97.push(first === undefined ? `> ${budgets[budgets.length - 1]}` : String(first));
    }
    const keptShare = (e?: RunRecord) => (e ? `${fmt((100 * num(e.keptKvBytes)) / num(e.fullKvBytes))}%` : '–');
    rows.push(['kept KV', ...budgets.map((b) => keptShare(list.find((x) => x.press === 'snapkv' && x.budget === b))),
      ...ratios.map((r) => keptShare(list.find((x) => x.press === 'snapkv' && x.ratio === r)))]);
    out.push(table(['press', ...budgets.map((b) => `B=${b}`), ...ratios.map((r) => `r${r}`)], rows));
    min97.push([model, task, len || '–', protocol, items, ...row97]);
  }
  out.push(heading(2, 'Smallest budget keeping ≥ 97% of Full'), table(['model', 'task', 'length', 'protocol', 'items', ...compressed], min97));
  return out;
}

/**
 * CoKV and SnapKV with F16 / Q8 storage. Every storage ran the same list of byte budgets, so the i-th smallest
 * budget of each (press, storage) is the same byte tier: rows go press → tier → f32, f16, q8.
 */
function quantTable(es: RunRecord[]): Block[] {
  const q = es.filter((e) => e.run.startsWith('quant'));
  if (!q.length) return [];
  const storages = ['f32', 'f16', 'q8'];
  const tier = new Map<RunRecord, number>();
  for (const e of q) tier.set(e, q.filter((x) => x.press === e.press && x.kvDtype === e.kvDtype && (x.budget ?? 0) < (e.budget ?? 0)).length);
  const sorted = [...q].sort((a, b) => a.press.localeCompare(b.press) || tier.get(a)! - tier.get(b)! || storages.indexOf(a.kvDtype) - storages.indexOf(b.kvDtype));
  return [heading(2, 'CoKV with F16 and Q8 KV storage at the same bytes (multikey + kv, 512 tokens)'),
    text('Per press, each f32 row is followed by F16 and Q8 runs holding at most its bytes: F16 at budget 2B, Q8 (int8 + one F32 scale per K/V row) at ⌊B·4·hd/(hd+4)⌋.'),
    table(['press', 'storage', 'budget', 'kept KV bytes', 'score', 'n'], sorted.map((e) => [e.press, e.kvDtype, String(e.budget), String(Math.round(num(e.keptKvBytes))), fmt(e.score), String(e.n)]))];
}

/** A run's label in the baselines tables: press plus the allocator variant (`baselines/<rule>/<variant>/…` runs). */
function baselineLabel(e: RunRecord): string {
  const variant = e.run.startsWith('baselines') ? e.run.split('/')[2] : 'default';
  if (variant === 'cokv-loglik') return 'cokv (loglik profile)';
  if (variant === 'cokv-loo') return 'cokv (leave-one-out values)';
  if (variant === 'headkv-copy') return 'headkv (copy score)';
  if (variant === 'headkv-output-norm') return 'headkv (output-norm score)';
  if (variant === 'headkv-entropy') return 'headkv (attention-entropy score)';
  if (e.press === 'cokv') return 'cokv (default: metric profile)';
  if (e.press === 'headkv') return 'headkv (R2 score)';
  return e.press;
}

/**
 * Baselines × allocation rules on the generated items: per protocol and rule, the mean score over the three tasks
 * at each (prompt length, budget) with budget ≤ 25% of the prompt, and whether the default CoKV is ≥ every other
 * press there. Uniform presses' runs (the generated step's) stand in both rules: the rule changes nothing for them.
 */
function baselineTables(es: RunRecord[]): Block[] {
  const gen = es.filter((e) => e.items === 'generated' && e.model === 'cokv-retrieval-tiny' && e.budget !== null && e.press !== 'full' && e.press !== 'random');
  if (!gen.some((e) => e.run.startsWith('baselines'))) return [];
  // Presses whose allocation gives every head the same budget (the rule cannot change them).
  const uniform = new Set<string>(PRESS_DESCRIPTORS.filter((d) => d.allocation === 'uniform').map((d) => d.name));
  const ruleOf = (e: RunRecord): string | undefined => (e.run.startsWith('baselines') ? e.run.split('/')[1] : e.run.startsWith('generated') ? 'reshare' : undefined);
  const out: Block[] = [heading(2, 'Baselines and allocation rules (generated items, mean over passkey, multikey and kv)'),
    text('Columns: prompt length / budget per KV head, for budgets ≤ 25% of the prompt; each cell the mean exact match ×100 over the three tasks (60 items each). ' +
      '"reshare" = cokv\'s default (budget a head cannot use goes to the others); "reference" = the HeadKV/CoKV/AdaKV code\'s integer rules (`--no-redistribute`). ' +
      'SnapKV, boundary-protected SnapKV and StreamingLLM give every head the same budget, so both rules give them the same runs.')];
  for (const protocol of ['question-aware', 'context-only']) {
    for (const rule of ['reshare', 'reference']) {
      const cells = gen.filter((e) => e.protocol === protocol && (ruleOf(e) === rule || (uniform.has(e.press) && ruleOf(e) === 'reshare' && !e.run.startsWith('baselines'))));
      const cols = [...new Set(cells.filter((e) => e.budget! <= 0.25 * (e.promptLength ?? 0)).map((e) => `${e.promptLength}/${e.budget}`))]
        .sort((a, b) => Number(a.split('/')[0]) - Number(b.split('/')[0]) || Number(a.split('/')[1]) - Number(b.split('/')[1]));
      if (cols.length === 0) continue;
      const labels = [...new Set(cells.map(baselineLabel))].sort();
      const mean = (label: string, col: string): number | undefined => {
        const [L, B] = col.split('/').map(Number);
        const xs = cells.filter((e) => baselineLabel(e) === label && e.promptLength === L && e.budget === B);
        return xs.length === TASKS.length ? xs.reduce((a, e) => a + e.score, 0) / xs.length : undefined;
      };
      const cokv = 'cokv (default: metric profile)';
      const verdict = cols.map((c) => {
        const mine = mean(cokv, c);
        if (mine === undefined) return '–';
        const above = labels.filter((l) => l !== cokv && (mean(l, c) ?? -Infinity) > mine + 1e-9);
        return above.length === 0 ? 'yes' : `no (${above.join(', ')})`;
      });
      out.push(heading(3, `${protocol} · ${rule}`),
        table(['press', ...cols], [...labels.map((label) => [label, ...cols.map((c) => fmt(mean(label, c)))]), ['**CoKV ≥ all?**', ...verdict]]));
    }
  }
  return out;
}

/** The document as markdown: each block followed by one blank line. */
export function toMarkdown(blocks: Block[]): string {
  const out: string[] = [];
  for (const b of blocks) {
    if (b.kind === 'heading') out.push(`${'#'.repeat(b.level)} ${b.text}`);
    else if (b.kind === 'text') out.push(b.text);
    else if (b.kind === 'code') out.push('```' + b.lang, b.text, '```');
    else out.push(`| ${b.head.join(' | ')} |`, '|' + ' --- |'.repeat(b.head.length), ...b.rows.map((r) => `| ${r.join(' | ')} |`));
    out.push('');
  }
  return out.join('\n') + '\n';
}

/** Markdown spans in text: `code` and **bold**, on escaped text. */
function inline(s: string): string {
  return esc(s).replace(/`([^`]+)`/g, '<code>$1</code>').replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>');
}

/** The document as HTML (the report's classes); heading level L becomes `<h(L + shift)>`. */
export function toHtml(blocks: Block[], shift = 1): string {
  return blocks.map((b) => {
    if (b.kind === 'heading') { const h = `h${Math.min(6, b.level + shift)}`; return `<${h}>${inline(b.text)}</${h}>`; }
    if (b.kind === 'text') return `<p class="ck-muted">${inline(b.text)}</p>`;
    if (b.kind === 'code') return `<pre class="ck-src">${esc(b.text)}</pre>`;
    return `<div class="ck-tablewrap"><table class="ck-table"><thead><tr>${b.head.map((c) => `<th>${inline(c)}</th>`).join('')}</tr></thead>`
      + `<tbody>${b.rows.map((r) => `<tr>${r.map((c) => `<td>${inline(c)}</td>`).join('')}</tr>`).join('')}</tbody></table></div>`;
  }).join('');
}
