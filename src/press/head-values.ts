/**
 * Reading per-head value files: CoKV profiles (the profiler's JSON, or the minimal
 * `{ "model", "shape": [layers, kvHeads], "scores": [[…]] }`) and HeadKV score files (same shape format with
 * [layers, heads] or [layers, kvHeads], or HeadKV's own `{ "layer-head": [values…] }`).
 */
import fs from 'node:fs';
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { fingerprintMismatch, modelFingerprint, type ModelFingerprint } from '../model/fingerprint.js';

function readJson(file: string, flag: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new CokvError(`${flag} ${file}: cannot read the file`, 'file');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CokvError(`${flag} ${file}: not valid JSON (${(e as Error).message})`, 'format');
  }
}

function checkMatrix(m: unknown, rows: number, cols: number[], where: string): number[][] {
  if (!Array.isArray(m) || m.length !== rows) throw new CokvError(`${where}: expected ${rows} rows of values`, 'format');
  const width = (m[0] as unknown[])?.length;
  if (!cols.includes(width)) throw new CokvError(`${where}: rows must have ${cols.join(' or ')} values, got ${width}`, 'format');
  return m.map((row, i) => {
    if (!Array.isArray(row) || row.length !== width) throw new CokvError(`${where}: row ${i} has the wrong length`, 'format');
    return row.map((v, j) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new CokvError(`${where}: value [${i}][${j}] is not a finite number`, 'format');
      return v;
    });
  });
}

/** `heads` = the second dimension a "shape" field may give (KV heads for profiles; query or KV heads for HeadKV). */
function checkModel(obj: Record<string, unknown>, c: ModelConfig, where: string, heads: number[]): void {
  const fp = modelFingerprint(c);
  const model = obj.model;
  if (model && typeof model === 'object') {
    const why = fingerprintMismatch(fp, model as Partial<ModelFingerprint>);
    if (why) throw new CokvError(`${where}: made for another model (${why})`, 'format');
  }
  const shape = obj.shape;
  if (shape !== undefined) {
    if (!Array.isArray(shape) || shape.length !== 2) throw new CokvError(`${where}: "shape" must be [layers, heads]`, 'format');
    if (shape[0] !== c.numLayers || !heads.includes(shape[1])) {
      throw new CokvError(`${where}: made for another model (shape ${shape[0]}×${shape[1]}, the loaded model has ${c.numLayers} layers × ${c.numKvHeads} KV heads)`, 'format');
    }
  }
}

/** CoKV values, flat row-major [layer][kvHead]. */
export function readProfileValues(file: string, c: ModelConfig): number[] {
  const where = `--profile ${file}`;
  const obj = readJson(file, '--profile');
  if (!obj || typeof obj !== 'object') throw new CokvError(`${where}: expected a JSON object`, 'format');
  const o = obj as Record<string, unknown>;
  checkModel(o, c, where, [c.numKvHeads]);
  const m = o.values ?? o.scores;
  if (m === undefined) throw new CokvError(`${where}: no "values" or "scores" field`, 'format');
  if (Array.isArray(m) && m.length !== c.numLayers) {
    throw new CokvError(`${where}: made for another model (${m.length} layers of values, the loaded model has ${c.numLayers})`, 'format');
  }
  return checkMatrix(m, c.numLayers, [c.numKvHeads], where).flat();
}

/** HeadKV scores, [layer][head] with head = query heads or KV heads. */
export function readHeadScores(file: string, c: ModelConfig): number[][] {
  const where = `--head-scores ${file}`;
  const obj = readJson(file, '--head-scores');
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new CokvError(`${where}: expected a JSON object`, 'format');
  const o = obj as Record<string, unknown>;
  if (o.scores !== undefined) {
    checkModel(o, c, where, [c.numHeads, c.numKvHeads]);
    return checkMatrix(o.scores, c.numLayers, [c.numHeads, c.numKvHeads], where);
  }
  // HeadKV's own format: "layer-head" → list of per-sample scores.
  const m = Array.from({ length: c.numLayers }, () => new Array<number>(c.numHeads).fill(0));
  let seen = 0;
  for (const [k, v] of Object.entries(o)) {
    const mm = /^(\d+)-(\d+)$/.exec(k);
    if (!mm) throw new CokvError(`${where}: unexpected key '${k}' (expected "scores" or "layer-head" keys)`, 'format');
    const l = Number(mm[1]), h = Number(mm[2]);
    if (l >= c.numLayers || h >= c.numHeads) throw new CokvError(`${where}: made for another model (head ${k} does not exist)`, 'format');
    const vals = Array.isArray(v) ? v : [v];
    if (!vals.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new CokvError(`${where}: values of '${k}' are not numbers`, 'format');
    m[l][h] = vals.length ? (vals as number[]).reduce((a, b) => a + b, 0) / vals.length : 0;
    seen++;
  }
  if (seen === 0) throw new CokvError(`${where}: no head scores found`, 'format');
  return m;
}
