/** `--add-bos` / `--no-bos`: one override of the model file's BOS rule, shared by the commands that encode text. */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import type { Tokenizer } from '../model/tokenizer/types.js';

export interface BosFlags {
  addBos?: boolean;
  /** Commander's value for `--no-bos`: false when given, else true. */
  bos?: boolean;
}

/** Register `--add-bos` and `--no-bos`; `what` says what the default is for this command. */
export function addBosFlags<C extends Command>(cmd: C, what = "the model file's rule (see cokv inspect)"): C {
  cmd
    .option('--add-bos', `put BOS in front of the prompt (default: ${what})`)
    .option('--no-bos', 'do not put BOS in front of the prompt');
  return cmd;
}

/**
 * The override the flags ask for: true (--add-bos), false (--no-bos) or undefined (neither). With a tokenizer,
 * --add-bos on a model without a BOS token is an error.
 */
export function bosOverride(f: BosFlags, tok?: Tokenizer, model?: string): boolean | undefined {
  if (f.addBos && f.bos === false) throw new CokvError('--add-bos/--no-bos: give at most one of them', 'flag');
  const v = f.addBos ? true : f.bos === false ? false : undefined;
  if (v === true && tok && tok.bosId === undefined) {
    throw new CokvError(`--add-bos: ${model ?? 'the model'} has no BOS token`, 'flag');
  }
  return v;
}
