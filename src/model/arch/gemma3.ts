/**
 * Gemma 3 (text): (1 + w) RMSNorm, sandwich norms around attention and FFN, √hidden embedding scale, GeGLU with
 * tanh GELU, q/k norm, attention scale 1/√query_pre_attn_scalar, and sliding-window layers (5 of every 6 by
 * default) with their own RoPE base. Only the full-attention layers are budgeted by presses.
 */
import { CokvError } from '../../errors.js';
import { type BlockRecipe, type ModelConfig, type RopeSpec } from '../config.js';
import { allFull, GGUF_NAMES, ggufRopeScaling, HF_NAMES, hfRope, standardLayerTensors, withSliding } from './common.js';
import { checkLlamaHf, hfLayerTypes } from './llama.js';
import type { ArchModule, TensorNames } from './types.js';

function recipe(base: ModelConfig, attentionScale: number, softcap: number | undefined): BlockRecipe {
  const r: BlockRecipe = {
    qkNorm: true, attentionBias: false, postNorms: true, activation: 'gelu_tanh', attentionScale,
    // transformers and llama.cpp both multiply by √hidden in the activations' float type.
    embeddingScale: Math.fround(Math.sqrt(base.hiddenSize)),
  };
  if (softcap) r.finalLogitSoftcap = softcap;
  return r;
}

const HF_GEMMA: TensorNames = {
  global: HF_NAMES.global,
  layer: {
    ...HF_NAMES.layer,
    postAttnNorm: 'model.layers.{l}.post_attention_layernorm.weight',
    ffnNorm: 'model.layers.{l}.pre_feedforward_layernorm.weight',
    postFfnNorm: 'model.layers.{l}.post_feedforward_layernorm.weight',
  },
};

export const gemma3: ArchModule = {
  architecture: 'gemma3',
  hfModelTypes: ['gemma3_text'],
  hfClasses: ['Gemma3ForCausalLM'],
  ggufArchs: ['gemma3'],
  defaultContext: 131072,
  fromHf(base, cfg) {
    checkLlamaHf(cfg, ['gelu_pytorch_tanh', 'gelu_tanh']);
    if (cfg.raw.attn_logit_softcapping !== undefined && cfg.raw.attn_logit_softcapping !== null) {
      throw new CokvError(`${cfg.file}: attn_logit_softcapping is not supported (Gemma 3 has none)`, 'format');
    }
    const scalar = cfg.num('query_pre_attn_scalar', base.headDim);
    if (!(scalar > 0)) throw new CokvError(`${cfg.file}: query_pre_attn_scalar ${scalar} must be positive`, 'format');
    const full = hfRope(cfg, 'full_attention', 1_000_000);
    const localTheta = cfg.optNum('rope_local_base_freq');
    const local = cfg.obj('rope_parameters')?.sliding_attention !== undefined
      ? hfRope(cfg, 'sliding_attention', 10000)
      : { theta: localTheta ?? 10000 };
    const fullRope: RopeSpec = { theta: full.theta, rotaryDim: base.headDim, ...(full.scaling ? { scaling: full.scaling } : {}) };
    const localRope: RopeSpec = { theta: local.theta, rotaryDim: base.headDim, ...('scaling' in local && local.scaling ? { scaling: local.scaling } : {}) };
    const window = cfg.num('sliding_window', 4096);
    const pattern = cfg.num('sliding_window_pattern', cfg.num('_sliding_window_pattern', 6));
    const isSliding = hfLayerTypes(cfg, base.numLayers) ?? ((l: number) => (l + 1) % pattern !== 0);
    const c: ModelConfig = {
      ...base, ropeTheta: full.theta, attentionBias: false,
      recipe: recipe(base, 1 / Math.sqrt(scalar), cfg.optNum('final_logit_softcapping')),
      layers: withSliding(allFull(base, fullRope), window, isSliding, localRope),
    };
    if (full.scaling) c.ropeScaling = full.scaling;
    else delete c.ropeScaling;
    return c;
  },
  fromGguf(base, meta) {
    // As llama.cpp (src/models/gemma3.cpp): scale 1/√key_length except the 62-layer 27B (1/√(hidden/heads));
    // sliding pattern from attention.sliding_window_pattern (a count or a per-layer list), default 6; local base
    // rope.freq_base_swa, default 10000, never scaled.
    const attentionScale = base.numLayers === 62 ? 1 / Math.sqrt(base.hiddenSize / base.numHeads) : 1 / Math.sqrt(base.headDim);
    const scaling = ggufRopeScaling(meta);
    const fullRope: RopeSpec = { theta: base.ropeTheta, rotaryDim: base.headDim, ...(scaling ? { scaling } : {}) };
    const localRope: RopeSpec = { theta: meta.optNum('rope.freq_base_swa') ?? 10000, rotaryDim: base.headDim };
    const window = meta.optNum('attention.sliding_window');
    let layers = allFull(base, fullRope);
    if (window && window > 0) {
      const list = meta.arr('attention.sliding_window_pattern');
      let isSliding: (l: number) => boolean;
      if (list) {
        if (list.length < base.numLayers) throw new CokvError(`${meta.file}: attention.sliding_window_pattern lists ${list.length} layers, the model has ${base.numLayers}`, 'format');
        isSliding = (l) => Boolean(list[l]);
      } else {
        const n = meta.optNum('attention.sliding_window_pattern') ?? 6;
        isSliding = (l) => n === 0 || l % n < n - 1;
      }
      layers = withSliding(layers, window, isSliding, localRope);
    }
    const c: ModelConfig = { ...base, attentionBias: false, recipe: recipe(base, attentionScale, meta.optNum('final_logit_softcapping')), layers };
    if (scaling) c.ropeScaling = scaling;
    return c;
  },
  hfTensors: HF_GEMMA,
  ggufTensors: GGUF_NAMES,
  hfNormOffset: 1,
  ggufPermuteQK: false,
  layerTensors: (c) => standardLayerTensors(c),
};
