/** Shared pieces of the benchmark scripts: random models of real shapes, timing, markdown tables, machine info. */
import os from 'node:os';
import { Rng } from '../src/generate/rng.js';
import { completeConfig, type ModelConfig } from '../src/model/config.js';
import type { F32Weight, ModelWeights } from '../src/model/weights.js';

/** SmolLM2-135M's real dimensions (config.json of HuggingFaceTB/SmolLM2-135M). */
export const SMOLLM2_135M: ModelConfig = completeConfig({
  architecture: 'llama',
  hiddenSize: 576,
  numLayers: 30,
  numHeads: 9,
  numKvHeads: 3,
  headDim: 64,
  intermediateSize: 1536,
  vocabSize: 49152,
  contextLength: 8192,
  ropeTheta: 100000,
  rmsNormEps: 1e-5,
  tiedEmbeddings: true,
  attentionBias: false,
});

/** Random F32 weights (uniform ±scale/√cols, seeded) for speed and memory measurements only. */
export function randomModelWeights(c: ModelConfig, seed = 1): ModelWeights {
  const rng = new Rng(seed);
  const mat = (rows: number, cols: number): F32Weight => {
    const data = new Float32Array(rows * cols);
    const s = 1 / Math.sqrt(cols);
    for (let i = 0; i < data.length; i++) data[i] = (rng.next() * 2 - 1) * s;
    return { dtype: 'f32', rows, cols, data };
  };
  const ones = (n: number) => new Float32Array(n).fill(1);
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const emb = mat(c.vocabSize, c.hiddenSize);
  return {
    tokenEmbedding: emb,
    layers: Array.from({ length: c.numLayers }, () => ({
      attnNorm: ones(c.hiddenSize), wq: mat(q, c.hiddenSize), wk: mat(kv, c.hiddenSize), wv: mat(kv, c.hiddenSize),
      wo: mat(c.hiddenSize, q), ffnNorm: ones(c.hiddenSize), wGate: mat(c.intermediateSize, c.hiddenSize),
      wUp: mat(c.intermediateSize, c.hiddenSize), wDown: mat(c.hiddenSize, c.intermediateSize),
    })),
    finalNorm: ones(c.hiddenSize),
    lmHead: c.tiedEmbeddings ? emb : mat(c.vocabSize, c.hiddenSize),
  };
}

export function randomIds(n: number, vocab: number, seed = 7): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(vocab));
}

export function machineLine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${new Date().toISOString().slice(0, 10)}, ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
}

export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`];
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n');
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
