/**
 * `cokv needle`: needle-in-a-haystack grid (depth × length) per press and budget, written under DIR/needle/. The work
 * is the library's runNeedleGrid (src/eval/needle-grid.ts); this file parses the flags and prints.
 */
import type { Command } from 'commander';
import { loadModel } from '../engine.js';
import { depthPercents, readHaystackFiles } from '../eval/needle.js';
import { checkNeedleLengths, checkNeedleOut, runNeedleGrid } from '../eval/needle-grid.js';
import { addPressTuningFlags, pressOptionsFromFlags, type PressFlags } from './press-flags.js';
import { ProgressBar } from './progress.js';
import { numberFlag } from './util.js';
import { numberList, stringList } from './lists.js';
import { PRESS_NAMES } from '../press/registry.js';
import { addBosFlags, bosOverride, type BosFlags } from './bos-flags.js';

interface NeedleFlags extends PressFlags, BosFlags {
  model: string; haystack: string; lengths: string; depths: string; presses: string; budgets: string;
  needle?: string; question?: string; answer?: string; template?: string; margin: string; out: string; quiet?: boolean;
}

export function registerNeedle(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const cmd = program
    .command('needle')
    .description('needle-in-a-haystack: score a depth × length grid for each press and budget')
    .requiredOption('--model <path>', 'model file or folder')
    .requiredOption('--haystack <dir>', 'folder of .txt files (e.g. ../shared/assets/data/needle/PaulGrahamEssays)')
    .option('--lengths <list>', 'context lengths in tokens', '512,1024,2048')
    .option('--depths <n>', 'number of depths from 0% to 100%', '10')
    .option('--presses <list>', 'presses', 'full,snapkv,cokv')
    .option('--budgets <list>', 'budgets', '128')
    .option('--needle <text>', 'needle sentence')
    .option('--question <text>', 'question cue')
    .option('--answer <text>', 'expected answer')
    .option('--template <text>', 'prompt template with {context} and {question}')
    .option('--margin <n>', 'tokens left off each context for the prompt', '200')
    .requiredOption('--out <dir>', 'results folder (grids go to <dir>/needle/)')
    .option('--quiet', 'no progress output');
  addBosFlags(cmd, 'BOS whenever the model has a BOS token, as cokv eval\'s retrieval prompts');
  addPressTuningFlags(cmd).action((f: NeedleFlags) => run(() => needleCommand(f)));
}

async function needleCommand(f: NeedleFlags): Promise<void> {
  const lengths = numberList('--lengths', f.lengths, { integer: true, min: 1, item: 'length' });
  const depths = depthPercents(numberFlag('--depths', f.depths, { integer: true, min: 1, max: 101 })!);
  const budgets = numberList('--budgets', f.budgets, { integer: true, min: 1, item: 'budget' });
  const presses = stringList('--presses', f.presses, { allowed: PRESS_NAMES, item: 'press' });
  bosOverride(f);
  const texts = readHaystackFiles(f.haystack);
  checkNeedleOut(f.out);
  const model = await loadModel(f.model);
  checkNeedleLengths(lengths, model.config);
  let bar: ProgressBar | undefined;
  await runNeedleGrid(model, f.model, texts, {
    lengths, depths, presses, budgets, out: f.out,
    bos: bosOverride(f, model.tokenizer, f.model),
    needle: f.needle, question: f.question, answer: f.answer, template: f.template,
    margin: numberFlag('--margin', f.margin, { integer: true, min: 0 }),
    pressOptions: pressOptionsFromFlags({ ...f, budget: undefined, ratio: undefined }),
    onRunStart: (r) => { bar = new ProgressBar(`needle ${r.press} ${r.budget ?? ''}`, f.quiet ?? false); },
    onProgress: (done, total) => bar?.update(done, total),
    onRunDone: (r, res, file) => {
      bar?.finish();
      process.stdout.write(`${r.press} ${r.budget ?? 'full'}: mean ${res.mean.toFixed(3)} → ${file}\n`);
    },
  });
}
