/**
 * The press flags every command shares (`--press NAME --budget N | --ratio R --window W …`). The `--press` list
 * comes from the press descriptors (src/press/presses/), and each press option's flag from `OPTION_FLAGS` below: its
 * default and the presses named in its help come from the descriptors that read the option.
 */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { DEFAULT_PROTECT, PRESS_PRESETS, type PressOptions, type PressPreset } from '../press/options.js';
import { PRESS_DESCRIPTORS, PRESS_NAMES, pressesReading, resolvePress } from '../press/registry.js';
import type { PressOptionKey } from '../press/presses/index.js';
import type { Press } from '../press/types.js';
import { numberFlag } from './util.js';

const POOL_KINDS = ['max', 'avg', 'none'] as const satisfies readonly NonNullable<PressOptions['pool']>[];

/** How one press option is written on the command line. */
type OptionFlag = {
  /** Commander's flag spelling: `--name <arg>`, `--name [arg]` or `--no-name`. */
  readonly flag: string;
  /** What it sets; the presses that read it are put in front when fewer than half of the compressing ones do. */
  readonly help: string;
  /** Show the reading presses' (common) default as the flag's default. */
  readonly showDefault?: true;
  /** `--preset` replaces this flag's default (see withPresetDefaults) unless the flag is given. */
  readonly preset?: true;
  /** Leave the option out of the options when the flag is not given (instead of an undefined entry). */
  readonly omitUnset?: true;
} & (
  | { readonly kind: 'integer'; readonly min: number }
  | { readonly kind: 'choice'; readonly choices: readonly string[] }
  | { readonly kind: 'file' }
  /** `--no-name`: false when given, true otherwise. */
  | { readonly kind: 'negatable' }
  /** `--name [fraction]`: alone the default share, with a value that fraction in [0, 1). */
  | { readonly kind: 'fraction' }
);

/** The press options that have a flag, in the order `--help` lists them. */
const OPTION_FLAGS = {
  window: { kind: 'integer', min: 1, flag: '--window <w>', help: 'observation window, always kept (--preset kvpress: 64; streaming 1)', showDefault: true, preset: true },
  pool: { kind: 'choice', choices: POOL_KINDS, flag: '--pool <kind>', help: 'score pooling: max, avg or none (--preset kvpress: avg)', showDefault: true, preset: true },
  kernel: { kind: 'integer', min: 1, flag: '--kernel <k>', help: 'pooling kernel size (odd) (--preset kvpress: 5)', showDefault: true, preset: true },
  alpha: { kind: 'integer', min: 0, flag: '--alpha <a>', help: 'number of lowest-valued heads that keep only the window' },
  profile: { kind: 'file', flag: '--profile <file>', help: 'head-value profile (from cokv profile)' },
  headScores: { kind: 'file', flag: '--head-scores <file>', help: 'per-head scores (from cokv head-scores)' },
  sink: { kind: 'integer', min: 0, flag: '--sink <n>', help: 'sink tokens', showDefault: true },
  redistribute: { kind: 'negatable', flag: '--no-redistribute', help: 'reproduce the reference code: do not re-share budget a head cannot use' },
  protect: {
    kind: 'fraction', flag: '--protect [fraction]', omitUnset: true,
    help: `boundary protection: keep this fraction [0, 1) of each head's budget for the first tokens of the prompt's segments (alone: ${DEFAULT_PROTECT}${
      PRESS_DESCRIPTORS.filter((d) => typeof d.options.protect === 'number').map((d) => `; ${d.name}: ${String(d.options.protect)}`).join('')})`,
  },
  preset: {
    kind: 'choice', choices: PRESS_PRESETS, flag: '--preset <name>', omitUnset: true,
    help: 'kvpress: NVIDIA kvpress\'s conventions (avg pool, kernel 5, window 64, its Ada-KV and PyramidKV rules, --ratio = fraction removed); given flags override it',
  },
} as const satisfies { readonly [K in PressOptionKey]?: OptionFlag };

type FlaggedOption = keyof typeof OPTION_FLAGS;

/** The flag of each press option that has one (`headScores` → `--head-scores`), in `--help` order. */
export const PRESS_OPTION_FLAGS: Readonly<Record<FlaggedOption, string>> = Object.fromEntries(
  (Object.keys(OPTION_FLAGS) as FlaggedOption[]).map((k) => [k, flagName(OPTION_FLAGS[k])]),
) as Record<FlaggedOption, string>;

/**
 * Options with no flag yet, set through the library only (`--seed` already means the sampler's seed in
 * `generate`).
 */
export const LIBRARY_ONLY_PRESS_OPTIONS = ['groupAggregation', 'headkvBeta', 'pyramidBeta', 'adaFloor', 'seed'] as const satisfies readonly PressOptionKey[];

// A new PressOptions field must get a flag above or be listed as library-only: this line fails to compile otherwise.
type Undecided = Exclude<PressOptionKey, FlaggedOption | (typeof LIBRARY_ONLY_PRESS_OPTIONS)[number]>;
const _everyOptionDecided: [Undecided] extends [never] ? true : Undecided = true;
void _everyOptionDecided;

type FlagValue<F> = F extends { kind: 'negatable' } ? boolean : F extends { kind: 'fraction' } ? string | boolean : string;

/** Commander's values of the press flags (strings as typed; `--protect` alone is `true`). */
export type PressFlags = { press?: string; budget?: string; ratio?: string } & { [K in FlaggedOption]?: FlagValue<(typeof OPTION_FLAGS)[K]> };

/** `--window <w>` → `--window`. */
function flagName(spec: OptionFlag): string {
  return spec.flag.split(' ')[0];
}

/** `a, b or c`. */
function orList(xs: readonly string[]): string {
  return xs.length <= 1 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;
}

/** The default the presses reading `key` share (undefined when none does or they have none). */
function sharedDefault(key: PressOptionKey): string | undefined {
  const values = new Set(pressesReading(key).map((d) => d.options[key]).filter((v) => v !== null && v !== undefined && typeof v !== 'function'));
  if (values.size > 1) throw new Error(`press-flags: the presses reading ${key} have different defaults (${[...values].join(', ')}); give the flag no shown default`);
  return values.size === 1 ? String([...values][0]) : undefined;
}

/** The flag's help: the presses that read it in front when only a few of them do (`CoKV: …`). */
function flagHelp(key: FlaggedOption): string {
  const spec: OptionFlag = OPTION_FLAGS[key];
  const compressing = PRESS_DESCRIPTORS.filter((d) => d.allocation !== 'none').length;
  const readers = pressesReading(key);
  return readers.length * 2 < compressing ? `${readers.map((d) => d.label).join(', ')}: ${spec.help}` : spec.help;
}

/** `--press`, `--budget`, `--ratio` plus the tuning flags. */
export function addPressFlags(cmd: Command): Command {
  cmd
    .option('--press <name>', `KV-cache press: ${PRESS_NAMES.join(', ')}`, 'full')
    .option('--budget <n>', 'average prompt tokens kept per KV head of the full-attention layers, window included (sliding layers keep their window)')
    .option('--ratio <r>', 'or keep this fraction (0, 1] of the prompt per full-attention KV head on average (with --preset kvpress: the fraction [0, 1) removed, kvpress\'s compression_ratio)');
  return addPressTuningFlags(cmd);
}

/** The flags that tune presses (shared by commands that sweep presses and budgets themselves). */
export function addPressTuningFlags(cmd: Command): Command {
  const presetFlags = (Object.keys(OPTION_FLAGS) as FlaggedOption[]).filter((k) => (OPTION_FLAGS[k] as OptionFlag).preset);
  // With --preset, the defaults of the flags it sets are dropped (so the preset's apply); given flags stay.
  cmd.hook('preAction', (_hooked, action) => {
    if (action.opts().preset === undefined) return;
    for (const k of presetFlags) if (action.getOptionValueSource(k) === 'default') action.setOptionValueWithSource(k, undefined, 'default');
  });
  for (const key of Object.keys(OPTION_FLAGS) as FlaggedOption[]) {
    const spec: OptionFlag = OPTION_FLAGS[key];
    const shown = spec.showDefault ? sharedDefault(key) : undefined;
    if (shown !== undefined) cmd.option(spec.flag, flagHelp(key), shown);
    else cmd.option(spec.flag, flagHelp(key));
  }
  return cmd;
}

/** One flag's value as the option it sets; CokvError `--flag: …` on a bad value. */
function parseFlag(spec: OptionFlag, value: string | boolean | undefined): PressOptions[PressOptionKey] {
  const flag = flagName(spec);
  switch (spec.kind) {
    case 'integer':
      return numberFlag(flag, value as string | undefined, { integer: true, min: spec.min });
    case 'choice':
      if (value !== undefined && !spec.choices.includes(value as string)) throw new CokvError(`${flag}: '${String(value)}' must be ${orList(spec.choices)}`, 'flag');
      return value as PressOptions['pool'] & PressPreset;
    case 'file':
      return value as string | undefined;
    case 'negatable':
      return (value as boolean | undefined) ?? true;
    case 'fraction': {
      const v = value === true ? DEFAULT_PROTECT : numberFlag(flag, value === false ? undefined : value, { min: 0 });
      if (v !== undefined && !(v < 1)) throw new CokvError(`${flag}: ${v} must be a fraction in [0, 1)`, 'flag');
      return v;
    }
  }
}

export function pressOptionsFromFlags(f: PressFlags): PressOptions {
  const keys = Object.keys(OPTION_FLAGS) as FlaggedOption[];
  const parsed = new Map<FlaggedOption, PressOptions[PressOptionKey]>();
  const parse = (k: FlaggedOption) => parsed.set(k, parseFlag(OPTION_FLAGS[k], f[k]));
  // Checked in the order the messages have always come in: named choices, the protected share, then the numbers.
  for (const k of keys) if (OPTION_FLAGS[k].kind === 'choice') parse(k);
  for (const k of keys) if (OPTION_FLAGS[k].kind === 'fraction') parse(k);
  const o: PressOptions = {
    budget: numberFlag('--budget', f.budget, { integer: true, min: 1 }),
    ratio: numberFlag('--ratio', f.ratio),
  };
  for (const k of keys) if (!parsed.has(k)) parse(k);
  for (const k of keys) {
    const v = parsed.get(k);
    if (v === undefined && (OPTION_FLAGS[k] as OptionFlag).omitUnset) continue;
    (o as Record<string, unknown>)[k] = v;
  }
  return o;
}

/**
 * The press tuning flags `f` holds, written back as arguments (every flagged option, so a child process such as
 * `cokv bench`'s per-run `bench-one` gets them all; `--press`, `--budget` and `--ratio` are left to the caller).
 */
export function pressTuningArgs(f: PressFlags): string[] {
  const args: string[] = [];
  for (const k of Object.keys(OPTION_FLAGS) as FlaggedOption[]) {
    const spec: OptionFlag = OPTION_FLAGS[k];
    const v = f[k];
    if (v === undefined) continue;
    const flag = flagName(spec);
    if (spec.kind === 'negatable') {
      if (v === false) args.push(flag);
    } else if (spec.kind === 'fraction') {
      if (v === true) args.push(flag);
      else if (v !== false) args.push(`${flag}=${v}`);
    } else {
      args.push(flag, String(v));
    }
  }
  return args;
}

export function pressFromFlags(f: PressFlags, config: ModelConfig): Press | undefined {
  return resolvePress(f.press ?? 'full', pressOptionsFromFlags(f), config);
}
