/** `full`: the uncompressed cache, the reference every other press is measured against. */
import type { Press } from '../types.js';
import { definePress } from './descriptor.js';

/**
 * The `full` press: keeps every entry (the uncompressed cache). `CokvModel` treats it as no press at all; code
 * that calls `compressLayer` itself gets a no-op.
 */
export class FullPress implements Press {
  readonly name = 'full';

  compressLayer(): void {
    // Keeps everything.
  }
}

/** True for the press `createPress('full', …)` returns (no compression). */
export function isFullPress(p: Press | undefined): p is FullPress {
  return p instanceof FullPress;
}

export const full = definePress({
  name: 'full',
  label: 'Full',
  description: 'keeps every entry: the uncompressed cache (no budget)',
  role: 'reference',
  allocation: 'none',
  options: {},
  requires: [],
  sweep: true,
  build: () => new FullPress(),
});
