/**
 * The native `attendF16` (addon attend16: fused attention reading an F16 cache's half bits) against
 * the TS reference's `attendF16` (widen, then attendSegments per query): decode shapes (few queries, chunked across threads),
 * prefill shapes (causal counts, tiled kernel), two segments, head sizes on and off the AVX2 path (hd % 8), and
 * 1 vs 2 threads bit-identical for decode. Bad typed arrays give one error, not a crash.
 */
import { describe, expect, it } from 'vitest';
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import { TsBackend } from '../src/backend/ts.js';
import { f32ToF16 } from '../src/model/quant.js';
import { Rng } from '../src/generate/rng.js';

const addon = loadNativeAddon();
if (!addon) console.warn(`[attend-f16 tests] native addon unavailable, skipped: ${nativeLoadError()}`);

function halves(rng: Rng, n: number): Uint16Array {
  const h = new Uint16Array(n);
  for (let i = 0; i < n; i++) h[i] = f32ToF16((rng.next() * 2 - 1) * 2);
  return h;
}

describe.skipIf(!addon)('native attendF16', () => {
  const be = addon ? new NativeBackend(addon) : undefined;

  it('runs in the addon (attend16) on a current addon', () => {
    expect(be!.nativeAttendF16).toBe(true);
  });

  for (const hd of [64, 24]) {
    for (const [nq, n1, n2, causal] of [[1, 700, 0, false], [4, 300, 17, false], [37, 37, 0, true], [40, 90, 5, true], [8, 1, 0, false]] as const) {
      it(`hd=${hd} nq=${nq} n1=${n1} n2=${n2}${causal ? ' causal' : ''}: equals the widened reference`, () => {
        const rng = new Rng(hd * 1000 + nq * 10 + n1);
        const qStride = hd + 3, oStride = hd + 5;
        const q = new Float32Array(nq * qStride + 2).map(() => rng.next() * 2 - 1);
        const k1 = halves(rng, (n1 + 2) * hd), v1 = halves(rng, (n1 + 2) * hd);
        const k2 = halves(rng, (n2 + 1) * hd), v2 = halves(rng, (n2 + 1) * hd);
        const from1 = 1, to1 = 1 + n1;
        const count = causal ? Int32Array.from({ length: nq }, (_, i) => Math.min(n1, n1 - nq + 1 + i)) : null;
        const want = new Float32Array(nq * oStride + 7), got = new Float32Array(nq * oStride + 7);
        const args = { out: want, oOff: 2, oStride, q, qOff: 1, qStride, nq, hd, scale: 0.125, k1, v1, from1, to1, count1: count, k2, v2, from2: 0, to2: n2 };
        new TsBackend().attendF16(args);
        be!.attendF16({ ...args, out: got });
        let err = 0, scale = 0;
        for (let i = 0; i < want.length; i++) {
          err = Math.max(err, Math.abs(want[i] - got[i]));
          scale = Math.max(scale, Math.abs(want[i]));
        }
        expect(err).toBeLessThanOrEqual(2e-6 * scale);
      });
    }
  }

  it('decode is bit-identical on 1 and 2 threads', () => {
    const rng = new Rng(5);
    const hd = 64, n = 2000, nq = 3;
    const q = new Float32Array(nq * hd).map(() => rng.next() * 2 - 1);
    const k = halves(rng, n * hd), v = halves(rng, n * hd), empty = new Uint16Array(hd);
    const before = addon!.info().threads;
    const outs: Float32Array[] = [];
    try {
      for (const t of [1, 2]) {
        addon!.setThreads(t);
        const o = new Float32Array(nq * hd);
        be!.attendF16({ out: o, oOff: 0, oStride: hd, q, qOff: 0, qStride: hd, nq, hd, scale: 0.125, k1: k, v1: v, from1: 0, to1: n, count1: null, k2: empty, v2: empty, from2: 0, to2: 0 });
        outs.push(o);
      }
    } finally {
      addon!.setThreads(before);
    }
    expect(Array.from(outs[1])).toEqual(Array.from(outs[0]));
  });

  it('Float32Array K/V are refused with one error', () => {
    const f = new Float32Array(64), h = new Uint16Array(64);
    expect(() => addon!.attend16!(new Float32Array(8), 0, 8, new Float32Array(8), 0, 8, 1, 8, 1, f as unknown as Uint16Array, h, 0, 1, null, h, h, 0, 0))
      .toThrow(/attend16: k1, v1, k2 and v2 must be Uint16Array/);
  });
});
