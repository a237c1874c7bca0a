/**
 * `npm run bench:quant` (issue #13): the native matmul on every block type, integer dots (the default: activations
 * quantized to q8_0 / q8_K, AVX2 maddubs kernels for GEMV and small batches, the AVX512-VNNI GEMM for prefill where
 * the CPU runs it) against the same addon with f32 activations (COKV_EXACT_ACTIVATIONS: weights dequantized on the
 * fly), at 1 and 2 threads. Shapes: a Llama-3.2-1B-sized projection (K 2048, N 2048; GEMV = decode, 512 rows =
 * a prefill chunk) and a K 576 one (SmolLM2 / Qwen fallback types). Weight bytes are deterministic pseudo-random
 * (any bytes are valid blocks; the f16 scale fields make finite values in these seeds), so the work is that of a
 * real file. Each cell is the minimum wall time over interleaved repeats (the VM is noisy).
 *
 * Options: --types q4_k,q6_k,... --rows 1,512 --threads 1,2 --repeats N (default 5).
 */
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import { BLOCK, f32ToF16 } from '../src/model/quant.js';
import type { QuantWeight } from '../src/model/weights.js';
import { machineLine, markdownTable } from './common.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const addon = loadNativeAddon();
if (!addon) {
  console.error(`bench:quant: native addon unavailable: ${nativeLoadError()}`);
  process.exit(1);
}
type BlockType = Exclude<QuantWeight['dtype'], 'f16'>;
const types = opt('--types', 'q4_0,q4_1,q5_0,q5_1,q8_0,iq4_nl,q2_k,q3_k,q4_k,q5_k,q6_k,iq4_xs').split(',') as BlockType[];
const rowsList = opt('--rows', '1,512').split(',').map(Number);
const threadsList = opt('--threads', '1,2').split(',').map(Number);
const repeats = Number(opt('--repeats', '5'));
const F16_FIELDS: Record<BlockType, number[]> = {
  q8_0: [0], q4_0: [0], q4_1: [0, 2], q5_0: [0], q5_1: [0, 2], iq4_nl: [0],
  q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208], iq4_xs: [0],
};

function weight(dtype: BlockType, rows: number, cols: number): QuantWeight {
  const { elements, bytes } = BLOCK[dtype];
  const nb = (rows * cols) / elements;
  const data = new Uint8Array(nb * bytes);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  for (let b = 0; b < nb; b++) {
    for (const off of F16_FIELDS[dtype]) {
      const h = f32ToF16(0.001 + ((b * 37) % 101) / 10000);
      data[b * bytes + off] = h & 0xff;
      data[b * bytes + off + 1] = h >> 8;
    }
  }
  return { dtype, rows, cols, data };
}

const int8 = new NativeBackend(addon, { int8Activations: true });
const exact = new NativeBackend(addon, { int8Activations: false });
const before = addon.info().threads;
const table: string[][] = [];
for (const dtype of types) {
  for (const [N, K] of [[2048, 2048], [1536, 576]] as const) {
    if (K % BLOCK[dtype].elements) continue;
    const w = weight(dtype, N, K);
    for (const M of rowsList) {
      const x = new Float32Array(M * K).map((_, i) => Math.sin(i * 0.37));
      const out = new Float32Array(M * N);
      const best = new Map<string, number>();
      const reps = M === 1 ? 40 : 3;
      for (let r = 0; r < repeats; r++) {
        for (const t of threadsList) {
          addon.setThreads(t);
          for (const [name, be] of [['int8', int8], ['f32', exact]] as const) {
            be.matmul(out, x, M, w);
            const t0 = performance.now();
            for (let i = 0; i < reps; i++) be.matmul(out, x, M, w);
            const ms = (performance.now() - t0) / reps;
            const key = `${name}/${t}`;
            best.set(key, Math.min(best.get(key) ?? Infinity, ms));
          }
        }
      }
      const rate = (ms: number): string => (M === 1 ? `${(w.data.length / ms / 1e6).toFixed(1)} GB/s` : `${((2 * M * N * K) / ms / 1e6).toFixed(0)} GFLOP/s`);
      const row = [dtype, `${N}×${K}`, String(M)];
      for (const t of threadsList) row.push(rate(best.get(`int8/${t}`)!), rate(best.get(`f32/${t}`)!), (best.get(`f32/${t}`)! / best.get(`int8/${t}`)!).toFixed(2));
      if (threadsList.length > 1) row.push((best.get(`int8/${threadsList[0]}`)! / best.get(`int8/${threadsList[threadsList.length - 1]}`)!).toFixed(2));
      table.push(row);
      console.error(row.join(' | '));
    }
  }
}
addon.setThreads(before);
const head = ['type', 'N×K', 'rows'];
for (const t of threadsList) head.push(`int8 ${t}t`, `f32 act. ${t}t`, `int8 / f32 (${t}t)`);
if (threadsList.length > 1) head.push(`int8 ${threadsList[threadsList.length - 1]}t / ${threadsList[0]}t`);
const info = addon.info() as { avx2: boolean; vnni?: boolean };
console.log(`\n${machineLine()}; AVX2 ${info.avx2 ? 'yes' : 'no'}, AVX512-VNNI ${info.vnni ? 'yes (probed)' : 'no'}; min over ${repeats} interleaved repeats\n`);
console.log(markdownTable(head, table));
