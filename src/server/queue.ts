/**
 * One-at-a-time admission for the server: one model, one cache, so requests run in turn. At most `limit` wait
 * behind the running one; beyond that `acquire` refuses at once (the server answers 429) rather than letting an
 * unbounded backlog build up.
 */
export class JobQueue {
  private busy = false;
  private readonly waiting: { resolve: (release: () => void) => void; reject: (e: Error) => void; signal: AbortSignal; onAbort: () => void }[] = [];

  constructor(readonly limit: number) {}

  /** Requests waiting (not counting the running one). */
  get length(): number {
    return this.waiting.length;
  }

  get running(): boolean {
    return this.busy;
  }

  /**
   * A promise of this caller's turn (call the release function it gives when done), or undefined when the queue is
   * full. If `signal` aborts while waiting, the caller leaves the queue and the promise rejects with an AbortError.
   */
  acquire(signal: AbortSignal): Promise<() => void> | undefined {
    if (signal.aborted) return Promise.reject(abortError());
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.limit) return undefined;
    return new Promise((resolve, reject) => {
      const entry = {
        resolve, reject, signal,
        onAbort: () => {
          const i = this.waiting.indexOf(entry);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(abortError());
        },
      };
      signal.addEventListener('abort', entry.onAbort, { once: true });
      this.waiting.push(entry);
    });
  }

  /** A release function that hands the turn on exactly once (a double release must not admit two jobs). */
  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      if (!next) {
        this.busy = false;
        return;
      }
      next.signal.removeEventListener('abort', next.onAbort);
      next.resolve(this.releaser());
    };
  }
}

function abortError(): Error {
  const e = new Error('the request was cancelled');
  e.name = 'AbortError';
  return e;
}
