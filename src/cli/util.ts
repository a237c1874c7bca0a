import { KV_DTYPES, type KvDType } from '../cache/ragged.js';
import { CokvError } from '../errors.js';

/** Parse a flag value as a number within bounds, or throw a CokvError naming the flag. */
export function numberFlag(
  flag: string, value: string | undefined, opts: { integer?: boolean; min?: number; max?: number } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const v = Number(value);
  if (value.trim() === '' || !Number.isFinite(v)) throw new CokvError(`${flag}: '${value}' is not a number`, 'flag');
  if (opts.integer && !Number.isInteger(v)) throw new CokvError(`${flag}: '${value}' is not an integer`, 'flag');
  // 2^53 and beyond would silently round to another integer.
  if (opts.integer && !Number.isSafeInteger(v)) throw new CokvError(`${flag}: '${value}' is not a safe integer (|n| < 2^53)`, 'flag');
  if (opts.min !== undefined && v < opts.min) throw new CokvError(`${flag}: ${v} is below the minimum ${opts.min}`, 'flag');
  if (opts.max !== undefined && v > opts.max) throw new CokvError(`${flag}: ${v} is above the maximum ${opts.max}`, 'flag');
  return v;
}

/** Parse `--kv-dtype` (default f16, as llama.cpp's cache; f32 stays available). */
export function kvDtypeFlag(value: string | undefined): KvDType {
  if (value === undefined) return 'f16';
  if (!(KV_DTYPES as readonly string[]).includes(value)) throw new CokvError(`--kv-dtype: '${value}' must be f32, f16 or q8`, 'flag');
  return value as KvDType;
}

/** Help text of `--kv-dtype`. */
export const KV_DTYPE_HELP = 'KV cache storage: f32, f16 (half the bytes) or q8 (int8 + one F32 scale per row)';

export function formatBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(1)} KiB`;
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(1)} MiB`;
  return `${(b / 1024 ** 3).toFixed(2)} GiB`;
}
