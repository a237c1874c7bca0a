/** Qwen2 / Qwen2.5: Llama with q/k/v biases; no Q/K permutation in GGUF (NeoX RoPE). */
import { llamaRecipe } from '../config.js';
import { allFull, GGUF_NAMES, HF_NAMES, standardLayerTensors } from './common.js';
import { checkLlamaHf, hfSlidingLayers } from './llama.js';
import type { ArchModule, HfConfigReader } from './types.js';
import type { ModelConfig } from '../config.js';

/** Qwen's sliding window applies only with use_sliding_window, to layers from max_window_layers on. */
export function qwenSlidingLayers(base: ModelConfig, cfg: HfConfigReader): ModelConfig['layers'] {
  if (!cfg.bool('use_sliding_window', false)) return allFull(base);
  const from = cfg.num('max_window_layers', base.numLayers);
  return hfSlidingLayers(base, cfg, (l) => l >= from);
}

export const qwen2: ArchModule = {
  architecture: 'qwen2',
  hfModelTypes: ['qwen2'],
  hfClasses: ['Qwen2ForCausalLM'],
  ggufArchs: ['qwen2'],
  defaultContext: 32768,
  fromHf(base, cfg) {
    checkLlamaHf(cfg);
    return { ...base, attentionBias: true, recipe: llamaRecipe(base.headDim, true), layers: qwenSlidingLayers(base, cfg) };
  },
  fromGguf(base) {
    return { ...base, attentionBias: true, recipe: llamaRecipe(base.headDim, true), layers: allFull(base) };
  },
  hfTensors: HF_NAMES,
  ggufTensors: GGUF_NAMES,
  hfNormOffset: 0,
  ggufPermuteQK: false,
  layerTensors: (c) => standardLayerTensors(c),
};
