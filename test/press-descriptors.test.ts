/**
 * Press descriptors (src/press/presses/): every registry press has one, and what they declare is what runs — the
 * names are the registry's, each press builds with the files it declares and refuses each one missing with one
 * CokvError line naming the option, the defaults it declares are the ones it uses, and the CLI (`--press` list and
 * option flags), the report's labels and docs/presses.md's table come from them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it, vi } from 'vitest';
import { CokvError } from '../src/errors.js';
import { main } from '../src/cli/main.js';
import { flagWording } from '../src/cli/flag-names.js';
import { LIBRARY_ONLY_PRESS_OPTIONS, PRESS_OPTION_FLAGS, addPressFlags, pressOptionsFromFlags, pressTuningArgs, type PressFlags } from '../src/cli/press-flags.js';
import { PRESS_DESCRIPTORS, PRESS_NAMES, SWEEP_PRESS_NAMES, createPress, defaultAlpha, maskPress, pressDescriptor, pressesReading } from '../src/press/registry.js';
import { optionDefault, type PressOptionKey } from '../src/press/presses/index.js';
import { FullPress } from '../src/press/presses/full.js';
import { ScoredPress } from '../src/press/press.js';
import type { PressOptions } from '../src/press/options.js';
import type { Allocator } from '../src/press/allocators/types.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { pressName } from '../src/eval/report/index.js';
import { tinyConfig } from './random-model.js';
import { compressRandomCache, keptPositions } from './press-helpers.js';
import { asset, haveAssets, repoRoot, tmpDir } from './helpers.js';

const cfg = tinyConfig(); // 2 layers × 4 query heads × 2 KV heads
const dir = tmpDir('cokv-press-desc-');
const files: Record<'profile' | 'headScores', string> = {
  profile: path.join(dir, 'profile.json'),
  headScores: path.join(dir, 'heads.json'),
};
fs.writeFileSync(files.profile, JSON.stringify({ model: modelFingerprint(cfg), shape: [2, 2], scores: [[0.4, 0.1], [0.3, 0.2]] }));
fs.writeFileSync(files.headScores, JSON.stringify({ scores: [[1, 2, 3, 4], [5, 6, 7, 8]] }));

/** The files a descriptor declares, and nothing else. */
function declaredFiles(name: string): PressOptions {
  return Object.fromEntries(pressDescriptor(name).requires.map((k) => [k, files[k]]));
}

/** Compress a seeded random two-layer cache with `press`; the kept positions of every head. */
function keptBy(press: ReturnType<typeof createPress>, L = 48, seed = 7): number[][][] {
  return keptPositions(compressRandomCache(press, cfg, L, seed));
}

async function helpText(args: string[]): Promise<string> {
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  try {
    expect(await main([...args, '--help'])).toBe(0);
  } finally {
    spy.mockRestore();
  }
  return out;
}

describe('press descriptors', () => {
  it('are the registry: PRESS_NAMES is their names in order, each once, each with a label and a one-line description', () => {
    expect([...PRESS_NAMES]).toEqual(PRESS_DESCRIPTORS.map((d) => d.name));
    expect(new Set(PRESS_NAMES).size).toBe(PRESS_NAMES.length);
    expect(PRESS_NAMES).toEqual(['full', 'streaming', 'snapkv', 'boundary-snapkv', 'pyramidkv', 'adakv', 'ada-pyramidkv', 'headkv', 'cokv', 'random']);
    for (const d of PRESS_DESCRIPTORS) {
      expect(d.name).toMatch(/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/);
      expect(pressDescriptor(d.name)).toBe(d);
      expect(d.label.length).toBeGreaterThan(0);
      expect(d.description).toMatch(/^\S.*\S$/);
      expect(d.description).not.toContain('\n');
      for (const key of d.requires) expect(Object.hasOwn(d.options, key), `${d.name} reads its required ${key}`).toBe(true);
    }
  });

  it('each builds with its declared files (and only those), named as its descriptor', () => {
    for (const d of PRESS_DESCRIPTORS) {
      const p = createPress(d.name, { budget: 16, ...declaredFiles(d.name) }, cfg);
      if (d.allocation === 'none') expect(p).toBeInstanceOf(FullPress);
      else expect(p).toBeInstanceOf(ScoredPress);
      expect(p.name).toBe(d.name);
    }
  });

  it('each refuses every missing declared file with one CokvError line naming the option', () => {
    let checked = 0;
    for (const d of PRESS_DESCRIPTORS) {
      for (const key of d.requires) {
        const o: PressOptions = { budget: 16, ...declaredFiles(d.name) };
        delete o[key];
        let err: unknown;
        try {
          createPress(d.name, o, cfg);
        } catch (e) {
          err = e;
        }
        expect(err, `${d.name} without ${key}`).toBeInstanceOf(CokvError);
        const e = err as CokvError;
        expect(e.kind).toBe('flag');
        expect(e.message.startsWith(`${key}: press ${d.name} needs `)).toBe(true);
        expect(e.message).not.toContain('\n');
        checked++;
      }
    }
    expect(checked).toBe(2); // headkv's head scores, cokv's profile
  });

  it('an unknown name is one CokvError line listing the descriptors\' names', () => {
    let err: unknown;
    try {
      pressDescriptor('snapkv2');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CokvError);
    expect((err as CokvError).message).toBe(`press: unknown press 'snapkv2' (known: ${PRESS_NAMES.join(', ')})`);
  });

  it('the defaults they declare are the ones they use: each given explicitly keeps the same entries as unset', () => {
    let compared = 0;
    for (const d of PRESS_DESCRIPTORS) {
      if (d.allocation === 'none') continue;
      const base: PressOptions = { budget: 16, ...declaredFiles(d.name) };
      const unset = keptBy(createPress(d.name, base, cfg));
      for (const key of Object.keys(d.options) as PressOptionKey[]) {
        const v = optionDefault(d, key, cfg);
        if (v === undefined) continue;
        const explicit = keptBy(createPress(d.name, { ...base, [key]: v }, cfg));
        expect(explicit, `${d.name} with ${key} = ${String(v)}`).toEqual(unset);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(40);
    // And the defaults are not vacuous: another value of a press's own option changes what it keeps.
    const snap = keptBy(createPress('snapkv', { budget: 16 }, cfg));
    expect(keptBy(createPress('snapkv', { budget: 16, kernel: 1 }, cfg))).not.toEqual(snap);
    const stream = keptBy(createPress('streaming', { budget: 16 }, cfg));
    expect(keptBy(createPress('streaming', { budget: 16, sink: 0 }, cfg))).not.toEqual(stream);
  });

  it('CoKV\'s α default is defaultAlpha (derived once)', () => {
    expect(optionDefault(pressDescriptor('cokv'), 'alpha', cfg)).toBe(defaultAlpha(cfg));
    expect(defaultAlpha(tinyConfig({ numLayers: 32, numHeads: 8, numKvHeads: 8 }))).toBe(10); // the paper's 10 of 256
    expect(defaultAlpha(cfg)).toBe(1); // at least 1
  });

  it('the sweep is every press but the composition ada-pyramidkv, in registry order', () => {
    expect(SWEEP_PRESS_NAMES).toEqual(PRESS_NAMES.filter((n) => n !== 'ada-pyramidkv'));
    expect(pressesReading('redistribute').map((d) => d.name)).toEqual(['pyramidkv', 'adakv', 'ada-pyramidkv', 'headkv', 'cokv']);
  });
});

describe('allocators say whether they use a budget (no allocator is special-cased by name)', () => {
  /** An allocator that keeps every head whole, with or without `budgetFree`. */
  const keepAll = (name: string, budgetFree: boolean): Allocator => ({
    name, needsScores: false, ...(budgetFree ? { budgetFree } : {}),
    allocate: (ctx) => new Array<number>(ctx.numKvHeads).fill(ctx.promptLength - ctx.window),
  });
  const lengths = (press: ScoredPress, L: number): number[] => keptBy(press, L).flat().map((h) => h.length);

  it('a budget-free allocator runs whatever its name; one named mask without the property is budgeted', () => {
    // Prompt 12 < budget 16: a budgeted press leaves the cache alone, so lastAllocation stays empty.
    const budgeted = new ScoredPress('t', undefined, keepAll('mask', false), { budget: 16 });
    lengths(budgeted, 12);
    expect(budgeted.lastAllocation).toEqual([]);
    const free = new ScoredPress('t', undefined, keepAll('coalition', true), { budget: 16 });
    lengths(free, 12);
    expect(free.lastAllocation.flat()).toEqual([4, 4, 4, 4]);
    // The profiler's mask press is budget-free: outside the coalition a head keeps only its window.
    expect(lengths(maskPress([[true, false], [false, true]]), 12)).toEqual([12, 8, 8, 12]);
  });
});

describe('the CLI and the report read the descriptors', () => {
  it('cokv generate --help lists every press and a flag for every option a press reads (or it is library-only)', async () => {
    const text = await helpText(['generate']);
    const pressLine = /--press <name>\s+KV-cache press: ([^\n(]+)/.exec(text.replace(/\n\s{20,}/g, ' '));
    expect(pressLine).not.toBeNull();
    const listed = pressLine![1].split(',').map((s) => s.trim().split(/\s/)[0]);
    for (const d of PRESS_DESCRIPTORS) expect(listed, `${d.name} in --press`).toContain(d.name);
    const read = new Set(PRESS_DESCRIPTORS.flatMap((d) => Object.keys(d.options) as PressOptionKey[]));
    for (const key of read) {
      if ((LIBRARY_ONLY_PRESS_OPTIONS as readonly string[]).includes(key)) continue;
      const flag = key === 'redistribute' ? '--no-redistribute' : `--${key.replace(/[A-Z]/g, (m) => '-' + m.toLowerCase())}`;
      expect(text, `${flag} for ${key}`).toMatch(new RegExp(`\\s${flag}[\\s\\[<]`));
    }
    // Options only a few presses read name them: --alpha and --profile are CoKV's, --head-scores HeadKV's.
    expect(text).toMatch(/--alpha <a>\s+CoKV: /);
    expect(text).toMatch(/--head-scores <file>\s+HeadKV: /);
    expect(text).toMatch(/--sink <n>\s+StreamingLLM: sink tokens \(default: "4"\)/);
  });

  it.runIf(haveAssets)('a missing declared file through the CLI is one line naming the flag, exit 1', async () => {
    const errs: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
      errs.push(String(s));
      return true;
    });
    let code: number;
    try {
      code = await main(['generate', '--model', asset('models/stories260K'), '--prompt', 'x', '--press', 'headkv', '--budget', '16']);
    } finally {
      spy.mockRestore();
    }
    expect(code).toBe(1);
    expect(errs.join('')).toBe('cokv: --head-scores: press headkv needs a head scores file\n');
  });

  it('library errors about a flagged press option are worded with its flag (src/cli/flag-names.ts knows each one)', () => {
    expect(Object.keys(PRESS_OPTION_FLAGS).length).toBe(10);
    for (const [key, flag] of Object.entries(PRESS_OPTION_FLAGS)) {
      // A switch has no bad value; --protect and --preset values are refused by pressOptionsFromFlags under their flag.
      if (key === 'redistribute' || key === 'protect' || key === 'preset') continue;
      expect(flagWording(`${key}: bad value`), key).toBe(`${flag}: bad value`);
    }
  });

  it('pressTuningArgs writes every given tuning flag back (cokv bench passes them to its children)', () => {
    const parse = (...args: string[]): PressFlags => {
      const cmd = addPressFlags(new Command('t').exitOverride());
      let got: PressFlags | undefined;
      cmd.action((f: PressFlags) => { got = f; });
      cmd.parse(args, { from: 'user' });
      return got!;
    };
    const given = parse('--window', '6', '--pool', 'avg', '--kernel', '3', '--alpha', '2', '--profile', 'p.json', '--head-scores', 'h.json',
      '--sink', '2', '--no-redistribute', '--protect', '0.2', '--preset', 'kvpress');
    const again = parse(...pressTuningArgs(given));
    expect(pressOptionsFromFlags(again)).toEqual(pressOptionsFromFlags(given));
    expect(pressOptionsFromFlags(again)).toMatchObject({ window: 6, pool: 'avg', kernel: 3, alpha: 2, sink: 2, redistribute: false, protect: 0.2, preset: 'kvpress' });
    expect(pressTuningArgs(parse('--protect'))).toContain('--protect');
    expect(pressOptionsFromFlags(parse(...pressTuningArgs(parse('--protect')))).protect).toBe(0.1);
  });

  it('the report labels presses by their descriptors', () => {
    for (const d of PRESS_DESCRIPTORS) {
      expect(pressName(d.name)).toBe(d.label);
      expect(pressName(d.name.toUpperCase())).toBe(d.label);
    }
    expect(pressName('my-press')).toBe('my-press');
  });

  it('docs/presses.md has a row for every press: name, label, description', () => {
    const md = fs.readFileSync(path.join(repoRoot, 'docs/presses.md'), 'utf8');
    for (const d of PRESS_DESCRIPTORS) {
      const row = md.split('\n').find((line) => line.startsWith(`| \`${d.name}\` |`));
      expect(row, `docs/presses.md row for ${d.name}`).toBeDefined();
      expect(row).toContain(`| ${d.label} |`);
      expect(row).toContain(d.description.replace(/\|/g, '\\|'));
    }
  });

  it('the README\'s --press list is the registry\'s', () => {
    const md = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    const list = /`--press ([a-z|-]+)`/.exec(md);
    expect(list, 'README --press list').not.toBeNull();
    expect(list![1].split('|')).toEqual([...PRESS_NAMES]);
  });

  it('CONTRIBUTING.md names files that exist', () => {
    const md = fs.readFileSync(path.join(repoRoot, 'CONTRIBUTING.md'), 'utf8');
    const paths = [...md.matchAll(/`((?:src|test|docs|tools|native|wasm)\/[\w./-]+\.(?:ts|md|mjs|c))`/g)].map((m) => m[1]);
    expect(paths.length).toBeGreaterThan(10);
    // The worked example (knorm) and placeholders (<name>) are not files.
    for (const p of paths) if (!p.includes('<') && !p.includes('knorm')) expect(fs.existsSync(path.join(repoRoot, p)), p).toBe(true);
  });
});
