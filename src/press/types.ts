import type { LayerPrefillContext } from '../model/forward.js';

/**
 * A KV-cache press: runs once per layer right after that layer's prefill attention and may evict entries of each
 * (layer, KV head) cache. Prefill attention itself always sees the full prompt.
 */
export interface Press {
  readonly name: string;
  /** Compress layer `ctx.layer` of `ctx.cache`; `reserve` = spare slots to keep for the tokens still to come. */
  compressLayer(ctx: LayerPrefillContext, reserve: number): void;
}
