/**
 * HeadKV-R2 ("retrieval-reasoning") head scores, computed as FYYFU/HeadKV's
 * `Important_Head/retrieval_head_detection_r2.py` computes them, on cokv's model API:
 *
 * 1. A grid of prompts: context lengths × needle depths × needles (retrieval and reasoning needles; see
 *    `head-scores/needle-prompts.ts` for the needles and what differs from the official data).
 * 2. Prefill every prompt token but the last, then generate greedily from the last one (not teacher-forced), at most
 *    as many tokens as the reference answer has, stopping at EOS or a newline token (the official `decode`).
 * 3. At every generated token, for every layer and query head, the last row's attention is read; of its top-k
 *    positions with k = |answer span|, each one inside the span adds attention weight / |span| (mass, not a hit
 *    count, and no check of the token being copied: the official `retrieval_calculate`).
 * 4. A prompt's per-head sums count only when the answer passes the filter, qa F1 (LongBench's `qa_f1_score`) > 0.5.
 * 5. A head's score is the mean of its kept sums; the scores are normalised to sum 1 (HeadKV's loader,
 *    `headkv/snapkv_utils.py`: mean, divide by the sum; temperature 1).
 *
 * Scores are per query head, [layer][head], the format `--head-scores` reads.
 */
import type { CokvModel } from '../engine.js';
import { qaF1Score } from '../eval/metrics.js';
import { probeGreedyDecode } from './head-scores/decode-probe.js';
import { gridPrompts } from './head-scores/grid.js';
import { makeNeedles, type NeedleKind, type NeedleSpec } from './head-scores/needle-prompts.js';

/** The official filter: a prompt's scores count when the answer's qa F1 exceeds this. */
export const R2_F1_THRESHOLD = 0.5;

export interface R2Options {
  /** Haystack text (the official code uses Paul Graham essays). */
  haystack: string;
  /** Prompt lengths in tokens (the official grid: 5 lengths from 0 to 10000). */
  lengths: number[];
  /** Needle depths per length, spread over 0–100 % (the official grid: 10). */
  depths: number;
  /** Needles of each kind (retrieval, reasoning) drawn from `seed` (the official file has 2 reasoning needles). */
  needlesPerKind: number;
  seed: number;
  /** Needles to use instead of the generated ones (tests; a needle the model cannot answer shows the filter). */
  needles?: NeedleSpec[];
  /** F1 filter threshold (default {@link R2_F1_THRESHOLD}). */
  f1Threshold?: number;
}

/** One prompt of the grid and what the model answered. */
export interface R2Sample {
  kind: NeedleKind;
  length: number;
  depthPercent: number;
  answer: string;
  response: string;
  f1: number;
  /** True when the sample passed the F1 filter and its per-head sums entered the scores. */
  kept: boolean;
}

export interface R2Result {
  /** Normalised scores (sum 1), [layer][query head]. */
  scores: number[][];
  /** Mean kept per-head sums before normalisation, [layer][query head]. */
  rawMeans: number[][];
  samples: R2Sample[];
}

/**
 * Per-(layer, query head) sum over the generated tokens of the top-k attention mass inside `span`, k = |span|
 * (one prompt's `retrieval_score` in the official script). Exposed for tests.
 */
export function needleMassRow(probs: Float64Array, positions: Int32Array, span: [number, number]): number {
  const k = span[1] - span[0];
  // Indices of the k largest weights; ties go to the earlier entry (torch.topk's order is unspecified).
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  let m = 0;
  for (let r = 0; r < Math.min(k, order.length); r++) {
    const j = order[r];
    if (positions[j] >= span[0] && positions[j] < span[1]) m += probs[j] / k;
  }
  return m;
}

/** HeadKV-R2 scores of every layer's query heads (see the module comment). Throws when no answer passes the filter. */
export function headkvR2Scores(model: CokvModel, o: R2Options): R2Result {
  const c = model.config;
  const tok = model.tokenizer;
  const hayIds = tok.encode(o.haystack, { addSpecial: false });
  const needles = o.needles ?? makeNeedles(o.seed, o.needlesPerKind);
  const threshold = o.f1Threshold ?? R2_F1_THRESHOLD;
  const stopIds = new Set([...model.eosIds, ...model.newlineIds()]);
  const kept = Array.from({ length: c.numLayers }, () => new Float64Array(c.numHeads));
  const samples: R2Sample[] = [];
  let nKept = 0;
  for (const p of gridPrompts(model, hayIds, o.lengths, o.depths, needles)) {
    const needle = p.needle;
    const sums = Array.from({ length: c.numLayers }, () => new Float64Array(c.numHeads));
    const out = probeGreedyDecode(model, {
      ids: p.ids, maxNew: p.answerTokens, stopIds, wantOutput: false,
      onRow: (_step, row) => { sums[row.layer][row.head] += needleMassRow(row.probs, row.positions, p.span); },
    });
    const response = tok.decode(out.filter((id) => !stopIds.has(id))).trim();
    const f1 = qaF1Score(response, needle.answer);
    const pass = f1 > threshold;
    if (pass) {
      nKept++;
      for (let l = 0; l < c.numLayers; l++) for (let h = 0; h < c.numHeads; h++) kept[l][h] += sums[l][h];
    }
    samples.push({ kind: needle.kind, length: p.length, depthPercent: p.depthPercent, answer: needle.answer, response, f1, kept: pass });
  }
  if (nKept === 0) throw new Error(`no answer passed the F1 > ${threshold} filter (0 of ${samples.length} prompts): the model does not solve these needles, so there is nothing to score`);
  const rawMeans = kept.map((row) => Array.from(row, (v) => v / nKept));
  const total = rawMeans.flat().reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new Error(`the ${nKept} answered prompts put no attention on their needles: every score is 0`);
  return { scores: rawMeans.map((row) => row.map((v) => v / total)), rawMeans, samples };
}
