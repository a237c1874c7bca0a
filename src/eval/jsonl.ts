/**
 * JSON Lines reading with errors that name `{file}:{line}`. Blank lines are ignored; a malformed line either stops
 * the read (default) or is skipped with a warning (`onBadLine: 'skip'`).
 */
import fs from 'node:fs';
import { CokvError } from '../errors.js';

export interface JsonlOptions {
  /** 'error' (default): throw on the first malformed line; 'skip': warn and go on. */
  onBadLine?: 'error' | 'skip';
  /** Where skip warnings go (default: one line on stderr). */
  warn?: (message: string) => void;
}

export interface JsonlRecord {
  /** 1-based line number in the file. */
  line: number;
  value: Record<string, unknown>;
}

function defaultWarn(message: string): void {
  process.stderr.write(`cokv: warning: ${message}\n`);
}

/** Read a whole file as UTF-8 text, or throw a one-line CokvError. */
export function readTextFile(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (code ?? 'cannot read');
    throw new CokvError(`${file}: cannot read (${why})`, 'file');
  }
}

/** Parse JSONL text; every non-blank line must be a JSON object. `file` only labels errors. */
export function parseJsonl(text: string, file: string, opts: JsonlOptions = {}): JsonlRecord[] {
  const onBad = opts.onBadLine ?? 'error';
  const warn = opts.warn ?? defaultWarn;
  const out: JsonlRecord[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    const src = i === 0 && raw.startsWith('\ufeff') ? raw.slice(1) : raw;
    if (src.trim() === '') continue;
    let problem: string | undefined;
    let value: unknown;
    try {
      value = JSON.parse(src);
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        problem = `expected a JSON object, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`;
      }
    } catch (err) {
      problem = `invalid JSON (${(err as Error).message})`;
    }
    if (problem !== undefined) {
      const msg = `${file}:${i + 1}: ${problem}`;
      if (onBad === 'skip') {
        warn(`${msg}; line skipped`);
        continue;
      }
      throw new CokvError(msg, 'format');
    }
    out.push({ line: i + 1, value: value as Record<string, unknown> });
  }
  return out;
}

/** Read and parse a JSONL file. */
export function readJsonl(file: string, opts: JsonlOptions = {}): JsonlRecord[] {
  return parseJsonl(readTextFile(file), file, opts);
}

/** Where a record came from, for error messages: `file:line`. */
export function where(file: string, rec: JsonlRecord): string {
  return `${file}:${rec.line}`;
}

/** A required string field. */
export function stringField(rec: JsonlRecord, field: string, file: string): string {
  const v = rec.value[field];
  if (v === undefined) throw new CokvError(`${where(file, rec)}: missing field '${field}'`, 'format');
  if (typeof v !== 'string') throw new CokvError(`${where(file, rec)}: field '${field}' must be a string`, 'format');
  return v;
}

/** An optional string field (absent or null → undefined). */
export function optionalStringField(rec: JsonlRecord, field: string, file: string): string | undefined {
  const v = rec.value[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new CokvError(`${where(file, rec)}: field '${field}' must be a string`, 'format');
  return v;
}

/** A required array-of-strings field (non-empty unless `allowEmpty`). */
export function stringArrayField(rec: JsonlRecord, field: string, file: string, allowEmpty = false): string[] {
  const v = rec.value[field];
  if (v === undefined) throw new CokvError(`${where(file, rec)}: missing field '${field}'`, 'format');
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new CokvError(`${where(file, rec)}: field '${field}' must be an array of strings`, 'format');
  }
  if (!allowEmpty && v.length === 0) throw new CokvError(`${where(file, rec)}: field '${field}' is empty`, 'format');
  return v as string[];
}

/** An optional array-of-strings field (absent or null → null). */
export function optionalStringArrayField(rec: JsonlRecord, field: string, file: string): string[] | null {
  const v = rec.value[field];
  if (v === undefined || v === null) return null;
  return stringArrayField(rec, field, file, true);
}

/** A required finite number field (`integer` to demand an integer). */
export function numberField(rec: JsonlRecord, field: string, file: string, integer = false): number {
  const v = rec.value[field];
  if (v === undefined) throw new CokvError(`${where(file, rec)}: missing field '${field}'`, 'format');
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new CokvError(`${where(file, rec)}: field '${field}' must be ${integer ? 'an integer' : 'a number'}`, 'format');
  }
  return v;
}

/** An optional number field. */
export function optionalNumberField(rec: JsonlRecord, field: string, file: string, integer = false): number | undefined {
  const v = rec.value[field];
  if (v === undefined || v === null) return undefined;
  return numberField(rec, field, file, integer);
}
