/**
 * The head game's estimators on games with known values: exact Shapley against closed forms (and a brute-force
 * permutation average), exact sliced values against their closed forms, the Shapley ↔ sliced identity, and the
 * Monte-Carlo profiler converging to the exact sliced values (both sides and the reference S-side-only mode).
 */
import { describe, expect, it } from 'vitest';
import { coalitionFromHex, coalitionToHex, complement, playerId, playerName, type Coalition } from '../src/game/players.js';
import {
  accumulate, defaultSizes, drawCoalition, exactShapley, exactSliced, slicedValues, valueSizes,
} from '../src/game/sliced-shapley.js';
import { buildProfile, runProfiler, type Game } from '../src/game/profiler.js';
import type { ProfileFile, ProfileSettings } from '../src/game/profile-file.js';
import { spearman, topK } from '../src/game/compare.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { tinyConfig } from './random-model.js';

type U = (s: Coalition) => number;

/** A synthetic game: U evaluated coalition by coalition. */
function game(n: number, u: U): Game {
  return { n, evaluate: (cs) => cs.map(u) };
}

function settings(shape: [number, number], over: Partial<ProfileSettings> = {}): ProfileSettings {
  const n = shape[0] * shape[1];
  return {
    model: modelFingerprint(tinyConfig({ numLayers: shape[0], numKvHeads: shape[1], numHeads: shape[1] })),
    shape, window: 4, sizes: defaultSizes(n), sizeOrder: 'round-robin', sSideOnly: false, utility: 'loglik',
    task: 'synthetic', maxNew: 1, dataFile: 'none', dataHash: 'none', sampleIds: ['s0'], seed: 7, runs: 2, ...over,
  };
}

const additive = (a: number[]): U => (s) => a.reduce((t, ai, i) => t + (s[i] ? ai : 0), 0);
const unanimity = (T: number[]): U => (s) => (T.every((i) => s[i]) ? 1 : 0);
/** Apex game: the apex wins with any partner, the others only all together. */
const apex = (n: number, a: number): U => (s) => {
  let others = 0;
  for (let i = 0; i < n; i++) if (i !== a && s[i]) others++;
  return (s[a] && others >= 1) || others === n - 1 ? 1 : 0;
};
/** Weighted majority [quota; weights]. */
const weightedMajority = (w: number[], quota: number): U => (s) => (w.reduce((t, wi, i) => t + (s[i] ? wi : 0), 0) >= quota ? 1 : 0);

function binom(n: number, k: number): number {
  if (k < 0 || k > n) return 0;
  let c = 1;
  for (let t = 1; t <= k; t++) c = (c * (n - k + t)) / t;
  return c;
}

const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
const mask = (n: number, members: number[]): Coalition => {
  const s = new Uint8Array(n);
  for (const i of members) s[i] = 1;
  return s;
};

/** Shapley values by averaging marginal contributions over all n! orders (independent of exactShapley). */
function permutationShapley(n: number, u: U): number[] {
  const phi = new Array<number>(n).fill(0);
  let orders = 0;
  const perm = Array.from({ length: n }, (_, i) => i);
  const visit = (k: number): void => {
    if (k === n) {
      orders++;
      const s = new Uint8Array(n);
      let prev = u(s);
      for (const p of perm) {
        s[p] = 1;
        const cur = u(s);
        phi[p] += cur - prev;
        prev = cur;
      }
      return;
    }
    for (let i = k; i < n; i++) {
      [perm[k], perm[i]] = [perm[i], perm[k]];
      visit(k + 1);
      [perm[k], perm[i]] = [perm[i], perm[k]];
    }
  };
  visit(0);
  return phi.map((x) => x / orders);
}

/** SV_{i,j}: the mean of U(S) − U(N\S) over S ∋ i, |S| = j, by direct enumeration (independent of the library). */
function svij(n: number, u: U, i: number, j: number): number {
  let s = 0, m = 0;
  for (let bits = 0; bits < 1 << n; bits++) {
    if (!((bits >> i) & 1)) continue;
    let pc = 0;
    for (let b = bits; b; b &= b - 1) pc++;
    if (pc !== j) continue;
    const S = Uint8Array.from({ length: n }, (_, p) => (bits >> p) & 1);
    s += u(S) - u(S.map((x) => 1 - x));
    m++;
  }
  return s / m;
}

describe('players and coalition draws', () => {
  it('player ids are row-major (layer · kvHeads + kvHead); hex masks round-trip for any n', () => {
    expect(playerId(2, 3, 4)).toBe(11);
    expect(playerName(11, 4)).toBe('L2H3');
    let x = 12345;
    for (let m = 1; m <= 23; m++) {
      const s = Uint8Array.from({ length: m }, () => ((x = (x * 69069 + 1) >>> 0) >>> 31));
      const hex = coalitionToHex(s);
      expect(hex).toHaveLength(Math.ceil(m / 4));
      expect(coalitionFromHex(hex, m)).toEqual(s);
      expect(coalitionFromHex(coalitionToHex(complement(s)), m)).toEqual(s.map((b) => 1 - b));
    }
  });

  it('drawCoalition: the drawn size, every player equally likely, depends only on (seed, run, k)', () => {
    const n = 12, sizes = defaultSizes(n);
    const o = { n, sizes, seed: 5, run: 1 };
    const hits = new Array<number>(n).fill(0);
    const K = 4000;
    let members = 0;
    for (let k = 0; k < K; k++) {
      const d = drawCoalition(o, k);
      expect(d.size).toBe(sizes[k % sizes.length]);
      expect(d.coalition.reduce((t, b) => t + b, 0)).toBe(d.size);
      d.coalition.forEach((b, i) => { hits[i] += b; });
      members += d.size;
    }
    for (const h of hits) expect(Math.abs(h - members / n)).toBeLessThan(4 * Math.sqrt(members / n));
    expect(drawCoalition(o, 17)).toEqual(drawCoalition(o, 17));
    expect(drawCoalition(o, 17).coalition).not.toEqual(drawCoalition({ ...o, run: 0 }, 17).coalition);
    const random = Array.from({ length: 400 }, (_, k) => drawCoalition({ ...o, sizeOrder: 'random' }, k).size);
    for (const j of sizes) expect(random.filter((s) => s === j).length).toBeGreaterThan(60);
  });

  it('exact enumeration refuses more than 20 players', () => {
    expect(() => exactShapley(21, () => 0)).toThrow(/too many/);
    expect(() => exactSliced(21, () => 0, [3])).toThrow(/too many/);
  });
});

describe('exact Shapley values: closed forms', () => {
  it('additive game: φ_i = a_i; efficiency Σφ = U(N) − U(∅)', () => {
    const a = [0.9, -0.3, 0.5, 0, 1.7, 0.25];
    const phi = exactShapley(6, additive(a));
    phi.forEach((p, i) => expect(p).toBeCloseTo(a[i], 12));
  });

  it('symmetric players get equal values, a dummy gets 0, efficiency holds', () => {
    // U depends on players 0, 1, 2 symmetrically (only through their count) and on 4; player 3 and 5 are dummies.
    const u: U = (s) => {
      const c = s[0] + s[1] + s[2];
      return c * c + (s[4] ? 2 * c + 1 : 0);
    };
    const phi = exactShapley(6, u);
    expect(phi[1]).toBeCloseTo(phi[0], 12);
    expect(phi[2]).toBeCloseTo(phi[0], 12);
    expect(phi[3]).toBeCloseTo(0, 12);
    expect(phi[5]).toBeCloseTo(0, 12);
    expect(sum(phi)).toBeCloseTo(u(mask(6, [0, 1, 2, 3, 4, 5])) - u(mask(6, [])), 12);
    permutationShapley(6, u).forEach((p, i) => expect(phi[i]).toBeCloseTo(p, 12));
  });

  it('unanimity game U(S) = [T ⊆ S]: 1/|T| for i ∈ T, 0 otherwise', () => {
    const n = 7, T = [1, 3, 4];
    const phi = exactShapley(n, unanimity(T));
    phi.forEach((p, i) => expect(p).toBeCloseTo(T.includes(i) ? 1 / T.length : 0, 12));
  });

  it('apex game: apex (n−2)/n, each other player 2/(n(n−1))', () => {
    const n = 7;
    const phi = exactShapley(n, apex(n, 2));
    phi.forEach((p, i) => expect(p).toBeCloseTo(i === 2 ? (n - 2) / n : 2 / (n * (n - 1)), 12));
  });

  it('weighted majority [4; 3, 1, 1, 1]: big player 3/4, small 1/12 each (pivotal counting), = permutation average', () => {
    // The small players alone weigh 3 < 4, so the big player is pivotal whenever at least one small player comes
    // before it: positions 2, 3, 4 of 4 → 3/4; the small players share the remaining 1/4.
    const u = weightedMajority([3, 1, 1, 1], 4);
    const phi = exactShapley(4, u);
    expect(phi[0]).toBeCloseTo(3 / 4, 12);
    for (const i of [1, 2, 3]) expect(phi[i]).toBeCloseTo(1 / 12, 12);
    permutationShapley(4, u).forEach((p, i) => expect(phi[i]).toBeCloseTo(p, 12));
  });

  it('matches the n! permutation average on an arbitrary game', () => {
    const n = 6;
    const u: U = (s) => Math.sin(1 + s.reduce((t, x, i) => t + x * (i + 1) ** 1.5, 0)) + s[0] * s[5];
    const phi = exactShapley(n, u);
    permutationShapley(n, u).forEach((p, i) => expect(phi[i]).toBeCloseTo(p, 12));
  });
});

describe('exact sliced values: closed forms and the Shapley identity', () => {
  /*
   * Additive game U(S) = Σ_{i∈S} a_i, A = Σ a:
   *   U(S) − U(N\S) = Σ_S a − (A − Σ_S a) = 2 Σ_S a − A.
   *   For S ∋ i uniform with |S| = j, the other j − 1 members are a uniform subset of the n − 1 others, so
   *   E[Σ_S a] = a_i + (j−1)/(n−1) · (A − a_i), and
   *   SV_{i,j} = 2a_i − A + 2(j−1)(A − a_i)/(n−1) = a_i + (2j − n − 1)/(n−1) · (A − a_i).
   *   Over a pair j, n − j the coefficients (2j−n−1) + (2(n−j)−n−1) = −2 average to −1/(n−1) (and j = n/2 alone
   *   gives −1/(n−1) too), so over any size set symmetric under j ↦ n − j (such as H ∪ (n − H)):
   *   SSV_i = a_i − (A − a_i)/(n−1) = (n·a_i − A)/(n − 1)   — not the Shapley value a_i.
   */
  const n = 10;
  const a = [0.9, 0.3, 0.5, 0.1, 0.7, 0.2, 1.0, 0, 0.4, 0.8];
  const A = sum(a);

  it('additive, both sides over H ∪ (n − H): (n·a_i − A)/(n − 1)', () => {
    for (const sizes of [defaultSizes(n), [2], [3, 5], [1, 9]]) {
      const v = exactSliced(n, additive(a), sizes);
      v.forEach((x, i) => expect(x).toBeCloseTo((n * a[i] - A) / (n - 1), 10));
    }
  });

  it('additive, S side only over H: mean over j ∈ H of a_i + (2j−n−1)/(n−1)·(A − a_i)', () => {
    const sizes = [2, 3, 5];
    const v = exactSliced(n, additive(a), sizes, true);
    v.forEach((x, i) => {
      const want = sum(sizes.map((j) => a[i] + ((2 * j - n - 1) / (n - 1)) * (A - a[i]))) / sizes.length;
      expect(x).toBeCloseTo(want, 10);
    });
  });

  it('unanimity: SV_{i,j} = P(T ⊆ S | i ∈ S) − P(T ⊆ N\\S | i ∈ S) from binomials', () => {
    const T = [0, 4, 7], t = T.length;
    for (const j of [3, 4, 6]) {
      const v = exactSliced(n, unanimity(T), [j], true);
      v.forEach((x, i) => {
        const want = T.includes(i)
          ? binom(n - t, j - t) / binom(n - 1, j - 1)
          : binom(n - 1 - t, j - 1 - t) / binom(n - 1, j - 1) - binom(n - 1 - t, n - j - t) / binom(n - 1, n - j);
        expect(x).toBeCloseTo(want, 12);
        expect(x).toBeCloseTo(svij(n, unanimity(T), i, j), 12);
      });
    }
  });

  it('Shapley_i = (1/n)·[Σ_{j=1}^{n−1} SV_{i,j} + U(N) − U(∅)] on several games', () => {
    const m = 8;
    const games: [string, U][] = [
      ['additive', additive(a.slice(0, m))],
      ['unanimity', unanimity([1, 2, 6])],
      ['apex', apex(m, 5)],
      ['weighted majority', weightedMajority([4, 3, 2, 2, 1, 1, 1, 0], 8)],
      ['nonlinear', (s) => Math.sqrt(s.reduce((t, x, i) => t + x * a[i], 0)) + s[2] * s[3] - 0.5 * s[1] * s[7]],
    ];
    const all = Array.from({ length: m - 1 }, (_, k) => k + 1);
    for (const [, u] of games) {
      const phi = exactShapley(m, u);
      const gap = u(new Uint8Array(m).fill(1)) - u(new Uint8Array(m));
      // Per size: the S-side-only value of the single size j is SV_{i,j} itself.
      const perSize = all.map((j) => exactSliced(m, u, [j], true));
      // Both sides over all sizes 1..n−1 give the mean of SV_{i,j} over j directly.
      const both = exactSliced(m, u, all);
      for (let i = 0; i < m; i++) {
        const total = sum(perSize.map((v) => v[i]));
        expect(phi[i]).toBeCloseTo((total + gap) / m, 12);
        expect(phi[i]).toBeCloseTo(((m - 1) * both[i] + gap) / m, 12);
        expect(perSize[2][i]).toBeCloseTo(svij(m, u, i, 3), 12);
      }
    }
  });

  it('both sides: the N\\S side of size j estimates SV_{i,n−j}', () => {
    const m = 8;
    const u = weightedMajority([4, 3, 2, 2, 1, 1, 1, 0], 8);
    const v = exactSliced(m, u, [3]);
    for (let i = 0; i < m; i++) expect(v[i]).toBeCloseTo((svij(m, u, i, 3) + svij(m, u, i, 5)) / 2, 12);
  });
});

describe('Monte-Carlo profiler converges to the exact sliced values', () => {
  const n = 12;
  const shape: [number, number] = [3, 4];
  // Distinct values, player 7 a dummy (the unique smallest a, so it ranks last).
  const a = [0.9, 0.3, 0.5, 0.1, 0.7, 0.2, 1.0, 0, 0.4, 0.8, 0.6, 0.15];
  const games: { name: string; u: U; top: number[]; distinct: boolean }[] = [
    { name: 'additive', u: additive(a), top: [6, 0, 9], distinct: true },
    { name: 'unanimity', u: unanimity([1, 4, 9]), top: [1, 4, 9], distinct: false },
    { name: 'apex', u: apex(n, 3), top: [3], distinct: false },
    {
      name: 'saturating',
      u: (s) => Math.sqrt(s.reduce((t, x, i) => t + x * a[i], 0)),
      top: [6, 0, 9], distinct: true,
    },
  ];

  async function estimate(u: U, over: Partial<ProfileSettings>, samples: number): Promise<ProfileFile> {
    return runProfiler(game(n, u), {
      settings: settings(shape, over), modelPath: 'synthetic', maxSamples: samples, tolerance: 0, checkpointEvery: 500,
    });
  }

  for (const g of games) {
    it(`${g.name}: max error small against the value spread, rankings agree`, async () => {
      const sizes = defaultSizes(n);
      expect(sizes).toEqual([2, 3, 5, 6]);
      const exact = exactSliced(n, g.u, sizes);
      const p = await estimate(g.u, {}, 3000);
      const est = p.values.flat();
      const spread = Math.max(...exact) - Math.min(...exact);
      expect(spread).toBeGreaterThan(0);
      const err = Math.max(...est.map((x, i) => Math.abs(x - exact[i])));
      expect(err).toBeLessThan(0.08 * spread);
      // Each run alone is also close, and the runs' values average to the estimate.
      for (const rs of p.runStates) {
        const v = rs.values.flat();
        expect(Math.max(...v.map((x, i) => Math.abs(x - exact[i])))).toBeLessThan(0.12 * spread);
      }
      expect(new Set(topK(est, g.top.length))).toEqual(new Set(g.top));
      if (g.distinct) {
        expect(spearman(est, exact)).toBeGreaterThan(0.98);
        expect(topK(est.map((x) => -x), 1)).toEqual([7]); // the dummy ranks last
      }
    });
  }

  it('additive game: the estimate approaches (n·a_i − A)/(n − 1), not a_i; random size order converges too', async () => {
    const A = sum(a);
    const closed = a.map((ai) => (n * ai - A) / (n - 1));
    const p = await estimate(additive(a), { sizeOrder: 'random', seed: 3 }, 3000);
    const est = p.values.flat();
    const spread = Math.max(...closed) - Math.min(...closed);
    expect(Math.max(...est.map((x, i) => Math.abs(x - closed[i])))).toBeLessThan(0.06 * spread);
    // It is far from the Shapley values a_i (the dummy is clearly negative).
    expect(est[7]).toBeLessThan(-0.5 * A / (n - 1));
  });

  it('more samples shrink the error (runs agree better: MAE history trends down)', async () => {
    const u = games[0].u;
    const exact = exactSliced(n, u, defaultSizes(n));
    const err = (p: ProfileFile) => Math.max(...p.values.flat().map((x, i) => Math.abs(x - exact[i])));
    const small = await estimate(u, {}, 100);
    const large = await estimate(u, {}, 3000);
    expect(err(large)).toBeLessThan(err(small));
    expect(large.maeHistory.at(-1)!.mae).toBeLessThan(small.maeHistory.at(-1)!.mae);
  });

  it('the reference S-side-only mode matches its own exact enumeration', async () => {
    for (const g of [games[0], games[2]]) {
      const sizes = defaultSizes(n);
      const exact = exactSliced(n, g.u, sizes, true);
      const p = await estimate(g.u, { sSideOnly: true }, 3000);
      expect(p.runStates[0].sizes).toEqual(sizes); // only H, no n − H
      const est = p.values.flat();
      const spread = Math.max(...exact) - Math.min(...exact);
      expect(Math.max(...est.map((x, i) => Math.abs(x - exact[i])))).toBeLessThan(0.08 * spread);
      // Both-sides exact values differ from the S-side-only ones (the modes are not interchangeable).
      const bothExact = exactSliced(n, g.u, sizes);
      expect(Math.max(...bothExact.map((x, i) => Math.abs(x - exact[i])))).toBeGreaterThan(0.05 * spread);
    }
  });

  it('the same seed gives bit-identical profiles; another seed other samples', async () => {
    const u = games[3].u;
    const strip = (p: ProfileFile) => JSON.stringify({ ...p, createdAt: 0, updatedAt: 0, cost: 0 });
    const x = await estimate(u, {}, 200);
    const y = await estimate(u, {}, 200);
    expect(strip(x)).toBe(strip(y));
    const z = await estimate(u, { seed: 8 }, 200);
    expect(z.runStates[0].records).not.toEqual(x.runStates[0].records);
    // The run index is mixed into the sample seed separately: run 1 of seed 7 is not run 0 of seed 8.
    expect(x.runStates[1].records).not.toEqual(z.runStates[0].records);
  });

  it('values, sums and counts are consistent with the records (accumulate/slicedValues)', async () => {
    const u = games[1].u;
    const s = settings(shape);
    const p = await estimate(u, {}, 64);
    const vs = valueSizes(n, s.sizes);
    expect(p.runStates[0].sizes).toEqual(vs);
    for (const rs of p.runStates) {
      const recs = rs.records.map(([k, size, uu, hex]) => {
        const d = drawCoalition({ n, sizes: s.sizes, seed: s.seed, run: rs.run, sizeOrder: s.sizeOrder }, k);
        expect(size).toBe(d.size);
        // The recorded u is U(S) − U(N\S) of the drawn coalition.
        expect(uu).toBe(u(d.coalition) - u(d.coalition.map((b) => 1 - b)));
        expect(hex.length).toBe(n / 4);
        return { k, size, u: uu, coalition: d.coalition };
      });
      expect(recs.map((r) => r.k)).toEqual(Array.from({ length: 64 }, (_, k) => k));
      const acc = accumulate(n, recs);
      vs.forEach((j, jj) => {
        for (let i = 0; i < n; i++) {
          expect(rs.sums[jj][i]).toBe(acc.sums[i][j]);
          expect(rs.counts[jj][i]).toBe(acc.counts[i][j]);
        }
      });
      // Every sample counts once per player: on its S side or its N\S side.
      for (let i = 0; i < n; i++) expect(sum(rs.counts.map((row) => row[i]))).toBe(64);
      expect(rs.values.flat()).toEqual(slicedValues(acc, vs));
    }
    const mean = p.runStates[0].values.flat().map((v, i) => (v + p.runStates[1].values.flat()[i]) / 2);
    expect(p.values.flat()).toEqual(mean);
    // buildProfile from the same records reproduces the values.
    const rebuilt = buildProfile(s, 'synthetic', p.runStates.map((rs) => rs.records.map(([k, size, uu]) => ({
      k, size, u: uu, coalition: drawCoalition({ n, sizes: s.sizes, seed: s.seed, run: rs.run }, k).coalition,
    }))));
    expect(rebuilt.runStates).toEqual(p.runStates);
  });

  it('stops early once the runs agree (MAE below the tolerance, every size covered)', async () => {
    const u: U = additive(a.map((x) => x * 1e-3));
    const p = await runProfiler(game(n, u), { settings: settings(shape), modelPath: 'synthetic', maxSamples: 4000, checkpointEvery: 16 });
    expect(p.converged).toBe(true);
    expect(p.samples).toBeLessThan(4000);
    expect(p.maeHistory.at(-1)!.mae).toBeLessThan(1 / n);
    for (const rs of p.runStates) for (const row of rs.counts) for (const c of row) expect(c).toBeGreaterThan(0);
  });
});
