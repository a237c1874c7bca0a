/**
 * The head game on a real model: U(S) = mean over validation samples of a utility measured with the coalition's
 * masked cache (members keep the full prompt cache, the others only the window). Players are the KV heads of the
 * full-attention layers; sliding-window layers read their own window in every coalition.
 *
 * Cost: each sample is prefilled once per profiling run (the full per-head cache is kept); a coalition only
 * changes what each head may read during decode, so evaluating it costs only its decode rows, and many
 * coalitions share each decode step as one batch (weights read once per step).
 *
 * Utilities:
 *  - `loglik`: mean log-probability of the reference answer tokens, teacher-forced (one batched pass).
 *  - `kl`: −mean KL(p_full ‖ p_S) of next-token distributions along the full-cache greedy continuation
 *    (negated so that higher is better, like the other utilities).
 *  - `metric`: greedy generation under the masked cache, scored by the task metric (the paper's choice).
 * The first answer token always comes from the full prefill (spec §1), so it is the same for every coalition.
 *
 * Not on `Sequence`, on purpose: a sample's F32 prompt cache is read at once by many coalitions, each masking
 * other heads in its own attention (`CoalitionBatch`, run through `Transformer.run`), while a sequence owns one
 * cache behind one attention. The prompt cache is prefilled with `CokvModel.prefill` and only read afterwards.
 */
import { argmax } from '../generate/sampling.js';
import type { CokvModel } from '../engine.js';
import type { RaggedKVCache } from '../cache/ragged.js';
import { CoalitionBatch } from './coalition-batch.js';
import { Players, type Coalition } from './players.js';

export type UtilityKind = 'metric' | 'loglik' | 'kl';

export interface GameSample {
  id: string;
  promptIds: number[];
  answers: string[];
  /** Token ids of the reference answer (teacher forcing for `loglik`). */
  answerIds: number[];
  /** Classification datasets: the label set. */
  allClasses?: string[] | null;
  /** Token indices where the prompt's segments start (from `buildPrompt`). */
  boundaries?: number[];
}

export interface ModelGameOptions {
  utility: UtilityKind;
  window: number;
  /** Answer tokens scored (loglik, kl) or generated (metric). */
  maxNew: number;
  /** Coalitions per batched decode. */
  batchSize: number;
  /** For `metric`: score a prediction against the references, in [0, 1]. */
  score?: (prediction: string, answers: string[], allClasses?: string[] | null) => number;
  /** For `metric`: ids that end a generation. */
  stopIds?: Set<number>;
  /** For `metric`: also stop at the first token whose text contains a newline. */
  stopAtNewline?: boolean;
  /**
   * For `metric`: false when no continuation of this prediction prefix can score above 0 (exact match: see
   * `exactMatchPrefixRule`), so a coalition is decided without decoding further. Without it every coalition decodes
   * to its end.
   */
  prefixRule?: (prefix: string, answers: string[]) => boolean;
  /** For `metric`: decode every coalition greedily step by step (the reference loop) instead of drafting. */
  metricDecode?: boolean;
}

interface Prepared {
  cache: RaggedKVCache;
  firstLogits: Float32Array;
  /** Tokens fed after the prompt (teacher forcing) for loglik/kl. */
  teacher: number[];
  /** loglik: log p of teacher[0] under the full prefill (the same for every coalition). */
  firstLogp: number;
  /** kl: full-cache log-probabilities at positions 1..m−1, [m−1][vocab]. */
  fullLogp?: Float64Array[];
}

export interface GameCost {
  prefills: number;
  prefillTokens: number;
  /** Rows run through the layer stack for coalition evaluations. */
  decodeRows: number;
  coalitionEvaluations: number;
  seconds: number;
  /** Part of `seconds` spent in the once-per-sample prefills. */
  prefillSeconds?: number;
}

function logSoftmax(logits: Float32Array, off: number, V: number, out?: Float64Array): Float64Array {
  const res = out ?? new Float64Array(V);
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[off + i] > max) max = logits[off + i];
  let z = 0;
  for (let i = 0; i < V; i++) z += Math.exp(logits[off + i] - max);
  const lz = max + Math.log(z);
  for (let i = 0; i < V; i++) res[i] = logits[off + i] - lz;
  return res;
}

export class ModelGame {
  readonly n: number;
  /** Which (layer, KV head) each player id stands for. */
  readonly players: Players;
  readonly cost: GameCost = { prefills: 0, prefillTokens: 0, decodeRows: 0, coalitionEvaluations: 0, seconds: 0, prefillSeconds: 0 };
  private prepared = new Map<number, Prepared>();
  private readonly newlineIds = new Set<number>();

  constructor(readonly model: CokvModel, readonly samples: GameSample[], readonly opts: ModelGameOptions) {
    const c = model.config;
    this.players = Players.require(c);
    this.n = this.players.n;
    if (opts.utility === 'metric') {
      if (!opts.score) throw new Error('metric utility needs a score function');
      if (opts.stopAtNewline) for (const id of model.newlineIds()) this.newlineIds.add(id);
    }
  }

  /** Prefill sample i once (full cache) and keep what every coalition evaluation needs. */
  private prepare(i: number): Prepared {
    let p = this.prepared.get(i);
    if (p) return p;
    const t0 = performance.now();
    const s = this.samples[i];
    const m = this.model;
    const cache = m.newCache(s.promptIds.length);
    const firstLogits = m.prefill(s.promptIds, cache);
    this.cost.prefills++;
    this.cost.prefillTokens += s.promptIds.length;
    const V = m.config.vocabSize;
    let teacher: number[] = [];
    let firstLogp = 0;
    let fullLogp: Float64Array[] | undefined;
    if (this.opts.utility === 'loglik') {
      teacher = s.answerIds.slice(0, this.opts.maxNew);
      if (teacher.length === 0) throw new Error(`sample ${s.id}: the reference answer encodes to no tokens`);
      firstLogp = logSoftmax(firstLogits, 0, V)[teacher[0]];
    } else if (this.opts.utility === 'kl') {
      // The full-cache greedy continuation, and its distributions: one all-members coalition over the shared cache.
      const all = new Uint8Array(this.n).fill(1);
      teacher = [argmax(firstLogits)];
      const batch = new CoalitionBatch(m.config, cache, [all], this.opts.window, this.opts.maxNew, m.transformer.backend);
      fullLogp = [];
      for (let t = 1; t < this.opts.maxNew; t++) {
        batch.setTokensPerCoalition(1);
        const logits = m.transformer.run([teacher[t - 1]], batch.positionOf, batch, 'last');
        batch.advance();
        fullLogp.push(logSoftmax(logits, 0, V));
        teacher.push(argmax(logits));
      }
    }
    p = { cache, firstLogits, teacher, firstLogp, fullLogp };
    this.prepared.set(i, p);
    const dt = (performance.now() - t0) / 1000;
    this.cost.seconds += dt;
    this.cost.prefillSeconds = (this.cost.prefillSeconds ?? 0) + dt;
    return p;
  }

  /** U for each coalition: the mean over samples of the per-sample utility. */
  evaluate(coalitions: Coalition[]): number[] {
    const totals = new Float64Array(coalitions.length);
    for (let i = 0; i < this.samples.length; i++) {
      const p = this.prepare(i);
      const t0 = performance.now();
      for (let b0 = 0; b0 < coalitions.length; b0 += this.opts.batchSize) {
        const chunk = coalitions.slice(b0, b0 + this.opts.batchSize);
        const u = this.evaluateSample(i, p, chunk);
        for (let b = 0; b < chunk.length; b++) totals[b0 + b] += u[b];
      }
      this.cost.seconds += (performance.now() - t0) / 1000;
    }
    this.cost.coalitionEvaluations += coalitions.length;
    return Array.from(totals, (t) => t / this.samples.length);
  }

  private evaluateSample(i: number, p: Prepared, coalitions: Coalition[]): number[] {
    switch (this.opts.utility) {
      case 'loglik': return this.loglik(p, coalitions);
      case 'kl': return this.kl(p, coalitions);
      case 'metric': return this.metric(i, p, coalitions);
    }
  }

  /** Teacher-forced answer tokens 1..m−1 for all coalitions in one forward of B·(m−1) rows. */
  private forced(p: Prepared, coalitions: Coalition[]): { logits: Float32Array; T: number } {
    const m = this.model;
    const T = p.teacher.length - 1;
    const batch = new CoalitionBatch(m.config, p.cache, coalitions, this.opts.window, Math.max(1, T), m.transformer.backend);
    batch.setTokensPerCoalition(T);
    const tokens = new Int32Array(coalitions.length * T);
    for (let b = 0; b < coalitions.length; b++) for (let t = 0; t < T; t++) tokens[b * T + t] = p.teacher[t];
    const logits = m.transformer.run(tokens, batch.positionOf, batch, 'all');
    this.cost.decodeRows += tokens.length;
    return { logits, T };
  }

  private loglik(p: Prepared, coalitions: Coalition[]): number[] {
    const M = p.teacher.length;
    if (M === 1) return coalitions.map(() => p.firstLogp);
    const V = this.model.config.vocabSize;
    const { logits, T } = this.forced(p, coalitions);
    const lp = new Float64Array(V);
    return coalitions.map((_, b) => {
      let s = p.firstLogp;
      for (let t = 0; t < T; t++) s += logSoftmax(logits, (b * T + t) * V, V, lp)[p.teacher[t + 1]];
      return s / M;
    });
  }

  private kl(p: Prepared, coalitions: Coalition[]): number[] {
    const full = p.fullLogp!;
    if (full.length === 0) return coalitions.map(() => 0);
    const V = this.model.config.vocabSize;
    const { logits, T } = this.forced(p, coalitions);
    const lp = new Float64Array(V);
    return coalitions.map((_, b) => {
      let s = 0;
      for (let t = 0; t < T; t++) {
        logSoftmax(logits, (b * T + t) * V, V, lp);
        const f = full[t];
        let kl = 0;
        for (let v = 0; v < V; v++) kl += Math.exp(f[v]) * (f[v] - lp[v]);
        s += kl;
      }
      return -s / T;
    });
  }

  /**
   * `metric`: the greedy continuation under each coalition's cache, scored by the task metric — computed as
   * speculative decoding with the reference answer as the draft, which gives greedy decoding's output exactly:
   * one teacher-forced pass over the draft (B·m rows, like `loglik`) tells each coalition how many draft tokens
   * its greedy decoding reproduces and which token it produces next. Where the metric can say from that prefix that
   * no continuation scores above 0 (`opts.prefixRule`, exact match), the coalition is decided with no further step;
   * the others (rare for exact match: a full answer not followed by a stop, or a prefix that may still match) decode
   * greedily from where the draft left them, a step per token as before. `metricDecode` is the plain batched greedy
   * loop, kept as the reference (tests check both give the same utility on every coalition of small games).
   */
  private metric(i: number, p: Prepared, coalitions: Coalition[]): number[] {
    if (this.opts.metricDecode) return this.metricDecode(i, p, coalitions);
    const m = this.model;
    const V = m.config.vocabSize;
    const B = coalitions.length;
    const maxNew = this.opts.maxNew;
    const isStop = this.stopTest();
    const first = argmax(p.firstLogits);
    const { answers, allClasses } = this.samples[i];
    const score = (ids: number[]) => this.opts.score!(m.tokenizer.decode(ids), answers, allClasses);
    if (isStop(first)) return coalitions.map(() => score([]));
    // The draft: the reference answer up to its first stop token (greedy decoding never emits one), when greedy
    // decoding starts with it (the first token comes from the full prefill, the same for every coalition).
    const answer = this.samples[i].answerIds;
    let draft = [first];
    if (answer[0] === first) {
      const stop = answer.findIndex((id) => isStop(id));
      draft = answer.slice(0, Math.min(maxNew, stop < 0 ? answer.length : stop));
    }
    const outs: number[][] = coalitions.map(() => []);
    const open: number[] = []; // coalitions still undecided after the draft
    const rule = this.opts.prefixRule;
    const T = draft.length;
    const batch = new CoalitionBatch(m.config, p.cache, coalitions, this.opts.window, Math.max(1, maxNew), m.transformer.backend);
    batch.setTokensPerCoalition(T);
    const tokens = new Int32Array(B * T);
    for (let b = 0; b < B; b++) tokens.set(draft, b * T);
    const logits = m.transformer.run(tokens, batch.positionOf, batch, 'all');
    this.cost.decodeRows += tokens.length;
    const results = new Array<number>(B);
    for (let b = 0; b < B; b++) {
      // Greedy decoding under coalition b reproduces draft[0..k] and then produces `next`.
      let k = 0;
      let next = argmax(logits.subarray((b * T) * V, (b * T + 1) * V));
      while (k + 1 < T && next === draft[k + 1]) {
        k++;
        next = argmax(logits.subarray((b * T + k) * V, (b * T + k + 1) * V));
      }
      const out = draft.slice(0, k + 1);
      outs[b] = out;
      if (out.length >= maxNew || isStop(next)) { results[b] = score(out); continue; }
      out.push(next);
      if (out.length >= maxNew) { results[b] = score(out); continue; }
      if (rule && !rule(m.tokenizer.decode(out), answers)) { results[b] = 0; continue; }
      open.push(b);
    }
    // The undecided: plain greedy decoding from their prefixes, batched by prefix length (one re-fed pass over the
    // prefix, then a step per token), with the prefix rule checked after every token.
    const byLength = new Map<number, number[]>();
    for (const b of open) byLength.set(outs[b].length, [...(byLength.get(outs[b].length) ?? []), b]);
    for (const [n, members] of byLength) {
      const sub = new CoalitionBatch(m.config, p.cache, members.map((b) => coalitions[b]), this.opts.window, Math.max(1, maxNew), m.transformer.backend);
      let live = members.slice();
      let fed = n;
      let feed = new Int32Array(live.length * n);
      live.forEach((b, j) => feed.set(outs[b], j * n));
      let rows = n;
      // `sub` rows are laid out by the members' order; finished members keep feeding a dummy token (their rows are
      // ignored) so the batch stays in lockstep.
      const finished = new Uint8Array(members.length);
      for (;;) {
        sub.setTokensPerCoalition(rows);
        const lg = m.transformer.run(feed, sub.positionOf, sub, 'all');
        sub.advance();
        this.cost.decodeRows += feed.length;
        const nextFeed = new Int32Array(members.length);
        members.forEach((b, j) => {
          if (finished[j]) return;
          const off = (j * rows + rows - 1) * V;
          const next = argmax(lg.subarray(off, off + V));
          nextFeed[j] = next;
          const out = outs[b];
          if (isStop(next)) { finished[j] = 1; results[b] = score(out); return; }
          out.push(next);
          if (out.length >= maxNew) { finished[j] = 1; results[b] = score(out); return; }
          if (rule && !rule(m.tokenizer.decode(out), answers)) { finished[j] = 1; results[b] = 0; }
        });
        fed += rows;
        live = members.filter((_, j) => !finished[j]);
        if (live.length === 0 || fed >= maxNew) break;
        feed = nextFeed;
        rows = 1;
      }
      members.forEach((b, j) => { if (!finished[j]) results[b] = score(outs[b]); });
    }
    return results;
  }

  private stopTest(): (id: number) => boolean {
    const stopIds = this.opts.stopIds ?? new Set(this.model.eosIds);
    return (id: number) => stopIds.has(id) || this.newlineIds.has(id);
  }

  /** The metric utility by plain batched greedy decoding of every coalition (the reference for `metric`). */
  private metricDecode(i: number, p: Prepared, coalitions: Coalition[]): number[] {
    const m = this.model;
    const V = m.config.vocabSize;
    const B = coalitions.length;
    const isStop = this.stopTest();
    const first = argmax(p.firstLogits);
    const outs: number[][] = coalitions.map(() => []);
    const done = new Uint8Array(B);
    const current = new Int32Array(B).fill(first);
    for (let b = 0; b < B; b++) {
      if (isStop(first)) done[b] = 1;
      else outs[b].push(first);
    }
    const maxNew = this.opts.maxNew;
    const batch = new CoalitionBatch(m.config, p.cache, coalitions, this.opts.window, Math.max(1, maxNew), m.transformer.backend);
    for (let step = 1; step < maxNew && done.some((d) => !d); step++) {
      batch.setTokensPerCoalition(1);
      const logits = m.transformer.run(current, batch.positionOf, batch, 'all');
      batch.advance();
      this.cost.decodeRows += B;
      for (let b = 0; b < B; b++) {
        if (done[b]) continue;
        const next = argmax(logits.subarray(b * V, (b + 1) * V));
        current[b] = next;
        if (isStop(next)) done[b] = 1;
        else outs[b].push(next);
      }
    }
    const { answers, allClasses } = this.samples[i];
    return outs.map((ids) => this.opts.score!(m.tokenizer.decode(ids), answers, allClasses));
  }
}
