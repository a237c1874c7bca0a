/**
 * The one error type cokv throws for bad input (files, flags, prompts). The CLI prints `message` as a single
 * line and exits 1; anything else that escapes is an internal error (exit 2).
 */
export class CokvError extends Error {
  /** Short machine-readable category, e.g. `file`, `format`, `flag`, `prompt`. */
  readonly kind: string;
  constructor(message: string, kind = 'input') {
    // Messages quote file contents (metadata strings, keys, paths): control characters are escaped so a crafted
    // file can neither break the one-line contract nor send terminal escape sequences.
    super(sanitize(message));
    this.name = 'CokvError';
    this.kind = kind;
  }
}

/** `s` with C0/C1 control characters (newlines, ESC, …) written as \xNN escapes and at most `max` characters. */
export function sanitize(s: string, max = 2000): string {
  // eslint-disable-next-line no-control-regex
  const out = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

/**
 * A one-line description of a Node system error (EACCES, ENOSPC, EPIPE, …), or undefined for other errors: the
 * CLI reports these as user errors (exit 1) naming the path, not as internal errors.
 */
export function systemErrorLine(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as NodeJS.ErrnoException;
  const why: Record<string, string> = {
    EACCES: 'permission denied', EPERM: 'operation not permitted', ENOSPC: 'no space left on the device',
    EROFS: 'read-only file system', EDQUOT: 'disk quota exceeded', EPIPE: 'broken pipe', EISDIR: 'is a folder',
    ENOTDIR: 'a path component is not a folder', ENOENT: 'no such file or folder', EMFILE: 'too many open files',
    EEXIST: 'already exists', EIO: 'input/output error', EFBIG: 'file too large', ENAMETOOLONG: 'name too long',
  };
  if (!e.code || !Object.hasOwn(why, e.code)) return undefined;
  const where = e.path ?? (e.syscall ? `${e.syscall}` : 'I/O');
  return sanitize(`${where}: ${why[e.code]} (${e.code}${e.syscall ? `, ${e.syscall}` : ''})`);
}

/** Throw a CokvError naming `where` (a file or a flag) when `cond` is false. */
export function check(cond: unknown, where: string, problem: string, kind = 'format'): asserts cond {
  if (!cond) throw new CokvError(`${where}: ${problem}`, kind);
}

/** Largest element count we accept for one tensor or buffer (keeps corrupt headers from allocating absurd memory). */
export const MAX_TENSOR_ELEMENTS = 2 ** 32;
