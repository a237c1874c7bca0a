/**
 * What an architecture module gives the generic loaders: its names in each format, how its config maps onto
 * {@link ModelConfig} (block recipe and per-layer list included), and its tensor-name map. Adding an
 * architecture is one file here plus a registry line in `index.ts` (and fixtures).
 */
import type { Architecture, ModelConfig } from '../config.js';

/** Tensors of one decoder layer, by role. Fused ones (Phi-3) are split into their parts at load. */
export type LayerTensor =
  | 'attnNorm' | 'wq' | 'wk' | 'wv' | 'wqkv' | 'wo' | 'bq' | 'bk' | 'bv' | 'qNorm' | 'kNorm' | 'postAttnNorm'
  | 'ffnNorm' | 'wGate' | 'wUp' | 'wGateUp' | 'wDown' | 'postFfnNorm';

/** Tensors outside the layers. */
export type GlobalTensor = 'tokenEmbedding' | 'finalNorm' | 'lmHead';

/** One format's tensor names: global names and, per role, the layer name with `{l}` for the layer index. */
export interface TensorNames {
  global: Record<GlobalTensor, string>;
  layer: Partial<Record<LayerTensor, string>>;
}

/** Typed reads of a config.json object; each throws a one-line CokvError naming the file and key. */
export interface HfConfigReader {
  readonly file: string;
  readonly raw: Record<string, unknown>;
  num(key: string, def?: number): number;
  optNum(key: string): number | undefined;
  bool(key: string, def: boolean): boolean;
  str(key: string): string | undefined;
  /** A nested object (undefined when absent). */
  obj(key: string): Record<string, unknown> | undefined;
}

/** Typed reads of GGUF metadata (`key` without the `<arch>.` prefix unless it starts with `general.`/`tokenizer.`). */
export interface GgufMetaReader {
  readonly file: string;
  /** The file's `general.architecture`. */
  readonly arch: string;
  num(key: string, def?: number): number;
  optNum(key: string): number | undefined;
  str(key: string): string | undefined;
  /** A metadata array (undefined when absent). */
  arr(key: string): unknown[] | undefined;
  /** Whether a tensor of that name is in the file. */
  hasTensor(name: string): boolean;
}

export interface ArchModule {
  readonly architecture: Architecture;
  /** HF config.json `model_type` values. */
  readonly hfModelTypes: readonly string[];
  /** HF `architectures` class names. */
  readonly hfClasses: readonly string[];
  /** GGUF `general.architecture` values. */
  readonly ggufArchs: readonly string[];
  /** Context length when config.json has no max_position_embeddings. */
  readonly defaultContext: number;
  /** Finish a config read with the common HF keys: recipe, layers, arch-specific keys. */
  fromHf(base: ModelConfig, cfg: HfConfigReader): ModelConfig;
  /** Finish a config read with the common GGUF keys. */
  fromGguf(base: ModelConfig, meta: GgufMetaReader): ModelConfig;
  readonly hfTensors: TensorNames;
  readonly ggufTensors: TensorNames;
  /** Added to every norm weight read from an HF file (Gemma stores w for a (1 + w) norm; its GGUF stores 1 + w). */
  readonly hfNormOffset: number;
  /** llama.cpp permutes Q/K rows of `llama`-type GGUFs to interleaved RoPE pairs; undone at load. */
  readonly ggufPermuteQK: boolean;
  /** Layer tensors present for a config (in each format). */
  layerTensors(c: ModelConfig, format: 'hf' | 'gguf'): LayerTensor[];
}
