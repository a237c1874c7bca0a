import fs from 'node:fs';
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { loadModel, type GenerateOptions } from '../engine.js';
import { formatBytes, KV_DTYPE_HELP, kvDtypeFlag, numberFlag } from './util.js';
import { addPressFlags, pressFromFlags, type PressFlags } from './press-flags.js';
import { addBosFlags, bosOverride, type BosFlags } from './bos-flags.js';

interface GenerateFlags extends PressFlags, BosFlags {
  model: string;
  prompt?: string;
  promptFile?: string;
  chat?: boolean;
  system?: string;
  maxTokens?: string;
  temperature?: string;
  topK?: string;
  topP?: string;
  minP?: string;
  repetitionPenalty?: string;
  seed?: string;
  stop: string[];
  json?: boolean;
  kvDtype?: string;
}

export function registerGenerate(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const cmd = program
    .command('generate')
    .description('generate text from a prompt, streaming to stdout; a summary line goes to stderr')
    .requiredOption('--model <path>', 'GGUF file, Hugging Face folder, or llama2.c checkpoint')
    .option('--prompt <text>', 'prompt text')
    .option('--prompt-file <file>', 'read the prompt from a file')
    .option('--chat', 'wrap the prompt as a user message with the model\'s chat template')
    .option('--system <text>', 'system message (with --chat)')
    .option('--max-tokens <n>', 'most tokens to generate', '256')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
    .option('--top-p <p>', 'nucleus sampling threshold (1 = off)')
    .option('--min-p <p>', 'drop tokens below p × the top probability')
    .option('--repetition-penalty <r>', 'penalise tokens already seen (1 = off)')
    .option('--seed <s>', 'sampling seed')
    .option('--stop <str>', 'stop string (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--kv-dtype <t>', KV_DTYPE_HELP, 'f32')
    .option('--json', 'print one JSON object (text, tokens, stats) instead of streaming');
  addBosFlags(cmd);
  addPressFlags(cmd).action((flags: GenerateFlags) => run(() => generateCommand(flags)));
}

async function generateCommand(f: GenerateFlags): Promise<void> {
  if ((f.prompt === undefined) === (f.promptFile === undefined)) {
    throw new CokvError('--prompt/--prompt-file: give exactly one of them', 'flag');
  }
  let prompt = f.prompt ?? '';
  if (f.promptFile !== undefined) {
    try {
      prompt = fs.readFileSync(f.promptFile, 'utf8');
    } catch {
      throw new CokvError(`--prompt-file: cannot read ${f.promptFile}`, 'file');
    }
  }
  bosOverride(f);
  if (f.chat && (f.addBos || f.bos === false)) {
    throw new CokvError('--add-bos/--no-bos: not with --chat (the chat template writes BOS itself)', 'flag');
  }
  if (prompt.length === 0) throw new CokvError(`${f.promptFile !== undefined ? '--prompt-file' : '--prompt'}: the prompt is empty`, 'prompt');
  const opts: GenerateOptions = {
    maxTokens: numberFlag('--max-tokens', f.maxTokens, { integer: true, min: 0 }),
    temperature: numberFlag('--temperature', f.temperature, { min: 0 }),
    topK: numberFlag('--top-k', f.topK, { integer: true, min: 0 }),
    topP: numberFlag('--top-p', f.topP, { min: 0, max: 1 }),
    minP: numberFlag('--min-p', f.minP, { min: 0, max: 1 }),
    repetitionPenalty: numberFlag('--repetition-penalty', f.repetitionPenalty, { min: 0 }),
    seed: numberFlag('--seed', f.seed, { integer: true }),
    stop: f.stop,
  };
  opts.kvDtype = kvDtypeFlag(f.kvDtype);
  const model = await loadModel(f.model);
  opts.addBos = bosOverride(f, model.tokenizer, f.model);
  opts.press = pressFromFlags(f, model.config);
  const gen = f.chat
    ? await model.chat([...(f.system ? [{ role: 'system', content: f.system }] : []), { role: 'user', content: prompt }], opts)
    : model.generate(prompt, opts);
  for await (const chunk of gen) {
    if (!f.json && chunk.text) process.stdout.write(chunk.text);
  }
  const s = gen.stats!;
  if (f.json) {
    process.stdout.write(JSON.stringify({ text: gen.text, tokens: gen.tokens, stats: s }) + '\n');
    return;
  }
  process.stdout.write('\n');
  process.stderr.write(
    `prompt ${s.promptTokens} tok | generated ${s.generatedTokens} tok (${s.stopReason}) | prefill ${s.prefillMs.toFixed(1)} ms | ` +
      `decode ${s.decodeTokensPerSecond.toFixed(1)} tok/s | KV ${formatBytes(s.kvBytes)} held vs ${formatBytes(s.kvFullBytes)} full (${((100 * s.kvBytes) / Math.max(1, s.kvFullBytes)).toFixed(1)}%) | ` +
      `peak RSS ${formatBytes(s.peakRssBytes)}\n`,
  );
}
