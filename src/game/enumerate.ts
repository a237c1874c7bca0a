/**
 * Head values that need no sampling, on any game with `evaluate(coalitions) → U`:
 *
 *  - `enumerateGame`: U of all 2^k coalitions of the first k players (the rest held full), then exact Shapley
 *    values and exact sliced values at the given sizes (the estimator's targets, for k ≤ 16);
 *  - `leaveOneOut`: the single-head ablation value v_i = U(N) − U(N ∖ {i}) for every player (n + 1 coalitions per
 *    sample) — the baseline "how much does cutting this head alone cost", which ignores redundancy between heads.
 *
 * The CLI (`cokv profile --exact`, `--estimator loo`) and the experiments call these.
 */
import { Players, type Coalition } from './players.js';
import { exactShapley, exactSliced } from './sliced-shapley.js';

/** What these functions need of a game (`ModelGame` and the synthetic test games have it). */
export interface EvaluableGame {
  readonly n: number;
  evaluate(coalitions: Coalition[]): number[];
}

export interface EnumerationResult {
  /** Players enumerated (the first `players` ids; the others are in every coalition). */
  players: number;
  /** U of coalition mask m (bit i = player i) over the enumerated players. */
  utilities: Float64Array;
  shapley: number[];
  sliced: number[];
  seconds: number;
}

/**
 * U of every coalition of the first `players` players (default all; at most 20), evaluated `chunk` at a time, and
 * the exact Shapley and sliced values of that (sub)game. `onProgress(done, total)` after each chunk.
 */
export function enumerateGame(
  game: EvaluableGame, o: { players?: number; sizes: number[]; sSideOnly?: boolean; chunk?: number; onProgress?: (done: number, total: number) => void },
): EnumerationResult {
  const n = game.n;
  const k = o.players ?? n;
  if (!(Number.isInteger(k) && k >= 1 && k <= Math.min(n, 20))) throw new Error(`enumerateGame: ${k} players cannot be enumerated (game of ${n}, at most 20)`);
  const N = 2 ** k;
  const utilities = new Float64Array(N);
  const chunk = o.chunk ?? 256;
  const t0 = performance.now();
  for (let m0 = 0; m0 < N; m0 += chunk) {
    const cs: Coalition[] = [];
    for (let m = m0; m < Math.min(N, m0 + chunk); m++) cs.push(Uint8Array.from({ length: n }, (_, i) => (i < k ? (m >> i) & 1 : 1)));
    game.evaluate(cs).forEach((u, j) => { utilities[m0 + j] = u; });
    o.onProgress?.(Math.min(N, m0 + chunk), N);
  }
  const U = (s: Coalition) => {
    let m = 0;
    for (let i = 0; i < k; i++) m |= s[i] << i;
    return utilities[m];
  };
  return {
    players: k, utilities,
    shapley: exactShapley(k, U),
    sliced: exactSliced(k, U, o.sizes, o.sSideOnly ?? false),
    seconds: (performance.now() - t0) / 1000,
  };
}

export interface LeaveOneOutResult {
  /** v_i = U(N) − U(N ∖ {i}), by player id. */
  values: number[];
  full: number;
  seconds: number;
}

/** Single-head ablation values of every player: one batch of n + 1 coalitions (N and each N ∖ {i}). */
export function leaveOneOut(game: EvaluableGame): LeaveOneOutResult {
  const n = game.n;
  const t0 = performance.now();
  const all = new Uint8Array(n).fill(1);
  const cs: Coalition[] = [all];
  for (let i = 0; i < n; i++) {
    const s = all.slice();
    s[i] = 0;
    cs.push(s);
  }
  const u = game.evaluate(cs);
  return { values: u.slice(1).map((x) => u[0] - x), full: u[0], seconds: (performance.now() - t0) / 1000 };
}

/** Values by player id as the [player layer][kvHead] grid profiles store. */
export function valuesGrid(players: Players, values: readonly number[]): number[][] {
  const G = players.kvHeads;
  return Array.from({ length: players.layers.length }, (_, r) => values.slice(r * G, (r + 1) * G));
}
