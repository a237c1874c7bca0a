/**
 * The AVX-VNNI kernels (VEX-encoded vpdpbusd / vpdpwssd: CPUs with AVX-VNNI but no AVX-512, such as Alder Lake and
 * later client cores). This machine's CPU may not execute them, so they are checked in two halves:
 * - the bodies: a second build of the addon with COKV_VEX_AS_EVEX=1 runs exactly the AVX-VNNI code paths (the GEMV
 *   bodies without mask registers, the K-type dots, the prefill GEMM's VEX micro-kernel) with each `{vex}`
 *   instruction replaced by its EVEX twin — the same operation — on a CPU that runs AVX512-VNNI; its results must
 *   equal the integer reference exactly as the addon's own (test/qdot-check.ts);
 * - the encoding: the addon as built holds those instructions VEX-encoded (objdump), and picks them only where the
 *   CPU advertises AVX-VNNI and a child process ran them (native/qgemm.c: cokv_avxvnni_usable).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadNativeAddon, nativeAddonFile, type NativeAddon } from '../src/backend/native.js';
import { F16_FIELDS, checkIntegerDots, type BlockType } from './qdot-check.js';
import { repoRoot } from './helpers.js';

const addon = loadNativeAddon();
const kind = addon?.info().vnniKind;
const has = (cmd: string) => spawnSync(cmd, ['--version'], { encoding: 'utf8' }).status === 0;
const nodeInclude = [
  process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
  path.resolve(process.execPath, '../../include/node'),
  '/usr/include/node',
].find((d) => d && fs.existsSync(path.join(d, 'node_api.h')));

/** Why the emulated-VEX build cannot run here, or undefined. */
const skipWhy = !addon ? 'native addon unavailable'
  : kind !== 'avx512-vnni' ? `the CPU does not run AVX512-VNNI (VNNI kind: ${kind ?? 'unknown'}), which stands in for AVX-VNNI`
    : !has('cc') ? 'no C compiler (cc)'
      : !nodeInclude ? 'no Node headers (node_api.h)' : undefined;
if (skipWhy) console.warn(`[avx-vnni tests] emulated-VEX build skipped: ${skipWhy}`);

let vexAddon: NativeAddon | undefined;
if (!skipWhy) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-vexemu-'));
  const out = path.join(dir, 'cokv_native.node');
  const src = ['addon.c', 'kernels.c', 'qdot.c', 'qgemm.c'].map((f) => path.join(repoRoot, 'native', f));
  const r = spawnSync('cc', ['-O2', '-std=gnu11', '-fno-strict-aliasing', '-shared', '-fPIC', '-pthread', '-DCOKV_VEX_AS_EVEX=1',
    `-I${nodeInclude}`, ...src, '-lm', '-o', out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc (COKV_VEX_AS_EVEX build) failed: ${r.stderr.split('\n').slice(0, 5).join(' | ')}`);
  vexAddon = createRequire(import.meta.url)(out) as NativeAddon;
}

describe.skipIf(!vexAddon)('AVX-VNNI kernel bodies (COKV_VEX_AS_EVEX build)', () => {
  it('the build selects its AVX-VNNI kernels', () => {
    expect(vexAddon!.info().vnniKind).toBe('avx-vnni');
  });
  for (const dtype of Object.keys(F16_FIELDS) as BlockType[]) {
    it(`${dtype}: equals Σ dequant(W)·dequant(xq) to f32 rounding, GEMV and GEMM, 1 and 2 threads`, () => {
      checkIntegerDots(vexAddon!, dtype, true);
    });
  }
});

const objdumpWhy = !addon ? 'native addon unavailable' : !has('objdump') ? 'no objdump' : undefined;
if (objdumpWhy) console.warn(`[avx-vnni tests] encoding check skipped: ${objdumpWhy}`);

describe.skipIf(objdumpWhy !== undefined)('AVX-VNNI encoding in the addon as built', () => {
  it('holds VEX-encoded vpdpbusd and vpdpwssd beside the EVEX ones', () => {
    const r = spawnSync('objdump', ['-d', '--no-show-raw-insn', nativeAddonFile()!], { encoding: 'utf8', maxBuffer: 256 << 20 });
    expect(r.status).toBe(0);
    const count = (re: RegExp) => (r.stdout.match(re) ?? []).length;
    expect(count(/\{vex\} vpdpbusd/g)).toBeGreaterThan(0);
    expect(count(/\{vex\} vpdpwssd/g)).toBeGreaterThan(0);
    expect(count(/\tvpdpbusd/g)).toBeGreaterThan(0); // the AVX512-VNNI forms (EVEX) are there too
  });

  it('uses AVX-VNNI only where the CPU advertises it', () => {
    const flags = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
    if (!/\bavx_vnni\b/.test(flags)) expect(kind).not.toBe('avx-vnni');
    if (!/\bavx512_vnni\b/.test(flags)) expect(kind).not.toBe('avx512-vnni');
  });
});
