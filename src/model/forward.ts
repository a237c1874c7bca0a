/**
 * The decoder forward pass, top to bottom like llama2.c's run.c, but over T tokens at once (prefill as
 * matrix-matrix work) and against the ragged per-head cache.
 *
 * Per layer (the recipe comes from the architecture module, src/model/arch/): RMSNorm → Q/K/V (+bias) → per-head
 * q/k RMSNorm (Qwen3, Gemma 3) → RoPE of this layer (none for NoPE layers, partial for Phi) → append K/V to each KV
 * head → causal attention of every query head over its KV head's cache (the last `window` positions on sliding
 * layers) → hook (presses compress here, after the layer's prefill attention) → O → (post-norm) → residual →
 * RMSNorm → SwiGLU / GeGLU FFN → (post-norm) → residual. Then the final norm and the LM head (soft-capped where
 * the recipe says) only for the rows whose logits are asked. Every step on the activations is a backend operation
 * (src/backend/types.ts); the host reads them only through `backend.read`: the logits, a hook's queries, and the
 * new K/V rows that go into the (host) KV cache.
 */
import {
  emptyAttendArgs, emptyAttendF16Args, emptyRopeArgs, type ActivationBuffer, type AttendArgs, type AttendF16Args, type Backend,
} from '../backend/types.js';
import type { RaggedKVCache } from '../cache/ragged.js';
import type { ModelConfig } from './config.js';
import type { ModelWeights } from './weights.js';
import { LayerRope } from './rope.js';

// The reference kernels, re-exported for code that imported them from here (they live in src/backend/ts.ts).
export { attendSegments, gegluTanh, rmsNorm, swiglu } from '../backend/ts.js';

/** What a layer hook sees right after the layer's attention over the new tokens. */
export interface LayerPrefillContext {
  layer: number;
  /** Post-RoPE queries of the new tokens, [numTokens][numHeads*headDim]. */
  queries: Float32Array;
  numTokens: number;
  /** Sequence position of the first new token. */
  startPosition: number;
  cache: RaggedKVCache;
  /**
   * Sequence positions where a prompt segment begins (BOS, chat-template turns, system prompt, question), for
   * presses that protect boundary tokens; set by the prefill's caller, not by the forward pass.
   */
  boundaries?: readonly number[];
  /**
   * Scores already computed for this layer, by scorer key (see `Scorer` in src/press/press.ts): set by a caller
   * that compresses several copies of one cache with the same window queries (the eval runner's presses ×
   * budgets), so each scorer runs once per layer instead of once per press. Only valid while every press it is
   * passed to sees the same cache contents and queries.
   */
  scoreMemo?: Map<string, Float32Array[]>;
}

/**
 * Where a layer's new K/V go and what each query row attends to. The plain path appends to a RaggedKVCache; the
 * profiler's coalition batch (src/game) shares one prompt cache among many masked decodes.
 */
export interface KvAttention {
  /**
   * Store this layer's new K/V rows ([rows][kvHeads*headDim]) and write every row's attention output to `out`.
   * The KV cache is a host array: an implementation reads `k` and `v` through the backend's `read`.
   */
  attend(layer: number, q: ActivationBuffer, k: ActivationBuffer, v: ActivationBuffer, out: ActivationBuffer, rows: number): void;
}

/** The plain path: append to the ragged cache, causal attention of each new token over its KV head's entries. */
class CacheAttention implements KvAttention {
  private kScratch: Float32Array = new Float32Array(0);
  private vScratch: Float32Array = new Float32Array(0);
  /** One args object per K/V element type, refilled before each backend call (decode allocates nothing). */
  private readonly args = emptyAttendArgs();
  private readonly argsF16 = emptyAttendF16Args();
  /** Set before each forward (the object is reused so decode allocates nothing). */
  cache!: RaggedKVCache;
  start = 0;
  readonly positionOf = (row: number): number => this.start + row;
  private counts = new Int32Array(0);
  constructor(private readonly c: ModelConfig, private readonly backend: Backend) {
    this.args.hd = this.argsF16.hd = c.headDim;
    this.args.scale = this.argsF16.scale = c.recipe.attentionScale;
  }

  attend(layer: number, q: ActivationBuffer, k: ActivationBuffer, v: ActivationBuffer, out: ActivationBuffer, T: number): void {
    const kh = this.backend.read(k), vh = this.backend.read(v);
    for (let g = 0; g < this.c.numKvHeads; g++) this.attendHead(layer, g, q, kh, vh, out, T);
  }

  /** `attend` one KV head at a time, yielding after each (a long prefill's attention is most of a layer's time). */
  *attendSteps(layer: number, q: ActivationBuffer, k: ActivationBuffer, v: ActivationBuffer, out: ActivationBuffer, T: number): Generator<void> {
    const kh = this.backend.read(k), vh = this.backend.read(v);
    for (let g = 0; g < this.c.numKvHeads; g++) {
      this.attendHead(layer, g, q, kh, vh, out, T);
      yield;
    }
  }

  /** Append KV head `g`'s new rows (`k`, `v`: host arrays, already read) and write the attention output of its query heads. */
  private attendHead(layer: number, g: number, q: ActivationBuffer, k: Float32Array, v: Float32Array, out: ActivationBuffer, T: number): void {
    const { headDim: hd, numHeads: nh, numKvHeads: nkv } = this.c;
    const qDim = nh * hd, kvDim = nkv * hd, group = nh / nkv;
    const spec = this.c.layers[layer];
    const window = spec.kind === 'sliding' ? spec.window! : 0;
    const head = this.cache.head(layer, g);
    for (let t = 0; t < T; t++) head.append(k, t * kvDim + g * hd, v, t * kvDim + g * hd, this.start + t);
    const base = head.length - T;
    // F16 heads go to attendF16 as they are stored (half bits, views taken once per head and step); F32 heads are
    // read in place and Q8 heads dequantized once per head and step into reused scratch, for attend.
    let a: AttendArgs | AttendF16Args;
    if (head.dtype === 'f16') {
      const half = head.entries();
      a = this.argsF16;
      a.k1 = half.keys as Uint16Array;
      a.v1 = half.values as Uint16Array;
    } else {
      a = this.args;
      a.k1 = head.keysF32(this.kScratch);
      a.v1 = head.valuesF32(this.vScratch);
      if (head.dtype !== 'f32') { this.kScratch = a.k1; this.vScratch = a.v1; }
    }
    a.out = out;
    a.q = q;
    a.from2 = a.to2 = 0; // no second segment on the plain path (k2/v2 stay the empty arrays)
    if (window > 0) {
      // Sliding layer: entries hold consecutive positions (presses never touch these layers), so the query at
      // position p sees entries [p - window + 1 - first, its own index].
      const first = head.positionAt(0);
      a.oStride = a.qStride = hd;
      a.nq = 1;
      a.count1 = null;
      for (let t = 0; t < T; t++) {
        const p = this.start + t;
        a.from1 = Math.max(0, p - window + 1 - first);
        a.to1 = base + t + 1;
        for (let j = 0; j < group; j++) {
          a.oOff = a.qOff = t * qDim + (g * group + j) * hd;
          this.call(a);
        }
      }
      return;
    }
    a.from1 = 0;
    a.to1 = head.length;
    if (T === 1) {
      // Decode: the group's query heads are adjacent in the row and see every entry: one call shares the K/V pass.
      a.oOff = a.qOff = g * group * hd;
      a.oStride = a.qStride = hd;
      a.nq = group;
      a.count1 = null;
      this.call(a);
      return;
    }
    // Prefill: one call per query head, T causal queries over this KV head's entries.
    if (this.counts.length < T) this.counts = new Int32Array(Math.max(T, 16));
    for (let t = 0; t < T; t++) this.counts[t] = base + t + 1;
    a.oStride = a.qStride = qDim;
    a.nq = T;
    a.count1 = this.counts;
    for (let j = 0; j < group; j++) {
      a.oOff = a.qOff = (g * group + j) * hd;
      this.call(a);
    }
  }

  private call(a: AttendArgs | AttendF16Args): void {
    if (a === this.argsF16) this.backend.attendF16(this.argsF16);
    else this.backend.attend(this.args);
  }
}

export interface ForwardOptions {
  /** Which rows need logits: the last new token (default), every new token, or none. */
  logits?: 'last' | 'all' | 'none';
  /** Called after each layer's attention; the cache already holds this layer's new K/V. */
  onLayer?: (ctx: LayerPrefillContext) => void;
  /**
   * Rows per pass through the layer stack (0 = all at once). A long prompt goes through in chunks so the
   * activation buffers stay O(chunk) instead of O(prompt) (≈ 200 MiB at 8192 tokens for SmolLM2-135M, GBs for 8B
   * models at 32k). The first chunk takes the remainder, so the last one is whole; `onLayer` sees only the last
   * chunk, whose queries are the prompt's last rows with every earlier key already cached (what a press needs).
   * Default: {@link DEFAULT_PREFILL_CHUNK} without a hook; all at once with one (a hook that reads every row's
   * queries needs the one pass; presses pass a chunk size: see `pressChunkSize`). `logits: 'all'` is never chunked.
   */
  chunkSize?: number;
  /**
   * Call `onLayer` after every chunk's attention, not only the last one's (the bounded `prefillEvict` mode: a press
   * compresses each layer after each chunk, with that chunk's queries). Default false.
   */
  hookEveryChunk?: boolean;
}

/**
 * Rows per pass for a prefill whose hook is a press that compresses during the last chunk (the exact mode):
 * `requested` (default {@link DEFAULT_PREFILL_CHUNK}; 0 = one pass), raised to the press's observation window so
 * that the last chunk holds every window query. Until that chunk each layer keeps its full K/V, as a full-cache
 * prefill does, so the peak memory of a press prefill is the full-cache run's (activations O(chunk)).
 */
export function pressChunkSize(window: number | undefined, requested?: number): number {
  const chunk = requested ?? DEFAULT_PREFILL_CHUNK;
  return chunk === 0 ? 0 : Math.max(chunk, window ?? 0);
}

/** Rows per prefill pass when the caller does not say (llama.cpp's default batch is 512 too). */
export const DEFAULT_PREFILL_CHUNK = 512;

/**
 * Scratch activations sized for T tokens, allocated by the backend (they would live on its device); reused across
 * calls so decode allocates nothing. `positions` is host metadata: each row's sequence position, for RoPE.
 */
class Workspace {
  readonly x: ActivationBuffer;
  readonly xn: ActivationBuffer;
  readonly q: ActivationBuffer;
  readonly k: ActivationBuffer;
  readonly v: ActivationBuffer;
  readonly att: ActivationBuffer;
  readonly proj: ActivationBuffer;
  readonly gate: ActivationBuffer;
  readonly up: ActivationBuffer;
  readonly positions: Int32Array;
  constructor(readonly tokens: number, c: ModelConfig, be: Backend) {
    const H = c.hiddenSize, qDim = c.numHeads * c.headDim, kvDim = c.numKvHeads * c.headDim, I = c.intermediateSize;
    this.x = be.alloc(tokens * H);
    this.xn = be.alloc(tokens * H);
    this.q = be.alloc(tokens * qDim);
    this.k = be.alloc(tokens * kvDim);
    this.v = be.alloc(tokens * kvDim);
    this.att = be.alloc(tokens * qDim);
    this.proj = be.alloc(tokens * H);
    this.gate = be.alloc(tokens * I);
    this.up = be.alloc(tokens * I);
    this.positions = new Int32Array(tokens);
  }
}

export class Transformer {
  /** Per layer, its rotary embedding (undefined for NoPE layers); layers with equal specs share one. */
  readonly ropes: (LayerRope | undefined)[];
  private ws: Workspace | undefined;
  /** The logits activation (grown to the largest row count asked) and the view of it the last pass filled. */
  private logitsBuf: ActivationBuffer;
  private logitsView: ActivationBuffer;
  private readonly noLogits = new Float32Array(0);
  private readonly cacheAttention: CacheAttention;
  /** RoPE's arguments, refilled before each call (decode allocates nothing). */
  private readonly ropeArgs = emptyRopeArgs();

  constructor(readonly config: ModelConfig, readonly weights: ModelWeights, readonly backend: Backend) {
    const shared = new Map<string, LayerRope>();
    this.ropes = config.layers.map((l) => {
      if (!l.rope) return undefined;
      const key = JSON.stringify(l.rope);
      if (!shared.has(key)) shared.set(key, new LayerRope(l.rope));
      return shared.get(key);
    });
    this.cacheAttention = new CacheAttention(config, backend);
    this.logitsBuf = this.logitsView = backend.alloc(0);
    this.ropeArgs.headDim = config.headDim;
  }

  /** Rows the activation buffers currently hold (they grow to the largest pass and are reused). */
  get workspaceRows(): number {
    return this.ws?.tokens ?? 0;
  }

  private workspace(rows: number): Workspace {
    if (!this.ws || this.ws.tokens < rows) this.ws = new Workspace(rows, this.config, this.backend);
    return this.ws;
  }

  /**
   * Run `tokens` through the model, appending their K/V to `cache` and advancing its position.
   * Returns the logits of the requested rows, [rows][vocab] (a view into a reused buffer: copy to keep).
   */
  forward(tokens: ArrayLike<number>, cache: RaggedKVCache, opts: ForwardOptions = {}): Float32Array {
    let logits: Float32Array = this.noLogits;
    for (const p of this.passes(tokens, opts)) logits = this.forwardRows(p.rows, cache, p.opts);
    return logits;
  }

  /**
   * `forward` that awaits the backend's `flush()` and then `pause()` after every layer of every pass, so a long
   * prefill leaves the event loop free (and `pause` may throw to cancel). The arithmetic is `forward`'s, so results are bit-identical. Nothing else
   * may use this Transformer while it is paused (its workspace holds the pass's hidden states): callers serialize.
   */
  async forwardAsync(tokens: ArrayLike<number>, cache: RaggedKVCache, opts: ForwardOptions & { pause: () => Promise<void> }): Promise<Float32Array> {
    let logits: Float32Array = this.noLogits;
    for (const p of this.passes(tokens, opts)) {
      const steps = this.rowSteps(p.rows, cache, p.opts);
      for (let r = steps.next(); ; r = steps.next()) {
        if (r.done) {
          logits = r.value;
          break;
        }
        await this.backend.flush();
        await opts.pause();
      }
    }
    return logits;
  }

  /**
   * The passes a forward makes: all rows at once, or chunks of `chunkSize` with the remainder first, only the last
   * asking for logits and seeing the layer hook (see {@link ForwardOptions.chunkSize}).
   */
  private passes(tokens: ArrayLike<number>, opts: ForwardOptions): { rows: ArrayLike<number>; opts: ForwardOptions }[] {
    const T = tokens.length;
    const chunk = opts.chunkSize ?? (opts.onLayer ? 0 : DEFAULT_PREFILL_CHUNK);
    if (!(Number.isInteger(chunk) && chunk >= 0)) throw new RangeError(`chunkSize ${chunk} must be a non-negative integer`);
    const mode = opts.logits ?? 'last';
    if (chunk === 0 || T <= chunk || mode === 'all') return [{ rows: tokens, opts }];
    const n = Math.ceil(T / chunk);
    const out: { rows: ArrayLike<number>; opts: ForwardOptions }[] = [];
    let off = 0;
    for (let i = 0; i < n; i++) {
      const len = i === 0 ? T - (n - 1) * chunk : chunk;
      out.push({
        rows: Array.from({ length: len }, (_, j) => tokens[off + j]),
        opts: i < n - 1 ? { logits: 'none', onLayer: opts.hookEveryChunk ? opts.onLayer : undefined } : { logits: mode, onLayer: opts.onLayer },
      });
      off += len;
    }
    return out;
  }

  /** One pass of `tokens` through the layer stack (see `forward`). */
  private forwardRows(tokens: ArrayLike<number>, cache: RaggedKVCache, opts: ForwardOptions): Float32Array {
    const steps = this.rowSteps(tokens, cache, opts);
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /** `forwardRows` in steps (see `layerSteps`): yields between them, returns the logits. */
  private *rowSteps(tokens: ArrayLike<number>, cache: RaggedKVCache, opts: ForwardOptions): Generator<void, Float32Array> {
    const start = cache.position;
    const T = tokens.length;
    const attention = this.cacheAttention;
    const onLayer = opts.onLayer;
    const steps = this.layerSteps(tokens, attention.positionOf, attention, opts.logits ?? 'last',
      onLayer ? (layer, q) => onLayer({ layer, queries: q, numTokens: T, startPosition: start, cache }) : undefined);
    for (;;) {
      // Set before every layer: another pass may have run on this Transformer while this one was paused.
      attention.cache = cache;
      attention.start = start;
      const r = steps.next();
      if (r.done) {
        cache.advance(T, this.config.layers);
        return r.value;
      }
      yield r.value;
    }
  }

  /**
   * The layer stack over `tokens.length` rows, each at sequence position `positionOf(row)`, with attention
   * delegated to `attention`. Rows may belong to different sequences (the profiler batches coalitions this way).
   */
  run(
    tokens: ArrayLike<number>, positionOf: (row: number) => number, attention: KvAttention,
    logits: 'last' | 'all' | 'none', onLayer?: (layer: number, queries: Float32Array) => void,
  ): Float32Array {
    const steps = this.layerSteps(tokens, positionOf, attention, logits, onLayer);
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /**
   * `run` as a generator that yields within and after each layer — after each KV head's attention of a multi-row
   * pass, after the attention block, after the FFN — so the async prefill can pause there.
   */
  private *layerSteps(
    tokens: ArrayLike<number>, positionOf: (row: number) => number, attention: KvAttention,
    logits: 'last' | 'all' | 'none', onLayer?: (layer: number, queries: Float32Array) => void,
  ): Generator<void, Float32Array> {
    const c = this.config;
    const T = tokens.length;
    const H = c.hiddenSize, hd = c.headDim, nh = c.numHeads, nkv = c.numKvHeads;
    const qDim = nh * hd, kvDim = nkv * hd;
    const w = this.weights;
    const be = this.backend;
    const ws = this.workspace(T);
    let maxPos = 0;
    for (let t = 0; t < T; t++) {
      const p = positionOf(t);
      ws.positions[t] = p;
      maxPos = Math.max(maxPos, p);
    }
    const r = c.recipe;

    for (let t = 0; t < T; t++) {
      const id = tokens[t];
      if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) throw new RangeError(`token id ${id} outside vocab`);
      be.embedRow(ws.x, t * H, w.tokenEmbedding, id);
    }
    if (r.embeddingScale !== 1) be.scale(ws.x, T * H, r.embeddingScale);

    const norm = be.rmsNorm.bind(be);
    const glu = r.activation === 'gelu_tanh' ? be.gegluTanh.bind(be) : be.swiglu.bind(be);
    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      norm(ws.xn, ws.x, lw.attnNorm, T, H, c.rmsNormEps);
      be.matmul(ws.q, ws.xn, T, lw.wq);
      be.matmul(ws.k, ws.xn, T, lw.wk);
      be.matmul(ws.v, ws.xn, T, lw.wv);
      if (lw.bq) be.addBias(ws.q, lw.bq, T, qDim);
      if (lw.bk) be.addBias(ws.k, lw.bk, T, kvDim);
      if (lw.bv) be.addBias(ws.v, lw.bv, T, kvDim);
      // Per-head q/k norm (in place: each head vector is one RMSNorm row of headDim).
      if (lw.qNorm) norm(ws.q, ws.q, lw.qNorm, T * nh, hd, c.rmsNormEps);
      if (lw.kNorm) norm(ws.k, ws.k, lw.kNorm, T * nkv, hd, c.rmsNormEps);
      const rope = this.ropes[l];
      if (rope) {
        const table = rope.table(maxPos);
        const ra = this.ropeArgs;
        ra.rows = T;
        ra.positions = ws.positions;
        ra.cos = table.cos;
        ra.sin = table.sin;
        ra.rotaryDim = rope.spec.rotaryDim;
        ra.x = ws.q;
        ra.heads = nh;
        be.rope(ra);
        ra.x = ws.k;
        ra.heads = nkv;
        be.rope(ra);
      }
      // Long passes on the plain cache path pause between KV heads too (see forwardAsync).
      if (attention instanceof CacheAttention && T > 1) yield* attention.attendSteps(l, ws.q, ws.k, ws.v, ws.att, T);
      else attention.attend(l, ws.q, ws.k, ws.v, ws.att, T);
      if (onLayer) onLayer(l, be.read(be.view(ws.q, 0, T * qDim)));

      yield;
      be.matmul(ws.proj, ws.att, T, lw.wo);
      if (lw.postAttnNorm) norm(ws.proj, ws.proj, lw.postAttnNorm, T, H, c.rmsNormEps);
      be.add(ws.x, ws.proj, T * H);

      norm(ws.xn, ws.x, lw.ffnNorm, T, H, c.rmsNormEps);
      be.matmul(ws.gate, ws.xn, T, lw.wGate);
      be.matmul(ws.up, ws.xn, T, lw.wUp);
      glu(ws.gate, ws.up, T * c.intermediateSize);
      // wDown maps intermediate → hidden; reuse `proj` for its output.
      be.matmul(ws.proj, ws.gate, T, lw.wDown);
      if (lw.postFfnNorm) norm(ws.proj, ws.proj, lw.postFfnNorm, T, H, c.rmsNormEps);
      be.add(ws.x, ws.proj, T * H);
      yield;
    }

    if (logits === 'none') return this.noLogits;
    const first = logits === 'all' ? 0 : T - 1;
    const rows = T - first;
    // Decode (first = 0) normalizes from the start of x: no view.
    norm(ws.xn, first === 0 ? ws.x : be.view(ws.x, first * H, rows * H), w.finalNorm, rows, H, c.rmsNormEps);
    const V = c.vocabSize;
    if (this.logitsBuf.length < rows * V) {
      this.logitsBuf = be.alloc(rows * V);
      this.logitsView = be.view(this.logitsBuf, 0, rows * V);
    } else if (this.logitsView.length !== rows * V) {
      this.logitsView = be.view(this.logitsBuf, 0, rows * V);
    }
    const out = this.logitsView;
    be.matmul(out, ws.xn, rows, w.lmHead);
    const cap = r.finalLogitSoftcap;
    if (cap) be.softcap(out, rows * V, cap);
    return be.read(out);
  }
}
