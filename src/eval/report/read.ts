/**
 * Reading an eval results folder for `cokv report`. The runs are the one record type of src/results (`RunRow` is
 * `RunRecord`), read by its readers:
 *
 * - every `DIR/…/<run>/metrics.json` (the README flow's `<dataset>__<model>__<press>__<budget>/` folders, or an
 *   experiments `runs/` tree); `predictions.jsonl` beside it is ignored;
 * - `DIR/summary.json`: `{ entries: [...] }`, one record each (`task` may stand for `dataset`). It is the collected
 *   `DIR/runs/` of an experiments folder, so with a summary.json that folder is not walked again;
 * - `DIR/profiles/*.json`: CoKV profiles (`cokv-profile/1`, or the minimal `{ shape, scores }` form) and HeadKV
 *   head-score files (`cokv head-scores`: query heads); also the files the runs name (`profile` / `headScores`),
 *   and any given as `extraProfiles` (`cokv report --profile`);
 * - `DIR/needle/*.json`: needle-in-a-haystack grids, `scores[depthIndex][lengthIndex]` in [0, 1];
 * - `DIR/bench/*.json`: `{ model, rows: [{ length, press, budget, prefillMs, decodeMsPerToken, kvBytes, peakRssBytes }] }`.
 *
 * Every file is read defensively: a malformed one is skipped with a warning (stderr by default) and listed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../../errors.js';
import { attempt, defaultWarn, jsonFiles, readBenchFiles, readJsonFile, readRunRecords, readSummaryFile, type BenchData, type BenchRow, type SkipHandler } from '../../results/read.js';
import { finite, isObj, need, optNum, optStr, parseBudget, type RunRecord } from '../../results/record.js';

export type { BenchData, BenchRow };

export function budgetLabel(b: number | null): string {
  return b === null ? 'full cache' : `B=${b}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the results folder

/** One scored run (a metrics.json, or a summary.json entry): the results record. */
export type RunRow = RunRecord;

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

export interface Results {
  dir: string;
  /** Every run read, in reading order (the tables section: ratio runs too). */
  records: RunRecord[];
  /** The charted runs: the records less ratio runs (no per-head budget to plot against) and duplicates. */
  runs: RunRow[];
  profiles: ProfileData[];
  needles: NeedleData[];
  benches: BenchData[];
  /** "file: problem" for every file or entry that was skipped. */
  skipped: string[];
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

const SPECIAL_DIRS = new Set(['profiles', 'needle', 'bench']);

export interface ReadOptions {
  /** Profile or head-score files to add (`cokv report --profile`), read like `DIR/profiles/*.json`. */
  extraProfiles?: string[];
  /** Runs already read (the summary step's): used instead of walking DIR and reading DIR/summary.json. */
  records?: RunRecord[];
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
  const res: Results = { dir: path.resolve(dir), records: [], runs: [], profiles: [], needles: [], benches: [], skipped: [] };
  const skip: SkipHandler = (file, problem) => {
    const msg = `${file}: ${problem}`;
    res.skipped.push(msg);
    warn(`${msg} (skipped)`);
  };
  if (opts.records) res.records = opts.records;
  else {
    const summary = path.join(dir, 'summary.json');
    const hasSummary = fs.existsSync(summary);
    res.records = readRunRecords(dir, skip, { skipTop: new Set([...SPECIAL_DIRS, ...(hasSummary ? ['runs'] : [])]) });
    if (hasSummary) res.records.push(...(readSummaryFile(summary, skip)?.records ?? []));
  }
  const seen = new Set<string>();
  for (const r of res.records) {
    if (r.ratio !== undefined) continue;
    const key = JSON.stringify([r.model, r.protocol, r.dataset, r.press, r.budget, r.kvDtype]);
    if (seen.has(key)) { skip(r.source, `duplicate of an earlier result for ${r.dataset} / ${r.press} / ${budgetLabel(r.budget)}`); continue; }
    seen.add(key);
    res.runs.push(r);
  }
  const profileSeen = new Set<string>();
  const addProfile = (file: string) => {
    const key = realpath(file);
    if (profileSeen.has(key)) return;
    profileSeen.add(key);
    const p = attempt(file, skip, () => parseProfile(readJsonFile(file), file));
    if (p) res.profiles.push(p);
  };
  for (const file of jsonFiles(path.join(dir, 'profiles'))) addProfile(file);
  for (const file of opts.extraProfiles ?? []) {
    if (!fs.existsSync(file)) throw new CokvError(`--profile ${file}: no such file`, 'file');
    addProfile(file);
  }
  const refs = [...new Set(res.runs.flatMap((r) => [r.profile, r.headScores].filter((x): x is string => x !== undefined)))].sort();
  for (const ref of refs) {
    const file = findRef(ref, res.dir);
    if (file) addProfile(file);
  }
  for (const file of jsonFiles(path.join(dir, 'needle'))) {
    const p = attempt(file, skip, () => parseNeedle(readJsonFile(file), file));
    if (p) res.needles.push(p);
  }
  res.benches = readBenchFiles(path.join(dir, 'bench'), skip, warn);
  return res;
}
