/**
 * `npm run bench:openblas` (issue #7): OpenBLAS's cblas_sgemm as the reference GEMM rate, next to the native
 * backend's F32 matmul measured in the same run, for the prefill shapes M512 K576 N1536 and 1024³ at 1 and 2
 * threads. Installs nothing: if no /usr/lib/x86_64-linux-gnu/libopenblas.so* (or --lib FILE) exists it says so
 * and exits 0. With one, bench/openblas/sgemm.c is compiled with gcc (or $CC) into a temp dir and run per shape
 * and thread count. Both sides compute out[M][N] = x[M][K] · W[N][K]ᵀ and report the median of 3 trials of at
 * least 0.25 s. Options: --threads 1,2, --lib FILE.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import type { Weight } from '../src/model/weights.js';
import { Rng } from '../src/generate/rng.js';
import { machineLine, markdownTable, median } from './common.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const threadCounts = (arg('--threads') ?? '1,2').split(',').map(Number);
const SHAPES: [number, number, number][] = [[512, 576, 1536], [1024, 1024, 1024]];

function findOpenBlas(): string | undefined {
  const given = arg('--lib');
  if (given) return fs.existsSync(given) ? given : undefined;
  const dir = '/usr/lib/x86_64-linux-gnu';
  if (!fs.existsSync(dir)) return undefined;
  const libs = fs.readdirSync(dir).filter((f) => /^libopenblas\.so(\.\d+)*$/.test(f)).sort();
  return libs.length ? path.join(dir, libs[0]) : undefined;
}

const lib = findOpenBlas();
if (!lib) {
  console.log('OpenBLAS not found (/usr/lib/x86_64-linux-gnu/libopenblas.so*): skipped. On Debian/Ubuntu: apt-get install libopenblas-dev.');
  process.exit(0);
}
const addon = loadNativeAddon();
if (!addon) {
  console.log(`native backend unavailable (${nativeLoadError()}): skipped.`);
  process.exit(0);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-bench-openblas-'));
const exe = path.join(tmp, 'sgemm');
try {
  const cc = process.env.CC ?? 'gcc';
  // Link the library file itself, so a runtime-only install (libopenblas.so.0, no dev symlink) works too.
  const b = spawnSync(cc, ['-O2', '-o', exe, path.join(HERE, 'openblas/sgemm.c'), lib, `-Wl,-rpath,${path.dirname(lib)}`], { encoding: 'utf8' });
  if (b.status !== 0) {
    console.log(`cannot compile bench/openblas/sgemm.c with ${cc} (${b.status ?? b.error?.message}): ${b.stderr}\nskipped.`);
    fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(0);
  }

  const rng = new Rng(3);
  const rand = (n: number, s = 1): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rng.next() * 2 - 1) * s;
    return a;
  };
  /** Median seconds per call over 3 trials of at least 0.25 s each, after one warm-up call. */
  const time = (fn: () => void): number => {
    fn();
    const trials: number[] = [];
    for (let t = 0; t < 3; t++) {
      let n = 0;
      const t0 = performance.now();
      do { fn(); n++; } while (performance.now() - t0 < 250);
      trials.push((performance.now() - t0) / 1000 / n);
    }
    return median(trials);
  };

  const load0 = os.loadavg();
  const rows: (string | number)[][] = [];
  for (const [M, K, N] of SHAPES) {
    const w: Weight = { dtype: 'f32', rows: N, cols: K, data: rand(N * K, 0.05) };
    const x = rand(M * K), out = new Float32Array(M * N);
    for (const t of threadCounts) {
      const be = new NativeBackend(addon, { threads: t });
      const nat = (2 * M * N * K) / time(() => be.matmul(out, x, M, w)) / 1e9;
      const r = spawnSync(exe, [String(M), String(K), String(N), String(t)], { encoding: 'utf8', env: { ...process.env, OPENBLAS_NUM_THREADS: String(t) } });
      if (r.status !== 0) throw new Error(`sgemm failed: ${r.stderr}`);
      const blas = Number(r.stdout.trim().split(/\s+/)[4]);
      const row = [`M${M} K${K} N${N}`, t, blas.toFixed(1), nat.toFixed(1), `${((100 * nat) / blas).toFixed(0)}%`];
      rows.push(row);
      console.error(row.join('  '));
    }
  }
  const load1 = os.loadavg();
  const la = (l: number[]): string => l.map((v) => v.toFixed(2)).join(', ');
  console.log(`\nF32 GEMM, OpenBLAS (${path.basename(fs.realpathSync(lib))}) vs cokv native (${machineLine()}; native SIMD level ${addon.info().simd})`);
  console.log(`Load average (1, 5, 15 min) at start: ${la(load0)}; at end: ${la(load1)}.\n`);
  console.log(markdownTable(['GEMM', 'threads', 'OpenBLAS GFLOP/s', 'native GFLOP/s', 'native / OpenBLAS'], rows));
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
