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
 * Weights already reach the backend as {@link Weight} handles (dtype, shape, bytes) rather than bare arrays, and
 * a backend may keep its own copy of them: wasm.ts copies each weight into its module memory on first use
 * (cached by the weight's data array, freed when that array is collected). A device backend (WebGPU, say) would
 * be one new file that
 *  - declares another `device` and uploads each weight to device memory once, the same way (keyed by `Weight.data`,
 *    at first use or at load);
 *  - implements every operation in {@link BACKEND_OPS} by enqueueing work, and copies an activation back to the
 *    host array it was given only where the host reads it;
 *  - makes {@link Backend.flush} resolve when the queued work has finished. The async forward
 *    (`Transformer.forwardAsync`) awaits it after every layer; host backends resolve at once.
 * What the contract does not lift yet, and a device backend would need before activations can stay on the device
 * between layers: the bias add, the residual add, RoPE, the embedding scale and the logit soft-cap are still host
 * loops in forward.ts between backend calls, and the KV cache lives in host arrays (src/cache/ragged.ts).
 */
import type { Weight } from '../model/weights.js';

/**
 * Arguments of {@link Backend.attend} (K/V as F32) and {@link Backend.attendF16} (K/V as IEEE half bits). For each
 * of `nq` queries (query i at q[qOff + i·qStride .. + hd)): softmax(scale · q·k) attention over entries
 * [from1, to1) of k1/v1 — or, with `count1`, only entries [from1, from1 + count1[i]) (causal prefill) — followed by
 * entries [from2, to2) of k2/v2, written to out[oOff + i·oStride .. + hd). Entry j of a K/V array is its elements
 * [j·hd, (j+1)·hd). Hot paths call attend once per KV head and step, so callers keep one mutable args object and
 * set its fields before each call (no object per call).
 */
export interface AttendArgs<KV extends Float32Array | Uint16Array = Float32Array> {
  out: Float32Array;
  oOff: number;
  oStride: number;
  q: Float32Array;
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
  /**
   * out[m][n] = Σ_k x[m][k] · W[n][k] for m < rows, n < W.rows (W in nn.Linear layout).
   * `x` holds rows × W.cols floats, `out` rows × W.rows.
   */
  matmul(out: Float32Array, x: Float32Array, rows: number, w: Weight): void;
  /** Copy row `row` of `w`, dequantized, into out[outOff .. outOff + w.cols). */
  embedRow(out: Float32Array, outOff: number, w: Weight, row: number): void;
  /** RMSNorm of `rows` rows of `dim` floats: out = w ⊙ x / sqrt(mean(x²) + eps). `out` may be `x` (in place). */
  rmsNorm(out: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void;
  /** SwiGLU in place: gate[i] = silu(gate[i]) · up[i] for i < n. */
  swiglu(gate: Float32Array, up: Float32Array, n: number): void;
  /** GeGLU with tanh GELU (gelu_pytorch_tanh, Gemma) in place: gate[i] = gelu_tanh(gate[i]) · up[i] for i < n. */
  gegluTanh(gate: Float32Array, up: Float32Array, n: number): void;
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
export const BACKEND_OPS = ['matmul', 'embedRow', 'rmsNorm', 'swiglu', 'gegluTanh', 'attend', 'attendF16', 'flush'] as const;

/** Compile-time check that BACKEND_OPS names every method of Backend (a new op added to one must go in the other). */
type MissingOps = Exclude<keyof Backend, (typeof BACKEND_OPS)[number] | 'name' | 'device'>;
const everyOpListed: [MissingOps] extends [never] ? true : MissingOps = true;
void everyOpListed;
