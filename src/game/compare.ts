/** Comparing two head-value vectors: MAE, Spearman rank correlation (average ranks for ties), top-k overlap. */
import { meanAbsoluteError } from './sliced-shapley.js';

export function ranks(v: number[]): number[] {
  const idx = v.map((x, i) => ({ x, i })).sort((a, b) => a.x - b.x);
  const r = new Array<number>(v.length);
  for (let s = 0; s < idx.length;) {
    let e = s;
    while (e + 1 < idx.length && idx[e + 1].x === idx[s].x) e++;
    const avg = (s + e) / 2 + 1;
    for (let k = s; k <= e; k++) r[idx[k].i] = avg;
    s = e + 1;
  }
  return r;
}

export function spearman(a: number[], b: number[]): number {
  const ra = ranks(a), rb = ranks(b);
  const n = a.length;
  const ma = ra.reduce((s, x) => s + x, 0) / n, mb = rb.reduce((s, x) => s + x, 0) / n;
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < n; i++) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) ** 2;
    db += (rb[i] - mb) ** 2;
  }
  return da === 0 || db === 0 ? 0 : num / Math.sqrt(da * db);
}

/** Indices of the k largest values (ties → lower index). */
export function topK(v: number[], k: number): number[] {
  return v.map((x, i) => ({ x, i })).sort((a, b) => b.x - a.x || a.i - b.i).slice(0, k).map((o) => o.i);
}

/** |topK(a) ∩ topK(b)| / k. */
export function topKOverlap(a: number[], b: number[], k: number): number {
  const ta = new Set(topK(a, k));
  return topK(b, k).filter((i) => ta.has(i)).length / k;
}

export function compareValues(a: number[], b: number[]): { mae: number; spearman: number; topK: { k: number; overlap: number }[] } {
  const n = a.length;
  const ks = [...new Set([1, Math.max(1, Math.round(n / 8)), Math.max(1, Math.round(n / 4)), Math.max(1, Math.round(n / 2))])];
  return { mae: meanAbsoluteError(a, b), spearman: spearman(a, b), topK: ks.map((k) => ({ k, overlap: topKOverlap(a, b, k) })) };
}
