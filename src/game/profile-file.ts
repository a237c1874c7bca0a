/**
 * The profile file: everything needed to reuse, resume, merge and audit a head-value estimate. Runs store their
 * per-sample records (index, size, u, coalition), from which accumulators and values are recomputed exactly.
 * Written atomically (temp file + rename), so a killed process leaves the previous checkpoint intact.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError } from '../errors.js';
import type { ModelFingerprint } from '../model/fingerprint.js';
import { coalitionFromHex, coalitionToHex } from './players.js';
import type { SampleRecord } from './sliced-shapley.js';
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

export function writeProfileAtomic(file: string, p: ProfileFile): void {
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) throw new CokvError(`--out ${file}: folder ${dir} does not exist`, 'file');
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(p) + '\n');
  fs.renameSync(tmp, file);
}

export function readProfile(file: string, flag = 'profile'): ProfileFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new CokvError(`${flag} ${file}: cannot read the file`, 'file');
  }
  let p: ProfileFile;
  try {
    p = JSON.parse(text) as ProfileFile;
  } catch (e) {
    throw new CokvError(`${flag} ${file}: not valid JSON (${(e as Error).message})`, 'format');
  }
  if (p.schema !== PROFILE_SCHEMA) throw new CokvError(`${flag} ${file}: not a cokv profile (schema ${String(p.schema)}, expected ${PROFILE_SCHEMA})`, 'format');
  if (!Array.isArray(p.runStates) || !Array.isArray(p.values)) throw new CokvError(`${flag} ${file}: profile is missing runStates or values`, 'format');
  if (!Array.isArray(p.shape) || p.shape.length !== 2) throw new CokvError(`${flag} ${file}: profile has no [layers, kvHeads] shape`, 'format');
  if (p.layers !== undefined) {
    const l = p.layers;
    if (!Array.isArray(l) || l.length !== p.shape[0] || !l.every((x, i) => Number.isInteger(x) && x >= 0 && (i === 0 || x > l[i - 1]))) {
      throw new CokvError(`${flag} ${file}: "layers" must list the ascending model layer of each of the ${p.shape[0]} rows`, 'format');
    }
  }
  return p;
}

/** Which settings differ between two profiles (for resume and merge). */
export function settingsMismatch(a: ProfileSettings, b: ProfileSettings): string | undefined {
  const keys: (keyof ProfileSettings)[] = [
    'model', 'shape', 'window', 'sizes', 'sizeOrder', 'sSideOnly', 'utility', 'task', 'maxNew', 'dataHash', 'sampleIds', 'seed', 'runs',
  ];
  for (const k of keys) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return `${k} differs (${JSON.stringify(a[k]).slice(0, 80)} vs ${JSON.stringify(b[k]).slice(0, 80)})`;
  }
  // Profiles without `layers` count every layer: the same players as an explicit full list.
  if (JSON.stringify(profileLayers(a)) !== JSON.stringify(profileLayers(b))) return `layers differs (${profileLayers(a).join(',')} vs ${profileLayers(b).join(',')})`;
  return undefined;
}
