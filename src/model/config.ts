import { CokvError } from '../errors.js';

/** Architecture families the engine runs. All are Llama-style pre-norm decoders with GQA, RoPE and SwiGLU. */
export type Architecture = 'llama' | 'mistral' | 'qwen2';

/** RoPE frequency scaling, as in transformers' `rope_scaling`. */
export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | { type: 'linear'; factor: number };

/** Every dimension the forward pass needs, read from the model file (never hard-coded). */
export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  numLayers: number;
  /** Query heads per layer. */
  numHeads: number;
  /** KV heads per layer (GQA: numHeads is a multiple of numKvHeads). */
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  /** Largest context the model was built for (max_position_embeddings / context_length). */
  contextLength: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  /**
   * Per-frequency divisors (headDim/2 values) as stored by llama.cpp in `rope_freqs.weight` for llama3 scaling;
   * when present they are used instead of `ropeScaling`.
   */
  ropeFreqFactors?: number[];
  rmsNormEps: number;
  tiedEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  attentionBias: boolean;
}

/** Element counts of a config's weights, for `inspect` and sanity checks. */
export function parameterCount(c: ModelConfig): number {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const perLayer =
    c.hiddenSize * (q + 2 * kv) + q * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize + 2 * c.hiddenSize +
    (c.attentionBias ? q + 2 * kv : 0);
  const embed = c.vocabSize * c.hiddenSize;
  return embed + (c.tiedEmbeddings ? 0 : embed) + c.numLayers * perLayer + c.hiddenSize;
}

/** Validate a config's internal consistency; throws CokvError naming `source`. */
export function validateConfig(c: ModelConfig, source: string): void {
  const positive: (keyof ModelConfig)[] = [
    'hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize', 'contextLength',
  ];
  for (const k of positive) {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v <= 0 || v > 2 ** 31) {
      throw new CokvError(`${source}: ${k} = ${v} is not a sensible positive integer`);
    }
  }
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new CokvError(`${source}: ${c.numHeads} query heads is not a multiple of ${c.numKvHeads} KV heads`);
  }
  if (c.headDim % 2 !== 0) throw new CokvError(`${source}: head_dim ${c.headDim} must be even for RoPE`);
  if (!(c.ropeTheta > 0)) throw new CokvError(`${source}: rope theta ${c.ropeTheta} must be positive`);
  if (!(c.rmsNormEps > 0 && c.rmsNormEps < 1)) throw new CokvError(`${source}: rms eps ${c.rmsNormEps} out of range`);
  const params = parameterCount(c);
  if (params > 2 ** 40) throw new CokvError(`${source}: dimensions imply ${params} parameters, which is absurd`);
}
