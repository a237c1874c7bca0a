#!/usr/bin/env node
/**
 * `npm run test:pack`: proves that a user who installs the packed tarball gets the native backend without a C
 * compiler. Packs the package (prepack compiles prebuilds/<platform>-<arch>/cokv_native.node), installs the tarball
 * with npm into a temporary project (--prefer-offline, install scripts on) with PATH holding only node, npm and sh
 * (no cc/gcc/clang/make; CC/CXX point at /bin/false), then runs the installed `cokv generate` and `cokv inspect` on
 * ../shared/assets/models/stories260K and checks that the prebuilt addon runs, and that the library's
 * `loadModelWorker` starts its worker from the installed dist/. Prints PASS/FAIL lines, exits 1 on
 * any failure, removes its temporary folder. Not part of `npm test` (it takes a minute or more).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const model = path.resolve(root, '../shared/assets/models/stories260K');
const expected = ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.';
const target = `${process.platform}-${process.arch}`;
let failures = 0;

function check(ok, what, detail = '') {
  if (!ok) failures++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}${!ok && detail ? `\n     ${detail.trim().split('\n').slice(-12).join('\n     ')}` : ''}`);
  return ok;
}

/** npm's own CLI script (npm_execpath under `npm run`, else the npm beside node). */
function npmCli() {
  if (process.env.npm_execpath && /npm-cli\.js$/.test(process.env.npm_execpath)) return process.env.npm_execpath;
  const guess = [path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/bin/npm-cli.js')];
  const r = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' });
  if (r.status === 0) guess.unshift(fs.realpathSync(r.stdout.trim()));
  const found = guess.find((g) => g.endsWith('.js') && fs.existsSync(g));
  if (!found) throw new Error('npm-cli.js not found');
  return found;
}

/** The environment without npm's per-run variables (npm_config_*, npm_package_*, …) except the cache/registry. */
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !/^npm_config_(cache|registry|userconfig)$/i.test(k)) continue;
    if (/^(COKV_|INIT_CWD$|NODE_OPTIONS$)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

const started = Date.now();
const tmp = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), 'cokv-pack-'));
try {
  steps();
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`${failures === 0 ? 'PASS' : 'FAIL'} test:pack (${failures} failure${failures === 1 ? '' : 's'}, ${((Date.now() - started) / 1000).toFixed(0)} s; temp folder removed)`);
}
process.exit(failures === 0 ? 0 : 1);

/** The checks in order; a failure that leaves nothing to check further returns early. */
function steps() {
  if (!check(fs.existsSync(model), `model present (${model})`)) return;
  const npm = npmCli();

  // 1. Pack: prepack builds the prebuilt binary, prepare builds dist/.
  const pack = spawnSync(process.execPath, [npm, 'pack', '--pack-destination', tmp, '--no-audit', '--no-fund'], {
    cwd: root, encoding: 'utf8', env: cleanEnv({}), maxBuffer: 64 << 20,
  });
  const tgz = fs.readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  if (!check(pack.status === 0 && tgz !== undefined, 'npm pack', `${pack.stdout}\n${pack.stderr}`)) return;
  const listing = spawnSync('tar', ['-tzf', path.join(tmp, tgz)], { encoding: 'utf8' }).stdout ?? '';
  check(listing.includes(`package/prebuilds/${target}/cokv_native.node`), `tarball holds prebuilds/${target}/cokv_native.node`);
  check(!/^package\/build\//m.test(listing), 'tarball holds no build/ folder');

  // 2. A PATH with node, npm and sh only: no C compiler, no make.
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(npm, path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const env = cleanEnv({ PATH: bin, CC: '/bin/false', CXX: '/bin/false' });
  const probe = spawnSync('/bin/sh', ['-c', 'command -v cc || command -v gcc || command -v clang || command -v make || command -v c++'], { env, encoding: 'utf8' });
  check(probe.status !== 0 && !probe.stdout.trim(), 'no C compiler or make on the install PATH', probe.stdout);

  // 3. Install the tarball (install scripts on: cokv's hook runs and must find the prebuilt).
  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'cokv-pack-test', version: '1.0.0', private: true }));
  const inst = spawnSync(process.execPath, [npm, 'install', path.join(tmp, tgz), '--prefer-offline', '--ignore-scripts=false',
    '--foreground-scripts', '--no-audit', '--no-fund', '--no-package-lock'], { cwd: app, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const instLog = `${inst.stdout}\n${inst.stderr}`;
  if (!check(inst.status === 0, 'npm install of the tarball (offline-capable, scripts on)', instLog)) return;
  const pkg = path.join(app, 'node_modules', 'cokv');
  check(/using the prebuilt native addon/.test(instLog), 'install hook used the prebuilt binary', instLog);
  check(!fs.existsSync(path.join(pkg, 'build')), 'nothing compiled (no node_modules/cokv/build)');

  // 4. The installed CLI, run with the same compiler-less PATH.
  const cokv = path.join(app, 'node_modules', '.bin', 'cokv');
  const run = (...args) => spawnSync(cokv, args, { cwd: app, env, encoding: 'utf8', timeout: 120_000 });
  const gen = run('generate', '--model', model, '--prompt', 'Once upon a time', '--max-tokens', '40', '--temperature', '0');
  check(gen.status === 0 && gen.stdout.trim() === expected, 'cokv generate prints the README text', `exit ${gen.status}\n${gen.stdout}\n${gen.stderr}`);
  check(/\| backend native\n/.test(gen.stderr), 'summary line names backend native', gen.stderr);
  check(!/warning/.test(gen.stderr), 'no fallback warning', gen.stderr);
  const json = run('generate', '--model', model, '--prompt', 'Once upon a time', '--max-tokens', '8', '--temperature', '0', '--json');
  let backend;
  try { backend = JSON.parse(json.stdout).stats.backend; } catch { /* reported below */ }
  check(json.status === 0 && backend === 'native', '--json stats.backend is native', `${json.stdout}\n${json.stderr}`);
  const insp = run('inspect', model);
  check(insp.status === 0 && insp.stdout.includes(`backend`) && insp.stdout.includes(path.join(pkg, 'prebuilds', target, 'cokv_native.node')),
    `cokv inspect: native from node_modules/cokv/prebuilds/${target}`, `${insp.stdout}\n${insp.stderr}`);

  // 5. The library's worker API from the installed package (dist/session/model-worker.js, no tsx).
  const script = `import { loadModelWorker } from 'cokv';
const m = await loadModelWorker(${JSON.stringify(model)});
process.stdout.write(await m.generate('Once upon a time', { maxTokens: 40, temperature: 0 }).complete());
await m.dispose();`;
  const lib = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: app, env, encoding: 'utf8', timeout: 120_000 });
  check(lib.status === 0 && lib.stdout.trim() === expected, 'loadModelWorker (the worker from dist/) generates the README text', `exit ${lib.status}\n${lib.stdout}\n${lib.stderr}`);
}
