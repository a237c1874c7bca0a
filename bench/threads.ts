/**
 * `npm run bench:threads` (issue #7: "its own small thread pool, or worker threads on the TS side — measure which
 * is better"). The same F32 matmuls, split over 2 threads two ways:
 *  - pool: the addon's pthread pool (what cokv uses): one N-API call, the C side splits rows or tiles;
 *  - workers: a Node worker_thread plus the main thread, each calling the addon single-threaded on half of W's rows
 *    (weights, x and out in SharedArrayBuffers), synchronised per call with Atomics — waiting in Atomics.wait, or
 *    spinning on Atomics.load (the fastest hand-off JS has); plus the bare round-trip cost of that hand-off.
 * against the addon on 1 thread. Shapes: decode GEMVs of the SmolLM2-135M shape (K576 N1536, the 113 MB LM head
 * K576 N49152) and a 512-row prefill GEMM (K576 N1536). Prints µs per call and the speed-up over 1 thread.
 */
import { Worker } from 'node:worker_threads';
import { NATIVE_ADDON_PATH, loadNativeAddon } from '../src/backend/native.js';
import { machineLine, markdownTable, median } from './common.js';

interface Shared { ctrl: SharedArrayBuffer; x: SharedArrayBuffer; w: SharedArrayBuffer; out: SharedArrayBuffer; M: number; N: number; K: number; spin: boolean; addonPath: string }

/**
 * Worker source (plain JS, run with `eval`: worker threads do not inherit the tsx loader): wait (or spin) for a new
 * request in ctrl[0] (main → worker, −1 = stop), run `setup`-prepared `body`, answer in ctrl[1] (worker → main).
 * `workerData` holds `ctrl` (an 8-byte SharedArrayBuffer) and `spin`.
 */
function workerSource(setup: string, body: string): string {
  return `
const { workerData: s } = require('node:worker_threads');
const ctrl = new Int32Array(s.ctrl);
${setup}
let seen = 0;
for (;;) {
  if (s.spin) while (Atomics.load(ctrl, 0) === seen) {}
  else Atomics.wait(ctrl, 0, seen);
  seen = Atomics.load(ctrl, 0);
  if (seen < 0) break;
  ${body}
  Atomics.store(ctrl, 1, seen);
  Atomics.notify(ctrl, 1);
}`;
}

/** The worker's half of the product: rows [N/2, N) of W. */
const MATMUL_WORKER = workerSource(`
const addon = require(s.addonPath);
const half = s.N >> 1, rest = s.N - half;
const x = new Float32Array(s.x), w = new Float32Array(s.w, half * s.K * 4, rest * s.K);
const tmp = new Float32Array(s.M * rest), out = new Float32Array(s.out);`, `
  addon.matmul(tmp, x, s.M, rest, s.K, w, 0);
  for (let m = 0; m < s.M; m++) out.set(tmp.subarray(m * rest, (m + 1) * rest), m * s.N + half);`);

/** Main side of one request: post `seq`, run `work` meanwhile, wait (or spin) for the worker's answer. */
function handOff(ctrl: Int32Array, seq: number, spin: boolean, work: () => void, failed: () => Error | undefined): void {
  Atomics.store(ctrl, 0, seq);
  if (!spin) Atomics.notify(ctrl, 0);
  work();
  while (Atomics.load(ctrl, 1) !== seq) {
    const e = failed();
    if (e) throw e;
    if (!spin) Atomics.wait(ctrl, 1, Atomics.load(ctrl, 1), 50);
  }
}

async function startWorker(src: string, data: object): Promise<{ worker: Worker; failed: () => Error | undefined }> {
  const worker = new Worker(src, { eval: true, workerData: data });
  let err: Error | undefined;
  worker.on('error', (e) => { err = e; });
  await new Promise<void>((resolve) => worker.once('online', () => resolve()));
  return { worker, failed: () => err };
}

async function stopWorker(ctrl: Int32Array, worker: Worker): Promise<void> {
  Atomics.store(ctrl, 0, -1);
  Atomics.notify(ctrl, 0);
  await worker.terminate();
}

async function main(): Promise<void> {
  const addon = loadNativeAddon();
  if (!addon) { console.error('native addon not built (npm run build:native)'); process.exit(1); }
  const rows: (string | number)[][] = [];
  for (const [M, K, N, label] of [[1, 576, 1536, 'GEMV K576 N1536 (decode)'], [1, 576, 49152, 'GEMV K576 N49152 (LM head)'], [512, 576, 1536, 'GEMM M512 K576 N1536 (prefill)']] as const) {
    const sh: Shared = {
      ctrl: new SharedArrayBuffer(8), x: new SharedArrayBuffer(M * K * 4), w: new SharedArrayBuffer(N * K * 4), out: new SharedArrayBuffer(M * N * 4), M, N, K, spin: false, addonPath: process.env.COKV_NATIVE_ADDON ?? NATIVE_ADDON_PATH,
    };
    const x = new Float32Array(sh.x), w = new Float32Array(sh.w), out = new Float32Array(sh.out);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(i) * 0.5;
    for (let i = 0; i < w.length; i++) w[i] = Math.cos(i * 0.37) * 0.04;
    const half = N >> 1;
    const wHalf = new Float32Array(sh.w, 0, half * K), tmp = new Float32Array(M * half);
    const reps = M > 1 ? 40 : N > 10000 ? 200 : 4000;
    const timeIt = (fn: () => void): number => {
      for (let i = 0; i < Math.min(50, reps); i++) fn();
      const trials: number[] = [];
      for (let t = 0; t < 5; t++) {
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) fn();
        trials.push(((performance.now() - t0) * 1000) / reps);
      }
      return median(trials);
    };
    addon.setThreads(1);
    const one = timeIt(() => addon.matmul(out, x, M, N, K, w, 0));
    const ref = out.slice();
    addon.setThreads(2);
    const pool = timeIt(() => addon.matmul(out, x, M, N, K, w, 0));
    addon.setThreads(1);
    const viaWorkers: number[] = [];
    for (const spin of [false, true]) {
      const { worker, failed } = await startWorker(MATMUL_WORKER, { ...sh, spin });
      const ctrl = new Int32Array(sh.ctrl);
      let seq = 0;
      const call = () => handOff(ctrl, ++seq, spin, () => {
        addon.matmul(tmp, x, M, half, K, wHalf, 0);
        for (let m = 0; m < M; m++) out.set(tmp.subarray(m * half, (m + 1) * half), m * N);
      }, failed);
      out.fill(0);
      call();
      let worst = 0;
      for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i] - ref[i]));
      if (worst > 1e-4) throw new Error(`worker split differs from the 1-thread product by ${worst}`);
      viaWorkers.push(timeIt(call));
      await stopWorker(ctrl, worker);
    }
    const f = (us: number) => `${us.toFixed(1)} (${(one / us).toFixed(2)}×)`;
    rows.push([label, one.toFixed(1), f(pool), f(viaWorkers[0]), f(viaWorkers[1])]);
    console.error(rows[rows.length - 1].join('  '));
  }
  addon.setThreads(2);
  // The hand-off alone: main → worker → main round trips through Atomics, no work.
  const pingRows: (string | number)[][] = [];
  for (const spin of [false, true]) {
    const ctrl = new Int32Array(new SharedArrayBuffer(8));
    const { worker, failed } = await startWorker(workerSource('', ''), { ctrl: ctrl.buffer, spin });
    let seq = 0;
    const trip = () => handOff(ctrl, ++seq, spin, () => {}, failed);
    for (let i = 0; i < 1000; i++) trip();
    const trials: number[] = [];
    for (let t = 0; t < 5; t++) {
      const t0 = performance.now();
      for (let i = 0; i < 5000; i++) trip();
      trials.push(((performance.now() - t0) * 1000) / 5000);
    }
    pingRows.push([spin ? 'spinning on Atomics.load' : 'Atomics.wait / notify', median(trials).toFixed(2)]);
    await stopWorker(ctrl, worker);
  }
  console.log(`\nThreads: addon pool vs worker_threads, F32, µs per call (speed-up over 1 thread); ${machineLine()}\n`);
  console.log(markdownTable(['product', '1 thread', 'addon pool, 2 threads', '2 threads: worker + main, Atomics.wait', '2 threads: worker + main, spinning'], rows));
  console.log('\nThe worker columns call the addon from two JS threads; its calls take a process-wide lock (the pool and its scratch');
  console.log('buffers are shared), so the two halves run one after the other: that is what worker threads give with this addon.');
  console.log('\nHand-off alone, main → worker → main with no work (µs per round trip):\n');
  console.log(markdownTable(['mechanism', 'µs'], pingRows));
}

await main();
