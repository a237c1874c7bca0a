/**
 * Retrieval-head scores for HeadKV on any model (after Wu et al.'s retrieval score, which HeadKV uses): a random
 * token string (the needle) is placed in a natural-text haystack and then repeated at the end, teacher-forced.
 * While the repeat is read, a query head that copies puts its attention argmax on the needle position holding the
 * token about to be produced. A head's score is the fraction of repeat positions where it does, averaged over
 * samples. Scores are per query head, [layer][head], the format `--head-scores` reads.
 */
import type { CokvModel } from '../engine.js';
import { Rng } from '../generate/rng.js';

export interface HeadScoreOptions {
  /** Haystack text to cut prompts from (e.g. the Paul Graham essays). */
  haystack: string;
  /** Prompt length in tokens (haystack + needle + repeat). */
  length: number;
  samples: number;
  needleTokens: number;
  seed: number;
}

export function retrievalHeadScores(model: CokvModel, o: HeadScoreOptions): number[][] {
  const c = model.config;
  const tok = model.tokenizer;
  const hayIds = tok.encode(o.haystack, { addSpecial: false });
  const need = o.length - 2 * o.needleTokens - 1;
  if (need < 16) throw new Error(`--length ${o.length} is too short for a needle of ${o.needleTokens} tokens`);
  if (hayIds.length < need) throw new Error(`the haystack has only ${hayIds.length} tokens, fewer than the ${need} needed`);
  // Needle tokens: ordinary pieces (no control/special ids), distinct so each has one source position.
  const pool: number[] = [];
  for (let id = 0; id < c.vocabSize; id++) {
    const text = tok.tokenText(id);
    if (text.trim().length > 0 && id !== tok.bosId && !tok.eosIds.includes(id) && !/^<.*>$/.test(text)) pool.push(id);
  }
  const rng = new Rng(o.seed);
  const hits = Array.from({ length: c.numLayers }, () => new Float64Array(c.numHeads));
  const hd = c.headDim, qDim = c.numHeads * hd, group = c.numHeads / c.numKvHeads;
  for (let s = 0; s < o.samples; s++) {
    const start = rng.int(hayIds.length - need + 1);
    const hay = hayIds.slice(start, start + need);
    const needle: number[] = [];
    while (needle.length < o.needleTokens) {
      const id = pool[rng.int(pool.length)];
      if (!needle.includes(id)) needle.push(id);
    }
    const depth = 4 + rng.int(Math.max(1, hay.length - 8));
    const ids = [...(tok.bosId !== undefined ? [tok.bosId] : []), ...hay.slice(0, depth), ...needle, ...hay.slice(depth), ...needle];
    const needleAt = (tok.bosId !== undefined ? 1 : 0) + depth;
    const repeatAt = ids.length - needle.length;
    const cache = model.newCache(ids.length);
    // One pass (the hook reads the queries of rows spread over the whole prompt); not a press prefill: the cache is
    // dropped after scoring.
    model.transformer.forward(ids, cache, {
      logits: 'none', chunkSize: 0,
      onLayer: (ctx) => {
        for (let h = 0; h < c.numHeads; h++) {
          const keys = ctx.cache.head(ctx.layer, Math.floor(h / group)).keysF32();
          // Rows reading repeat token t (t = 0..K−2) should look at the source of token t+1.
          for (let t = 0; t < needle.length - 1; t++) {
            const row = repeatAt + t;
            let best = -Infinity, arg = -1;
            for (let j = 0; j <= row; j++) {
              let sc = 0;
              for (let i = 0; i < hd; i++) sc += ctx.queries[row * qDim + h * hd + i] * keys[j * hd + i];
              if (sc > best) { best = sc; arg = j; }
            }
            if (arg === needleAt + t + 1) hits[ctx.layer][h] += 1 / (needle.length - 1);
          }
        }
      },
    });
  }
  return hits.map((row) => Array.from(row, (v) => v / o.samples));
}
