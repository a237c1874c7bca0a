/**
 * Saved sequences: a (possibly compressed) ragged KV cache with its tokens and last logits, in one binary file.
 *
 *   bytes 0–7    magic "COKVKVC\n"
 *   bytes 8–11   format version (u32 little-endian), 2 (version 1, without window queries, still loads)
 *   bytes 12–15  header length H (u32 LE)
 *   H bytes      header, UTF-8 JSON (SavedCacheHeader)
 *   body         logits: f32 × vocabSize (when the header says so); then per layer, per KV head, `lengths[l][h]`
 *                entries: positions i32 × n, keys and values (f32 / f16 bits u16 / int8) × n·headDim each, and
 *                for q8 the key and value row scales f32 × n each; then (version 2, when `queryRows` > 0) the
 *                window queries of the last plain prefill: per full-attention layer, ascending, f32 × queryRows ·
 *                queryDim (so a loaded sequence can still be compressed exactly). All little-endian, unpadded.
 *   32 bytes     SHA-256 of every byte before it
 *
 * The header binds the file to the model (shape and weights content hash, see modelFingerprint), so a cache is
 * never continued on other weights; the checksum catches corruption, the header's lengths truncation.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { HeadCache, KV_DTYPES, RaggedKVCache, type CacheLayer, type KvDType } from './ragged.js';
import { CokvError, systemErrorLine } from '../errors.js';
import { fingerprintMismatch, fingerprintProblem, modelFingerprint, type ModelFingerprint } from '../model/fingerprint.js';
import { writeFileAtomic } from '../util/files.js';
import type { CokvModel } from '../engine.js';

export const SAVED_CACHE_MAGIC = 'COKVKVC\n';
export const SAVED_CACHE_VERSION = 2;
/** The versions this cokv reads (1: no window queries). */
const READ_VERSIONS = [1, 2];
const PREAMBLE = 16;
const DIGEST = 32;

/** The JSON header of a saved cache. */
export interface SavedCacheHeader {
  model: ModelFingerprint;
  kvDtype: KvDType;
  layers: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  /** Each layer's kind (and window for sliding layers). */
  layerKinds: CacheLayer[];
  /** Tokens run through the model (the cache's position). */
  position: number;
  /** Every token of the sequence: `position` fed ones, then `pending` generated but not yet fed. */
  tokens: number[];
  pending: number;
  /** Whether the body starts with the last logits (every non-empty sequence has them). */
  logits: boolean;
  /** Entries held per [layer][kvHead]. */
  lengths: number[][];
  /**
   * Version 2: rows of window queries saved (the last plain prefill's, for a later compress; 0 or absent: none)
   * and the width of one row (query heads × head size).
   */
  queryRows?: number;
  queryDim?: number;
}

/**
 * The queries of the last plain prefill's window (what a press scores with): `rows` rows per full-attention layer,
 * `perLayer[l]` for each such layer l (rows × query heads × head size).
 */
export interface WindowQueries {
  rows: number;
  perLayer: Float32Array[];
}

/** What a saved file holds, as loaded. */
export interface SavedSequence {
  cache: RaggedKVCache;
  tokens: number[];
  pending: number;
  logits: Float32Array | undefined;
  /** The window queries, when the file has them. */
  queries?: WindowQueries;
}

function bytesOf(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Body bytes of one head of `n` entries. */
function headBytes(dtype: KvDType, n: number, hd: number): number {
  const el = dtype === 'f32' ? 4 : dtype === 'f16' ? 2 : 1;
  return 4 * n + 2 * n * hd * el + (dtype === 'q8' ? 8 * n : 0);
}

/** Write `s` to `file` atomically in the format above. */
export function writeSavedCache(
  model: CokvModel, file: string,
  s: { cache: RaggedKVCache; tokens: readonly number[]; pending: number; logits: Float32Array | undefined; queries?: WindowQueries },
): void {
  if (os.endianness() !== 'LE') throw new CokvError('save: saved caches are little-endian; this machine is not', 'file');
  const c = s.cache;
  const header: SavedCacheHeader = {
    model: modelFingerprint(model.config), kvDtype: c.dtype, layers: c.numLayers, kvHeads: c.numKvHeads, headDim: c.headDim,
    vocabSize: model.config.vocabSize, layerKinds: [...c.layers], position: c.position, tokens: [...s.tokens], pending: s.pending,
    logits: s.logits !== undefined, lengths: c.lengths(),
  };
  const qDim = model.config.numHeads * model.config.headDim;
  const q = s.queries && s.queries.rows > 0 ? s.queries : undefined;
  if (q) {
    for (const l of c.budgetedLayers()) {
      if (q.perLayer[l]?.length !== q.rows * qDim) throw new Error(`save: layer ${l}'s window queries are not ${q.rows} × ${qDim}`);
    }
    header.queryRows = q.rows;
    header.queryDim = qDim;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const pre = Buffer.alloc(PREAMBLE);
  pre.write(SAVED_CACHE_MAGIC, 0, 'latin1');
  pre.writeUInt32LE(SAVED_CACHE_VERSION, 8);
  pre.writeUInt32LE(json.length, 12);
  const parts: Buffer[] = [pre, json];
  if (s.logits) parts.push(bytesOf(s.logits));
  for (let l = 0; l < c.numLayers; l++) {
    for (let g = 0; g < c.numKvHeads; g++) {
      const e = c.head(l, g).entries();
      parts.push(bytesOf(e.positions), bytesOf(e.keys), bytesOf(e.values));
      if (c.dtype === 'q8') parts.push(bytesOf(e.keyScales), bytesOf(e.valueScales));
    }
  }
  if (q) for (const l of c.budgetedLayers()) parts.push(bytesOf(q.perLayer[l]));
  const hash = createHash('sha256');
  for (const p of parts) hash.update(p);
  parts.push(hash.digest());
  writeFileAtomic(file, Buffer.concat(parts), { what: 'save' });
}

const isInt = (v: unknown, min = 0): v is number => Number.isSafeInteger(v) && (v as number) >= min;

/**
 * Read and check a saved cache for `model`: another model (shape or weights), another dtype than `kvDtype` (when
 * given), a truncated, corrupt or inconsistent file are refused with one CokvError line naming the file.
 */
export async function readSavedCache(model: CokvModel, file: string, kvDtype?: KvDType): Promise<SavedSequence> {
  const bad = (why: string, kind = 'format'): CokvError => new CokvError(`${file}: ${why}`, kind);
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch (e) {
    throw new CokvError(systemErrorLine(e) ?? `${file}: cannot read it (${(e as Error).message})`, 'file');
  }
  if (buf.length < 8 || buf.toString('latin1', 0, 8) !== SAVED_CACHE_MAGIC) {
    throw bad(buf.length < 8 && SAVED_CACHE_MAGIC.startsWith(buf.toString('latin1')) ? `truncated (${buf.length} bytes)` : 'not a cokv saved cache (bad magic)');
  }
  if (buf.length < PREAMBLE) throw bad(`truncated (${buf.length} bytes)`);
  const version = buf.readUInt32LE(8);
  if (!READ_VERSIONS.includes(version)) throw bad(`saved cache format version ${version}; this cokv reads versions ${READ_VERSIONS.join(' and ')}`);
  const H = buf.readUInt32LE(12);
  if (PREAMBLE + H + DIGEST > buf.length) throw bad(`truncated (${buf.length} bytes; the header alone needs ${PREAMBLE + H + DIGEST})`);
  let h: SavedCacheHeader;
  try {
    h = JSON.parse(buf.toString('utf8', PREAMBLE, PREAMBLE + H)) as SavedCacheHeader;
  } catch {
    throw bad('corrupt (the header is not valid JSON)');
  }
  const problem = headerProblem(h, version);
  if (problem) throw bad(`corrupt header (${problem})`);
  const hd = h.headDim;
  let body = h.logits ? 4 * h.vocabSize : 0;
  for (const row of h.lengths) for (const n of row) body += headBytes(h.kvDtype, n, hd);
  const queryRows = h.queryRows ?? 0;
  const fullLayers = h.layerKinds.filter((k) => k.kind === 'full').length;
  if (queryRows > 0) body += 4 * fullLayers * queryRows * h.queryDim!;
  const total = PREAMBLE + H + body + DIGEST;
  if (buf.length < total) throw bad(`truncated (${buf.length} bytes; the header says ${total})`);
  if (buf.length > total) throw bad(`corrupt (${buf.length - total} bytes after the end the header gives)`);
  const digest = createHash('sha256').update(buf.subarray(0, total - DIGEST)).digest();
  if (!digest.equals(buf.subarray(total - DIGEST))) throw bad('corrupt (checksum mismatch)');

  // The file is intact: now whether it fits this model.
  const c = model.config;
  const why = fingerprintMismatch(modelFingerprint(c), h.model);
  if (why) throw bad(`saved for another model (${why})`, 'model');
  if (h.layers !== c.numLayers || h.kvHeads !== c.numKvHeads || h.headDim !== c.headDim || h.vocabSize !== c.vocabSize) {
    throw bad(`saved for another shape (${h.layers} layers × ${h.kvHeads} KV heads × ${h.headDim}, vocab ${h.vocabSize}; the model has ${c.numLayers} × ${c.numKvHeads} × ${c.headDim}, vocab ${c.vocabSize})`, 'model');
  }
  c.layers.forEach((spec, l) => {
    const k = h.layerKinds[l];
    if (k.kind !== spec.kind || (spec.kind === 'sliding' && k.window !== spec.window)) {
      throw bad(`saved for other layer kinds (layer ${l} is ${k.kind}${k.window ? ` ${k.window}` : ''}, the model's is ${spec.kind}${spec.window ? ` ${spec.window}` : ''})`, 'model');
    }
  });
  if (kvDtype !== undefined && kvDtype !== h.kvDtype) throw bad(`holds a ${h.kvDtype} cache, ${kvDtype} was asked (use --kv-dtype ${h.kvDtype})`, 'model');
  if (h.tokens.some((t) => !(isInt(t) && t < c.vocabSize))) throw bad(`corrupt header (a token is outside the vocabulary 0..${c.vocabSize - 1})`);

  let off = PREAMBLE + H;
  const take = <T extends ArrayBufferView>(make: (n: number) => T, n: number, bytesPer: number): T => {
    const a = make(n);
    new Uint8Array(a.buffer, a.byteOffset, a.byteLength).set(buf.subarray(off, off + n * bytesPer));
    off += n * bytesPer;
    return a;
  };
  const logits = h.logits ? take((n) => new Float32Array(n), h.vocabSize, 4) : undefined;
  const heads: HeadCache[][] = [];
  const el = h.kvDtype === 'f32' ? 4 : h.kvDtype === 'f16' ? 2 : 1;
  const store = (n: number): Float32Array | Uint16Array | Int8Array => (h.kvDtype === 'f32' ? new Float32Array(n) : h.kvDtype === 'f16' ? new Uint16Array(n) : new Int8Array(n));
  for (let l = 0; l < h.layers; l++) {
    const row: HeadCache[] = [];
    for (let g = 0; g < h.kvHeads; g++) {
      const n = h.lengths[l][g];
      const positions = take((m) => new Int32Array(m), n, 4);
      const keys = take(store, n * hd, el);
      const values = take(store, n * hd, el);
      const q8 = h.kvDtype === 'q8';
      const keyScales = q8 ? take((m) => new Float32Array(m), n, 4) : new Float32Array(0);
      const valueScales = q8 ? take((m) => new Float32Array(m), n, 4) : new Float32Array(0);
      // Attention relies on ascending positions below the cache's, and consecutive ones on sliding layers.
      const sliding = c.layers[l].kind === 'sliding';
      for (let j = 0; j < n; j++) {
        const p = positions[j];
        if (!(p >= 0 && p < h.position && (j === 0 || p > positions[j - 1]) && (!sliding || j === 0 || p === positions[j - 1] + 1))) {
          throw bad(`corrupt (layer ${l} head ${g}: entry ${j} has position ${p})`);
        }
      }
      row.push(HeadCache.fromEntries(hd, h.kvDtype, { keys, values, keyScales, valueScales, positions }));
    }
    heads.push(row);
  }
  const cache = RaggedKVCache.restore(heads, h.position, hd, h.kvDtype, c.layers);
  let queries: WindowQueries | undefined;
  if (queryRows > 0) {
    if (h.queryDim !== c.numHeads * c.headDim) throw bad(`saved for another shape (window queries of ${h.queryDim} per row, the model's are ${c.numHeads * c.headDim})`, 'model');
    const perLayer: Float32Array[] = [];
    for (const l of cache.budgetedLayers()) perLayer[l] = take((n) => new Float32Array(n), queryRows * h.queryDim, 4);
    queries = { rows: queryRows, perLayer };
  }
  return { cache, tokens: h.tokens, pending: h.pending, logits, queries };
}

/**
 * The format version and header of a saved cache, read without its body and without checking it (for a file that
 * `readSavedCache` has accepted: to say what it lacks). Throws CokvError kind 'format' on a file it cannot parse.
 */
export function readSavedCacheHeader(file: string): { version: number; header: SavedCacheHeader } {
  const fd = fs.openSync(file, 'r');
  try {
    const pre = Buffer.alloc(PREAMBLE);
    if (fs.readSync(fd, pre, 0, PREAMBLE, 0) !== PREAMBLE || pre.toString('latin1', 0, 8) !== SAVED_CACHE_MAGIC) {
      throw new CokvError(`${file}: not a cokv saved cache`, 'format');
    }
    const json = Buffer.alloc(pre.readUInt32LE(12));
    if (fs.readSync(fd, json, 0, json.length, PREAMBLE) !== json.length) throw new CokvError(`${file}: truncated header`, 'format');
    try {
      return { version: pre.readUInt32LE(8), header: JSON.parse(json.toString('utf8')) as SavedCacheHeader };
    } catch {
      throw new CokvError(`${file}: corrupt (the header is not valid JSON)`, 'format');
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** What is wrong with a parsed header's fields, or undefined. */
function headerProblem(h: SavedCacheHeader, version: number): string | undefined {
  if (!h || typeof h !== 'object' || Array.isArray(h)) return 'not an object';
  const fp = fingerprintProblem(h.model, false);
  if (fp) return fp;
  if (!KV_DTYPES.includes(h.kvDtype)) return `kvDtype ${JSON.stringify(h.kvDtype)}`;
  for (const k of ['layers', 'kvHeads', 'headDim', 'vocabSize'] as const) if (!isInt(h[k], 1) || h[k] > 1 << 24) return `${k} ${JSON.stringify(h[k])}`;
  if (!isInt(h.position) || !isInt(h.pending)) return 'position/pending';
  if (!Array.isArray(h.tokens) || h.tokens.length !== h.position + h.pending) return 'tokens: not position + pending of them';
  if (typeof h.logits !== 'boolean' || h.logits !== h.position > 0) return 'logits';
  if (!Array.isArray(h.layerKinds) || h.layerKinds.length !== h.layers) return 'layerKinds';
  for (const k of h.layerKinds) {
    if (!k || (k.kind !== 'full' && !(k.kind === 'sliding' && isInt(k.window, 1)))) return 'layerKinds';
  }
  if (!Array.isArray(h.lengths) || h.lengths.length !== h.layers) return 'lengths';
  for (const row of h.lengths) {
    if (!Array.isArray(row) || row.length !== h.kvHeads || row.some((n) => !isInt(n) || n > h.position)) return 'lengths';
  }
  if (version < 2 && (h.queryRows !== undefined || h.queryDim !== undefined)) return 'queryRows in a version 1 file';
  if (h.queryRows !== undefined && h.queryRows !== 0) {
    // Window queries are those of the last prefilled rows, so never more rows than tokens fed nor with one pending.
    if (!isInt(h.queryRows, 1) || h.queryRows > h.position || h.pending !== 0) return 'queryRows';
    if (!isInt(h.queryDim, 1) || h.queryDim > 1 << 24) return 'queryDim';
  }
  return undefined;
}
