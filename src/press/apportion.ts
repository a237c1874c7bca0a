/**
 * Integer apportionment used by the allocators: share `total` tokens among heads in proportion to `weights`
 * (negative and NaN weights count as 0; huge ones are normalised, so any finite weights meet the total), flooring and then giving the leftover tokens to the largest remainders
 * (ties → larger weight, then lower index), so the sum is exact. With `caps`, no head gets more than its cap;
 * a head whose share exceeds its cap is fixed at the cap and the rest is re-shared among the others in proportion
 * to their weights (water-filling). When only zero-weight heads are left, they share the rest equally, so budget
 * is never wasted while some head can still hold it. The total is clipped to the sum of the caps.
 */
export function apportion(weights: ArrayLike<number>, total: number, caps?: ArrayLike<number>): number[] {
  const n = weights.length;
  const out = new Array<number>(n).fill(0);
  const cap = (i: number) => (caps ? Math.max(0, Math.floor(caps[i])) : Infinity);
  let capSum = 0;
  for (let i = 0; i < n; i++) capSum += cap(i);
  let remaining = Math.max(0, Math.min(Math.floor(total), capSum));
  let free = Array.from({ length: n }, (_, i) => i).filter((i) => cap(i) > 0);
  // Negative and NaN weights count as 0.
  const pos = (i: number): number => (weights[i] > 0 ? weights[i] : 0);
  while (remaining > 0 && free.length > 0) {
    let wsum = 0;
    for (const i of free) wsum += pos(i);
    let weight = pos;
    if (!Number.isFinite(wsum)) {
      // Huge weights (1e308…) overflow the sum to Infinity and every share to 0 or NaN: divide by the largest
      // first (shares are scale-free); infinite weights are the limit where they alone share equally.
      let wmax = 0;
      for (const i of free) wmax = Math.max(wmax, pos(i));
      const scaled = new Map(free.map((i) => [i, wmax === Infinity ? (pos(i) === Infinity ? 1 : 0) : pos(i) / wmax]));
      weight = (i: number) => scaled.get(i) ?? 0;
      wsum = 0;
      for (const i of free) wsum += weight(i);
    }
    const w = (i: number) => (wsum > 0 ? weight(i) : 1);
    const norm = wsum > 0 ? wsum : free.length;
    const exact = free.map((i) => (w(i) / norm) * remaining);
    const over = free.filter((i, k) => exact[k] > cap(i));
    if (over.length > 0) {
      for (const i of over) { out[i] = cap(i); remaining -= cap(i); }
      free = free.filter((i) => !over.includes(i));
      continue;
    }
    let given = 0;
    free.forEach((i, k) => { out[i] = Math.floor(exact[k]); given += out[i]; });
    let left = remaining - given;
    const order = free
      .map((i, k) => ({ i, r: exact[k] - Math.floor(exact[k]) }))
      .sort((a, b) => b.r - a.r || w(b.i) - w(a.i) || a.i - b.i);
    for (const o of order) {
      if (left <= 0) break;
      if (out[o.i] < cap(o.i)) { out[o.i]++; left--; }
    }
    remaining = 0;
  }
  return out;
}
