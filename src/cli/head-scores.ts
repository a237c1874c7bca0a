/**
 * `cokv head-scores`: per-(layer, query head) scores for the headkv press (HeadKV-R2 by default; copy, output-norm,
 * entropy). The work is the library's computeHeadScores (src/eval/head-scores-run.ts); this file parses the flags.
 */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { HEAD_SCORE_METHODS, computeHeadScores, headScoresSummary, type HeadScoreMethod } from '../eval/head-scores-run.js';
import { numberFlag } from './util.js';
import { numberList } from './lists.js';

export { HEAD_SCORE_METHODS, type HeadScoreMethod };

interface Flags {
  model: string; haystack: string; method: string; length?: string; samples?: string; needle?: string;
  needlesPerKind?: string; seed: string; out: string;
}

/** `--length` of the grid methods: one length or a comma list (the model's context is checked by the library). */
function lengthList(value: string): number[] {
  return numberList('--length', value, { integer: true, min: 32, item: 'length' });
}

export function registerHeadScores(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('head-scores')
    .description('compute per-head scores for the headkv press (HeadKV-R2 by default; copy, output-norm, entropy)')
    .requiredOption('--model <path>', 'model file or folder')
    .requiredOption('--haystack <path>', 'a text file, or a folder of .txt files, to cut prompts from')
    .option('--method <m>', `scoring method: ${HEAD_SCORE_METHODS.join(', ')}`, 'r2')
    .option('--length <n>', 'prompt tokens per sample (r2/output-norm/entropy: a comma list is a grid of lengths; default 512,1024; copy: 512)')
    .option('--samples <n>', 'r2/output-norm/entropy: needle depths per length and needle, spread over 0-100% (default 10, as HeadKV); copy: needle samples (default 8)')
    .option('--needles-per-kind <n>', 'r2/output-norm/entropy: retrieval needles and reasoning needles each (default 2, as HeadKV\'s two R2 needles)')
    .option('--needle <n>', 'copy: needle length in tokens (default 16)')
    .option('--seed <s>', 'seed', '1')
    .requiredOption('--out <file>', 'output JSON ({ model, shape: [layers, heads], method, scores })')
    .action((f: Flags) => run(async () => {
      if (!(HEAD_SCORE_METHODS as readonly string[]).includes(f.method)) {
        throw new CokvError(`--method: '${f.method}' is not a head-score method (${HEAD_SCORE_METHODS.join(', ')})`, 'flag');
      }
      const method = f.method as HeadScoreMethod;
      // (Before their values are parsed: a flag of the other methods is named as such, whatever its value.)
      if (method === 'copy' && f.needlesPerKind !== undefined) throw new CokvError('--needles-per-kind: applies to --method r2, output-norm and entropy, not copy', 'flag');
      if (method !== 'copy' && f.needle !== undefined) throw new CokvError(`--needle: applies to --method copy only (--method ${method} uses --needles-per-kind)`, 'flag');
      const seed = numberFlag('--seed', f.seed, { integer: true })!;
      const copy = method === 'copy';
      const r = await computeHeadScores({
        model: f.model, haystack: f.haystack, method, seed, out: f.out,
        lengths: copy ? [numberFlag('--length', f.length ?? '512', { integer: true, min: 32 })!] : lengthList(f.length ?? '512,1024'),
        samples: numberFlag('--samples', f.samples ?? (copy ? '8' : '10'), { integer: true, min: 1 })!,
        needleTokens: numberFlag('--needle', f.needle ?? (copy ? '16' : undefined), { integer: true, min: 2 }),
        needlesPerKind: numberFlag('--needles-per-kind', f.needlesPerKind ?? (copy ? undefined : '2'), { integer: true, min: 1 }),
      });
      process.stderr.write(headScoresSummary(r) + '\n');
    }));
}
