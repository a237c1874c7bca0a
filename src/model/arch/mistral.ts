/** Mistral (HF form; llama.cpp converts Mistral to the `llama` GGUF architecture). Sliding window on every layer when set. */
import { llamaRecipe } from '../config.js';
import { checkLlamaHf, hfSlidingLayers, llama } from './llama.js';
import type { ArchModule } from './types.js';

export const mistral: ArchModule = {
  ...llama,
  architecture: 'mistral',
  hfModelTypes: ['mistral'],
  hfClasses: ['MistralForCausalLM'],
  ggufArchs: [],
  defaultContext: 4096 * 32,
  fromHf(base, cfg) {
    checkLlamaHf(cfg);
    return { ...base, attentionBias: false, recipe: llamaRecipe(base.headDim), layers: hfSlidingLayers(base, cfg, () => true) };
  },
};
