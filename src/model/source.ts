import type { ModelConfig } from './config.js';
import type { Tokenizer } from './tokenizer/types.js';
import type { ModelWeights } from './weights.js';

/** Storage types found in model files (before any conversion at load). */
export type FileDType =
  | 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k'
  | 'iq4_nl' | 'iq4_xs';

/** A tensor as described by the file header. Shape is in the nn.Linear order: [rows, cols] for matrices. */
export interface TensorInfo {
  name: string;
  shape: number[];
  dtype: FileDType;
}

/** Defaults from generation_config.json or GGUF metadata. */
export interface GenerationDefaults {
  temperature?: number;
  topK?: number;
  topP?: number;
  eosIds?: number[];
}

/**
 * An opened model file or folder: header-level facts are available at once, weights and tokenizer are read on
 * demand so `inspect` stays cheap on large files.
 */
export interface ModelSource {
  format: 'gguf' | 'hf' | 'llama2c';
  /** The file or folder that was opened. */
  path: string;
  config: ModelConfig;
  tensors: TensorInfo[];
  /** Jinja chat template, if the model ships one. */
  chatTemplate?: string;
  /** Special token strings the template may reference. */
  bosToken?: string;
  eosToken?: string;
  generation?: GenerationDefaults;
  loadTokenizer(): Promise<Tokenizer>;
  /** Read all weights into memory (F16 matrices and block-quantized ones stay as stored; BF16 and every vector widen to F32). */
  loadWeights(): ModelWeights;
}
