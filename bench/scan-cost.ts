/**
 * Cost of the load-time NaN/Inf scan (src/model/loaders/finite.ts) against the whole weight load, native and TS:
 * loads each model given on the command line, then scans every loaded tensor again with each implementation.
 * usage: node --import tsx bench/scan-cost.ts MODEL...
 */
import { openModel } from '../src/model/load.js';
import { scanNonFinite } from '../src/model/loaders/finite.js';
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
  let load = Infinity;
  let w = src.loadWeights();
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    w = src.loadWeights();
    load = Math.min(load, performance.now() - t0);
  }
  const ts = tensors(w);
  const bytes = ts.reduce((a, t) => a + (t instanceof Float32Array ? t.byteLength : t.data.byteLength), 0);
  const best = (native: boolean): number => Math.min(...[0, 1, 2].map(() => scanAll(ts, native)));
  const nat = best(true), js = best(false);
  console.log(`${file}: ${(bytes / 2 ** 20).toFixed(0)} MiB kept; loadWeights ${load.toFixed(0)} ms (scan included); ` +
    `scan native ${nat.toFixed(1)} ms (${((100 * nat) / load).toFixed(1)}%), TS ${js.toFixed(1)} ms (${((100 * js) / load).toFixed(1)}%)`);
}
