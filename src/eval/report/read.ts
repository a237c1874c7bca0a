/**
 * Reading an eval results folder into typed records (the contract with the eval runner):
 *
 * - `DIR/<dataset>__<model>__<press>__<budget>/metrics.json` (one run; `predictions.jsonl` beside it is ignored);
 * - `DIR/summary.json`: `{ entries: [...] }`, rows like metrics.json (`task` may stand for `dataset`);
 * - `DIR/profiles/*.json`: CoKV profiles (`cokv-profile/1`, or the minimal `{ shape, scores }` form) and HeadKV
 *   head-score files (`cokv head-scores`: query heads); also the files the runs name in `settings.profile` /
 *   `settings.headScores`, and any given as `extraProfiles` (`cokv report --profile`);
 * - `DIR/needle/*.json`: needle-in-a-haystack grids, `scores[depthIndex][lengthIndex]` in [0, 1];
 * - `DIR/bench/*.json`: `{ model, rows: [{ length, press, budget, prefillMs, decodeMsPerToken, kvBytes, peakRssBytes }] }`.
 *
 * Every file is read defensively: a malformed one is skipped with a warning (stderr by default) and listed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../../errors.js';

export function budgetLabel(b: number | null): string {
  return b === null ? 'full cache' : `B=${b}`;
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
  /** KV storage type when the run names one (`f32`, `f16`, `q8`). */
  kvDtype?: string;
  /** Profile / head-score files the run was made with (`settings.profile`, `settings.headScores`), as written. */
  profileRefs?: string[];
  source: string;
}

export interface ProfileData {
  file: string;
  model: string;
  /**
   * `shapley`: a CoKV profile, one value per (layer, KV head) player. `head-scores`: a HeadKV head-score file
   * (`cokv head-scores`), one retrieval score per (layer, query head).
   */
  kind: 'shapley' | 'head-scores';
  /** What a column is: a KV head (profiles) or a query head (head scores). */
  columns: 'kv' | 'query';
  /** KV and query heads of the model, when the file's fingerprint says. */
  kvHeads?: number;
  queryHeads?: number;
  /** How head scores were measured (head-score files). */
  method?: string;
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
  const settings = isObj(o.settings) ? o.settings : {};
  const kvDtype = optStr(o.kvDtype) ?? optStr(settings.kvDtype);
  const refs = [optStr(settings.profile) ?? optStr(o.profile), optStr(settings.headScores) ?? optStr(o.headScores)].filter((x): x is string => x !== undefined);
  const ci = Array.isArray(o.ci95) && o.ci95.length === 2 && finite(o.ci95[0]) && finite(o.ci95[1]) ? [o.ci95[0], o.ci95[1]] as [number, number] : undefined;
  let name = promptLength !== undefined && !optStr(o.dataset) ? `${dataset}@${promptLength}` : dataset;
  // a run with another KV storage type is its own result (not a duplicate of the f32 one): tag the dataset
  // (a variant of the dataset: the report draws it beside the f32 runs)
  if (kvDtype && kvDtype !== 'f32' && !/\[[^\]]*\]\s*$/.test(name)) name = `${name} [kv-dtype/${kvDtype}]`;
  return {
    dataset: name,
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
    kvDtype,
    profileRefs: refs.length ? refs : undefined,
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
  // cokv-loo/1 (`cokv profile --estimator loo`) and cokv-exact/1 (`--exact`) hold per-KV-head values like a profile.
  const VALUE_SCHEMAS: Record<string, string> = { 'cokv-loo/1': 'leave-one-out', 'cokv-exact/1': 'exact sliced' };
  need(o.schema === undefined || o.schema === 'cokv-profile/1' || (typeof o.schema === 'string' && o.schema in VALUE_SCHEMAS), `not a cokv profile (schema ${JSON.stringify(o.schema)})`);
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
  const fp = isObj(o.model) ? o.model : {};
  const kvHeads = Number.isInteger(fp.kvHeads) ? fp.kvHeads as number : undefined;
  const queryHeads = Number.isInteger(fp.heads) ? fp.heads as number : undefined;
  // `cokv head-scores` writes { model, shape: [layers, query heads], method, scores } with no schema
  const headScores = o.schema === undefined && o.values === undefined
    && (optStr(o.method) !== undefined || (queryHeads !== undefined && queryHeads === shape[1] && kvHeads !== shape[1]));
  const mae = Array.isArray(o.maeHistory)
    ? o.maeHistory.filter((h): h is { samples: number; mae: number } => isObj(h) && finite(h.samples) && finite(h.mae))
    : [];
  return {
    file,
    model: modelPath ? path.basename(modelPath) : (model ?? path.basename(file, '.json')),
    kind: headScores ? 'head-scores' : 'shapley',
    columns: headScores ? 'query' : 'kv',
    kvHeads,
    queryHeads,
    method: optStr(o.method) ?? (typeof o.schema === 'string' ? VALUE_SCHEMAS[o.schema] : undefined),
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

export interface ReadOptions {
  /** Profile or head-score files to add (`cokv report --profile`), read like `DIR/profiles/*.json`. */
  extraProfiles?: string[];
}

/** The file a run's `settings.profile` names: as written (from the cwd), else from DIR or DIR's parent. */
function findRef(ref: string, dir: string): string | undefined {
  const tries = path.isAbsolute(ref) ? [ref] : [path.resolve(ref), path.resolve(dir, ref), path.resolve(dir, '..', ref)];
  return tries.find((f) => { try { return fs.statSync(f).isFile(); } catch { return false; } });
}

function realpath(f: string): string {
  try { return fs.realpathSync(f); } catch { return path.resolve(f); }
}

/**
 * Read everything usable under `dir`; malformed files are reported through `warn` and listed in `skipped`.
 * Profiles come from DIR/profiles, from the files the runs name (`settings.profile`, `settings.headScores`; so the
 * README flow, profile.json in the cwd and runs in runs/, shows its profile), and from `opts.extraProfiles`.
 */
export function readResults(dir: string, warn: (msg: string) => void = defaultWarn, opts: ReadOptions = {}): Results {
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
    const key = JSON.stringify([r.model, r.protocol, r.dataset, r.press, r.budget, r.kvDtype ?? 'f32']);
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
  const profileSeen = new Set<string>();
  const addProfile = (file: string) => {
    const key = realpath(file);
    if (profileSeen.has(key)) return;
    profileSeen.add(key);
    const p = attempt(file, () => parseProfile(readJsonFile(file), file));
    if (p) res.profiles.push(p);
  };
  for (const file of jsonFiles(path.join(dir, 'profiles'))) addProfile(file);
  for (const file of opts.extraProfiles ?? []) {
    if (!fs.existsSync(file)) throw new CokvError(`--profile ${file}: no such file`, 'file');
    addProfile(file);
  }
  const refs = [...new Set(res.runs.flatMap((r) => r.profileRefs ?? []))].sort();
  for (const ref of refs) {
    const file = findRef(ref, res.dir);
    if (file) addProfile(file);
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

