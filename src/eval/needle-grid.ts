/**
 * The needle-in-a-haystack grid (what `cokv needle` does): for each press and budget, greedy answers on a depth ×
 * length grid of needle prompts, scored against the answer and written as one JSON file per run under
 * `<out>/needle/` (a run whose file exists is skipped, so each is written atomically). Errors name the command-line flag they are about.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CokvModel } from '../engine.js';
import { CokvError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { encodePrompt } from '../model/tokenizer/types.js';
import type { PressOptions } from '../press/options.js';
import { createPress, resolvePress } from '../press/registry.js';
import { writeFileAtomic } from '../util/files.js';
import { NEEDLE_MAX_NEW_TOKENS, NeedleBuilder, buildHaystack, gridResult, type NeedleGridResult } from './needle.js';
import { modelName } from './runner.js';

/** One press at one budget (null: full). */
export interface NeedleRun { press: string; budget: number | null }

export interface NeedleGridOptions {
  /** Context lengths in tokens. */
  lengths: number[];
  /** Needle depths in percent (e.g. depthPercents(10)). */
  depths: number[];
  presses: string[];
  /** Budgets of every press but full. */
  budgets: number[];
  pressOptions: Omit<PressOptions, 'budget' | 'ratio'>;
  /** Needle sentence, question cue, expected answer, prompt template (defaults: src/eval/needle.ts). */
  needle?: string; question?: string; answer?: string; template?: string;
  /** Tokens left off each context for the prompt. */
  margin?: number;
  /** BOS: forced on (true), off (false), or whenever the model has one (undefined). */
  bos?: boolean;
  /** Results folder (grids go to `<out>/needle/`). */
  out: string;
  /** A run starts (not called for runs whose file exists). */
  onRunStart?: (run: NeedleRun) => void;
  /** Grid cells done of total in the current run. */
  onProgress?: (done: number, total: number) => void;
  /** A run's grid is written. */
  onRunDone?: (run: NeedleRun, result: NeedleGridResult, file: string) => void;
}

/** `--out …` unless `out` is absent or a folder. */
export function checkNeedleOut(out: string): void {
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new CokvError(`--out ${out}: is a file, not a folder`, 'file');
}

/** `--lengths: …` unless every length leaves room for the answer in the model's context. */
export function checkNeedleLengths(lengths: readonly number[], c: ModelConfig): void {
  for (const L of lengths) {
    if (L + NEEDLE_MAX_NEW_TOKENS >= c.contextLength) throw new CokvError(`--lengths: ${L} + ${NEEDLE_MAX_NEW_TOKENS} new tokens exceed the model's context of ${c.contextLength}`, 'flag');
  }
}

/** Score every run of `o` on `model` (loaded from `modelPath`) with haystack `texts`; returns the files written. */
export async function runNeedleGrid(model: CokvModel, modelPath: string, texts: readonly string[], o: NeedleGridOptions): Promise<string[]> {
  const { lengths, depths } = o;
  checkNeedleOut(o.out);
  const c = model.config;
  checkNeedleLengths(lengths, c);
  const tok = model.tokenizer;
  const builder = new NeedleBuilder(tok, buildHaystack(texts, tok, Math.max(...lengths)), {
    needle: o.needle, question: o.question, answer: o.answer, template: o.template, margin: o.margin,
  });
  const cases = builder.grid(lengths, depths);
  const outDir = path.join(o.out, 'needle');
  fs.mkdirSync(outDir, { recursive: true });
  const runs = o.presses.flatMap((p): NeedleRun[] => (p === 'full' ? [{ press: p, budget: null }] : o.budgets.map((b) => ({ press: p, budget: b }))));
  const base = o.pressOptions;
  for (const r of runs) createPress(r.press, { ...base, budget: r.budget ?? undefined }, c);
  const nl = model.newlineIds();
  const written: string[] = [];
  for (const r of runs) {
    const bosTag = o.bos === undefined ? '' : o.bos ? '__bos' : '__nobos';
    const file = path.join(outDir, `${modelName(modelPath)}__${r.press}__${r.budget ?? 'full'}${bosTag}.json`.replace(/[^A-Za-z0-9._-]+/g, '-'));
    if (fs.existsSync(file)) continue;
    const press = resolvePress(r.press, { ...base, budget: r.budget ?? undefined }, c);
    o.onRunStart?.(r);
    let done = 0;
    const scores: number[][] = [];
    for (let d = 0; d < depths.length; d++) {
      scores.push([]);
      for (let l = 0; l < lengths.length; l++) {
        const ids = encodePrompt(tok, cases[d][l].prompt, o.bos, tok.bosId !== undefined);
        const g = model.generate(ids, { maxTokens: NEEDLE_MAX_NEW_TOKENS, temperature: 0, press, eosIds: [...model.eosIds, ...nl] });
        scores[d].push(builder.score(await g.complete()));
        o.onProgress?.(++done, depths.length * lengths.length);
      }
    }
    const res = gridResult(lengths, depths, (d, l) => scores[d][l]);
    writeFileAtomic(file, JSON.stringify({ model: modelName(modelPath), press: r.press, budget: r.budget, ...(o.bos === undefined ? {} : { bos: o.bos }), ...res }) + '\n');
    written.push(file);
    o.onRunDone?.(r, res, file);
  }
  return written;
}
