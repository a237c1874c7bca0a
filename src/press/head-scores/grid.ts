/**
 * The prompt grid shared by the generation-time head scores (output norm, attention entropy): the same needle
 * prompts as HeadKV-R2 (lengths × depths × needles, cut from the haystack), each generated greedily with every
 * query head's attention row seen at every generated token. These scores need no right answer, so every prompt
 * counts (no F1 filter).
 */
import type { CokvModel } from '../../engine.js';
import { probeGreedyDecode, type AttentionRowView } from './decode-probe.js';
import { buildNeedlePrompt, depthGrid, makeNeedles, type NeedlePrompt, type NeedleSpec } from './needle-prompts.js';

export interface GridOptions {
  haystack: string;
  lengths: number[];
  depths: number;
  needlesPerKind: number;
  seed: number;
}

/**
 * The grid's prompts in order: for each length, each depth, each needle. Each prompt cuts the haystack at its own
 * place (a stride of 7919 tokens, wrapping), so the grid does not reuse one passage.
 */
export function* gridPrompts(
  model: CokvModel, haystackIds: readonly number[], lengths: readonly number[], depths: number, needles: readonly NeedleSpec[],
): Generator<NeedlePrompt> {
  let index = 0;
  for (const length of lengths) {
    for (const depth of depthGrid(depths)) {
      for (const needle of needles) {
        yield buildNeedlePrompt(model, haystackIds, needle, length, depth, (index++ * 7919) % Math.max(1, haystackIds.length));
      }
    }
  }
}

/**
 * Mean over every generated token of every grid prompt of `stat(row)`, per (layer, query head). Returns the
 * [layer][head] means and the number of rows averaged per head.
 */
export function meanOverGrid(
  model: CokvModel, o: GridOptions, stat: (row: AttentionRowView) => number, wantOutput: boolean,
): { means: number[][]; rows: number } {
  const c = model.config;
  const hayIds = model.tokenizer.encode(o.haystack, { addSpecial: false });
  const stopIds = new Set([...model.eosIds, ...model.newlineIds()]);
  const sums = Array.from({ length: c.numLayers }, () => new Float64Array(c.numHeads));
  let rows = 0;
  for (const p of gridPrompts(model, hayIds, o.lengths, o.depths, makeNeedles(o.seed, o.needlesPerKind))) {
    let steps = 0;
    probeGreedyDecode(model, {
      ids: p.ids, maxNew: p.answerTokens, stopIds, wantOutput,
      onRow: (step, row) => {
        sums[row.layer][row.head] += stat(row);
        steps = Math.max(steps, step + 1);
      },
    });
    rows += steps;
  }
  return { means: sums.map((r) => Array.from(r, (v) => v / rows)), rows };
}
