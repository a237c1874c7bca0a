/** The experiments' sub-steps call the library with the options the equivalent `cokv …` command runs with. */
import { Command } from 'commander';
import { describe, expect, it, vi } from 'vitest';
import { addPressTuningFlags, pressOptionsFromFlags, type PressFlags } from '../src/cli/press-flags.js';
import { evalStep, tuningOptions, type PressTuning } from '../src/experiments/commands.js';
import { asset, haveAssets } from './helpers.js';

/** The press options `cokv eval` parses from `args` (its tuning flags, with their defaults). */
function evalPressOptions(args: string[]): unknown {
  const cmd = addPressTuningFlags(new Command().exitOverride()).action(() => {});
  cmd.parse(args, { from: 'user' });
  // As cokv eval passes them to runEval: budget and ratio come from its sweep; undefined entries are not recorded.
  return JSON.parse(JSON.stringify(pressOptionsFromFlags({ ...(cmd.opts() as PressFlags), budget: undefined, ratio: undefined })));
}

describe('experiment sub-steps', () => {
  const cases: [string[], PressTuning][] = [
    [[], {}],
    [['--profile', 'p.json', '--head-scores', 'h.json'], { profile: 'p.json', headScores: 'h.json' }],
    [['--alpha', '2', '--profile', 'p.json'], { alpha: 2, profile: 'p.json' }],
    [['--window', '4'], { window: 4 }],
    [['--no-redistribute', '--head-scores', 'h.json'], { redistribute: false, headScores: 'h.json' }],
  ];
  it.each(cases)('press options equal cokv eval %j (finished run folders stay reusable)', (args, tuning) => {
    expect(JSON.parse(JSON.stringify(tuningOptions(tuning)))).toEqual(evalPressOptions(args));
  });

  it.skipIf(!haveAssets)('a failing step prints its error as the command would and names the command', async () => {
    const log: string[] = [];
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await expect(evalStep({ model: asset('models/cokv-retrieval-tiny'), data: '/nonexistent/retrieval.jsonl', dataset: 'retrieval', presses: ['full'], budgets: [16], out: '/nonexistent/out' },
        { quiet: false, log: (m) => log.push(m) })).rejects.toThrow(/^experiment step failed \(exit 1\): cokv eval --model \S+ --data \/nonexistent\/retrieval\.jsonl .*--overwrite --kv-dtype f32$/);
      expect(err.mock.calls.map((c) => String(c[0])).join('')).toMatch(/^cokv: --data \/nonexistent\/retrieval\.jsonl: /m);
    } finally {
      err.mockRestore();
    }
    expect(log).toEqual([expect.stringMatching(/^\$ cokv eval --model /)]);
  });
});
