/**
 * Native for every user (issue 13, item 4): where the addon is loaded from ($COKV_NATIVE_ADDON, build/Release,
 * prebuilds/<platform>-<arch>), the install hook's use of a prebuilt binary, and how the backend in use is reported
 * (summary line, --json stats, inspect, one warning line on an 'auto' fallback, backendSelection/onBackendFallback).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findNativeAddon, nativeAddonCandidates } from '../src/backend/native.js';
import { backendSelection, createBackend, onBackendFallback, FALLBACK_SLOWDOWN } from '../src/backend/select.js';
import { asset, haveAssets, repoRoot, tmpDir } from './helpers.js';

/** The real addon (a local build or the prebuilt), or undefined where none loads here. */
const real = findNativeAddon();
const realFile = real.file;
if (!realFile) console.warn(`[native-loader tests] no native addon loads here, loader cases skipped: ${real.errors.join('; ')}`);
const platformDir = `${process.platform}-${process.arch}`;
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

/** A temp package root holding copies of the real addon at the given relative paths (and junk where asked). */
function fakeRoot(files: Record<string, 'addon' | 'junk'>): string {
  const root = tmpDir('cokv-loader-');
  dirs.push(root);
  for (const [rel, kind] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    if (kind === 'addon') fs.copyFileSync(realFile!, path.join(root, rel));
    else fs.writeFileSync(path.join(root, rel), 'not an ELF file');
  }
  return root;
}

const BUILD = 'build/Release/cokv_native.node';
const PREBUILD = `prebuilds/${platformDir}/cokv_native.node`;

describe('native addon loader order', () => {
  it('lists $COKV_NATIVE_ADDON alone, else build/Release then prebuilds/<platform>-<arch>', () => {
    expect(nativeAddonCandidates('/pkg', {})).toEqual([
      { file: path.join('/pkg', BUILD), source: 'build' },
      { file: path.join('/pkg', PREBUILD), source: 'prebuild' },
    ]);
    expect(nativeAddonCandidates('/pkg', { COKV_NATIVE_ADDON: '/x/a.node' })).toEqual([{ file: '/x/a.node', source: 'env' }]);
  });

  it.skipIf(!realFile)('a local build wins over the prebuilt; the prebuilt loads when there is no build', () => {
    const both = fakeRoot({ [BUILD]: 'addon', [PREBUILD]: 'addon' });
    const a = findNativeAddon(both, {});
    expect(a.source).toBe('build');
    expect(a.file).toBe(path.join(both, BUILD));
    expect(typeof a.addon?.matmul).toBe('function');
    const pre = fakeRoot({ [PREBUILD]: 'addon' });
    const b = findNativeAddon(pre, {});
    expect(b.source).toBe('prebuild');
    expect(b.file).toBe(path.join(pre, PREBUILD));
    expect(b.addon?.info().threads).toBeGreaterThan(0);
    expect(b.errors).toEqual([`${path.join(pre, BUILD)} not found`]);
  });

  it.skipIf(!realFile)('a build that fails to load falls through to the prebuilt, with the reason kept', () => {
    const root = fakeRoot({ [BUILD]: 'junk', [PREBUILD]: 'addon' });
    const r = findNativeAddon(root, {});
    expect(r.source).toBe('prebuild');
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(path.join(root, BUILD));
  });

  it.skipIf(!realFile)('$COKV_NATIVE_ADDON overrides both, and only it is tried', () => {
    const root = fakeRoot({ [BUILD]: 'addon', [PREBUILD]: 'addon', 'elsewhere/mine.node': 'addon' });
    const r = findNativeAddon(root, { COKV_NATIVE_ADDON: path.join(root, 'elsewhere/mine.node') });
    expect(r.source).toBe('env');
    expect(r.file).toBe(path.join(root, 'elsewhere/mine.node'));
    const none = findNativeAddon(root, { COKV_NATIVE_ADDON: '/nonexistent' });
    expect(none.addon).toBeUndefined();
    expect(none.errors).toEqual(['/nonexistent not found']);
  });

  it('nothing there: no addon, one reason per candidate', () => {
    const root = fakeRoot({});
    const r = findNativeAddon(root, {});
    expect(r.addon).toBeUndefined();
    expect(r.errors).toEqual([`${path.join(root, BUILD)} not found`, `${path.join(root, PREBUILD)} not found`]);
  });
});

describe('install hook (native/build.mjs --optional)', () => {
  /** A copy of the hook in a package root without .git (an installed package). */
  function hook(files: Record<string, 'addon' | 'junk'>, env: Record<string, string> = {}) {
    const root = fakeRoot(files);
    fs.mkdirSync(path.join(root, 'native'), { recursive: true });
    fs.copyFileSync(path.join(repoRoot, 'native/build.mjs'), path.join(root, 'native/build.mjs'));
    const r = spawnSync(process.execPath, [path.join(root, 'native/build.mjs'), '--optional'], {
      cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000,
    });
    return { root, code: r.status, out: `${r.stdout}${r.stderr}` };
  }

  it.skipIf(!realFile)('a prebuilt binary that loads: nothing is compiled', () => {
    const r = hook({ [PREBUILD]: 'addon' });
    expect(r.code).toBe(0);
    expect(r.out).toContain(`using the prebuilt native addon ${PREBUILD}`);
    expect(fs.existsSync(path.join(r.root, 'build'))).toBe(false);
  });

  it('a prebuilt that does not load: it says so and goes on to compile (here skipped, so it exits 0)', () => {
    const r = hook({ [PREBUILD]: 'junk' }, { COKV_SKIP_NATIVE: '1' });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/prebuilt .* unusable here/);
    expect(r.out).toContain('native addon not built (COKV_SKIP_NATIVE is set); the wasm/ts backends will be used');
  });
});

describe('backend selection API', () => {
  it('backendSelection names the backend; onBackendFallback fires once per distinct fallback, not per load', () => {
    const prev = process.env.COKV_NATIVE_ADDON;
    const seen: string[] = [];
    const off = onBackendFallback((s) => seen.push(s.warning!));
    try {
      expect(createBackend('ts').name).toBe('ts');
      expect(backendSelection()).toEqual({ name: 'ts', requested: 'ts', notes: [] });
      // This file never loads the addon through loadNativeAddon, so the override below is what 'auto' sees.
      process.env.COKV_NATIVE_ADDON = '/nonexistent';
      for (let i = 0; i < 3; i++) expect(createBackend('auto').name).toBe('wasm');
      const s = backendSelection()!;
      expect(s.name).toBe('wasm');
      expect(s.requested).toBe('auto');
      expect(s.notes[0]).toBe('native: /nonexistent not found');
      expect(s.warning).toBe(`using the wasm backend, ${FALLBACK_SLOWDOWN.wasm}, because native: /nonexistent not found`);
      expect(seen).toEqual([s.warning]);
    } finally {
      off();
      if (prev === undefined) delete process.env.COKV_NATIVE_ADDON;
      else process.env.COKV_NATIVE_ADDON = prev;
    }
  });

  it('the slowdown figures are the ones in docs/benchmarks.md', () => {
    const doc = fs.readFileSync(path.join(repoRoot, 'docs/benchmarks.md'), 'utf8');
    for (const n of ['50.1', '761.1', '15.83', '50.45', '102.20', '19.5', '7.44']) expect(doc).toContain(n);
  });
});

describe.skipIf(!haveAssets)('the CLI names the backend', () => {
  const model = asset('models/stories260K');
  const cli = (env: Record<string, string>, ...args: string[]) => {
    const base = { ...process.env };
    delete base.COKV_NATIVE_ADDON;
    delete base.COKV_BACKEND;
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...args], {
      cwd: repoRoot, encoding: 'utf8', timeout: 120_000, env: { ...base, ...env },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const expected = realFile ? 'native' : 'wasm';

  it('generate --json: stats.backend, and the summary line without --json', () => {
    const j = cli({}, 'generate', '--model', model, '--prompt', 'Once upon a time', '--max-tokens', '4', '--temperature', '0', '--json');
    expect(j.code).toBe(0);
    expect((JSON.parse(j.stdout) as { stats: { backend: string } }).stats.backend).toBe(expected);
    const t = cli({}, 'generate', '--model', model, '--prompt', 'Once upon a time', '--max-tokens', '4', '--temperature', '0', '--backend', 'ts');
    expect(t.code).toBe(0);
    expect(t.stderr).toMatch(/\| backend ts\n$/);
    expect(t.stderr).not.toContain('warning'); // an explicit kind is not a fallback
  });

  it('an auto fallback to wasm prints one warning line on stderr (why, how much slower) and exits 0', () => {
    const r = cli({ COKV_NATIVE_ADDON: '/nonexistent' }, 'generate', '--model', model, '--prompt', 'Once upon a time', '--max-tokens', '4', '--temperature', '0', '--json');
    expect(r.code).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => /warning/i.test(l));
    expect(warnings).toEqual([`cokv: warning: using the wasm backend, ${FALLBACK_SLOWDOWN.wasm}, because native: /nonexistent not found`]);
    expect((JSON.parse(r.stdout) as { stats: { backend: string } }).stats.backend).toBe('wasm');
  });

  it('inspect names the backend (text and --json), and the fallback reason', () => {
    const t = cli({}, 'inspect', model);
    expect(t.code).toBe(0);
    if (realFile) expect(t.stdout).toMatch(/^backend\s+native \(.*cokv_native\.node; AVX2 (yes|no)(, (AVX512-VNNI|AVX-VNNI))?, \d+ threads?\)$/m);
    else expect(t.stdout).toMatch(/^backend\s+wasm, /m);
    const j = cli({ COKV_NATIVE_ADDON: '/nonexistent' }, 'inspect', '--json', model);
    expect(j.code).toBe(0);
    const info = JSON.parse(j.stdout) as { backend: string; backendNotes: string[] };
    expect(info.backend).toBe('wasm');
    expect(info.backendNotes).toEqual(['native: /nonexistent not found']);
    expect(j.stderr.split('\n').filter((l) => /warning/i.test(l))).toHaveLength(1);
  });
});
