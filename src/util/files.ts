/**
 * Output files that never clobber what they should not: atomic replacement (temp file in the same folder +
 * rename) that refuses to replace anything but a regular file, removes its temp file on failure, and maps I/O
 * errors to one-line CokvErrors; and a lock file per output so a second writer is refused instead of silently
 * losing one run.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CokvError, systemErrorLine } from '../errors.js';

/** Why `file` may not be (re)written, or undefined when it is absent or a regular file. */
function notRegular(file: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CokvError(systemErrorLine(e) ?? `${file}: ${(e as Error).message}`, 'file');
  }
  if (st.isFile()) return undefined;
  const what = st.isDirectory() ? 'a folder' : st.isSymbolicLink() ? 'a symbolic link' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : st.isFIFO() ? 'a pipe' : st.isSocket() ? 'a socket' : 'not a regular file';
  return `${file}: is ${what}; cokv writes only regular files (choose another path)`;
}

export interface AtomicWriteOptions {
  /** Replace an existing file (default true); false refuses with "already exists". */
  overwrite?: boolean;
  /** Flag or role named in errors (e.g. `--out`). */
  what?: string;
}

/** Write `data` to `file` atomically; see the module comment. Throws CokvError (exit 1) on every failure. */
export function writeFileAtomic(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const label = opts.what ? `${opts.what} ${file}` : file;
  const bad = notRegular(file);
  if (bad) throw new CokvError(opts.what ? `${opts.what} ${bad}` : bad, 'file');
  if (opts.overwrite === false && fs.existsSync(file)) {
    throw new CokvError(`${label}: already exists (remove it or choose another path)`, 'file');
  }
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(tmp, data, { flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // best effort: the temp file may not exist
    }
    if (e instanceof CokvError) throw e;
    // A failed write(2) (ENOSPC, EIO) carries no path: name the file being written.
    const err = e as NodeJS.ErrnoException;
    const line = systemErrorLine(err.path !== undefined ? err : Object.assign(err, { path: file }));
    throw new CokvError(`${opts.what ? `${opts.what} ` : ''}${line ?? `${file}: ${(e as Error).message}`}`, 'file');
  }
}

/** Whether a process with this pid is running on this machine. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A held lock; `release()` removes the lock file (also done at process exit). */
export interface FileLock {
  readonly file: string;
  release(): void;
}

/** The locks this process holds, released on exit by one listener (one per lock trips MaxListenersExceededWarning past 10). */
const heldLocks = new Set<() => void>();
let exitListener = false;

/**
 * Take `<file>.lock` (holding this pid) or refuse with a CokvError naming the process that holds it. A lock
 * left by a dead process is taken over.
 */
export function lockOutput(file: string, what = '--out'): FileLock {
  const lock = `${file}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lock, `${process.pid}\n`, { flag: 'wx' });
      let held = true;
      const release = (): void => {
        if (!held) return;
        held = false;
        heldLocks.delete(release);
        try {
          fs.rmSync(lock, { force: true });
        } catch {
          // already gone
        }
      };
      heldLocks.add(release);
      if (!exitListener) {
        exitListener = true;
        process.on('exit', () => { for (const r of [...heldLocks]) r(); });
      }
      return { file: lock, release };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new CokvError(`${what} ${systemErrorLine(e) ?? `${lock}: ${(e as Error).message}`}`, 'file');
      }
      const pid = Number.parseInt(fs.readFileSync(lock, 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0 && alive(pid) && pid !== process.pid) {
        throw new CokvError(`${what} ${file}: another cokv process (pid ${pid}) is writing it (lock ${lock})`, 'file');
      }
      fs.rmSync(lock, { force: true }); // stale: its writer is gone
    }
  }
  throw new CokvError(`${what} ${file}: could not take the lock ${lock}`, 'file');
}

/**
 * Check an output path before any work: its folder must exist, and the path must be absent or a regular file (never
 * a folder, link, device or pipe: an atomic rename would replace it). Returns its stats when it exists. Errors are one
 * CokvError line starting with `flag` (default `--out`).
 */
export function checkOutputFile(out: string, flag = '--out'): fs.Stats | undefined {
  const dir = path.dirname(path.resolve(out));
  if (!fs.existsSync(dir)) throw new CokvError(`${flag} ${out}: folder ${dir} does not exist`, 'file');
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CokvError(`${flag} ${systemErrorLine(e) ?? `${out}: ${(e as Error).message}`}`, 'file');
  }
  if (st && !st.isFile()) {
    const what = st.isDirectory() ? 'a folder' : st.isSymbolicLink() ? 'a symbolic link' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : st.isFIFO() ? 'a pipe' : 'not a regular file';
    throw new CokvError(`${flag} ${out}: is ${what}; cokv writes only regular files (choose another path)`, 'file');
  }
  return st;
}
