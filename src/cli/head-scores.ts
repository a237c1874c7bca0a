/** `cokv head-scores`: compute HeadKV retrieval-head scores for any model and write the `--head-scores` file. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { loadModel } from '../engine.js';
import { modelFingerprint } from '../model/fingerprint.js';
import { retrievalHeadScores } from '../press/headkv-scorer.js';
import { numberFlag } from './util.js';

interface Flags { model: string; haystack: string; length: string; samples: string; needle: string; seed: string; out: string }

export function registerHeadScores(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('head-scores')
    .description('compute retrieval-head scores (needle copy task) for the headkv press')
    .requiredOption('--model <path>', 'model file or folder')
    .requiredOption('--haystack <path>', 'a text file, or a folder of .txt files, to cut prompts from')
    .option('--length <n>', 'prompt tokens per sample', '512')
    .option('--samples <n>', 'number of needle samples', '8')
    .option('--needle <n>', 'needle length in tokens', '16')
    .option('--seed <s>', 'seed', '1')
    .requiredOption('--out <file>', 'output JSON ({ model, shape: [layers, heads], scores })')
    .action((f: Flags) => run(async () => {
      let text = '';
      try {
        const st = fs.statSync(f.haystack);
        const files = st.isDirectory() ? fs.readdirSync(f.haystack).filter((x) => x.endsWith('.txt')).sort().map((x) => path.join(f.haystack, x)) : [f.haystack];
        text = files.map((x) => fs.readFileSync(x, 'utf8')).join('\n\n');
      } catch {
        throw new CokvError(`--haystack ${f.haystack}: cannot read it`, 'file');
      }
      if (!text.trim()) throw new CokvError(`--haystack ${f.haystack}: no text found`, 'file');
      const model = await loadModel(f.model);
      const length = numberFlag('--length', f.length, { integer: true, min: 32, max: model.config.contextLength - 1 })!;
      let scores: number[][];
      try {
        scores = retrievalHeadScores(model, {
          haystack: text, length,
          samples: numberFlag('--samples', f.samples, { integer: true, min: 1 })!,
          needleTokens: numberFlag('--needle', f.needle, { integer: true, min: 2 })!,
          seed: numberFlag('--seed', f.seed, { integer: true })!,
        });
      } catch (e) {
        throw new CokvError(`head-scores: ${(e as Error).message}`, 'flag');
      }
      const c = model.config;
      fs.writeFileSync(f.out, JSON.stringify({ model: modelFingerprint(c), shape: [c.numLayers, c.numHeads], method: 'retrieval (needle copy, teacher-forced)', scores }) + '\n');
      process.stderr.write(`retrieval-head scores of ${c.numLayers}×${c.numHeads} query heads → ${f.out}\n`);
    }));
}
