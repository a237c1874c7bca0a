/**
 * The profile file: everything needed to reuse, resume, merge and audit a head-value estimate. Runs store their
 * per-sample records (index, size, u, coalition), from which accumulators and values are recomputed exactly.
 * Written atomically (temp file + rename), so a killed process leaves the previous checkpoint intact; read back
 * only after every field has been validated (see {@link validateProfile}).
 *
 * Older profiles: a file without `model.weights` (made before profiles were bound to the weights) is still a valid
 * file for show/compare/merge, but presses refuse it for a model read from disk, and `--resume` refuses it (the
 * settings' model differs): it must be profiled again. The profiles committed under results/ carry the hash of
 * the asset models they were measured on.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import { fingerprintMismatch, fingerprintProblem, type ModelFingerprint } from '../model/fingerprint.js';
import { writeFileAtomic } from '../util/files.js';
import { coalitionFromHex, coalitionToHex } from './players.js';
import { drawCoalition, type SampleRecord } from './sliced-shapley.js';
import type { UtilityKind } from './model-game.js';

export const PROFILE_SCHEMA = 'cokv-profile/1';

/** Settings that must agree for records to be combined (resume, merge). */
export interface ProfileSettings {
  model: ModelFingerprint;
  /** [player layers, kvHeads]: the shape of every values table. */
  shape: [number, number];
  /**
   * The model layers whose KV heads are the players (its full-attention layers), ascending: row r of every
   * [row][kvHead] table is layer layers[r]. Absent in profiles made before sliding layers were known, which
   * count every layer (see {@link profileLayers}).
   */
  layers?: number[];
  window: number;
  sizes: number[];
  sizeOrder: 'round-robin' | 'random';
  sSideOnly: boolean;
  utility: UtilityKind;
  task: string;
  maxNew: number;
  dataFile: string;
  dataHash: string;
  sampleIds: string[];
  seed: number;
  runs: number;
}

export interface RunState {
  run: number;
  seed: number;
  /** [k, size, u, coalition hex] in sample-index order. */
  records: [number, number, number, string][];
  /** Per value size: sums and counts per player on both sides, [size][player] (derived, for readers). */
  sizes: number[];
  sums: number[][];
  counts: number[][];
  /** Values of this run alone, [player layer][kvHead]. */
  values: number[][];
}

export interface ProfileFile extends ProfileSettings {
  schema: string;
  modelPath: string;
  createdAt: string;
  updatedAt: string;
  /** Shard this file covers ("i/k"), if any. */
  shard?: string;
  runStates: RunState[];
  /** The estimate: the average of the runs' values, [player layer][kvHead] (see `layers`). */
  values: number[][];
  /** Samples per run evaluated so far. */
  samples: number;
  /** The --samples the profile was run with (absent in older profiles): resuming a converged profile is a no-op
   * unless asked for more than this. */
  maxSamples?: number;
  /** The convergence tolerance the profile was run with (absent in older profiles); merges judge by it. */
  tolerance?: number;
  maeHistory: { samples: number; mae: number }[];
  converged: boolean;
  cost: { seconds: number; prefills: number; prefillTokens: number; decodeRows: number; coalitionEvaluations: number };
}

/** The model layer of each values row: `layers`, or every layer for profiles that predate it. */
export function profileLayers(p: Pick<ProfileSettings, 'shape' | 'layers'>): number[] {
  return p.layers ?? Array.from({ length: p.shape[0] }, (_, l) => l);
}

export function recordsToJson(records: SampleRecord[]): [number, number, number, string][] {
  return [...records].sort((a, b) => a.k - b.k).map((r) => [r.k, r.size, r.u, coalitionToHex(r.coalition)]);
}

export function recordsFromJson(rows: [number, number, number, string][], n: number): SampleRecord[] {
  return rows.map(([k, size, u, hex]) => ({ k, size, u, coalition: coalitionFromHex(hex, n) }));
}

/** Write a profile atomically; see {@link writeFileAtomic} (refuses non-regular targets, cleans its temp file). */
export function writeProfileAtomic(file: string, p: ProfileFile, opts: { what?: string; overwrite?: boolean } = {}): void {
  const what = opts.what ?? '--out';
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) throw new CokvError(`${what} ${file}: folder ${dir} does not exist`, 'file');
  // What cokv writes must read back: a bug that produced NaN or a broken record stops here, not in the file.
  validateProfile(p, `${what} ${file} (about to be written)`);
  writeFileAtomic(file, JSON.stringify(p) + '\n', { what, overwrite: opts.overwrite });
}

export function readProfile(file: string, flag = 'profile'): ProfileFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new CokvError(`${flag} ${file}: cannot read the file`, 'file');
  }
  let p: unknown;
  try {
    p = JSON.parse(text);
  } catch (e) {
    throw new CokvError(`${flag} ${file}: not valid JSON (${(e as Error).message})`, 'format');
  }
  return validateProfile(p, `${flag} ${file}`);
}

/** Most players a profile may have (2^16: far above any real model's layers × KV heads). */
const MAX_PLAYERS = 1 << 16;
/** Bound on a sample's u = U(S) − U(N∖S): utilities are mean log-probabilities, −KL or scores in [0, 1]. */
export const MAX_ABS_UTILITY = 1e6;
const UTILITIES = ['metric', 'loglik', 'kl'];

function isInt(v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number {
  return Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
}

function short(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? 'missing' : s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

/** A [rows][cols] matrix of finite numbers, or the problem. */
function matrixProblem(m: unknown, rows: number, cols: number, name: string): string | undefined {
  if (!Array.isArray(m) || m.length !== rows) return `"${name}" must have ${rows} rows (the shape), got ${Array.isArray(m) ? m.length : short(m)}`;
  for (let i = 0; i < rows; i++) {
    const row: unknown = m[i];
    if (!Array.isArray(row) || row.length !== cols) return `"${name}" row ${i} must have ${cols} values (the shape), got ${Array.isArray(row) ? row.length : short(row)}`;
    for (let j = 0; j < cols; j++) {
      if (typeof row[j] !== 'number' || !Number.isFinite(row[j])) return `"${name}" [${i}][${j}] is not a finite number (${short(row[j])})`;
    }
  }
  return undefined;
}

/**
 * Check every field of a parsed profile against the schema and against each other (shape vs matrices vs model,
 * runs vs runStates, each record's k, size, u and coalition, maeHistory, counts), so a hand-edited or truncated
 * file is refused with one line instead of crashing a reader or being resumed/merged into a corrupt profile.
 * Each record's coalition must be the one its (seed, run, k) draws: records cannot be forged one by one.
 */
export function validateProfile(raw: unknown, where: string): ProfileFile {
  const bad = (problem: string): never => {
    throw new CokvError(`${where}: ${problem}`, 'format');
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) bad('expected a JSON object');
  const p = raw as Record<string, unknown>;
  if (p.schema !== PROFILE_SCHEMA) bad(`not a cokv profile (schema ${String(p.schema)}, expected ${PROFILE_SCHEMA})`);
  if (!Array.isArray(p.runStates) || !Array.isArray(p.values)) bad('profile is missing runStates or values');
  const fpWhy = fingerprintProblem(p.model, false);
  if (fpWhy) bad(fpWhy);
  const model = p.model as ModelFingerprint;
  const shape = p.shape;
  if (!Array.isArray(shape) || shape.length !== 2 || !isInt(shape[0], 1) || !isInt(shape[1], 1)) bad(`"shape" must be [layers, kvHeads] of positive integers, got ${short(shape)}`);
  const [P, G] = shape as [number, number];
  const n = P * G;
  if (n > MAX_PLAYERS) bad(`"shape" ${P}×${G} is ${n} players, more than ${MAX_PLAYERS}`);
  if (G !== model.kvHeads || P > model.layers) bad(`"shape" ${P}×${G} does not fit its model (${model.layers} layers × ${model.kvHeads} KV heads)`);
  if (p.layers !== undefined) {
    const l = p.layers;
    if (!Array.isArray(l) || l.length !== P || !l.every((x, i) => isInt(x, 0, model.layers - 1) && (i === 0 || x > (l[i - 1] as number)))) {
      bad(`"layers" must list the ascending model layer (< ${model.layers}) of each of the ${P} rows`);
    }
  } else if (P !== model.layers) {
    bad(`"shape" has ${P} rows but no "layers" says which of the model's ${model.layers} layers they are`);
  }
  if (!isInt(p.window, 1)) bad(`"window" must be a positive integer, got ${short(p.window)}`);
  const sizes = p.sizes;
  // Order matters (round-robin draws sizes[k mod |H|]), so only distinctness is required.
  if (!Array.isArray(sizes) || sizes.length === 0 || !sizes.every((j) => isInt(j, 1, n - 1)) || new Set(sizes).size !== sizes.length) {
    bad(`"sizes" must be distinct coalition sizes in [1, ${n - 1}], got ${short(sizes)}`);
  }
  if (p.sizeOrder !== 'round-robin' && p.sizeOrder !== 'random') bad(`"sizeOrder" must be round-robin or random, got ${short(p.sizeOrder)}`);
  if (typeof p.sSideOnly !== 'boolean') bad(`"sSideOnly" must be true or false, got ${short(p.sSideOnly)}`);
  if (!UTILITIES.includes(p.utility as string)) bad(`"utility" must be ${UTILITIES.join(', ')}, got ${short(p.utility)}`);
  for (const k of ['task', 'dataFile', 'dataHash', 'modelPath', 'createdAt', 'updatedAt'] as const) {
    if (typeof p[k] !== 'string') bad(`"${k}" must be a string, got ${short(p[k])}`);
  }
  if (!isInt(p.maxNew, 1)) bad(`"maxNew" must be a positive integer, got ${short(p.maxNew)}`);
  if (!Array.isArray(p.sampleIds) || p.sampleIds.length === 0 || !p.sampleIds.every((x) => typeof x === 'string')) bad('"sampleIds" must be a list of sample ids');
  if (!isInt(p.seed, 0)) bad(`"seed" must be a non-negative integer, got ${short(p.seed)}`);
  if (!isInt(p.runs, 1, 8)) bad(`"runs" must be an integer in [1, 8], got ${short(p.runs)}`);
  if (p.maxSamples !== undefined && !isInt(p.maxSamples, 1)) bad(`"maxSamples" must be a positive integer, got ${short(p.maxSamples)}`);
  if (p.tolerance !== undefined && !(typeof p.tolerance === 'number' && Number.isFinite(p.tolerance) && p.tolerance >= 0)) {
    bad(`"tolerance" must be a finite number ≥ 0, got ${short(p.tolerance)}`);
  }
  let shard = { index: 0, count: 1 };
  if (p.shard !== undefined) {
    const m = typeof p.shard === 'string' ? /^(\d+)\/(\d+)$/.exec(p.shard) : null;
    if (!m || Number(m[2]) < 2 || Number(m[1]) >= Number(m[2])) bad(`"shard" must be "i/k" with 0 ≤ i < k and k ≥ 2, got ${short(p.shard)}`);
    shard = { index: Number(m![1]), count: Number(m![2]) };
  }
  const runs = p.runs as number;
  const runStates = p.runStates as unknown[];
  if (runStates.length !== runs) bad(`"runs" is ${runs} but there are ${runStates.length} runStates`);
  const hexLen = Math.ceil(n / 4);
  const lastBits = n % 4 === 0 ? 0xf : (1 << (n % 4)) - 1;
  const draw = { n, sizes: sizes as number[], seed: p.seed as number, sizeOrder: p.sizeOrder as 'round-robin' | 'random' };
  let perRun = -1;
  runStates.forEach((rsRaw, r) => {
    const at = `runStates[${r}]`;
    if (!rsRaw || typeof rsRaw !== 'object' || Array.isArray(rsRaw)) bad(`${at} must be an object`);
    const rs = rsRaw as Record<string, unknown>;
    if (rs.run !== r) bad(`${at}.run is ${short(rs.run)}, expected ${r}`);
    if (rs.seed !== p.seed) bad(`${at}.seed is ${short(rs.seed)}, the profile's seed is ${String(p.seed)}`);
    if (!Array.isArray(rs.records)) bad(`${at} has no "records" list`);
    const records = rs.records as unknown[];
    if (perRun >= 0 && records.length !== perRun) bad(`run ${r} has ${records.length} records, run 0 has ${perRun} (truncated or edited)`);
    perRun = records.length;
    records.forEach((recRaw, j) => {
      const rat = `record ${j} of run ${r}`;
      if (!Array.isArray(recRaw) || recRaw.length !== 4) bad(`${rat} must be [k, size, u, coalition hex], got ${short(recRaw)}`);
      const [k, size, u, hex] = recRaw as unknown[];
      const wantK = shard.index + j * shard.count;
      if (k !== wantK) {
        bad(`${rat}: sample index k is ${short(k)}, expected ${wantK} (records run k = ${shard.index}, ${shard.index + shard.count}, … in order${shard.count > 1 ? ` for shard ${shard.index}/${shard.count}` : ''})`);
      }
      if (!isInt(size, 1, n - 1) || !(sizes as number[]).includes(size)) bad(`${rat}: size ${short(size)} is not one of the sizes ${(sizes as number[]).join(',')}`);
      if (typeof u !== 'number' || !Number.isFinite(u) || Math.abs(u) > MAX_ABS_UTILITY) bad(`${rat}: u ${short(u)} is not a finite number within ±${MAX_ABS_UTILITY}`);
      if (typeof hex !== 'string' || hex.length !== hexLen || !/^[0-9a-f]*$/.test(hex) || (parseInt(hex[hexLen - 1], 16) & ~lastBits) !== 0) {
        bad(`${rat}: coalition ${short(hex)} must be ${hexLen} lowercase hex digits for ${n} players`);
      }
      const d = drawCoalition({ ...draw, run: r }, k as number);
      if (d.size !== size || coalitionToHex(d.coalition) !== hex) bad(`${rat}: coalition ${hex as string} (size ${size as number}) is not the one sample ${k as number} of run ${r} draws (edited?)`);
    });
    for (const f of ['sizes', 'sums', 'counts'] as const) if (!Array.isArray(rs[f])) bad(`${at}.${f} must be a list`);
    const mw = matrixProblem(rs.values, P, G, `${at}.values`);
    if (mw) bad(mw);
  });
  const mv = matrixProblem(p.values, P, G, 'values');
  if (mv) bad(mv);
  if (p.samples !== Math.max(0, perRun)) bad(`"samples" is ${short(p.samples)} but each run has ${Math.max(0, perRun)} records`);
  const mh = p.maeHistory;
  if (!Array.isArray(mh)) bad(`"maeHistory" must be a list, got ${short(mh)}`);
  (mh as unknown[]).forEach((e, i) => {
    const o = e as Record<string, unknown> | null;
    const prev = i > 0 ? ((mh as Record<string, unknown>[])[i - 1].samples as number) : 0;
    if (!o || typeof o !== 'object' || !isInt(o.samples, prev + 1, p.samples as number) || typeof o.mae !== 'number' || !Number.isFinite(o.mae) || o.mae < 0) {
      bad(`maeHistory[${i}] must be { samples: ascending, ≤ ${String(p.samples)}; mae: finite ≥ 0 }, got ${short(e)}`);
    }
  });
  if (typeof p.converged !== 'boolean') bad(`"converged" must be true or false, got ${short(p.converged)}`);
  if (p.converged && shard.count > 1) bad('a shard cannot be "converged" (only a whole profile is)');
  if (p.cost !== undefined) {
    const c = p.cost as Record<string, unknown> | null;
    if (!c || typeof c !== 'object' || Array.isArray(c)) bad(`"cost" must be an object, got ${short(p.cost)}`);
    for (const k of ['seconds', 'prefills', 'prefillTokens', 'decodeRows', 'coalitionEvaluations']) {
      const v = c![k];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) bad(`"cost.${k}" must be a finite number ≥ 0, got ${short(v)}`);
    }
  }
  return p as unknown as ProfileFile;
}

/** Which settings differ between two profiles (for resume and merge). */
export function settingsMismatch(a: ProfileSettings, b: ProfileSettings): string | undefined {
  const keys: (keyof ProfileSettings)[] = [
    'model', 'shape', 'window', 'sizes', 'sizeOrder', 'sSideOnly', 'utility', 'task', 'maxNew', 'dataHash', 'sampleIds', 'seed', 'runs',
  ];
  const fp = fingerprintMismatch(a.model, b.model) ?? (a.model.weights !== b.model.weights
    ? `model weights differ (${a.model.weights ?? 'none'} vs ${b.model.weights ?? 'none: made before profiles were bound to the weights'})` : undefined);
  if (fp) return `model differs (${fp})`;
  for (const k of keys) {
    if (k === 'model') continue;
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return `${k} differs (${JSON.stringify(a[k]).slice(0, 80)} vs ${JSON.stringify(b[k]).slice(0, 80)})`;
  }
  // Profiles without `layers` count every layer: the same players as an explicit full list.
  if (JSON.stringify(profileLayers(a)) !== JSON.stringify(profileLayers(b))) return `layers differs (${profileLayers(a).join(',')} vs ${profileLayers(b).join(',')})`;
  return undefined;
}
