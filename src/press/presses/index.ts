/**
 * The registry's presses, in order (the export list, as kvpress's `presses/__init__.py`): one descriptor per file
 * in this folder. `PRESS_NAMES`, `createPress`, the CLI's press flags, the report's labels, docs/presses.md's
 * table and the experiment lists all come from this list. To add a press: CONTRIBUTING.md, "How to add a press".
 */
import { CokvError } from '../../errors.js';
import type { PressDescriptor, PressOptionKey } from './descriptor.js';
import { full } from './full.js';
import { streaming } from './streaming.js';
import { snapkv } from './snapkv.js';
import { boundarySnapkv } from './boundary-snapkv.js';
import { pyramidkv } from './pyramidkv.js';
import { adakv } from './adakv.js';
import { adaPyramidkv } from './ada-pyramidkv.js';
import { headkv } from './headkv.js';
import { cokv } from './cokv.js';
import { random } from './random.js';

export const PRESS_DESCRIPTORS = [full, streaming, snapkv, boundarySnapkv, pyramidkv, adakv, adaPyramidkv, headkv, cokv, random] as const;

type NamesOf<T extends readonly PressDescriptor[]> = { readonly [I in keyof T]: T[I] extends PressDescriptor<infer N> ? N : never };

/** The registry's press names, in order. */
export const PRESS_NAMES = PRESS_DESCRIPTORS.map((d) => d.name) as unknown as NamesOf<typeof PRESS_DESCRIPTORS>;
export type PressName = (typeof PRESS_NAMES)[number];

/** True when `name` is a registry press. */
export function isPressName(name: string): name is PressName {
  return (PRESS_NAMES as readonly string[]).includes(name);
}

/** The descriptor of press `name`; CokvError `press: unknown press 'x' (known: …)` for any other name. */
export function pressDescriptor(name: string): PressDescriptor {
  const d = PRESS_DESCRIPTORS.find((p) => p.name === name);
  if (!d) throw new CokvError(`press: unknown press '${name}' (known: ${PRESS_NAMES.join(', ')})`, 'flag');
  return d;
}

/** The display label of `name` (report legends, docs); a name that is not a registry press is returned as it is. */
export function pressLabel(name: string): string {
  return PRESS_DESCRIPTORS.find((p) => p.name === name)?.label ?? name;
}

/** The registry presses that read option `key`, in registry order. */
export function pressesReading(key: PressOptionKey): PressDescriptor[] {
  return PRESS_DESCRIPTORS.filter((d) => Object.hasOwn(d.options, key));
}

/** The presses of the default experiment sweep (`cokv experiment`), in registry order. */
export const SWEEP_PRESS_NAMES: readonly PressName[] = PRESS_DESCRIPTORS.filter((d) => d.sweep).map((d) => d.name);

export type { PressAllocation, PressDescriptor, PressFileOption, PressOptionDefault, PressOptionDefaults, PressOptionKey, PressRole } from './descriptor.js';
export { PRESS_FILE_OPTIONS, definePress, optionDefault } from './descriptor.js';
export { FullPress, isFullPress } from './full.js';
export { alphaForPlayers, defaultAlpha } from './cokv.js';
