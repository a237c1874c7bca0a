/**
 * Output-norm head scores: the mean L2 norm of each query head's attention output Σ_j p_j v_j (before the output
 * projection) over the generated tokens of the needle prompt grid (`grid.ts`). A head whose output is large moves
 * the residual stream more; a near-zero output (an attention sink on a small value) marks a head that can lose
 * its cache. Scores are per query head, [layer][head], the `--head-scores` format.
 */
import type { CokvModel } from '../../engine.js';
import { meanOverGrid, type GridOptions } from './grid.js';

export function outputNormHeadScores(model: CokvModel, o: GridOptions): { scores: number[][]; rows: number } {
  const r = meanOverGrid(model, o, (row) => {
    let s = 0;
    for (const x of row.output) s += x * x;
    return Math.sqrt(s);
  }, true);
  return { scores: r.means, rows: r.rows };
}
