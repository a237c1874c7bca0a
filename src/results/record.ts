/**
 * The one record of a scored run. The eval runner writes `<run>/metrics.json` (`RunMetrics`); every reader of
 * results (`cokv experiment summary`, `cokv report`) turns it into a `RunRecord`: the metrics.json fields as
 * written, `dataset` renamed `suite`, and the fields derived from the settings and from where the run folder sits
 * under the runs root (task, prompt length, experiment variant, …). results/summary.json holds one record per
 * entry (`summaryEntry`), and `recordFromEntry` reads it back, also from summary.json files written before the
 * record existed (no `variant`, `timings`, …) or by hand (`task` standing for `dataset`, fields missing).
 */
import type { RunMetrics } from '../eval/runner.js';
import { pressesReading } from '../press/presses/index.js';

/** metrics.json fields a record holds as the runner wrote them (other result files may lack the optional ones). */
type CarriedMetrics = 'model' | 'press' | 'budget' | 'metric' | 'score';
type OptionalMetrics = 'ratio' | 'n' | 'ci95' | 'agreement' | 'keptKvBytes' | 'fullKvBytes' | 'kvScope' | 'createdAt';

/**
 * One scored run. `settings`, `modelPath` and `settingsHash` stay in the run folder (`run`): the record keeps what
 * the tables, charts and comparisons use, so that summary.json stays one small file.
 */
export interface RunRecord extends Pick<RunMetrics, CarriedMetrics>, Partial<Pick<RunMetrics, OptionalMetrics>> {
  /** The cell the run scores: `task@promptLength`, plus ` [variant]` for an experiment variant. */
  dataset: string;
  /** The metrics.json `dataset` (the data file's suite, e.g. `retrieval`). */
  suite?: RunMetrics['dataset'];
  /** The subset the run scored (`settings.subset`, comma-joined), else the suite. */
  task: string;
  /** The prompt length when the run scored one (`settings.lengths` with one entry). */
  promptLength?: number;
  /** `question-aware` or `context-only` for the runner's runs; other tools' files may name others. */
  protocol: string;
  /** KV storage type (`settings.kvDtype`): `f32`, `f16`, `q8`. */
  kvDtype: string;
  /** The profile file the press read (presses that read one: CoKV). */
  profile?: string;
  /** The head-score file the press read (presses that read one: HeadKV). */
  headScores?: string;
  alpha?: number;
  window?: number;
  /** Timings as written; another tool's file may give only some. */
  timings?: Partial<RunMetrics['timings']>;
  /** The run folder relative to the runs root, `/`-separated ('' when the source does not say). */
  run: string;
  /** Which test items: generated in the dev file's format (`generated`, `baselines` runs) or the dev file's test split. */
  items: 'generated' | 'dev-test';
  /** The experiment variant (`sensitivity/alpha-2`, `quant/f16`, `baselines/reference/default`, `generated items`, `kv-dtype/q8`). */
  variant?: string;
  /** Where this record was read from (a metrics.json path, or `<summary.json> entry i`); not written to summary.json. */
  source: string;
}

/** A summary.json entry: a record without its `source`. */
export type SummaryEntry = Omit<RunRecord, 'source'>;

/** The order of a summary.json entry's keys (the order the summary step has always written, new keys last). */
export const SUMMARY_ENTRY_KEYS = [
  'model', 'task', 'dataset', 'suite', 'promptLength', 'protocol', 'press', 'budget', 'ratio', 'kvDtype', 'score', 'n', 'ci95', 'agreement',
  'keptKvBytes', 'fullKvBytes', 'metric', 'profile', 'alpha', 'window', 'run', 'items', 'headScores', 'variant', 'kvScope', 'timings', 'createdAt',
] as const satisfies readonly (keyof SummaryEntry)[];
// Every entry field is in SUMMARY_ENTRY_KEYS: adding one to RunRecord without listing it fails to compile here.
const everyKeyListed: Exclude<keyof SummaryEntry, (typeof SUMMARY_ENTRY_KEYS)[number]> extends never ? true : never = true;
void everyKeyListed;

/** A problem with one result file or entry: the reader skips it and names it in one warning line. */
export class ResultProblem extends Error {}

/** Throw a ResultProblem (`problem`) unless `cond`. */
export function need(cond: unknown, problem: string): asserts cond {
  if (!cond) throw new ResultProblem(problem);
}

type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
export const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const optNum = (v: unknown): number | undefined => (finite(v) ? v : undefined);
export const optStr = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** A budget field: null (no budget) or a positive number. */
export function parseBudget(v: unknown, where: string): number | null {
  if (v === null) return null;
  need(finite(v) && v > 0, `${where} must be a positive number or null, got ${JSON.stringify(v)}`);
  return v;
}

/** Names a run folder can stand in for (`<dataset>__<model>__<press>__<budget>`, as `cokv eval` names them). */
export interface FolderNames { dataset?: string; model?: string; press?: string; budget?: number | null }

/** What `<dataset>__<model>__<press>__<budget>` says; budget `full`, `null` or `none` is no budget. */
export function namesFromFolder(name: string): FolderNames {
  const parts = name.split('__');
  if (parts.length !== 4) return {};
  const b = parts[3];
  const v = Number(b);
  return { dataset: parts[0], model: parts[1], press: parts[2], budget: /^(full|null|none)$/i.test(b) ? null : Number.isFinite(v) && v > 0 ? v : undefined };
}

const PROFILE_PRESSES = new Set(pressesReading('profile').map((d) => d.name as string));
const HEAD_SCORE_PRESSES = new Set(pressesReading('headScores').map((d) => d.name as string));

/** The experiment variant a run folder's place says (`run` relative to the runs root). */
function variantOfRun(run: string): string | undefined {
  const parts = run.split('/');
  if (run.startsWith('sensitivity') || run.startsWith('quant')) return parts.slice(0, 2).join('/');
  if (run.startsWith('baselines')) return parts.slice(0, 3).join('/');
  if (run.startsWith('generated')) return 'generated items';
  return undefined;
}

const TAG = /\s*\[([^\]]*)\]\s*$/;

/** `kv@512 [quant/f16]` → the task-and-length part and the variant. */
function splitLabel(dataset: string): { cell: string; variant?: string } {
  const m = TAG.exec(dataset);
  return m ? { cell: dataset.slice(0, m.index), variant: m[1] } : { cell: dataset };
}

/** The fields every record source shares, checked. */
function core(o: Obj, fallback: FolderNames): Pick<RunRecord, CarriedMetrics | 'protocol'> {
  const model = optStr(o.model) ?? fallback.model ?? optStr(o.modelPath);
  const press = optStr(o.press) ?? fallback.press;
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
  return { model, press, budget, protocol: optStr(o.protocol) ?? 'question-aware', metric: optStr(o.metric) ?? 'score', score: o.score };
}

/** The optional metrics fields, each kept only when well-formed. */
function optionalMetrics(o: Obj): Partial<Pick<RunRecord, OptionalMetrics | 'timings'>> {
  const ci = Array.isArray(o.ci95) && o.ci95.length === 2 && finite(o.ci95[0]) && finite(o.ci95[1]) ? [o.ci95[0], o.ci95[1]] as [number, number] : undefined;
  const t = isObj(o.timings) ? o.timings : undefined;
  const timings = t && { prefillMs: optNum(t.prefillMs), decodeMsPerToken: optNum(t.decodeMsPerToken), seconds: optNum(t.seconds) };
  return {
    ratio: optNum(o.ratio), n: optNum(o.n), ci95: ci, agreement: optNum(o.agreement), keptKvBytes: optNum(o.keptKvBytes), fullKvBytes: optNum(o.fullKvBytes),
    kvScope: optStr(o.kvScope), createdAt: optStr(o.createdAt),
    timings: timings && Object.values(timings).some((v) => v !== undefined) ? timings : undefined,
  };
}

/**
 * Runs that name no experiment variant but store KV in another type than the folder's usual one become their own
 * cells (`kv-dtype/<type>`) beside the usual runs. "Usual" is the most common storage among those runs (f32 on a
 * tie), not a fixed f32: `cokv eval` stores f16 by default, and a folder of f16 runs is the main result, not a
 * variant of an absent f32 one. Returns new records; the others unchanged.
 */
export function tagStorageVariants(records: RunRecord[]): RunRecord[] {
  const count = new Map<string, number>();
  for (const r of records) if (r.variant === undefined) count.set(r.kvDtype, (count.get(r.kvDtype) ?? 0) + 1);
  if (count.size < 2) return records;
  const usual = [...count].sort((a, b) => b[1] - a[1] || Number(b[0] === 'f32') - Number(a[0] === 'f32') || a[0].localeCompare(b[0]))[0][0];
  return records.map((r) => {
    if (r.variant !== undefined || r.kvDtype === usual) return r;
    const variant = `kv-dtype/${r.kvDtype}`;
    return { ...r, variant, dataset: `${r.dataset} [${variant}]` };
  });
}

/** Drop undefined fields (so records compare and serialise the same from every source). */
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/**
 * The record of one metrics.json: `metrics` as parsed, `run` its folder relative to the runs root (`/`-separated;
 * it names the experiment variant), `source` the file (for warnings and the report's runs table). Missing names
 * are taken from a `<dataset>__<model>__<press>__<budget>` folder name. Throws ResultProblem when it is unusable.
 */
export function recordFromMetrics(metrics: unknown, run: string, source: string): RunRecord {
  need(isObj(metrics), 'expected a JSON object');
  const o = metrics;
  const fallback = namesFromFolder(run.split('/').pop() ?? '');
  const suite = optStr(o.dataset) ?? optStr(o.task) ?? fallback.dataset;
  need(suite, 'missing "dataset"');
  const c = core(o, fallback);
  const s = isObj(o.settings) ? o.settings : {};
  const subset = Array.isArray(s.subset) && s.subset.length > 0 && s.subset.every((x) => typeof x === 'string') ? s.subset.join(',') : undefined;
  const task = subset ?? suite;
  const promptLength = Array.isArray(s.lengths) && s.lengths.length === 1 && finite(s.lengths[0]) ? s.lengths[0] : undefined;
  const kvDtype = optStr(s.kvDtype) ?? 'f32';
  const variant = variantOfRun(run);
  return defined<RunRecord>({
    model: c.model, task, dataset: `${task}${promptLength ? `@${promptLength}` : ''}${variant ? ` [${variant}]` : ''}`,
    suite, promptLength, protocol: c.protocol, press: c.press, budget: c.budget, kvDtype, score: c.score, metric: c.metric,
    ...optionalMetrics(o),
    profile: PROFILE_PRESSES.has(c.press) ? optStr(s.profile) : undefined,
    headScores: HEAD_SCORE_PRESSES.has(c.press) ? optStr(s.headScores) : undefined,
    alpha: optNum(s.alpha), window: optNum(s.window), run,
    items: run.startsWith('generated') || run.startsWith('baselines') ? 'generated' : 'dev-test',
    variant, source,
  });
}

/**
 * The record of one summary.json entry (`source` names it in warnings). Entries written before the record existed
 * lack `variant`, `timings`, …: those are derived (the variant from the dataset label's `[…]`) or left out. A
 * hand-written entry may give `task` (+ `promptLength`) instead of `dataset`. Throws ResultProblem when unusable.
 */
export function recordFromEntry(entry: unknown, source: string): RunRecord {
  need(isObj(entry), 'expected a JSON object');
  const o = entry;
  const task0 = optStr(o.task);
  const promptLength = optNum(o.promptLength);
  const given = optStr(o.dataset) ?? (task0 !== undefined ? `${task0}${promptLength !== undefined ? `@${promptLength}` : ''}` : undefined);
  need(given, 'missing "dataset"');
  const c = core(o, {});
  const { cell, variant: tagged } = splitLabel(given);
  const kvDtype = optStr(o.kvDtype) ?? 'f32';
  const variant = optStr(o.variant) ?? tagged;
  const run = optStr(o.run) ?? '';
  return defined<RunRecord>({
    model: c.model, task: task0 ?? cell.replace(/@\d+$/, ''), dataset: tagged === undefined && variant ? `${given} [${variant}]` : given, suite: optStr(o.suite), promptLength,
    protocol: c.protocol, press: c.press, budget: c.budget, kvDtype, score: c.score, metric: c.metric,
    ...optionalMetrics(o),
    profile: optStr(o.profile), headScores: optStr(o.headScores), alpha: optNum(o.alpha), window: optNum(o.window), run,
    items: o.items === 'generated' || o.items === 'dev-test' ? o.items : run.startsWith('generated') || run.startsWith('baselines') ? 'generated' : 'dev-test',
    variant, source,
  });
}

/** The summary.json entry of a record: every field but `source`, in the summary step's key order. */
export function summaryEntry(r: RunRecord): SummaryEntry {
  const out: Record<string, unknown> = {};
  for (const k of SUMMARY_ENTRY_KEYS) if (r[k] !== undefined) out[k] = r[k];
  return out as unknown as SummaryEntry;
}
