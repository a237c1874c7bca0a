/**
 * HeadKV's own GQA rule, per-query-head budgets, as an option: the official code (FYYFU/HeadKV) repeats each KV
 * head's K/V to every query head of its group (`repeat_kv`) before compressing, so every query head keeps its own
 * selection under its own budget, at G× the K/V memory (G = query heads per KV head). cokv's headkv press budgets
 * KV heads (the CoKV paper's memory-fair version: the mean of the group's query-head caps).
 *
 * The official rule is obtained here without touching the cache or the presses: the model is rewritten as the
 * multi-head model that `repeat_kv` computes — the K and V projection rows of KV head g copied to each query head
 * of g's group (biases too) and `numKvHeads` set to `numHeads`. The function is unchanged (same logits up to float
 * rounding; `test/headkv-per-query-head.test.ts`), and every press, given a [layers, query heads] score file, now
 * allocates, selects and stores per query head. Memory: a budget of B per head keeps up to B entries per query
 * head, G× the KV-head press's entries (the cache's `bytes()` reports it). Remaining difference from the official
 * rule: cokv floors each head's cap (`--no-redistribute`) or shares the total by largest remainder where the
 * official code rounds (`torch.round`): ±1 token per head.
 */
import { CokvModel, resolveBackend, type LoadOptions } from '../../engine.js';
import { openModel } from '../../model/load.js';
import type { ModelSource } from '../../model/source.js';
import type { LayerWeights, ModelWeights, Weight } from '../../model/weights.js';

/** `w`'s rows grouped by KV head (headDim rows each), each group repeated `group` times in place. */
function repeatRows<T extends Weight>(w: T, numKvHeads: number, headDim: number, group: number): T {
  if (w.rows !== numKvHeads * headDim) throw new Error(`a K/V projection has ${w.rows} rows, expected ${numKvHeads}×${headDim}`);
  const per = w.data.length / w.rows;
  const block = per * headDim;
  const data = new (w.data.constructor as { new(n: number): Float32Array | Uint8Array })(w.data.length * group);
  for (let g = 0; g < numKvHeads; g++) {
    const src = w.data.subarray(g * block, (g + 1) * block);
    for (let k = 0; k < group; k++) data.set(src, (g * group + k) * block);
  }
  return { ...w, rows: w.rows * group, data } as T;
}

function repeatVector(v: Float32Array | undefined, numKvHeads: number, headDim: number, group: number): Float32Array | undefined {
  if (!v) return undefined;
  const out = new Float32Array(v.length * group);
  for (let g = 0; g < numKvHeads; g++) for (let k = 0; k < group; k++) out.set(v.subarray(g * headDim, (g + 1) * headDim), (g * group + k) * headDim);
  return out;
}

/**
 * The multi-head twin of a GQA model source (see the module comment); a source that already has one KV head per
 * query head is returned as it is.
 */
export function perQueryHeadSource(source: ModelSource): ModelSource {
  const c = source.config;
  const group = c.numHeads / c.numKvHeads;
  if (group === 1) return source;
  const config = { ...c, numKvHeads: c.numHeads };
  return {
    ...source,
    config,
    loadTokenizer: () => source.loadTokenizer(),
    loadWeights: (): ModelWeights => {
      const w = source.loadWeights();
      const layers = w.layers.map((l): LayerWeights => ({
        ...l,
        wk: repeatRows(l.wk, c.numKvHeads, c.headDim, group),
        wv: repeatRows(l.wv, c.numKvHeads, c.headDim, group),
        bk: repeatVector(l.bk, c.numKvHeads, c.headDim, group),
        bv: repeatVector(l.bv, c.numKvHeads, c.headDim, group),
      }));
      return { ...w, layers };
    },
  };
}

/**
 * Load a model as its per-query-head twin: presses then budget every query head on its own, as official HeadKV
 * does under GQA, at G× the K/V memory. Head-score files made for the original model hold [layers, query heads]
 * and apply unchanged; their model fingerprint names the original's KV heads, so write them without "model" (or
 * score the twin itself).
 */
export async function loadPerQueryHeadModel(modelPath: string, opts: LoadOptions = {}): Promise<CokvModel> {
  const source = perQueryHeadSource(await openModel(modelPath));
  return new CokvModel(source, await source.loadTokenizer(), resolveBackend(opts.backend));
}
