/** SmolLM3: Llama with NoPE layers (no rotary embedding on every 4th layer by default). */
import { CokvError } from '../../errors.js';
import { globalRope, llamaRecipe, type ModelConfig } from '../config.js';
import { GGUF_NAMES, HF_NAMES, standardLayerTensors } from './common.js';
import { checkLlamaHf } from './llama.js';
import type { ArchModule } from './types.js';

/** Layers with RoPE given a use-rope flag per layer. */
function ropeLayers(base: ModelConfig, useRope: (l: number) => boolean): ModelConfig['layers'] {
  const rope = globalRope(base);
  return Array.from({ length: base.numLayers }, (_, l) => (useRope(l) ? { kind: 'full' as const, rope } : { kind: 'full' as const }));
}

export const smollm3: ArchModule = {
  architecture: 'smollm3',
  hfModelTypes: ['smollm3'],
  hfClasses: ['SmolLM3ForCausalLM'],
  ggufArchs: ['smollm3'],
  defaultContext: 65536,
  fromHf(base, cfg) {
    checkLlamaHf(cfg);
    // transformers: no_rope_layers[l] = 1 means layer l uses RoPE; default every `no_rope_layer_interval`-th layer has none.
    const list = cfg.raw.no_rope_layers;
    let useRope: (l: number) => boolean;
    if (list === undefined || list === null) {
      const interval = cfg.num('no_rope_layer_interval', 4);
      useRope = (l) => (l + 1) % interval !== 0;
    } else {
      if (!Array.isArray(list) || list.length !== base.numLayers || !list.every((v) => v === 0 || v === 1 || typeof v === 'boolean')) {
        throw new CokvError(`${cfg.file}: no_rope_layers must hold 0 or 1 for each of the ${base.numLayers} layers`, 'format');
      }
      useRope = (l) => Boolean(list[l]);
    }
    if (cfg.bool('use_sliding_window', false)) {
      throw new CokvError(`${cfg.file}: smollm3 with use_sliding_window = true is not supported`, 'format');
    }
    const bias = cfg.bool('attention_bias', false);
    return { ...base, attentionBias: bias, recipe: llamaRecipe(base.headDim, bias), layers: ropeLayers(base, useRope) };
  },
  fromGguf(base, meta) {
    // llama.cpp (src/models/smollm3.cpp) fixes the NoPE step at 4: layer l uses RoPE iff (l + 1) % 4 != 0.
    const step = meta.optNum('no_rope_layer_step') ?? 4;
    const bias = meta.hasTensor('blk.0.attn_q.bias');
    return { ...base, attentionBias: bias, recipe: llamaRecipe(base.headDim, bias), layers: ropeLayers(base, (l) => (l + 1) % step !== 0) };
  },
  hfTensors: HF_NAMES,
  ggufTensors: GGUF_NAMES,
  hfNormOffset: 0,
  ggufPermuteQK: true,
  layerTensors: (c) => standardLayerTensors(c),
};
