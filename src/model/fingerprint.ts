import { createHash } from 'node:crypto';
import type { ModelConfig } from './config.js';

/** Identifies a model's shape for profile files: the same model in any format or quantization matches. */
export interface ModelFingerprint {
  architecture: string;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  hiddenSize: number;
  intermediateSize: number;
  vocabSize: number;
  /** sha256 (first 16 hex digits) of the canonical tensor layout implied by the dims above. */
  hash: string;
}

export function modelFingerprint(c: ModelConfig): ModelFingerprint {
  const base = {
    architecture: c.architecture === 'mistral' ? 'llama' : c.architecture,
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    hiddenSize: c.hiddenSize,
    intermediateSize: c.intermediateSize,
    vocabSize: c.vocabSize,
  };
  const layout = {
    ...base,
    tensors: [
      ['token_embd', c.vocabSize, c.hiddenSize],
      ['attn_q', c.numHeads * c.headDim, c.hiddenSize],
      ['attn_k', c.numKvHeads * c.headDim, c.hiddenSize],
      ['attn_v', c.numKvHeads * c.headDim, c.hiddenSize],
      ['attn_output', c.hiddenSize, c.numHeads * c.headDim],
      ['ffn_gate', c.intermediateSize, c.hiddenSize],
      ['ffn_up', c.intermediateSize, c.hiddenSize],
      ['ffn_down', c.hiddenSize, c.intermediateSize],
      ['bias', c.attentionBias ? 1 : 0],
      ['tied', c.tiedEmbeddings ? 1 : 0],
    ],
  };
  const hash = createHash('sha256').update(JSON.stringify(layout)).digest('hex').slice(0, 16);
  return { ...base, hash };
}

/** Why two fingerprints differ, or undefined if they match. */
export function fingerprintMismatch(expected: ModelFingerprint, got: Partial<ModelFingerprint>): string | undefined {
  for (const k of Object.keys(expected) as (keyof ModelFingerprint)[]) {
    if (got[k] !== undefined && got[k] !== expected[k]) return `${k} is ${String(got[k])}, the loaded model has ${String(expected[k])}`;
  }
  return undefined;
}
