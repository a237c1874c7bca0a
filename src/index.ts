/** cokv: Llama-family inference in TypeScript with a ragged per-head KV cache. */
export { loadModel, CokvModel, Generation } from './engine.js';
export type { GenerateOptions, GenerationChunk, GenerationStats, ChatMessage, LoadOptions } from './engine.js';
export { CokvError } from './errors.js';
export type { ModelConfig, Architecture, RopeScaling } from './model/config.js';
export { openModel } from './model/load.js';
export type { ModelSource, TensorInfo } from './model/source.js';
export type { Tokenizer } from './model/tokenizer/types.js';
export { RaggedKVCache, HeadCache } from './cache/ragged.js';
export { Transformer } from './model/forward.js';
export type { LayerPrefillContext, ForwardOptions } from './model/forward.js';
export { TsBackend } from './backend/ts.js';
export type { Backend } from './backend/types.js';
export { Sampler, argmax } from './generate/sampling.js';
export type { SamplingOptions } from './generate/sampling.js';
export type { Press } from './press/types.js';
