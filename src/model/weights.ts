/**
 * Weight matrices as the kernels see them. Row-major [rows][cols] in the nn.Linear layout: y = W·x has `rows`
 * outputs and `cols` inputs. F32 is held as Float32Array; block-quantized types keep their raw GGUF bytes and are
 * dequantized on the fly by the kernels, so a Q8_0 model stays ~4x smaller in memory than F32. F16 matrices keep their
 * raw half-precision bytes the same way (a block of one element), so F16 files load at half the memory of F32.
 */
export type WeightDType = 'f32' | QuantWeight['dtype'];

export interface F32Weight {
  dtype: 'f32';
  rows: number;
  cols: number;
  data: Float32Array;
}

export interface QuantWeight {
  dtype:
    | 'f16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'iq4_nl'
    | 'iq4_xs';
  rows: number;
  cols: number;
  /** Raw blocks, `rows * bytesPerRow` bytes. */
  data: Uint8Array;
}

export type Weight = F32Weight | QuantWeight;

/** One decoder layer's tensors. Norm weights and biases are always F32. */
export interface LayerWeights {
  attnNorm: Float32Array;
  wq: Weight;
  wk: Weight;
  wv: Weight;
  wo: Weight;
  bq?: Float32Array;
  bk?: Float32Array;
  bv?: Float32Array;
  /** Per-head RMSNorm weights of q and k ([headDim]; Qwen3, Gemma 3). */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  /** Gemma's norm of the attention output before the residual add. */
  postAttnNorm?: Float32Array;
  ffnNorm: Float32Array;
  /** Gemma's norm of the FFN output before the residual add. */
  postFfnNorm?: Float32Array;
  wGate: Weight;
  wUp: Weight;
  wDown: Weight;
}

export interface ModelWeights {
  /** [vocab][hidden]. */
  tokenEmbedding: Weight;
  layers: LayerWeights[];
  finalNorm: Float32Array;
  /** [vocab][hidden]; the same object as tokenEmbedding when embeddings are tied. */
  lmHead: Weight;
}
