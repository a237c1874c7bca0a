/**
 * Reading and writing results folders, defensively: a malformed file or entry is skipped with one warning line
 * naming it (`onSkip`), never a crash.
 *
 * - a runs folder: every `…/<run>/metrics.json` below it (`readRunRecords`), one RunRecord each;
 * - summary.json: `{ generatedAt, quick, seed, entries: [...] }`, one record per entry (`readSummaryFile`,
 *   `writeSummaryFile`);
 * - bench files `{ model, rows: [{ length, press, budget, prefillMs, decodeMsPerToken, kvBytes, peakRssBytes }] }`
 *   and head-masking files `{ model, metric, n, full, none, rows: [{ k, top, bottom, random }] }`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/files.js';
import { ResultProblem, finite, isObj, need, optNum, optStr, recordFromEntry, recordFromMetrics, summaryEntry, tagStorageVariants, type RunRecord } from './record.js';

/** Called once per skipped file or entry: its name and the problem. */
export type SkipHandler = (file: string, problem: string) => void;

/** One warning line on stderr: `cokv: warning: MSG`. */
export function defaultWarn(msg: string): void {
  process.stderr.write(`cokv: warning: ${msg}\n`);
}

/** Skip handler warning `FILE: PROBLEM (skipped)` through `warn` (default: stderr). */
export function warnSkip(warn: (msg: string) => void = defaultWarn): SkipHandler {
  return (file, problem) => warn(`${file}: ${problem} (skipped)`);
}

/** Parsed JSON of `file`; ResultProblem when it cannot be read or is not JSON. */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ResultProblem('cannot read the file');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ResultProblem(`not valid JSON (${(e as Error).message})`);
  }
}

/** `fn()`, or undefined after `onSkip(file, problem)` when it throws a ResultProblem. */
export function attempt<T>(file: string, onSkip: SkipHandler, fn: () => T): T | undefined {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ResultProblem) { onSkip(file, e.message); return undefined; }
    throw e;
  }
}

/** Byte order, as the summary step has always listed folders. */
const byName = (a: fs.Dirent, b: fs.Dirent) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export interface RunReadOptions {
  /** Top-level folders that are not runs (the report's profiles/, needle/, bench/). */
  skipTop?: ReadonlySet<string>;
}

/**
 * Every run below `root`, in folder order: a folder holding metrics.json is one run (its path relative to `root`
 * is the record's `run`); a folder named `a__b…` without one is an unfinished run (skipped, warned); any other
 * folder is walked. A missing `root` holds no runs.
 */
export function readRunRecords(root: string, onSkip: SkipHandler = warnSkip(), opts: RunReadOptions = {}): RunRecord[] {
  const out: RunRecord[] = [];
  const walk = (dir: string, top: boolean) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true }).sort(byName);
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory() || (top && opts.skipTop?.has(e.name))) continue;
      const folder = path.join(dir, e.name);
      const file = path.join(folder, 'metrics.json');
      if (fs.existsSync(file)) {
        const run = path.relative(root, folder).split(path.sep).join('/');
        const r = attempt(file, onSkip, () => recordFromMetrics(readJsonFile(file), run, file));
        if (r) out.push(r);
      } else if (e.name.includes('__')) onSkip(folder, 'no metrics.json (run unfinished?)');
      else walk(folder, false);
    }
  };
  walk(root, true);
  return tagStorageVariants(out);
}

/** What a summary.json says besides its entries. */
export interface SummaryMeta { generatedAt?: string; quick?: boolean; seed?: number }

/**
 * The records of a summary.json (this step's, an older one's, or a hand-written `{ entries: [...] }`); undefined
 * when the file itself is unusable. Each bad entry is skipped as `<file> entry i`.
 */
export function readSummaryFile(file: string, onSkip: SkipHandler = warnSkip()): { meta: SummaryMeta; records: RunRecord[] } | undefined {
  const o = attempt(file, onSkip, () => {
    const v = readJsonFile(file);
    need(isObj(v) && Array.isArray(v.entries), 'expected { "entries": [...] }');
    return v as { entries: unknown[]; generatedAt?: unknown; quick?: unknown; seed?: unknown };
  });
  if (!o) return undefined;
  const records: RunRecord[] = [];
  o.entries.forEach((entry, i) => {
    const where = `${file} entry ${i}`;
    const r = attempt(where, onSkip, () => recordFromEntry(entry, where));
    if (r) records.push(r);
  });
  const meta: SummaryMeta = { generatedAt: optStr(o.generatedAt), quick: typeof o.quick === 'boolean' ? o.quick : undefined, seed: optNum(o.seed) };
  return { meta, records: tagStorageVariants(records) };
}

/** Write `records` as summary.json (atomically), stamped `generatedAt` = `now`. */
export function writeSummaryFile(file: string, records: RunRecord[], meta: { quick: boolean; seed: number }, now = new Date()): void {
  const body = { generatedAt: now.toISOString(), quick: meta.quick, seed: meta.seed, entries: records.map(summaryEntry) };
  writeFileAtomic(file, JSON.stringify(body, null, 1) + '\n');
}

/** The `.json` files directly in `dir`, sorted; none when it is absent. */
export function jsonFiles(dir: string): string[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isFile() && e.name.endsWith('.json'))
      .map((e) => path.join(dir, e.name))
      .sort();
  } catch {
    return [];
  }
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

/** One `cokv bench` file. */
export interface BenchData { file: string; model: string; rows: BenchRow[] }

/** A bench file's usable rows (a malformed row is dropped, counted in one `warn` line); ResultProblem when none. */
export function parseBench(o: unknown, file: string, warn: (m: string) => void = defaultWarn): BenchData {
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

/** The bench files of `dir` (`DIR/bench/*.json`), sorted by name. */
export function readBenchFiles(dir: string, onSkip: SkipHandler = warnSkip(), warn: (m: string) => void = defaultWarn): BenchData[] {
  return jsonFiles(dir).flatMap((file) => attempt(file, onSkip, () => parseBench(readJsonFile(file), file, warn)) ?? []);
}

/** One head-masking file (the `masking` step): score with the full cache for the top / bottom / random k heads. */
export interface MaskingData {
  file: string;
  model: string;
  metric: string;
  n?: number;
  full: number;
  none: number;
  rows: { k: number; top: number; bottom: number; random: number }[];
}

function parseMasking(o: unknown, file: string): MaskingData {
  need(isObj(o), 'expected a JSON object');
  const model = optStr(o.model), metric = optStr(o.metric);
  need(model, 'missing "model"');
  need(metric, 'missing "metric"');
  need(finite(o.full) && finite(o.none), '"full" and "none" must be finite numbers');
  need(Array.isArray(o.rows) && o.rows.length > 0, 'missing "rows" list');
  const rows = o.rows.map((r, i) => {
    need(isObj(r) && [r.k, r.top, r.bottom, r.random].every(finite), `"rows"[${i}] must hold finite k, top, bottom and random`);
    return { k: r.k as number, top: r.top as number, bottom: r.bottom as number, random: r.random as number };
  });
  return { file, model, metric, n: optNum(o.n), full: o.full, none: o.none, rows };
}

/** The head-masking files of `dir` (`DIR/masking/*.json`), sorted by name. */
export function readMaskingFiles(dir: string, onSkip: SkipHandler = warnSkip()): MaskingData[] {
  return jsonFiles(dir).flatMap((file) => attempt(file, onSkip, () => parseMasking(readJsonFile(file), file)) ?? []);
}
