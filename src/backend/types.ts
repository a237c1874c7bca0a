/**
 * The backend contract, after tinygrad's runtime (`ops_<device>.py`, with `ops_python.py` as the living definition):
 * one file per backend, and one complete reference, `TsBackend` in src/backend/ts.ts, that writes every operation
 * once in plain TypeScript. Every operation is required: a fast backend (native.ts, wasm.ts) either implements one
 * or delegates it to the reference explicitly, so the forward pass (src/model/forward.ts) and the profiler's
 * coalition batch (src/game/coalition-batch.ts) call the backend and have no fallback loops of their own.
 * test/backend-contract.test.ts checks that every backend that loads implements every operation in
 * {@link BACKEND_OPS} and equals the reference on random inputs.
 *
 * ## Buffers, devices and the async step
 *
 * Today every backend is a host backend (`device: 'host'`): operations run synchronously on host typed arrays.
 * Weights reach the backend as {@link Weight} handles (dtype, shape, bytes) rather than bare arrays, and a backend
 * may keep its own copy of them: wasm.ts copies each weight into its module memory on first use (cached by the
 * weight's data array, freed when that array is collected). Activations are {@link ActivationBuffer}s: the forward
 * pass creates its scratch activations with {@link Backend.alloc}, takes ranges of them with {@link Backend.view},
 * and reads one on the host only through {@link Backend.read} (the logits, the queries a layer hook sees, the new
 * K/V rows that go into the KV cache). Between those reads every step on activations is a backend operation: the
 * matmuls, the norms, the FFN activation, attention, and the element-wise steps — bias add ({@link Backend.addBias}),
 * residual add ({@link Backend.add}), RoPE ({@link Backend.rope}), the embedding scale ({@link Backend.scale}) and
 * the logit soft-cap ({@link Backend.softcap}). On 'host' an ActivationBuffer is the Float32Array itself, `alloc`
 * is `new Float32Array`, `view` is `subarray` and `read` returns its argument (no copy).
 *
 * A device backend (WebGPU, say) would be one new file that
 *  - declares another `device` and widens {@link ActivationBuffer} to its handle type (a GPU buffer with an offset
 *    and a length), returning those from `alloc` and `view`;
 *  - uploads each weight to device memory once (keyed by `Weight.data`, at first use or at load), and likewise the
 *    host tables an operation takes — RoPE's cos/sin tables, norm weights, biases — and the per-call metadata
 *    (RoPE's positions, attention's causal counts);
 *  - implements every operation in {@link BACKEND_OPS} by enqueueing work;
 *  - makes {@link Backend.flush} resolve when the queued work has finished; the async forward
 *    (`Transformer.forwardAsync`) awaits it after every layer, and host backends resolve at once.
 * What still lives on the host, and what such a backend would have to copy: the KV cache (src/cache/ragged.ts and
 * the coalition batch's generated K/V are host arrays), so each layer reads its new K/V rows back with `read`, and
 * `attend`/`attendF16` take the cache's K/V as host arrays (a device backend would upload the entries it reads, or
 * keep a device mirror of each head). And `read` is synchronous, as a host backend's is; a WebGPU readback
 * (`mapAsync`) is not, so that backend would also need an async `read` that only `forwardAsync` awaits — the
 * contract does not have one yet. Token ids, positions and the embedding row index are host values.
 */
import type { Weight } from '../model/weights.js';

/**
 * An activation (hidden states, Q/K/V, FFN gates, logits): a buffer of F32 values that a device backend would keep
 * on its device. Every backend today is a host backend, so it is the Float32Array itself; code outside a backend
 * creates one with {@link Backend.alloc}, ranges it with {@link Backend.view} and reads it with
 * {@link Backend.read}, and otherwise uses only its `length`, so a device backend can widen this type (to a handle
 * with a length) without the forward pass indexing its buffers.
 */
export type ActivationBuffer = Float32Array;

/**
 * Arguments of {@link Backend.rope}: rotate, in place, the first `rotaryDim` dimensions of each of the `heads`
 * head vectors (`headDim` floats each, adjacent) of `rows` rows of `x` (row r at x[r·heads·headDim ..]), row r by
 * position positions[r]: dimension i pairs with i + rotaryDim/2 (the Hugging Face / NeoX pairing, the one every
 * architecture here uses: llama-type GGUF Q/K rows, stored for interleaved pairs, are un-permuted at load), and
 * (a, z) becomes (a·cos − z·sin, z·cos + a·sin) with cos = cos[p·rotaryDim/2 + i], sin likewise. Dimensions from
 * `rotaryDim` on pass through (Phi's partial rotary). The tables are [position][rotaryDim/2] (src/model/rope.ts:
 * the frequency scaling of each architecture is already in them). The forward pass keeps one mutable object and
 * refills it before each call.
 */
export interface RopeArgs {
  x: ActivationBuffer;
  rows: number;
  heads: number;
  headDim: number;
  /** Rotated dimensions per head (even, ≤ headDim). */
  rotaryDim: number;
  /** Sequence position of each row (at least `rows` values; rows may belong to different sequences). */
  positions: Int32Array;
  cos: Float32Array;
  sin: Float32Array;
}

/**
 * Arguments of {@link Backend.attend} (K/V as F32) and {@link Backend.attendF16} (K/V as IEEE half bits). For each
 * of `nq` queries (query i at q[qOff + i·qStride .. + hd)): softmax(scale · q·k) attention over entries
 * [from1, to1) of k1/v1 — or, with `count1`, only entries [from1, from1 + count1[i]) (causal prefill) — followed by
 * entries [from2, to2) of k2/v2, written to out[oOff + i·oStride .. + hd). Entry j of a K/V array is its elements
 * [j·hd, (j+1)·hd). Hot paths call attend once per KV head and step, so callers keep one mutable args object and
 * set its fields before each call (no object per call).
 */
export interface AttendArgs<KV extends Float32Array | Uint16Array = Float32Array> {
  out: ActivationBuffer;
  oOff: number;
  oStride: number;
  q: ActivationBuffer;
  qOff: number;
  qStride: number;
  /** Number of queries. */
  nq: number;
  /** Head dimension. */
  hd: number;
  scale: number;
  k1: KV;
  v1: KV;
  from1: number;
  to1: number;
  /** Per query, how many entries of segment 1 it sees (from `from1`); null: all of [from1, to1). */
  count1: Int32Array | null;
  k2: KV;
  v2: KV;
  from2: number;
  to2: number;
}

/** {@link AttendArgs} over an F16 cache: K/V hold half-precision bits, read as their exact F32 values. */
export type AttendF16Args = AttendArgs<Uint16Array>;

/**
 * Where a backend's buffers live: 'host' (typed arrays in this process). A device backend adds its own name here
 * (see the module comment). Not to be confused with `BackendKind` in select.ts, which names a backend to create.
 */
export type BackendDevice = 'host';

/**
 * The operations the forward pass and the profiler call. `ts` is the complete reference; the others are tested
 * against it (test/backend-contract.test.ts, test/backend-kernels.test.ts).
 */
export interface Backend {
  readonly name: string;
  /** Where this backend's buffers live (only host backends exist so far). */
  readonly device: BackendDevice;
  /** A new activation of `n` floats, zero-filled (host: `new Float32Array(n)`). */
  alloc(n: number): ActivationBuffer;
  /** The `length` floats of `buf` from `offset`, sharing its storage (host: `subarray`). */
  view(buf: ActivationBuffer, offset: number, length: number): ActivationBuffer;
  /**
   * `buf`'s values as a host array, for the host code that reads an activation (logits, a layer hook's queries,
   * K/V rows going into the host KV cache). Host backends return `buf` itself: no copy, and writes show through.
   */
  read(buf: ActivationBuffer): Float32Array;
  /**
   * out[m][n] = Σ_k x[m][k] · W[n][k] for m < rows, n < W.rows (W in nn.Linear layout).
   * `x` holds rows × W.cols floats, `out` rows × W.rows.
   */
  matmul(out: ActivationBuffer, x: ActivationBuffer, rows: number, w: Weight): void;
  /** Copy row `row` of `w`, dequantized, into out[outOff .. outOff + w.cols). */
  embedRow(out: ActivationBuffer, outOff: number, w: Weight, row: number): void;
  /** RMSNorm of `rows` rows of `dim` floats: out = w ⊙ x / sqrt(mean(x²) + eps). `out` may be `x` (in place). */
  rmsNorm(out: ActivationBuffer, x: ActivationBuffer, w: Float32Array, rows: number, dim: number, eps: number): void;
  /** SwiGLU in place: gate[i] = silu(gate[i]) · up[i] for i < n. */
  swiglu(gate: ActivationBuffer, up: ActivationBuffer, n: number): void;
  /** GeGLU with tanh GELU (gelu_pytorch_tanh, Gemma) in place: gate[i] = gelu_tanh(gate[i]) · up[i] for i < n. */
  gegluTanh(gate: ActivationBuffer, up: ActivationBuffer, n: number): void;
  /** Residual add in place: out[i] += x[i] for i < n. */
  add(out: ActivationBuffer, x: ActivationBuffer, n: number): void;
  /** Bias add in place: x[r·dim + i] += bias[i] for r < rows, i < dim. */
  addBias(x: ActivationBuffer, bias: Float32Array, rows: number, dim: number): void;
  /** Scale in place: x[i] *= s for i < n (Gemma's embedding scale). */
  scale(x: ActivationBuffer, n: number, s: number): void;
  /** Soft-cap in place: x[i] = cap · tanh(x[i] / cap) for i < n (a recipe's `finalLogitSoftcap`, Gemma's final_logit_softcapping). */
  softcap(x: ActivationBuffer, n: number, cap: number): void;
  /** Rotary position embedding in place (see {@link RopeArgs}). */
  rope(a: RopeArgs): void;
  /** Fused softmax attention of several queries over two K/V segments (see {@link AttendArgs}). */
  attend(a: AttendArgs): void;
  /**
   * `attend` over an F16 cache's stored half bits: the same result as widening K/V to F32 (exact) and calling
   * `attend`. The forward pass calls it for every F16 head.
   */
  attendF16(a: AttendF16Args): void;
  /**
   * Resolves when every operation issued so far has finished and its outputs are readable. Host backends finish
   * each operation before returning, so theirs resolves at once; `Transformer.forwardAsync` awaits it after every
   * layer (the seam for a device backend's queue).
   */
  flush(): Promise<void>;
}

/** A {@link RopeArgs} with every field zero or empty, for a caller to keep and refill before each call. */
export function emptyRopeArgs(): RopeArgs {
  return { x: new Float32Array(0), rows: 0, heads: 0, headDim: 0, rotaryDim: 0, positions: new Int32Array(0), cos: new Float32Array(0), sin: new Float32Array(0) };
}

/** An {@link AttendArgs} with every field zero or empty, for a caller to keep and refill before each call. */
export function emptyAttendArgs(): AttendArgs {
  const e = new Float32Array(0);
  return { out: e, oOff: 0, oStride: 0, q: e, qOff: 0, qStride: 0, nq: 0, hd: 0, scale: 0, k1: e, v1: e, from1: 0, to1: 0, count1: null, k2: e, v2: e, from2: 0, to2: 0 };
}

/** {@link emptyAttendArgs} for {@link Backend.attendF16}. */
export function emptyAttendF16Args(): AttendF16Args {
  const e = new Uint16Array(0);
  return { ...emptyAttendArgs(), k1: e, v1: e, k2: e, v2: e };
}

/** The operations of {@link Backend}, by name: what the contract test checks on every backend. */
export const BACKEND_OPS = [
  'alloc', 'view', 'read', 'matmul', 'embedRow', 'rmsNorm', 'swiglu', 'gegluTanh', 'add', 'addBias', 'scale', 'softcap', 'rope',
  'attend', 'attendF16', 'flush',
] as const;

/** Compile-time check that BACKEND_OPS names every method of Backend (a new op added to one must go in the other). */
type MissingOps = Exclude<keyof Backend, (typeof BACKEND_OPS)[number] | 'name' | 'device'>;
const everyOpListed: [MissingOps] extends [never] ? true : MissingOps = true;
void everyOpListed;
