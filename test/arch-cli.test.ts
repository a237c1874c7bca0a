/**
 * Presses, `profile`, `eval` and `bench` end to end on the Gemma 3 fixture (5 sliding-window layers and 1 full
 * layer: budgets, players and byte counts cover the full layer only) and on the Qwen3 fixture, in HF and GGUF form.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { asset, cokv, haveAssets, repoRoot, tmpDir } from './helpers.js';

const fixture = (p: string): string => path.join(repoRoot, 'test/fixtures/models', p);
const data = asset('data/stories/stories-dev.jsonl');
const prompt = 'Once upon a time there was a little girl named Lily who loved to play outside in the park with her ' +
  'friends every day, and one day she found a big red ball under a tree near the pond.';

interface Case { name: string; model: string; fullLayers: number[]; kvHeads: number; sliding: number }
const cases: Case[] = [
  { name: 'gemma3-tiny HF', model: fixture('gemma3-tiny/hf-bf16'), fullLayers: [5], kvHeads: 2, sliding: 5 },
  { name: 'gemma3-tiny GGUF', model: fixture('gemma3-tiny/gemma3-tiny-f32.gguf'), fullLayers: [5], kvHeads: 2, sliding: 5 },
  { name: 'qwen3-tiny HF', model: fixture('qwen3-tiny/hf-bf16'), fullLayers: [0, 1], kvHeads: 2, sliding: 0 },
  { name: 'qwen3-tiny GGUF', model: fixture('qwen3-tiny/qwen3-tiny-f32.gguf'), fullLayers: [0, 1], kvHeads: 2, sliding: 0 },
];

describe.skipIf(!haveAssets)('presses, profile, eval and bench on the new architectures', () => {
  for (const c of cases) {
    it(`${c.name}: presses budget only full-attention layers; profile, eval and bench run`, { timeout: 120_000 }, () => {
      const dir = tmpDir('cokv-arch-cli-');
      try {
        // generate with a press: the prompt KV of the budgeted layers is 16 entries per head, sliding layers keep their window.
        const g = cokv('generate', '--model', c.model, '--prompt', prompt, '--max-tokens', '4', '--temperature', '0',
          '--press', 'snapkv', '--budget', '16', '--window', '4', '--json');
        expect(g.code, g.stderr).toBe(0);
        const s = JSON.parse(g.stdout).stats;
        expect(s.promptTokens).toBeGreaterThan(32);
        const headDimBytes = s.promptBudgetedFullKvBytes / (s.promptTokens * c.fullLayers.length * c.kvHeads);
        expect(s.promptBudgetedKvBytes).toBe(16 * c.fullLayers.length * c.kvHeads * headDimBytes);
        if (c.sliding > 0) expect(s.promptKvBytes - s.promptBudgetedKvBytes).toBeGreaterThan(0);

        const profile = path.join(dir, 'p.json');
        const p = cokv('profile', '--model', c.model, '--data', data, '--task', 'stories', '--utility', 'loglik',
          '--limit', '2', '--runs', '1', '--samples', '8', '--out', profile, '--quiet');
        expect(p.code, p.stderr).toBe(0);
        const pf = JSON.parse(fs.readFileSync(profile, 'utf8'));
        expect(pf.shape).toEqual([c.fullLayers.length, c.kvHeads]);
        expect(pf.layers).toEqual(c.fullLayers);

        const e = cokv('eval', '--model', c.model, '--data', data, '--dataset', 'stories', '--split', 'all', '--limit', '2',
          '--presses', 'full,snapkv,pyramidkv,adakv,cokv', '--budgets', '16', '--window', '4', '--profile', profile,
          '--out', path.join(dir, 'runs'), '--quiet', '--json');
        expect(e.code, e.stderr).toBe(0);
        const runs = JSON.parse(e.stdout) as { press: string; keptKvBytes: number; fullKvBytes: number }[];
        expect(runs.map((r) => r.press).sort()).toEqual(['adakv', 'cokv', 'full', 'pyramidkv', 'snapkv']);
        for (const r of runs) {
          if (r.press === 'full') expect(r.keptKvBytes).toBe(r.fullKvBytes);
          else expect(r.keptKvBytes).toBeLessThan(r.fullKvBytes);
        }

        const b = cokv('bench', '--model', c.model, '--lengths', '64', '--presses', 'full,snapkv', '--budgets', '16',
          '--decode', '2', '--out', path.join(dir, 'runs'));
        expect(b.code, b.stderr).toBe(0);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
