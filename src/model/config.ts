import { CokvError } from '../errors.js';

/**
 * Architecture families the engine runs: pre-norm decoders with GQA. Each has one module under `src/model/arch/`
 * that maps its file formats onto the {@link ModelConfig} below (names, tensor map, block recipe, layer list).
 */
export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gemma3' | 'smollm3' | 'phi3';

/** RoPE frequency scaling, as in transformers' `rope_scaling` / `rope_parameters`. */
export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | { type: 'linear'; factor: number }
  /**
   * Phi-3's "longrope": per-frequency divisors (`short_factor` up to the original context, `long_factor` beyond) and
   * a cos/sin multiplier `attentionFactor` (default √(1 + ln(factor)/ln(original))).
   */
  | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; originalMaxPositionEmbeddings: number; attentionFactor: number };

/** The rotary embedding of one layer. */
export interface RopeSpec {
  theta: number;
  scaling?: RopeScaling;
  /**
   * Per-frequency divisors (rotaryDim/2 values) as stored by llama.cpp in `rope_freqs.weight` for llama3 scaling;
   * when present they are used instead of `scaling`.
   */
  freqFactors?: number[];
  /** Leading dimensions of each head that rotate (headDim, or less with Phi's `partial_rotary_factor`). Even. */
  rotaryDim: number;
}

/** What one decoder layer's attention sees. */
export interface LayerSpec {
  /** 'full': every earlier entry; 'sliding': only the last `window` positions (the query's own included). */
  kind: 'full' | 'sliding';
  /** Sliding-window length in positions (sliding layers only). */
  window?: number;
  /** Rotary embedding; undefined = no positional rotation (SmolLM3's NoPE layers). */
  rope?: RopeSpec;
}

/**
 * How a block is built, in the spirit of llama.cpp's build_norm / build_attn / build_ffn. Norm weights are
 * stored as the multiplier itself: formats that keep `w` for a `(1 + w)` norm (Gemma in HF form) get the offset
 * added at load, so the forward pass has one RMSNorm.
 */
export interface BlockRecipe {
  /** Per-head RMSNorm of q and k (weights of headDim) before RoPE (Qwen3, Gemma 3). */
  qkNorm: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  attentionBias: boolean;
  /** Gemma's sandwich norms: an RMSNorm on the attention output and on the FFN output before each residual add. */
  postNorms: boolean;
  /** FFN gate activation: SiLU (SwiGLU) or tanh-approximated GELU (GeGLU). */
  activation: 'silu' | 'gelu_tanh';
  /** Multiplier of q·k (1/√headDim, or 1/√query_pre_attn_scalar for Gemma). */
  attentionScale: number;
  /** Multiplier of the embedding rows (1, or √hidden for Gemma). */
  embeddingScale: number;
  /** logits = cap · tanh(logits / cap) when set (Gemma 2 style final soft-capping). */
  finalLogitSoftcap?: number;
}

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
  /** RoPE base of full-attention layers (per-layer values are in `layers`). */
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  /** See {@link RopeSpec.freqFactors}. */
  ropeFreqFactors?: number[];
  rmsNormEps: number;
  tiedEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2); the same as `recipe.attentionBias`. */
  attentionBias: boolean;
  /** The block recipe (see {@link BlockRecipe}). */
  recipe: BlockRecipe;
  /** One entry per layer: attention kind, window, RoPE. */
  layers: LayerSpec[];
}

/** The Llama recipe: SwiGLU, plain RMSNorm, 1/√headDim, no q/k norm. */
export function llamaRecipe(headDim: number, attentionBias = false): BlockRecipe {
  return {
    qkNorm: false, attentionBias, postNorms: false, activation: 'silu',
    attentionScale: 1 / Math.sqrt(headDim), embeddingScale: 1,
  };
}

/** Every layer full attention with the config's one RoPE (the Llama/Mistral/Qwen2 case). */
export function uniformLayers(c: Pick<ModelConfig, 'numLayers' | 'ropeTheta' | 'ropeScaling' | 'ropeFreqFactors' | 'headDim'>): LayerSpec[] {
  return Array.from({ length: c.numLayers }, () => ({ kind: 'full' as const, rope: globalRope(c) }));
}

/** The RoPE spec of the config's top-level fields. */
export function globalRope(c: Pick<ModelConfig, 'ropeTheta' | 'ropeScaling' | 'ropeFreqFactors' | 'headDim'>, rotaryDim = c.headDim): RopeSpec {
  const r: RopeSpec = { theta: c.ropeTheta, rotaryDim };
  if (c.ropeScaling) r.scaling = c.ropeScaling;
  if (c.ropeFreqFactors) r.freqFactors = c.ropeFreqFactors;
  return r;
}

/** Layers whose cache is budgeted by presses and the head game (full attention; sliding layers keep their window). */
export function fullAttentionLayers(c: Pick<ModelConfig, 'layers'>): number[] {
  const out: number[] = [];
  c.layers.forEach((l, i) => { if (l.kind === 'full') out.push(i); });
  return out;
}

/** Element counts of a config's weights, for `inspect` and sanity checks. */
export function parameterCount(c: ModelConfig): number {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const norms = (c.recipe.postNorms ? 4 : 2) * c.hiddenSize + (c.recipe.qkNorm ? 2 * c.headDim : 0);
  const perLayer =
    c.hiddenSize * (q + 2 * kv) + q * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize + norms +
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
  if (c.layers.length !== c.numLayers) {
    throw new CokvError(`${source}: ${c.layers.length} layer descriptions for ${c.numLayers} layers`);
  }
  c.layers.forEach((l, i) => {
    if (l.kind === 'sliding' && !(Number.isInteger(l.window) && l.window! > 0)) {
      throw new CokvError(`${source}: layer ${i} is sliding-window attention without a positive window (${l.window})`);
    }
    if (l.rope) {
      const r = l.rope;
      if (!(r.theta > 0)) throw new CokvError(`${source}: layer ${i} rope theta ${r.theta} must be positive`);
      if (!(Number.isInteger(r.rotaryDim) && r.rotaryDim > 0 && r.rotaryDim <= c.headDim && r.rotaryDim % 2 === 0)) {
        throw new CokvError(`${source}: layer ${i} rotary dimension ${r.rotaryDim} must be even and at most head_dim ${c.headDim}`);
      }
      if (r.freqFactors && r.freqFactors.length !== r.rotaryDim / 2) {
        throw new CokvError(`${source}: layer ${i} has ${r.freqFactors.length} rope frequency factors, expected ${r.rotaryDim / 2}`);
      }
    }
  });
  if (!(c.recipe.attentionScale > 0 && Number.isFinite(c.recipe.attentionScale))) {
    throw new CokvError(`${source}: attention scale ${c.recipe.attentionScale} must be positive`);
  }
  const params = parameterCount(c);
  if (params > 2 ** 40) throw new CokvError(`${source}: dimensions imply ${params} parameters, which is absurd`);
}

/** A config without (or with partial) recipe and layer list, as hand-written configs and llama2.c headers give it. */
export type BaseConfig = Omit<ModelConfig, 'recipe' | 'layers'> & Partial<Pick<ModelConfig, 'recipe' | 'layers'>>;

/** Fill in the Llama recipe (bias from `attentionBias`) and all-full layers with the config's RoPE where absent. */
export function completeConfig(c: BaseConfig): ModelConfig {
  return {
    ...c,
    recipe: c.recipe ?? llamaRecipe(c.headDim, c.attentionBias),
    layers: c.layers ?? uniformLayers(c),
  };
}
