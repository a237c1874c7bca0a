/** Shared pieces of the architecture modules: default tensor names, the Llama-family layer list, RoPE reads. */
import { CokvError } from '../../errors.js';
import { globalRope, type LayerSpec, type ModelConfig, type RopeScaling, type RopeSpec } from '../config.js';
import type { GgufMetaReader, HfConfigReader, LayerTensor, TensorNames } from './types.js';

/** transformers' names for a Llama-style decoder. */
export const HF_NAMES: TensorNames = {
  global: { tokenEmbedding: 'model.embed_tokens.weight', finalNorm: 'model.norm.weight', lmHead: 'lm_head.weight' },
  layer: {
    attnNorm: 'model.layers.{l}.input_layernorm.weight',
    wq: 'model.layers.{l}.self_attn.q_proj.weight',
    wk: 'model.layers.{l}.self_attn.k_proj.weight',
    wv: 'model.layers.{l}.self_attn.v_proj.weight',
    wqkv: 'model.layers.{l}.self_attn.qkv_proj.weight',
    wo: 'model.layers.{l}.self_attn.o_proj.weight',
    bq: 'model.layers.{l}.self_attn.q_proj.bias',
    bk: 'model.layers.{l}.self_attn.k_proj.bias',
    bv: 'model.layers.{l}.self_attn.v_proj.bias',
    qNorm: 'model.layers.{l}.self_attn.q_norm.weight',
    kNorm: 'model.layers.{l}.self_attn.k_norm.weight',
    ffnNorm: 'model.layers.{l}.post_attention_layernorm.weight',
    wGate: 'model.layers.{l}.mlp.gate_proj.weight',
    wUp: 'model.layers.{l}.mlp.up_proj.weight',
    wGateUp: 'model.layers.{l}.mlp.gate_up_proj.weight',
    wDown: 'model.layers.{l}.mlp.down_proj.weight',
  },
};

/** llama.cpp's names (src/llama-arch.cpp). */
export const GGUF_NAMES: TensorNames = {
  global: { tokenEmbedding: 'token_embd.weight', finalNorm: 'output_norm.weight', lmHead: 'output.weight' },
  layer: {
    attnNorm: 'blk.{l}.attn_norm.weight',
    wq: 'blk.{l}.attn_q.weight',
    wk: 'blk.{l}.attn_k.weight',
    wv: 'blk.{l}.attn_v.weight',
    wqkv: 'blk.{l}.attn_qkv.weight',
    wo: 'blk.{l}.attn_output.weight',
    bq: 'blk.{l}.attn_q.bias',
    bk: 'blk.{l}.attn_k.bias',
    bv: 'blk.{l}.attn_v.bias',
    qNorm: 'blk.{l}.attn_q_norm.weight',
    kNorm: 'blk.{l}.attn_k_norm.weight',
    postAttnNorm: 'blk.{l}.post_attention_norm.weight',
    ffnNorm: 'blk.{l}.ffn_norm.weight',
    wGate: 'blk.{l}.ffn_gate.weight',
    wUp: 'blk.{l}.ffn_up.weight',
    wDown: 'blk.{l}.ffn_down.weight',
    postFfnNorm: 'blk.{l}.post_ffw_norm.weight',
  },
};

/** The name of a layer tensor for layer `l`. */
export function layerTensorName(names: TensorNames, role: LayerTensor, l: number): string {
  const n = names.layer[role];
  if (!n) throw new Error(`no tensor name for ${role}`);
  return n.replace('{l}', String(l));
}

/** The roles a layer has under a recipe (unfused projections). */
export function standardLayerTensors(c: ModelConfig, fusedQkv = false, fusedGateUp = false): LayerTensor[] {
  const r = c.recipe;
  return [
    'attnNorm',
    ...(fusedQkv ? ['wqkv'] as const : ['wq', 'wk', 'wv'] as const),
    ...(r.attentionBias ? ['bq', 'bk', 'bv'] as const : []),
    ...(r.qkNorm ? ['qNorm', 'kNorm'] as const : []),
    'wo',
    ...(r.postNorms ? ['postAttnNorm'] as const : []),
    'ffnNorm',
    ...(fusedGateUp ? ['wGateUp'] as const : ['wGate', 'wUp'] as const),
    'wDown',
    ...(r.postNorms ? ['postFfnNorm'] as const : []),
  ];
}

/** Every layer full attention with the config's RoPE. */
export function allFull(c: ModelConfig, rope: RopeSpec | undefined = globalRope(c)): LayerSpec[] {
  return Array.from({ length: c.numLayers }, () => (rope ? { kind: 'full' as const, rope } : { kind: 'full' as const }));
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function numIn(o: Record<string, unknown>, key: string, where: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CokvError(`${where}: "${key}" is missing or not a number`, 'format');
  return v;
}

function numList(o: Record<string, unknown>, key: string, where: string): number[] {
  const v = o[key];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
    throw new CokvError(`${where}: "${key}" is not a list of positive numbers`, 'format');
  }
  return v as number[];
}

/**
 * RoPE scaling from a transformers `rope_scaling` (v4) or `rope_parameters` (v5) object; undefined for none or
 * 'default'. `maxPositions` is the config's max_position_embeddings (longrope's default attention factor) and
 * `originalDefault` its top-level original_max_position_embeddings.
 */
export function parseRopeScaling(raw: unknown, where: string, maxPositions?: number, originalDefault?: number): RopeScaling | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isObj(raw)) throw new CokvError(`${where}: rope scaling is not an object`, 'format');
  const type = raw.rope_type ?? raw.type;
  if (type === undefined || type === null || type === 'default') return undefined;
  if (type === 'linear') {
    const factor = numIn(raw, 'factor', where);
    if (!(factor > 0)) throw new CokvError(`${where}: factor ${factor} must be positive`, 'format');
    return factor === 1 ? undefined : { type: 'linear', factor };
  }
  if (type === 'llama3') {
    const s: RopeScaling = {
      type: 'llama3',
      factor: numIn(raw, 'factor', where),
      lowFreqFactor: numIn(raw, 'low_freq_factor', where),
      highFreqFactor: numIn(raw, 'high_freq_factor', where),
      originalMaxPositionEmbeddings: numIn(raw, 'original_max_position_embeddings', where),
    };
    if (!(s.factor > 0 && s.lowFreqFactor > 0 && s.highFreqFactor > s.lowFreqFactor && s.originalMaxPositionEmbeddings > 0)) {
      throw new CokvError(`${where}: inconsistent llama3 parameters`, 'format');
    }
    return s;
  }
  if (type === 'longrope' || type === 'su') {
    // Phi-3 v4 configs keep original_max_position_embeddings at the top level, v5 inside rope_parameters.
    const original = typeof raw.original_max_position_embeddings === 'number' ? raw.original_max_position_embeddings : originalDefault;
    if (!(original && original > 0)) throw new CokvError(`${where}: longrope needs original_max_position_embeddings`, 'format');
    let attentionFactor = typeof raw.attention_factor === 'number' ? raw.attention_factor : undefined;
    if (attentionFactor === undefined) {
      // transformers: factor = max_position_embeddings / original; attention factor √(1 + ln(factor)/ln(original)).
      const factor = typeof raw.factor === 'number' ? raw.factor : (maxPositions ?? original) / original;
      attentionFactor = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original));
    }
    return {
      type: 'longrope', shortFactor: numList(raw, 'short_factor', where), longFactor: numList(raw, 'long_factor', where),
      originalMaxPositionEmbeddings: original, attentionFactor,
    };
  }
  throw new CokvError(
    `${where}: unsupported rope scaling type ${JSON.stringify(type)} (supported: default, linear, llama3, longrope)`, 'format');
}

/**
 * The RoPE of a transformers config: `rope_parameters` (v5; either one object or one per layer type, e.g.
 * {full_attention, sliding_attention}) or top-level `rope_theta` + `rope_scaling` (v4).
 */
export function hfRope(cfg: HfConfigReader, layerType = 'full_attention', defaultTheta = 10000): { theta: number; scaling?: RopeScaling } {
  const params = cfg.obj('rope_parameters');
  const maxPos = cfg.optNum('max_position_embeddings');
  const original = cfg.optNum('original_max_position_embeddings');
  const perType = params && isObj(params[layerType]) ? (params[layerType] as Record<string, unknown>) : undefined;
  const p = perType ?? (params && typeof params.rope_theta === 'number' ? params : undefined);
  const where = `${cfg.file} rope_parameters${perType ? `.${layerType}` : ''}`;
  if (p) {
    const theta = typeof p.rope_theta === 'number' ? p.rope_theta : defaultTheta;
    const scaling = parseRopeScaling(p, where, maxPos, original);
    return scaling ? { theta, scaling } : { theta };
  }
  const theta = cfg.num('rope_theta', defaultTheta);
  const scaling = parseRopeScaling(cfg.raw.rope_scaling, `${cfg.file} rope_scaling`, maxPos, original);
  return scaling ? { theta, scaling } : { theta };
}

/** Rotary dimensions from `partial_rotary_factor` (top-level or in rope_parameters). */
export function hfRotaryDim(cfg: HfConfigReader, headDim: number): number {
  const params = cfg.obj('rope_parameters');
  const f = cfg.optNum('partial_rotary_factor') ?? (typeof params?.partial_rotary_factor === 'number' ? params.partial_rotary_factor : 1);
  if (!(f > 0 && f <= 1)) throw new CokvError(`${cfg.file}: partial_rotary_factor ${f} must be in (0, 1]`, 'format');
  // transformers: dim = int(head_dim * partial_rotary_factor)
  return Math.floor(headDim * f);
}

/** GGUF RoPE scaling keys (`rope.scaling.type`, `rope.scaling.factor`). */
export function ggufRopeScaling(meta: GgufMetaReader): RopeScaling | undefined {
  const type = meta.str('rope.scaling.type');
  if (type === undefined || type === 'none') return undefined;
  if (type === 'linear') {
    const factor = meta.num('rope.scaling.factor', 1);
    if (!(factor > 0)) throw new CokvError(`${meta.file}: rope scaling factor ${factor} must be positive`, 'format');
    return factor === 1 ? undefined : { type: 'linear', factor };
  }
  throw new CokvError(`${meta.file}: unsupported rope scaling type '${type}' for ${meta.arch} (supported: linear, none)`, 'format');
}

/** A copy of `c` with every layer sliding over `window` positions where `isSliding(l)`. */
export function withSliding(layers: LayerSpec[], window: number, isSliding: (l: number) => boolean, slidingRope?: RopeSpec): LayerSpec[] {
  return layers.map((spec, l) => {
    if (!isSliding(l)) return spec;
    const s: LayerSpec = { ...spec, kind: 'sliding', window };
    if (slidingRope) s.rope = slidingRope;
    return s;
  });
}
