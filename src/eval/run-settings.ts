/**
 * What an eval run folder was computed with: every setting that changes its predictions or metrics, hashed, so
 * a rerun into the same folder can tell "the same run, resume it" from "another configuration" (which must never
 * be answered with the stored numbers). Files enter by content, hashed whole: the model's weights through the
 * weights fingerprint profiles are bound to (src/model/fingerprint.ts, cached by path, size and mtime, so a rerun
 * does not read gigabytes again), its other files (config, tokenizer) and the dataset and profile/head-score files
 * directly.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CokvError, systemErrorLine } from '../errors.js';
import { weightFiles, weightsFingerprint } from '../model/fingerprint.js';
import type { PressOptions } from '../press/options.js';

/** Bumped when the meaning of the settings (or of a run folder) changes. */
export const RUN_SETTINGS_VERSION = 1;

/** JSON with object keys sorted at every level (undefined members dropped), so equal settings hash equally. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x === undefined ? null : x)).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

export function settingsHash(settings: Record<string, unknown>): string {
  return crypto.createHash('sha256').update(canonicalJson(settings)).digest('hex');
}

function readFail(what: string, file: string, e: unknown): CokvError {
  if (e instanceof CokvError) return e;
  const err = e as NodeJS.ErrnoException;
  return new CokvError(`${what} ${systemErrorLine(err.path ? err : Object.assign(err, { path: file })) ?? `${file}: ${(e as Error).message}`}`, 'file');
}

/** sha256 of a file's bytes; `what` names the flag in errors. */
export function fileDigest(file: string, what: string): { size: number; sha256: string } {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new CokvError(`${what} ${file}: not a regular file`, 'file');
    const h = crypto.createHash('sha256');
    const buf = Buffer.alloc(2 ** 20);
    for (let off = 0; off < st.size;) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, st.size - off), off);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      off += n;
    }
    return { size: st.size, sha256: h.digest('hex') };
  } catch (e) {
    throw readFail(what, file, e);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * The model's identity by content: the weights fingerprint of what was loaded (`weightsPath`: the GGUF or llama2.c
 * file a folder resolved to, or the HF folder itself), plus for a folder every other regular file (config,
 * tokenizer, generation config; docs excluded) hashed whole.
 */
export function modelDigest(modelPath: string, weightsPath = modelPath): Record<string, unknown> {
  let st: fs.Stats;
  try {
    st = fs.statSync(modelPath);
  } catch (e) {
    throw readFail('--model', modelPath, e);
  }
  const weights = weightsFingerprint(weightsPath);
  if (!st.isDirectory()) return { weights };
  const weightPaths = new Set(weightFiles(weightsPath).map((f) => path.resolve(f)));
  const files: Record<string, unknown> = {};
  let names: string[];
  try {
    names = fs.readdirSync(modelPath).sort();
  } catch (e) {
    throw readFail('--model', modelPath, e);
  }
  for (const name of names) {
    const f = path.join(modelPath, name);
    if (name.startsWith('.') || /\.md$/i.test(name) || weightPaths.has(path.resolve(f))) continue;
    let s: fs.Stats;
    try {
      s = fs.statSync(f);
    } catch {
      continue; // a dangling link is not part of the model
    }
    if (s.isFile()) files[name] = fileDigest(f, '--model').sha256;
  }
  return { weights, files };
}

/**
 * The press settings that change a run's results: nothing for `full`; otherwise every press option, except that
 * the profile and head-scores files count (by content) only for the press that reads them.
 */
export function pressSettings(press: string, o: Omit<PressOptions, 'budget' | 'ratio'>): Record<string, unknown> {
  if (press === 'full') return {};
  const { profile, headScores, ...rest } = o;
  const out: Record<string, unknown> = { ...rest };
  if (press === 'cokv' && profile !== undefined) out.profile = fileDigest(profile, '--profile').sha256;
  if (press === 'headkv' && headScores !== undefined) out.headScores = fileDigest(headScores, '--head-scores').sha256;
  return out;
}

/** Dotted names of the settings that differ between `a` and `b` (for "… holds other settings (x, y differ)"). */
export function settingsDiff(a: unknown, b: unknown, prefix = ''): string[] {
  const isObj = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (isObj(a) && isObj(b) && prefix.split('.').length < 3) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => settingsDiff(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return canonicalJson(a) === canonicalJson(b) ? [] : [prefix || 'settings'];
}
