/**
 * Boundary protection (after arXiv 2605.18053, "Protection Is (Nearly) All You Need": reserving a slice of the cache
 * for prompt-boundary tokens — the first token, chat-template turn starts, the system prompt, the question start —
 * recovers most of what score-based eviction loses there).
 *
 * A prompt's `boundaries` are the token indices where a segment begins. The paper gives the share (10%) but not a
 * token-level rule, so cokv's rule is:
 * - position 0 is always a boundary (the attention sink);
 * - a head protects `r = ⌊protect · B⌋` entries (B = its average budget, window included), at most B − window;
 * - the r slots are shared equally among the segments that begin before the observation window, the remainder going
 *   to the earlier segments; a segment shorter than its share keeps all its entries and the rest is re-shared among
 *   the others (so the whole reserve is used while any segment has entries left);
 * - each segment protects its first entries (in position order).
 * Without boundaries the only segment starts at 0, so a protecting press keeps the first r prompt tokens (a sink of
 * r tokens). The window is kept as always; protected entries are kept whatever their scores, and the rest of the
 * budget is allocated and top-k selected among the other entries as without protection.
 */
import { CokvError } from '../errors.js';
import { apportion } from './apportion.js';

/**
 * Check caller-given boundaries against a prompt of `length` tokens: integers in [0, length). Returns them sorted
 * and without repeats. Throws CokvError (kind 'flag') naming `what` (default `boundaries`).
 */
export function checkBoundaries(boundaries: unknown, length: number, what = 'boundaries'): number[] {
  if (!Array.isArray(boundaries)) throw new CokvError(`${what}: must be an array of token indices`, 'flag');
  for (const b of boundaries) {
    if (!(typeof b === 'number' && Number.isInteger(b) && b >= 0)) throw new CokvError(`${what}: ${String(b)} is not a non-negative integer token index`, 'flag');
    if (b >= length) throw new CokvError(`${what}: ${b} is past the end of the ${length}-token prompt`, 'flag');
  }
  return [...new Set(boundaries as number[])].sort((a, b) => a - b);
}

/** Protected entries of a head whose average budget is `budget` (window included): ⌊protect · budget⌋, at most budget − window. */
export function protectedCount(protect: number, budget: number, window: number): number {
  return Math.max(0, Math.min(Math.floor(protect * budget), budget - window));
}

/**
 * Indices (ascending) of the entries to protect among a head's first `n` entries (the ones before the window),
 * whose sequence positions are `positions[0..n)` in ascending order: `count` entries shared among the segments
 * that `boundaries` (sequence positions; 0 is added) begin, as described above.
 */
export function protectedEntries(positions: ArrayLike<number>, n: number, boundaries: readonly number[] | undefined, count: number): number[] {
  if (count <= 0 || n <= 0) return [];
  const starts = [...new Set([0, ...(boundaries ?? [])])].sort((a, b) => a - b);
  // First entry and size of each segment that holds entries.
  const first: number[] = [];
  const size: number[] = [];
  let s = -1;
  for (let i = 0; i < n; i++) {
    let seg = s < 0 ? 0 : s;
    while (seg + 1 < starts.length && starts[seg + 1] <= positions[i]) seg++;
    if (seg !== s || first.length === 0) {
      first.push(i);
      size.push(0);
      s = seg;
    }
    size[size.length - 1]++;
  }
  const shares = apportion(new Array<number>(size.length).fill(1), count, size);
  const out: number[] = [];
  shares.forEach((k, j) => { for (let t = 0; t < k; t++) out.push(first[j] + t); });
  return out;
}
