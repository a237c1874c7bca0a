/**
 * Cost of the load-time NaN/Inf scan (src/model/loaders/finite.ts) against the whole weight load: the time spent in
 * the scan during loadWeights (each tensor is scanned right after its read), then every loaded tensor scanned
 * again after the load (cache cold), native and TS.
 * usage: node --import tsx bench/scan-cost.ts MODEL...
 */
import { openModel } from '../src/model/load.js';
import { scanClock, scanNonFinite } from '../src/model/loaders/finite.js';
import type { Weight } from '../src/model/weights.js';

function tensors(w: ReturnType<Awaited<ReturnType<typeof openModel>>['loadWeights']>): (Weight | Float32Array)[] {
  const out: (Weight | Float32Array)[] = [w.tokenEmbedding, w.finalNorm];
  if (w.lmHead !== w.tokenEmbedding) out.push(w.lmHead);
  for (const l of w.layers) for (const v of Object.values(l)) if (v) out.push(v as Weight | Float32Array);
  return out;
}

function scanAll(ts: (Weight | Float32Array)[], native: boolean): number {
  const t0 = performance.now();
  for (const t of ts) {
    const r = t instanceof Float32Array ? scanNonFinite('f32', t, t.length, native) : scanNonFinite(t.dtype, t.data, t.rows * t.cols, native);
    if (r !== -1) throw new Error('unexpected non-finite');
  }
  return performance.now() - t0;
}

for (const file of process.argv.slice(2)) {
  const src = await openModel(file);
  let w = src.loadWeights();
  let load = Infinity, inLoad = 0;
  for (let i = 0; i < 3; i++) {
    const s0 = scanClock.ms, t0 = performance.now();
    w = src.loadWeights();
    const t = performance.now() - t0;
    if (t < load) [load, inLoad] = [t, scanClock.ms - s0];
  }
  const ts = tensors(w);
  const bytes = ts.reduce((a, t) => a + (t instanceof Float32Array ? t.byteLength : t.data.byteLength), 0);
  const best = (native: boolean): number => Math.min(...[0, 1, 2].map(() => scanAll(ts, native)));
  const nat = best(true), js = best(false);
  console.log(`${file}: ${(bytes / 2 ** 20).toFixed(0)} MiB kept; loadWeights ${load.toFixed(0)} ms, of which the scan ` +
    `${inLoad.toFixed(1)} ms (${((100 * inLoad) / load).toFixed(1)}%); rescan after the load: native ${nat.toFixed(1)} ms, ` +
    `TS ${js.toFixed(1)} ms (${((100 * js) / load).toFixed(1)}% of the load)`);
}
