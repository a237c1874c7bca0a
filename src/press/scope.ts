/**
 * Which layers a KV budget covers. Presses and the head game budget only full-attention layers; a sliding-window
 * layer (Gemma 3's local layers, Mistral/Phi-3 windows) keeps its own window and is never compressed, so kept
 * fractions and ratios refer to the full-attention layers, and reports say so.
 */
import { fullAttentionLayers, type ModelConfig } from '../model/config.js';

/** Sliding-window layers, ascending, with their windows. */
export function slidingLayers(c: Pick<ModelConfig, 'layers'>): { layer: number; window: number }[] {
  const out: { layer: number; window: number }[] = [];
  c.layers.forEach((l, i) => { if (l.kind === 'sliding') out.push({ layer: i, window: l.window! }); });
  return out;
}

/**
 * What a kept fraction or byte count covers, in words: "KV of all 30 layers", or "KV of 1 full-attention layer of 6;
 * sliding layers hold their 16-token window".
 */
export function kvScopeLabel(c: Pick<ModelConfig, 'layers'>): string {
  const n = c.layers.length, full = fullAttentionLayers(c).length;
  const sliding = slidingLayers(c);
  if (sliding.length === 0) return `KV of all ${n} layer${n === 1 ? '' : 's'}`;
  const windows = [...new Set(sliding.map((s) => s.window))].sort((a, b) => a - b);
  const hold = `sliding layers hold their ${windows.join('/')}-token window${windows.length > 1 ? 's' : ''}`;
  if (full === 0) return `no full-attention layer of ${n} (nothing budgeted); ${hold}`;
  return `KV of ${full} full-attention layer${full === 1 ? '' : 's'} of ${n}; ${hold}`;
}
