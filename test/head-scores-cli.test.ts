import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { retrievalHeadScores } from '../src/press/headkv-scorer.js';
import { readHeadScores } from '../src/press/head-values.js';
import { createPress } from '../src/press/registry.js';
import { asset, cokv, cokvInProcess, haveAssets, tmpDir } from './helpers.js';

const tiny = asset('models/cokv-retrieval-tiny');
const stories = asset('models/stories260K');
const essays = asset('data/needle/PaulGrahamEssays');

/** A failed run: exit 1 and one `cokv: …` line on stderr containing every pattern. */
function expectOneLineError(r: { code: number; stderr: string }, ...patterns: (string | RegExp)[]): void {
  expect(r.code, r.stderr).toBe(1);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  for (const p of patterns) expect(lines[0]).toMatch(p);
}

describe.skipIf(!haveAssets || !fs.existsSync(tiny))('cokv head-scores', () => {
  it('bad flags and unanswerable needles are one-line errors', async () => {
    const out = `${tmpDir()}/x.json`;
    const base = ['head-scores', '--model', tiny, '--haystack', essays, '--out', out];
    // One run as a real process: exit status 1 and one line.
    expectOneLineError(cokv(...base, '--method', 'argmax'), /--method: 'argmax' is not a head-score method \(r2, copy, output-norm, entropy\)/);
    expectOneLineError(await cokvInProcess(...base, '--needle', '8'), /--needle: applies to --method copy only/);
    expectOneLineError(await cokvInProcess(...base, '--method', 'copy', '--needles-per-kind', '2'), /--needles-per-kind: applies to --method r2, output-norm and entropy, not copy/);
    expectOneLineError(await cokvInProcess(...base, '--length', '512,'), /--length: '512,' must be a length or a comma-separated list/);
    expectOneLineError(await cokvInProcess(...base, '--method', 'entropy', '--length', '512,16'), /--length: 16 is below the minimum 32/);
    expectOneLineError(await cokvInProcess('head-scores', '--model', tiny, '--haystack', `${tmpDir()}/none`, '--out', out), /--haystack .*none: cannot read it/);
    expectOneLineError(await cokvInProcess('head-scores', '--model', tiny, '--haystack', essays, '--method', 'copy', '--length', '128', '--samples', '1',
      '--out', `${tmpDir()}/no/such/dir/x.json`), /--out .*x\.json: cannot write it \(ENOENT\)/);
    // stories260K cannot answer a pass-key question: R2 has no prompt to score and says so.
    if (fs.existsSync(stories)) {
      expectOneLineError(await cokvInProcess('head-scores', '--model', stories, '--haystack', essays, '--length', '256', '--samples', '1', '--needles-per-kind', '1', '--out', out),
        /no answer passed the F1 > 0\.5 filter \(0 of 2 prompts\)/);
    }
    expect(fs.existsSync(out)).toBe(false);
  });

  it('writes the method into the file, the headkv press reads every method, and copy keeps its scores', async () => {
    const dir = tmpDir();
    const model = await loadModel(tiny);
    const small = ['--length', '256', '--samples', '1', '--needles-per-kind', '1'];
    for (const method of ['r2', 'output-norm', 'entropy', 'copy'] as const) {
      const file = `${dir}/${method}.json`;
      const r = await cokvInProcess('head-scores', '--model', tiny, '--haystack', essays, '--method', method,
        ...(method === 'copy' ? ['--length', '256', '--samples', '1', '--needle', '8'] : small), '--out', file);
      expect(r.code, r.stderr).toBe(0);
      const obj = JSON.parse(fs.readFileSync(file, 'utf8'));
      expect(obj.method).toBe(method);
      expect(obj.shape).toEqual([4, 8]);
      expect(readHeadScores(file, model.config)).toEqual(obj.scores);
      expect(createPress('headkv', { headScores: file, budget: 32 }, model.config)?.name).toBe('headkv');
      if (method === 'r2') {
        expect(obj.prompts).toBe(2);
        expect(obj.samples).toHaveLength(2);
        expect(obj.kept).toBe(obj.samples.filter((s: { kept: boolean }) => s.kept).length);
        expect(r.stderr).toMatch(new RegExp(`${obj.kept} of 2 prompts answered with F1 > 0\\.5`));
      }
      if (method === 'copy') {
        const text = fs.readdirSync(essays).filter((x) => x.endsWith('.txt')).sort().map((x) => fs.readFileSync(`${essays}/${x}`, 'utf8')).join('\n\n');
        expect(obj.scores).toEqual(retrievalHeadScores(model, { haystack: text, length: 256, samples: 1, needleTokens: 8, seed: 1 }));
      }
    }
  });
});
