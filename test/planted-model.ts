/**
 * A planted model for the head game: a tiny Llama-shaped transformer with hand-set weights (no training) in which
 * only a few (layer, KV head) pairs can carry the answer.
 *
 * Task: the prompt holds one "needle" value token somewhere far from its end, among filler tokens; the answer is
 * the question token Q followed by the needle's value. Q's own log-probability comes from the full prefill (the
 * same for every coalition), so the game is decided by the second answer token.
 *
 * Vocabulary (24): 0 BOS, 1 Q, 2..9 the eight values v0..v7, 10..23 fillers f0..f13.
 * Residual stream (32 dims): dims 0..23 one-hot token identity (the embedding), dims 24..31 an "answer" subspace,
 * one dim per value.
 *
 * Planted heads (PLANTED): KV head g of layer l with both of its query heads (GQA group 2):
 *  - Q reads the Q-token dim, K reads the value-token dims, both into head dim 3 — the rotary pair of the lowest
 *    frequency, which with ropeTheta 1e8 turns by ~1e-6 rad per position, so the match ignores position;
 *  - V copies the value identity (value d → head dim d), O writes it into answer dim 24 + d.
 *  So from the Q row the head attends (almost only) to the needle and writes the needle's value into the answer
 *  subspace; the LM head reads the answer subspace into the value logits. A masked planted head (window only)
 *  sees no value token and adds nothing. Every planted head adds the same signal independently, so with m of
 *  them present the value logit grows with m (saturating through the final RMSNorm).
 * Other heads: small random weights (they touch the residual stream, so masking them changes the answer's
 * log-probability a little, but not much). FFNs are zero.
 * The LM head also maps filler dims to the Q logit, so a greedy continuation of a prompt ending in filler is
 * "Q <value>".
 */
import { TsBackend } from '../src/backend/ts.js';
import type { Backend } from '../src/backend/types.js';
import { CokvModel } from '../src/engine.js';
import type { GameSample } from '../src/game/model-game.js';
import { Rng } from '../src/generate/rng.js';
import { completeConfig, type ModelConfig } from '../src/model/config.js';
import type { ModelSource } from '../src/model/source.js';
import type { Tokenizer } from '../src/model/tokenizer/types.js';
import type { F32Weight, ModelWeights } from '../src/model/weights.js';

export const BOS = 0;
export const Q = 1;
export const VALUE0 = 2;
export const VALUES = 8;
export const FILLER0 = 10;
export const FILLERS = 14;
const ANSWER_DIM0 = 24;

/** (layer, kvHead) pairs that carry the answer. */
export const PLANTED: [number, number][] = [[0, 1], [1, 3], [2, 0]];

export function plantedConfig(): ModelConfig {
  return completeConfig({
    architecture: 'llama',
    hiddenSize: 32,
    numLayers: 3,
    numHeads: 8,
    numKvHeads: 4,
    headDim: 8,
    intermediateSize: 8,
    vocabSize: 24,
    contextLength: 128,
    ropeTheta: 1e8,
    rmsNormEps: 1e-5,
    tiedEmbeddings: false,
    attentionBias: false,
  });
}

/** Player ids (layer · kvHeads + kvHead) of the planted heads. */
export function plantedPlayers(c: ModelConfig = plantedConfig()): number[] {
  return PLANTED.map(([l, g]) => l * c.numKvHeads + g);
}

export interface PlantedOptions {
  /** Scale of the non-planted heads' random weights (default 0.01 for V/O, 30× that for Q/K). */
  noise?: number;
  seed?: number;
}

export function plantedWeights(o: PlantedOptions = {}): ModelWeights {
  const c = plantedConfig();
  const H = c.hiddenSize, hd = c.headDim, G = c.numKvHeads, nh = c.numHeads, group = nh / G;
  const rng = new Rng(o.seed ?? 11);
  const noise = o.noise ?? 0.01;
  const mat = (rows: number, cols: number): F32Weight => ({ dtype: 'f32', rows, cols, data: new Float32Array(rows * cols) });
  const set = (m: F32Weight, r: number, k: number, v: number) => { m.data[r * m.cols + k] = v; };
  const rand = (m: F32Weight, rows: number[], scale: number) => {
    for (const r of rows) for (let k = 0; k < m.cols; k++) m.data[r * m.cols + k] = (rng.next() * 2 - 1) * scale;
  };
  const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);

  const emb = mat(c.vocabSize, H);
  for (let t = 0; t < c.vocabSize; t++) set(emb, t, t, 1);

  const qk = 1.5, gainO = 0.3 / (2 * Math.sqrt(H)), lm = 1;
  const layers = Array.from({ length: c.numLayers }, (_, l) => {
    const wq = mat(nh * hd, H), wk = mat(G * hd, H), wv = mat(G * hd, H), wo = mat(H, nh * hd);
    for (let g = 0; g < G; g++) {
      const heads = range(g * group, group);
      if (PLANTED.some(([pl, pg]) => pl === l && pg === g)) {
        for (const h of heads) set(wq, h * hd + 3, Q, qk);
        for (let d = 0; d < VALUES; d++) {
          set(wk, g * hd + 3, VALUE0 + d, qk);
          set(wv, g * hd + d, VALUE0 + d, 1);
          for (const h of heads) set(wo, ANSWER_DIM0 + d, h * hd + d, gainO);
        }
      } else {
        for (const h of heads) rand(wq, range(h * hd, hd), 30 * noise);
        rand(wk, range(g * hd, hd), 30 * noise);
        rand(wv, range(g * hd, hd), noise);
        // O columns of this group's query heads: write small noise everywhere.
        for (let r = 0; r < H; r++) for (const h of heads) for (let d = 0; d < hd; d++) set(wo, r, h * hd + d, (rng.next() * 2 - 1) * noise);
      }
    }
    return {
      attnNorm: new Float32Array(H).fill(1),
      wq, wk, wv, wo,
      ffnNorm: new Float32Array(H).fill(1),
      wGate: mat(c.intermediateSize, H),
      wUp: mat(c.intermediateSize, H),
      wDown: mat(H, c.intermediateSize),
    };
  });
  const lmHead = mat(c.vocabSize, H);
  for (let d = 0; d < VALUES; d++) set(lmHead, VALUE0 + d, ANSWER_DIM0 + d, lm);
  for (let f = 0; f < FILLERS; f++) set(lmHead, Q, FILLER0 + f, 0.5);
  return { tokenEmbedding: emb, layers, finalNorm: new Float32Array(H).fill(1), lmHead };
}

const NAMES = [
  'BOS', 'Q',
  ...Array.from({ length: VALUES }, (_, d) => `v${d}`),
  ...Array.from({ length: FILLERS }, (_, f) => `f${f}`),
];

/** Whitespace-separated token names ("BOS f3 v5 … Q"). */
export class PlantedTokenizer implements Tokenizer {
  readonly vocabSize = NAMES.length;
  readonly bosId = BOS;
  readonly eosIds: number[] = [];
  readonly addBosDefault = true;
  encode(text: string, opts: { addSpecial?: boolean } = {}): number[] {
    const ids = text.split(/\s+/).filter(Boolean).map((w) => {
      const id = NAMES.indexOf(w);
      if (id < 0) throw new Error(`planted tokenizer: unknown token '${w}'`);
      return id;
    });
    return (opts.addSpecial ?? this.addBosDefault) && ids[0] !== BOS ? [BOS, ...ids] : ids;
  }
  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    return ids.filter((id) => !(opts.skipSpecial ?? true) || id !== BOS).map((id) => NAMES[id]).join(' ');
  }
  tokenText(id: number): string {
    return ` ${NAMES[id]}`;
  }
}

/** A ModelSource over the in-memory planted weights. */
export function plantedSource(o: PlantedOptions = {}): ModelSource {
  const config = plantedConfig();
  const weights = plantedWeights(o);
  const tok = new PlantedTokenizer();
  return {
    format: 'gguf', path: 'planted', config, tensors: [],
    loadTokenizer: async () => tok,
    loadWeights: () => weights,
  };
}

export function plantedModel(o: PlantedOptions = {}, backend: Backend = new TsBackend()): CokvModel {
  return new CokvModel(plantedSource(o), new PlantedTokenizer(), backend);
}

/**
 * Validation samples: BOS, fillers, the needle value at least `minTail` tokens before the end, more fillers.
 * Answer = [Q, value]; `answers` holds its text.
 */
export function plantedSamples(count: number, seed = 5, minTail = 10): GameSample[] {
  const rng = new Rng(seed);
  const tok = new PlantedTokenizer();
  return Array.from({ length: count }, (_, i) => {
    const length = 24 + rng.int(13);
    const needleAt = 1 + rng.int(length - 1 - minTail);
    const value = VALUE0 + rng.int(VALUES);
    const promptIds = Array.from({ length }, (_, p) => (p === 0 ? BOS : p === needleAt ? value : FILLER0 + rng.int(FILLERS)));
    const answerIds = [Q, value];
    return { id: `planted-${i}`, promptIds, answers: [tok.decode(answerIds)], answerIds };
  });
}
