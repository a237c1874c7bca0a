/**
 * Library errors start with the option they are about, as the library spells it (`budget: …`, `budget/ratio: …`,
 * `maxTokens: …`); the CLI reports them under its flag names (`--budget: …`, `--budget/--ratio: …`).
 */

/** Library option name → CLI flag, for the options whose errors reach the command line. */
const FLAGS: Record<string, string> = {
  press: '--press', budget: '--budget', ratio: '--ratio', window: '--window', pool: '--pool', kernel: '--kernel',
  alpha: '--alpha', profile: '--profile', headScores: '--head-scores', sink: '--sink', headkvBeta: '--headkv-beta',
  pyramidBeta: '--pyramid-beta', adaFloor: '--ada-floor', seed: '--seed', maxTokens: '--max-tokens',
  minTokens: '--min-tokens', repetitionPenalty: '--repetition-penalty', stop: '--stop', temperature: '--temperature',
  topP: '--top-p', topK: '--top-k', minP: '--min-p', kvDtype: '--kv-dtype', backend: '--backend',
  protect: '--protect', preset: '--preset',
};

/** Options whose errors quote their value before the colon: `profile FILE: …`, `backend KIND: …`. */
const VALUE_OPTIONS = new Set(['profile', 'headScores', 'backend']);

/**
 * `message` with a leading library option name (`budget: …`, an `a/b: …` pair, or `profile FILE: …`) written as
 * the CLI's flag names; any other message is returned as it is.
 */
export function flagWording(message: string): string {
  const file = /^([A-Za-z]+) /.exec(message);
  // (`profile merge: …` and the other profile subcommands name a command, not the --profile flag.)
  if (file && VALUE_OPTIONS.has(file[1]) && !/^profile (merge|show|compare)\b/.test(message)) return `${FLAGS[file[1]]}${message.slice(file[1].length)}`;
  const m = /^([A-Za-z]+(?:\/[A-Za-z]+)?):/.exec(message);
  if (!m) return message;
  const names = m[1].split('/');
  if (!names.every((n) => Object.hasOwn(FLAGS, n))) return message;
  return `${names.map((n) => FLAGS[n]).join('/')}${message.slice(m[1].length)}`;
}
