import { describe, expect, it } from 'vitest';
import { Sampler, applyRepetitionPenalty, argmax } from '../src/generate/sampling.js';
import { Rng } from '../src/generate/rng.js';

describe('sampling', () => {
  it('greedy picks the argmax, lowest id on ties', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(new Sampler({ temperature: 0 }).sample(new Float32Array([0.1, 5, 2]), [])).toBe(1);
  });

  it('repetition penalty divides positive and multiplies negative logits of seen tokens', () => {
    const l = new Float32Array([2, -2, 1]);
    applyRepetitionPenalty(l, [0, 1, 1], 2);
    expect(Array.from(l)).toEqual([1, -4, 1]);
  });

  it('the same seed gives the same samples; top-k 1 is greedy', () => {
    const logits = () => new Float32Array([1, 1.2, 0.8, 1.1, 0.9]);
    const a = new Sampler({ temperature: 1, seed: 7 });
    const b = new Sampler({ temperature: 1, seed: 7 });
    const sa = Array.from({ length: 50 }, () => a.sample(logits(), []));
    const sb = Array.from({ length: 50 }, () => b.sample(logits(), []));
    expect(sa).toEqual(sb);
    expect(new Set(sa).size).toBeGreaterThan(1);
    const k1 = new Sampler({ temperature: 1, topK: 1, seed: 3 });
    for (let i = 0; i < 20; i++) expect(k1.sample(logits(), [])).toBe(1);
  });

  it('top-p and min-p cut the tail', () => {
    // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.6 keeps only token 0, min-p 0.3 keeps tokens 0 and 1.
    const logits = () => new Float32Array([3, 2, 1, 0]);
    const p = new Sampler({ temperature: 1, topP: 0.6, seed: 1 });
    for (let i = 0; i < 30; i++) expect(p.sample(logits(), [])).toBe(0);
    const m = new Sampler({ temperature: 1, minP: 0.3, seed: 1 });
    const seen = new Set(Array.from({ length: 200 }, () => m.sample(logits(), [])));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('sampling frequencies follow the softmax', () => {
    const s = new Sampler({ temperature: 1, seed: 11 });
    const counts = [0, 0];
    for (let i = 0; i < 4000; i++) counts[s.sample(new Float32Array([Math.log(3), 0]), [])]++;
    expect(counts[0] / 4000).toBeGreaterThan(0.71);
    expect(counts[0] / 4000).toBeLessThan(0.79);
  });

  it('rng is deterministic and uniform-ish', () => {
    const r = new Rng(42);
    const xs = Array.from({ length: 1000 }, () => r.next());
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
    expect(new Rng(42).next()).toBe(xs[0]);
  });
});
