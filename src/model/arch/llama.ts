/** Llama (1–3.x, SmolLM2, TinyLlama, …): the base recipe every other module starts from. */
import { CokvError } from '../../errors.js';
import { llamaRecipe, type ModelConfig } from '../config.js';
import { allFull, GGUF_NAMES, HF_NAMES, standardLayerTensors, withSliding } from './common.js';
import type { ArchModule, HfConfigReader } from './types.js';

/** SiLU only; llama's optional attention bias; mlp_bias refused. */
export function checkLlamaHf(cfg: HfConfigReader, allowed: readonly string[] = ['silu']): void {
  const act = cfg.str('hidden_act') ?? cfg.str('hidden_activation');
  if (act !== undefined && !allowed.includes(act)) {
    throw new CokvError(`${cfg.file}: hidden_act ${JSON.stringify(act)} is not supported (supported: ${allowed.join(', ')})`, 'format');
  }
  if (cfg.bool('mlp_bias', false)) throw new CokvError(`${cfg.file}: mlp_bias = true is not supported`, 'format');
}

/**
 * transformers' per-layer kinds: v5 `layer_types` ("full_attention" / "sliding_attention"), else the arch's own
 * rule. Returns the sliding test or undefined when the config says nothing.
 */
export function hfLayerTypes(cfg: HfConfigReader, numLayers: number): ((l: number) => boolean) | undefined {
  const lt = cfg.raw.layer_types;
  if (lt === undefined || lt === null) return undefined;
  if (!Array.isArray(lt) || lt.length !== numLayers || !lt.every((t) => t === 'full_attention' || t === 'sliding_attention')) {
    throw new CokvError(
      `${cfg.file}: layer_types must list "full_attention" or "sliding_attention" for each of the ${numLayers} layers`, 'format');
  }
  return (l) => lt[l] === 'sliding_attention';
}

/** Sliding-window layers of Llama-family configs (Mistral, Qwen2/3 with use_sliding_window), as transformers reads them. */
export function hfSlidingLayers(base: ModelConfig, cfg: HfConfigReader, defaultSliding: (l: number) => boolean): ModelConfig['layers'] {
  const window = cfg.optNum('sliding_window');
  const layers = allFull(base);
  if (!window || window <= 0) return layers;
  const isSliding = hfLayerTypes(cfg, base.numLayers) ?? defaultSliding;
  return withSliding(layers, window, isSliding);
}

export const llama: ArchModule = {
  architecture: 'llama',
  hfModelTypes: ['llama'],
  hfClasses: ['LlamaForCausalLM'],
  ggufArchs: ['llama'],
  defaultContext: 2048,
  fromHf(base, cfg) {
    checkLlamaHf(cfg);
    const bias = cfg.bool('attention_bias', false);
    return { ...base, attentionBias: bias, recipe: llamaRecipe(base.headDim, bias), layers: allFull(base) };
  },
  fromGguf(base, meta) {
    // Llama GGUFs may carry biases (some converted checkpoints do); their presence decides.
    const bias = meta.hasTensor('blk.0.attn_q.bias');
    return { ...base, attentionBias: bias, recipe: llamaRecipe(base.headDim, bias), layers: allFull(base) };
  },
  hfTensors: HF_NAMES,
  ggufTensors: GGUF_NAMES,
  hfNormOffset: 0,
  ggufPermuteQK: true,
  layerTensors: (c) => standardLayerTensors(c),
};
