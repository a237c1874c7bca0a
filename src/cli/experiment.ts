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
    .option('--slice <s>', 'tiny: a smoke-test slice for the test suite')
    .option('--out <dir>', 'results folder', 'results')
    .option('--assets <dir>', 'the shared assets folder', path.join('..', 'shared', 'assets'))
    .option('--seed <s>', 'seed of splits and profiles', '0')
    .option('--quiet', 'only the step lines (== step i/n, done in …) and errors: no progress bars, no sub-command output unless it fails')
    .option('--sensitivity-samples <n>', 'samples per run for the metric/kl sensitivity profiles (default as the main profile)')
    .action((name: string, f: { quick?: boolean; slice?: string; out: string; assets: string; seed: string; sensitivitySamples?: string; quiet?: boolean }) => run(async () => {
      if (f.slice !== undefined && f.slice !== 'tiny') throw new CokvError(`--slice: '${f.slice}' must be tiny`, 'flag');
      if (name !== 'all' && !(EXPERIMENTS as readonly string[]).includes(name)) {
        throw new CokvError(`experiment: unknown experiment '${name}' (known: ${EXPERIMENTS.join(', ')}, all)`, 'flag');
      }
      const t0 = Date.now();
      await runExperiment(name as ExperimentName | 'all', {
        sensitivitySamples: numberFlag('--sensitivity-samples', f.sensitivitySamples, { integer: true, min: 1 }),
        quick: f.quick ?? false, quiet: f.quiet ?? false, slice: f.slice as 'tiny' | undefined, out: f.out, assets: f.assets, seed: numberFlag('--seed', f.seed, { integer: true, min: 0 })!,
        log: (m) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0)}s] ${m}\n`),
      });
    }));
}
