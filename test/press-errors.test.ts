/**
 * Bad press options and bad value files: every one throws a CokvError whose message starts with the option's
 * library name (the CLI writes it as its flag) or names the file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createPress, FullPress } from '../src/press/registry.js';
import type { PressOptions } from '../src/press/options.js';
import { ScoredPress } from '../src/press/press.js';
import { uniformAllocator } from '../src/press/allocators/uniform.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { tinyConfig } from './random-model.js';
import { expectCokvError, tmpDir } from './helpers.js';

const cfg = tinyConfig(); // 2 layers × 4 query heads × 2 KV heads
const dir = tmpDir('cokv-press-err-');
function file(name: string, content: unknown): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}
const goodProfile = file('good-profile.json', { model: modelFingerprint(cfg), shape: [2, 2], scores: [[1, 2], [3, 4]] });
const goodHeads = file('good-heads.json', { scores: [[1, 2, 3, 4], [5, 6, 7, 8]] });

const make = (name: string, o: PressOptions) => () => createPress(name, o, cfg);

describe('press option errors', () => {
  it('the valid baseline builds', () => {
    expect(createPress('full', {}, cfg)).toBeInstanceOf(FullPress);
    expect(createPress('cokv', { budget: 16, profile: goodProfile }, cfg)).toBeInstanceOf(ScoredPress);
    expect(createPress('headkv', { budget: 16, headScores: goodHeads }, cfg)).toBeInstanceOf(ScoredPress);
  });

  it('unknown press name lists the known ones', () => {
    const e = expectCokvError(make('snapkvv', { budget: 16 }), 'press: ', "'snapkvv'", 'snapkv', 'cokv');
    expect(e.kind).toBe('flag');
  });

  it('budget must be an integer larger than the window', () => {
    expectCokvError(make('snapkv', { budget: 8 }), 'budget: ', '8', 'window (8)');
    expectCokvError(make('snapkv', { budget: 4, window: 4 }), 'budget: ', 'window (4)');
    expectCokvError(make('snapkv', { budget: 3, window: 4 }), 'budget: ');
    expectCokvError(make('snapkv', { budget: 0 }), 'budget: ');
    expectCokvError(make('snapkv', { budget: -16 }), 'budget: ');
    expectCokvError(make('snapkv', { budget: 16.5 }), 'budget: ', '16.5');
  });

  it('a compressing press needs a budget or a ratio, not both', () => {
    expectCokvError(make('snapkv', {}), 'budget/ratio: ', 'snapkv');
    expectCokvError(make('cokv', { profile: goodProfile }), 'budget/ratio: ');
    expectCokvError(make('snapkv', { budget: 16, ratio: 0.5 }), 'budget/ratio: ', 'not both');
  });

  it('ratio must be in (0, 1]', () => {
    for (const ratio of [0, 1.5, -0.25, Number.NaN]) expectCokvError(make('snapkv', { ratio }), 'ratio: ', '(0, 1]');
    expect(createPress('snapkv', { ratio: 1 }, cfg)).toBeInstanceOf(ScoredPress);
  });

  it('alpha must be a non-negative integer', () => {
    expectCokvError(make('cokv', { budget: 16, profile: goodProfile, alpha: -1 }), 'alpha: ', '-1');
    expectCokvError(make('cokv', { budget: 16, profile: goodProfile, alpha: 1.5 }), 'alpha: ', '1.5');
    expect(createPress('cokv', { budget: 16, profile: goodProfile, alpha: 0 }, cfg)).toBeInstanceOf(ScoredPress);
  });

  it('other flags: window, kernel, pool, sink, betas, ada floor', () => {
    expectCokvError(make('snapkv', { budget: 16, window: 0 }), 'window: ');
    expectCokvError(make('snapkv', { budget: 16, window: 2.5 }), 'window: ');
    expectCokvError(make('snapkv', { budget: 16, kernel: 4 }), 'kernel: ', 'odd');
    expectCokvError(make('snapkv', { budget: 16, kernel: 0 }), 'kernel: ');
    expectCokvError(make('snapkv', { budget: 16, pool: 'median' as PressOptions['pool'] }), 'pool: ', 'median');
    expectCokvError(make('streaming', { budget: 16, sink: -1 }), 'sink: ');
    expectCokvError(make('headkv', { budget: 16, headScores: goodHeads, headkvBeta: 1 }), 'headkvBeta: ');
    expectCokvError(make('pyramidkv', { budget: 16, pyramidBeta: 0.5 }), 'pyramidBeta: ');
    expectCokvError(make('adakv', { budget: 16, adaFloor: 1.2 }), 'adaFloor: ');
    // Validation also runs for `full` and for a press built directly.
    expectCokvError(make('full', { ratio: 2 }), 'ratio: ');
    expectCokvError(() => new ScoredPress('x', undefined, uniformAllocator(), { budget: 8 }), 'budget: ');
  });
});

describe('value file errors', () => {
  it('cokv without a profile names the profile option', () => {
    expectCokvError(make('cokv', { budget: 16 }), 'profile: ', 'cokv');
  });

  it('headkv without head scores names the headScores option', () => {
    expectCokvError(make('headkv', { budget: 16 }), 'headScores: ', 'headkv');
  });

  it('missing file and non-JSON file name the flag and the file', () => {
    const missing = path.join(dir, 'nope.json');
    expectCokvError(make('cokv', { budget: 16, profile: missing }), `profile ${missing}:`, 'cannot read');
    const bad = file('bad.json', '{"shape": [2, 2], "scores": [[1, 2], [3, 4]');
    expectCokvError(make('cokv', { budget: 16, profile: bad }), `profile ${bad}:`, 'not valid JSON');
    expectCokvError(make('headkv', { budget: 16, headScores: bad }), `headScores ${bad}:`, 'not valid JSON');
    const text = file('text.json', 'layer 0: 1 2');
    expectCokvError(make('cokv', { budget: 16, profile: text }), `profile ${text}:`, 'JSON');
  });

  it('profile of another model: wrong shape', () => {
    // 3 layers instead of 2
    const p3 = file('p-3x2.json', { shape: [3, 2], scores: [[1, 2], [3, 4], [5, 6]] });
    expectCokvError(make('cokv', { budget: 16, profile: p3 }), `profile ${p3}:`, 'another model');
    // 4 KV heads instead of 2
    const p4 = file('p-2x4.json', { shape: [2, 4], scores: [[1, 2, 3, 4], [5, 6, 7, 8]] });
    expectCokvError(make('cokv', { budget: 16, profile: p4 }), `profile ${p4}:`);
    // A shape field that disagrees with the model even though the matrix happens to fit.
    const lying = file('p-lying.json', { shape: [2, 3], scores: [[1, 2], [3, 4]] });
    expectCokvError(make('cokv', { budget: 16, profile: lying }), `profile ${lying}:`, 'another model');
    // No shape field, but the matrix has the wrong number of rows / columns.
    const rows = file('p-rows.json', { scores: [[1, 2]] });
    expectCokvError(make('cokv', { budget: 16, profile: rows }), `profile ${rows}:`, 'another model');
    const cols = file('p-cols.json', { scores: [[1, 2, 3], [4, 5, 6]] });
    expectCokvError(make('cokv', { budget: 16, profile: cols }), `profile ${cols}:`, '2');
  });

  it('profile of another model: fingerprint with other dims', () => {
    const other = modelFingerprint(tinyConfig({ numKvHeads: 4 }));
    const p = file('p-fp.json', { model: other, shape: [2, 2], scores: [[1, 2], [3, 4]] });
    expectCokvError(make('cokv', { budget: 16, profile: p }), `profile ${p}:`, 'another model', 'kvHeads is 4');
    const partial = file('p-fp2.json', { model: { hiddenSize: 4096 }, scores: [[1, 2], [3, 4]] });
    expectCokvError(make('cokv', { budget: 16, profile: partial }), `profile ${partial}:`, 'hiddenSize is 4096');
  });

  it('profile with bad contents', () => {
    const noScores = file('p-none.json', { shape: [2, 2] });
    expectCokvError(make('cokv', { budget: 16, profile: noScores }), `profile ${noScores}:`, '"values" or "scores"');
    const nan = file('p-str.json', { scores: [[1, 'x'], [3, 4]] });
    expectCokvError(make('cokv', { budget: 16, profile: nan }), `profile ${nan}:`, 'not a finite number');
    const arr = file('p-arr.json', [[1, 2], [3, 4]]);
    expectCokvError(make('cokv', { budget: 16, profile: arr }), `profile ${arr}:`);
    const nul = file('p-null.json', 'null');
    expectCokvError(make('cokv', { budget: 16, profile: nul }), `profile ${nul}:`, 'JSON object');
  });

  it('head scores of another model or malformed', () => {
    const wrong = file('h-wrong.json', { scores: [[1, 2, 3], [4, 5, 6]] });
    expectCokvError(make('headkv', { budget: 16, headScores: wrong }), `headScores ${wrong}:`);
    const fp = file('h-fp.json', { model: modelFingerprint(tinyConfig({ numLayers: 3 })), scores: [[1, 2, 3, 4], [5, 6, 7, 8]] });
    expectCokvError(make('headkv', { budget: 16, headScores: fp }), `headScores ${fp}:`, 'another model', 'layers is 3');
    const head = file('h-lh.json', { '0-7': [0.5] });
    expectCokvError(make('headkv', { budget: 16, headScores: head }), `headScores ${head}:`, 'another model', '0-7');
    const key = file('h-key.json', { foo: [1] });
    expectCokvError(make('headkv', { budget: 16, headScores: key }), `headScores ${key}:`, "'foo'");
    const empty = file('h-empty.json', {});
    expectCokvError(make('headkv', { budget: 16, headScores: empty }), `headScores ${empty}:`, 'no head scores');
    const strs = file('h-str.json', { '0-1': ['a'] });
    expectCokvError(make('headkv', { budget: 16, headScores: strs }), `headScores ${strs}:`, "'0-1'");
    // Per-KV-head and per-query-head tables are both accepted, and "layer-head" files too.
    const kv = file('h-kv.json', { scores: [[1, 2], [3, 4]] });
    expect(createPress('headkv', { budget: 16, headScores: kv }, cfg)).toBeInstanceOf(ScoredPress);
    const lh = file('h-lh-ok.json', { '0-0': [1, 2], '1-3': [0.5] });
    expect(createPress('headkv', { budget: 16, headScores: lh }, cfg)).toBeInstanceOf(ScoredPress);
  });
});
