/**
 * The one error type cokv throws for bad input (files, flags, prompts). The CLI prints `message` as a single
 * line and exits 1; anything else that escapes is an internal error (exit 2).
 */
export class CokvError extends Error {
  /** Short machine-readable category, e.g. `file`, `format`, `flag`, `prompt`. */
  readonly kind: string;
  constructor(message: string, kind = 'input') {
    super(message);
    this.name = 'CokvError';
    this.kind = kind;
  }
}

/** Throw a CokvError naming `where` (a file or a flag) when `cond` is false. */
export function check(cond: unknown, where: string, problem: string, kind = 'format'): asserts cond {
  if (!cond) throw new CokvError(`${where}: ${problem}`, kind);
}

/** Largest element count we accept for one tensor or buffer (keeps corrupt headers from allocating absurd memory). */
export const MAX_TENSOR_ELEMENTS = 2 ** 32;
