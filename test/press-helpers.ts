/**
 * "A seeded random cache compressed by a press", shared by the press tests (descriptors, protect, allocators): the
 * layer-by-layer prefill a model would do, with random post-RoPE keys and queries instead of a model.
 */
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Rng } from '../src/generate/rng.js';
import type { Press } from '../src/press/types.js';

/** The attention shape of the random cache (a ModelConfig has these fields). */
export interface RandomCacheShape {
  numLayers: number;
  numKvHeads: number;
  numHeads: number;
  headDim: number;
}

/**
 * A cache of `length` tokens in every layer, each layer compressed by `press` (none: the full cache) once its tokens
 * are in, then advanced past the prompt. `rng` is a seed, or a generator the caller goes on drawing from. The draws,
 * in this order: the window queries of every token (L × numHeads × headDim in [−2, 2)), then per layer, token and KV
 * head one key in [−1, 1) (the value is the key: presses score keys only). `boundaries` go to the press as a
 * prefill's segment starts.
 */
export function compressRandomCache(
  press: Press | undefined, shape: RandomCacheShape, length: number, rng: Rng | number, boundaries?: number[],
): RaggedKVCache {
  const r = typeof rng === 'number' ? new Rng(rng) : rng;
  const hd = shape.headDim;
  const cache = new RaggedKVCache(shape.numLayers, shape.numKvHeads, hd);
  const queries = Float32Array.from({ length: length * shape.numHeads * hd }, () => r.next() * 4 - 2);
  for (let l = 0; l < shape.numLayers; l++) {
    for (let t = 0; t < length; t++) {
      for (let g = 0; g < shape.numKvHeads; g++) {
        const k = Float32Array.from({ length: hd }, () => r.next() * 2 - 1);
        cache.head(l, g).append(k, 0, k, 0, t);
      }
    }
    press?.compressLayer({ layer: l, queries, numTokens: length, startPosition: 0, cache, ...(boundaries ? { boundaries } : {}) }, 0);
  }
  cache.advance(length);
  return cache;
}

/** The positions every head kept, [layer][kvHead][entry] (ascending). */
export function keptPositions(cache: RaggedKVCache): number[][][] {
  return cache.heads.map((row) => row.map((h) => Array.from(h.positions.subarray(0, h.length))));
}
