/**
 * Attention-entropy head scores: 1 − H(p)/ln(n), the attention row's entropy normalised by that of a uniform row
 * over the n visible entries, averaged over the generated tokens of the needle prompt grid (`grid.ts`). Low entropy
 * (a focused head) gives a score near 1; a head that spreads its attention evenly scores near 0. Normalising by
 * ln(n) keeps rows of different prompt lengths comparable. Scores are per query head, [layer][head].
 */
import type { CokvModel } from '../../engine.js';
import { meanOverGrid, type GridOptions } from './grid.js';

/** 1 − H(p)/ln(n) of one attention row (1 for a one-entry row). */
export function attentionFocus(probs: ArrayLike<number>): number {
  const n = probs.length;
  if (n < 2) return 1;
  let h = 0;
  for (let j = 0; j < n; j++) if (probs[j] > 0) h -= probs[j] * Math.log(probs[j]);
  return 1 - h / Math.log(n);
}

export function entropyHeadScores(model: CokvModel, o: GridOptions): { scores: number[][]; rows: number } {
  const r = meanOverGrid(model, o, (row) => attentionFocus(row.probs), false);
  return { scores: r.means, rows: r.rows };
}
