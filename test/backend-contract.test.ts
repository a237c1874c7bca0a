/**
 * The backend contract (src/backend/types.ts): every backend that loads here implements every operation in
 * BACKEND_OPS, and each operation equals the TS reference on random inputs (tolerances as in backend-kernels and
 * attend-f16); the reference's own fused ops equal their one-query loops, and its element-wise ops and RoPE equal
 * independent loops; the forward pass and the profiler's coalition batch reach every kernel through the backend
 * (no fallback loops of their own) and never index an activation on the host except through `read`.
 */
import { describe, expect, it } from 'vitest';
import { BACKEND_OPS, type AttendArgs, type AttendF16Args, type Backend, type RopeArgs } from '../src/backend/types.js';
import { TsBackend, attendSegments } from '../src/backend/ts.js';
import { NativeBackend, loadNativeAddon } from '../src/backend/native.js';
import { WasmBackend } from '../src/backend/wasm.js';
import { RaggedKVCache } from '../src/cache/ragged.js';
import { Transformer } from '../src/model/forward.js';
import { f16Lut, f32ToF16, quantizeMatrix } from '../src/model/quant.js';
import { RopeTable, ropeInvFreqFor } from '../src/model/rope.js';
import type { Weight } from '../src/model/weights.js';
import { CoalitionBatch } from '../src/game/coalition-batch.js';
import { Players } from '../src/game/players.js';
import { Rng } from '../src/generate/rng.js';
import { randomWeights, tinyConfig } from './random-model.js';
import { relErr } from './helpers.js';

const ref = new TsBackend();
const addon = loadNativeAddon();

/** Every backend that loads here, by a label; native in its exact mode, its default mode and as an old addon. */
function loadedBackends(): [string, Backend][] {
  const out: [string, Backend][] = [['ts', new TsBackend()]];
  try {
    out.push(['wasm', new WasmBackend()]);
  } catch { /* no WebAssembly here: nothing to check */ }
  if (addon) {
    out.push(['native (exact)', new NativeBackend(addon, { int8Activations: false })]);
    out.push(['native (int8 activations)', new NativeBackend(addon)]);
    // An addon built before attend16: attendF16 delegates to the reference.
    out.push(['native (no attend16)', new NativeBackend(Object.create(addon, { attend16: { value: undefined } }) as typeof addon, { int8Activations: false })]);
  }
  return out;
}

function rand(rng: Rng, n: number, s = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s);
}

function halves(rng: Rng, n: number): Uint16Array {
  return Uint16Array.from({ length: n }, () => f32ToF16((rng.next() * 2 - 1) * 2));
}

/** Attention shapes: [hd, n1, n2, nq, causal, from1] (decode groups, causal prefill, a second segment, an offset start). */
const ATTEND_SHAPES = [[64, 300, 0, 3, false, 0], [32, 40, 9, 5, true, 0], [64, 200, 17, 1, false, 30], [24, 90, 5, 37, true, 2], [8, 1, 3, 4, false, 0]] as const;

function attendCase<KV extends Float32Array | Uint16Array>(
  rng: Rng, shape: (typeof ATTEND_SHAPES)[number], kv: (n: number) => KV,
): AttendArgs<KV> {
  const [hd, n1, n2, nq, causal, from1] = shape;
  const qStride = hd + 3, oStride = hd + 5, to1 = from1 + n1;
  return {
    out: new Float32Array(nq * oStride + 7), oOff: 2, oStride, q: rand(rng, nq * qStride + 1), qOff: 1, qStride, nq, hd,
    scale: 1 / Math.sqrt(hd), k1: kv(to1 * hd), v1: kv(to1 * hd), from1, to1,
    count1: causal ? Int32Array.from({ length: nq }, (_, i) => Math.max(1, n1 - (nq - 1 - i))) : null,
    k2: kv(Math.max(1, n2) * hd), v2: kv(Math.max(1, n2) * hd), from2: 0, to2: n2,
  };
}

/** RoPE shapes: [rows, heads, headDim, rotaryDim] (decode, a prefill, Phi's partial rotary, one pair). */
const ROPE_SHAPES = [[1, 4, 64, 64], [7, 3, 32, 32], [5, 2, 24, 16], [3, 1, 2, 2]] as const;

function ropeCase(rng: Rng, shape: (typeof ROPE_SHAPES)[number]): RopeArgs {
  const [rows, heads, headDim, rotaryDim] = shape;
  const table = new RopeTable(ropeInvFreqFor({ theta: 10000, rotaryDim }));
  table.ensure(300);
  // Rows at scattered positions, as a coalition batch or a later prefill chunk has them.
  const positions = Int32Array.from({ length: rows }, () => Math.floor(rng.next() * 300));
  return { x: rand(rng, rows * heads * headDim, 2), rows, heads, headDim, rotaryDim, positions, cos: table.cos, sin: table.sin };
}

describe.each(loadedBackends())('backend %s', (label, be) => {
  const exact = !label.includes('int8');

  it('implements every operation of the contract on host buffers', async () => {
    for (const op of BACKEND_OPS) expect(typeof be[op], op).toBe('function');
    expect(be.device).toBe('host');
    await expect(be.flush()).resolves.toBeUndefined();
  });

  // Native's int8 activations round x per block for quantized weights: the selection self-check's 5% bound there.
  it(`matmul equals the reference (F32, Q8_0; GEMV and GEMM rows; rel. error ≤ 1e-5${exact ? '' : ', Q8_0 ≤ 5e-2'})`, () => {
    const rng = new Rng(11);
    for (const [n, k] of [[19, 64], [130, 96]]) {
      const data = rand(rng, n * k, 1 / Math.sqrt(k));
      for (const w of [{ dtype: 'f32', rows: n, cols: k, data } as Weight, quantizeMatrix('q8_0', data, n, k)]) {
        for (const rows of [1, 5]) {
          const x = rand(rng, rows * k);
          const want = new Float32Array(rows * n), got = new Float32Array(rows * n);
          ref.matmul(want, x, rows, w);
          be.matmul(got, x, rows, w);
          expect(relErr(got, want), `${w.dtype} rows=${rows} n=${n}`).toBeLessThanOrEqual(exact || w.dtype === 'f32' ? 1e-5 : 5e-2);
        }
      }
    }
  });

  it('embedRow equals the reference exactly (F32 and Q8_0, at an offset)', () => {
    const rng = new Rng(12);
    const data = rand(rng, 7 * 64);
    for (const w of [{ dtype: 'f32', rows: 7, cols: 64, data } as Weight, quantizeMatrix('q8_0', data, 7, 64)]) {
      const want = new Float32Array(64 + 9), got = new Float32Array(64 + 9);
      ref.embedRow(want, 9, w, 5);
      be.embedRow(got, 9, w, 5);
      expect(Array.from(got), w.dtype).toEqual(Array.from(want));
    }
  });

  it('rmsNorm, swiglu and gegluTanh equal the reference (rel. error ≤ 1e-6; rmsNorm also in place)', () => {
    const rng = new Rng(13);
    for (const [rows, dim] of [[1, 576], [5, 64], [3, 13]]) {
      const x = rand(rng, rows * dim, 3), w = rand(rng, dim);
      const want = new Float32Array(rows * dim), got = new Float32Array(rows * dim);
      ref.rmsNorm(want, x, w, rows, dim, 1e-5);
      be.rmsNorm(got, x, w, rows, dim, 1e-5);
      expect(relErr(got, want), `rmsNorm ${rows}x${dim}`).toBeLessThanOrEqual(1e-6);
      const inPlace = x.slice();
      be.rmsNorm(inPlace, inPlace, w, rows, dim, 1e-5);
      expect(relErr(inPlace, want), `rmsNorm in place ${rows}x${dim}`).toBeLessThanOrEqual(1e-6);
    }
    for (const n of [1, 7, 61, 4608]) {
      const gate = rand(rng, n, 30), up = rand(rng, n); // ±30: both tails of the sigmoid and of tanh
      for (const op of ['swiglu', 'gegluTanh'] as const) {
        const want = gate.slice(), got = gate.slice();
        ref[op](want, up, n);
        be[op](got, up, n);
        expect(relErr(got, want), `${op} n=${n}`).toBeLessThanOrEqual(1e-6);
      }
    }
  });

  it('alloc gives zeroed activations; view shares storage with its buffer; read shows what operations wrote', () => {
    const buf = be.alloc(10);
    expect(buf.length).toBe(10);
    expect(Array.from(be.read(buf))).toEqual(new Array(10).fill(0));
    const part = be.view(buf, 3, 4);
    expect(part.length).toBe(4);
    be.add(part, Float32Array.from([1, 2, 3, 4]), 4);
    be.scale(part, 2, 10);
    expect(Array.from(be.read(buf))).toEqual([0, 0, 0, 10, 20, 3, 4, 0, 0, 0]);
    expect(Array.from(be.read(part))).toEqual([10, 20, 3, 4]);
  });

  it('add, addBias, scale and softcap equal the reference (rel. error ≤ 1e-6; only the first n / rows·dim values)', () => {
    const rng = new Rng(16);
    for (const [rows, dim] of [[1, 576], [5, 64], [3, 13]]) {
      const n = rows * dim;
      const x = rand(rng, n + 5, 40), y = rand(rng, n + 5, 3), bias = rand(rng, dim);
      const cases: [string, (b: Backend, a: Float32Array) => void][] = [
        ['add', (b, a) => b.add(a, y, n)],
        ['addBias', (b, a) => b.addBias(a, bias, rows, dim)],
        ['scale', (b, a) => b.scale(a, n, 4.75)],
        ['softcap', (b, a) => b.softcap(a, n, 30)],
      ];
      for (const [op, run] of cases) {
        const want = x.slice(), got = x.slice();
        run(ref, want);
        run(be, got);
        expect(relErr(got, want), `${op} ${rows}x${dim}`).toBeLessThanOrEqual(1e-6);
        expect(Array.from(got.subarray(n)), `${op} leaves the tail`).toEqual(Array.from(x.subarray(n)));
      }
    }
  });

  it('rope equals the reference (full and partial rotary, scattered positions; rel. error ≤ 1e-6)', () => {
    const rng = new Rng(17);
    for (const shape of ROPE_SHAPES) {
      const a = ropeCase(rng, shape);
      const want = a.x.slice();
      ref.rope({ ...a, x: want });
      be.rope(a);
      expect(relErr(a.x, want), `rope ${shape.join(',')}`).toBeLessThanOrEqual(1e-6);
    }
  });

  it('attend equals the reference (two segments, causal counts, offsets; rel. error ≤ 1e-5)', () => {
    const rng = new Rng(14);
    for (const shape of ATTEND_SHAPES) {
      const a = attendCase(rng, shape, (n) => rand(rng, n));
      const want = a.out.slice();
      ref.attend({ ...a, out: want });
      be.attend(a);
      expect(relErr(a.out, want), `attend ${shape.join(',')}`).toBeLessThanOrEqual(1e-5);
    }
  });

  it('attendF16 equals the reference (rel. error ≤ 2e-6)', () => {
    const rng = new Rng(15);
    for (const shape of ATTEND_SHAPES) {
      const a = attendCase(rng, shape, (n) => halves(rng, n));
      const want = a.out.slice();
      ref.attendF16({ ...a, out: want });
      be.attendF16(a);
      expect(relErr(a.out, want), `attendF16 ${shape.join(',')}`).toBeLessThanOrEqual(2e-6);
    }
  });
});

describe('the TS reference', () => {
  it('add, addBias, scale and softcap are their one-line loops (bit for bit)', () => {
    const rng = new Rng(23);
    const rows = 3, dim = 11, n = rows * dim;
    const x = rand(rng, n, 50), y = rand(rng, n), bias = rand(rng, dim);
    const be = new TsBackend();
    const got = { add: x.slice(), addBias: x.slice(), scale: x.slice(), softcap: x.slice() };
    be.add(got.add, y, n);
    be.addBias(got.addBias, bias, rows, dim);
    be.scale(got.scale, n, Math.sqrt(640));
    be.softcap(got.softcap, n, 30);
    expect(Array.from(got.add)).toEqual(Array.from(x, (v, i) => Math.fround(v + y[i])));
    expect(Array.from(got.addBias)).toEqual(Array.from(x, (v, i) => Math.fround(v + bias[i % dim])));
    expect(Array.from(got.scale)).toEqual(Array.from(x, (v) => Math.fround(v * Math.sqrt(640))));
    expect(Array.from(got.softcap)).toEqual(Array.from(x, (v) => Math.fround(30 * Math.tanh(v / 30))));
    // The cap bounds the values (|x| reaches 50 here).
    expect(Math.max(...Array.from(got.softcap, Math.abs))).toBeLessThan(30);
  });

  it('rope rotates pairs (i, i + rotaryDim/2) of each head by its row\'s position and passes the rest through', () => {
    const rng = new Rng(24);
    for (const shape of ROPE_SHAPES) {
      const a = ropeCase(rng, shape);
      const x0 = a.x.slice();
      new TsBackend().rope(a);
      const half = a.rotaryDim / 2;
      const want = x0.slice();
      for (let r = 0; r < a.rows; r++) {
        for (let h = 0; h < a.heads; h++) {
          const b = (r * a.heads + h) * a.headDim;
          for (let i = 0; i < half; i++) {
            const c = a.cos[a.positions[r] * half + i], s = a.sin[a.positions[r] * half + i];
            want[b + i] = x0[b + i] * c - x0[b + i + half] * s;
            want[b + i + half] = x0[b + i + half] * c + x0[b + i] * s;
          }
        }
      }
      expect(Array.from(a.x), shape.join(',')).toEqual(Array.from(want));
      if (a.rotaryDim < a.headDim) expect(a.x[a.headDim - 1]).toBe(x0[a.headDim - 1]);
    }
  });

  it('attend is attendSegments per query, query i limited to count1[i] entries (bit for bit)', () => {
    const rng = new Rng(21);
    for (const shape of ATTEND_SHAPES) {
      const a = attendCase(rng, shape, (n) => rand(rng, n));
      const want = a.out.slice();
      const scores = new Float32Array(a.to1 + a.to2);
      for (let i = 0; i < a.nq; i++) {
        attendSegments(a.q, a.qOff + i * a.qStride, a.hd, a.scale, want, a.oOff + i * a.oStride, scores,
          a.k1, a.v1, a.from1, a.count1 ? a.from1 + a.count1[i] : a.to1, a.k2, a.v2, a.from2, a.to2);
      }
      new TsBackend().attend(a);
      expect(Array.from(a.out), shape.join(',')).toEqual(Array.from(want));
    }
  });

  it('attendF16 is attend on the widened K/V (bit for bit), also when one backend is reused across shapes', () => {
    const rng = new Rng(22);
    const lut = f16Lut();
    const be = new TsBackend();
    for (const shape of [...ATTEND_SHAPES, ...ATTEND_SHAPES.slice().reverse()]) {
      const a: AttendF16Args = attendCase(rng, shape, (n) => halves(rng, n));
      const widen = (h: Uint16Array) => Float32Array.from(h, (x) => lut[x]);
      const want = a.out.slice();
      new TsBackend().attend({ ...a, out: want, k1: widen(a.k1), v1: widen(a.v1), k2: widen(a.k2), v2: widen(a.v2) });
      be.attendF16(a);
      expect(Array.from(a.out), shape.join(',')).toEqual(Array.from(want));
    }
  });
});

/** A backend that forwards every operation to the reference and counts the calls per operation. */
function countingBackend(): { be: Backend; calls: Map<string, number> } {
  const inner = new TsBackend();
  const calls = new Map<string, number>();
  const be = { name: 'counting', device: 'host' } as Record<string, unknown>;
  for (const op of BACKEND_OPS) {
    be[op] = (...args: unknown[]) => {
      calls.set(op, (calls.get(op) ?? 0) + 1);
      return (inner[op] as (...a: unknown[]) => unknown).apply(inner, args);
    };
  }
  return { be: be as unknown as Backend, calls };
}

/**
 * A stand-in for a device backend: its activations are proxies the host cannot index (any element read or write
 * throws; only `length` answers), unwrapped inside each operation and by `read`. A forward pass that touches an
 * activation between backend calls, other than through `read`, fails with it.
 */
function opaqueActivationBackend(): { be: Backend; hostReads: () => number } {
  const inner = new TsBackend();
  const real = new WeakMap<object, Float32Array>();
  let reads = 0;
  const wrap = (a: Float32Array): Float32Array => {
    const p = new Proxy(a, {
      get(t, key) {
        if (key === 'length') return t.length;
        throw new Error(`the host indexed an activation (${String(key)}) outside read()`);
      },
      set(_t, key) {
        throw new Error(`the host wrote an activation (${String(key)}) outside a backend operation`);
      },
    });
    real.set(p, a);
    return p;
  };
  const un = (v: unknown): unknown => (typeof v === 'object' && v !== null && real.get(v)) || v;
  const unArgs = (a: object) => Object.fromEntries(Object.entries(a).map(([k, v]) => [k, un(v)]));
  const be = { name: 'opaque', device: 'host' } as Record<string, unknown>;
  for (const op of BACKEND_OPS) {
    be[op] = (...args: unknown[]) => {
      const plain = op === 'rope' || op === 'attend' || op === 'attendF16' ? [unArgs(args[0] as object)] : args.map(un);
      return (inner[op] as (...a: unknown[]) => unknown).apply(inner, plain);
    };
  }
  be.alloc = (n: number) => wrap(inner.alloc(n));
  be.view = (buf: Float32Array, off: number, n: number) => wrap(inner.view(un(buf) as Float32Array, off, n));
  be.read = (buf: Float32Array) => {
    reads++;
    return un(buf);
  };
  return { be: be as unknown as Backend, hostReads: () => reads };
}

describe('the forward pass and the coalition batch call the backend for every kernel', () => {
  const base = tinyConfig();
  // Gemma-style steps on a Llama block: q/k/v biases, an embedding scale, a final logit soft-cap.
  const extras = tinyConfig({ attentionBias: true, recipe: { ...base.recipe, attentionBias: true, embeddingScale: Math.sqrt(32), finalLogitSoftcap: 2 } });
  const common = ['alloc', 'read', 'matmul', 'embedRow', 'rmsNorm', 'add', 'rope', 'flush'];
  const cases = [
    { name: 'SwiGLU, F32 cache', c: base, dtype: 'f32', want: ['attend', 'swiglu'], not: ['attendF16', 'gegluTanh', 'addBias', 'scale', 'softcap'] },
    { name: 'GeGLU, F16 cache', c: tinyConfig({ recipe: { ...base.recipe, activation: 'gelu_tanh' } }), dtype: 'f16', want: ['attendF16', 'gegluTanh'], not: ['attend', 'swiglu'] },
    { name: 'SwiGLU, Q8 cache', c: base, dtype: 'q8', want: ['attend', 'swiglu'], not: ['attendF16', 'gegluTanh'] },
    { name: 'biases, embedding scale, soft-cap', c: extras, dtype: 'f32', want: ['attend', 'swiglu', 'addBias', 'scale', 'softcap'], not: ['attendF16'] },
  ] as const;

  for (const k of cases) {
    it(`${k.name}: prefill and decode use only the backend, with the reference's logits`, async () => {
      const w = randomWeights(k.c, 3);
      const { be, calls } = countingBackend();
      const counted = new Transformer(k.c, w, be), plain = new Transformer(k.c, w, new TsBackend());
      const ids = [1, 5, 9, 2, 7, 3];
      const c1 = new RaggedKVCache(k.c.numLayers, k.c.numKvHeads, k.c.headDim, 16, k.dtype);
      const c2 = new RaggedKVCache(k.c.numLayers, k.c.numKvHeads, k.c.headDim, 16, k.dtype);
      let pauses = 0;
      const got = await counted.forwardAsync(ids, c1, { pause: () => { pauses++; return Promise.resolve(); } });
      const want = plain.forward(ids, c2);
      expect(Array.from(got)).toEqual(Array.from(want));
      expect(Array.from(counted.forward([4], c1))).toEqual(Array.from(plain.forward([4], c2)));
      for (const op of [...common, ...k.want]) expect(calls.get(op) ?? 0, op).toBeGreaterThan(0);
      for (const op of k.not) expect(calls.get(op) ?? 0, op).toBe(0);
      // forwardAsync flushes before every pause (within and after each layer).
      expect(pauses).toBeGreaterThanOrEqual(2 * k.c.numLayers);
      expect(calls.get('flush')).toBe(pauses);
    });
  }

  for (const k of cases) {
    it(`${k.name}: prefill (one pass and chunked, with a hook) and decode never index an activation outside read()`, () => {
      const w = randomWeights(k.c, 5);
      const { be, hostReads } = opaqueActivationBackend();
      const opaque = new Transformer(k.c, w, be), plain = new Transformer(k.c, w, new TsBackend());
      const c1 = new RaggedKVCache(k.c.numLayers, k.c.numKvHeads, k.c.headDim, 32, k.dtype);
      const c2 = new RaggedKVCache(k.c.numLayers, k.c.numKvHeads, k.c.headDim, 32, k.dtype);
      const hooked: number[][] = [[], []];
      const ids = [1, 5, 9, 2, 7, 3, 11];
      const got = Array.from(opaque.forward(ids, c1, { logits: 'all', onLayer: (ctx) => hooked[0].push(ctx.queries[0]) }));
      expect(got).toEqual(Array.from(plain.forward(ids, c2, { logits: 'all', onLayer: (ctx) => hooked[1].push(ctx.queries[0]) })));
      expect(hooked[0]).toEqual(hooked[1]);
      expect(Array.from(opaque.forward([8, 2, 6, 1, 4], c1, { chunkSize: 2 }))).toEqual(Array.from(plain.forward([8, 2, 6, 1, 4], c2, { chunkSize: 2 })));
      expect(Array.from(opaque.forward([4], c1))).toEqual(Array.from(plain.forward([4], c2)));
      expect(hostReads()).toBeGreaterThan(0);
    });
  }

  /** A random model, its 8-token prompt cache, and two coalitions (all players; every other one). */
  const coalitionSetup = () => {
    const c = base, w = randomWeights(c, 4);
    const prompt = new RaggedKVCache(c.numLayers, c.numKvHeads, c.headDim, 16);
    new Transformer(c, w, new TsBackend()).forward([1, 5, 9, 2, 7, 3, 8, 6], prompt);
    const n = Players.of(c).n;
    return { c, w, prompt, coalitions: [new Uint8Array(n).fill(1), Uint8Array.from({ length: n }, (_, j) => (j % 2 === 0 ? 1 : 0))] };
  };

  it('a coalition batch never indexes an activation outside read(), with the reference result', () => {
    const { c, w, prompt, coalitions } = coalitionSetup();
    const logits = (backend: Backend) => {
      const batch = new CoalitionBatch(c, prompt, coalitions, 2, 2, backend);
      const model = new Transformer(c, w, backend);
      batch.setTokensPerCoalition(1);
      const out = Array.from(model.run([4, 4], batch.positionOf, batch, 'all'));
      batch.advance();
      batch.setTokensPerCoalition(1);
      return [...out, ...Array.from(model.run([9, 9], batch.positionOf, batch, 'all'))];
    };
    expect(logits(opaqueActivationBackend().be)).toEqual(logits(new TsBackend()));
  });

  it('a coalition batch attends through the backend, with the reference result', () => {
    const { c, w, prompt, coalitions } = coalitionSetup();
    const { be, calls } = countingBackend();
    const logits = (backend: Backend) => {
      const batch = new CoalitionBatch(c, prompt, coalitions, 2, 1, backend);
      batch.setTokensPerCoalition(1);
      return Array.from(new Transformer(c, w, backend).run([4, 4], batch.positionOf, batch, 'all'));
    };
    expect(logits(be)).toEqual(logits(new TsBackend()));
    expect(calls.get('attend')).toBe(2 * c.numLayers * c.numKvHeads); // rows × layers × KV heads
  });
});
