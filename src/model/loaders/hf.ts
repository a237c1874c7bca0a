/**
 * Hugging Face model folders: config.json + model.safetensors (or sharded with model.safetensors.index.json) +
 * tokenizer.json / tokenizer_config.json / generation_config.json. Architectures come from src/model/arch/.
 *
 * Weights are used in the HF layout as stored (nn.Linear [out, in]); no Q/K permutation is needed because the
 * forward pass uses HF's rotate_half RoPE.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CokvError } from '../../errors.js';
import { archForHf, archModule, type ArchModule, type HfConfigReader } from '../arch/index.js';
import { hfRope } from '../arch/common.js';
import { llamaRecipe, validateConfig, type ModelConfig } from '../config.js';
import type { FileDType, GenerationDefaults, ModelSource, TensorInfo } from '../source.js';
import { HfTokenizer, readJsonObject, specialTokenString } from '../tokenizer/hf-tokenizer.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { ModelWeights } from '../weights.js';
import { assembleWeights, expectedTensors } from './assemble.js';
import { openSafetensorsFolder, type SafetensorsEntry, type SafetensorsStore } from './safetensors.js';

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Typed, file-naming reads of a config.json object. */
export function hfConfigReader(cfg: Json, file: string): HfConfigReader {
  return {
    file,
    raw: cfg,
    num(key: string, def?: number): number {
      const v = cfg[key];
      if (v === undefined || v === null) {
        if (def !== undefined) return def;
        throw new CokvError(`${file}: missing "${key}"`, 'format');
      }
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new CokvError(`${file}: "${key}" is not a number`, 'format');
      return v;
    },
    optNum(key: string): number | undefined {
      const v = cfg[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new CokvError(`${file}: "${key}" is not a number`, 'format');
      return v;
    },
    bool(key: string, def: boolean): boolean {
      const v = cfg[key];
      if (v === undefined || v === null) return def;
      if (typeof v !== 'boolean') throw new CokvError(`${file}: "${key}" is not true/false`, 'format');
      return v;
    },
    str(key: string): string | undefined {
      const v = cfg[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'string') throw new CokvError(`${file}: "${key}" is not a string`, 'format');
      return v;
    },
    obj(key: string): Json | undefined {
      const v = cfg[key];
      if (v === undefined || v === null) return undefined;
      if (!isObj(v)) throw new CokvError(`${file}: "${key}" is not an object`, 'format');
      return v;
    },
  };
}

/** The architecture module of a config.json object. */
export function hfArch(cfg: Json, file: string): ArchModule {
  const archs = cfg.architectures;
  if (archs !== undefined && archs !== null && !(Array.isArray(archs) && archs.every((a) => typeof a === 'string'))) {
    throw new CokvError(`${file}: "architectures" is not a list of strings`, 'format');
  }
  const arch = archForHf(cfg.model_type, archs as string[] | undefined, file);
  if (Array.isArray(archs) && archs.length > 0 && !archs.some((a) => arch.hfClasses.includes(a as string))) {
    throw new CokvError(
      `${file}: model_type ${String(cfg.model_type)} with unsupported architectures ${JSON.stringify(archs)} (need ${arch.hfClasses.join(' or ')})`,
      'format');
  }
  return arch;
}

/**
 * A vision-language checkpoint whose text tower cokv runs (Gemma3ForConditionalGeneration): its `text_config` as a
 * text-only config, or undefined for any other config.
 */
function textTowerConfig(cfg: Json): Json | undefined {
  if (cfg.model_type !== 'gemma3' || !isObj(cfg.text_config)) return undefined;
  const text: Json = { ...cfg.text_config, model_type: 'gemma3_text', architectures: ['Gemma3ForCausalLM'] };
  if (text.tie_word_embeddings === undefined && cfg.tie_word_embeddings !== undefined) text.tie_word_embeddings = cfg.tie_word_embeddings;
  return text;
}

/** Map a transformers config.json object to our ModelConfig (validated): common keys here, the rest in the arch module. */
export function configFromHf(cfg: Json, file: string): ModelConfig {
  const tower = textTowerConfig(cfg);
  if (tower) return configFromHf(tower, `${file} text_config`);
  const arch = hfArch(cfg, file);
  const r = hfConfigReader(cfg, file);
  const hiddenSize = r.num('hidden_size');
  const numHeads = r.num('num_attention_heads');
  const headDim = r.num('head_dim', numHeads > 0 ? hiddenSize / numHeads : NaN);
  const rope = hfRope(r);
  const base: ModelConfig = {
    architecture: arch.architecture,
    hiddenSize,
    numLayers: r.num('num_hidden_layers'),
    numHeads,
    numKvHeads: r.num('num_key_value_heads', numHeads),
    headDim,
    intermediateSize: r.num('intermediate_size'),
    vocabSize: r.num('vocab_size'),
    contextLength: r.num('max_position_embeddings', arch.defaultContext),
    ropeTheta: rope.theta,
    rmsNormEps: r.num('rms_norm_eps', 1e-6),
    // Gemma's configs default to tied embeddings; the others to untied.
    tiedEmbeddings: r.bool('tie_word_embeddings', arch.architecture === 'gemma3'),
    attentionBias: false,
    recipe: llamaRecipe(headDim),
    layers: [],
  };
  if (rope.scaling) base.ropeScaling = rope.scaling;
  if (!(Number.isInteger(base.numLayers) && base.numLayers > 0 && base.numLayers <= 100_000)) {
    throw new CokvError(`${file}: num_hidden_layers = ${base.numLayers} is not a sensible positive integer`, 'format');
  }
  const config = arch.fromHf(base, r);
  validateConfig(config, file);
  return config;
}

const DTYPE_MAP: Record<SafetensorsEntry['dtype'], FileDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** Tensors that may be present but are not used (buffers some exporters save; lm_head when tied). */
function ignorable(name: string, c: ModelConfig): boolean {
  return name.endsWith('.rotary_emb.inv_freq') || (c.tiedEmbeddings && name === 'lm_head.weight');
}

function listSome(names: string[]): string {
  const shown = names.slice(0, 5).join(', ');
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}

/**
 * The arch module with its HF names moved under a vision-language checkpoint's text-tower prefix
 * (`model.language_model.` in transformers 5, `language_model.model.` in 4), or undefined when `store` holds a
 * text-only checkpoint.
 */
function textTowerArch(store: SafetensorsStore, arch: ArchModule): { arch: ArchModule; prefix: string } | undefined {
  const embed = arch.hfTensors.global.tokenEmbedding; // model.embed_tokens.weight
  for (const [model, lmHead] of [['model.language_model.', 'lm_head.weight'], ['language_model.model.', 'language_model.lm_head.weight']]) {
    if (!store.tensors.has(embed.replace(/^model\./, model))) continue;
    const move = (n: string): string => (n === 'lm_head.weight' ? lmHead : n.replace(/^model\./, model));
    const names = {
      global: Object.fromEntries(Object.entries(arch.hfTensors.global).map(([k, v]) => [k, move(v)])) as typeof arch.hfTensors.global,
      layer: Object.fromEntries(Object.entries(arch.hfTensors.layer).map(([k, v]) => [k, move(v)])),
    };
    return { arch: { ...arch, hfTensors: names }, prefix: model.split('.')[0] === 'model' ? 'model.language_model.' : 'language_model.' };
  }
  return undefined;
}

function checkTensors(store: SafetensorsStore, c: ModelConfig, arch: ArchModule, textPrefix?: string): void {
  const want = expectedTensors(c, arch, 'hf');
  const missing = [...want.keys()].filter((n) => !store.tensors.has(n));
  if (missing.length > 0) {
    const hint = missing.includes('lm_head.weight') && missing.length === 1
      ? ' (tie_word_embeddings is false but there is no lm_head.weight)' : '';
    throw new CokvError(`${store.path}: missing tensors: ${listSome(missing)}${hint}`, 'format');
  }
  // A vision-language checkpoint also holds its vision tower and projector: only the text tower must be complete.
  const unexpected = [...store.tensors.keys()].filter((n) => !want.has(n) && !ignorable(n, c) &&
    !(textPrefix && !n.startsWith(textPrefix) && n !== arch.hfTensors.global.lmHead));
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
  const tower = textTowerArch(store, archModule(config.architecture));
  const arch = tower?.arch ?? archModule(config.architecture);
  checkTensors(store, config, arch, tower?.prefix);

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
        return new HfTokenizer(tokJson, tokCfg ?? {}, { source: tokPath, extraEosIds: generation.eosIds, embeddingRows: config.vocabSize });
      });
    },
    loadWeights(): ModelWeights {
      return loadWeights(store, config, arch);
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

function loadWeights(store: SafetensorsStore, c: ModelConfig, arch: ArchModule): ModelWeights {
  // F16 matrices stay F16 (half the memory; kernels widen them as they read); BF16 widens to F32.
  return assembleWeights(c, arch, 'hf', {
    vec: (name) => store.read(name),
    mat: (name) => {
      const e = store.tensors.get(name)!;
      if (e.dtype === 'F16') return { dtype: 'f16', rows: e.shape[0], cols: e.shape[1], data: store.readRaw(name) };
      return { dtype: 'f32', rows: e.shape[0], cols: e.shape[1], data: store.read(name) };
    },
  }, store.path);
}
