/**
 * Phi-3 / Phi-3.5 / Phi-4-mini: Llama recipe with fused qkv_proj and gate_up_proj (split at load), partial
 * rotary embedding (`partial_rotary_factor`), optional "longrope" scaling and a sliding window on every layer.
 */
import { CokvError } from '../../errors.js';
import { llamaRecipe, type ModelConfig, type RopeSpec } from '../config.js';
import { allFull, GGUF_NAMES, HF_NAMES, hfRope, hfRotaryDim, standardLayerTensors, withSliding } from './common.js';
import { checkLlamaHf } from './llama.js';
import type { ArchModule } from './types.js';

export const phi3: ArchModule = {
  architecture: 'phi3',
  hfModelTypes: ['phi3'],
  hfClasses: ['Phi3ForCausalLM'],
  ggufArchs: ['phi3'],
  defaultContext: 4096,
  fromHf(base, cfg) {
    checkLlamaHf(cfg);
    const rope = hfRope(cfg);
    const rotaryDim = hfRotaryDim(cfg, base.headDim);
    if (rope.scaling?.type === 'longrope' && rope.scaling.shortFactor.length !== rotaryDim / 2) {
      throw new CokvError(`${cfg.file}: longrope short_factor has ${rope.scaling.shortFactor.length} values, expected rotary dim / 2 = ${rotaryDim / 2}`, 'format');
    }
    const spec: RopeSpec = { theta: rope.theta, rotaryDim, ...(rope.scaling ? { scaling: rope.scaling } : {}) };
    const window = cfg.optNum('sliding_window');
    const layers = window && window > 0 ? withSliding(allFull(base, spec), window, () => true) : allFull(base, spec);
    const c: ModelConfig = { ...base, ropeTheta: rope.theta, attentionBias: false, recipe: llamaRecipe(base.headDim), layers };
    if (rope.scaling) c.ropeScaling = rope.scaling;
    return c;
  },
  fromGguf(base, meta) {
    const rotaryDim = meta.optNum('rope.dimension_count') ?? base.headDim;
    // Longrope factors live in rope_factors_{short,long}.weight tensors; the GGUF loader reads them into `scaling`.
    const spec: RopeSpec = { theta: base.ropeTheta, rotaryDim };
    const window = meta.optNum('attention.sliding_window');
    const layers = window && window > 0 ? withSliding(allFull(base, spec), window, () => true) : allFull(base, spec);
    return { ...base, attentionBias: false, recipe: llamaRecipe(base.headDim), layers };
  },
  hfTensors: HF_NAMES,
  ggufTensors: { global: GGUF_NAMES.global, layer: { ...GGUF_NAMES.layer, wGateUp: 'blk.{l}.ffn_up.weight' } },
  hfNormOffset: 0,
  ggufPermuteQK: false,
  layerTensors: (c) => standardLayerTensors(c, true, true),
};
