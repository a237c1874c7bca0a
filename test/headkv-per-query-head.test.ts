import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { loadPerQueryHeadModel } from '../src/press/head-scores/per-query-head.js';
import { createPress } from '../src/press/registry.js';
import type { ScoredPress } from '../src/press/press.js';
import { asset, haveAssets, tmpDir } from './helpers.js';

const tinyDir = asset('models/cokv-retrieval-tiny');
const essay = asset('data/needle/PaulGrahamEssays/avg.txt');

describe.skipIf(!haveAssets || !fs.existsSync(tinyDir))('per-query-head HeadKV (the official GQA rule)', () => {
  it('the multi-head twin computes the same function, and headkv then budgets each query head at G× the memory', async () => {
    const gqa = await loadModel(tinyDir);
    const mha = await loadPerQueryHeadModel(tinyDir);
    expect(mha.config.numKvHeads).toBe(8);
    const ids = gqa.encode(fs.readFileSync(essay, 'utf8'), true).slice(0, 1024);
    const full = (m: typeof gqa): Float32Array => m.prefill(ids, m.newCache(ids.length));
    const a = full(gqa), b = full(mha);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    expect(worst).toBeLessThan(1e-3);

    // Scores per query head (the shape `cokv head-scores` writes); concentrated like this model's R2 scores.
    const scores = [[0, 0, 0.004, 0, 0, 0, 0.004, 0.002], [0.23, 0, 0, 0, 0, 0, 0.006, 0], [0.32, 0.001, 0.001, 0.011, 0, 0, 0, 0], [0.32, 0.001, 0.01, 0.004, 0, 0.01, 0.058, 0.007]];
    const file = `${tmpDir()}/scores.json`;
    fs.writeFileSync(file, JSON.stringify({ shape: [4, 8], method: 'r2', scores }));
    const B = 128, w = 8, beta = 1.01;
    const run = (m: typeof gqa): { press: ScoredPress; bytes: number } => {
      const press = createPress('headkv', { headScores: file, budget: B, redistribute: false }, m.config) as ScoredPress;
      const cache = m.newCache(ids.length);
      m.prefill(ids, cache, press);
      return { press, bytes: cache.bytes() };
    };
    const perKv = run(gqa), perQ = run(mha);
    // The official allocation (headkv/snapkv_utils.py): per query head round(score/Σ · pool + min_num), kept ≤ L − w
    // (both sides count the selected entries, the window of w excluded).
    const base = B - w, shared = Math.floor(base / beta), total = scores.flat().reduce((x, y) => x + y, 0);
    const official = scores.map((row) => row.map((s) => Math.min(ids.length - w, Math.round((s / total) * shared * 32 + (base - shared)))));
    for (let l = 0; l < 4; l++) {
      for (let h = 0; h < 8; h++) expect(Math.abs(perQ.press.lastAllocation[l][h] - official[l][h])).toBeLessThanOrEqual(1);
    }
    // Memory: per query head stores every query head's selection plus its window; the KV-head press about 1/G of
    // that (less where the top query heads hit L − w).
    const entries = (p: ScoredPress, heads: number): number => p.lastAllocation.flat().reduce((x, y) => x + y, 0) + w * heads;
    expect(perQ.bytes / perKv.bytes).toBeCloseTo(entries(perQ.press, 32) / entries(perKv.press, 16), 9);
    expect(perQ.bytes / perKv.bytes).toBeGreaterThan(1.7);
    console.log(`[per-query-head] L=${ids.length} B=${B}: KV heads ${entries(perKv.press, 16)} entries ${perKv.bytes} B; query heads ${entries(perQ.press, 32)} entries ${perQ.bytes} B`);
  });
});
