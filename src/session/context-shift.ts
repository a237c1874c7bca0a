/**
 * Context shift (what llama.cpp does when a conversation reaches the context): drop the entries of positions
 * [start, end) from every head and move each later entry back by Δ = end − start positions. Keys are stored
 * rotated (RoPE at their position p), and rotations compose, so rotating a stored key by −Δ gives the key RoPE
 * would have produced at p − Δ: the cache then holds the same keys and values at new positions, the next token
 * goes to position − Δ, and every distance between later tokens and the moved entries is what it was.
 *
 * The moved keys are rotated in double precision from the stored F32 values and rounded once; F16 keys are
 * widened, rotated and rounded back to F16 (within one F16 rounding of the key computed at the new position).
 * Refused: Q8 storage (re-rotating int8 keys would quantize them again) and longrope scaling (its frequencies
 * switch with the sequence length, so a key's rotation is not a function of its position alone).
 */
import { HeadCache, RaggedKVCache } from '../cache/ragged.js';
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { ropeInvFreqFor } from '../model/rope.js';

/** Why `config`'s caches of `dtype` cannot be shifted, or undefined when they can. */
export function contextShiftProblem(config: ModelConfig, dtype: string): string | undefined {
  if (dtype === 'q8') return 'not with q8 KV storage (re-rotating int8 keys would quantize them again; use f16 or f32)';
  if (config.layers.some((l) => l.rope?.scaling?.type === 'longrope')) {
    return 'not with longrope RoPE scaling (its frequencies depend on the sequence length)';
  }
  return undefined;
}

/**
 * A new cache holding `cache`'s entries without positions [start, end), the later ones moved back by end − start
 * positions with their keys re-rotated (see the file comment); `cache` itself is left as it was. Throws
 * CokvError (kind 'state') when the range is not within the processed positions or the cache cannot be shifted.
 */
export function shiftedCache(config: ModelConfig, cache: RaggedKVCache, start: number, end: number): RaggedKVCache {
  const what = `shift [${start}, ${end})`;
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start < end && end <= cache.position)) {
    throw new CokvError(`context shift: ${what} is not a non-empty range of the ${cache.position} positions processed`, 'state');
  }
  const problem = contextShiftProblem(config, cache.dtype);
  if (problem) throw new CokvError(`context shift: ${problem}`, 'state');
  const delta = end - start;
  const hd = cache.headDim;
  const heads: HeadCache[][] = [];
  for (let l = 0; l < cache.numLayers; l++) {
    const rope = config.layers[l].rope;
    // cos/sin of −Δ·θ_i, in double precision (NoPE layers: positions move, keys stay).
    const inv = rope ? ropeInvFreqFor(rope) : undefined;
    const half = rope ? rope.rotaryDim / 2 : 0;
    const cos = new Float64Array(half), sin = new Float64Array(half);
    for (let i = 0; i < half; i++) {
      cos[i] = Math.cos(delta * inv![i]);
      sin[i] = Math.sin(delta * inv![i]);
    }
    const row: HeadCache[] = [];
    for (let g = 0; g < cache.numKvHeads; g++) {
      const src = cache.head(l, g);
      const keys = src.keysF32();
      const values = src.valuesF32();
      const positions = src.positions;
      let kept = 0;
      for (let j = 0; j < src.length; j++) if (positions[j] < start || positions[j] >= end) kept++;
      const out = new HeadCache(hd, kept, cache.dtype);
      const k = new Float32Array(hd);
      for (let j = 0; j < src.length; j++) {
        const p = positions[j];
        if (p >= start && p < end) continue;
        k.set(keys.subarray(j * hd, (j + 1) * hd));
        if (p >= end) {
          for (let i = 0; i < half; i++) {
            const a = k[i], z = k[i + half];
            // The inverse of applyRope's rotation by Δ·θ_i.
            k[i] = a * cos[i] + z * sin[i];
            k[i + half] = z * cos[i] - a * sin[i];
          }
        }
        out.append(k, 0, values, j * hd, p >= end ? p - delta : p);
      }
      row.push(out);
    }
    heads.push(row);
  }
  return RaggedKVCache.restore(heads, cache.position - delta, hd, cache.dtype, cache.layers);
}
