/**
 * Positioned reads of tensor data, shared by the GGUF and safetensors loaders. `fs.readSync` takes at most
 * 2^31 − 1 bytes per call (a 2 GiB tensor read in one call fails with "… -2147483648"), so every read is split
 * into chunks of at most READ_CHUNK_BYTES; and one typed array holds at most 2^32 elements on Node 20, so a
 * tensor kept as raw bytes may not be larger than MAX_TYPED_ARRAY_BYTES.
 */
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import { CokvError } from '../../errors.js';

/** Bytes per readSync call (1 GiB, well under the 2^31 − 1 limit). */
export const READ_CHUNK_BYTES = 2 ** 30;

/** Most elements one typed array may have: 2^32 on Node 20 (V8 11), never more than Buffer's own limit. */
export const MAX_TYPED_ARRAY_LENGTH = Math.min(2 ** 32, bufferConstants.MAX_LENGTH);

/** The positioned read preadFully uses (fs.readSync; tests inject their own). */
export type PositionedRead = (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => number;

export interface ChunkedReadOptions {
  /** Most bytes per read call (default READ_CHUNK_BYTES). */
  chunk?: number;
  read?: PositionedRead;
}

/**
 * Read up to `dst.byteLength` bytes at file position `pos` into `dst`, at most `chunk` bytes per read call.
 * Returns the bytes read (fewer only at the end of the file). Read errors are CokvErrors naming `file`.
 */
export function preadFully(fd: number, dst: Uint8Array, pos: number, file: string, opts: ChunkedReadOptions = {}): number {
  const chunk = opts.chunk ?? READ_CHUNK_BYTES;
  const read = opts.read ?? ((f, b, o, l, p) => fs.readSync(f, b, o, l, p));
  if (!(Number.isInteger(chunk) && chunk > 0 && chunk <= 2 ** 31 - 1)) throw new RangeError(`preadFully: bad chunk size ${chunk}`);
  let done = 0;
  while (done < dst.byteLength) {
    const want = Math.min(chunk, dst.byteLength - done);
    let n: number;
    try {
      n = read(fd, dst, done, want, pos + done);
    } catch (e) {
      throw new CokvError(`${file}: read failed at offset ${pos + done}: ${(e as Error).message}`, 'file');
    }
    if (n <= 0) break;
    done += n;
  }
  return done;
}

/** Throw a CokvError unless `count` elements of `what` fit one typed array on this Node. */
export function checkTypedArrayLength(file: string, what: string, count: number, unit = 'bytes'): void {
  if (count > MAX_TYPED_ARRAY_LENGTH) {
    throw new CokvError(
      `${file}: ${what} is ${count} ${unit}, more than one typed array can hold on Node ${process.versions.node} (${MAX_TYPED_ARRAY_LENGTH})`,
      'format',
    );
  }
}

/** `new ctor(length)`, with the typed-array limit checked first and an allocation failure reported as a CokvError. */
export function allocTyped<T>(file: string, what: string, length: number, ctor: new (n: number) => T, unit = 'bytes'): T {
  checkTypedArrayLength(file, what, length, unit);
  try {
    return new ctor(length);
  } catch (e) {
    throw new CokvError(`${file}: ${what}: cannot allocate ${length} ${unit} (${(e as Error).message})`, 'file');
  }
}
