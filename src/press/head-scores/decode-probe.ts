/**
 * Greedy generation with a per-step look at every query head's attention, the measurement HeadKV's R2 score and
 * the output-norm / entropy head scores share. The model's layer hook fires on every decode step too (T = 1): it
 * hands over the step's post-RoPE queries and the cache, which already holds the step's own key, so the attention
 * row of each query head is recomputed here from q·k (the forward pass keeps only the softmax output). No change to
 * the forward pass is needed.
 */
import type { CokvModel } from '../../engine.js';

/** What one decode step shows about one query head's attention row (over every entry the head can see). */
export interface AttentionRowView {
  layer: number;
  /** Query head index within the layer. */
  head: number;
  /** Softmax weights over the visible entries, in cache order. */
  probs: Float64Array;
  /** Sequence position of each visible entry (same order as `probs`). */
  positions: Int32Array;
  /** The head's attention output Σ p_j v_j (before the output projection), length headDim. */
  output: Float64Array;
}

export interface ProbeOptions {
  /** Prompt ids (BOS included where the model wants one). */
  ids: number[];
  /** Stop after this many generated tokens. */
  maxNew: number;
  /** Ids that end generation (EOS, newline tokens); the stop token is generated (and its row seen) first. */
  stopIds: ReadonlySet<number>;
  /** Called for every generated token's attention row of every query head of every layer. */
  onRow: (step: number, row: AttentionRowView) => void;
  /** Compute `output` (skipped otherwise, to save work). Default true. */
  wantOutput?: boolean;
}

/**
 * Prefill all prompt tokens but the last, then decode greedily from the last one (as HeadKV's detection script
 * does: the first step's row is the one that produces the first answer token). Returns the generated ids.
 */
export function probeGreedyDecode(model: CokvModel, o: ProbeOptions): number[] {
  const c = model.config;
  const tf = model.transformer;
  if (o.ids.length < 2) throw new Error('the prompt needs at least two tokens');
  const cache = model.newCache(o.ids.length + o.maxNew);
  tf.forward(o.ids.slice(0, -1), cache, { logits: 'none' });
  const hd = c.headDim, group = c.numHeads / c.numKvHeads;
  const scale = c.recipe.attentionScale;
  const wantOutput = o.wantOutput ?? true;
  const out: number[] = [];
  let input = o.ids[o.ids.length - 1];
  for (let step = 0; step < o.maxNew; step++) {
    const position = cache.position;
    const logits = tf.forward([input], cache, {
      logits: 'last',
      onLayer: (ctx) => {
        const spec = c.layers[ctx.layer];
        for (let g = 0; g < c.numKvHeads; g++) {
          const head = ctx.cache.head(ctx.layer, g);
          const keys = head.keysF32();
          const values = wantOutput ? head.valuesF32() : undefined;
          // Sliding layers see only the last `window` positions (the query's own included), as the forward pass.
          let from = 0;
          if (spec.kind === 'sliding') while (from < head.length && head.positionAt(from) <= position - spec.window!) from++;
          const n = head.length - from;
          const positions = new Int32Array(n);
          for (let j = 0; j < n; j++) positions[j] = head.positionAt(from + j);
          for (let k = 0; k < group; k++) {
            const h = g * group + k;
            const probs = new Float64Array(n);
            let max = -Infinity;
            for (let j = 0; j < n; j++) {
              let s = 0;
              const ko = (from + j) * hd;
              for (let i = 0; i < hd; i++) s += ctx.queries[h * hd + i] * keys[ko + i];
              probs[j] = s * scale;
              if (probs[j] > max) max = probs[j];
            }
            let sum = 0;
            for (let j = 0; j < n; j++) { probs[j] = Math.exp(probs[j] - max); sum += probs[j]; }
            for (let j = 0; j < n; j++) probs[j] /= sum;
            const output = new Float64Array(wantOutput ? hd : 0);
            if (values) {
              for (let j = 0; j < n; j++) {
                const vo = (from + j) * hd, p = probs[j];
                for (let i = 0; i < hd; i++) output[i] += p * values[vo + i];
              }
            }
            o.onRow(step, { layer: ctx.layer, head: h, probs, positions, output });
          }
        }
      },
    });
    let best = 0;
    for (let v = 1; v < c.vocabSize; v++) if (logits[v] > logits[best]) best = v;
    out.push(best);
    if (o.stopIds.has(best)) break;
    input = best;
  }
  return out;
}
