/**
 * Model fingerprints for profile files (and later saved caches). The shape part (dims + a hash of the implied
 * tensor layout) says which model family a profile fits; the `weights` part binds it to the exact weights: an
 * MD5 over the model's weight files as stored, so a profile measured on one model is refused for another of the
 * same shape (a fine-tune, an instruct variant, another quantization of it).
 *
 * Hashing a multi-GB file costs seconds, so per-file digests are cached under $COKV_CACHE_DIR, else
 * $XDG_CACHE_HOME/cokv, else ~/.cache/cokv, keyed by real path + size + mtime + inode (any rewrite of the file
 * invalidates its entry). A cache that cannot be read or written only costs a rehash.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CokvError, systemErrorLine } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import { archModule } from './arch/index.js';
import type { ModelConfig } from './config.js';

/** Identifies a model for profile files: its shape, and (`weights`) the exact weights. */
export interface ModelFingerprint {
  architecture: string;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  hiddenSize: number;
  intermediateSize: number;
  vocabSize: number;
  /** sha256 (first 16 hex digits) of the canonical tensor layout implied by the dims above. */
  hash: string;
  /**
   * `md5:<32 hex>` over the weight files (see {@link weightsFingerprint}). Absent only for models that were not
   * opened from files (built in memory), which nothing can bind a profile to.
   */
  weights?: string;
}

/** The shape keys every fingerprint must carry (all but `weights`). */
export const FINGERPRINT_KEYS = ['architecture', 'layers', 'heads', 'kvHeads', 'headDim', 'hiddenSize', 'intermediateSize', 'vocabSize', 'hash'] as const;

/** Which files or folder each loaded config came from (set when a model is opened for inference). */
const sources = new WeakMap<ModelConfig, string>();
/** Weights fingerprint per bound config, computed once per process. */
const weightsOf = new WeakMap<ModelConfig, string>();

/** Record that `c` was read from `modelPath` (a file or folder), so fingerprints of `c` include its weights hash. */
export function bindModelSource(c: ModelConfig, modelPath: string): void {
  // Sources built in memory carry a placeholder path: nothing on disk to bind to.
  if (fs.existsSync(modelPath)) sources.set(c, modelPath);
}

export function modelFingerprint(c: ModelConfig): ModelFingerprint {
  const base = {
    // The GGUF name, so that a model and its GGUF conversion share a shape (Mistral converts to `llama`).
    architecture: archModule(c.architecture).ggufArchs[0] ?? 'llama',
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    hiddenSize: c.hiddenSize,
    intermediateSize: c.intermediateSize,
    vocabSize: c.vocabSize,
  };
  const layout = {
    ...base,
    tensors: [
      ['token_embd', c.vocabSize, c.hiddenSize],
      ['attn_q', c.numHeads * c.headDim, c.hiddenSize],
      ['attn_k', c.numKvHeads * c.headDim, c.hiddenSize],
      ['attn_v', c.numKvHeads * c.headDim, c.hiddenSize],
      ['attn_output', c.hiddenSize, c.numHeads * c.headDim],
      ['ffn_gate', c.intermediateSize, c.hiddenSize],
      ['ffn_up', c.intermediateSize, c.hiddenSize],
      ['ffn_down', c.hiddenSize, c.intermediateSize],
      ['bias', c.attentionBias ? 1 : 0],
      ['tied', c.tiedEmbeddings ? 1 : 0],
    ],
  };
  const hash = createHash('sha256').update(JSON.stringify(layout)).digest('hex').slice(0, 16);
  const src = sources.get(c);
  if (src === undefined) return { ...base, hash };
  let weights = weightsOf.get(c);
  if (weights === undefined) {
    weights = weightsFingerprint(src);
    weightsOf.set(c, weights);
  }
  return { ...base, hash, weights };
}

/**
 * The files whose bytes are the weights of the model at `modelPath`: the file itself (GGUF, llama2.c), or a
 * Hugging Face folder's .safetensors shards (the only files of a folder cokv reads weights from).
 */
export function weightFiles(modelPath: string): string[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(modelPath);
  } catch (e) {
    throw new CokvError(`--model ${systemErrorLine(e) ?? `${modelPath}: cannot read it`}`, 'file');
  }
  if (!st.isDirectory()) return [modelPath];
  const files = fs.readdirSync(modelPath).filter((f) => f.endsWith('.safetensors')).sort().map((f) => path.join(modelPath, f));
  if (files.length === 0) throw new CokvError(`--model ${modelPath}: no .safetensors weight files to fingerprint`, 'file');
  return files;
}

/**
 * `md5:<hex>`: of the file itself for a one-file model (what `md5sum` prints, whatever the file is called), or
 * over the name and digest of each shard of a folder, in name order.
 */
export function weightsFingerprint(modelPath: string): string {
  const files = weightFiles(modelPath);
  if (files.length === 1 && !fs.statSync(modelPath).isDirectory()) return `md5:${fileDigest(files[0])}`;
  const h = createHash('md5');
  for (const f of files) h.update(`${path.basename(f)}\0${fileDigest(f)}\n`);
  return `md5:${h.digest('hex')}`;
}

/** The folder of the digest cache, or undefined when `COKV_CACHE_DIR` is set to an empty string (no cache). */
export function cacheDir(): string | undefined {
  const env = process.env.COKV_CACHE_DIR;
  if (env !== undefined) return env === '' ? undefined : env;
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'cokv');
}

interface CacheEntry { size: number; mtimeMs: number; ino: number; md5: string }
const CACHE_FILE = 'weights-md5.json';

function readCache(dir: string): Record<string, CacheEntry> {
  try {
    const o = JSON.parse(fs.readFileSync(path.join(dir, CACHE_FILE), 'utf8')) as unknown;
    return o && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, CacheEntry>) : {};
  } catch {
    return {};
  }
}

function writeCache(dir: string, cache: Record<string, CacheEntry>): void {
  // Best effort: a read-only or full disk just means the next run hashes again. Atomic, so a concurrent reader
  // never sees half a file.
  try {
    fs.mkdirSync(dir, { recursive: true });
    writeFileAtomic(path.join(dir, CACHE_FILE), JSON.stringify(cache) + '\n');
  } catch {
    // not cached this time
  }
}

/** MD5 (hex) of one file's bytes, from the cache when its path, size, mtime and inode are unchanged. */
function fileDigest(file: string): string {
  let real: string, st: fs.Stats;
  try {
    real = fs.realpathSync(file);
    st = fs.statSync(real);
  } catch (e) {
    throw new CokvError(`--model ${systemErrorLine(e) ?? `${file}: cannot read it`}`, 'file');
  }
  const dir = cacheDir();
  const cache = dir ? readCache(dir) : {};
  const hit = cache[real];
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino && typeof hit.md5 === 'string') return hit.md5;
  const h = createHash('md5');
  const buf = Buffer.allocUnsafe(16 << 20);
  let fd: number | undefined;
  try {
    fd = fs.openSync(real, 'r');
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(n === buf.length ? buf : buf.subarray(0, n));
    }
  } catch (e) {
    throw new CokvError(`--model ${systemErrorLine(e) ?? `${file}: cannot read it (${(e as Error).message})`}`, 'file');
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  const md5 = h.digest('hex');
  if (dir) writeCache(dir, { ...readCache(dir), [real]: { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, md5 } });
  return md5;
}

/**
 * Check that `got` (a file's "model" field) is a complete fingerprint: an object with every shape key of the
 * right type, and `weights` when `requireWeights`. Returns the problem, or undefined.
 */
export function fingerprintProblem(got: unknown, requireWeights: boolean): string | undefined {
  if (got === undefined) return 'has no "model" fingerprint';
  if (!got || typeof got !== 'object' || Array.isArray(got)) return `"model" must be a fingerprint object, not ${JSON.stringify(got)?.slice(0, 40)}`;
  const o = got as Record<string, unknown>;
  for (const k of FINGERPRINT_KEYS) {
    const v = o[k];
    const ok = k === 'architecture' ? typeof v === 'string' && v.length > 0
      : k === 'hash' ? typeof v === 'string' && /^[0-9a-f]{16}$/.test(v)
        : Number.isSafeInteger(v) && (v as number) > 0;
    if (!ok) return `"model.${k}" is ${v === undefined ? 'missing' : `invalid (${JSON.stringify(v)?.slice(0, 40)})`}`;
  }
  if (o.weights === undefined) {
    if (requireWeights) return 'has no weights fingerprint ("model.weights"): it was made before profiles were bound to the weights, or edited; profile the model again';
  } else if (typeof o.weights !== 'string' || !/^md5:[0-9a-f]{32}$/.test(o.weights)) {
    return `"model.weights" is invalid (${JSON.stringify(o.weights)?.slice(0, 50)})`;
  }
  return undefined;
}

/**
 * Why two fingerprints differ, or undefined if they match. Every shape key is compared; `weights` when both
 * sides have it (a model built in memory has none).
 */
export function fingerprintMismatch(expected: ModelFingerprint, got: Partial<ModelFingerprint>): string | undefined {
  for (const k of FINGERPRINT_KEYS) {
    if (got[k] !== expected[k]) return `${k} is ${String(got[k])}, the loaded model has ${String(expected[k])}`;
  }
  if (expected.weights !== undefined && got.weights !== undefined && got.weights !== expected.weights) {
    return `other weights: ${got.weights.slice(0, 16)}…, the loaded model has ${expected.weights.slice(0, 16)}… (another model, fine-tune or quantization of the same shape)`;
  }
  return undefined;
}
