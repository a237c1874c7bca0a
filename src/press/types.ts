import type { LayerPrefillContext } from '../model/forward.js';

/**
 * A KV-cache press: runs once per layer right after that layer's prefill attention and may evict entries of each
 * (layer, KV head) cache. Prefill attention itself always sees the full prompt.
 *
 * A chunked prefill (the default) calls it during its last chunk, with that chunk's queries (`ctx.numTokens` rows,
 * at least `window`), when every earlier entry is cached: the exact mode, the cache a one-pass prefill gives up to
 * float rounding. In the bounded `prefillEvict` mode it is called after every chunk, on heads that may already hold
 * different counts (earlier chunks' compressions).
 */
export interface Press {
  readonly name: string;
  /**
   * Observation window, when the press scores with the last rows' queries: a chunked prefill makes its last chunk
   * at least this long, so that the hook sees every window query (presses without one see the last chunk's rows).
   */
  readonly window?: number;
  /** Compress layer `ctx.layer` of `ctx.cache`; `reserve` = spare slots to keep for the tokens still to come. */
  compressLayer(ctx: LayerPrefillContext, reserve: number): void;
}
