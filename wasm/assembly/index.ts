// cokv WASM SIMD kernels (AssemblyScript, 128-bit SIMD, no relaxed SIMD; single thread).
// Build: `npm run build:wasm` -> wasm/cokv.wasm (committed). All arguments are raw byte offsets into this module's
// memory; the JS side (src/backend/wasm.ts) owns allocation. Layout: out[m*ldo + n] = sum_k x[m*K + k] * W[n][k].
// dtype: 0 = f32 rows (K floats), 8 = Q8_0 rows (K/32 blocks of f16 d + 32 int8).

const KC: i32 = 256;

export function heapBase(): usize {
  return __heap_base;
}

// @ts-ignore: decorator
@inline function h2f(h: u32): f32 {
  const s: u32 = (h & 0x8000) << 16;
  const e: u32 = (h >> 10) & 0x1f;
  const m: u32 = h & 0x3ff;
  if (e == 0) {
    const f: f32 = <f32>m * 5.9604644775390625e-8;
    return s ? -f : f;
  }
  if (e == 31) return reinterpret<f32>(s | 0x7f800000 | (m << 13));
  return reinterpret<f32>(s | ((e + 112) << 23) | (m << 13));
}

// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

function rowBytes(dtype: i32, K: i32): usize {
  return dtype == 8 ? <usize>(K / 32) * 34 : <usize>K * 4;
}

/** Dequantize n elements from k0 of a Q8_0 row into f32 at dst. */
function dqQ8(row: usize, k0: i32, n: i32, dst: usize): void {
  for (let b = k0 / 32; b < (k0 + n) / 32; b++) {
    const p = row + <usize>b * 34;
    const d = f32x4.splat(h2f(<u32>load<u16>(p)));
    for (let j = 0; j < 32; j += 8) {
      const q16 = v128.load8x8_s(p + 2 + j);
      v128.store(dst, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(q16))));
      v128.store(dst, f32x4.mul(d, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(q16))), 16);
      dst += 32;
    }
  }
}

/** GEMV-style: for m < M, rows [n0, n1) of W (f32), 4 rows per pass sharing x. */
export function rowsF32(out: usize, ldo: i32, x: usize, M: i32, K: i32, w: usize, n0: i32, n1: i32): void {
  const rb = <usize>K * 4;
  let n = n0;
  for (; n + 4 <= n1; n += 4) {
    const w0 = w + <usize>n * rb, w1 = w0 + rb, w2 = w1 + rb, w3 = w2 + rb;
    for (let m = 0; m < M; m++) {
      const xm = x + <usize>m * rb;
      let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      let k = 0;
      for (; k + 8 <= K; k += 8) {
        const o = <usize>k * 4;
        const x0 = v128.load(xm + o), x1 = v128.load(xm + o, 16);
        a0 = f32x4.add(a0, f32x4.mul(v128.load(w0 + o), x0));
        a1 = f32x4.add(a1, f32x4.mul(v128.load(w1 + o), x0));
        a2 = f32x4.add(a2, f32x4.mul(v128.load(w2 + o), x0));
        a3 = f32x4.add(a3, f32x4.mul(v128.load(w3 + o), x0));
        b0 = f32x4.add(b0, f32x4.mul(v128.load(w0 + o, 16), x1));
        b1 = f32x4.add(b1, f32x4.mul(v128.load(w1 + o, 16), x1));
        b2 = f32x4.add(b2, f32x4.mul(v128.load(w2 + o, 16), x1));
        b3 = f32x4.add(b3, f32x4.mul(v128.load(w3 + o, 16), x1));
      }
      let r0 = hsum(f32x4.add(a0, b0)), r1 = hsum(f32x4.add(a1, b1));
      let r2 = hsum(f32x4.add(a2, b2)), r3 = hsum(f32x4.add(a3, b3));
      for (; k < K; k++) {
        const o = <usize>k * 4;
        const xv = load<f32>(xm + o);
        r0 += xv * load<f32>(w0 + o);
        r1 += xv * load<f32>(w1 + o);
        r2 += xv * load<f32>(w2 + o);
        r3 += xv * load<f32>(w3 + o);
      }
      const po = out + (<usize>m * ldo + n) * 4;
      store<f32>(po, r0);
      store<f32>(po, r1, 4);
      store<f32>(po, r2, 8);
      store<f32>(po, r3, 12);
    }
  }
  for (; n < n1; n++) {
    const w0 = w + <usize>n * rb;
    for (let m = 0; m < M; m++) {
      const xm = x + <usize>m * rb;
      let a0 = f32x4.splat(0);
      let k = 0;
      for (; k + 4 <= K; k += 4) a0 = f32x4.add(a0, f32x4.mul(v128.load(w0 + <usize>k * 4), v128.load(xm + <usize>k * 4)));
      let r = hsum(a0);
      for (; k < K; k++) r += load<f32>(xm + <usize>k * 4) * load<f32>(w0 + <usize>k * 4);
      store<f32>(out + (<usize>m * ldo + n) * 4, r);
    }
  }
}

/** GEMV-style over Q8_0 rows [n0, n1): dequantized on the fly against f32 x, 2 rows per pass. */
export function rowsQ8(out: usize, ldo: i32, x: usize, M: i32, K: i32, w: usize, n0: i32, n1: i32): void {
  const rb = rowBytes(8, K);
  const nb = K / 32;
  let n = n0;
  for (; n < n1; n += 2) {
    const two = n + 1 < n1;
    const w0 = w + <usize>n * rb, w1 = two ? w0 + rb : w0;
    for (let m = 0; m < M; m++) {
      const xm = x + <usize>m * K * 4;
      let acc0 = f32x4.splat(0), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      for (let b = 0; b < nb; b++) {
        const xb = xm + <usize>b * 128;
        const pb = <usize>b * 34;
        // each 32-block: 8 x vectors; split in halves so both halves use q8block's 4-vector form
        const x0 = v128.load(xb), x1 = v128.load(xb, 16), x2 = v128.load(xb, 32), x3 = v128.load(xb, 48);
        const x4 = v128.load(xb, 64), x5 = v128.load(xb, 80), x6 = v128.load(xb, 96), x7 = v128.load(xb, 112);
        const p0 = w0 + pb, p1 = w1 + pb;
        const d0 = f32x4.splat(h2f(<u32>load<u16>(p0))), d1 = f32x4.splat(h2f(<u32>load<u16>(p1)));
        let s0 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p0 + 2))), x0);
        let s1 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p1 + 2))), x0);
        s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p0 + 2))), x1));
        s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p1 + 2))), x1));
        let t0 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p0 + 10))), x2);
        let t1 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p1 + 10))), x2);
        t0 = f32x4.add(t0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p0 + 10))), x3));
        t1 = f32x4.add(t1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p1 + 10))), x3));
        s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p0 + 18))), x4));
        s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p1 + 18))), x4));
        s0 = f32x4.add(s0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p0 + 18))), x5));
        s1 = f32x4.add(s1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p1 + 18))), x5));
        t0 = f32x4.add(t0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p0 + 26))), x6));
        t1 = f32x4.add(t1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p1 + 26))), x6));
        t0 = f32x4.add(t0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p0 + 26))), x7));
        t1 = f32x4.add(t1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p1 + 26))), x7));
        acc0 = f32x4.add(acc0, f32x4.mul(s0, d0));
        acc1 = f32x4.add(acc1, f32x4.mul(s1, d1));
        acc2 = f32x4.add(acc2, f32x4.mul(t0, d0));
        acc3 = f32x4.add(acc3, f32x4.mul(t1, d1));
      }
      const po = out + (<usize>m * ldo + n) * 4;
      store<f32>(po, hsum(f32x4.add(acc0, acc2)));
      if (two) store<f32>(po, hsum(f32x4.add(acc1, acc3)), 4);
    }
  }
}

/** Pack x (M rows of K floats) into 4-row panels, k-major, per KC block; rows past M are zero. Returns bytes used. */
export function packA(dst: usize, x: usize, M: i32, K: i32): void {
  const mpad = (M + 3) & ~3;
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kc = min(KC, K - k0);
    const blk = dst + <usize>k0 * mpad * 4;
    for (let i = 0; i < mpad / 4; i++) {
      const d = blk + <usize>i * 16 * kc;
      for (let r = 0; r < 4; r++) {
        const m = i * 4 + r;
        if (m >= M) {
          for (let k = 0; k < kc; k++) store<f32>(d + (<usize>k * 4 + r) * 4, 0);
        } else {
          const s = x + (<usize>m * K + k0) * 4;
          for (let k = 0; k < kc; k++) store<f32>(d + (<usize>k * 4 + r) * 4, load<f32>(s + <usize>k * 4));
        }
      }
    }
  }
}

/** Pack rows [n0, n0+nc) x cols [k0, k0+kc) of W into 8-wide panels dst[p][k][8], zero-padded. */
function packB(dst: usize, w: usize, dtype: i32, K: i32, n0: i32, nc: i32, k0: i32, kc: i32, row: usize): void {
  const rb = rowBytes(dtype, K);
  const np = (nc + 7) >> 3;
  for (let p = 0; p < np; p++) {
    const d = dst + <usize>p * 32 * kc;
    for (let r = 0; r < 8; r++) {
      const n = n0 + p * 8 + r;
      if (n >= n0 + nc) {
        for (let k = 0; k < kc; k++) store<f32>(d + (<usize>k * 8 + r) * 4, 0);
        continue;
      }
      let src: usize;
      if (dtype == 8) {
        dqQ8(w + <usize>n * rb, k0, kc, row);
        src = row;
      } else {
        src = w + <usize>n * rb + <usize>k0 * 4;
      }
      for (let k = 0; k < kc; k++) store<f32>(d + (<usize>k * 8 + r) * 4, load<f32>(src + <usize>k * 4));
    }
  }
}

/**
 * GEMM over packed panels: out[m*ldo + n0 + n] for n < N (W rows n0.. of `dtype`), x packed by packA (M rows).
 * bpack: NC*KC floats of scratch; row: KC floats of scratch; tmp: 32 floats.
 */
export function gemm(out: usize, ldo: i32, apack: usize, M: i32, K: i32, w: usize, dtype: i32, N: i32,
  bpack: usize, row: usize, tmp: usize): void {
  const NC = 128;
  const mpad = (M + 3) & ~3;
  for (let n0 = 0; n0 < N; n0 += NC) {
    const nc = min(NC, N - n0);
    const np = (nc + 7) >> 3;
    for (let k0 = 0; k0 < K; k0 += KC) {
      const kc = min(KC, K - k0);
      packB(bpack, w, dtype, K, n0, nc, k0, kc, row);
      const ablk = apack + <usize>k0 * mpad * 4;
      for (let i = 0; i < mpad / 4; i++) {
        const a0 = ablk + <usize>i * 16 * kc;
        const mr = min(4, M - i * 4);
        for (let p = 0; p < np; p++) {
          const nr = min(8, nc - p * 8);
          let a = a0;
          let b = bpack + <usize>p * 32 * kc;
          let c00 = f32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
          for (let k = 0; k < kc; k++) {
            const b0 = v128.load(b), b1 = v128.load(b, 16);
            let av = v128.load32_splat(a);
            c00 = f32x4.add(c00, f32x4.mul(av, b0));
            c01 = f32x4.add(c01, f32x4.mul(av, b1));
            av = v128.load32_splat(a, 4);
            c10 = f32x4.add(c10, f32x4.mul(av, b0));
            c11 = f32x4.add(c11, f32x4.mul(av, b1));
            av = v128.load32_splat(a, 8);
            c20 = f32x4.add(c20, f32x4.mul(av, b0));
            c21 = f32x4.add(c21, f32x4.mul(av, b1));
            av = v128.load32_splat(a, 12);
            c30 = f32x4.add(c30, f32x4.mul(av, b0));
            c31 = f32x4.add(c31, f32x4.mul(av, b1));
            a += 16;
            b += 32;
          }
          const c = out + (<usize>(i * 4) * ldo + n0 + p * 8) * 4;
          const ld = <usize>ldo * 4;
          if (mr == 4 && nr == 8) {
            if (k0 == 0) {
              v128.store(c, c00); v128.store(c, c01, 16);
              v128.store(c + ld, c10); v128.store(c + ld, c11, 16);
              v128.store(c + 2 * ld, c20); v128.store(c + 2 * ld, c21, 16);
              v128.store(c + 3 * ld, c30); v128.store(c + 3 * ld, c31, 16);
            } else {
              v128.store(c, f32x4.add(v128.load(c), c00)); v128.store(c, f32x4.add(v128.load(c, 16), c01), 16);
              v128.store(c + ld, f32x4.add(v128.load(c + ld), c10)); v128.store(c + ld, f32x4.add(v128.load(c + ld, 16), c11), 16);
              v128.store(c + 2 * ld, f32x4.add(v128.load(c + 2 * ld), c20)); v128.store(c + 2 * ld, f32x4.add(v128.load(c + 2 * ld, 16), c21), 16);
              v128.store(c + 3 * ld, f32x4.add(v128.load(c + 3 * ld), c30)); v128.store(c + 3 * ld, f32x4.add(v128.load(c + 3 * ld, 16), c31), 16);
            }
          } else {
            v128.store(tmp, c00); v128.store(tmp, c01, 16); v128.store(tmp, c10, 32); v128.store(tmp, c11, 48);
            v128.store(tmp, c20, 64); v128.store(tmp, c21, 80); v128.store(tmp, c30, 96); v128.store(tmp, c31, 112);
            for (let ii = 0; ii < mr; ii++) {
              const ci = c + <usize>ii * ld;
              for (let jj = 0; jj < nr; jj++) {
                const v = load<f32>(tmp + <usize>(ii * 8 + jj) * 4);
                const pc = ci + <usize>jj * 4;
                store<f32>(pc, k0 == 0 ? v : load<f32>(pc) + v);
              }
            }
          }
        }
      }
    }
  }
}
