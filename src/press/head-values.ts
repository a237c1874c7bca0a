/**
 * Reading per-head value files: CoKV profiles (the profiler's JSON, or the minimal
 * `{ "model", "shape": [layers, kvHeads], "scores": [[…]] }`, optionally with "layers": the model layer of each row)
 * and HeadKV score files (same shape format with [layers, heads] or [layers, kvHeads], or HeadKV's own
 * `{ "layer-head": [values…] }`). Both return values for the model's full-attention layers only: those are the
 * layers presses budget.
 */
import fs from 'node:fs';
import { CokvError } from '../errors.js';
import { fullAttentionLayers, type ModelConfig } from '../model/config.js';
import { FINGERPRINT_KEYS, fingerprintMismatch, fingerprintProblem, modelFingerprint, type ModelFingerprint } from '../model/fingerprint.js';

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

/**
 * `heads` = the second dimension a "shape" field may give (KV heads for profiles; query or KV heads for HeadKV).
 * A "model" fingerprint, when present, must be complete and match the loaded model, weights included (the
 * weights hash is what tells two models of one shape apart). cokv's own profiles must carry one; only the
 * hand-written minimal formats (no "schema") may omit it. `requireWeights` (profiles): a fingerprint without the
 * weights hash is refused too; HeadKV score files (retrieval heads, a coarser signal) are compared on what they hold.
 */
function checkModel(obj: Record<string, unknown>, c: ModelConfig, where: string, heads: number[], requireWeights: boolean): void {
  const model = obj.model;
  if (model !== undefined || obj.schema !== undefined || obj.runStates !== undefined) {
    const fp = modelFingerprint(c);
    const got = model as ModelFingerprint;
    // A key that is there and differs says more than "incomplete": report it first.
    if (got && typeof got === 'object' && !Array.isArray(got)) {
      const k = FINGERPRINT_KEYS.find((key) => got[key] !== undefined && got[key] !== fp[key]);
      if (k) throw new CokvError(`${where}: made for another model (${k} is ${String(got[k])}, the loaded model has ${String(fp[k])})`, 'format');
    }
    const problem = fingerprintProblem(model, false);
    if (problem) throw new CokvError(`${where}: ${problem}`, 'format');
    if (requireWeights && fp.weights !== undefined && got.weights === undefined) {
      throw new CokvError(`${where}: has no weights fingerprint ("model.weights"), so it cannot be checked against this model's weights (made before profiles were bound to the weights, or edited): profile the model again`, 'format');
    }
    const why = fingerprintMismatch(fp, got);
    if (why) throw new CokvError(`${where}: made for another model (${why})`, 'format');
  }
  const shape = obj.shape;
  if (shape !== undefined) {
    if (!Array.isArray(shape) || shape.length !== 2) throw new CokvError(`${where}: "shape" must be [layers, heads]`, 'format');
    const full = fullAttentionLayers(c).length;
    if ((shape[0] !== c.numLayers && shape[0] !== full) || !heads.includes(shape[1])) {
      throw new CokvError(`${where}: made for another model (shape ${shape[0]}×${shape[1]}, the loaded model has ${modelRows(c)} × ${c.numKvHeads} KV heads)`, 'format');
    }
    const m = obj.values ?? obj.scores;
    if (Array.isArray(m) && m.length !== shape[0]) throw new CokvError(`${where}: "shape" says ${shape[0]} rows, the values have ${m.length}`, 'format');
  }
}

function modelRows(c: ModelConfig): string {
  const full = fullAttentionLayers(c).length;
  return full === c.numLayers ? `${c.numLayers} layers` : `${c.numLayers} layers (${full} full-attention)`;
}

/**
 * The model layer of each of a value matrix's `rows` rows: the file's "layers" field (how profiles record which
 * layers' KV heads are the players); without it, every layer when there is one row per layer, else the
 * full-attention layers when there is one row for each of them.
 */
function rowLayers(o: Record<string, unknown>, rows: number, c: ModelConfig, where: string): number[] {
  const full = fullAttentionLayers(c);
  const given = o.layers;
  if (given !== undefined) {
    const ok = Array.isArray(given) && given.length === rows &&
      given.every((l, i) => Number.isInteger(l) && l >= 0 && (i === 0 || l > given[i - 1]));
    if (!ok) throw new CokvError(`${where}: "layers" must list the ascending model layer of each of the ${rows} rows`, 'format');
    if ((given as number[]).some((l) => l >= c.numLayers)) throw new CokvError(`${where}: made for another model (layer ${Math.max(...(given as number[]))}, the loaded model has ${c.numLayers} layers)`, 'format');
    return given as number[];
  }
  if (rows === c.numLayers) return Array.from({ length: rows }, (_, l) => l);
  if (rows === full.length) return full;
  throw new CokvError(`${where}: made for another model (${rows} layers of values, the loaded model has ${modelRows(c)})`, 'format');
}

/**
 * CoKV values, flat row-major over the players: [player layer][kvHead] for the model's full-attention layers in
 * order. Profiles record their player layers in "layers"; older ones (and minimal files) without it hold every
 * layer, which is the same set for models without sliding layers.
 */
export function readProfileValues(file: string, c: ModelConfig): number[] {
  const where = `profile ${file}`;
  const obj = readJson(file, 'profile');
  if (!obj || typeof obj !== 'object') throw new CokvError(`${where}: expected a JSON object`, 'format');
  const o = obj as Record<string, unknown>;
  checkModel(o, c, where, [c.numKvHeads], true);
  const m = o.values ?? o.scores;
  if (m === undefined) throw new CokvError(`${where}: no "values" or "scores" field`, 'format');
  if (!Array.isArray(m)) throw new CokvError(`${where}: "values" must be a [layer][kvHead] matrix`, 'format');
  const layers = rowLayers(o, m.length, c, where);
  const full = fullAttentionLayers(c);
  if (JSON.stringify(layers) !== JSON.stringify(full)) {
    throw new CokvError(`${where}: made for other players (values for layers ${layers.join(',')}; the loaded model's players are the KV heads of its full-attention layers ${full.join(',') || '(none)'}: profile it again)`, 'format');
  }
  return checkMatrix(m, m.length, [c.numKvHeads], where).flat();
}

/**
 * HeadKV scores of the full-attention layers, [full layer][head] with head = query heads or KV heads. Files may
 * hold every layer (`cokv head-scores` writes them all; the full-attention rows are taken) or just those.
 */
export function readHeadScores(file: string, c: ModelConfig): number[][] {
  const where = `headScores ${file}`;
  const obj = readJson(file, 'headScores');
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new CokvError(`${where}: expected a JSON object`, 'format');
  const o = obj as Record<string, unknown>;
  const full = fullAttentionLayers(c);
  const pick = (rows: number[][], layers: number[]): number[][] => full.map((l) => {
    const r = layers.indexOf(l);
    if (r < 0) throw new CokvError(`${where}: no scores for full-attention layer ${l}`, 'format');
    return rows[r];
  });
  if (o.scores !== undefined) {
    checkModel(o, c, where, [c.numHeads, c.numKvHeads], false);
    if (!Array.isArray(o.scores)) throw new CokvError(`${where}: "scores" must be a [layer][head] matrix`, 'format');
    const layers = rowLayers(o, o.scores.length, c, where);
    return pick(checkMatrix(o.scores, layers.length, [c.numHeads, c.numKvHeads], where), layers);
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
  return pick(m, Array.from({ length: c.numLayers }, (_, l) => l));
}
