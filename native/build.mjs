#!/usr/bin/env node
/**
 * Builds the Node-API addon (build/Release/cokv_native.node) with node-gyp, offline: the Node headers come from
 * `npm_config_nodedir` (npm passes the machine's config) or /usr/include/node, never from a download.
 * `--optional` (the npm `install` hook): in an installed package, a prebuilt binary for this platform
 * (prebuilds/<platform>-<arch>/cokv_native.node, shipped by `npm pack`) that loads means nothing is compiled;
 * otherwise (no prebuilt, it fails to load, a git checkout — developers edit native/ — or COKV_BUILD_FROM_SOURCE set)
 * it compiles, and a failed build prints a note and exits 0, so the install still succeeds and the engine uses the
 * prebuilt binary if one loads, else the WASM or TypeScript backend.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const optional = process.argv.includes('--optional');
const prebuiltRel = path.join('prebuilds', `${process.platform}-${process.arch}`, 'cokv_native.node');
const prebuilt = path.join(root, prebuiltRel);

/** Why `file` is not a usable addon (absent, fails to load, lacks the kernels), or undefined when it loads. */
function unusable(file) {
  if (!fs.existsSync(file)) return 'not present';
  try {
    const addon = createRequire(import.meta.url)(file);
    if (typeof addon.matmul !== 'function' || typeof addon.info !== 'function') return 'not the cokv addon';
    addon.info();
    return undefined;
  } catch (e) {
    return String(e && e.message ? e.message : e).split('\n')[0];
  }
}

function fail(msg) {
  if (optional) {
    const pre = unusable(prebuilt) === undefined;
    console.warn(`cokv: native addon not built (${msg}); ${pre ? `the prebuilt ${prebuiltRel} will be used` : 'the wasm/ts backends will be used'}`);
    process.exit(0);
  }
  console.error(`cokv: native addon build failed: ${msg}`);
  process.exit(1);
}

if (optional && !process.env.COKV_BUILD_FROM_SOURCE && !fs.existsSync(path.join(root, '.git'))) {
  const why = unusable(prebuilt);
  if (why === undefined) {
    console.log(`cokv: using the prebuilt native addon ${prebuiltRel} (nothing to compile)`);
    process.exit(0);
  }
  if (why !== 'not present') console.warn(`cokv: prebuilt ${prebuiltRel} unusable here (${why}); compiling from source`);
}
if (process.env.COKV_SKIP_NATIVE) fail('COKV_SKIP_NATIVE is set');
if (!fs.existsSync(path.join(root, 'binding.gyp'))) fail('binding.gyp not found');
/**
 * node-gyp: the package's own (a dependency, for this compile fallback), else the one npm ships with and names in
 * `npm_config_node_gyp` during install scripts — what an `npm install cokv` user has — else npm's bundled copy
 * found beside `npm_execpath`.
 */
function findNodeGyp() {
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // not installed here: try npm's
  }
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath) candidates.push(path.resolve(path.dirname(process.env.npm_execpath), '../node_modules/node-gyp/bin/node-gyp.js'));
  return candidates.find((c) => c && c.endsWith('.js') && fs.existsSync(c));
}
const gyp = findNodeGyp();
if (!gyp) fail('node-gyp not found (neither this package\'s dependency nor npm\'s bundled copy)');
const args = [gyp, 'rebuild'];
const nodedir = process.env.npm_config_nodedir
  || (fs.existsSync(path.join(process.execPath, '../../include/node/node_api.h')) ? path.resolve(process.execPath, '../..') : '')
  || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : '');
if (nodedir) args.push(`--nodedir=${nodedir}`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: optional ? 'pipe' : 'inherit', encoding: 'utf8' });
if (r.status !== 0) {
  if (optional) console.warn(`${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').slice(-15).join('\n'));
  fail(`node-gyp exited with ${r.status ?? r.signal}`);
}
// The build must load here, or the loader would pass over it at run time anyway.
const built = unusable(path.join(root, 'build', 'Release', 'cokv_native.node'));
if (built !== undefined) fail(`build/Release/cokv_native.node does not load: ${built}`);
if (optional) console.log('cokv: native addon built (build/Release/cokv_native.node)');
