/**
 * Per-(layer, query head) scores for the headkv press as a library function (what `cokv head-scores` does): one of
 * four methods, written as the `--head-scores` file `{ model, shape: [layers, heads], method, scores, … }`:
 * - `r2` (default): HeadKV's retrieval-reasoning score as the official code computes it (src/press/headkv-r2.ts);
 * - `copy`: the needle-copy retrieval score cokv used before (teacher-forced argmax; src/press/headkv-scorer.ts);
 * - `output-norm`, `entropy`: generation-time attention statistics on the R2 prompt grid (src/press/head-scores/).
 * Errors name the command-line flag they are about (`--haystack …`, `--length: …`, `--out …`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadModel } from '../engine.js';
import { CokvError } from '../errors.js';
import { modelFingerprint } from '../model/fingerprint.js';
import { entropyHeadScores } from '../press/head-scores/entropy.js';
import type { GridOptions } from '../press/head-scores/grid.js';
import { outputNormHeadScores } from '../press/head-scores/output-norm.js';
import { headkvR2Scores, R2_F1_THRESHOLD } from '../press/headkv-r2.js';
import { retrievalHeadScores } from '../press/headkv-scorer.js';

/** The scoring methods, in the order of the help. */
export const HEAD_SCORE_METHODS = ['r2', 'copy', 'output-norm', 'entropy'] as const;
export type HeadScoreMethod = (typeof HEAD_SCORE_METHODS)[number];

/** What each method's file says in its `methodDetail` field. */
const DETAIL: Record<HeadScoreMethod, string> = {
  r2: 'HeadKV-R2: top-k attention mass on the answer sentence during greedy generation, retrieval and reasoning needles, prompts kept when qa F1 > 0.5, mean per query head, normalised to sum 1',
  copy: 'retrieval (needle copy, teacher-forced): fraction of repeat rows whose attention argmax is the next needle token',
  'output-norm': 'mean L2 norm of the attention output (before the output projection) over the generated tokens of the needle grid',
  entropy: 'mean 1 - H(attention)/ln(visible entries) over the generated tokens of the needle grid (1 = focused)',
};

export interface HeadScoresOptions {
  /** Model file or folder. */
  model: string;
  /** A text file, or a folder of .txt files, to cut prompts from. */
  haystack: string;
  method: HeadScoreMethod;
  /**
   * Prompt tokens per sample: copy one length (default 512); the grid methods a list of lengths (default 512, 1024).
   * Each must be in [32, context − 1].
   */
  lengths?: number[];
  /** Grid methods: needle depths per length and needle (default 10); copy: needle samples (default 8). */
  samples?: number;
  /** Grid methods: retrieval needles and reasoning needles each (default 2). */
  needlesPerKind?: number;
  /** Copy: needle length in tokens (default 16). */
  needleTokens?: number;
  seed: number;
  /** Output JSON. */
  out: string;
}

/** What was written: the file's shape and a few words on what the scores were computed from. */
export interface HeadScoresResult {
  method: HeadScoreMethod;
  layers: number;
  heads: number;
  /** e.g. `512-token prompts`, `4 of 8 prompts answered with F1 > 0.5`. */
  note: string;
  out: string;
}

/** The text of a haystack file, or of a folder's .txt files in name order. */
export function readHaystackText(dir: string): string {
  let text = '';
  try {
    const st = fs.statSync(dir);
    const files = st.isDirectory() ? fs.readdirSync(dir).filter((x) => x.endsWith('.txt')).sort().map((x) => path.join(dir, x)) : [dir];
    text = files.map((x) => fs.readFileSync(x, 'utf8')).join('\n\n');
  } catch {
    throw new CokvError(`--haystack ${dir}: cannot read it`, 'file');
  }
  if (!text.trim()) throw new CokvError(`--haystack ${dir}: no text found`, 'file');
  return text;
}

/** `--length: …` unless every length is in [32, context − 1]. */
function checkLength(length: number, contextLength: number): number {
  if (length < 32) throw new CokvError(`--length: ${length} is below the minimum 32`, 'flag');
  if (length > contextLength - 1) throw new CokvError(`--length: ${length} is above the maximum ${contextLength - 1}`, 'flag');
  return length;
}

/** Compute the head scores of `o.model` by `o.method` and write them to `o.out`. */
export async function computeHeadScores(o: HeadScoresOptions): Promise<HeadScoresResult> {
  const { method, seed } = o;
  if (method === 'copy' && o.needlesPerKind !== undefined) throw new CokvError('--needles-per-kind: applies to --method r2, output-norm and entropy, not copy', 'flag');
  if (method !== 'copy' && o.needleTokens !== undefined) throw new CokvError(`--needle: applies to --method copy only (--method ${method} uses --needles-per-kind)`, 'flag');
  const text = readHaystackText(o.haystack);
  const model = await loadModel(o.model);
  const c = model.config;
  const header = { model: modelFingerprint(c), shape: [c.numLayers, c.numHeads], method, methodDetail: DETAIL[method] };
  let body: Record<string, unknown>;
  let note: string;
  try {
    if (method === 'copy') {
      if (o.lengths && o.lengths.length !== 1) throw new CokvError('--length: --method copy takes one length', 'flag');
      const length = checkLength(o.lengths?.[0] ?? 512, c.contextLength);
      const scores = retrievalHeadScores(model, { haystack: text, length, seed, samples: o.samples ?? 8, needleTokens: o.needleTokens ?? 16 });
      body = { scores };
      note = `${length}-token prompts`;
    } else {
      const grid: GridOptions = {
        haystack: text, seed,
        lengths: (o.lengths ?? [512, 1024]).map((L) => checkLength(L, c.contextLength)),
        depths: o.samples ?? 10,
        needlesPerKind: o.needlesPerKind ?? 2,
      };
      const gridInfo = { lengths: grid.lengths, depths: grid.depths, needlesPerKind: grid.needlesPerKind, seed };
      if (method === 'r2') {
        const r = headkvR2Scores(model, grid);
        const kept = r.samples.filter((s) => s.kept).length;
        body = { scores: r.scores, rawMeans: r.rawMeans, grid: gridInfo, f1Threshold: R2_F1_THRESHOLD, kept, prompts: r.samples.length, samples: r.samples };
        note = `${kept} of ${r.samples.length} prompts answered with F1 > ${R2_F1_THRESHOLD}`;
      } else {
        const r = method === 'output-norm' ? outputNormHeadScores(model, grid) : entropyHeadScores(model, grid);
        body = { scores: r.scores, grid: gridInfo, rows: r.rows };
        note = `${r.rows} generated tokens`;
      }
    }
  } catch (e) {
    if (e instanceof CokvError) throw e;
    throw new CokvError(`head-scores: ${(e as Error).message}`, 'flag');
  }
  try {
    fs.writeFileSync(o.out, JSON.stringify({ ...header, ...body }) + '\n');
  } catch (e) {
    throw new CokvError(`--out ${o.out}: cannot write it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'file');
  }
  return { method, layers: c.numLayers, heads: c.numHeads, note, out: o.out };
}

/** The line `cokv head-scores` prints when done. */
export function headScoresSummary(r: HeadScoresResult): string {
  return `${r.method} head scores of ${r.layers}×${r.heads} query heads (${r.note}) → ${r.out}`;
}
