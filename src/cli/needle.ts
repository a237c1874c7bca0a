/** `cokv needle`: needle-in-a-haystack grid (depth × length) per press and budget, written under DIR/needle/. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { loadModel } from '../engine.js';
import { NEEDLE_MAX_NEW_TOKENS, NeedleBuilder, buildHaystack, depthPercents, gridResult, readHaystackFiles } from '../eval/needle.js';
import { modelName } from '../eval/runner.js';
import { createPress, resolvePress } from '../press/registry.js';
import { addPressTuningFlags, pressOptionsFromFlags, type PressFlags } from './press-flags.js';
import { ProgressBar } from './progress.js';
import { numberFlag } from './util.js';
import { addBosFlags, bosOverride, type BosFlags } from './bos-flags.js';
import { encodePrompt } from '../model/tokenizer/types.js';

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
  const list = (flag: string, s: string) => s.split(',').map((x) => numberFlag(flag, x.trim(), { integer: true, min: 1 })!);
  const lengths = list('--lengths', f.lengths);
  const depths = depthPercents(numberFlag('--depths', f.depths, { integer: true, min: 1, max: 101 })!);
  const budgets = list('--budgets', f.budgets);
  const presses = f.presses.split(',').map((x) => x.trim()).filter(Boolean);
  bosOverride(f);
  const texts = readHaystackFiles(f.haystack);
  if (fs.existsSync(f.out) && !fs.statSync(f.out).isDirectory()) throw new CokvError(`--out ${f.out}: is a file, not a folder`, 'file');
  const model = await loadModel(f.model);
  const c = model.config;
  for (const L of lengths) {
    if (L + NEEDLE_MAX_NEW_TOKENS >= c.contextLength) throw new CokvError(`--lengths: ${L} + ${NEEDLE_MAX_NEW_TOKENS} new tokens exceed the model's context of ${c.contextLength}`, 'flag');
  }
  const tok = model.tokenizer;
  const bos = bosOverride(f, tok, f.model);
  const builder = new NeedleBuilder(tok, buildHaystack(texts, tok, Math.max(...lengths)), {
    needle: f.needle, question: f.question, answer: f.answer, template: f.template,
    margin: numberFlag('--margin', f.margin, { integer: true, min: 0 }),
  });
  const cases = builder.grid(lengths, depths);
  const outDir = path.join(f.out, 'needle');
  fs.mkdirSync(outDir, { recursive: true });
  const runs = presses.flatMap((p) => (p === 'full' ? [{ press: p, budget: null as number | null }] : budgets.map((b) => ({ press: p, budget: b as number | null }))));
  const base = pressOptionsFromFlags({ ...f, budget: undefined, ratio: undefined });
  for (const r of runs) createPress(r.press, { ...base, budget: r.budget ?? undefined }, c);
  const nl = model.newlineIds();
  for (const r of runs) {
    const bosTag = bos === undefined ? '' : bos ? '__bos' : '__nobos';
    const file = path.join(outDir, `${modelName(f.model)}__${r.press}__${r.budget ?? 'full'}${bosTag}.json`.replace(/[^A-Za-z0-9._-]+/g, '-'));
    if (fs.existsSync(file)) continue;
    const press = resolvePress(r.press, { ...base, budget: r.budget ?? undefined }, c);
    const bar = new ProgressBar(`needle ${r.press} ${r.budget ?? ''}`, f.quiet ?? false);
    let done = 0;
    const scores: number[][] = [];
    for (let d = 0; d < depths.length; d++) {
      scores.push([]);
      for (let l = 0; l < lengths.length; l++) {
        const ids = encodePrompt(tok, cases[d][l].prompt, bos, tok.bosId !== undefined);
        const g = model.generate(ids, { maxTokens: NEEDLE_MAX_NEW_TOKENS, temperature: 0, press, eosIds: [...model.eosIds, ...nl] });
        scores[d].push(builder.score(await g.complete()));
        bar.update(++done, depths.length * lengths.length);
      }
    }
    bar.finish();
    const res = gridResult(lengths, depths, (d, l) => scores[d][l]);
    fs.writeFileSync(file, JSON.stringify({ model: modelName(f.model), press: r.press, budget: r.budget, ...(bos === undefined ? {} : { bos }), ...res }) + '\n');
    process.stdout.write(`${r.press} ${r.budget ?? 'full'}: mean ${res.mean.toFixed(3)} → ${file}\n`);
  }
}
