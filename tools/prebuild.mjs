#!/usr/bin/env node
/**
 * `npm run prebuild` (and `prepack`, so `npm pack` ships it): compiles the Node-API addon and places it at
 * prebuilds/<platform>-<arch>/cokv_native.node, which an installed package loads without a C compiler.
 * One linux-x64 binary serves every Node ≥ 20 (Node-API is ABI-stable) and every x86-64 CPU (the kernels probe
 * AVX2/FMA/F16C at run time and use scalar code without them; binding.gyp passes no -m flags).
 * The compile runs in a temporary copy of binding.gyp + native/, so a developer's build/Release is left alone.
 * The binary is stripped, then loaded in a fresh process and checked against a small product before it is kept.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = `${process.platform}-${process.arch}`;
const dest = path.join(root, 'prebuilds', target, 'cokv_native.node');

function die(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-prebuild-'));
try {
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(work, 'binding.gyp'));
  fs.cpSync(path.join(root, 'native'), path.join(work, 'native'), { recursive: true });
  // The copy's build.mjs finds node-gyp from the copy's location: point it at this checkout's node_modules.
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'), 'dir');
  console.log(`prebuild: compiling the addon for ${target} (in ${work})`);
  const r = spawnSync(process.execPath, [path.join(work, 'native', 'build.mjs')], { stdio: 'inherit', env: { ...process.env, COKV_SKIP_NATIVE: '' } });
  if (r.status !== 0) die(`the compile failed (exit ${r.status ?? r.signal})`);
  const built = path.join(work, 'build', 'Release', 'cokv_native.node');
  if (!fs.existsSync(built)) die(`${built} was not produced`);
  const staged = path.join(work, 'cokv_native.node');
  fs.copyFileSync(built, staged);
  if (process.platform === 'linux') {
    const s = spawnSync('strip', ['--strip-unneeded', staged], { stdio: 'inherit' });
    if (s.error || s.status !== 0) console.warn('prebuild: strip unavailable or failed; keeping the unstripped binary');
  }
  // A fresh process: load it and compare a 3x4 · 4 product with plain arithmetic.
  const check = `
    const a = require(${JSON.stringify(staged)});
    const x = new Float32Array([1, 2, 3, 4]), w = new Float32Array(12).map((_, i) => i - 5), out = new Float32Array(3);
    a.matmul(out, x, 1, 3, 4, w, 0, 0);
    for (let n = 0; n < 3; n++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += x[k] * w[n * 4 + k];
      if (Math.abs(out[n] - s) > 1e-5) throw new Error('matmul row ' + n + ': ' + out[n] + ' != ' + s);
    }
    console.log('prebuild: loads, matmul correct, info ' + JSON.stringify(a.info()));`;
  const c = spawnSync(process.execPath, ['-e', check], { stdio: 'inherit' });
  if (c.status !== 0) die('the built addon failed its load check');
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(staged, dest);
  console.log(`prebuild: wrote ${path.relative(root, dest)} (${fs.statSync(dest).size} bytes)`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
