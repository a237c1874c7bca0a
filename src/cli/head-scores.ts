/**
 * `cokv head-scores`: per-(layer, query head) scores for the headkv press, by one of four methods, written as the
 * `--head-scores` file `{ model, shape: [layers, heads], method, scores, … }`:
 * - `r2` (default): HeadKV's retrieval-reasoning score as the official code computes it (src/press/headkv-r2.ts);
 * - `copy`: the needle-copy retrieval score cokv used before (teacher-forced argmax; src/press/headkv-scorer.ts);
 * - `output-norm`, `entropy`: generation-time attention statistics on the R2 prompt grid (src/press/head-scores/).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { loadModel, type CokvModel } from '../engine.js';
import { modelFingerprint } from '../model/fingerprint.js';
import { retrievalHeadScores } from '../press/headkv-scorer.js';
import { headkvR2Scores, R2_F1_THRESHOLD } from '../press/headkv-r2.js';
import { outputNormHeadScores } from '../press/head-scores/output-norm.js';
import { entropyHeadScores } from '../press/head-scores/entropy.js';
import type { GridOptions } from '../press/head-scores/grid.js';
import { numberFlag } from './util.js';

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

interface Flags {
  model: string; haystack: string; method: string; length?: string; samples?: string; needle?: string;
  needlesPerKind?: string; seed: string; out: string;
}

function readHaystack(dir: string): string {
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

/** `--length` of the grid methods: one length or a comma list, each within the model's context. */
function lengthList(value: string, model: CokvModel): number[] {
  const parts = value.split(',');
  if (parts.some((p) => p.trim() === '')) throw new CokvError(`--length: '${value}' must be a length or a comma-separated list of lengths`, 'flag');
  return parts.map((p) => numberFlag('--length', p.trim(), { integer: true, min: 32, max: model.config.contextLength - 1 })!);
}

export function registerHeadScores(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('head-scores')
    .description('compute per-head scores for the headkv press (HeadKV-R2 by default; copy, output-norm, entropy)')
    .requiredOption('--model <path>', 'model file or folder')
    .requiredOption('--haystack <path>', 'a text file, or a folder of .txt files, to cut prompts from')
    .option('--method <m>', `scoring method: ${HEAD_SCORE_METHODS.join(', ')}`, 'r2')
    .option('--length <n>', 'prompt tokens per sample (r2/output-norm/entropy: a comma list is a grid of lengths; default 512,1024; copy: 512)')
    .option('--samples <n>', 'r2/output-norm/entropy: needle depths per length and needle, spread over 0-100% (default 10, as HeadKV); copy: needle samples (default 8)')
    .option('--needles-per-kind <n>', 'r2/output-norm/entropy: retrieval needles and reasoning needles each (default 2, as HeadKV\'s two R2 needles)')
    .option('--needle <n>', 'copy: needle length in tokens (default 16)')
    .option('--seed <s>', 'seed', '1')
    .requiredOption('--out <file>', 'output JSON ({ model, shape: [layers, heads], method, scores })')
    .action((f: Flags) => run(async () => {
      if (!(HEAD_SCORE_METHODS as readonly string[]).includes(f.method)) {
        throw new CokvError(`--method: '${f.method}' is not a head-score method (${HEAD_SCORE_METHODS.join(', ')})`, 'flag');
      }
      const method = f.method as HeadScoreMethod;
      if (method === 'copy' && f.needlesPerKind !== undefined) throw new CokvError('--needles-per-kind: applies to --method r2, output-norm and entropy, not copy', 'flag');
      if (method !== 'copy' && f.needle !== undefined) throw new CokvError(`--needle: applies to --method copy only (--method ${method} uses --needles-per-kind)`, 'flag');
      const seed = numberFlag('--seed', f.seed, { integer: true })!;
      const text = readHaystack(f.haystack);
      const model = await loadModel(f.model);
      const c = model.config;
      const header = { model: modelFingerprint(c), shape: [c.numLayers, c.numHeads], method, methodDetail: DETAIL[method] };
      let body: Record<string, unknown>;
      let note: string;
      try {
        if (method === 'copy') {
          const length = numberFlag('--length', f.length ?? '512', { integer: true, min: 32, max: c.contextLength - 1 })!;
          const scores = retrievalHeadScores(model, {
            haystack: text, length, seed,
            samples: numberFlag('--samples', f.samples ?? '8', { integer: true, min: 1 })!,
            needleTokens: numberFlag('--needle', f.needle ?? '16', { integer: true, min: 2 })!,
          });
          body = { scores };
          note = `${length}-token prompts`;
        } else {
          const grid: GridOptions = {
            haystack: text, seed,
            lengths: lengthList(f.length ?? '512,1024', model),
            depths: numberFlag('--samples', f.samples ?? '10', { integer: true, min: 1 })!,
            needlesPerKind: numberFlag('--needles-per-kind', f.needlesPerKind ?? '2', { integer: true, min: 1 })!,
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
        fs.writeFileSync(f.out, JSON.stringify({ ...header, ...body }) + '\n');
      } catch (e) {
        throw new CokvError(`--out ${f.out}: cannot write it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'file');
      }
      process.stderr.write(`${method} head scores of ${c.numLayers}×${c.numHeads} query heads (${note}) → ${f.out}\n`);
    }));
}
