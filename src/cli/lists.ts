/**
 * Comma-separated list flags (`--budgets 64,128`, `--presses full,snapkv`, `--profile a.json,b.json`): the one
 * parser every command uses. Entries are trimmed; an empty list, an empty entry (`512,,1024`, a trailing comma) and
 * a bad entry are each one CokvError line naming the flag, so a typo never becomes a NaN or a silently empty run.
 */
import { CokvError } from '../errors.js';
import { numberFlag } from './util.js';

/** What every list parser takes besides its own checks. */
export interface ListOptions {
  /** What one entry is, for the empty-entry message (`must be a length or a comma-separated list`); default `value`. */
  item?: string;
}

/** Bounds of the entries of a number list (as numberFlag's). */
export interface NumberListOptions extends ListOptions {
  /** Every entry an integer (and a safe one). */
  integer?: boolean;
  /** Smallest entry allowed. */
  min?: number;
  /** Largest entry allowed. */
  max?: number;
}

/** Entries of a string list. */
export interface StringListOptions extends ListOptions {
  /** The only entries allowed (a press name, a task, …); default any non-empty string. */
  allowed?: readonly string[];
}

/** The trimmed entries of `value`; CokvError on an empty list or an empty entry. */
function entries(flag: string, value: string, item: string): string[] {
  if (value.trim() === '') throw new CokvError(`${flag}: '${value}' is an empty list`, 'flag');
  const parts = value.split(',').map((x) => x.trim());
  if (parts.some((x) => x === '')) {
    throw new CokvError(`${flag}: '${value}' must be a ${item} or a comma-separated list of them (an entry is empty)`, 'flag');
  }
  return parts;
}

/**
 * Parse a comma-separated list of numbers; undefined when the flag is not given. Each entry is checked as
 * numberFlag checks one value (`--lengths: 'abc' is not a number`, `--budgets: 0 is below the minimum 1`).
 *
 * ```ts
 * numberList('--budgets', '64, 128', { integer: true, min: 1 }); // [64, 128]
 * ```
 */
export function numberList(flag: string, value: string, opts?: NumberListOptions): number[];
export function numberList(flag: string, value: string | undefined, opts?: NumberListOptions): number[] | undefined;
export function numberList(flag: string, value: string | undefined, opts: NumberListOptions = {}): number[] | undefined {
  if (value === undefined) return undefined;
  return entries(flag, value, opts.item ?? 'number').map((x) => numberFlag(flag, x, opts)!);
}

/**
 * Parse a comma-separated list of names; undefined when the flag is not given. With `allowed`, an entry outside it
 * is `--tasks: 'twohop' must be one of passkey, multikey, kv`.
 *
 * ```ts
 * stringList('--presses', 'full,snapkv', { allowed: PRESS_NAMES }); // ['full', 'snapkv']
 * ```
 */
export function stringList(flag: string, value: string, opts?: StringListOptions): string[];
export function stringList(flag: string, value: string | undefined, opts?: StringListOptions): string[] | undefined;
export function stringList(flag: string, value: string | undefined, opts: StringListOptions = {}): string[] | undefined {
  if (value === undefined) return undefined;
  const parts = entries(flag, value, opts.item ?? 'value');
  const { allowed } = opts;
  if (allowed) {
    const bad = parts.find((x) => !allowed.includes(x));
    if (bad !== undefined) throw new CokvError(`${flag}: '${bad}' must be one of ${allowed.join(', ')}`, 'flag');
  }
  return parts;
}
