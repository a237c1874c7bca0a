/** Qwen3 (dense): per-head RMSNorm of q and k before RoPE, explicit head_dim, no biases by default. */
import { llamaRecipe } from '../config.js';
import { allFull, GGUF_NAMES, HF_NAMES, standardLayerTensors } from './common.js';
import { checkLlamaHf } from './llama.js';
import { qwenSlidingLayers } from './qwen2.js';
import type { ArchModule } from './types.js';

export const qwen3: ArchModule = {
  architecture: 'qwen3',
  hfModelTypes: ['qwen3'],
  hfClasses: ['Qwen3ForCausalLM'],
  ggufArchs: ['qwen3'],
  defaultContext: 40960,
  fromHf(base, cfg) {
    checkLlamaHf(cfg);
    const bias = cfg.bool('attention_bias', false);
    return { ...base, attentionBias: bias, recipe: { ...llamaRecipe(base.headDim, bias), qkNorm: true }, layers: qwenSlidingLayers(base, cfg) };
  },
  fromGguf(base, meta) {
    const bias = meta.hasTensor('blk.0.attn_q.bias');
    return { ...base, attentionBias: bias, recipe: { ...llamaRecipe(base.headDim, bias), qkNorm: true }, layers: allFull(base) };
  },
  hfTensors: HF_NAMES,
  ggufTensors: GGUF_NAMES,
  hfNormOffset: 0,
  ggufPermuteQK: false,
  layerTensors: (c) => standardLayerTensors(c),
};
