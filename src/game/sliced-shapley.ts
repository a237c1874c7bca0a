/**
 * Sliced Shapley value (CoKV, paper §3.1): for player i and coalition size j, SV_{i,j} = mean over S ∋ i, |S| = j
 * of the complementary contribution U(S) − U(N\S); SSV_i = mean over the sizes j ∈ H of SV_{i,j}.
 *
 * Sampling is counter-based: sample k of run r draws its size (round-robin over H, or random) and its coalition
 * from an RNG seeded by (seed, r, k) alone. So any subset of sample indices — a shard, a resumed run — produces
 * exactly the samples an uninterrupted run would, and the accumulators are recomputed from the per-sample
 * records in index order, which makes resume and merge bit-identical to one long run.
 *
 * Each sample counts on both sides (default): +u for the members of S at size j, and −u (the contribution of N\S)
 * for the players outside S at size n − j. `sSideOnly` reproduces the reference code, which keeps only the S side.
 */
import { Rng } from '../generate/rng.js';
import type { Coalition } from './players.js';

/** The paper's proportions n/8, n/4, 3n/8, n/2 (H = {32, 64, 96, 128} for 256 players), rounded, in [1, n−1]. */
export function defaultSizes(n: number): number[] {
  const raw = [n / 8, n / 4, (3 * n) / 8, n / 2].map((x) => Math.min(n - 1, Math.max(1, Math.round(x))));
  return [...new Set(raw)].sort((a, b) => a - b);
}

/** Mix integers into a 32-bit seed (splitmix-style avalanche). */
export function mixSeed(...xs: number[]): number {
  let h = 0x9e3779b9;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

export interface DrawOptions {
  n: number;
  sizes: number[];
  seed: number;
  run: number;
  /** 'round-robin' (default): size = sizes[k mod |H|]; 'random': uniform over H. */
  sizeOrder?: 'round-robin' | 'random';
}

/** The coalition of sample k: a uniformly random subset of the drawn size. */
export function drawCoalition(o: DrawOptions, k: number): { size: number; coalition: Coalition } {
  const rng = new Rng(mixSeed(o.seed, o.run, k));
  const size = o.sizeOrder === 'random' ? o.sizes[rng.int(o.sizes.length)] : o.sizes[k % o.sizes.length];
  // Partial Fisher–Yates: the first `size` entries of a random permutation.
  const perm = Array.from({ length: o.n }, (_, i) => i);
  for (let i = 0; i < size; i++) {
    const j = i + rng.int(o.n - i);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const coalition = new Uint8Array(o.n);
  for (let i = 0; i < size; i++) coalition[perm[i]] = 1;
  return { size, coalition };
}

/** One evaluated sample: index, size |S|, u = U(S) − U(N\S), and S. */
export interface SampleRecord {
  k: number;
  size: number;
  u: number;
  coalition: Coalition;
}

/** Per-player, per-size sums and counts (sizes 1..n−1, index = size). */
export interface Accumulators {
  n: number;
  sums: Float64Array[];
  counts: Uint32Array[];
}

export function accumulate(n: number, records: SampleRecord[], sSideOnly = false): Accumulators {
  const sums = Array.from({ length: n }, () => new Float64Array(n));
  const counts = Array.from({ length: n }, () => new Uint32Array(n));
  const sorted = [...records].sort((a, b) => a.k - b.k);
  for (const r of sorted) {
    for (let i = 0; i < n; i++) {
      if (r.coalition[i]) {
        sums[i][r.size] += r.u;
        counts[i][r.size]++;
      } else if (!sSideOnly) {
        sums[i][n - r.size] -= r.u;
        counts[i][n - r.size]++;
      }
    }
  }
  return { n, sums, counts };
}

/** The sizes a run's values average over: H, plus n − H when both sides count. */
export function valueSizes(n: number, sizes: number[], sSideOnly = false): number[] {
  const all = new Set(sizes);
  if (!sSideOnly) for (const j of sizes) all.add(n - j);
  return [...all].sort((a, b) => a - b);
}

/** SSV per player: mean over the value sizes of the per-size mean (sizes with no sample yet are skipped). */
export function slicedValues(acc: Accumulators, sizes: number[]): number[] {
  return Array.from({ length: acc.n }, (_, i) => {
    let s = 0, m = 0;
    for (const j of sizes) {
      if (acc.counts[i][j] > 0) {
        s += acc.sums[i][j] / acc.counts[i][j];
        m++;
      }
    }
    return m > 0 ? s / m : 0;
  });
}

/** Mean absolute difference between two value vectors (the paper's convergence criterion). */
export function meanAbsoluteError(a: number[], b: number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

/** Exact Shapley values by enumerating all 2^n coalitions (n ≤ 20). `u` gets a mask and returns U. */
export function exactShapley(n: number, u: (s: Coalition) => number): number[] {
  if (n > 20) throw new Error(`exact Shapley enumerates 2^n coalitions; n = ${n} is too many`);
  const N = 1 << n;
  const values = new Float64Array(N);
  const s = new Uint8Array(n);
  for (let m = 0; m < N; m++) {
    for (let i = 0; i < n; i++) s[i] = (m >> i) & 1;
    values[m] = u(s);
  }
  // weight(|S|) = |S|! (n − |S| − 1)! / n!
  const weight = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    let w = 1 / n;
    // 1 / (n · C(n−1, k))
    let c = 1;
    for (let t = 1; t <= k; t++) c = (c * (n - 1 - k + t)) / t;
    w /= c;
    weight[k] = w;
  }
  const phi = new Array<number>(n).fill(0);
  for (let m = 0; m < N; m++) {
    const size = popcount(m);
    for (let i = 0; i < n; i++) {
      if (m & (1 << i)) continue;
      phi[i] += weight[size] * (values[m | (1 << i)] - values[m]);
    }
  }
  return phi;
}

/** Exact sliced values: enumerate every coalition of each value size (both sides counted). */
export function exactSliced(n: number, u: (s: Coalition) => number, sizes: number[], sSideOnly = false): number[] {
  if (n > 20) throw new Error(`exact sliced values enumerate subsets; n = ${n} is too many`);
  const records: SampleRecord[] = [];
  const cache = new Map<number, number>();
  const U = (m: number): number => {
    let v = cache.get(m);
    if (v === undefined) {
      const s = new Uint8Array(n);
      for (let i = 0; i < n; i++) s[i] = (m >> i) & 1;
      v = u(s);
      cache.set(m, v);
    }
    return v;
  };
  const full = (1 << n) - 1;
  let k = 0;
  for (let m = 1; m < full; m++) {
    const size = popcount(m);
    if (!sizes.includes(size)) continue;
    const s = new Uint8Array(n);
    for (let i = 0; i < n; i++) s[i] = (m >> i) & 1;
    records.push({ k: k++, size, u: U(m) - U(full ^ m), coalition: s });
  }
  return slicedValues(accumulate(n, records, sSideOnly), valueSizes(n, sizes, sSideOnly));
}

function popcount(m: number): number {
  let c = 0;
  while (m) { m &= m - 1; c++; }
  return c;
}
