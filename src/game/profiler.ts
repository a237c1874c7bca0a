/**
 * The profiling loop: draw coalitions for each run's next samples, evaluate S and N\S for all of them as one batch
 * of coalitions, record u = U(S) − U(N\S), checkpoint atomically, and stop when the runs agree (MAE < tolerance)
 * or at `maxSamples`. Shards take the sample indices k ≡ i (mod count); `mergeProfiles` unions their records.
 */
import fs from 'node:fs';
import { CokvError } from '../errors.js';
import type { Coalition } from './players.js';
import { complement } from './players.js';
import {
  accumulate, drawCoalition, meanAbsoluteError, slicedValues, valueSizes, type SampleRecord,
} from './sliced-shapley.js';
import {
  PROFILE_SCHEMA, readProfile, recordsFromJson, recordsToJson, settingsMismatch, writeProfileAtomic,
  type ProfileFile, type ProfileSettings, type RunState,
} from './profile-file.js';

/** Anything with players and a batched utility. */
export interface Game {
  readonly n: number;
  evaluate(coalitions: Coalition[]): number[];
  readonly cost?: ProfileFile['cost'];
}

export interface ProgressInfo {
  samples: number;
  maxSamples: number;
  samplesPerSecond: number;
  etaSeconds: number;
  mae: number | undefined;
}

export interface ProfilerOptions {
  settings: ProfileSettings;
  modelPath: string;
  /** Samples per run at most. */
  maxSamples: number;
  /** Stop when the runs' MAE falls below this (default 1/n). */
  tolerance?: number;
  /** Samples per run between checkpoints (and convergence checks). */
  checkpointEvery?: number;
  /** Never stop on convergence before this many samples per run (default 4·|H|), nor before every player has
   * at least one sample at every value size in every run. */
  minSamples?: number;
  shard?: { index: number; count: number };
  out?: string;
  resume?: boolean;
  onProgress?: (p: ProgressInfo) => void;
}

function toGrid(v: number[], cols: number): number[][] {
  return Array.from({ length: v.length / cols }, (_, l) => v.slice(l * cols, (l + 1) * cols));
}

function runState(run: number, seed: number, records: SampleRecord[], s: ProfileSettings, n: number): RunState {
  const acc = accumulate(n, records, s.sSideOnly);
  const sizes = valueSizes(n, s.sizes, s.sSideOnly);
  const values = slicedValues(acc, sizes);
  return {
    run, seed,
    records: recordsToJson(records),
    sizes,
    sums: sizes.map((j) => Array.from({ length: n }, (_, i) => acc.sums[i][j])),
    counts: sizes.map((j) => Array.from({ length: n }, (_, i) => acc.counts[i][j])),
    values: toGrid(values, s.shape[1]),
  };
}

/** Build the profile object from per-run records. */
export function buildProfile(
  settings: ProfileSettings, modelPath: string, records: SampleRecord[][], extra: Partial<ProfileFile> = {},
): ProfileFile {
  const n = settings.shape[0] * settings.shape[1];
  const runStates = records.map((r, run) => runState(run, settings.seed, r, settings, n));
  const flat = runStates.map((rs) => rs.values.flat());
  const mean = flat[0].map((_, i) => flat.reduce((s, v) => s + v[i], 0) / flat.length);
  const now = new Date().toISOString();
  return {
    schema: PROFILE_SCHEMA,
    ...settings,
    modelPath,
    createdAt: extra.createdAt ?? now,
    updatedAt: now,
    shard: extra.shard,
    runStates,
    values: toGrid(mean, settings.shape[1]),
    samples: Math.min(...records.map((r) => r.length)),
    // Explicit, so a merge's first shard does not lend the merged profile its own limit or tolerance.
    maxSamples: extra.maxSamples,
    tolerance: extra.tolerance,
    maeHistory: extra.maeHistory ?? [],
    converged: extra.converged ?? false,
    cost: extra.cost ?? { seconds: 0, prefills: 0, prefillTokens: 0, decodeRows: 0, coalitionEvaluations: 0 },
  };
}

export async function runProfiler(game: Game, o: ProfilerOptions): Promise<ProfileFile> {
  const s = o.settings;
  const n = game.n;
  if (n !== s.shape[0] * s.shape[1]) throw new Error(`game has ${n} players, settings say ${s.shape.join('×')}`);
  for (const j of s.sizes) {
    if (!(Number.isInteger(j) && j >= 1 && j <= n - 1)) throw new CokvError(`--sizes: ${j} is outside [1, ${n - 1}]`, 'flag');
  }
  const tolerance = o.tolerance ?? 1 / n;
  const every = o.checkpointEvery ?? Math.max(s.sizes.length, 8);
  const minSamples = o.minSamples ?? 4 * s.sizes.length;
  const shard = o.shard ?? { index: 0, count: 1 };
  const records: SampleRecord[][] = Array.from({ length: s.runs }, () => []);
  let maeHistory: ProfileFile['maeHistory'] = [];
  let createdAt: string | undefined;
  let prevConverged = false;
  let prevMax: number | undefined;
  const baseCost = { seconds: 0, prefills: 0, prefillTokens: 0, decodeRows: 0, coalitionEvaluations: 0 };

  if (o.resume && o.out && fs.existsSync(o.out)) {
    const prev = readProfile(o.out, '--resume');
    const why = settingsMismatch(s, prev);
    if (why) throw new CokvError(`--resume ${o.out}: the profile was made with other settings (${why})`, 'flag');
    if ((prev.shard ?? '0/1') !== `${shard.index}/${shard.count}`) {
      throw new CokvError(`--resume ${o.out}: the profile is shard ${prev.shard ?? '0/1'}, not ${shard.index}/${shard.count}`, 'flag');
    }
    // readProfile validated the records (k contiguous for this shard, sizes, u, coalitions) and settingsMismatch
    // the run count, so they continue exactly where the killed run stopped.
    prev.runStates.forEach((rs, r) => records[r].push(...recordsFromJson(rs.records, n)));
    maeHistory = prev.maeHistory;
    createdAt = prev.createdAt;
    prevConverged = prev.converged;
    prevMax = prev.maxSamples ?? prev.samples;
    Object.assign(baseCost, prev.cost);
  }
  // A converged profile is finished: resuming it again (a retry loop, a second `--resume`) must not change it.
  // Only a larger --samples than it was run with continues it, up to that many samples (it has converged
  // already, so the tolerance no longer stops it).
  const finished = prevConverged && o.maxSamples <= (prevMax ?? 0);
  const stopOnConvergence = !prevConverged;

  // Sample indices of this shard, in order; resume continues after the last recorded one.
  let next = records[0].length ? Math.max(...records[0].map((r) => r.k)) + shard.count : shard.index;
  const t0 = performance.now();
  let done = records[0].length;
  const startDone = done;
  let converged = false;
  // What is returned when nothing is left to do (a resumed profile that already has maxSamples): the file's own
  // cost and convergence, not zeros.
  let profile = buildProfile(s, o.modelPath, records, {
    maeHistory, createdAt, shard: shardLabel(o.shard), cost: { ...baseCost }, converged: prevConverged, maxSamples: prevMax, tolerance,
  });
  const currentCost = () => {
    const g = game.cost ?? { seconds: (performance.now() - t0) / 1000, prefills: 0, prefillTokens: 0, decodeRows: 0, coalitionEvaluations: 0 };
    return {
      seconds: baseCost.seconds + g.seconds,
      prefills: baseCost.prefills + g.prefills,
      prefillTokens: baseCost.prefillTokens + g.prefillTokens,
      decodeRows: baseCost.decodeRows + g.decodeRows,
      coalitionEvaluations: baseCost.coalitionEvaluations + g.coalitionEvaluations,
    };
  };
  while (!finished && done < o.maxSamples) {
    const chunk: number[] = [];
    while (chunk.length < every && done + chunk.length < o.maxSamples) {
      chunk.push(next);
      next += shard.count;
    }
    const drawn: { run: number; k: number; size: number; coalition: Coalition }[] = [];
    for (let r = 0; r < s.runs; r++) {
      for (const k of chunk) {
        const d = drawCoalition({ n, sizes: s.sizes, seed: s.seed, run: r, sizeOrder: s.sizeOrder }, k);
        drawn.push({ run: r, k, ...d });
      }
    }
    const coalitions: Coalition[] = [];
    for (const d of drawn) coalitions.push(d.coalition, complement(d.coalition));
    const u = game.evaluate(coalitions);
    drawn.forEach((d, i) => records[d.run].push({ k: d.k, size: d.size, u: u[2 * i] - u[2 * i + 1], coalition: d.coalition }));
    done += chunk.length;

    let mae: number | undefined;
    profile = buildProfile(s, o.modelPath, records, {
      maeHistory, createdAt, shard: shardLabel(o.shard), cost: currentCost(), maxSamples: o.maxSamples, tolerance,
    });
    if (s.runs >= 2) {
      mae = meanAbsoluteError(profile.runStates[0].values.flat(), profile.runStates[1].values.flat());
      maeHistory.push({ samples: done, mae });
      converged = shard.count === 1 && (prevConverged || isConverged(profile, mae, tolerance, minSamples));
    }
    profile.maeHistory = maeHistory;
    profile.converged = converged;
    if (o.out) writeProfileAtomic(o.out, profile);
    const elapsed = (performance.now() - t0) / 1000;
    const rate = (done - startDone) / Math.max(elapsed, 1e-9);
    o.onProgress?.({ samples: done, maxSamples: o.maxSamples, samplesPerSecond: rate, etaSeconds: (o.maxSamples - done) / Math.max(rate, 1e-9), mae });
    if (converged && stopOnConvergence) break;
  }
  return profile;
}

/** The stopping rule: runs agree (MAE < tolerance), enough samples, every player sampled at every value size. */
function isConverged(p: ProfileFile, mae: number, tolerance: number, minSamples: number): boolean {
  const covered = p.runStates.every((rs) => rs.counts.every((row) => row.every((c) => c > 0)));
  return mae < tolerance && p.samples >= minSamples && covered;
}

function shardLabel(shard?: { index: number; count: number }): string | undefined {
  return shard && shard.count > 1 ? `${shard.index}/${shard.count}` : undefined;
}

/**
 * Merge shard profiles: same settings, disjoint sample indices; the union of records gives exactly the profile
 * one run over all those samples gives. The shard set must be complete (every i/k once) and cover one contiguous
 * range of sample indices: a partial set would otherwise look like a finished, unsharded profile.
 */
export function mergeProfiles(files: string[]): ProfileFile {
  if (files.length === 0) throw new CokvError('profile merge: give at least one profile file', 'flag');
  const profiles = files.map((f) => readProfile(f, 'profile merge'));
  const first = profiles[0];
  const n = first.shape[0] * first.shape[1];
  profiles.forEach((p, i) => {
    const why = settingsMismatch(first, p);
    if (why) throw new CokvError(`profile merge ${files[i]}: other settings than ${files[0]} (${why})`, 'format');
    // Shards computed on other machines (backends) may differ in the last bits of the range-based tolerance.
    const a = p.tolerance, b = first.tolerance;
    if ((a === undefined) !== (b === undefined) || (a !== undefined && b !== undefined && Math.abs(a - b) > 1e-6 * Math.max(Math.abs(a), Math.abs(b)))) {
      throw new CokvError(`profile merge ${files[i]}: tolerance ${String(p.tolerance)} differs from ${files[0]}'s ${String(first.tolerance)}`, 'format');
    }
  });
  const records: SampleRecord[][] = Array.from({ length: first.runs }, () => []);
  const seen = Array.from({ length: first.runs }, () => new Set<number>());
  profiles.forEach((p, i) => p.runStates.forEach((rs, r) => {
    for (const rec of recordsFromJson(rs.records, n)) {
      if (seen[r].has(rec.k)) throw new CokvError(`profile merge ${files[i]}: sample ${rec.k} of run ${r} appears twice (overlapping shards?)`, 'format');
      seen[r].add(rec.k);
      records[r].push(rec);
    }
  }));
  const labels = profiles.map((p) => p.shard ?? '0/1');
  const count = Number(labels[0].split('/')[1]);
  const have = new Map<number, string>();
  labels.forEach((l, i) => {
    const [idx, k] = l.split('/').map(Number);
    if (k !== count) throw new CokvError(`profile merge ${files[i]}: shard ${l}, but ${files[0]} is shard ${labels[0]} (shards of one split share k)`, 'format');
    const dup = have.get(idx);
    if (dup !== undefined) throw new CokvError(`profile merge ${files[i]}: shard ${l} appears twice (also ${dup}; overlapping shards?)`, 'format');
    have.set(idx, files[i]);
  });
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !have.has(i));
  if (missing.length) {
    throw new CokvError(`profile merge: shard${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${count}`).join(', ')} missing; an incomplete shard set would make a profile that looks complete`, 'format');
  }
  const total = records[0].length;
  // Shards that stopped at different --samples leave holes; a resume from the merged file would skip them.
  const ks = records[0].map((r) => r.k).sort((a, b) => a - b);
  const hole = ks.findIndex((k, i) => k !== i);
  if (hole >= 0) {
    const per = profiles.map((p, i) => `${labels[i]}: ${p.samples}`).join(', ');
    throw new CokvError(`profile merge: the shards do not cover samples 0..${total - 1} (sample ${hole} is missing; samples per run ${per}): resume the shorter shards to the same --samples`, 'format');
  }
  const cost = profiles.reduce((c, p) => ({
    seconds: c.seconds + p.cost.seconds, prefills: c.prefills + p.cost.prefills, prefillTokens: c.prefillTokens + p.cost.prefillTokens,
    decodeRows: c.decodeRows + p.cost.decodeRows, coalitionEvaluations: c.coalitionEvaluations + p.cost.coalitionEvaluations,
  }), { seconds: 0, prefills: 0, prefillTokens: 0, decodeRows: 0, coalitionEvaluations: 0 });
  if (count === 1) return { ...first, updatedAt: new Date().toISOString() };
  // Shards run to their own --samples (they never stop on convergence): together, the sum of those.
  const maxSamples = profiles.every((p) => p.maxSamples !== undefined) ? profiles.reduce((a, p) => a + p.maxSamples!, 0) : undefined;
  const merged = buildProfile(first, first.modelPath, records, { cost, createdAt: first.createdAt, tolerance: first.tolerance, maxSamples });
  if (first.runs >= 2) {
    const mae = meanAbsoluteError(merged.runStates[0].values.flat(), merged.runStates[1].values.flat());
    merged.maeHistory = [{ samples: merged.samples, mae }];
    // The run's own stopping rule (its tolerance, recorded by the profiler); without one it cannot be judged.
    merged.converged = first.tolerance !== undefined && isConverged(merged, mae, first.tolerance, 4 * first.sizes.length);
  }
  return merged;
}
