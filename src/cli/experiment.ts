/** `cokv experiment NAME|all [--quick]`: the results pipeline of issue #8 (see src/experiments). */
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { EXPERIMENTS, runExperiment, type ExperimentName } from '../experiments/experiments.js';
import { numberFlag } from './util.js';

export function registerExperiment(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('experiment')
    .description(`run a results experiment: ${EXPERIMENTS.join(', ')} or all (seeded, resumable, writes under --out)`)
    .argument('<name>', 'experiment name or all')
    .option('--quick', 'a small slice that finishes in minutes')
    .option('--out <dir>', 'results folder', 'results')
    .option('--assets <dir>', 'the shared assets folder', path.join('..', 'shared', 'assets'))
    .option('--seed <s>', 'seed of splits and profiles', '0')
    .action((name: string, f: { quick?: boolean; out: string; assets: string; seed: string }) => run(async () => {
      if (name !== 'all' && !(EXPERIMENTS as readonly string[]).includes(name)) {
        throw new CokvError(`experiment: unknown experiment '${name}' (known: ${EXPERIMENTS.join(', ')}, all)`, 'flag');
      }
      const t0 = Date.now();
      await runExperiment(name as ExperimentName | 'all', {
        quick: f.quick ?? false, out: f.out, assets: f.assets, seed: numberFlag('--seed', f.seed, { integer: true, min: 0 })!,
        log: (m) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0)}s] ${m}\n`),
      });
    }));
}
