/**
 * The WASM SIMD backend: AssemblyScript kernels (wasm/assembly/index.ts, built into the committed wasm/cokv.wasm by
 * `npm run build:wasm`; plain 128-bit SIMD, no relaxed SIMD, one thread). Used when the native addon is unavailable.
 *
 * Weights live inside the module's memory so a call only copies x in and the result out: the first matmul with a
 * weight copies its bytes in (cached by the weight's data array, freed when that array is garbage-collected), so
 * weights must not be modified after they are first used. F32 and Q8_0 run natively in WASM (GEMV: rows of W against
 * each x row; GEMM from 4 rows of x: packed 4x8 micro-kernel); every other block type (F16, Q4_0, Q4_1, Q5_0/1, the
 * K-quants, IQ4_NL/XS) is dequantized in TypeScript one row tile at a time into WASM memory and then multiplied as F32. All memory is capped at 4 GiB (wasm32).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttendArgs, AttendF16Args, Backend } from './types.js';
import { HostOpsFromReference } from './host-ops.js';
import type { Weight } from '../model/weights.js';
import { dequantRow, quantRowBytes } from '../model/quant.js';

/** The bits of the WebAssembly JS API used here (the project's `lib` has no DOM/WebAssembly typings). */
interface WasmMemory { readonly buffer: ArrayBuffer; grow(pages: number): number }
/** A compiled module (opaque). */
export type WasmModule = object;
const WA = (globalThis as unknown as {
  WebAssembly: {
    Module: new (bytes: Uint8Array) => WasmModule;
    Instance: new (m: WasmModule, imports: object) => { exports: unknown };
  };
}).WebAssembly;

interface WasmExports {
  memory: WasmMemory;
  heapBase(): number;
  rowsF32(out: number, ldo: number, x: number, m: number, k: number, w: number, n0: number, n1: number): void;
  rowsQ8(out: number, ldo: number, x: number, m: number, k: number, w: number, n0: number, n1: number): void;
  packA(dst: number, x: number, m: number, k: number): void;
  gemm(out: number, ldo: number, apack: number, m: number, k: number, w: number, dtype: number, n: number,
    bpack: number, row: number, tmp: number): void;
}

export const WASM_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../wasm/cokv.wasm');
const PAGE = 65536;
const MAX_BYTES = 65536 * PAGE;
const GEMM_MIN_ROWS = 4;
const KC = 256;
const NC = 128;
const TILE_ROWS = 64;
const align = (n: number) => Math.ceil(n / 64) * 64;

let compiled: WasmModule | undefined;

/** Compile the committed module once (synchronously; it is a few KB). Throws if it is missing or invalid. */
export function wasmModule(file = WASM_PATH): WasmModule {
  compiled ??= new WA.Module(fs.readFileSync(file));
  return compiled;
}

/** First-fit allocator over the module's memory above its static data; grows the memory as needed. */
class Heap {
  private free: { off: number; size: number }[] = [];
  private top: number;
  constructor(private readonly mem: WasmMemory, base: number) {
    this.top = align(base);
  }

  alloc(bytes: number): number {
    const size = align(Math.max(bytes, 64));
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i];
      if (f.size >= size) {
        const off = f.off;
        if (f.size === size) this.free.splice(i, 1);
        else { f.off += size; f.size -= size; }
        return off;
      }
    }
    const off = this.top;
    const end = off + size;
    if (end > MAX_BYTES) throw new RangeError(`wasm backend: out of memory (${(end / 2 ** 30).toFixed(2)} GiB > 4 GiB)`);
    const have = this.mem.buffer.byteLength;
    if (end > have) this.mem.grow(Math.ceil((end - have) / PAGE));
    this.top = end;
    return off;
  }

  release(off: number, bytes: number): void {
    const size = align(Math.max(bytes, 64));
    let i = 0;
    while (i < this.free.length && this.free[i].off < off) i++;
    this.free.splice(i, 0, { off, size });
    // Coalesce with neighbours, and give the top block back to the bump pointer.
    if (i + 1 < this.free.length && off + size === this.free[i + 1].off) {
      this.free[i].size += this.free[i + 1].size;
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1].off + this.free[i - 1].size === off) {
      this.free[i - 1].size += this.free[i].size;
      this.free.splice(i, 1);
      i--;
    }
    const last = this.free[this.free.length - 1];
    if (last && last.off + last.size === this.top) {
      this.top = last.off;
      this.free.pop();
    }
  }
}

interface Resident { off: number; bytes: number }

export class WasmBackend extends HostOpsFromReference implements Backend {
  readonly name = 'wasm';
  readonly device = 'host';
  // `reference` (HostOpsFromReference) runs every operation but matmul (the module has GEMM/GEMV kernels only).
  // Activations stay host arrays: matmul copies x into module memory and the result out, so every other step runs
  // on them in place.
  private readonly ex: WasmExports;
  private readonly heap: Heap;
  private readonly resident = new WeakMap<object, Resident>();
  private readonly registry: FinalizationRegistry<Resident>;
  private scratchOff = 0;
  private scratchBytes = 0;

  constructor(module: WasmModule = wasmModule()) {
    super();
    const inst = new WA.Instance(module, { env: { abort: () => { throw new Error('wasm abort'); } } });
    this.ex = inst.exports as unknown as WasmExports;
    this.heap = new Heap(this.ex.memory, this.ex.heapBase());
    this.registry = new FinalizationRegistry((r) => this.heap.release(r.off, r.bytes));
  }

  /** Offset of the weight's bytes inside wasm memory, copying them in on first use. */
  private weightOffset(data: Float32Array | Uint8Array): number {
    let r = this.resident.get(data);
    if (!r) {
      r = { off: this.heap.alloc(data.byteLength), bytes: data.byteLength };
      new Uint8Array(this.ex.memory.buffer, r.off, data.byteLength)
        .set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.resident.set(data, r);
      this.registry.register(data, r);
    }
    return r.off;
  }

  /** One scratch region reused across calls (grown when a call needs more). */
  private scratch(bytes: number): number {
    if (bytes > this.scratchBytes) {
      if (this.scratchBytes) this.heap.release(this.scratchOff, this.scratchBytes);
      this.scratchBytes = align(bytes * 1.25);
      this.scratchOff = this.heap.alloc(this.scratchBytes);
    }
    return this.scratchOff;
  }

  matmul(out: Float32Array, x: Float32Array, rows: number, w: Weight): void {
    if (rows === 0) return;
    const N = w.rows, K = w.cols;
    if (x.length < rows * K || out.length < rows * N) throw new RangeError('wasm matmul: x or out too small for the shape');
    const direct = w.dtype === 'f32' || w.dtype === 'q8_0';
    if (!direct) quantRowBytes(w.dtype, K); // throws on a partial block
    const wOff = direct ? this.weightOffset(w.data) : 0;
    const gemm = rows >= GEMM_MIN_ROWS;
    const mpad = (rows + 3) & ~3;
    const xB = align(rows * K * 4), oB = align(rows * N * 4), aB = gemm ? align(mpad * K * 4) : 0;
    const bB = gemm ? NC * KC * 4 : 0, rB = KC * 4 + 128, tB = direct ? 0 : align(Math.min(TILE_ROWS, N) * K * 4);
    const base = this.scratch(xB + oB + aB + bB + rB + tB);
    const xOff = base, oOff = xOff + xB, aOff = oOff + oB, bOff = aOff + aB, rowOff = bOff + bB, tmpOff = rowOff + KC * 4;
    const tileOff = rowOff + rB;
    const ex = this.ex;
    new Float32Array(ex.memory.buffer, xOff, rows * K).set(x.subarray(0, rows * K));
    if (gemm) ex.packA(aOff, xOff, rows, K);
    if (direct) {
      const dt = w.dtype === 'q8_0' ? 8 : 0;
      if (gemm) ex.gemm(oOff, N, aOff, rows, K, wOff, dt, N, bOff, rowOff, tmpOff);
      else if (dt === 8) ex.rowsQ8(oOff, N, xOff, rows, K, wOff, 0, N);
      else ex.rowsF32(oOff, N, xOff, rows, K, wOff, 0, N);
    } else {
      const rb = quantRowBytes(w.dtype, K);
      for (let n0 = 0; n0 < N; n0 += TILE_ROWS) {
        const nt = Math.min(TILE_ROWS, N - n0);
        const tile = new Float32Array(ex.memory.buffer, tileOff, nt * K);
        for (let r = 0; r < nt; r++) dequantRow(w.dtype, w.data, (n0 + r) * rb, K, tile, r * K);
        if (gemm) ex.gemm(oOff + n0 * 4, N, aOff, rows, K, tileOff, 0, nt, bOff, rowOff, tmpOff);
        else ex.rowsF32(oOff + n0 * 4, N, xOff, rows, K, tileOff, 0, nt);
      }
    }
    out.set(new Float32Array(ex.memory.buffer, oOff, rows * N));
  }

  // Not accelerated: the module has matmul kernels only, so the rest is the TS reference's.

  embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void {
    this.reference.embedRow(out, outOff, w, row);
  }

  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void {
    this.reference.rmsNorm(out, x, w, rows, dim, eps);
  }

  swiglu(gate: Float32Array, up: Float32Array, n: number): void {
    this.reference.swiglu(gate, up, n);
  }

  gegluTanh(gate: Float32Array, up: Float32Array, n: number): void {
    this.reference.gegluTanh(gate, up, n);
  }

  attend(a: AttendArgs): void {
    this.reference.attend(a);
  }

  attendF16(a: AttendF16Args): void {
    this.reference.attendF16(a);
  }

  /** Every call runs to completion in this thread. */
  flush(): Promise<void> {
    return Promise.resolve();
  }
}
