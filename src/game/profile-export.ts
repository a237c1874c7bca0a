/**
 * Profiles that travel: a CoKV profile's per-(layer, KV head) values written in formats other KV-cache tools read.
 *
 * - `kvpress`: the budget table kvpress's `LUKVPress` loads (`kvpress/presses/lukv_press.py`): a `.npy` float32
 *   array [99, L, KVH]. kvpress reads row `round(compression_ratio·100) − 1` and takes each entry as that head's
 *   **prune ratio** (fraction removed; it keeps `1 − entry`), so row r holds the CoKV allocation at compression
 *   ratio (r+1)% — average keep rate (99 − r)%. See {@link kvpressCounts} for the integer rule.
 * - `attention-matching`: the head-budget JSON of Attention Matching (adamzweiger/compaction,
 *   `load_budgets_from_json`: keys `L{layer}H{kv head}`, proportions summing to 1; its Gemma 3 files list only the
 *   full-attention layers, by model index), shares = values clipped at 0, normalised to sum to 1.
 * - `duo`: DuoAttention's `full_attention_heads.tsv` (`duo_attn/utils.py` `save_full_attention_heads`:
 *   `np.savetxt(…, delimiter="\t")`, one row per layer, one column per KV head, `%.18e`); DuoAttention clips the
 *   values to [0, 1] on load, so they are written as values clipped at 0 divided by the largest.
 * - `csv`: `layer,kv_head,value,rank` (rank 1 = the most valuable head).
 *
 * Layers are the profile's players: the model's full-attention layers (sliding-window layers are never budgeted),
 * named by their index in the model.
 */
import { CokvError } from '../errors.js';
import { apportion } from '../press/apportion.js';
import { cokvWeights } from '../press/allocators/cokv.js';

export const EXPORT_FORMATS = ['kvpress', 'attention-matching', 'duo', 'csv'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** Rows kvpress's LUKVPress table has: compression ratios 1%…99%. */
export const KVPRESS_ROWS = 99;

/** A profile's values, as the exporters take them. */
export interface ExportValues {
  /** Flat row-major [row][kvHead] values (row r = model layer `layers[r]`). */
  values: number[];
  /** The model layer of each row, ascending (the model's full-attention layers). */
  layers: number[];
  numKvHeads: number;
}

/** Settings of the kvpress table. */
export interface KvpressTableOptions {
  /** Nominal prompt length in tokens the integer budgets are computed for. */
  length: number;
  /** Tokens every head keeps before CoKV shares the rest (the press's observation window). */
  window: number;
  /** CoKV's α: the number of lowest-valued heads whose weight is 0 (they keep only the window). */
  alpha: number;
}

/** `n / d` rounded half to even, for integers n ≥ 0, d > 0 (exact; what `torch.round` does). */
function divRoundHalfEven(n: number, d: number): number {
  const q = Math.floor(n / d), r = n - q * d;
  if (2 * r > d) return q + 1;
  if (2 * r < d) return q;
  return q % 2 === 0 ? q : q + 1;
}

/**
 * Kept tokens per head (flat [row][kvHead], window included) at average keep rate `keepPercent`% of `length`:
 * the total is T = round(n·keepPercent·length/100) over the n heads (half to even); every head first keeps
 * w = max(1, min(window, ⌊T/n⌋)) tokens; the other T − n·w are shared by CoKV's rule — weights = values minus the
 * α-th smallest, clamped at 0 ({@link cokvWeights}), floor plus largest remainders so the sum is exact, no head above
 * `length` (its excess re-shared), as `cokvAllocation` with redistribution does. The floor of one token per head is
 * kvpress's (LUKVPress clamps every head to ≥ 1: attention needs a key), so when T < n the row keeps n tokens.
 */
export function kvpressCounts(v: ExportValues, keepPercent: number, o: KvpressTableOptions): number[] {
  const n = v.values.length;
  if (!(Number.isInteger(keepPercent) && keepPercent >= 0 && keepPercent <= 100)) {
    throw new CokvError(`keep rate: ${keepPercent}% must be an integer percentage in [0, 100]`, 'flag');
  }
  const total = divRoundHalfEven(n * keepPercent * o.length, 100);
  const w = Math.max(1, Math.min(o.window, Math.floor(total / n)));
  const shared = apportion(cokvWeights(v.values, o.alpha), Math.max(0, total - n * w), new Array<number>(n).fill(o.length - w));
  return shared.map((c) => c + w);
}

/**
 * The LUKVPress table, [99][row][kvHead] row-major float32: entry = 1 − kept/length (kvpress's prune ratio) with
 * row r = compression ratio (r+1)%, i.e. {@link kvpressCounts} at keep rate (99 − r)%.
 */
export function kvpressTable(v: ExportValues, o: KvpressTableOptions): Float32Array {
  checkValues(v);
  if (!(Number.isSafeInteger(o.length) && o.length >= 1)) throw new CokvError(`--length: ${o.length} must be a positive integer`, 'flag');
  if (!(Number.isSafeInteger(o.window) && o.window >= 0)) throw new CokvError(`--window: ${o.window} must be a non-negative integer`, 'flag');
  if (!(Number.isSafeInteger(o.alpha) && o.alpha >= 0)) throw new CokvError(`--alpha: ${o.alpha} must be a non-negative integer`, 'flag');
  const n = v.values.length;
  const out = new Float32Array(KVPRESS_ROWS * n);
  for (let r = 0; r < KVPRESS_ROWS; r++) {
    const counts = kvpressCounts(v, 99 - r, o);
    for (let i = 0; i < n; i++) out[r * n + i] = 1 - counts[i] / o.length;
  }
  return out;
}

function checkValues(v: ExportValues): void {
  const rows = v.layers.length;
  if (!(Number.isInteger(v.numKvHeads) && v.numKvHeads >= 1) || rows === 0 || v.values.length !== rows * v.numKvHeads) {
    throw new CokvError(`profile values: ${v.values.length} values do not make ${rows} layers × ${v.numKvHeads} KV heads`, 'format');
  }
  const bad = v.values.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) throw new CokvError(`profile values: value ${bad} is not a finite number`, 'format');
}

/** Values clipped at 0, divided by their sum (all equal when none is positive, so the shares still sum to 1). */
export function positiveShares(values: number[]): number[] {
  const pos = values.map((x) => Math.max(0, x));
  const sum = pos.reduce((a, b) => a + b, 0);
  return sum > 0 ? pos.map((x) => x / sum) : values.map(() => 1 / values.length);
}

/** Attention Matching's `{"L{l}H{h}": share}` (l = model layer, h = KV head), shares from {@link positiveShares}. */
export function attentionMatchingShares(v: ExportValues): Record<string, number> {
  checkValues(v);
  const shares = positiveShares(v.values);
  const out: Record<string, number> = {};
  v.layers.forEach((l, r) => {
    for (let h = 0; h < v.numKvHeads; h++) out[`L${l}H${h}`] = shares[r * v.numKvHeads + h];
  });
  return out;
}

/** `x` as C's `%.18e` (numpy.savetxt's default): 19 significant digits, exponent signed with at least 2 digits. */
export function formatE18(x: number): string {
  const [mant, exp] = x.toExponential(18).split('e');
  const e = Number(exp);
  return `${mant}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
}

/** DuoAttention's TSV: per layer one line of tab-separated per-KV-head values clipped at 0 and divided by the largest. */
export function duoTsv(v: ExportValues): string {
  checkValues(v);
  const max = Math.max(0, ...v.values);
  const scaled = v.values.map((x) => (max > 0 ? Math.max(0, x) / max : 0));
  const lines = v.layers.map((_, r) => scaled.slice(r * v.numKvHeads, (r + 1) * v.numKvHeads).map(formatE18).join('\t'));
  return lines.join('\n') + '\n';
}

/** `layer,kv_head,value,rank`: rank 1 = largest value; equal values get consecutive ranks in table order. */
export function profileCsv(v: ExportValues): string {
  checkValues(v);
  const order = v.values.map((x, i) => i).sort((a, b) => v.values[b] - v.values[a] || a - b);
  const rank = new Array<number>(v.values.length);
  order.forEach((i, k) => { rank[i] = k + 1; });
  const lines = ['layer,kv_head,value,rank'];
  v.layers.forEach((l, r) => {
    for (let h = 0; h < v.numKvHeads; h++) {
      const i = r * v.numKvHeads + h;
      lines.push(`${l},${h},${v.values[i]},${rank[i]}`);
    }
  });
  return lines.join('\n') + '\n';
}

/** One array read from or written to a `.npy` file. */
export interface NpyArray {
  shape: number[];
  data: Float32Array;
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/**
 * A `.npy` file (format version 1.0) holding `data` as little-endian float32 in C order: magic, version, a 2-byte
 * header length, then the header dict padded with spaces and ended by '\n' so the data starts at a multiple of 64.
 */
export function encodeNpy(a: NpyArray): Uint8Array {
  const count = a.shape.reduce((x, y) => x * y, 1);
  if (count !== a.data.length) throw new CokvError(`npy: shape ${a.shape.join('×')} holds ${count} values, the data has ${a.data.length}`, 'format');
  const shape = a.shape.length === 1 ? `(${a.shape[0]},)` : `(${a.shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  const pad = (64 - ((10 + header.length + 1) % 64)) % 64;
  header += ' '.repeat(pad) + '\n';
  if (header.length > 0xffff) throw new CokvError('npy: header too long for format 1.0', 'format');
  const out = new Uint8Array(10 + header.length + 4 * count);
  out.set(NPY_MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  const view = new DataView(out.buffer, 10 + header.length);
  for (let i = 0; i < count; i++) view.setFloat32(4 * i, a.data[i], true);
  return out;
}

/** Read a `.npy` file of little-endian float32 in C order (format 1.0–3.0); anything else is refused. */
export function decodeNpy(bytes: Uint8Array, where = 'npy'): NpyArray {
  const bad = (why: string): never => { throw new CokvError(`${where}: ${why}`, 'format'); };
  if (bytes.length < 10 || NPY_MAGIC.some((b, i) => bytes[i] !== b)) bad('not a .npy file (bad magic)');
  const major = bytes[6];
  if (major < 1 || major > 3) bad(`unsupported .npy version ${major}.${bytes[7]}`);
  const lenBytes = major === 1 ? 2 : 4;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8 + lenBytes) bad('truncated header');
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = 8 + lenBytes + hlen;
  if (bytes.length < start) bad('truncated header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(8 + lenBytes, start));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  if (descr !== '<f4') bad(`dtype ${descr ?? '(none)'}: only little-endian float32 ('<f4') is read`);
  if (!/'fortran_order':\s*False/.test(header)) bad('Fortran-order arrays are not read (C order only)');
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (shapeText === undefined) bad('no shape in the header');
  const shape = shapeText!.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(`bad shape (${shapeText})`);
  const count = shape.reduce((x, y) => x * y, 1);
  if (bytes.length !== start + 4 * count) bad(`holds ${bytes.length - start} data bytes, shape ${shape.join('×')} needs ${4 * count}`);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = dv.getFloat32(start + 4 * i, true);
  return { shape, data };
}

/** The bytes of `v` in `format` (kvpress needs `table`). */
export function exportProfile(format: ExportFormat, v: ExportValues, table?: KvpressTableOptions): Uint8Array | string {
  switch (format) {
    case 'kvpress': {
      if (!table) throw new CokvError('kvpress export: needs --length, --window and --alpha', 'flag');
      return encodeNpy({ shape: [KVPRESS_ROWS, v.layers.length, v.numKvHeads], data: kvpressTable(v, table) });
    }
    case 'attention-matching':
      return JSON.stringify(attentionMatchingShares(v), null, 2) + '\n';
    case 'duo':
      return duoTsv(v);
    case 'csv':
      return profileCsv(v);
  }
}
