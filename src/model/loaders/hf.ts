/**
 * Hugging Face model folders: config.json + model.safetensors (or sharded with model.safetensors.index.json) +
 * tokenizer.json / tokenizer_config.json / generation_config.json. Llama, Mistral and Qwen2 decoders.
 *
 * Weights are used in the HF layout as stored (nn.Linear [out, in]); no Q/K permutation is needed because the
 * forward pass uses HF's rotate_half RoPE.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CokvError } from '../../errors.js';
import { validateConfig, type Architecture, type ModelConfig, type RopeScaling } from '../config.js';
import type { FileDType, GenerationDefaults, ModelSource, TensorInfo } from '../source.js';
import { HfTokenizer, readJsonObject, specialTokenString } from '../tokenizer/hf-tokenizer.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { LayerWeights, ModelWeights, Weight } from '../weights.js';
import { openSafetensorsFolder, type SafetensorsEntry, type SafetensorsStore } from './safetensors.js';

type Json = Record<string, unknown>;

const MODEL_TYPES: Record<string, { arch: Architecture; className: string }> = {
  llama: { arch: 'llama', className: 'LlamaForCausalLM' },
  mistral: { arch: 'mistral', className: 'MistralForCausalLM' },
  qwen2: { arch: 'qwen2', className: 'Qwen2ForCausalLM' },
};

const DEFAULT_CONTEXT: Record<Architecture, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768 };

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function num(cfg: Json, key: string, file: string, def?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (def !== undefined) return def;
    throw new CokvError(`${file}: missing "${key}"`, 'format');
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CokvError(`${file}: "${key}" is not a number`, 'format');
  return v;
}

function bool(cfg: Json, key: string, file: string, def: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'boolean') throw new CokvError(`${file}: "${key}" is not true/false`, 'format');
  return v;
}

function parseRopeScaling(raw: unknown, file: string): RopeScaling | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isObj(raw)) throw new CokvError(`${file}: rope_scaling is not an object`, 'format');
  const type = raw.rope_type ?? raw.type;
  if (type === undefined || type === null || type === 'default') return undefined;
  const where = `${file} rope_scaling`;
  if (type === 'linear') {
    const factor = num(raw, 'factor', where);
    if (!(factor > 0)) throw new CokvError(`${where}: factor ${factor} must be positive`, 'format');
    return { type: 'linear', factor };
  }
  if (type === 'llama3') {
    const s: RopeScaling = {
      type: 'llama3',
      factor: num(raw, 'factor', where),
      lowFreqFactor: num(raw, 'low_freq_factor', where),
      highFreqFactor: num(raw, 'high_freq_factor', where),
      originalMaxPositionEmbeddings: num(raw, 'original_max_position_embeddings', where),
    };
    if (!(s.factor > 0 && s.lowFreqFactor > 0 && s.highFreqFactor > s.lowFreqFactor && s.originalMaxPositionEmbeddings > 0)) {
      throw new CokvError(`${where}: inconsistent llama3 parameters`, 'format');
    }
    return s;
  }
  throw new CokvError(`${file}: unsupported rope scaling type ${JSON.stringify(type)} (supported: llama3, linear, default)`, 'format');
}

/** Map a transformers config.json object to our ModelConfig (validated). */
export function configFromHf(cfg: Json, file: string): ModelConfig {
  const modelType = cfg.model_type;
  const archs = cfg.architectures;
  if (archs !== undefined && archs !== null && !(Array.isArray(archs) && archs.every((a) => typeof a === 'string'))) {
    throw new CokvError(`${file}: "architectures" is not a list of strings`, 'format');
  }
  let known = typeof modelType === 'string' && Object.hasOwn(MODEL_TYPES, modelType) ? MODEL_TYPES[modelType] : undefined;
  if (modelType === undefined && Array.isArray(archs)) {
    known = Object.values(MODEL_TYPES).find((m) => archs.includes(m.className));
  }
  if (!known) {
    throw new CokvError(
      `${file}: unsupported model_type ${JSON.stringify(modelType ?? null)} (supported: llama, mistral, qwen2)`, 'format');
  }
  if (Array.isArray(archs) && archs.length > 0) {
    const classes = Object.values(MODEL_TYPES).map((m) => m.className);
    if (!archs.some((a) => classes.includes(a as string))) {
      throw new CokvError(
        `${file}: model_type ${String(modelType)} with unsupported architectures ${JSON.stringify(archs)} (need a *ForCausalLM)`,
        'format');
    }
  }
  const arch = known.arch;
  const act = cfg.hidden_act;
  if (act !== undefined && act !== 'silu') {
    throw new CokvError(`${file}: hidden_act ${JSON.stringify(act)} is not supported (only silu)`, 'format');
  }
  if (bool(cfg, 'mlp_bias', file, false)) throw new CokvError(`${file}: mlp_bias = true is not supported`, 'format');

  const hiddenSize = num(cfg, 'hidden_size', file);
  const numHeads = num(cfg, 'num_attention_heads', file);
  const numKvHeads = num(cfg, 'num_key_value_heads', file, numHeads);
  const headDim = num(cfg, 'head_dim', file, numHeads > 0 ? hiddenSize / numHeads : NaN);
  // transformers 5 moves rope_theta / rope_scaling into rope_parameters.
  const ropeParams = isObj(cfg.rope_parameters) ? cfg.rope_parameters : undefined;
  const ropeTheta = num(cfg, 'rope_theta', file, ropeParams ? num(ropeParams, 'rope_theta', `${file} rope_parameters`, 10000) : 10000);
  const ropeScaling = parseRopeScaling(cfg.rope_scaling ?? ropeParams, file);
  const config: ModelConfig = {
    architecture: arch,
    hiddenSize,
    numLayers: num(cfg, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: num(cfg, 'intermediate_size', file),
    vocabSize: num(cfg, 'vocab_size', file),
    contextLength: num(cfg, 'max_position_embeddings', file, DEFAULT_CONTEXT[arch]),
    ropeTheta,
    rmsNormEps: num(cfg, 'rms_norm_eps', file, 1e-6),
    tiedEmbeddings: bool(cfg, 'tie_word_embeddings', file, false),
    attentionBias: arch === 'qwen2' ? true : arch === 'llama' ? bool(cfg, 'attention_bias', file, false) : false,
  };
  if (ropeScaling) config.ropeScaling = ropeScaling;
  validateConfig(config, file);
  return config;
}

const DTYPE_MAP: Record<SafetensorsEntry['dtype'], FileDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** Expected tensor names and shapes for a config (lm_head only when untied). */
function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  m.set('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    m.set(`${p}input_layernorm.weight`, [c.hiddenSize]);
    m.set(`${p}self_attn.q_proj.weight`, [q, c.hiddenSize]);
    m.set(`${p}self_attn.k_proj.weight`, [kv, c.hiddenSize]);
    m.set(`${p}self_attn.v_proj.weight`, [kv, c.hiddenSize]);
    m.set(`${p}self_attn.o_proj.weight`, [c.hiddenSize, q]);
    if (c.attentionBias) {
      m.set(`${p}self_attn.q_proj.bias`, [q]);
      m.set(`${p}self_attn.k_proj.bias`, [kv]);
      m.set(`${p}self_attn.v_proj.bias`, [kv]);
    }
    m.set(`${p}post_attention_layernorm.weight`, [c.hiddenSize]);
    m.set(`${p}mlp.gate_proj.weight`, [c.intermediateSize, c.hiddenSize]);
    m.set(`${p}mlp.up_proj.weight`, [c.intermediateSize, c.hiddenSize]);
    m.set(`${p}mlp.down_proj.weight`, [c.hiddenSize, c.intermediateSize]);
  }
  m.set('model.norm.weight', [c.hiddenSize]);
  if (!c.tiedEmbeddings) m.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
  return m;
}

/** Tensors that may be present but are not used (buffers some exporters save; lm_head when tied). */
function ignorable(name: string, c: ModelConfig): boolean {
  return name.endsWith('.rotary_emb.inv_freq') || (c.tiedEmbeddings && name === 'lm_head.weight');
}

function listSome(names: string[]): string {
  const shown = names.slice(0, 5).join(', ');
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}

function checkTensors(store: SafetensorsStore, c: ModelConfig): void {
  const want = expectedTensors(c);
  const missing = [...want.keys()].filter((n) => !store.tensors.has(n));
  if (missing.length > 0) {
    const hint = missing.includes('lm_head.weight') && missing.length === 1
      ? ' (tie_word_embeddings is false but there is no lm_head.weight)' : '';
    throw new CokvError(`${store.path}: missing tensors: ${listSome(missing)}${hint}`, 'format');
  }
  const unexpected = [...store.tensors.keys()].filter((n) => !want.has(n) && !ignorable(n, c));
  if (unexpected.length > 0) {
    throw new CokvError(`${store.path}: unexpected tensors for this config: ${listSome(unexpected)}`, 'format');
  }
  for (const [name, shape] of want) {
    const got = store.tensors.get(name)!.shape;
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      throw new CokvError(
        `${store.path}: tensor "${name}" has shape [${got.join(', ')}], expected [${shape.join(', ')}] from config.json`, 'format');
    }
  }
}

function eosList(v: unknown): number[] | undefined {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return [v];
  if (Array.isArray(v)) {
    const ids = v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0);
    return ids.length > 0 ? ids : undefined;
  }
  return undefined;
}

/** `chat_template` as a string, or the one named "default" from a list of {name, template}. */
export function pickChatTemplate(raw: unknown, file: string): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw === 'string') return raw;
  if (Array.isArray(raw)) {
    const entries = raw.filter((e): e is Json => isObj(e) && typeof e.template === 'string');
    const def = entries.find((e) => e.name === 'default') ?? (entries.length === 1 ? entries[0] : undefined);
    if (!def) throw new CokvError(`${file}: chat_template list has no "default" template`, 'format');
    return def.template as string;
  }
  throw new CokvError(`${file}: chat_template is neither a string nor a list of templates`, 'format');
}

/** Open a Hugging Face model folder. Reads config and safetensors headers at once; weights on loadWeights(). */
export function openHfFolder(dir: string): ModelSource {
  const configPath = path.join(dir, 'config.json');
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CokvError(`${dir}: not a folder`, 'file');
  const rawConfig = readJsonObject(configPath);
  const config = configFromHf(rawConfig, configPath);
  const store = openSafetensorsFolder(dir);
  checkTensors(store, config);

  const tokCfgPath = path.join(dir, 'tokenizer_config.json');
  const tokCfg = readJsonObject(tokCfgPath, true);
  const genPath = path.join(dir, 'generation_config.json');
  const gen = readJsonObject(genPath, true);

  const generation: GenerationDefaults = {};
  const eosIds = eosList(gen?.eos_token_id) ?? eosList(rawConfig.eos_token_id);
  if (eosIds) generation.eosIds = eosIds;
  if (gen) {
    // transformers ignores temperature/top-k/top-p unless do_sample is true: do_sample false means greedy.
    if (gen.do_sample === false) generation.temperature = 0;
    else if (typeof gen.temperature === 'number') generation.temperature = gen.temperature;
    if (typeof gen.top_k === 'number') generation.topK = gen.top_k;
    if (typeof gen.top_p === 'number') generation.topP = gen.top_p;
  }

  const tensors: TensorInfo[] = [...store.tensors.values()].map((e) => ({
    name: e.name,
    shape: [...e.shape],
    dtype: DTYPE_MAP[e.dtype],
  }));

  const source: ModelSource = {
    format: 'hf',
    path: dir,
    config,
    tensors,
    generation,
    loadTokenizer(): Promise<Tokenizer> {
      return Promise.resolve().then(() => {
        const tokPath = path.join(dir, 'tokenizer.json');
        const tokJson = readJsonObject(tokPath);
        return new HfTokenizer(tokJson, tokCfg ?? {}, { source: tokPath, extraEosIds: generation.eosIds });
      });
    },
    loadWeights(): ModelWeights {
      return loadWeights(store, config);
    },
  };
  if (tokCfg) {
    const tpl = pickChatTemplate(tokCfg.chat_template, tokCfgPath);
    if (tpl !== undefined) source.chatTemplate = tpl;
    const bos = specialTokenString(tokCfg.bos_token);
    if (bos !== undefined) source.bosToken = bos;
    const eos = specialTokenString(tokCfg.eos_token);
    if (eos !== undefined) source.eosToken = eos;
  }
  // Newer exports keep the template in chat_template.jinja / chat_template.json.
  if (source.chatTemplate === undefined) {
    const jinjaPath = path.join(dir, 'chat_template.jinja');
    if (fs.existsSync(jinjaPath)) {
      source.chatTemplate = fs.readFileSync(jinjaPath, 'utf8');
    } else {
      const jsonPath = path.join(dir, 'chat_template.json');
      const j = readJsonObject(jsonPath, true);
      const tpl = j ? pickChatTemplate(j.chat_template, jsonPath) : undefined;
      if (tpl !== undefined) source.chatTemplate = tpl;
    }
  }
  return source;
}

function loadWeights(store: SafetensorsStore, c: ModelConfig): ModelWeights {
  const vec = (name: string): Float32Array => store.read(name);
  // F16 matrices stay F16 (half the memory; kernels widen them as they read); BF16 widens to F32.
  const mat = (name: string): Weight => {
    const e = store.tensors.get(name)!;
    if (e.dtype === 'F16') return { dtype: 'f16', rows: e.shape[0], cols: e.shape[1], data: store.readRaw(name) };
    return { dtype: 'f32', rows: e.shape[0], cols: e.shape[1], data: store.read(name) };
  };
  const tokenEmbedding = mat('model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const layer: LayerWeights = {
      attnNorm: vec(`${p}input_layernorm.weight`),
      wq: mat(`${p}self_attn.q_proj.weight`),
      wk: mat(`${p}self_attn.k_proj.weight`),
      wv: mat(`${p}self_attn.v_proj.weight`),
      wo: mat(`${p}self_attn.o_proj.weight`),
      ffnNorm: vec(`${p}post_attention_layernorm.weight`),
      wGate: mat(`${p}mlp.gate_proj.weight`),
      wUp: mat(`${p}mlp.up_proj.weight`),
      wDown: mat(`${p}mlp.down_proj.weight`),
    };
    if (c.attentionBias) {
      layer.bq = vec(`${p}self_attn.q_proj.bias`);
      layer.bk = vec(`${p}self_attn.k_proj.bias`);
      layer.bv = vec(`${p}self_attn.v_proj.bias`);
    }
    layers.push(layer);
  }
  const finalNorm = vec('model.norm.weight');
  const lmHead = c.tiedEmbeddings ? tokenEmbedding : mat('lm_head.weight');
  return { tokenEmbedding, layers, finalNorm, lmHead };
}
